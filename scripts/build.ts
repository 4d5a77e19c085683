/**
 * Builds the JavaScript that ships: `dist/main.js` (the CLI, imported by `bin/sluice.mjs`) and
 * the chunks it loads per command, with source maps.
 *
 *   npm run build            builds dist/ (a few seconds)
 *   npm run build -- --check exits 1 naming the changed files if dist/ is stale against the sources
 *   npm run build -- --if-stale builds only if it is (what `npm test` and `npm run demo` do first)
 *   npm run build -- --entry bin/agent-main.ts
 *                            builds dist/main.js from another entry: the agent image's build,
 *                            which has only `sluice agent` and needs nothing of operator/
 *
 * esbuild bundles our modules together with the npm packages they use, except koffi (a native
 * module, the one runtime dependency left in package.json). Bundling is what keeps the agent and
 * the operator small: loaded from node_modules, @kubernetes/client-node alone costs ~70 MB of
 * RSS and a second of start (thousands of modules, every generated API model); bundled, only
 * what sluice calls is kept (bench/README.md has the figures). Splitting keeps each command's
 * code in its own chunk: `sluice help` loads none of the operator, the agent or libbpf.
 * Bundled pino has no transports (they start workers from files next to pino's own): sluice
 * logs to stdout/stderr only.
 *
 * The build records a digest of every source file it read (from esbuild's metafile) in
 * `dist/build-info.json`; {@link staleSources} compares them with the tree, so tests fail early
 * when they would start an outdated `sluice`.
 */
import { createHash } from "node:crypto";
import { mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { z } from "zod";

/** The repository root. */
const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");

/** Where the build writes; `bin/sluice.mjs` imports `dist/main.js`. */
export const DIST_DIR = join(root, "dist");

const BUILD_INFO = join(DIST_DIR, "build-info.json");

/** The module whose `main` `bin/sluice.mjs` runs: every command. */
const DEFAULT_ENTRY = "bin/main.ts";

/** What the build read, as `dist/build-info.json` stores it. */
const BuildInfo = z.object({
  /** Repository-relative path of each source file, the lock file and this script → sha256. */
  sources: z.record(z.string(), z.string()),
  /** The entry when it was not bin/main.ts (`--entry`): such a dist/ is never current here. */
  entry: z.string().optional(),
});
type BuildInfo = z.infer<typeof BuildInfo>;

async function digest(path: string): Promise<string> {
  return createHash("sha256")
    .update(await readFile(join(root, path)))
    .digest("hex");
}

/** Namespace of the modules {@link REPLACED_PACKAGES} puts in place of npm packages. */
const REPLACED = "sluice-replaced";

/**
 * npm packages that @kubernetes/client-node brings in at load time but that no sluice command
 * uses, each replaced in the bundle by a few lines (CommonJS). Each one cost every process its
 * module code and what it builds on load (bench/README.md, the scale section):
 * - `whatwg-url` (with `tr46` and its Unicode mapping table, ~3.5 MB of RSS): node-fetch 2 takes
 *   Node's own `URL` when there is one and requires this only as the fallback for runtimes
 *   without it; the replacement hands out Node's `URL`.
 * - `isomorphic-ws` (`ws`): the WebSocket client of exec, attach and port-forward, which sluice
 *   never calls; the replacement fails loudly if something ever does.
 */
const REPLACED_PACKAGES: Readonly<Record<string, string>> = {
  "whatwg-url":
    'const { URL, URLSearchParams } = require("node:url"); module.exports = { URL, URLSearchParams };',
  "isomorphic-ws": `class WebSocket {
  constructor() { throw new Error("sluice is built without a WebSocket client (exec, attach and port-forward are not part of it)"); }
}
WebSocket.CONNECTING = 0; WebSocket.OPEN = 1; WebSocket.CLOSING = 2; WebSocket.CLOSED = 3;
module.exports = WebSocket;`,
};

/** The esbuild plugin that bundles {@link REPLACED_PACKAGES} in place of the packages. */
const replacePackages = {
  name: "replace-unused-packages",
  setup(b: import("esbuild").PluginBuild): void {
    const names = Object.keys(REPLACED_PACKAGES).map((n) => n.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
    b.onResolve({ filter: new RegExp(`^(${names.join("|")})$`) }, (args) => ({
      path: args.path,
      namespace: REPLACED,
    }));
    b.onLoad({ filter: /.*/, namespace: REPLACED }, (args) => ({
      contents: REPLACED_PACKAGES[args.path],
      loader: "js",
    }));
  },
};

/** Builds `dist/` from the sources (`entry`: the CLI's module) and records what it read. */
export async function build(entry = DEFAULT_ENTRY): Promise<void> {
  const esbuild = await import("esbuild");
  const result = await esbuild.build({
    absWorkingDir: root,
    entryPoints: { main: entry },
    outdir: DIST_DIR,
    bundle: true,
    splitting: true,
    format: "esm",
    platform: "node",
    target: "node20",
    external: ["koffi"],
    plugins: [replacePackages],
    // CommonJS packages inside the ESM bundle still call require() for Node's built-ins.
    banner: {
      js: 'import { createRequire as __sluiceRequire } from "node:module"; const require = __sluiceRequire(import.meta.url);',
    },
    // Bundling renames clashing identifiers; error and class names show in logs as written.
    keepNames: true,
    // V8 keeps every loaded module's source text: without indentation and with shorter syntax,
    // the idle agent holds ~5 MB and the operator ~10 MB less. Names stay, our frames map back
    // to the TypeScript lines, and lines stay short enough to read when Node prints one with
    // an uncaught error.
    minifyWhitespace: true,
    minifySyntax: true,
    lineLimit: 160,
    sourcemap: "linked",
    // Stack traces name the TypeScript file and line; the sources themselves do not ship.
    sourcesContent: false,
    chunkNames: "chunks/[name]-[hash]",
    metafile: true,
    write: false,
    logLevel: "warning",
  });
  await mkdir(join(DIST_DIR, "chunks"), { recursive: true });
  for (const file of result.outputFiles) {
    await writeFile(file.path, file.path.endsWith(".map") ? ownSourcesOnly(file.text) : file.contents);
  }
  // The live view's page is served as files (no build step at run time): web/ and uPlot's
  // browser build, copied next to the chunks.
  const webFiles = await copyWebAssets();
  // Chunks of an earlier build go only now: a sluice process that is running meanwhile (a test,
  // the demo) still finds dist/main.js and the chunks it loads later.
  const outputs = new Set(Object.keys(result.metafile.outputs).map((p) => resolve(root, p)));
  outputs.add(BUILD_INFO);
  for (const file of webFiles) outputs.add(file);
  for (const entry of await readdir(DIST_DIR, { recursive: true, withFileTypes: true })) {
    const path = join(entry.parentPath, entry.name);
    if (entry.isFile() && !outputs.has(path)) await rm(path);
  }
  // The replaced packages' modules live in build.ts, which is recorded below.
  const inputs = Object.keys(result.metafile.inputs).filter(
    (p) => !p.includes("node_modules/") && !p.startsWith(`${REPLACED}:`),
  );
  const sources: BuildInfo["sources"] = {};
  // The lock file stands for the bundled packages.
  const webSources = (await readdir(join(root, "web"))).map((name) => `web/${name}`);
  for (const path of [...inputs, ...webSources, "package-lock.json", "scripts/build.ts"].sort()) {
    sources[path] = await digest(path);
  }
  const info: BuildInfo = { sources, ...(entry === DEFAULT_ENTRY ? {} : { entry }) };
  await writeFile(BUILD_INFO, JSON.stringify(info, null, 2) + "\n");
}

/** Copies web/ and uPlot's files into dist/web; returns the paths written. */
async function copyWebAssets(): Promise<string[]> {
  const written: string[] = [];
  const copy = async (from: string, to: string) => {
    await mkdir(dirname(to), { recursive: true });
    await writeFile(to, await readFile(from));
    written.push(to);
  };
  for (const name of await readdir(join(root, "web")))
    await copy(join(root, "web", name), join(DIST_DIR, "web", name));
  for (const name of ["uPlot.iife.min.js", "uPlot.min.css"])
    await copy(join(root, "node_modules/uplot/dist", name), join(DIST_DIR, "web/vendor", name));
  return written;
}

const VLQ = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

function decodeVlq(segment: string): number[] {
  const values: number[] = [];
  let value = 0;
  let shift = 0;
  for (const char of segment) {
    const digit = VLQ.indexOf(char);
    value += (digit & 31) << shift;
    if (digit & 32) {
      shift += 5;
    } else {
      values.push(value & 1 ? -(value >>> 1) : value >>> 1);
      value = 0;
      shift = 0;
    }
  }
  return values;
}

function encodeVlq(values: readonly number[]): string {
  let out = "";
  for (const v of values) {
    let rest = v < 0 ? (-v << 1) | 1 : v << 1;
    do {
      const digit = rest & 31;
      rest >>>= 5;
      out += VLQ[rest > 0 ? digit | 32 : digit];
    } while (rest > 0);
  }
  return out;
}

/**
 * A source map (JSON text) that maps only our own sources: positions in bundled npm packages
 * become unmapped. Node keeps a decoded map per loaded chunk once it formats a stack trace, one
 * small array per mapping; the packages' mappings (client-node's most of all) cost the operator
 * ~25 MB of heap for frames that would point into node_modules files that do not ship anyway.
 */
export function ownSourcesOnly(text: string): string {
  const map = JSON.parse(text) as { sources: string[]; mappings: string; names?: string[] };
  const keep = map.sources.map((source) => !source.includes("node_modules/"));
  const newIndex: number[] = [];
  const sources: string[] = [];
  map.sources.forEach((source, i) => {
    if (keep[i]) newIndex[i] = sources.push(source) - 1;
  });
  // Fields after the generated column are deltas across the whole map; decode to absolute
  // values, drop or keep each segment, and encode again against what was written.
  const abs = [0, 0, 0, 0];
  const written = [0, 0, 0, 0];
  const lines = map.mappings.split(";").map((line) => {
    let column = 0;
    let writtenColumn = 0;
    let lastMapped = false;
    const out: string[] = [];
    for (const segment of line === "" ? [] : line.split(",")) {
      const [dColumn = 0, ...rest] = decodeVlq(segment);
      column += dColumn;
      rest.forEach((delta, i) => (abs[i]! += delta));
      const mapped = rest.length >= 3 && keep[abs[0]!] === true;
      if (mapped) {
        const fields = [newIndex[abs[0]!]!, abs[1]!, abs[2]!, ...(rest.length >= 4 ? [abs[3]!] : [])];
        out.push(encodeVlq([column - writtenColumn, ...fields.map((v, i) => v - written[i]!)]));
        fields.forEach((v, i) => (written[i] = v));
      } else if (lastMapped || out.length === 0) {
        // Unmapped from here on, so that the code is not taken for the source mapped before it.
        out.push(encodeVlq([column - writtenColumn]));
      } else {
        continue;
      }
      writtenColumn = column;
      lastMapped = mapped;
    }
    return out.join(",");
  });
  return JSON.stringify({ ...map, sources, mappings: lines.join(";") });
}

/**
 * The source files that differ from what `dist/` was built from (changed or deleted), or
 * `["dist/"]` if there is no build. Empty when `dist/` is current.
 */
export async function staleSources(): Promise<string[]> {
  let info: BuildInfo;
  try {
    info = BuildInfo.parse(JSON.parse(await readFile(BUILD_INFO, "utf8")));
  } catch {
    return ["dist/"];
  }
  // Built for the agent image (one command): the tests and the demo need every command.
  if (info.entry !== undefined) return [`dist/ (built from ${info.entry})`];
  const stale: string[] = [];
  for (const [path, want] of Object.entries(info.sources)) {
    const got = await digest(path).catch(() => undefined);
    if (got !== want) stale.push(path);
  }
  return stale;
}

/** The message tests and `--check` print for a stale `dist/`. */
export function staleMessage(stale: readonly string[]): string {
  const shown = stale.slice(0, 5).join(", ") + (stale.length > 5 ? `, … (${stale.length} files)` : "");
  return `dist/ is stale against the sources (${shown}): run \`npm run build\``;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  if (process.argv.includes("--check")) {
    const stale = await staleSources();
    if (stale.length > 0) {
      process.stderr.write(`build: ${staleMessage(stale)}\n`);
      process.exitCode = 1;
    }
  } else if (process.argv.includes("--if-stale") && (await staleSources()).length === 0) {
    // dist/ was built from exactly these sources: a warm `npm test` or demo skips the bundling.
  } else {
    const start = performance.now();
    const entryFlag = process.argv.indexOf("--entry");
    await build(entryFlag > 0 ? process.argv[entryFlag + 1] : undefined);
    process.stderr.write(`build: dist/ in ${((performance.now() - start) / 1000).toFixed(1)} s\n`);
  }
}
