import type { Hook } from "../../../common/api/meta.ts";
import type { Verdict } from "../../../common/api/testvector.ts";

export type { Hook };

/** The program type behind a hook: both tc directions run `sched_cls` programs. */
export type ProgramHook = "xdp" | "tc";

/** `enum xdp_action` from `<linux/bpf.h>`. */
export const XdpAction = { ABORTED: 0, DROP: 1, PASS: 2, TX: 3, REDIRECT: 4 } as const;

/** `TC_ACT_*` from `<linux/pkt_cls.h>` (tcx uses the same values: NEXT=-1, PASS=0, DROP=2). */
export const TcAction = {
  UNSPEC: -1,
  OK: 0,
  RECLASSIFY: 1,
  SHOT: 2,
  PIPE: 3,
  STOLEN: 4,
  QUEUED: 5,
  REPEAT: 6,
  REDIRECT: 7,
} as const;

/** The program type a hook runs. */
export function programHook(hook: Hook | ProgramHook): ProgramHook {
  return hook === "xdp" ? "xdp" : "tc";
}

const XDP_BY_VERDICT: Record<Verdict, number> = {
  aborted: XdpAction.ABORTED,
  drop: XdpAction.DROP,
  pass: XdpAction.PASS,
  tx: XdpAction.TX,
  redirect: XdpAction.REDIRECT,
};

/**
 * The return code a chain gives for a verdict on a hook, as SLUICE_EXIT produces it. On tc,
 * `aborted` is TC_ACT_SHOT (the NF failed, the packet is dropped) and `tx` has no code
 * (undefined): a tc chain can never produce it.
 */
export function verdictToReturnCode(hook: Hook | ProgramHook, verdict: Verdict): number | undefined {
  if (programHook(hook) === "xdp") return XDP_BY_VERDICT[verdict];
  switch (verdict) {
    case "pass":
      return TcAction.OK;
    case "drop":
    case "aborted":
      return TcAction.SHOT;
    case "redirect":
      return TcAction.REDIRECT;
    case "tx":
      return undefined;
  }
}

/**
 * The verdict a program's return code means on a hook, or undefined for a code that is not a
 * verdict there (the self-test reports those as they are). BPF_PROG_TEST_RUN returns the code
 * as an unsigned 32-bit value; both forms are accepted (0xffffffff is TC_ACT_UNSPEC).
 */
export function returnCodeToVerdict(hook: Hook | ProgramHook, code: number): Verdict | undefined {
  const value = code | 0;
  if (programHook(hook) === "xdp") {
    switch (value) {
      case XdpAction.ABORTED:
        return "aborted";
      case XdpAction.DROP:
        return "drop";
      case XdpAction.PASS:
        return "pass";
      case XdpAction.TX:
        return "tx";
      case XdpAction.REDIRECT:
        return "redirect";
      default:
        return undefined;
    }
  }
  switch (value) {
    case TcAction.UNSPEC: // the next program, or the stack when there is none
    case TcAction.OK:
      return "pass";
    case TcAction.SHOT:
      return "drop";
    case TcAction.REDIRECT:
      return "redirect";
    default:
      return undefined;
  }
}
