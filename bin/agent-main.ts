/**
 * The entry of the agent image's build (`npm run build -- --entry bin/agent-main.ts`): the same
 * `main` as bin/main.ts, with `sluice agent` as its one command, so that building it needs
 * nothing of operator/ (test/unit/import-boundaries.test.ts holds it to that).
 */
import { commandUsage, ExitCode, usageError } from "./cli.ts";

export { ExitCode } from "./cli.ts";

/** Runs `sluice agent` (the only command of this build); returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case "agent":
      return (await import("./agent.ts")).agent(rest);
    case "help":
    case "--help":
    case "-h":
      process.stdout.write(commandUsage.agent);
      return ExitCode.Ok;
    case undefined:
      return usageError("agent", "give the command: agent");
    default:
      return usageError(
        "agent",
        `${JSON.stringify(command)}: this build of sluice runs only \`sluice agent\``,
      );
  }
}
