/** The demo's Git repository, made from examples/gitops, and the changes committed to it. */
import { cp, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { git, PROBE_PORT, repoRoot } from "./support.ts";

/** One commit of the demo. */
export interface Change {
  title: string;
  /** What a viewer should see happen. */
  expect: string;
  file: string;
  edit(docs: ReturnType<typeof parseAllDocuments>): void;
}

const byName = (docs: ReturnType<typeof parseAllDocuments>, name: string) => {
  const doc = docs.find((d) => !("errors" in d && d.errors.length) && d.getIn(["metadata", "name"]) === name);
  if (!doc || !("setIn" in doc)) throw new Error(`the example repository has no object named ${name}`);
  return doc;
};

/** The three commits, in order: parameters, a runtime table entry, the order of the functions. */
export const CHANGES: Change[] = [
  {
    title: "ratelimit: 150000 packets/s per source",
    expect: "new programs are compiled, tested and switched in; the rate-limit state carries over",
    file: "network/functions.yaml",
    edit: (docs) => byName(docs, "ratelimit").setIn(["spec", "parameters", "rate"], 150000),
  },
  {
    title: `firewall: deny udp/${PROBE_PORT}`,
    expect: `a runtime table update, no reload; the probes to udp/${PROBE_PORT} now show as firewall drops`,
    file: "network/functions.yaml",
    edit: (docs) =>
      byName(docs, "firewall").addIn(["spec", "tables", "rules"], {
        action: "deny",
        protocol: "udp",
        dport: PROBE_PORT,
        comment: "the demo's probes",
      }),
  },
  {
    title: "ttl-guard: MIN_TTL 3",
    expect: "the repository's own C function is compiled again with the new setting, tested and switched in",
    file: "network/functions.yaml",
    edit: (docs) => byName(docs, "ttl-guard").setIn(["spec", "parameters", "MIN_TTL"], 3),
  },
];

/** Makes the demo's repository in `dir` from examples/gitops; returns its first commit. */
export async function createRepository(dir: string): Promise<string> {
  await cp(join(repoRoot, "examples/gitops"), dir, { recursive: true });
  await git(dir, "init", "--quiet", "--initial-branch=main");
  await git(dir, "add", "-A");
  await git(dir, "commit", "--quiet", "-m", "The edge chain from examples/gitops");
  return (await git(dir, "rev-parse", "HEAD")).trim();
}

/** Edits the manifest `change` names and commits it; returns the new commit. */
export async function commitChange(dir: string, change: Change): Promise<string> {
  const path = join(dir, change.file);
  const docs = parseAllDocuments(await readFile(path, "utf8"));
  change.edit(docs);
  await writeFile(path, docs.map((d) => d.toString({ flowCollectionPadding: false })).join(""));
  await git(dir, "commit", "--quiet", "-am", change.title);
  return (await git(dir, "rev-parse", "HEAD")).trim();
}
