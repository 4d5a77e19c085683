/**
 * Writes crds/<plural>.sluice.dev.yaml from the zod schemas in common/api.
 *
 *   node --import tsx scripts/gen-crds.ts            regenerate crds/
 *   node --import tsx scripts/gen-crds.ts --check    exit 1 and list the files that would change
 *   node --import tsx scripts/gen-crds.ts --out DIR  write into DIR instead (e.g. the chart's crds/)
 */
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { CRD_HEADER, renderCrds } from "../common/api/crd.ts";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");

function usage(message: string): never {
  process.stderr.write(`gen-crds: ${message}\nusage: gen-crds.ts [--check] [--out DIR]\n`);
  process.exit(2);
}

let check = false;
let outDir = join(root, "crds");
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i++) {
  const arg = args[i];
  if (arg === "--check") check = true;
  else if (arg === "--out") outDir = resolve(args[++i] ?? usage("--out needs a directory"));
  else usage(`unknown argument ${arg}`);
}

const wanted = renderCrds();
const readOrUndefined = (file: string): string | undefined => {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
};
let existing: string[] = [];
try {
  existing = readdirSync(outDir).filter((f) => f.endsWith(".yaml"));
} catch {
  // no directory yet: everything is new
}
// Generated files we no longer produce (a removed kind) are stale; hand-written files are left alone.
const stale = existing.filter(
  (f) => !wanted.has(f) && readOrUndefined(join(outDir, f))?.startsWith(CRD_HEADER),
);
const changed = [...wanted]
  .filter(([file, text]) => readOrUndefined(join(outDir, file)) !== text)
  .map(([file]) => file);
const show = (file: string) => relative(process.cwd(), join(outDir, file)) || file;

if (check) {
  if (changed.length === 0 && stale.length === 0) {
    process.stdout.write(`gen-crds: ${wanted.size} CRDs up to date\n`);
    process.exit(0);
  }
  for (const file of changed) process.stdout.write(`would change: ${show(file)}\n`);
  for (const file of stale) process.stdout.write(`would remove: ${show(file)}\n`);
  process.stdout.write("gen-crds: CRDs are out of date; run `node --import tsx scripts/gen-crds.ts`\n");
  process.exit(1);
}

mkdirSync(outDir, { recursive: true });
for (const file of changed) writeFileSync(join(outDir, file), wanted.get(file) as string);
for (const file of stale) rmSync(join(outDir, file));
process.stdout.write(
  `gen-crds: ${changed.length} written, ${stale.length} removed, ${wanted.size - changed.length} unchanged\n`,
);
