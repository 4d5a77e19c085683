import { constants as osConstants } from "node:os";
import { Reason } from "../../../common/api/conditions.ts";
import { SluiceError, type RetryClass } from "../../../common/errors.ts";

/** errno number -> symbolic name (`7` -> `E2BIG`), with the kernel-internal codes libbpf passes on. */
const errnoNames: ReadonlyMap<number, string> = (() => {
  const names = new Map<number, string>();
  for (const [name, value] of Object.entries(osConstants.errno)) {
    // Aliases share a number (EAGAIN/EWOULDBLOCK, EOPNOTSUPP/ENOTSUP, EDEADLK/EDEADLOCK):
    // the first one listed is the name the kernel sources use.
    if (!names.has(value)) names.set(value, name);
  }
  names.set(95, "EOPNOTSUPP");
  // Kernel-internal codes that the bpf() syscall leaks to user space.
  names.set(512, "ERESTARTSYS");
  names.set(524, "ENOTSUPP");
  // libbpf's own error numbers (libbpf.h, enum libbpf_errno).
  const libbpfErrnos = [
    "LIBELF",
    "FORMAT",
    "KVERSION",
    "ENDIAN",
    "INTERNAL",
    "RELOC",
    "LOAD",
    "VERIFY",
    "PROG2BIG",
    "KVER",
    "PROGTYPE",
    "WRNGPID",
    "INVSEQ",
    "NLPARSE",
  ];
  libbpfErrnos.forEach((name, i) => names.set(4000 + i, `LIBBPF_ERRNO__${name}`));
  return names;
})();

/** The symbolic name of an errno value (`E2BIG`), or `errno <n>` for an unknown one. */
export function errnoName(errno: number): string {
  return errnoNames.get(Math.abs(errno)) ?? `errno ${Math.abs(errno)}`;
}

/**
 * A kernel or libbpf call failed. `subject` names the object it was about (`map fw_rules`,
 * `program fw_xdp`, `link 12`, `object fw.bpf.o`), `op` the operation (`update`, `load`,
 * `attach xdp`), `errno` the positive error number and `code` its name.
 *
 * The message is exactly `<subject>: <op>: <CODE>` (for example `map fw_rules: update: E2BIG`),
 * followed by `: <detail>` when there is one: this is the line a user reads in a status field.
 */
export class BpfError extends SluiceError {
  override name = "BpfError";
  /** Positive errno value. */
  readonly errno: number;
  /** Symbolic errno name, e.g. `E2BIG`. */
  readonly code: string;
  /** What the call was about, e.g. `map fw_rules`. */
  readonly subject: string;
  /** The operation, e.g. `update`. */
  readonly op: string;
  /** Warnings libbpf printed while the call ran (e.g. why a map could not be created). */
  readonly libbpfLog: readonly string[];

  constructor(
    subject: string,
    op: string,
    errno: number,
    detail?: string,
    libbpfLog: readonly string[] = [],
    /** How the agent reports it: a load failure, retried, unless a subclass knows better. */
    failure: { reason: Reason; retry: RetryClass } = { reason: Reason.LoadFailed, retry: "backoff" },
  ) {
    const code = errnoName(errno);
    super(failure.reason, `${subject}: ${op}: ${code}${detail ? `: ${detail}` : ""}`, {
      retry: failure.retry,
    });
    this.errno = Math.abs(errno);
    this.code = code;
    this.subject = subject;
    this.op = op;
    this.libbpfLog = libbpfLog;
  }
}

/**
 * The verifier refused a program. `log` is the tail of the verifier log (the lines a user needs
 * to fix the program: the failing instruction and the reason), trimmed to a size fit for a
 * status field; `program` is the program's name in its object.
 */
export class VerifierError extends BpfError {
  override name = "VerifierError";
  /** Program name as written in the C source. */
  readonly program: string;
  /** Trimmed tail of the verifier log. */
  override readonly log: string;
  /** The verifier's own reason, as the message quotes it: `R1 invalid mem access 'scalar'`. */
  readonly verdict: string;

  constructor(program: string, errno: number, log: string, libbpfLog: readonly string[] = []) {
    const tail = trimVerifierLog(log);
    const verdict = verifierReason(tail);
    // The same object fails the same way until its source changes: no retry.
    super(`program ${program}`, "load", errno, `verifier rejected it: ${verdict}`, libbpfLog, {
      reason: Reason.VerifierRejected,
      retry: "stall",
    });
    this.program = program;
    this.log = tail;
    this.verdict = verdict;
  }
}

/**
 * The running kernel (or the device) lacks a feature: `feature` names it, e.g.
 * `native XDP on ifindex 4`. Tests that depend on such a feature report it instead of failing
 * in an obscure way.
 */
export class NotSupportedError extends SluiceError {
  override name = "NotSupportedError";
  /** The missing feature. */
  readonly feature: string;
  /** errno the kernel answered with, when the error came from a call. */
  readonly errno: number | undefined;

  constructor(feature: string, errno?: number) {
    super(
      Reason.NotSupported,
      `not supported by this kernel or device: ${feature}${errno ? ` (${errnoName(errno)})` : ""}`,
      { retry: "stall" },
    );
    this.feature = feature;
    this.errno = errno === undefined ? undefined : Math.abs(errno);
  }
}

/**
 * What the caller asked for does not match the object: an unknown program, map or `.rodata`
 * variable, a value of the wrong size, or a call in the wrong state (a `.rodata` write after load).
 * Retrying will not help; the spec or the object must change, so it stalls with LoadFailed.
 */
export class BpfSpecError extends SluiceError {
  override name = "BpfSpecError";
  constructor(message: string, options?: { cause?: unknown }) {
    super(Reason.LoadFailed, message, { retry: "stall", cause: options?.cause });
  }
}

/** Most verifier log lines a {@link VerifierError} keeps. */
const VERIFIER_LOG_LINES = 40;
/** Most characters a {@link VerifierError} keeps (status fields are small). */
const VERIFIER_LOG_CHARS = 4096;

/** Keeps the end of a verifier log: the error is at the end, the prologue is noise. */
export function trimVerifierLog(log: string): string {
  const lines = log.replace(/\0.*$/s, "").trimEnd().split("\n");
  let tail = lines.slice(-VERIFIER_LOG_LINES).join("\n");
  let cut = lines.length > VERIFIER_LOG_LINES;
  if (tail.length > VERIFIER_LOG_CHARS) {
    tail = tail.slice(-VERIFIER_LOG_CHARS);
    cut = true;
  }
  return cut ? `...\n${tail}` : tail;
}

/** Statistics lines the verifier prints after the reason; they say nothing about the failure. */
const VERIFIER_FOOTER =
  /^(processed \d+ insns|verification time|stack depth|max_states_per_insn|peak_states|mark_read|\.\.\.$|$)/;

/** The last line of a verifier log that states a reason, for the one-line error message. */
function verifierReason(log: string): string {
  const lines = log.split("\n");
  for (let i = lines.length - 1; i >= 0; i--) {
    const line = (lines[i] ?? "").trim();
    if (!VERIFIER_FOOTER.test(line)) return line;
  }
  return "(empty verifier log)";
}
