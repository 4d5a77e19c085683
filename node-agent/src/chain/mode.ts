/**
 * Which way a chain runs: `linked` (one program per NF, tail calls), `fused` (one generated
 * program, see fused.ts) or `auto`: fused when the fused program compiles, verifies and passes
 * the self-test, else linked, with the reason in the result (and so in status). `auto` is the
 * default of the API (ServiceChain.spec.mode), which the agent always passes on; a ChainSpec
 * without a mode runs linked.
 */
import type { Logger } from "../../../common/log.ts";
import { programHook } from "../packet/index.ts";
import { planFused, type FusedPlanResult } from "./fused.ts";
import { ChainSpecError, type ChainSpec } from "./spec.ts";
import type { ApplyResult } from "./types.ts";

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Runs `apply` (a switch or a change of hook) in the mode `spec` asks for. In `auto`, a fused
 * attempt that fails in any way (compile, verifier, self-test) is followed by a linked one; only
 * the linked attempt's failure is thrown. Each attempt leaves the live chain as it was when it
 * fails, so the fallback starts from the same state.
 */
export async function withMode(
  apply: (spec: ChainSpec) => Promise<ApplyResult>,
  spec: ChainSpec,
  cacheDir: string,
  log: Logger,
): Promise<ApplyResult> {
  const requested = spec.mode ?? "linked";
  if (requested === "linked") return { ...(await apply(spec)), mode: "linked" };
  let planned: FusedPlanResult;
  try {
    planned = await planFused(programHook(spec.hook), spec.functions, cacheDir);
  } catch (err) {
    if (requested === "fused") throw err;
    planned = { ok: false, reason: `the fused program could not be built: ${messageOf(err)}` };
  }
  if (!planned.ok) {
    if (requested === "fused") throw new ChainSpecError(`mode fused: ${planned.reason}`);
    log.info({ reason: planned.reason }, "chain runs linked: it cannot be fused");
    return { ...(await apply(spec)), mode: "linked", modeReason: planned.reason };
  }
  try {
    return { ...(await apply({ ...spec, fused: planned.plan })), mode: "fused" };
  } catch (err) {
    if (requested === "fused") throw err;
    const reason = `the fused program failed (${messageOf(err).split("\n")[0]!.slice(0, 400)}); linked instead`;
    log.warn({ reason }, "chain runs linked: the fused program failed");
    return { ...(await apply(spec)), mode: "linked", modeReason: reason };
  }
}
