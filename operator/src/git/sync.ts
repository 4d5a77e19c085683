import { existsSync } from "node:fs";
import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { simpleGit, GitError as SimpleGitError, type SimpleGit } from "simple-git";
import { rootLogger, type Logger } from "../../../common/log.ts";
import {
  GitAuthError,
  GitError,
  GitRefNotFoundError,
  GitSpecError,
  GitTimeoutError,
  redactUrls,
} from "./errors.ts";
import { maxSatisfying, parseRange, SemverRangeError } from "./semver.ts";

/**
 * What to check out. Exactly one field must be set (the shape of `GitSource.spec.ref`):
 * a branch head, a tag, the highest tag matching a semver range, or one commit.
 */
export interface GitRef {
  branch?: string;
  tag?: string;
  /** An npm-style range (`^1.2.0`, `~1.2`, `>=1.0.0 <2.0.0`, `1.x`); see `semver.ts`. */
  semver?: string;
  /** A full 40-hex-digit commit SHA. */
  commit?: string;
}

/** Credentials for the remote, read by the controller from the GitSource's secretRef. */
export type GitAuth =
  | { type: "basic"; username: string; password: string }
  | { type: "bearer"; token: string }
  /** `knownHosts` is required: host keys are always checked. */
  | { type: "ssh"; privateKey: string; knownHosts: string };

/** Input of {@link sync}. */
export interface GitSyncOptions {
  /** `https://`, `http://`, `ssh://`, `git://`, `file://` or scp-like `git@host:org/repo.git`. */
  url: string;
  ref: GitRef;
  /**
   * The working clone of this source. The caller gives every source its own directory (for
   * example `<cache>/<namespace>/<name>`) and keeps it between syncs so that each sync only
   * fetches what changed. It is created when missing. Its contents are owned by {@link sync}:
   * anything written there is discarded by the next sync.
   */
  workDir: string;
  /** Whole-sync deadline; the git processes are killed when it passes. Default 60 s. */
  timeoutMs?: number;
  auth?: GitAuth;
  /** The SSH client to run for ssh URLs (default `ssh`); options are appended after it. */
  sshCommand?: string;
  /**
   * URL schemes this call may use (default: all of https, http, ssh, git, file; scp-like
   * addresses count as ssh). A multi-tenant operator should drop `file`: a `file://` URL reads
   * the operator's own disk, including other sources' working clones.
   */
  allowedSchemes?: readonly GitUrlScheme[];
  logger?: Logger;
}

/** URL schemes {@link sync} understands. */
export type GitUrlScheme = "https" | "http" | "ssh" | "git" | "file";

/** Outcome of a successful {@link sync}. */
export interface GitSyncResult {
  /** `main@sha1:<sha>`, `v1.2.0@sha1:<sha>` (tag or semver) or `sha1:<sha>` (commit). */
  revision: string;
  /** The full SHA of the checked-out commit. */
  commit: string;
  /** The checkout: `workDir`, with the commit's tree in it and nothing else. */
  dir: string;
  /** The tag a semver range resolved to, for status and events. */
  tag?: string;
}

const DEFAULT_TIMEOUT_MS = 60_000;
const FETCHED = "refs/sluice/fetched";

/** Process-wide lock per working clone: two syncs on one directory would corrupt each other. */
const workDirLocks = new Map<string, Promise<unknown>>();

/**
 * Brings `workDir` to the commit that `ref` names on `url` and returns its revision.
 *
 * Every fetch is shallow (depth 1) and forced, so a branch that was force-pushed back to an
 * older commit yields that older commit. Credentials travel only in the environment of the git
 * processes of this call (never in `.git/config`, command lines or URLs), and SSH keys only in
 * private temporary files that are removed before this function returns.
 *
 * @throws {GitSpecError} the options are unusable (retrying will not help)
 * @throws {GitAuthError} the server refused the credentials, or the SSH host key is unknown
 * @throws {GitRefNotFoundError} the branch, tag, matching tag or commit does not exist
 * @throws {GitTimeoutError} the sync ran longer than `timeoutMs`
 * @throws {GitError} any other git failure (unreachable host, missing repository, ...)
 */
export async function sync(options: GitSyncOptions): Promise<GitSyncResult> {
  const ref = checkRef(options.ref);
  checkUrl(options.url, options.allowedSchemes ?? ["https", "http", "ssh", "git", "file"]);
  const key = resolve(options.workDir);
  const previous = workDirLocks.get(key) ?? Promise.resolve();
  const run = previous.catch(() => undefined).then(() => syncLocked(options, ref));
  workDirLocks.set(key, run);
  try {
    return await run;
  } finally {
    if (workDirLocks.get(key) === run) workDirLocks.delete(key);
  }
}

type CheckedRef =
  | { kind: "branch"; name: string }
  | { kind: "tag"; name: string }
  | { kind: "semver"; range: string }
  | { kind: "commit"; sha: string };

async function syncLocked(options: GitSyncOptions, ref: CheckedRef): Promise<GitSyncResult> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const url = options.url;
  const safeUrl = redactUrls(url);
  const log = (options.logger ?? rootLogger).child({ url: safeUrl, ref: describeRef(ref) });
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  const secrets = await prepareAuth(options, timeoutMs);
  try {
    await prepareWorkDir(options.workDir);
    const git = simpleGit({
      baseDir: options.workDir,
      abort: abort.signal,
      // Exactly the overrides sync sets itself (clean environment, config by env, ssh command).
      unsafe: {
        allowUnsafeConfigEnvCount: true,
        allowUnsafeConfigPaths: true,
        allowUnsafeSshCommand: true,
        allowUnsafeCredentialHelper: true,
      },
    }).env(secrets.env);
    const run = async <T>(step: string, fn: () => Promise<T>): Promise<T> => {
      try {
        return await fn();
      } catch (err) {
        throw classify(err, step, safeUrl, abort.signal.aborted, timeoutMs);
      }
    };

    if (!existsSync(join(options.workDir, ".git", "HEAD"))) {
      // A clone whose creation was interrupted is started over rather than repaired.
      await rm(join(options.workDir, ".git"), { recursive: true, force: true });
      await run("init", () => git.init(["--quiet"]));
    }

    let tag: string | undefined;
    switch (ref.kind) {
      case "branch":
        await run("fetch", () => fetchRef(git, url, `refs/heads/${ref.name}`));
        break;
      case "tag":
        await run("fetch", () => fetchRef(git, url, `refs/tags/${ref.name}`));
        break;
      case "semver": {
        const listing = await run("ls-remote", () => git.listRemote(["--tags", "--refs", url]));
        const tags = listing
          .split("\n")
          .map((line) => /\trefs\/tags\/(.+)$/.exec(line)?.[1])
          .filter((t): t is string => t !== undefined);
        tag = maxSatisfying(tags, parseRange(ref.range));
        if (!tag) throw new GitRefNotFoundError(`no tag of ${safeUrl} matches semver range "${ref.range}"`);
        const picked = tag;
        await run("fetch", () => fetchRef(git, url, `refs/tags/${picked}`));
        break;
      }
      case "commit":
        await run("fetch", () => fetchCommit(git, url, ref.sha, options.workDir));
        break;
    }
    const sha = (await run("rev-parse", () => git.revparse([`${FETCHED}^{commit}`]))).trim();
    // --force throws away any local change; clean removes files the old tree had untracked.
    await run("checkout", () =>
      git.raw(["-c", "advice.detachedHead=false", "checkout", "--quiet", "--force", "--detach", sha]),
    );
    await run("clean", () => git.raw(["clean", "-ffdxq"]));

    const revision =
      ref.kind === "branch"
        ? `${ref.name}@sha1:${sha}`
        : ref.kind === "commit"
          ? `sha1:${sha}`
          : `${ref.kind === "tag" ? ref.name : tag}@sha1:${sha}`;
    log.debug({ revision }, "git sync done");
    return { revision, commit: sha, dir: options.workDir, ...(tag !== undefined ? { tag } : {}) };
  } finally {
    clearTimeout(timer);
    await secrets.cleanup();
  }
}

/** Shallow, forced fetch of one ref into {@link FETCHED}; annotated tags are peeled later. */
async function fetchRef(git: SimpleGit, url: string, remoteRef: string): Promise<void> {
  await git.raw(["fetch", "--quiet", "--depth=1", "--no-tags", "--", url, `+${remoteRef}:${FETCHED}`]);
}

/**
 * Fetches one commit by SHA. Servers speaking protocol v2 (and v0 servers that allow it) hand
 * out any reachable commit directly; for the others, fall back to fetching all branches and
 * tags with full history and look for the commit there.
 */
async function fetchCommit(git: SimpleGit, url: string, sha: string, workDir: string): Promise<void> {
  try {
    await git.raw(["fetch", "--quiet", "--depth=1", "--no-tags", "--", url, `+${sha}:${FETCHED}`]);
    return;
  } catch (err) {
    if (
      !(err instanceof SimpleGitError) ||
      !/not our ref|unadvertised object|couldn't find remote ref/i.test(err.message)
    ) {
      throw err;
    }
  }
  const unshallow = existsSync(join(workDir, ".git", "shallow")) ? ["--unshallow"] : [];
  await git.raw([
    "fetch",
    "--quiet",
    ...unshallow,
    "--",
    url,
    "+refs/heads/*:refs/sluice/heads/*",
    "+refs/tags/*:refs/sluice/tags/*",
  ]);
  try {
    await git.raw(["cat-file", "-e", `${sha}^{commit}`]);
  } catch {
    throw new GitRefNotFoundError(`commit ${sha} not found`);
  }
  await git.raw(["update-ref", FETCHED, sha]);
}

/** Creates the working clone's directory and clears locks a killed git left behind. */
async function prepareWorkDir(workDir: string): Promise<void> {
  await mkdir(workDir, { recursive: true });
  // The per-directory lock above guarantees no git of ours runs here now, so any lock file is
  // stale (a process killed by a timeout) and would make every later sync fail.
  for (const lock of ["index.lock", "shallow.lock", "HEAD.lock", "config.lock", `${FETCHED}.lock`]) {
    await rm(join(workDir, ".git", lock), { force: true });
  }
}

/** Environment variables worth passing through to git and ssh; everything else is dropped. */
const INHERITED_ENV = [
  "PATH",
  "HOME",
  "TMPDIR",
  "HTTP_PROXY",
  "HTTPS_PROXY",
  "NO_PROXY",
  "http_proxy",
  "https_proxy",
  "no_proxy",
  "SSL_CERT_FILE",
  "SSL_CERT_DIR",
];

/**
 * Builds the environment of this sync's git processes and the files SSH needs.
 *
 * Git reads `-c`-style settings from `GIT_CONFIG_COUNT`/`GIT_CONFIG_KEY_n`/`GIT_CONFIG_VALUE_n`
 * exactly as from `-c` on the command line, but the environment of a process is readable only
 * by its owner while command lines are world-readable in /proc: the Authorization header goes
 * there. The machine's and user's git configs are ignored so that a credential helper, a
 * `url.insteadOf` or `core.autocrlf` on the host can neither see the credentials nor change
 * the checked-out bytes (and with them the artifact digest).
 */
async function prepareAuth(
  options: GitSyncOptions,
  timeoutMs: number,
): Promise<{ env: Record<string, string>; cleanup: () => Promise<void> }> {
  const env: Record<string, string> = {};
  for (const key of INHERITED_ENV) {
    const value = process.env[key];
    if (value !== undefined) env[key] = value;
  }
  Object.assign(env, {
    LC_ALL: "C", // stderr is matched to classify errors
    GIT_TERMINAL_PROMPT: "0",
    GIT_CONFIG_NOSYSTEM: "1",
    GIT_CONFIG_GLOBAL: "/dev/null",
  });
  const config: [string, string][] = [
    ["credential.helper", ""],
    ["core.autocrlf", "false"],
    ["protocol.version", "2"],
    ["init.defaultBranch", "sluice"],
  ];
  const auth = options.auth;
  let tempDir: string | undefined;
  if (auth?.type === "basic") {
    const basic = Buffer.from(`${auth.username}:${auth.password}`).toString("base64");
    config.push(["http.extraHeader", `Authorization: Basic ${basic}`]);
  } else if (auth?.type === "bearer") {
    config.push(["http.extraHeader", `Authorization: Bearer ${auth.token}`]);
  }
  const ssh = [options.sshCommand ?? "ssh", "-F", "/dev/null", "-o", "BatchMode=yes"];
  ssh.push("-o", `ConnectTimeout=${Math.max(1, Math.ceil(timeoutMs / 1000))}`);
  if (auth?.type === "ssh") {
    tempDir = await mkdtemp(join(tmpdir(), "sluice-ssh-"));
    const keyFile = join(tempDir, "identity");
    const knownHostsFile = join(tempDir, "known_hosts");
    // OpenSSH refuses a key file without its final newline ("invalid format").
    const withNewline = (text: string) => (text.endsWith("\n") ? text : `${text}\n`);
    try {
      await chmod(tempDir, 0o700);
      await writeFile(keyFile, withNewline(auth.privateKey), { mode: 0o600 });
      await writeFile(knownHostsFile, withNewline(auth.knownHosts), { mode: 0o600 });
    } catch (err) {
      await rm(tempDir, { recursive: true, force: true });
      throw err;
    }
    ssh.push("-i", keyFile, "-o", "IdentitiesOnly=yes", "-o", `UserKnownHostsFile=${knownHostsFile}`);
  }
  // Without a key, ssh would still try the host's default identities: deliberate or not, the
  // host keys of the remote are checked only against the given known_hosts.
  ssh.push("-o", "StrictHostKeyChecking=yes", "-o", "GlobalKnownHostsFile=/dev/null");
  if (auth?.type !== "ssh") ssh.push("-o", "UserKnownHostsFile=/dev/null");
  env.GIT_SSH_COMMAND = ssh.map(shellQuote).join(" ");

  env.GIT_CONFIG_COUNT = String(config.length);
  config.forEach(([key, value], i) => {
    env[`GIT_CONFIG_KEY_${i}`] = key;
    env[`GIT_CONFIG_VALUE_${i}`] = value;
  });
  return {
    env,
    cleanup: async () => {
      if (tempDir) await rm(tempDir, { recursive: true, force: true });
    },
  };
}

/** Quotes for the shell git runs GIT_SSH_COMMAND with; plain words stay readable. */
function shellQuote(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

function describeRef(ref: CheckedRef): string {
  return ref.kind === "semver"
    ? `semver:${ref.range}`
    : ref.kind === "commit"
      ? `commit:${ref.sha}`
      : `${ref.kind}:${ref.name}`;
}

/** A ref name git would accept and that cannot be mistaken for an option or a refspec. */
function checkRefName(kind: string, name: string): string {
  if (
    name === "" ||
    name.startsWith("-") ||
    name.startsWith("/") ||
    name.endsWith("/") ||
    name.endsWith(".lock") ||
    name.endsWith(".") ||
    name.includes("..") ||
    name.includes("@{") ||
    name.includes("//") ||
    // eslint-disable-next-line no-control-regex -- control characters are exactly what git forbids
    /[\x00-\x20\x7f~^:?*[\\]/.test(name)
  ) {
    throw new GitSpecError(`invalid ${kind} name "${name}"`);
  }
  return name;
}

function checkRef(ref: GitRef): CheckedRef {
  const set = (["branch", "tag", "semver", "commit"] as const).filter((k) => ref[k] !== undefined);
  if (set.length !== 1) {
    throw new GitSpecError(
      `ref must set exactly one of branch, tag, semver, commit (got ${set.join(", ") || "none"})`,
    );
  }
  if (ref.branch !== undefined) return { kind: "branch", name: checkRefName("branch", ref.branch) };
  if (ref.tag !== undefined) return { kind: "tag", name: checkRefName("tag", ref.tag) };
  if (ref.semver !== undefined) {
    try {
      parseRange(ref.semver);
    } catch (err) {
      if (err instanceof SemverRangeError) throw new GitSpecError(err.message);
      throw err;
    }
    return { kind: "semver", range: ref.semver };
  }
  const sha = ref.commit!.toLowerCase();
  if (!/^[0-9a-f]{40}$/.test(sha))
    throw new GitSpecError(`commit must be a full 40-hex-digit SHA, got "${ref.commit}"`);
  return { kind: "commit", sha };
}

function checkUrl(url: string, allowed: readonly GitUrlScheme[]): void {
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(url)?.[1]?.toLowerCase();
  const scpLike = !scheme && /^[\w.-]+@[\w.-]+:[^-]/.test(url);
  const effective = scpLike ? "ssh" : scheme;
  if (url.startsWith("-") || !allowed.some((s) => s === effective)) {
    const forms = allowed.map((s) => (s === "ssh" ? "ssh:// or user@host:path" : `${s}://`)).join(", ");
    throw new GitSpecError(`unsupported git URL "${redactUrls(url)}" (allowed: ${forms})`);
  }
}

/** Turns a simple-git failure into the typed error the controller acts on. */
function classify(err: unknown, step: string, safeUrl: string, aborted: boolean, timeoutMs: number): Error {
  if (err instanceof GitError) return err;
  if (aborted) return new GitTimeoutError(timeoutMs);
  if (!(err instanceof Error)) return new GitError(`git ${step} failed: ${String(err)}`);
  const detail = redactUrls(err.message).trim().slice(0, 2000);
  const line = detail.split("\n").find((l) => /fatal|error/i.test(l)) ?? detail.split("\n")[0] ?? "";
  if (
    /Authentication failed|could not read (Username|Password)|terminal prompts disabled|returned error: 40[13]|Permission denied \(|Host key verification failed|Invalid username or password|No (RSA|ECDSA|ED25519) host key is known/i.test(
      detail,
    )
  ) {
    return new GitAuthError(`authentication to ${safeUrl} failed: ${line}`, detail);
  }
  if (/couldn't find remote ref|Remote branch .* not found|not our ref|unadvertised object/i.test(detail)) {
    return new GitRefNotFoundError(`ref not found in ${safeUrl}: ${line}`, detail);
  }
  return new GitError(`git ${step} of ${safeUrl} failed: ${line}`, detail);
}
