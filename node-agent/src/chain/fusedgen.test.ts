import { describe, expect, test } from "vitest";
import { generateFused, type FusedNfInput } from "./fusedgen.ts";

function nf(name: string, stem: string, body: string, extra: Partial<FusedNfInput> = {}): FusedNfInput {
  return {
    name,
    source: { dir: `/src/${stem}`, header: `${stem}.h`, stem },
    headerText: body,
    maps: [],
    rodata: [],
    ...extra,
  };
}

const pktFn = (stem: string) =>
  `static __always_inline enum sluice_verdict ${stem}_process(const struct sluice_pkt *pkt, int parsed) { return 0; }`;

describe("generateFused", () => {
  test("calls every NF in order on one parse, ending each walk at its NF's stats slot", () => {
    const r = generateFused("xdp", [nf("a", "alpha", pktFn("alpha")), nf("b", "beta", pktFn("beta"))]);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    const { text } = r.value;
    expect(text.match(/SLUICE_PARSE\(/g)).toHaveLength(1);
    expect(text.indexOf("alpha_process(&pkt, parsed)")).toBeLessThan(
      text.indexOf("beta_process(&pkt, parsed)"),
    );
    expect(text).toContain("return sluice_fused_end_xdp(ctx, verdict, sluice_fused_index_0);");
    expect(text).toContain("return sluice_fused_end_xdp(ctx, verdict, sluice_fused_index_1);");
    expect(r.value.program).toBe("sluice_fused_xdp");
  });

  test("charges each NF's time after its call, ending the sampled walk where the walk ends", () => {
    const r = generateFused("xdp", [nf("a", "alpha", pktFn("alpha")), nf("b", "beta", pktFn("beta"))]);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    const lines = r.value.text.split("\n").map((l) => l.trim());
    const hop0 = lines.indexOf("sluice_time_hop(sluice_fused_index_0, verdict != SLUICE_CONTINUE);");
    const hop1 = lines.indexOf("sluice_time_hop(sluice_fused_index_1, 1);");
    expect(hop0).toBeGreaterThan(lines.indexOf("verdict = alpha_process(&pkt, parsed);"));
    expect(hop0).toBeLessThan(lines.indexOf("verdict = beta_process(&pkt, parsed);"));
    expect(hop1).toBeGreaterThan(lines.indexOf("verdict = beta_process(&pkt, parsed);"));
  });

  test("reads the clock once for every NF that takes it, and passes hook arguments", () => {
    const at = (stem: string) =>
      `static __always_inline enum sluice_verdict ${stem}_process_at(const struct sluice_pkt *pkt, int parsed, __u64 now) {}`;
    const withCtx =
      "static __always_inline enum sluice_verdict gamma_process(void *ctx, int is_xdp, const struct sluice_pkt *pkt, int parsed) {}";
    const r = generateFused("tc", [
      nf("a", "alpha", at("alpha")),
      nf("b", "beta", at("beta")),
      nf("c", "gamma", withCtx),
    ]);
    expect(r.ok && r.value.text.match(/bpf_ktime_get_ns/g)).toHaveLength(1);
    expect(r.ok && r.value.text).toContain("gamma_process(ctx, 0, &pkt, parsed)");
  });

  test("renames maps and parameters two NFs both declare, and keeps the others' names", () => {
    const r = generateFused("xdp", [
      nf("a", "alpha", pktFn("alpha"), { maps: ["shared", "alpha_own"], rodata: ["knob"] }),
      nf("b", "beta", pktFn("beta"), { maps: ["shared"], rodata: ["knob"] }),
    ]);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.value.maps).toEqual([
      { nf: "a", name: "shared", objectName: "f0_shared" },
      { nf: "a", name: "alpha_own", objectName: "alpha_own" },
      { nf: "b", name: "shared", objectName: "f1_shared" },
    ]);
    expect(r.value.rodata.map((s) => s.objectName)).toEqual(["f0_knob", "f1_knob"]);
    expect(r.value.text).toContain("#define shared f1_shared");
  });

  test("one source without maps serves several positions (a chain of no-ops)", () => {
    const noop = "static __always_inline enum sluice_verdict noop_process(void) { return 0; }";
    const r = generateFused("xdp", [nf("n0", "noop", noop), nf("n1", "noop", noop), nf("n2", "noop", noop)]);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.value.text.match(/#include "noop.h"/g)).toHaveLength(1);
    expect(r.value.text.match(/noop_process\(\)/g)).toHaveLength(3);
    expect(r.value.text).not.toContain("SLUICE_PARSE");
  });

  test("says why a chain cannot be fused", () => {
    const mapped = nf("a", "alpha", pktFn("alpha"), { maps: ["m"] });
    expect(generateFused("xdp", [mapped, { ...mapped, name: "b" }])).toEqual({
      ok: false,
      reason: "a and b share one source with maps of its own; a fused program holds one copy of them",
    });
    expect(generateFused("xdp", [nf("a", "alpha", "static int alpha(void) {}")])).toMatchObject({
      ok: false,
      reason: expect.stringContaining("defines no static __always_inline alpha_process"),
    });
    const odd = "static __always_inline enum sluice_verdict alpha_process(struct foo *x) {}";
    expect(generateFused("xdp", [nf("a", "alpha", odd)])).toMatchObject({
      ok: false,
      reason: expect.stringContaining('no fused argument for parameter "struct foo *x"'),
    });
    const xdpOnly = "static __always_inline enum sluice_verdict alpha_process(struct xdp_md *ctx) {}";
    expect(generateFused("tc", [nf("a", "alpha", xdpOnly)])).toMatchObject({ ok: false });
    const commented = `/* ${pktFn("alpha")} */`;
    expect(generateFused("xdp", [nf("a", "alpha", commented)]).ok).toBe(false);
  });
});
