import { createHmac, timingSafeEqual } from "node:crypto";
import { createReadStream } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { rootLogger, type Logger } from "../../../common/log.ts";
import type { ArtifactStore } from "../../../common/artifact/store.ts";

/** What a verified webhook delivery tells its handler. */
export interface WebhookTrigger {
  /** `X-GitHub-Event` (e.g. `push`), or `X-Gitlab-Event` / `X-Event-Key` when those are sent. */
  event?: string;
  /** `X-GitHub-Delivery`: the sender's id of this delivery, for logs. */
  delivery?: string;
  /** The raw, verified request body. */
  payload: Buffer;
}

/**
 * Called after a delivery's signature is verified, once per registration. The HTTP response is
 * sent before it runs, so it should only mark the source(s) for reconcile, not sync inline.
 */
export type WebhookHandler = (trigger: WebhookTrigger) => void | Promise<void>;

/** A registered webhook. */
export interface WebhookRegistration {
  /** The URL path to configure at the Git host: `/hook/<32 hex digits>`. */
  readonly path: string;
  /** Stops calling this registration's handler (others on the same token stay). */
  unregister(): void;
}

/** A handler for an extra route, such as `GET /metrics`. */
export type RouteHandler = (req: IncomingMessage, res: ServerResponse) => void | Promise<void>;

/** Options of {@link SourceServer}. */
export interface SourceServerOptions {
  /** Where `GET /artifacts/...` reads from. */
  store: ArtifactStore;
  /** Largest webhook body accepted, in bytes (default 1 MiB); larger ones get 413. */
  maxBodyBytes?: number;
  /** Answers `GET /readyz`; default: always ready. */
  ready?: () => boolean;
  logger?: Logger;
}

/**
 * The path of the webhook for `token`: `/hook/` + the first 32 hex digits of
 * HMAC-SHA256(key = `salt`, token). The salt is random per GitSource and kept in its status, so
 * the path stays put across restarts, changes with the token or the salt, and is different for two
 * sources that share a token; a path alone cannot be matched against a list of known tokens'
 * hashes. A guessed path is worthless without the token to sign with.
 */
export function webhookPath(token: string, salt: string): string {
  return `/hook/${createHmac("sha256", salt).update(token).digest("hex").slice(0, 32)}`;
}

/** The `X-Hub-Signature-256` value a sender with `token` puts on `body`: `sha256=<hex>`. */
export function signWebhookPayload(token: string, body: Buffer | string): string {
  return `sha256=${createHmac("sha256", token).update(body).digest("hex")}`;
}

/** Artifacts served per source: the current one and the ones before it that nodes may still need. */
export const PUBLISHED_PER_SOURCE = 5;

const ARTIFACT_PATH = /^\/artifacts\/([a-z0-9.-]{1,253})\/([a-z0-9.-]{1,253})\/([0-9a-f]{64})\.tar\.gz$/;
const HOOK_PATH = /^\/hook\/([0-9a-f]{32})$/;

class PayloadTooLargeError extends Error {
  constructor() {
    super("payload too large");
    this.name = "PayloadTooLargeError";
  }
}

/**
 * The operator's one HTTP server: artifacts for agents (`GET /artifacts/<ns>/<name>/<hex>.tar.gz`),
 * webhook receivers (`POST /hook/<id>`, GitHub-style HMAC-SHA256 signatures), `GET /healthz`,
 * `GET /readyz`, and extra routes registered with {@link route} (for example `/metrics`).
 *
 * Only artifacts a GitSource published are served ({@link publishArtifact}); everything else,
 * including any path that is not exactly `/artifacts/<ns>/<name>/<64 hex>.tar.gz` (`..`,
 * encoded slashes), is 404. Published artifacts are public to whoever reaches the server: their
 * URLs are unguessable digests and their contents are what the repository holds; put the server
 * behind a NetworkPolicy when the repository is private.
 */
export class SourceServer {
  /** The underlying node:http server (owned by this object; {@link close} closes it). */
  readonly server: Server;
  private readonly store: ArtifactStore;
  private readonly maxBodyBytes: number;
  private readonly ready: () => boolean;
  private readonly log: Logger;
  private readonly hooks = new Map<string, { token: string; handlers: Set<WebhookHandler> }>();
  private readonly routes = new Map<string, RouteHandler>();
  /** Digests (hex) each source published, by `<namespace>/<name>`, oldest first. */
  private readonly published = new Map<string, Set<string>>();
  /** Artifacts served beyond the published ones: those live plans still name. */
  private retained: (namespace: string, name: string, digest: string) => boolean = () => false;

  constructor(options: SourceServerOptions) {
    this.store = options.store;
    this.maxBodyBytes = options.maxBodyBytes ?? 1 << 20;
    this.ready = options.ready ?? (() => true);
    this.log = (options.logger ?? rootLogger).child({ component: "source-server" });
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        this.log.error({ err }, "request failed");
        if (!res.headersSent) reply(res, 500, "internal error\n");
        else res.destroy();
      });
    });
    // Slow senders must not hold connections forever; artifact downloads get the longest budget.
    this.server.requestTimeout = 120_000;
    this.server.headersTimeout = 20_000;
  }

  /**
   * Registers a webhook for `token` at the path keyed with `salt` (see {@link webhookPath}) and
   * returns that path. Registrations with the same token and salt share the path: each handler
   * is called.
   */
  registerWebhook(token: string, salt: string, onTrigger: WebhookHandler): WebhookRegistration {
    if (token.length === 0) throw new Error("webhook token must not be empty");
    if (salt.length === 0) throw new Error("webhook salt must not be empty");
    const path = webhookPath(token, salt);
    const entry = this.hooks.get(path) ?? { token, handlers: new Set<WebhookHandler>() };
    // A registration object per call, so registering one function twice unregisters cleanly.
    const handler: WebhookHandler = (t) => onTrigger(t);
    entry.handlers.add(handler);
    this.hooks.set(path, entry);
    return {
      path,
      unregister: () => {
        entry.handlers.delete(handler);
        if (entry.handlers.size === 0 && this.hooks.get(path) === entry) this.hooks.delete(path);
      },
    };
  }

  /**
   * Lets the server hand out the artifact `digest` of a source: the one its GitSource's status
   * names. Nothing else in the artifact store is served (a rejected revision's artifact, or a
   * deleted source's). The last {@link PUBLISHED_PER_SOURCE} per source stay served, so nodes
   * still rolling out, or rolling back to, an earlier revision can fetch theirs.
   */
  publishArtifact(namespace: string, name: string, digest: string): void {
    const hex = /^(?:sha256:)?([0-9a-f]{64})$/.exec(digest)?.[1];
    if (!hex) return;
    const key = `${namespace}/${name}`;
    const set = this.published.get(key) ?? new Set<string>();
    set.delete(hex);
    set.add(hex);
    for (const old of set) {
      if (set.size <= PUBLISHED_PER_SOURCE) break;
      set.delete(old);
    }
    this.published.set(key, set);
  }

  /**
   * Also serves, while its source is published, any artifact `isRetained` answers true for
   * (`sha256:<hex>`): an older one that a NodeChain still names.
   */
  retainArtifacts(isRetained: (namespace: string, name: string, digest: string) => boolean): void {
    this.retained = isRetained;
  }

  /** Stops serving a source's artifacts (its GitSource is gone); without a name, every source's. */
  withdrawArtifacts(namespace?: string, name?: string): void {
    if (namespace === undefined || name === undefined) this.published.clear();
    else this.published.delete(`${namespace}/${name}`);
  }

  /** Adds (or replaces) a handler for an exact path, e.g. `route("GET", "/metrics", ...)`. */
  route(method: string, path: string, handler: RouteHandler): void {
    this.routes.set(`${method.toUpperCase()} ${path}`, handler);
  }

  /** Starts listening; resolves with the port (useful with port 0) and base URL. */
  async listen(port: number, host = "0.0.0.0"): Promise<{ port: number; url: string }> {
    await new Promise<void>((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(port, host, () => {
        this.server.off("error", reject);
        resolve();
      });
    });
    const address = this.server.address() as AddressInfo;
    const shownHost = host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host;
    return {
      port: address.port,
      url: `http://${shownHost.includes(":") ? `[${shownHost}]` : shownHost}:${address.port}`,
    };
  }

  /** Stops accepting connections and closes the open ones. */
  async close(): Promise<void> {
    if (!this.server.listening) return;
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? "GET";
    // The raw path is matched, never decoded: `%2e%2e` and friends simply do not match.
    const path = (req.url ?? "/").split("?")[0]!;
    const extra = this.routes.get(`${method} ${path}`);
    if (extra) return extra(req, res);

    if (path === "/healthz") {
      if (methodIs(req, res, ["GET", "HEAD"])) reply(res, 200, "ok\n");
      return;
    }
    if (path === "/readyz") {
      if (!methodIs(req, res, ["GET", "HEAD"])) return;
      return this.ready() ? reply(res, 200, "ok\n") : reply(res, 503, "not ready\n");
    }
    const artifact = ARTIFACT_PATH.exec(path);
    if (artifact) {
      if (!methodIs(req, res, ["GET", "HEAD"])) return;
      return this.serveArtifact(req, res, artifact[1]!, artifact[2]!, artifact[3]!);
    }
    if (HOOK_PATH.test(path)) return this.receiveWebhook(req, res, path);
    req.resume();
    reply(res, 404, "not found\n");
  }

  private async serveArtifact(
    req: IncomingMessage,
    res: ServerResponse,
    namespace: string,
    name: string,
    hex: string,
  ): Promise<void> {
    const ofSource = this.published.get(`${namespace}/${name}`);
    const published =
      ofSource !== undefined && (ofSource.has(hex) || this.retained(namespace, name, `sha256:${hex}`));
    const stored = published ? await this.store.get(namespace, name, `sha256:${hex}`) : undefined;
    if (!stored) return reply(res, 404, "artifact not found\n");
    res.writeHead(200, {
      "Content-Type": "application/gzip",
      "Content-Length": stored.size,
      ETag: `"${stored.digest}"`,
      // Content-addressed: the bytes behind this URL never change.
      "Cache-Control": "public, max-age=31536000, immutable",
    });
    if (req.method === "HEAD") {
      res.end();
      return;
    }
    const stream = createReadStream(stored.path);
    stream.on("error", (err) => {
      this.log.warn({ err, path: stored.path }, "artifact read failed");
      res.destroy();
    });
    stream.pipe(res);
  }

  private async receiveWebhook(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    if (!methodIs(req, res, ["POST"])) return;
    const hook = this.hooks.get(path);
    if (!hook) {
      req.resume();
      return reply(res, 404, "not found\n");
    }
    let body: Buffer;
    try {
      body = await readBody(req, this.maxBodyBytes);
    } catch (err) {
      if (err instanceof PayloadTooLargeError) {
        // Stop reading the rest of the body, but only once the answer has gone out.
        res.on("finish", () => req.destroy());
        reply(res, 413, "payload too large\n", { Connection: "close" });
        return;
      }
      throw err;
    }
    const signature = String(req.headers["x-hub-signature-256"] ?? "");
    const given = /^sha256=([0-9a-f]{64})$/i.exec(signature)?.[1];
    const expected = createHmac("sha256", hook.token).update(body).digest();
    if (!given || !timingSafeEqual(Buffer.from(given, "hex"), expected)) {
      this.log.warn({ path }, "webhook rejected: bad signature");
      return reply(res, 401, "bad signature\n");
    }
    const header = (name: string) => {
      const value = req.headers[name];
      return typeof value === "string" ? value : undefined;
    };
    const event = header("x-github-event") ?? header("x-gitlab-event") ?? header("x-event-key");
    const delivery = header("x-github-delivery");
    if (event === "ping") return reply(res, 200, "pong\n");
    reply(res, 200, "accepted\n");
    const trigger: WebhookTrigger = {
      payload: body,
      ...(event ? { event } : {}),
      ...(delivery ? { delivery } : {}),
    };
    this.log.info({ path, event, delivery }, "webhook accepted");
    for (const handler of [...hook.handlers]) {
      // After the response: a slow or failing handler never holds up the sender.
      setImmediate(() => {
        Promise.resolve()
          .then(() => handler(trigger))
          .catch((err: unknown) => this.log.error({ err, path }, "webhook handler failed"));
      });
    }
  }
}

function reply(
  res: ServerResponse,
  status: number,
  text: string,
  headers: Record<string, string> = {},
): void {
  res.writeHead(status, {
    "Content-Type": "text/plain; charset=utf-8",
    "Content-Length": Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

function methodIs(req: IncomingMessage, res: ServerResponse, allowed: string[]): boolean {
  if (allowed.includes(req.method ?? "")) return true;
  req.resume();
  reply(res, 405, "method not allowed\n", { Allow: allowed.join(", ") });
  return false;
}

async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  if (Number(req.headers["content-length"] ?? 0) > limit) throw new PayloadTooLargeError();
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new PayloadTooLargeError();
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}
