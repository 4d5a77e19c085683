import { describe, expect, test } from "vitest";
import { BpfError, NotSupportedError, VerifierError, errnoName, trimVerifierLog } from "./errors.ts";

describe("libbpf errors", () => {
  test.each([
    [7, "E2BIG"],
    [-13, "EACCES"],
    [95, "EOPNOTSUPP"],
    [524, "ENOTSUPP"],
    [4001, "LIBBPF_ERRNO__FORMAT"],
    [99999, "errno 99999"],
  ])("errno %i is named %s", (errno, name) => {
    expect(errnoName(errno)).toBe(name);
  });

  test("a failed call reads as subject, operation and errno name", () => {
    const err = new BpfError("map fw_rules", "update", 7);
    expect(err.message).toBe("map fw_rules: update: E2BIG");
    expect(err).toMatchObject({
      errno: 7,
      code: "E2BIG",
      subject: "map fw_rules",
      op: "update",
      name: "BpfError",
    });
  });

  test("a verifier rejection names the program and the reason, and keeps the end of the log", () => {
    const log = [
      ...Array.from({ length: 100 }, (_, i) => `${i}: (b7) r0 = 0`),
      "invalid access to packet, off=12 size=1, R1(id=0,off=12,r=0)",
      "R1 offset is outside of the packet",
      "processed 2 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0",
      "",
    ].join("\n");
    const err = new VerifierError("fw_xdp", 13, log);
    expect(err).toBeInstanceOf(BpfError);
    expect(err.message).toBe(
      "program fw_xdp: load: EACCES: verifier rejected it: R1 offset is outside of the packet",
    );
    expect(err.log.startsWith("...\n")).toBe(true);
    expect(err.log).toContain("invalid access to packet");
    expect(err.log).not.toContain("0: (b7) r0 = 0\n1:");
  });

  test("a short verifier log is kept whole and a huge line is cut to the status size", () => {
    expect(trimVerifierLog("a\nb\n")).toBe("a\nb");
    const cut = trimVerifierLog("x".repeat(10_000));
    expect(cut.length).toBeLessThanOrEqual(4100);
    expect(cut.startsWith("...\n")).toBe(true);
  });

  test("a missing feature is named", () => {
    const err = new NotSupportedError("native XDP on ifindex 4", 95);
    expect(err.message).toBe("not supported by this kernel or device: native XDP on ifindex 4 (EOPNOTSUPP)");
    expect(err.feature).toBe("native XDP on ifindex 4");
  });
});
