import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import {
  exampleGitNetworkFunction,
  exampleGitSource,
  exampleNetworkFunction,
  exampleServiceChain,
} from "../../../common/api/examples.ts";
import { loadRevision } from "./load.ts";

/**
 * A revision is whatever was committed. Generated YAML (valid manifests broken at random, YAML
 * syntax noise, alias bombs, deep nesting, duplicate keys) is loaded from a real directory:
 * `loadRevision` never throws, answers in bounded time, and every error names the file and a
 * message.
 */

let work: string;
let dir: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "sluice-load-prop-"));
  dir = join(work, "revision");
  await mkdir(dir);
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

const manifest = fc
  .constantFrom(exampleGitSource, exampleNetworkFunction, exampleGitNetworkFunction, exampleServiceChain)
  .map((make) => stringify(make()));

/** Text edits: insertions of YAML-significant fragments, deletions, duplications. */
const fragment = fc.constantFrom(
  ":",
  "- ",
  "&a ",
  "*a",
  "<<: *a\n",
  "!!binary ",
  "!!js/function ",
  "%YAML 1.1\n",
  "---\n",
  "...\n",
  "? ",
  "|\n",
  ">-\n",
  "\t",
  "\u0000",
  "\ufeff",
  "'",
  '"',
  "{",
  "[",
  "#",
  "\n  ",
  "namespace: team-b\n",
  "apiVersion: v1\n",
  "kind: NodeChain\n",
);

const edited = fc
  .tuple(
    fc.array(manifest, { minLength: 1, maxLength: 3 }),
    fc.array(fc.tuple(fc.nat(), fc.oneof(fragment, fc.string({ maxLength: 12 })), fc.nat({ max: 8 })), {
      maxLength: 4,
    }),
  )
  .map(([docs, edits]) => {
    let text = docs.join("---\n");
    for (const [at, insert, remove] of edits) {
      const pos = at % (text.length + 1);
      text = text.slice(0, pos) + insert + text.slice(pos + remove);
    }
    return text;
  });

const bomb = fc.integer({ min: 2, max: 12 }).map((depth) => {
  const lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"];
  for (let i = 1; i <= depth; i++)
    lines.push(
      `a${i}: &a${i} [${Array(10)
        .fill(`*a${i - 1}`)
        .join(", ")}]`,
    );
  return lines.join("\n");
});
const deep = fc.integer({ min: 10, max: 500 }).map((depth) => `${"[".repeat(depth)}${"]".repeat(depth)}`);

describe("manifest loader properties", () => {
  it("hostile YAML gives objects or located errors, never a throw (2,000 revisions)", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof({ weight: 8, arbitrary: edited }, bomb, deep, fc.string({ maxLength: 200 })),
        async (text) => {
          // One directory, its one file rewritten per case: the loader reads what is there now.
          await writeFile(join(dir, "manifests.yaml"), text);
          const started = performance.now();
          const result = await loadRevision(dir, { defaultNamespace: "team-a" });
          expect(performance.now() - started).toBeLessThan(2_000);
          if (result.ok) {
            for (const object of result.objects)
              expect(["GitSource", "NetworkFunction", "ServiceChain"]).toContain(object.kind);
          } else {
            expect(result.errors.length).toBeGreaterThan(0);
            for (const error of result.errors) {
              expect(error.file).toBe("manifests.yaml");
              expect(error.message.length).toBeGreaterThan(0);
            }
            expect(result.message.length).toBeGreaterThan(0);
          }
        },
      ),
      { numRuns: 2_000 },
    );
  }, 180_000);
});
