import { Reason } from "../../../common/api/conditions.ts";
import { SluiceError } from "../../../common/errors.ts";

/**
 * Errors of the chain manager besides those it passes on unchanged (libbpf's VerifierError,
 * BpfError and NotSupportedError, the self-test's SelfTestError, ChainSpecError from spec.ts).
 */

/**
 * An NF object does not follow the chain contract (bpf/include/sluice.h): it lacks the shared
 * maps or settings, declares them differently, or has no program for the chain's hook. The NF
 * must be rebuilt against the contract; retrying does not help, so it stalls with LoadFailed.
 */
export class NfContractError extends SluiceError {
  override name = "NfContractError";
  constructor(
    /** The NF's name in the chain. */
    readonly nf: string,
    message: string,
  ) {
    super(Reason.LoadFailed, `${nf}: ${message}`, { retry: "stall" });
  }
}

/**
 * The chain's root program could not be attached to an interface (another program holds the
 * hook, or the device refused). Nothing was switched: the chain that ran before still runs.
 */
export class AttachError extends SluiceError {
  override name = "AttachError";
  constructor(
    readonly ifname: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    // Another program may let go of the hook, or the device come back: retried.
    super(Reason.AttachFailed, `interface ${ifname}: ${message}`, {
      retry: "backoff",
      cause: options?.cause,
    });
  }
}

/**
 * What is pinned for a chain cannot be read back or extended (a meta map that does not parse, a
 * format from a newer agent, no free stats slot), or a table asked for is not in the live
 * revision. The chain is left as it is, still forwarding; the same attempt fails the same way, so
 * it stalls with LoadFailed: an operator has to look.
 */
export class ChainStateError extends SluiceError {
  override name = "ChainStateError";
  constructor(message: string, options?: { cause?: unknown }) {
    super(Reason.LoadFailed, message, { retry: "stall", cause: options?.cause });
  }
}
