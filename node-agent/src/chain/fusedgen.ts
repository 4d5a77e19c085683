/**
 * The C source of a fused chain: one program that parses the packet once and calls each NF's
 * `static __always_inline` process function in chain order (see bpf/include/sluice_fused.h).
 *
 * The inline contract of an NF: next to its `<stem>.bpf.c` sits `<stem>.h`, which declares the
 * NF's maps and `.rodata` parameters and defines `<stem>_process` (or `<stem>_process_at`, which
 * takes the clock reading `__u64 now`, so that the fused program reads the clock once for all
 * NFs). Its parameters are taken by what they are:
 *
 * | parameter                        | what the fused program passes                        |
 * | -------------------------------- | ---------------------------------------------------- |
 * | `const struct sluice_pkt *pkt`   | the one parse of the packet                          |
 * | `int parsed`                     | the parse result                                     |
 * | `__u64 now`                      | `bpf_ktime_get_ns()`, read once per packet           |
 * | `void *ctx` (or the hook's type) | the hook's context                                   |
 * | `int is_xdp`                     | 1 in an XDP chain, 0 in a tc chain                   |
 * | `void *data`, `void *data_end`   | the frame, read from the context at the call         |
 * | `__u32 ifindex`                  | the receiving interface                              |
 *
 * Pure: no files, no kernel. {@link generateFused} says why a chain cannot be fused instead of
 * throwing, so that `auto` can fall back to linked with that reason.
 */
import type { ProgramHook } from "../packet/index.ts";

/** Where an NF's inline contract lives. */
export interface FusionSource {
  /** Absolute directory of the NF's sources (its header's directory). */
  dir: string;
  /** The header, relative to `dir` (`<stem>.h`). */
  header: string;
  /** The NF's C name: its functions are `<stem>_process` / `<stem>_process_at`. */
  stem: string;
  /** Compile-time defines of the NF (custom NFs' parameters), set around its include. */
  defines?: Record<string, string>;
}

/** One NF as the generator sees it. */
export interface FusedNfInput {
  /** Name in the chain. */
  name: string;
  source: FusionSource;
  /** The header's text. */
  headerText: string;
  /** NF-owned maps (from its linked object). */
  maps: readonly string[];
  /** Its `.rodata` variables, without the chain settings (from its linked object). */
  rodata: readonly string[];
}

/** Where an NF's symbol ended up in the fused object. */
export interface FusedSymbol {
  nf: string;
  /** Name in the NF's own object. */
  name: string;
  /** Name in the fused object. */
  objectName: string;
}

/** A generated fused program. */
export interface FusedSource {
  /** The C file. */
  text: string;
  /** The program's name in the object. */
  program: string;
  /** NF-owned maps. */
  maps: FusedSymbol[];
  /** `.rodata` parameters. */
  rodata: FusedSymbol[];
  /** `.rodata` setting holding NF i's stats slot. */
  indexVariables: string[];
  /** Directories to put on the include path. */
  includeDirs: string[];
}

export type GenerateResult = { ok: true; value: FusedSource } | { ok: false; reason: string };

/** Program name of a fused chain for a hook. */
export function fusedProgramName(hook: ProgramHook): string {
  return `sluice_fused_${hook}`;
}

/** `.rodata` setting of NF i's stats slot. */
export function fusedIndexVariable(i: number): string {
  return `sluice_fused_index_${i}`;
}

interface Call {
  /** C expression of the call. */
  expr: string;
  needsParse: boolean;
  needsNow: boolean;
  needsData: boolean;
}

/** The process function an NF's header defines, with its parameter list; undefined when none. */
function findProcess(stem: string, text: string): { fn: string; params: string[] } | undefined {
  // Comments out of the way, so that a commented-out definition does not count.
  const code = text.replace(/\/\*[\s\S]*?\*\//g, " ").replace(/\/\/[^\n]*/g, " ");
  for (const fn of [`${stem}_process_at`, `${stem}_process`]) {
    const re = new RegExp(
      `static\\s+(?:__always_inline|inline\\s+__attribute__\\s*\\(\\(always_inline\\)\\))[^;{(]*\\b${fn}\\s*\\(([^)]*)\\)\\s*\\{`,
    );
    const m = re.exec(code);
    if (!m) continue;
    const list = m[1]!.replace(/\s+/g, " ").trim();
    const params = list === "" || list === "void" ? [] : list.split(",").map((p) => p.trim());
    return { fn, params };
  }
  return undefined;
}

/** The call of `fn` with `params` in a fused program of `hook`, or why it cannot be made. */
function callOf(fn: string, params: readonly string[], hook: ProgramHook): Call | string {
  const args: string[] = [];
  const call: Call = { expr: "", needsParse: false, needsNow: false, needsData: false };
  for (const param of params) {
    const p = param.replace(/\s*\*\s*/g, " *").replace(/\bconst /g, "");
    if (/^struct sluice_pkt \*\w+$/.test(p)) {
      args.push("&pkt");
      call.needsParse = true;
    } else if (/^int parsed$/.test(p)) {
      args.push("parsed");
      call.needsParse = true;
    } else if (/^(__u64|u64|unsigned long long) now(_ns)?$/.test(p)) {
      args.push("now");
      call.needsNow = true;
    } else if (/^void \*(ctx|skb)$/.test(p)) {
      args.push("ctx");
    } else if (/^struct xdp_md \*\w+$/.test(p)) {
      if (hook !== "xdp") return `${fn} takes struct xdp_md: it runs only in XDP chains`;
      args.push("ctx");
    } else if (/^struct __sk_buff \*\w+$/.test(p)) {
      if (hook !== "tc") return `${fn} takes struct __sk_buff: it runs only in tc chains`;
      args.push("ctx");
    } else if (/^int is_xdp$/.test(p)) {
      args.push(hook === "xdp" ? "1" : "0");
    } else if (/^void \*data$/.test(p)) {
      args.push("(void *)(long)ctx->data");
      call.needsData = true;
    } else if (/^void \*data_end$/.test(p)) {
      args.push("(void *)(long)ctx->data_end");
      call.needsData = true;
    } else if (/^(__u32|u32|int) ifindex$/.test(p)) {
      args.push(hook === "xdp" ? "ctx->ingress_ifindex" : "ctx->ifindex");
    } else {
      return `${fn}: no fused argument for parameter "${param}" (see the inline contract in bpf/README.md)`;
    }
  }
  call.expr = `${fn}(${args.join(", ")})`;
  return call;
}

/**
 * Generates the fused program of `nfs` (chain order) for `hook`, or says why the chain cannot be
 * fused: an NF without the inline contract, one source used twice (its code can be included
 * once), two NFs with the same C name. Maps and parameters that two NFs both declare are renamed
 * in the fused object (`f<i>_<name>`); the loader maps them back to each NF's own pins.
 */
export function generateFused(hook: ProgramHook, nfs: readonly FusedNfInput[]): GenerateResult {
  const stems = new Map<string, string>();
  /** First NF of each source (header and defines): a source is included once. */
  const sources = new Map<string, number>();
  /** For each NF, the earlier NF whose include it shares, if any. */
  const sharesWith: (number | undefined)[] = [];
  const calls: Call[] = [];
  for (const [i, nf] of nfs.entries()) {
    const { stem, dir, header } = nf.source;
    const key = JSON.stringify([dir, header, Object.entries(nf.source.defines ?? {}).sort()]);
    const first = sources.get(key);
    if (first !== undefined) {
      // One copy of the code serves both, so it must keep nothing of its own.
      if (nf.maps.length > 0) {
        return {
          ok: false,
          reason: `${nfs[first]!.name} and ${nf.name} share one source with maps of its own; a fused program holds one copy of them`,
        };
      }
      sharesWith.push(first);
      calls.push(calls[first]!);
      continue;
    }
    sources.set(key, i);
    sharesWith.push(undefined);
    const sameStem = stems.get(stem);
    if (sameStem !== undefined)
      return { ok: false, reason: `${sameStem} and ${nf.name} both define ${stem}_process` };
    stems.set(stem, nf.name);
    const found = findProcess(stem, nf.headerText);
    if (!found) {
      return {
        ok: false,
        reason: `${nf.name}: ${header} defines no static __always_inline ${stem}_process (the inline contract)`,
      };
    }
    const call = callOf(found.fn, found.params, hook);
    if (typeof call === "string") return { ok: false, reason: `${nf.name}: ${call}` };
    calls.push(call);
  }

  // Symbols declared by more than one NF are renamed in each.
  const owners = new Map<string, number>();
  nfs.forEach((nf, i) => {
    if (sharesWith[i] !== undefined) return;
    for (const s of new Set([...nf.maps, ...nf.rodata])) owners.set(s, (owners.get(s) ?? 0) + 1);
  });
  const maps: FusedSymbol[] = [];
  const rodata: FusedSymbol[] = [];
  const indexVariables = nfs.map((_, i) => fusedIndexVariable(i));
  const program = fusedProgramName(hook);
  const ctxType = hook === "xdp" ? "struct xdp_md" : "struct __sk_buff";
  const lines: string[] = [
    "// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause",
    `/* Generated by sluice: a fused chain of ${nfs.map((nf) => nf.name).join(" -> ")}. */`,
    '#include "sluice.h"',
    '#include "sluice_fused.h"',
    "",
  ];
  nfs.forEach((nf, i) => {
    const shared = sharesWith[i];
    if (shared !== undefined) {
      // Same code and parameters as NF `shared` (the loader checks that their values agree).
      for (const r of rodata.filter((s) => s.nf === nfs[shared]!.name)) rodata.push({ ...r, nf: nf.name });
      lines.push(`/* ${i}: ${nf.name}, the code of ${nfs[shared]!.name} */`);
      lines.push(`const volatile __u32 ${indexVariables[i]} = ${i};`, "");
      return;
    }
    const renames: string[] = [];
    const rename = (name: string, list: FusedSymbol[]): void => {
      const clash = (owners.get(name) ?? 0) > 1;
      const objectName = clash ? `f${i}_${name}` : name;
      if (clash) renames.push(name);
      list.push({ nf: nf.name, name, objectName });
    };
    for (const m of nf.maps) rename(m, maps);
    for (const r of nf.rodata) rename(r, rodata);
    const defines = Object.entries(nf.source.defines ?? {});
    lines.push(`/* ${i}: ${nf.name} */`);
    for (const name of renames) lines.push(`#define ${name} f${i}_${name}`);
    for (const [k, v] of defines) lines.push(`#define ${k} ${v}`);
    lines.push(`#include "${nf.source.header}"`);
    for (const [k] of defines) lines.push(`#undef ${k}`);
    for (const name of renames) lines.push(`#undef ${name}`);
    lines.push(`const volatile __u32 ${indexVariables[i]} = ${i};`, "");
  });

  const needsParse = calls.some((c) => c.needsParse);
  const needsData = calls.some((c) => c.needsData);
  const firstNow = calls.findIndex((c) => c.needsNow);
  const end = hook === "xdp" ? "sluice_fused_end_xdp" : "sluice_fused_end_tc";
  lines.push(`SEC("${hook === "xdp" ? "xdp" : "tc"}")`, `int ${program}(${ctxType} *ctx)`, "{");
  lines.push("\tenum sluice_verdict verdict;");
  if (needsParse) lines.push("\tstruct sluice_pkt pkt;", "\tint parsed = SLUICE_PARSE(ctx, &pkt);");
  else if (needsData && hook === "tc") lines.push("\tsluice_pull_headers(ctx);");
  if (firstNow >= 0) lines.push("\t__u64 now;");
  lines.push("");
  calls.forEach((call, i) => {
    if (i === firstNow) lines.push("\tnow = bpf_ktime_get_ns();");
    lines.push(`\tverdict = ${call.expr};`);
    // Per-function time (sluice_time_sample in sluice.h; removed by the verifier when off).
    const ends = i < calls.length - 1 ? "verdict != SLUICE_CONTINUE" : "1";
    lines.push(`\tsluice_time_hop(${indexVariables[i]}, ${ends});`);
    if (i < calls.length - 1) {
      lines.push(
        `\tif (verdict != SLUICE_CONTINUE)`,
        `\t\treturn ${end}(ctx, verdict, ${indexVariables[i]});`,
      );
    } else {
      lines.push(`\treturn ${end}(ctx, verdict, ${indexVariables[i]});`);
    }
  });
  lines.push("}", "", 'char LICENSE[] SEC("license") = "Dual BSD/GPL";', "");
  const includeDirs = [...new Set(nfs.map((nf) => nf.source.dir))];
  return { ok: true, value: { text: lines.join("\n"), program, maps, rodata, indexVariables, includeDirs } };
}
