/**
 * Headless Chromium (Debian's package, driven by playwright-core) for the live view tests. Every
 * request the page makes is recorded, and one to any host but 127.0.0.1 is refused, so a test can
 * assert that the page needs nothing from elsewhere.
 */
import { existsSync } from "node:fs";
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type Browser, type Page } from "playwright-core";

/** Debian's chromium (scripts/setup.sh installs it for the tests). */
export const CHROMIUM = "/usr/bin/chromium";

/** A browser with one page. */
export interface TestBrowser {
  browser: Browser;
  page: Page;
  /** Every URL the page requested. */
  requested: string[];
  close(): Promise<void>;
}

/**
 * Starts headless Chromium, inside network namespace `netnsPath` when given (where the page's
 * server listens on that namespace's loopback; playwright talks to the browser over a pipe).
 */
export async function openBrowser(options: { netnsPath?: string } = {}): Promise<TestBrowser> {
  if (!existsSync(CHROMIUM))
    throw new Error(`${CHROMIUM} is missing: run scripts/setup.sh (Debian package chromium)`);
  const dir = await mkdtemp(join(tmpdir(), "sluice-browser-"));
  let executablePath = CHROMIUM;
  if (options.netnsPath) {
    executablePath = join(dir, "chromium-in-netns.sh");
    await writeFile(executablePath, `#!/bin/sh\nexec nsenter --net=${options.netnsPath} ${CHROMIUM} "$@"\n`);
    await chmod(executablePath, 0o755);
  }
  const browser = await chromium.launch({ executablePath, args: ["--no-sandbox"], headless: true });
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const requested: string[] = [];
  await page.route("**/*", async (route) => {
    const url = route.request().url();
    requested.push(url);
    if (new URL(url).hostname === "127.0.0.1") await route.continue();
    else await route.abort();
  });
  return {
    browser,
    page,
    requested,
    async close() {
      await browser.close().catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
