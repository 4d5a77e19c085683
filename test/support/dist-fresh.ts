/**
 * Global setup for the projects that start `sluice` (kernel, cluster, e2e): they run the
 * compiled CLI users run (`bin/sluice.mjs` → `dist/`), so they must not start a build that is
 * older than the sources under test. `npm test` builds first (`pretest`); a direct `vitest run`
 * after an edit fails here, naming the changed files and `npm run build`.
 */
import { staleMessage, staleSources } from "../../scripts/build.ts";

export default async function checkDistIsFresh(): Promise<void> {
  const stale = await staleSources();
  if (stale.length > 0) throw new Error(staleMessage(stale));
}
