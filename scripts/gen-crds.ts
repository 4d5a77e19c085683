/**
 * Writes the CRDs generated from the zod schemas in common/api into every place that ships them:
 * crds/ (for `kubectl apply -f crds/`) and charts/sluice/crds/ (installed by `helm install`).
 * Both copies come from this one run, so they cannot drift apart.
 *
 *   node --import tsx scripts/gen-crds.ts            regenerate crds/ and charts/sluice/crds/
 *   node --import tsx scripts/gen-crds.ts --check    exit 1 and list the files that would change
 *   node --import tsx scripts/gen-crds.ts --out DIR  write into DIR only
 */
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { CRD_HEADER, renderCrds } from "../common/api/crd.ts";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");

/** Directories that hold a copy of the generated CRDs. */
const defaultOutDirs = [join(root, "crds"), join(root, "charts", "sluice", "crds")];

function usage(message: string): never {
  process.stderr.write(`gen-crds: ${message}\nusage: gen-crds.ts [--check] [--out DIR]\n`);
  process.exit(2);
}

let check = false;
let outDirs = defaultOutDirs;
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i++) {
  const arg = args[i];
  if (arg === "--check") check = true;
  else if (arg === "--out") outDirs = [resolve(args[++i] ?? usage("--out needs a directory"))];
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

/** What would change in one output directory. */
interface Plan {
  outDir: string;
  changed: string[];
  stale: string[];
}

function plan(outDir: string): Plan {
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
  return { outDir, changed, stale };
}

const plans = outDirs.map(plan);
const show = (outDir: string, file: string) => relative(process.cwd(), join(outDir, file)) || file;

if (check) {
  const outdated = plans.filter((p) => p.changed.length > 0 || p.stale.length > 0);
  if (outdated.length === 0) {
    process.stdout.write(`gen-crds: ${wanted.size} CRDs up to date in ${plans.length} place(s)\n`);
    process.exit(0);
  }
  for (const p of outdated) {
    for (const file of p.changed) process.stdout.write(`would change: ${show(p.outDir, file)}\n`);
    for (const file of p.stale) process.stdout.write(`would remove: ${show(p.outDir, file)}\n`);
  }
  process.stdout.write("gen-crds: CRDs are out of date; run `node --import tsx scripts/gen-crds.ts`\n");
  process.exit(1);
}

for (const p of plans) {
  mkdirSync(p.outDir, { recursive: true });
  for (const file of p.changed) writeFileSync(join(p.outDir, file), wanted.get(file) as string);
  for (const file of p.stale) rmSync(join(p.outDir, file));
  process.stdout.write(
    `gen-crds: ${relative(root, p.outDir)}: ${p.changed.length} written, ${p.stale.length} removed, ` +
      `${wanted.size - p.changed.length} unchanged\n`,
  );
}
