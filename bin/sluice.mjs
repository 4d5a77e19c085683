#!/usr/bin/env node
// The sluice command: runs the JavaScript that `npm run build` compiles into dist/. Stack traces
// name the TypeScript sources (dist/ carries source maps).
process.setSourceMapsEnabled(true);
let cli;
try {
  cli = await import("../dist/main.js");
} catch (err) {
  if (err?.code !== "ERR_MODULE_NOT_FOUND" || !String(err.message).includes("dist/main.js")) throw err;
  process.stderr.write("sluice: dist/main.js is missing: run `npm run build` in the sluice repository\n");
  process.exit(3);
}
process.exitCode = await cli.main(process.argv.slice(2));
