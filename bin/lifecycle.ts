/**
 * What the long-running commands (`sluice operator`, `sluice agent`, `sluice run`) share: how
 * they check the kubeconfig, report a start the host refused, stay up, and wait to be stopped.
 */
import { ExitCode, hostProblem } from "./cli.ts";

/**
 * Ends a long-running command that failed to start: one line for what the host refused (see
 * {@link hostProblem}), exit 3; anything else is a bug and keeps its stack trace.
 */
export function startFailed(command: string, err: unknown): number {
  const problem = hostProblem(err);
  if (problem === undefined) throw err;
  process.stderr.write(`sluice ${command}: ${problem}\n`);
  return ExitCode.Environment;
}

/** Checks the kubeconfig; returns an exit code when the command cannot start with it. */
export async function kubeconfigProblem(
  command: string,
  flag: string | undefined,
): Promise<number | undefined> {
  const { checkKubeconfig } = await import("./kubeconfig.ts");
  const check = checkKubeconfig(flag);
  if (check.ok) return undefined;
  process.stderr.write(`sluice ${command}: ${check.problem}\n`);
  return ExitCode.Environment;
}

/** Resolves at SIGINT or SIGTERM. */
export function waitForSignal(): Promise<void> {
  return new Promise((resolve) => {
    process.once("SIGINT", () => resolve());
    process.once("SIGTERM", () => resolve());
  });
}

/**
 * Holds the process open until the returned function is called. Signal handlers do not, and
 * while a long-running command waits for an API server that is not reachable yet, its only
 * work is a retry on an unreferenced timer: Node would end it with exit code 13 and no word.
 */
export function holdOpen(): () => void {
  const timer = setInterval(() => undefined, 1 << 30);
  return () => clearInterval(timer);
}
