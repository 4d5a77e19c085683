/** What the demo shows while it runs. */
import { formatRate, formatTable } from "../../bin/format.ts";
import type { SingleHostStatus } from "../../bin/run.ts";
import type { FlowProgress } from "./traffic.ts";

/** What the demo shows: in a terminal a table redrawn every second, else plain lines. */
export class Screen {
  readonly tty = Boolean(process.stdout.isTTY);
  readonly #events: string[] = [];

  constructor(private readonly header: string[]) {}

  /** Something happened: kept for the screen, printed at once when not in a terminal. */
  event(text: string): void {
    const line = `${new Date().toTimeString().slice(0, 8)} ${text}`;
    this.#events.push(line);
    if (this.#events.length > 12) this.#events.shift();
    if (!this.tty) process.stdout.write(`demo: ${text}\n`);
  }

  /** One frame: the chain's counters and the flow's counts. */
  frame(doc: SingleHostStatus | undefined, flow: FlowProgress | undefined, footer: string): void {
    const out: string[] = [...this.header, ""];
    const chain = doc?.chains[0];
    if (doc)
      out.push(`source ${doc.source.revision ?? "(syncing)"}   ready ${doc.source.ready ?? "Unknown"}`);
    if (chain) {
      out.push(`chain ${chain.name}  revision ${chain.revision}  ready ${chain.ready ?? "Unknown"}`);
      out.push(
        ...formatTable([
          ["NF", "PACKETS", "PKT/S", "DROPS", "DROP/S"],
          ...chain.nfs.map((n) => [
            n.name,
            n.packets,
            formatRate(n.packetsPerSecond),
            n.drops,
            formatRate(n.dropsPerSecond),
          ]),
        ]),
      );
    } else out.push("no chain yet");
    if (flow)
      out.push(
        "",
        `traffic h1 -> h2: sent ${flow.sent}  received ${flow.received}  missing so far ${flow.missing}`,
      );
    if (this.tty) {
      out.push("", "events", ...this.#events.map((e) => `  ${e}`), "", footer);
      process.stdout.write("\x1b[H\x1b[2J" + out.join("\n") + "\n");
    } else {
      process.stdout.write(out.slice(this.header.length + 1).join("\n") + "\n");
    }
  }
}
