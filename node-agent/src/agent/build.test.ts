import { describe, expect, it } from "vitest";
import { Reason } from "../../../common/api/index.ts";
import { BuildError, resolveInterfaces } from "./build.ts";

describe("resolveInterfaces", () => {
  it("matches exact names and glob patterns against the interfaces the node has", () => {
    // Every Linux network namespace has a loopback interface named lo.
    expect(resolveInterfaces(["lo"])).toEqual(["lo"]);
    expect(resolveInterfaces(["l?"])).toEqual(["lo"]);
    expect(resolveInterfaces(["[kl]o", "lo*"])).toEqual(["lo"]);
  });

  it("fails with InterfaceNotFound naming the patterns and what the node has", () => {
    let caught: unknown;
    try {
      resolveInterfaces(["nosuch*"]);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(BuildError);
    expect((caught as BuildError).reason).toBe(Reason.InterfaceNotFound);
    expect((caught as BuildError).message).toMatch(/no interface matches nosuch\*.*lo/);
  });
});
