#!/usr/bin/env -S node --max-semi-space-size=2
// The sluice command: runs the JavaScript that `npm run build` compiles into dist/. Stack traces
// name the TypeScript sources (dist/ carries source maps).
//
// --max-semi-space-size=2 (MB; Node 20's default grows to 16): the young generation stays
// small, so a busy `sluice run` holds ~95 MB instead of ~113 MB during the demo, with the same
// switch times (bench/README.md). Start it as `node --max-semi-space-size=2 bin/sluice.mjs`
// where it is not run through this line (images, tests); V8 takes the flag only at start.
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
