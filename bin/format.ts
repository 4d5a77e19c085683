import { pino, type Logger } from "pino";
import type { SingleHostStatus } from "./run.ts";

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

/** `sluice status` as a table. */
export function formatStatus(doc: SingleHostStatus): string {
  const lines: string[] = [];
  lines.push(
    `node ${doc.node}   source ${doc.source.revision ?? "(not synced yet)"}   ready ${doc.source.ready ?? "Unknown"}`,
  );
  if (doc.source.ready === "False" && doc.source.message) lines.push(`  ${doc.source.message}`);
  if (doc.chains.length === 0) lines.push("no chains on this host yet");
  for (const c of doc.chains) {
    const ifs = c.interfaces.map((i) => (i.xdpMode ? `${i.name}(${i.xdpMode})` : i.name)).join(",");
    lines.push("");
    lines.push(`chain ${c.name}  revision ${c.revision}  ${c.hook} on ${ifs}  ready ${c.ready ?? "Unknown"}`);
    if (c.ready === "False" && c.message) lines.push(`  ${c.message}`);
    const rows = [
      ["NF", "PACKETS", "PASSES", "DROPS", "ERRORS", "BYTES"],
      ...c.nfs.map((n) => [n.name, n.packets, n.passes, n.drops, n.errors, n.bytes]),
    ];
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
    for (const r of rows)
      lines.push(
        "  " + r.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join("  "),
      );
  }
  return lines.join("\n") + "\n";
}
