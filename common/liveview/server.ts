/**
 * Serves the live view: a static page (web/index.html, app.js, app.css and uPlot's files from
 * npm, shipped inside dist/ by the build) and its data, a snapshot (`GET /live/snapshot`) and
 * then one server-sent event a second (`GET /live/events`), and the last reading of every chain
 * (`GET /live/readings`, for the operator's cluster view). Nothing on the page comes from
 * anywhere but the serving host; the Content-Security-Policy says so to the browser too.
 */
import { existsSync, readFileSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Logger } from "../log.ts";
import { LiveHistory, type LiveEvent } from "./history.ts";
import type { ChainReading, RolloutView } from "./model.ts";
import { encodeReadings } from "./wire.ts";

/** How long a `GET /live/readings?watched=1` counts as a page looking (the operator's, elsewhere). */
const REMOTE_WATCH_MS = 5_000;

/** Options of {@link LiveView}. */
export interface LiveViewOptions {
  /** Shown as the page title (e.g. the node name, or the cluster). */
  title: string;
  /** Reads every chain now; called once a second. `watched` is true while a page is open. */
  read: (watched: boolean) => Promise<ChainReading[]>;
  /** Every ServiceChain's rollout (the operator's cluster view); read with each sample. */
  rollouts?: () => Promise<RolloutView[]>;
  intervalMs?: number;
  log?: Logger;
}

/** A handler of one path. */
export type LiveRoute = (req: IncomingMessage, res: ServerResponse) => void;

const CONTENT_TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
};

/** Where the page's files are: `web/` next to dist/ or the sources, uPlot from its npm package. */
function findAssetDirs(): { web: string; uplot: string } {
  const here = dirname(fileURLToPath(import.meta.url));
  let web: string | undefined;
  let uplot: string | undefined;
  for (let dir = here, i = 0; i < 6; i++, dir = dirname(dir)) {
    web ??= existsSync(join(dir, "web", "index.html")) ? join(dir, "web") : undefined;
    if (web && !uplot && existsSync(join(web, "vendor", "uPlot.iife.min.js"))) uplot = join(web, "vendor");
    uplot ??= existsSync(join(dir, "node_modules", "uplot", "dist", "uPlot.iife.min.js"))
      ? join(dir, "node_modules", "uplot", "dist")
      : undefined;
  }
  if (!web || !uplot)
    throw new Error("live view: the page's files (web/, uPlot) are not installed next to sluice");
  return { web, uplot };
}

let assets: Map<string, { type: string; body: Buffer }> | undefined;

/** The page's files by URL path, read once. */
export function liveViewAssets(): Map<string, { type: string; body: Buffer }> {
  if (assets) return assets;
  const dirs = findAssetDirs();
  const files: Array<[string, string]> = [
    ["/", join(dirs.web, "index.html")],
    ["/live/app.js", join(dirs.web, "app.js")],
    ["/live/app.css", join(dirs.web, "app.css")],
    ["/live/uPlot.iife.min.js", join(dirs.uplot, "uPlot.iife.min.js")],
    ["/live/uPlot.min.css", join(dirs.uplot, "uPlot.min.css")],
  ];
  assets = new Map(
    files.map(([path, file]) => [
      path,
      {
        type: CONTENT_TYPES[file.slice(file.lastIndexOf("."))] ?? "application/octet-stream",
        body: readFileSync(file),
      },
    ]),
  );
  return assets;
}

const SECURITY_HEADERS = {
  // The page and its data come from this host only; no inline script.
  "content-security-policy":
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "cache-control": "no-store",
};

/** Samples chains once a second into a history and serves the page that draws it. */
export class LiveView {
  readonly history: LiveHistory;
  readonly #options: LiveViewOptions;
  #timer: NodeJS.Timeout | undefined;
  #sampling = false;
  readonly #streams = new Set<ServerResponse>();
  #last: { atMs: number; readings: ChainReading[] } = { atMs: 0, readings: [] };
  #remoteWatchUntil = 0;

  constructor(options: LiveViewOptions) {
    this.#options = options;
    this.history = new LiveHistory(options.title);
  }

  /** Starts sampling. */
  start(): void {
    this.#timer = setInterval(() => void this.#sample(), this.#options.intervalMs ?? 1000);
    this.#timer.unref();
    void this.#sample();
  }

  async #sample(): Promise<void> {
    if (this.#sampling) return;
    this.#sampling = true;
    try {
      const watched = this.history.watchers > 0 || Date.now() < this.#remoteWatchUntil;
      const readings = await this.#options.read(watched);
      const rollouts = await this.#options.rollouts?.();
      const atMs = Date.now();
      this.#last = { atMs, readings };
      this.history.record(atMs, readings, rollouts);
    } catch (err) {
      // A chain switched or removed while it was read: the next second reads again.
      this.#options.log?.debug({ err }, "live view: reading chains failed");
    } finally {
      this.#sampling = false;
    }
  }

  /** Stops sampling and ends every open event stream. */
  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    for (const res of this.#streams) res.end();
    this.#streams.clear();
  }

  /** Every path the view serves, with its handler (register them on the HTTP server). */
  routes(): Array<[path: string, handler: LiveRoute]> {
    const files = [...liveViewAssets()].map(([path, file]): [string, LiveRoute] => [
      path,
      (_req, res) => {
        res.writeHead(200, { "content-type": file.type, ...SECURITY_HEADERS });
        res.end(file.body);
      },
    ]);
    return [
      ...files,
      [
        "/live/snapshot",
        (_req, res) => {
          res.writeHead(200, { "content-type": "application/json", ...SECURITY_HEADERS });
          res.end(JSON.stringify(this.history.snapshot()));
        },
      ],
      ["/live/events", (req, res) => this.#stream(req, res)],
      [
        // The last reading of every chain, counters and all: what the operator's cluster view
        // asks each agent for. `?watched=1`: a page looks there, so count kernel run time.
        "/live/readings",
        (req, res) => {
          if (new URL(req.url ?? "/", "http://localhost").searchParams.get("watched") === "1")
            this.#remoteWatchUntil = Date.now() + REMOTE_WATCH_MS;
          res.writeHead(200, { "content-type": "application/json", ...SECURITY_HEADERS });
          res.end(encodeReadings(this.#last.atMs, this.#last.readings));
        },
      ],
    ];
  }

  #stream(req: IncomingMessage, res: ServerResponse): void {
    res.writeHead(200, {
      "content-type": "text/event-stream; charset=utf-8",
      connection: "keep-alive",
      ...SECURITY_HEADERS,
    });
    res.write(`retry: 2000\nevent: snapshot\ndata: ${JSON.stringify(this.history.snapshot())}\n\n`);
    const send = (event: LiveEvent) => res.write(`event: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`);
    const unsubscribe = this.history.subscribe(send);
    const keepAlive = setInterval(() => res.write(": keep-alive\n\n"), 15_000);
    keepAlive.unref();
    this.#streams.add(res);
    const end = () => {
      unsubscribe();
      clearInterval(keepAlive);
      this.#streams.delete(res);
    };
    req.on("close", end);
    res.on("close", end);
  }
}
