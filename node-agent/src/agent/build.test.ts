import { createHash } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { Reason, type NodeChainSpec } from "../../../common/api/index.ts";
import { failureOf } from "../../../common/errors.ts";
import { BuildError, buildChainSpec, resolveInterfaces } from "./build.ts";

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

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

/** An artifact server answering every request with `status` and `body`. */
async function artifactServer(status: number, body: Buffer): Promise<string> {
  const server = createServer((_req, res) => res.writeHead(status).end(body));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/artifacts/net.tar.gz`;
}

function planFetching(url: string, digest: string): NodeChainSpec {
  return {
    nodeName: "node-1",
    chain: "edge",
    revision: "rev-1",
    interfaces: ["lo"],
    hook: "xdp",
    functions: [
      { name: "tagger", networkFunction: "tagger", source: { artifact: { url, digest, path: "tagger.c" } } },
    ],
  };
}

const sha256 = (bytes: Buffer) => `sha256:${createHash("sha256").update(bytes).digest("hex")}`;

describe("a plan whose artifact does not arrive intact", () => {
  const garbage = Buffer.from("not a gzip archive");
  it.each([
    [
      "a server that answers 503 waits with ArtifactFetchFailed",
      503,
      sha256(garbage),
      Reason.ArtifactFetchFailed,
      "wait",
    ],
    [
      "bytes of another digest stall with DigestMismatch",
      200,
      `sha256:${"ab".repeat(32)}`,
      Reason.DigestMismatch,
      "stall",
    ],
    [
      "an archive of the right digest that does not unpack is retried with ArtifactFailed",
      200,
      sha256(garbage),
      Reason.ArtifactFailed,
      "backoff",
    ],
  ])("%s", async (_what, status, digest, reason, retry) => {
    const url = await artifactServer(status, garbage);
    const cacheDir = await mkdtemp(join(tmpdir(), "sluice-build-"));
    cleanups.push(() => rm(cacheDir, { recursive: true, force: true }));
    const failure = await buildChainSpec(planFetching(url, digest), {
      cacheDir,
      chainName: "default_edge",
    }).then(
      () => undefined,
      (err: unknown) => failureOf(err, Reason.LoadFailed),
    );
    expect(failure).toMatchObject({ reason, retry });
    expect(failure?.message).toContain(url);
  });
});
