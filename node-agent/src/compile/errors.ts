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
  /** the source tree could not be read, or is too large to hash. */
  | "tree";

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

/** clang itself is missing or unusable: a problem of the node, not of the NF's source. */
export class ToolchainError extends Error {
  override name = "ToolchainError";
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

/** Longest clang output kept, in characters: enough for the first errors and their context. */
export const MAX_STDERR_CHARS = 16 * 1024;

/** Trim whitespace and cut long output, saying how much was left out. */
export function trimCompilerOutput(text: string, limit = MAX_STDERR_CHARS): string {
  const trimmed = text.trim();
  if (trimmed.length <= limit) return trimmed;
  const cut = trimmed.lastIndexOf("\n", limit);
  const kept = trimmed.slice(0, cut > limit / 2 ? cut : limit);
  return `${kept}\n... (${trimmed.length - kept.length} more characters)`;
}
