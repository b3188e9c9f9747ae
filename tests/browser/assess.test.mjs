// The assessment page in Debian's Chromium, against the real stack that
// tests/tests/browser.rs starts (PostgreSQL, the host, the .wasm
// components). That test seeds the data, passes it in ASSESS_* variables,
// and answers the control lines this script prints (`@@control stop-api`),
// so that a failed save happens because the server is really gone.

import assert from "node:assert/strict";
import { control, env, run, step } from "./harness.mjs";

const BASE = env("ASSESS_BASE_URL");
const TOKEN = env("ASSESS_TOKEN");
const BAD_TOKEN = env("ASSESS_BAD_TOKEN");
const ASSESSOR = env("ASSESS_ASSESSOR");
const FIXTURE = JSON.parse(env("ASSESS_FIXTURE"));
const ARTIFACTS = env("ASSESS_ARTIFACTS");

const [A1, A2] = FIXTURE.assets;
const card = (page, asset) => page.locator(`[data-asset-id="${asset.id}"]`);

await run(ARTIFACTS, async (page) => {
  const received = new Map(); // asset id -> status of its download
  page.on("response", (response) => {
    const match = new URL(response.url()).pathname.match(/^\/api\/assets\/(\d+)\/data$/);
    if (match) received.set(Number(match[1]), response.status());
  });

  step("the page loads and asks for a token");
  const first = await page.goto(`${BASE}/assess/`);
  assert.equal(first.status(), 200);
  assert.match(first.headers()["content-security-policy"], /default-src 'none'/);
  await page.getByLabel("Access token").waitFor();
  // Without a sign-in service, the page says how to sign in for development.
  await page.getByText("has no sign-in service configured").waitFor();
  assert.equal(await page.locator("#auth-sign-in").isHidden(), true);

  step("a malformed token and a forged one are refused in words");
  await page.getByLabel("Access token").fill("not a token");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").filter({ hasText: "does not look like a token" }).waitFor();
  await page.getByLabel("Access token").fill(BAD_TOKEN);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").filter({ hasText: "did not accept your token" }).waitFor();

  step("signing in shows the content and who rates");
  await page.getByLabel("Access token").fill(TOKEN);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByText(`Rating as ${ASSESSOR}`).waitFor();
  await page.getByLabel("Content", { exact: true }).selectOption(String(FIXTURE.content_id));
  await page.getByText(FIXTURE.fragments[0].native_text, { exact: true }).waitFor();
  await page.getByText(FIXTURE.fragments[0].body_text, { exact: true }).waitFor();
  const thaiFont = await page.locator(".thai").first().evaluate((e) => getComputedStyle(e).fontFamily);
  assert.match(thaiFont, /Noto Sans Thai/);

  step("every audio loads the exact bytes uploaded");
  for (const asset of FIXTURE.assets) {
    await card(page, asset).locator('audio[src^="blob:"]').waitFor({ state: "attached" });
    await page.waitForFunction((id) => {
      const a = document.querySelector(`[data-asset-id="${id}"] audio`);
      return a && a.readyState >= 1 && Number.isFinite(a.duration);
    }, asset.id);
  }
  // The digest the page computed over the bytes it plays, against the one
  // the harness computed over the file it uploaded.
  for (const asset of FIXTURE.assets) {
    const got = await card(page, asset).locator("audio").getAttribute("data-sha256");
    assert.equal(got, asset.sha256, `bytes of asset ${asset.id}`);
  }
  assert.equal(received.size, 3, "each clip was downloaded once");

  step("space plays the current audio to its end");
  await card(page, A1).focus();
  await page.keyboard.press("Space");
  await page.waitForFunction((id) => document.querySelector(`[data-asset-id="${id}"] audio`).ended, A1.id,
    { timeout: 20000 });
  const duration = await card(page, A1).locator("audio").evaluate((a) => a.duration);
  assert.ok(Math.abs(duration - FIXTURE.duration_secs) < 0.05, `duration ${duration}`);

  step("a rating typed as a digit is saved and the mean updates");
  await card(page, A1).getByText("Mean 2.00 from 1 rating").waitFor();
  await card(page, A1).focus();
  await page.keyboard.press("4");
  await card(page, A1).getByText("Saved: you rated it 4.").waitFor();
  await card(page, A1).getByText("Mean 3.00 from 2 ratings").waitFor();
  assert.equal(await card(page, A1).getByRole("button", { name: "4 of 5" }).getAttribute("aria-pressed"), "true");
  await page.getByRole("status").filter({ hasText: "Saved 4" }).waitFor();

  step("a second rating replaces the first: the count stays");
  await page.keyboard.press("5");
  await card(page, A1).getByText("Saved: you rated it 5.").waitFor();
  await card(page, A1).getByText("Mean 3.50 from 2 ratings").waitFor();

  step("notes are saved with the rating");
  await card(page, A1).getByLabel("Notes (optional)").fill("clear voice, tones right");
  await card(page, A1).getByLabel("Notes (optional)").press("Tab");
  await card(page, A1).getByText("Saved: you rated it 5.").waitFor();

  step("arrow keys move between audio and fragments");
  await card(page, A1).focus();
  await page.keyboard.press("ArrowDown");
  assert.equal(await page.evaluate(() => document.activeElement.dataset.assetId), String(A2.id));
  await page.keyboard.press("ArrowUp");
  assert.equal(await page.evaluate(() => document.activeElement.dataset.assetId), String(A1.id));
  await page.keyboard.press("ArrowRight");
  assert.equal(await page.evaluate(() => document.activeElement.dataset.assetId), String(FIXTURE.third_asset_id));

  step("after a reload the rating and notes are still there");
  await page.reload();
  await page.getByText(`Rating as ${ASSESSOR}`).waitFor();
  await card(page, A1).getByText("Mean 3.50 from 2 ratings").waitFor();
  assert.equal(await card(page, A1).getByRole("button", { name: "5 of 5" }).getAttribute("aria-pressed"), "true");
  assert.equal(await card(page, A1).getByLabel("Notes (optional)").inputValue(), "clear voice, tones right");

  step("screenshots at desktop and phone width");
  await card(page, A2).locator('audio[src^="blob:"]').waitFor({ state: "attached" });
  await page.screenshot({ path: `${ARTIFACTS}/assess-desktop.png`, fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.screenshot({ path: `${ARTIFACTS}/assess-phone.png`, fullPage: true });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(overflow <= 390, `the phone layout is ${overflow}px wide`);
  await page.setViewportSize({ width: 1280, height: 900 });

  step("with the API stopped, a rating fails in words and stays pending");
  await control("stop-api");
  await card(page, A2).focus();
  await page.keyboard.press("3");
  await page.getByRole("alert").filter({ hasText: "was not saved" }).waitFor();
  await page.getByRole("alert").filter({ hasText: "Could not reach the server" }).waitFor();
  await card(page, A2).getByText("Not saved:").waitFor();
  await page.getByText("1 rating is not saved yet").waitFor();
  const kept = await page.evaluate(() => JSON.parse(sessionStorage.getItem("assess.pending")));
  assert.equal(kept[A2.id]?.rank_score, "3.00", JSON.stringify(kept));

  step("once the API is back the pending rating saves by itself");
  await control("start-api");
  await card(page, A2).getByText("Saved: you rated it 3.").waitFor({ timeout: 20000 });
  await card(page, A2).getByText("Mean 3.00 from 1 rating").waitFor();
  await page.getByRole("alert").waitFor({ state: "hidden" });
  assert.ok(await page.locator("#pending").isHidden());
  await page.reload();
  await card(page, A2).getByText("Mean 3.00 from 1 rating").waitFor();
  assert.equal(await card(page, A2).getByRole("button", { name: "3 of 5" }).getAttribute("aria-pressed"), "true");
});
