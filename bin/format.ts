import { pino, type Logger } from "pino";
import type { SingleHostStatus } from "./run.ts";
import { SPARK_SECONDS, type RateHistory } from "./sparkline.ts";

const levels: Record<number, string> = {
  10: "trace",
  20: "debug",
  30: "info",
  40: "warn",
  50: "error",
  60: "fatal",
};
const skip = new Set(["level", "time", "pid", "hostname", "name", "msg", "component"]);

/**
 * A logger for people at a terminal: one plain line per event (`12:00:01 info  chain is live
 * chain=default.web revision=ab12`), written to stderr. Processes in a cluster log JSON instead.
 */
export function cliLogger(): Logger {
  return pino(
    { level: process.env.SLUICE_LOG_LEVEL ?? "info" },
    {
      write(line: string) {
        const entry = JSON.parse(line) as Record<string, unknown>;
        const time = new Date(entry.time as number).toTimeString().slice(0, 8);
        const fields = Object.entries(entry)
          .filter(([k]) => !skip.has(k))
          .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : String(v)}`)
          .join(" ");
        const level = (levels[entry.level as number] ?? "info").padEnd(5);
        process.stderr.write(`${time} ${level} ${String(entry.msg ?? "")}${fields ? `  ${fields}` : ""}\n`);
      },
    },
  );
}

/** Asks a `sluice run` on this host for its status document. */
export async function fetchStatus(
  port: string | number,
): Promise<{ ok: true; doc: SingleHostStatus } | { ok: false; error: string }> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/status`, { signal: AbortSignal.timeout(5_000) });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    return { ok: true, doc: (await res.json()) as SingleHostStatus };
  } catch (err) {
    return {
      ok: false,
      error: `no sluice run answers on 127.0.0.1:${port} (${err instanceof Error ? err.message : String(err)})`,
    };
  }
}

/** A rate for a narrow column: `950`, `12.3k`, `1.20M`; `-` when unknown. */
export function formatRate(perSecond: number | undefined): string {
  if (perSecond === undefined) return "-";
  if (perSecond < 10_000) return String(perSecond);
  if (perSecond < 1_000_000) return `${(perSecond / 1000).toFixed(1)}k`;
  return `${(perSecond / 1e6).toFixed(2)}M`;
}

/** Right-aligned columns (the first left-aligned), two spaces apart, indented by two. */
export function formatTable(rows: string[][]): string[] {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows.map(
    (r) =>
      "  " + r.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join("  "),
  );
}

/**
 * `sluice status` as a table: source, chains that are not ready and why, per-NF counters and
 * rates; with `history` (`--watch`), sparklines of the last seconds' packets/s and drops/s.
 */
export function formatStatus(doc: SingleHostStatus, history?: RateHistory): string {
  const lines: string[] = [];
  lines.push(
    `node ${doc.node}   source ${doc.source.name} ${doc.source.revision ?? "(not synced yet)"}   ready ${doc.source.ready ?? "Unknown"}`,
  );
  if (doc.source.ready === "False" && doc.source.message) lines.push(`  ${doc.source.message}`);
  if (doc.phase === "Syncing")
    lines.push("waiting for the first sync of Git; chains pinned by an earlier run are left as they are");
  for (const sc of doc.serviceChains ?? []) {
    if (sc.ready === "True") continue;
    lines.push(
      `servicechain ${sc.name}  ready ${sc.ready ?? "Unknown"}${sc.reason ? ` (${sc.reason})` : ""}`,
    );
    if (sc.message) lines.push(`  ${sc.message}`);
    // The one mistake everyone makes once: NFs name the GitSource of the cluster's manifests.
    const wanted = /GitSource (\S+) of NetworkFunction \S+ not found/.exec(sc.message ?? "")?.[1];
    if (wanted && wanted !== doc.source.name)
      lines.push(
        `  hint: this host follows one GitSource, named ${doc.source.name}; run sluice run with --name ${wanted}`,
      );
  }
  if (doc.chains.length === 0) lines.push("no chains on this host yet");
  for (const c of doc.chains) {
    const ifs = c.interfaces.map((i) => (i.xdpMode ? `${i.name}(${i.xdpMode})` : i.name)).join(",");
    lines.push("");
    lines.push(`chain ${c.name}  revision ${c.revision}  ${c.hook} on ${ifs}  ready ${c.ready ?? "Unknown"}`);
    if (c.ready === "False" && c.message) lines.push(`  ${c.message}`);
    if (c.lastApply) {
      const a = c.lastApply;
      const carried = a.carriedMaps.length ? `, ${a.carriedMaps.length} maps carried over` : "";
      const lost = a.recreatedMaps.length ? `, ${a.recreatedMaps.length} started empty` : "";
      lines.push(
        `  last change ${a.action} at ${a.at.slice(11, 19)} in ${a.totalMs} ms` +
          `${a.action === "switched" || a.action === "created" ? ` (switch ${a.flipUs} µs)` : ""}${carried}${lost}`,
      );
    }
    const spark = (n: { name: string }) => {
      const l = history?.lines(c.name, n.name);
      return l ? [l.packets, l.drops] : [];
    };
    lines.push(
      ...formatTable([
        [
          "NF",
          "PACKETS",
          "PKT/S",
          "PASSES",
          "DROPS",
          "DROP/S",
          "ERRORS",
          "BYTES",
          ...(history ? [`PKT/S LAST ${SPARK_SECONDS} S`, `DROP/S LAST ${SPARK_SECONDS} S`] : []),
        ],
        ...c.nfs.map((n) => [
          n.name,
          n.packets,
          formatRate(n.packetsPerSecond),
          n.passes,
          n.drops,
          formatRate(n.dropsPerSecond),
          n.errors,
          n.bytes,
          ...spark(n),
        ]),
      ]),
    );
  }
  return lines.join("\n") + "\n";
}
