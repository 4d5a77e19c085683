/** The `sluice run` process the demo drives, started as an installed sluice command is. */
import type { ChildProcess } from "node:child_process";
import { createWriteStream } from "node:fs";
import { join } from "node:path";
import { repoRoot, start, stopProcess, type Cleanup } from "./support.ts";
import type { Topology } from "./topology.ts";

/** The running `sluice run`: its status port, process and log file. */
export interface Sluice {
  port: number;
  child: ChildProcess;
  logPath: string;
}

/** Starts `sluice run` on the repository inside the node namespace, as an installed sluice runs. */
export async function startSluice(
  t: Topology,
  repoDir: string,
  workDir: string,
  bpffsRoot: string,
  undo: Cleanup,
) {
  const logPath = join(workDir, "sluice-run.log");
  const log = createWriteStream(logPath);
  const args = [
    join(repoRoot, "bin/sluice.mjs"),
    "run",
    "--source",
    repoDir,
    "--path",
    "network",
    // The NetworkFunctions' sourceRef names the GitSource of the bootstrap manifest: edge.
    "--name",
    "edge",
    "--interval",
    "1s",
    "--port",
    "0",
    "--data-dir",
    join(workDir, "data"),
    "--bpffs-root",
    bpffsRoot,
    "--netns",
    t.node,
  ];
  // The command itself, as a user runs it: its first line gives Node the flags it runs with.
  const child = start(args);
  undo.add("sluice run", () => stopProcess(child));
  child.stdout?.pipe(log, { end: false });
  let tail = "";
  const port = await new Promise<number>((resolvePort, reject) => {
    child.stderr?.on("data", (chunk: Buffer) => {
      log.write(chunk);
      tail = (tail + chunk.toString()).slice(-8000);
      const m = /status at http:\/\/127\.0\.0\.1:(\d+)\/status/.exec(tail);
      if (m) resolvePort(Number(m[1]));
    });
    child.once("exit", (code) => reject(new Error(`sluice run exited (code ${code}):\n${tail.trim()}`)));
    setTimeout(
      () => reject(new Error(`sluice run did not start within 60 s:\n${tail.trim()}`)),
      60_000,
    ).unref();
  });
  return { port, child, logPath } satisfies Sluice;
}
