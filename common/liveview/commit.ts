import { execFile } from "node:child_process";
import type { CommitInfo } from "./model.ts";

/**
 * The commit behind a revision (`<ref>@sha1:<sha>` or `sha1:<sha>`), read from the Git work
 * directory the GitSource was fetched into: subject line and committer time.
 */
export function gitCommitInfo(workDir: string, revision: string): Promise<CommitInfo | undefined> {
  const sha = /sha1:([0-9a-f]{40})$/.exec(revision)?.[1];
  if (!sha) return Promise.resolve(undefined);
  return new Promise((resolve) => {
    execFile(
      "git",
      ["-C", workDir, "show", "-s", "--format=%ct%n%s", sha],
      { timeout: 5_000, env: { ...process.env, GIT_CONFIG_NOSYSTEM: "1" } },
      (err, stdout) => {
        if (err) return resolve(undefined);
        const [time, ...subject] = stdout.trimEnd().split("\n");
        resolve({ sha, message: subject.join(" "), timeMs: Number(time) * 1000 });
      },
    );
  });
}
