// What the browser scripts share: their settings from the Rust test that
// runs them (tests/tests/browser.rs), the control lines it answers, numbered
// steps, and Debian's Chromium in a fresh profile.

import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

export function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run this through tests/tests/browser.rs`);
  return value;
}

const stdin = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
/// Asks the harness to do something (stop the API, ...) and waits until it is done.
export async function control(command) {
  process.stdout.write(`@@control ${command}\n`);
  const { value, done } = await stdin.next();
  assert.ok(!done && value.trim() === "ok", `the harness did not confirm ${command}: ${value}`);
}

let stepNo = 0;
const started = Date.now();
export function step(text) {
  stepNo += 1;
  console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${stepNo}. ${text}`);
}

/// Runs `scenario(page, problems)` in a fresh Chromium profile; on failure
/// leaves a screenshot in `artifacts`. Exits the process with its outcome.
export async function run(artifacts, scenario) {
  mkdirSync(artifacts, { recursive: true });
  // A fresh profile each run: nothing cached or remembered from another.
  const userDataDir = mkdtempSync(join(tmpdir(), "assess-chromium-"));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
    headless: true,
    // This machine's closed network makes Chromium's own background
    // connections fail; these keep it from trying.
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
    viewport: { width: 1280, height: 900 },
  });
  const problems = [];
  let exitCode = 0;
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    page.setDefaultTimeout(15000);
    page.on("console", (msg) => {
      // A blocked request or script shows here first: the CSP must not get
      // in the page's way. Failed fetches (outages, refusals) are expected.
      if (msg.type() === "error" && !/ERR_CONNECTION_REFUSED|Failed to load resource/.test(msg.text())) {
        problems.push(`console: ${msg.text()}`);
      }
    });
    page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
    await scenario(page);
    assert.deepEqual(problems, [], "the page logged errors");
    step("done");
  } catch (err) {
    exitCode = 1;
    console.error(`FAILED at step ${stepNo}: ${err.stack ?? err}`);
    if (problems.length) console.error(`page problems: ${problems.join("\n")}`);
    try {
      const page = context.pages()[0];
      await page.screenshot({ path: `${artifacts}/failure.png`, fullPage: true });
      console.error(`screenshot of the failure: ${artifacts}/failure.png`);
    } catch {
      // The browser itself may be gone.
    }
  } finally {
    await context.close();
    rmSync(userDataDir, { recursive: true, force: true });
  }
  process.exit(exitCode);
}
