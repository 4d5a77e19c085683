import { resolve } from "node:path";
import { Reason } from "../../../common/api/conditions.ts";
import { SluiceError, type RetryClass } from "../../../common/errors.ts";

/** One diagnostic line of clang: `file:line:column: severity: message`. */
export interface Diagnostic {
  file: string;
  line: number;
  column: number;
  severity: "error" | "fatal error" | "warning" | "note";
  message: string;
}

/** Why a compile failed. */
export type CompileFailure =
  /** clang ran and reported errors: the source must change. */
  | "source"
  /** clang ran longer than the timeout and was killed. */
  | "timeout"
  /** the caller aborted the compile. */
  | "aborted"
  /** the source tree could not be read. */
  | "tree"
  /**
   * a bound was crossed: a source file or the tree is too large (clang never ran), or clang ran
   * out of its memory or CPU-time limit, or wrote more output than is kept.
   */
  | "limit"
  /** clang died on a signal that none of the limits explains (a compiler crash). */
  | "crash"
  /**
   * clang wrote an object that libbpf cannot open, or that crashes libbpf when opened (checked in
   * a throw-away process, see `checkObjectOpens`): it is not cached and never reaches the agent.
   */
  | "object";

/**
 * A network function that did not compile. `stderr` is clang's output (trimmed), with file
 * names relative to the source root, so that it can be shown to the author as it is.
 */
export class CompileError extends Error {
  override name = "CompileError";
  /** The parsed `file:line:col: severity: message` lines of `stderr`. */
  readonly diagnostics: Diagnostic[];
  constructor(
    /** Entry file, relative to the source root. */
    readonly entry: string,
    readonly failure: CompileFailure,
    /** clang's stderr, trimmed to a size fit for status fields. */
    readonly stderr: string,
    readonly exitCode: number | null = null,
  ) {
    const diagnostics = parseDiagnostics(stderr);
    const first = diagnostics.find((d) => d.severity === "error" || d.severity === "fatal error");
    const headline = first
      ? `${first.file}:${first.line}:${first.column}: ${first.severity}: ${first.message}`
      : (stderr.split("\n").find((line) => line.trim() !== "") ?? "no output");
    super(`compile ${entry} failed (${failure}): ${headline}`);
    this.diagnostics = diagnostics;
  }
}

/**
 * clang itself is missing or unusable: a problem of the node, not of the NF's source. Reported
 * as CompileFailed and retried: the node may be fixed without the plan changing.
 */
export class ToolchainError extends SluiceError {
  override name = "ToolchainError";
  constructor(
    message: string,
    failure: { reason: Reason; retry: RetryClass } = { reason: Reason.CompileFailed, retry: "backoff" },
  ) {
    super(failure.reason, message, { retry: failure.retry });
  }
}

/**
 * The compiler sandbox cannot be set up on this node: the kernel has no Landlock (not built in,
 * not in the `lsm=` boot list, or refused by a seccomp profile). Compiling stops here rather
 * than run clang unconfined; `SLUICE_COMPILE_LANDLOCK=if-available` lets an operator choose
 * otherwise. Reported as NotSupported and not retried, like every other kernel feature a node
 * lacks (and named `NotSupportedError` like them).
 */
export class CompileSandboxUnavailableError extends ToolchainError {
  override name = "NotSupportedError";
  /** The missing feature, as NotSupportedError elsewhere names it. */
  readonly feature = "Landlock (compiler sandbox)";
  constructor(message: string) {
    super(message, { reason: Reason.NotSupported, retry: "stall" });
  }
}

const DIAGNOSTIC_LINE = /^(.+?):(\d+):(\d+): (fatal error|error|warning|note): (.*)$/;

/** Parse clang's `file:line:col: severity: message` lines. */
export function parseDiagnostics(stderr: string): Diagnostic[] {
  const diagnostics: Diagnostic[] = [];
  for (const line of stderr.split("\n")) {
    const match = DIAGNOSTIC_LINE.exec(line);
    if (!match) continue;
    diagnostics.push({
      file: match[1]!,
      line: Number(match[2]),
      column: Number(match[3]),
      severity: match[4] as Diagnostic["severity"],
      message: match[5]!,
    });
  }
  return diagnostics;
}

/**
 * Longest clang output kept, in characters: enough for the first errors and their context, small
 * enough for a status field.
 */
export const MAX_STDERR_CHARS = 4 * 1024;

/** Trim whitespace and cut long output, saying how much was left out. */
export function trimCompilerOutput(text: string, limit = MAX_STDERR_CHARS): string {
  const trimmed = text.trim();
  if (trimmed.length <= limit) return trimmed;
  const cut = trimmed.lastIndexOf("\n", limit);
  const kept = trimmed.slice(0, cut > limit / 2 ? cut : limit);
  return `${kept}\n... (${trimmed.length - kept.length} more characters)`;
}

const DIAGNOSTIC_START = /^(.+?):\d+:\d+: (?:fatal error|error|warning|note|remark): /;
const CONTEXT_LINE =
  /^(?:In file included from |In module |\d+ (?:errors?|warnings?)(?: and \d+ warnings?)? generated\.)/;

/**
 * Makes clang's output fit to show to whoever wrote the source, and nobody else's secrets: paths
 * under `sourceRoot` become relative, `rename` maps other prefixes (e.g. the private system
 * include directory to nothing), and the source lines clang quotes under a diagnostic (with
 * their caret line) are kept only when the diagnostic is in a file inside `sourceRoot`. Lines
 * quoted from anywhere else (sluice's or the system's headers, `<command line>`) are dropped, so
 * the output can never carry content of a file outside the artifact, whatever clang could read.
 * The result is trimmed to {@link MAX_STDERR_CHARS}.
 */
export function sanitizeCompilerOutput(
  stderr: string,
  sourceRoot: string,
  rename: Readonly<Record<string, string>> = {},
  limit = MAX_STDERR_CHARS,
): string {
  const root = sourceRoot.endsWith("/") ? sourceRoot : `${sourceRoot}/`;
  const prefixes: [string, string][] = [[root, ""], ...Object.entries(rename)];
  let quoting = false;
  const kept: string[] = [];
  for (const raw of stderr.split("\n")) {
    let line = raw;
    for (const [from, to] of prefixes) line = line.split(from).join(to);
    const start = DIAGNOSTIC_START.exec(raw);
    if (start) {
      quoting = isInside(start[1]!);
      kept.push(line);
    } else if (CONTEXT_LINE.test(line) || line.trim() === "") {
      kept.push(line);
    } else if (quoting) {
      kept.push(line);
    }
  }
  return trimCompilerOutput(kept.join("\n"), limit);

  function isInside(file: string): boolean {
    if (file.startsWith("/")) return resolve(file).startsWith(root);
    if (file.startsWith("<")) return false;
    const parts: string[] = [];
    for (const part of file.split("/")) {
      if (part === "..") {
        if (parts.pop() === undefined) return false;
      } else if (part !== "." && part !== "") parts.push(part);
    }
    return parts.length > 0;
  }
}
