/**
 * Real Git servers for tests: bare repositories authored with the git CLI, served over
 * `file://`, `git daemon` and smart HTTP (`git http-backend` behind a small node:http server
 * that checks Basic or Bearer credentials), plus an SSH client stand-in for the ssh transport.
 *
 * Shared by the unit, cluster and end-to-end suites. Every helper returns something with a
 * `stop()`/`cleanup()` the test must call (in `afterAll`/`afterEach`).
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { chmod, mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from "node:http";
import { connect, createServer as createNetServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";

const execFileAsync = promisify(execFile);

/** A git environment independent of the host's and user's git configuration. */
const GIT_ENV: NodeJS.ProcessEnv = {
  PATH: process.env.PATH,
  HOME: process.env.HOME,
  LC_ALL: "C",
  GIT_CONFIG_NOSYSTEM: "1",
  GIT_CONFIG_GLOBAL: "/dev/null",
  GIT_AUTHOR_NAME: "Sluice Test",
  GIT_AUTHOR_EMAIL: "test@sluice.invalid",
  GIT_COMMITTER_NAME: "Sluice Test",
  GIT_COMMITTER_EMAIL: "test@sluice.invalid",
  GIT_TERMINAL_PROMPT: "0",
};

/** Runs git in `cwd` and returns its trimmed stdout; rejects with git's stderr. */
export async function git(cwd: string, ...args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileAsync("git", args, { cwd, env: GIT_ENV, maxBuffer: 64 << 20 });
    return stdout.trim();
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`git ${args.join(" ")} (in ${cwd}): ${e.stderr?.trim() || e.message}`);
  }
}

/** What to write at one path in {@link TestRepo.commit}: text, a symlink, or deletion. */
export type FileSpec =
  string | Buffer | { symlink: string } | { content: string | Buffer; executable: true } | null;

/** A bare repository plus a working clone used to author commits and push them. */
export interface TestRepo {
  /** Repository name as served: `<name>.git` under {@link serveRoot}. */
  name: string;
  /** Directory holding the bare repository; give it to `git daemon` or the HTTP server. */
  serveRoot: string;
  bareDir: string;
  /** The authoring clone. */
  workDir: string;
  /** `file://` URL of the bare repository. */
  fileUrl: string;
  /** The branch commits go to (default `main`). */
  branch: string;
  /** Writes (or deletes, for null) files, commits them and pushes the branch; returns the SHA. */
  commit(files: Record<string, FileSpec>, message?: string): Promise<string>;
  /** Creates a tag at `at` (default HEAD) and pushes it, force-moving an existing one. */
  tag(name: string, options?: { annotated?: boolean; at?: string }): Promise<void>;
  /** Moves `branch` back (or anywhere) to `sha` and force-pushes it, like `git push --force`. */
  forcePush(sha: string, branch?: string): Promise<void>;
  /** Runs git in the authoring clone. */
  git(...args: string[]): Promise<string>;
  /** Removes everything this repository created (only when it created its own temp dir). */
  cleanup(): Promise<void>;
}

/**
 * Creates a bare repository `<serveRoot>/<name>.git` with an authoring clone beside it. Pass
 * `serveRoot` to put several repositories behind one server; otherwise a temp dir is made.
 */
export async function createTestRepo(
  options: { name?: string; serveRoot?: string; branch?: string } = {},
): Promise<TestRepo> {
  const name = options.name ?? "repo";
  const branch = options.branch ?? "main";
  const ownRoot = options.serveRoot === undefined;
  const serveRoot = options.serveRoot ?? (await mkdtemp(join(tmpdir(), "sluice-git-")));
  const bareDir = join(serveRoot, `${name}.git`);
  const workDir = join(serveRoot, `.work-${name}`);
  await git(serveRoot, "init", "--quiet", "--bare", `--initial-branch=${branch}`, bareDir);
  // Let `git daemon` hand out reachable commits by SHA and allow http-backend pushes if needed.
  await git(bareDir, "config", "uploadpack.allowReachableSHA1InWant", "true");
  await git(serveRoot, "init", "--quiet", `--initial-branch=${branch}`, workDir);
  await git(workDir, "remote", "add", "origin", bareDir);

  const repo: TestRepo = {
    name,
    serveRoot,
    bareDir,
    workDir,
    branch,
    fileUrl: pathToFileURL(bareDir).href,
    git: (...args) => git(workDir, ...args),
    async commit(files, message = "change") {
      for (const [path, spec] of Object.entries(files)) {
        const target = join(workDir, path);
        await rm(target, { recursive: true, force: true });
        if (spec === null) continue;
        await mkdir(dirname(target), { recursive: true });
        if (typeof spec === "string" || Buffer.isBuffer(spec)) {
          await writeFile(target, spec);
        } else if ("symlink" in spec) {
          await symlink(spec.symlink, target);
        } else {
          await writeFile(target, spec.content);
          await chmod(target, 0o755);
        }
      }
      await git(workDir, "add", "--all");
      await git(workDir, "commit", "--quiet", "--allow-empty", "-m", message);
      await git(workDir, "push", "--quiet", "--force", "origin", `HEAD:refs/heads/${branch}`);
      return git(workDir, "rev-parse", "HEAD");
    },
    async tag(tagName, tagOptions = {}) {
      const at = tagOptions.at ?? "HEAD";
      const args = tagOptions.annotated ? ["-a", "-m", `release ${tagName}`] : [];
      await git(workDir, "tag", "--force", ...args, tagName, at);
      await git(workDir, "push", "--quiet", "--force", "origin", `refs/tags/${tagName}`);
    },
    async forcePush(sha, target = branch) {
      await git(workDir, "reset", "--quiet", "--hard", sha);
      await git(workDir, "push", "--quiet", "--force", "origin", `${sha}:refs/heads/${target}`);
    },
    async cleanup() {
      await rm(ownRoot ? serveRoot : workDir, { recursive: true, force: true });
      if (!ownRoot) await rm(bareDir, { recursive: true, force: true });
    },
  };
  return repo;
}

/** Asks the kernel for a free TCP port on 127.0.0.1. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createNetServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() =>
        typeof address === "object" && address ? resolve(address.port) : reject(new Error("no port")),
      );
    });
  });
}

async function waitForPort(
  port: number,
  child: ChildProcess,
  what: string,
  timeoutMs = 10_000,
  host = "127.0.0.1",
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null)
      throw new Error(`${what} exited with code ${child.exitCode} before listening`);
    const ok = await new Promise<boolean>((resolve) => {
      const socket = connect(port, host);
      socket.once("connect", () => {
        socket.destroy();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline)
      throw new Error(`${what} did not listen on port ${port} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 3_000);
  await exited;
  clearTimeout(timer);
}

/** A running server with a URL per repository name. */
export interface GitServer {
  port: number;
  /** URL of `<name>.git` on this server. */
  url(name: string): string;
  stop(): Promise<void>;
}

/**
 * Serves every repository under `serveRoot` read-only with `git daemon` on a free port of
 * `address` (default 127.0.0.1; a pod reaches the host only on one of its other addresses):
 * `git://<address>:<port>/<name>.git`.
 */
export async function startGitDaemon(
  serveRoot: string,
  options: { address?: string } = {},
): Promise<GitServer> {
  const address = options.address ?? "127.0.0.1";
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const child = spawn(
      "git",
      [
        "daemon",
        "--export-all",
        "--reuseaddr",
        "--informative-errors",
        `--base-path=${serveRoot}`,
        `--listen=${address}`,
        `--port=${port}`,
        serveRoot,
      ],
      { env: GIT_ENV, stdio: ["ignore", "ignore", "pipe"] },
    );
    let stderr = "";
    child.stderr?.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    try {
      await waitForPort(port, child, "git daemon", 10_000, address);
    } catch (err) {
      await stopChild(child);
      // Another process may have taken the port between probing and binding: try again.
      if (attempt < 3 && /exited/.test(String(err))) continue;
      throw new Error(`${(err as Error).message}: ${stderr.trim()}`);
    }
    return {
      port,
      url: (name) => `git://${address}:${port}/${name}.git`,
      stop: () => stopChild(child),
    };
  }
}

/** Credentials the HTTP server demands; with neither set, it serves anonymously. */
export interface HttpAuthConfig {
  basic?: { username: string; password: string };
  bearerToken?: string;
}

/** A smart-HTTP git server, with a log of what it saw. */
export interface GitHttpServer extends GitServer {
  /** One entry per request: the path and whether its credentials were accepted. */
  requests: { method: string; path: string; authorized: boolean; authorization?: string }[];
}

function authorized(req: IncomingMessage, auth: HttpAuthConfig): { ok: boolean; user?: string } {
  if (!auth.basic && auth.bearerToken === undefined) return { ok: true };
  const header = req.headers.authorization ?? "";
  const basic = /^Basic\s+(\S+)$/i.exec(header);
  if (basic && auth.basic) {
    const decoded = Buffer.from(basic[1]!, "base64").toString();
    if (decoded === `${auth.basic.username}:${auth.basic.password}`)
      return { ok: true, user: auth.basic.username };
  }
  const bearer = /^Bearer\s+(\S+)$/i.exec(header);
  if (bearer && auth.bearerToken !== undefined && bearer[1] === auth.bearerToken)
    return { ok: true, user: "token" };
  return { ok: false };
}

/**
 * Serves every repository under `serveRoot` over smart HTTP on a free port of 127.0.0.1
 * (`http://127.0.0.1:<port>/<name>.git`): each request runs `git http-backend` as a CGI, after
 * checking Basic and/or Bearer credentials (401 with `WWW-Authenticate: Basic` otherwise).
 */
export async function startGitHttpServer(
  serveRoot: string,
  auth: HttpAuthConfig = {},
): Promise<GitHttpServer> {
  const requests: GitHttpServer["requests"] = [];
  const server = createHttpServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://localhost");
    const who = authorized(req, auth);
    requests.push({
      method: req.method ?? "",
      path: url.pathname,
      authorized: who.ok,
      ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}),
    });
    if (!who.ok) {
      req.resume();
      res.writeHead(401, { "WWW-Authenticate": 'Basic realm="sluice-test"', "Content-Type": "text/plain" });
      res.end("unauthorized\n");
      return;
    }
    runHttpBackend(serveRoot, req, res, url, who.user);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  if (typeof address !== "object" || !address) throw new Error("http server has no address");
  return {
    port: address.port,
    requests,
    url: (name) => `http://127.0.0.1:${address.port}/${name}.git`,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function runHttpBackend(
  serveRoot: string,
  req: IncomingMessage,
  res: ServerResponse,
  url: URL,
  user: string | undefined,
): void {
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    GIT_CONFIG_NOSYSTEM: "1",
    GIT_CONFIG_GLOBAL: "/dev/null",
    GIT_PROJECT_ROOT: serveRoot,
    GIT_HTTP_EXPORT_ALL: "1",
    PATH_INFO: decodeURIComponent(url.pathname),
    QUERY_STRING: url.search.replace(/^\?/, ""),
    REQUEST_METHOD: req.method ?? "GET",
    CONTENT_TYPE: req.headers["content-type"] ?? "",
    REMOTE_ADDR: req.socket.remoteAddress ?? "127.0.0.1",
    ...(req.headers["content-length"] ? { CONTENT_LENGTH: req.headers["content-length"] } : {}),
    ...(req.headers["content-encoding"] ? { HTTP_CONTENT_ENCODING: req.headers["content-encoding"] } : {}),
    ...(req.headers["git-protocol"] ? { GIT_PROTOCOL: String(req.headers["git-protocol"]) } : {}),
    ...(user ? { REMOTE_USER: user } : {}),
  };
  const cgi = spawn("git", ["http-backend"], { env, stdio: ["pipe", "pipe", "pipe"] });
  req.pipe(cgi.stdin!);
  const out: Buffer[] = [];
  let stderr = "";
  cgi.stdout!.on("data", (chunk: Buffer) => out.push(chunk));
  cgi.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  cgi.on("close", (code) => {
    const body = Buffer.concat(out);
    const split = body.indexOf("\r\n\r\n") >= 0 ? body.indexOf("\r\n\r\n") : body.indexOf("\n\n");
    if (split < 0) {
      res.writeHead(500, { "Content-Type": "text/plain" });
      res.end(`http-backend exited ${code}: ${stderr}`);
      return;
    }
    const sepLength = body[split] === 13 ? 4 : 2;
    let status = 200;
    const headers: Record<string, string> = {};
    for (const line of body.subarray(0, split).toString().split(/\r?\n/)) {
      const colon = line.indexOf(":");
      if (colon < 0) continue;
      const key = line.slice(0, colon).trim();
      const value = line.slice(colon + 1).trim();
      if (key.toLowerCase() === "status") status = Number.parseInt(value, 10);
      else headers[key] = value;
    }
    res.writeHead(status, headers);
    res.end(body.subarray(split + sepLength));
  });
}

/** What the SSH stand-in accepts, and where it logs each invocation. */
export interface SshShim {
  /** Path of the executable to pass as `sshCommand`. */
  command: string;
  /** A private key the shim accepts (any text: the shim compares bytes, it does no crypto). */
  privateKey: string;
  /** A known_hosts line the shim accepts as the server's host key. */
  knownHosts: string;
  /** One line per invocation: `key=<file> mode=<octal> knownhosts=<file> strict=<value> ...`. */
  logFile: string;
  cleanup(): Promise<void>;
}

/**
 * An SSH client stand-in for the ssh transport: a script that takes ssh's command line, acts
 * as the server's checks (the known_hosts file must hold the expected host line, the identity
 * file the expected key: otherwise it fails with OpenSSH's own messages) and then runs the
 * requested `git-upload-pack '<path>'` locally, so git speaks its real protocol through it.
 * There is no sshd on the test machines; this exercises everything on the client side.
 */
export async function createSshShim(): Promise<SshShim> {
  const dir = await mkdtemp(join(tmpdir(), "sluice-ssh-shim-"));
  const privateKey =
    "-----BEGIN OPENSSH PRIVATE KEY-----\nc2x1aWNlLXRlc3Qta2V5\n-----END OPENSSH PRIVATE KEY-----\n";
  const knownHosts = "git.example.test ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHNsdWljZS10ZXN0LWhvc3Qta2V5";
  const logFile = join(dir, "ssh.log");
  const command = join(dir, "ssh");
  const script = `#!/bin/bash
key=""; kh=""; strict=""
while [ $# -gt 0 ]; do
  case "$1" in
    -i) key="$2"; shift 2 ;;
    -o) case "$2" in
          UserKnownHostsFile=*) kh="\${2#*=}" ;;
          StrictHostKeyChecking=*) strict="\${2#*=}" ;;
        esac; shift 2 ;;
    -F|-p|-l) shift 2 ;;
    -*) shift ;;
    *) break ;;
  esac
done
host="$1"; shift
mode=""; [ -n "$key" ] && mode=$(stat -c %a "$key")
echo "key=$key mode=$mode knownhosts=$kh strict=$strict host=$host command=$*" >> ${JSON.stringify(logFile)}
if [ "$strict" != "yes" ] || [ -z "$kh" ] || ! grep -qxF ${JSON.stringify(knownHosts)} "$kh"; then
  echo "Host key verification failed." >&2; exit 255
fi
if [ -z "$key" ] || ! cmp -s "$key" ${JSON.stringify(join(dir, "expected-key"))}; then
  echo "$host: Permission denied (publickey)." >&2; exit 255
fi
exec sh -c "$*"
`;
  await writeFile(join(dir, "expected-key"), privateKey);
  await writeFile(command, script, { mode: 0o755 });
  return {
    command,
    privateKey,
    knownHosts,
    logFile,
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}
