// Drives tradegraph's browser clients in headless Chromium (Debian's chromium, never a
// downloaded browser) against a running server, as a user would: every check loads the
// page, watches every network request, clicks and types, and keeps a screenshot.
//
//   TRADEGRAPH_URL=http://127.0.0.1:8000 node tests/browser/browser.mjs
//
// Environment: TRADEGRAPH_URL (required), CHROMIUM (default /usr/bin/chromium),
// BROWSER_ARTIFACTS (screenshots; default target/browser-artifacts).

import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { checks } from "./checks.mjs";

const base = process.env.TRADEGRAPH_URL;
if (!base) {
  console.error("set TRADEGRAPH_URL to a running tradegraph server");
  process.exit(2);
}
const artifacts = process.env.BROWSER_ARTIFACTS ?? "target/browser-artifacts";
mkdirSync(artifacts, { recursive: true });

// The flags keep Chromium from reaching out to Google's services, which this
// machine's closed network refuses (and a test must not depend on).
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});

let failed = 0;
for (const [name, check] of Object.entries(checks)) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const problems = [];
  page.on("requestfailed", (request) => {
    // A WebSocket closed by the page itself on navigation is not a failure.
    if (request.failure()?.errorText !== "net::ERR_ABORTED") {
      problems.push(`request failed: ${request.url()} (${request.failure()?.errorText})`);
    }
  });
  page.on("response", (response) => {
    if (response.status() >= 400) problems.push(`HTTP ${response.status()}: ${response.url()}`);
  });
  page.on("request", (request) => {
    const url = request.url();
    if (!url.startsWith(base) && !url.startsWith("data:") && !url.startsWith("blob:")) {
      problems.push(`request outside the server: ${url}`);
    }
  });
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  const started = Date.now();
  try {
    await check({ page, base, artifacts, shot: (label) => page.screenshot({ path: join(artifacts, `${name}-${label}.png`), fullPage: true }) });
    if (problems.length > 0) throw new Error(problems.join("\n"));
    console.log(`ok   ${name} (${Date.now() - started} ms)`);
  } catch (error) {
    failed += 1;
    await page.screenshot({ path: join(artifacts, `${name}-failure.png`), fullPage: true }).catch(() => {});
    console.error(`FAIL ${name}: ${error.message}`);
  }
  await context.close();
}
await browser.close();
console.log(`screenshots in ${artifacts}`);
process.exit(failed === 0 ? 0 : 1);
