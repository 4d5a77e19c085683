/**
 * Dependencies point one way: the operator and the agent both use `common/`, neither uses the
 * other, and `common/` uses neither (nor the CLI in `bin/`, which composes both); the agent
 * image's entry, bin/agent-main.ts, uses nothing of the operator. The rule holds
 * through any chain of imports, static, dynamic or type-only: a file of the agent that imports a
 * `bin/` module that imports the operator breaks it as much as a direct import does.
 * (eslint.config.js refuses the direct imports as you type; this test follows the chains.)
 */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";
import { afterAll, describe, expect, it } from "vitest";

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

/** Top-level folder (or one file) → top-level folders none of its files may reach. */
const FORBIDDEN: Record<string, readonly string[]> = {
  "node-agent": ["operator"],
  operator: ["node-agent"],
  common: ["operator", "node-agent", "bin"],
  // The agent image builds this entry without operator/ (images/agent.Dockerfile).
  "bin/agent-main.ts": ["operator"],
};

/** A file that reaches a folder it must not, and the chain of imports that gets there. */
interface Violation {
  from: string;
  reaches: string;
  chain: string[];
}

function sourceFiles(root: string, dir: string): string[] {
  const out: string[] = [];
  if (!existsSync(join(root, dir))) return out;
  if (statSync(join(root, dir)).isFile()) return [dir];
  for (const entry of readdirSync(join(root, dir), { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) {
      if (entry.name !== "node_modules") out.push(...sourceFiles(root, path));
    } else if (/\.(ts|mts|mjs|js)$/.test(entry.name) && !entry.name.endsWith(".d.ts")) {
      out.push(path.split(sep).join("/"));
    }
  }
  return out;
}

/** Repository-relative paths of the files a file imports (relative specifiers only). */
function importsOf(root: string, file: string): string[] {
  const { importedFiles } = ts.preProcessFile(readFileSync(join(root, file), "utf8"), true, true);
  const out: string[] = [];
  for (const { fileName } of importedFiles) {
    if (!fileName.startsWith(".")) continue;
    const target = relative(root, resolve(root, dirname(file), fileName))
      .split(sep)
      .join("/");
    // `./x.js` may name `./x.ts`; a folder names its index.
    const candidates = [target, target.replace(/\.js$/, ".ts"), `${target}.ts`, `${target}/index.ts`];
    out.push(candidates.find((c) => existsSync(join(root, c)) && !c.endsWith("/")) ?? target);
  }
  return out;
}

/** Every violation of {@link FORBIDDEN} in the tree at `root`, with the shortest chain to it. */
function boundaryViolations(root: string): Violation[] {
  const graph = new Map<string, string[]>();
  const importsCached = (file: string): string[] => {
    let targets = graph.get(file);
    if (!targets) graph.set(file, (targets = existsSync(join(root, file)) ? importsOf(root, file) : []));
    return targets;
  };
  const violations: Violation[] = [];
  for (const [part, forbidden] of Object.entries(FORBIDDEN)) {
    for (const start of sourceFiles(root, part)) {
      // Breadth first: the reported chain is the shortest.
      const via = new Map<string, string | undefined>([[start, undefined]]);
      const queue = [start];
      while (queue.length > 0) {
        const file = queue.shift()!;
        const top = file.split("/")[0]!;
        if (forbidden.includes(top)) {
          const chain = [file];
          for (let f = via.get(file); f !== undefined; f = via.get(f)) chain.unshift(f);
          violations.push({ from: start, reaches: top, chain });
          break;
        }
        for (const next of importsCached(file)) {
          if (via.has(next)) continue;
          via.set(next, file);
          queue.push(next);
        }
      }
    }
  }
  return violations;
}

describe("import boundaries", () => {
  it("the agent, the operator and common reach nothing they must not, through any chain of imports", () => {
    const violations = boundaryViolations(repoRoot);
    expect(violations.map((v) => `${v.from} reaches ${v.reaches}/: ${v.chain.join(" → ")}`)).toEqual([]);
  });

  describe("are enforced: a deliberately bad import is found", () => {
    let root = "";
    afterAll(() => rm(root, { recursive: true, force: true }));

    async function tree(files: Record<string, string>): Promise<string> {
      root = await mkdtemp(join(tmpdir(), "sluice-boundaries-"));
      for (const [path, text] of Object.entries(files)) {
        await mkdir(dirname(join(root, path)), { recursive: true });
        await writeFile(join(root, path), text);
      }
      return root;
    }

    it.each<{ name: string; files: Record<string, string>; expected: string[] }>([
      {
        name: "the agent importing the operator",
        files: {
          "node-agent/src/a.ts": 'import { x } from "../../operator/src/x.ts";',
          "operator/src/x.ts": "export const x = 1;",
        },
        expected: ["node-agent/src/a.ts", "operator/src/x.ts"],
      },
      {
        name: "the operator importing the agent through bin/ with a dynamic import",
        files: {
          "operator/src/o.ts": 'export const load = () => import("../../bin/cmd.ts");',
          "bin/cmd.ts": 'export * from "../node-agent/src/agent/run.ts";',
          "node-agent/src/agent/run.ts": "export const run = 1;",
        },
        expected: ["operator/src/o.ts", "bin/cmd.ts", "node-agent/src/agent/run.ts"],
      },
      {
        name: "common importing bin/ (type-only)",
        files: {
          "common/c.ts": 'import type { T } from "../bin/t.ts";',
          "bin/t.ts": "export type T = number;",
        },
        expected: ["common/c.ts", "bin/t.ts"],
      },
    ])("$name", async ({ files, expected }) => {
      const dir = await tree(files);
      try {
        expect(boundaryViolations(dir).map((v) => v.chain)).toEqual([expected]);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
  });
});
