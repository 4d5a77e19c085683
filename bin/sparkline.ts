/**
 * Sparklines for `sluice status --watch`: the last seconds of each function's packets/s and
 * drops/s, drawn with block characters. The history starts from the live view's snapshot (the
 * server keeps 15 minutes), then grows by one reading a second.
 */
import type { LiveSnapshot } from "../common/liveview/index.ts";
import type { SingleHostStatus } from "./run.ts";

const BARS = "▁▂▃▄▅▆▇█";

/** How many seconds a sparkline shows. */
export const SPARK_SECONDS = 30;

/**
 * The last `width` values as bars scaled to their maximum (a missing value is a space; all
 * zeros are the lowest bar).
 */
export function sparkline(values: readonly (number | undefined)[], width = SPARK_SECONDS): string {
  const shown = values.slice(-width);
  const max = Math.max(0, ...shown.map((v) => v ?? 0));
  const bars = shown.map((v) =>
    v === undefined
      ? " "
      : BARS[max === 0 ? 0 : Math.min(BARS.length - 1, Math.round((v / max) * (BARS.length - 1)))]!,
  );
  return " ".repeat(Math.max(0, width - bars.length)) + bars.join("");
}

/** Per function `<chain>/<nf>`: packets/s and drops/s, one value a second. */
export class RateHistory {
  readonly #series = new Map<string, { packets: (number | undefined)[]; drops: (number | undefined)[] }>();

  /** Starts from the server's own history (`GET /live/snapshot`) of node `node`. */
  seed(snapshot: LiveSnapshot, node: string): void {
    for (const point of snapshot.points.slice(-SPARK_SECONDS)) {
      for (const [key, rates] of Object.entries(point.functions)) {
        if (!key.startsWith(`${node}/`)) continue;
        const series = this.#get(key.slice(node.length + 1));
        series.packets.push(rates[0]);
        series.drops.push(rates[1]);
      }
    }
  }

  /** Adds the rates of one status reading. */
  add(doc: SingleHostStatus): void {
    for (const chain of doc.chains)
      for (const nf of chain.nfs) {
        const series = this.#get(`${chain.name}/${nf.name}`);
        series.packets.push(nf.packetsPerSecond);
        series.drops.push(nf.dropsPerSecond);
        series.packets.splice(0, Math.max(0, series.packets.length - SPARK_SECONDS));
        series.drops.splice(0, Math.max(0, series.drops.length - SPARK_SECONDS));
      }
  }

  /** Sparklines of function `nf` of `chain`: packets/s and drops/s. */
  lines(chain: string, nf: string): { packets: string; drops: string } {
    const series = this.#series.get(`${chain}/${nf}`);
    return { packets: sparkline(series?.packets ?? []), drops: sparkline(series?.drops ?? []) };
  }

  #get(key: string) {
    let series = this.#series.get(key);
    if (!series) this.#series.set(key, (series = { packets: [], drops: [] }));
    return series;
  }
}

/** The live view's snapshot from a `sluice run` on this host, or undefined (an older one has none). */
export async function fetchLiveSnapshot(port: string | number): Promise<LiveSnapshot | undefined> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/live/snapshot`, { signal: AbortSignal.timeout(5_000) });
    return res.ok ? ((await res.json()) as LiveSnapshot) : undefined;
  } catch {
    return undefined;
  }
}
