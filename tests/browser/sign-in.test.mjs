// Signing in to the assessment page with the real Supabase Auth (GoTrue, as
// ../shared/gotrue runs it), in Debian's Chromium, against the real stack
// that tests/tests/browser.rs starts with the app pointed at that Auth:
// sign-up, password, emailed code (read through Auth's admin API, as no mail
// leaves this machine), the messages for what goes wrong, a session that
// survives reloads, token renewals and an Auth outage without losing a
// rating, and sign-out.

import assert from "node:assert/strict";
import { control, env, run, step } from "./harness.mjs";

const BASE = env("ASSESS_BASE_URL");
const AUTH_URL = env("ASSESS_AUTH_URL");
const SERVICE_KEY = env("ASSESS_AUTH_SERVICE_KEY");
const PUBLISHABLE_KEY = env("ASSESS_AUTH_PUBLISHABLE_KEY");
const TOKEN_SECS = Number(env("ASSESS_AUTH_TOKEN_SECS"));
const EMAIL = env("ASSESS_ASSESSOR");
const UNCONFIRMED = env("ASSESS_UNCONFIRMED");
const FIXTURE = JSON.parse(env("ASSESS_FIXTURE"));
const ARTIFACTS = env("ASSESS_ARTIFACTS");
const PASSWORD = "a long passphrase for the test";

const [A1, A2] = FIXTURE.assets;
const card = (page, asset) => page.locator(`[data-asset-id="${asset.id}"]`);
const button = (page, name) => page.getByRole("button", { name, exact: true });
const alertWith = (page, text) => page.getByRole("alert").filter({ hasText: text });
const session = (page) => page.evaluate(() => JSON.parse(sessionStorage.getItem("assess.session")));

/// Auth's admin API, with the service key, as an operator would use it.
async function admin(path, body) {
  const response = await fetch(`${AUTH_URL}${path}`, {
    method: "POST",
    headers: { Authorization: `Bearer ${SERVICE_KEY}`, apikey: SERVICE_KEY, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const answer = await response.json();
  assert.ok(response.ok, `${path}: ${response.status} ${JSON.stringify(answer)}`);
  return answer;
}

async function signInWithPassword(page, email, password) {
  await page.getByLabel("Email", { exact: true }).fill(email);
  await page.getByLabel("Password", { exact: true }).fill(password);
  await button(page, "Sign in").click();
}

async function rate(page, asset, score) {
  await card(page, asset).getByRole("button", { name: `${score} of 5` }).click();
}

await run(ARTIFACTS, async (page) => {
  // Every request the page makes to Auth, to check the apikey it sends.
  const authCalls = [];
  page.on("request", (request) => {
    if (request.url().startsWith(AUTH_URL)) {
      authCalls.push({ url: request.url(), method: request.method(), apikey: request.headers().apikey });
    }
  });
  const rankingStatuses = [];
  page.on("response", (response) => {
    if (new URL(response.url()).pathname === "/api/rankings/mine" && response.request().method() === "PUT") {
      rankingStatuses.push(response.status());
    }
  });

  step("the page learns where Auth is and offers email sign-in");
  const first = await page.goto(`${BASE}/assess/`);
  assert.equal(first.status(), 200);
  const policy = first.headers()["content-security-policy"];
  assert.match(policy, new RegExp(`connect-src 'self' ${new URL(AUTH_URL).origin};`), policy);
  await page.getByLabel("Email", { exact: true }).waitFor();
  await page.getByText(`Sign in with your account at ${new URL(AUTH_URL).host}`).waitFor();
  await button(page, "Create account").waitFor(); // this project lets people sign up
  assert.ok(await page.locator("#sign-in-form").isHidden(), "no token box when Auth is configured");

  step("screenshots of the sign-in screen at desktop and phone width");
  await page.screenshot({ path: `${ARTIFACTS}/sign-in-desktop.png`, fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.screenshot({ path: `${ARTIFACTS}/sign-in-phone.png`, fullPage: true });
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 390, `the phone layout is ${width}px wide`);
  await page.setViewportSize({ width: 1280, height: 900 });

  step("an empty field is named before anything is sent");
  const sentBefore = authCalls.length;
  await button(page, "Sign in").click();
  await alertWith(page, "Enter your email address").waitFor();
  assert.equal(authCalls.length, sentBefore, "nothing went to Auth");

  step("signing up creates the account and signs in");
  await page.getByLabel("Email", { exact: true }).fill(EMAIL);
  await page.getByLabel("Password", { exact: true }).fill(PASSWORD);
  await button(page, "Create account").click();
  await page.getByText(`Rating as ${EMAIL}`).waitFor();
  const signedUp = await session(page);
  assert.ok(signedUp.access_token && signedUp.refresh_token, JSON.stringify(signedUp));

  step("signing out ends the session at Auth and in the tab");
  await button(page, "Sign out").click();
  await page.getByLabel("Email", { exact: true }).waitFor();
  await page.getByRole("status").filter({ hasText: "Signed out." }).waitFor();
  assert.deepEqual(await page.evaluate(() => Object.keys(sessionStorage)), []);
  assert.ok(authCalls.some((c) => c.method === "POST" && c.url.endsWith("/logout")), "POST /logout");
  const reused = await fetch(`${AUTH_URL}/token?grant_type=refresh_token`, {
    method: "POST",
    headers: { apikey: PUBLISHABLE_KEY, "Content-Type": "application/json" },
    body: JSON.stringify({ refresh_token: signedUp.refresh_token }),
  });
  assert.equal(reused.status, 400, "the signed-out session's refresh token is dead");

  step("a wrong password and an unconfirmed address get their own messages");
  await signInWithPassword(page, EMAIL, "not the password");
  await alertWith(page, "Wrong email or password").waitFor();
  await admin("/admin/users", { email: UNCONFIRMED, password: PASSWORD, email_confirm: false });
  await signInWithPassword(page, UNCONFIRMED, PASSWORD);
  await alertWith(page, "not confirmed").waitFor();
  assert.ok(await page.locator("#workspace").isHidden());

  step("signing in with the password");
  await signInWithPassword(page, EMAIL, PASSWORD);
  await page.getByText(`Rating as ${EMAIL}`).waitFor();
  assert.ok(await page.getByRole("alert").isHidden());
  await button(page, "Sign out").click();
  await page.getByLabel("Email", { exact: true }).waitFor();

  step("signing in with a code sent by email; asking again too soon is refused in words");
  await page.getByLabel("Email", { exact: true }).fill(EMAIL);
  await page.getByLabel("Password", { exact: true }).fill("");
  await button(page, "Email me a code").click();
  await page.getByLabel("Code from the email").waitFor();
  await button(page, "Email me a code").click();
  await alertWith(page, "Too many emails").waitFor();
  // No mail leaves this machine: the code comes from the admin API.
  const link = await admin("/admin/generate_link", { type: "magiclink", email: EMAIL });
  assert.match(link.email_otp, /^\d{6}$/);
  await page.getByLabel("Code from the email").fill("000000");
  await button(page, "Sign in with the code").click();
  await alertWith(page, "wrong or has expired").waitFor();
  await page.getByLabel("Code from the email").fill(link.email_otp);
  await button(page, "Sign in with the code").click();
  await page.getByText(`Rating as ${EMAIL}`).waitFor();
  const signedIn = await session(page);

  step("every request to Auth carried the publishable key");
  assert.ok(authCalls.length >= 8, `${authCalls.length} calls`);
  for (const call of authCalls) assert.equal(call.apikey, PUBLISHABLE_KEY, `${call.method} ${call.url}`);

  step("rating, then a reload: still signed in, the rating shown");
  await page.getByLabel("Content", { exact: true }).selectOption(String(FIXTURE.content_id));
  await card(page, A1).waitFor();
  await rate(page, A1, 4);
  await card(page, A1).getByText("Saved: you rated it 4.").waitFor();
  await page.reload();
  await page.getByText(`Rating as ${EMAIL}`).waitFor();
  assert.equal(await card(page, A1).getByRole("button", { name: "4 of 5" }).getAttribute("aria-pressed"), "true");

  step(`the access token (${TOKEN_SECS} s) is renewed before it expires; rating goes on past its expiry`);
  await page.waitForFunction((old) => {
    const s = JSON.parse(sessionStorage.getItem("assess.session"));
    return s && s.access_token !== old;
  }, signedIn.access_token, { timeout: TOKEN_SECS * 1000 + 10000 });
  const renewed = await session(page);
  assert.notEqual(renewed.refresh_token, signedIn.refresh_token, "Auth rotates the refresh token");
  const firstExp = JSON.parse(Buffer.from(signedIn.access_token.split(".")[1], "base64url")).exp;
  await page.waitForTimeout(Math.max(0, firstExp * 1000 + 1500 - Date.now()));
  await rate(page, A2, 5);
  await card(page, A2).getByText("Saved: you rated it 5.").waitFor();

  step("a token the API refuses is renewed and the rating sent again");
  await page.evaluate(() => {
    const s = JSON.parse(sessionStorage.getItem("assess.session"));
    const [head, body] = s.access_token.split(".");
    s.access_token = `${head}.${body}.bm90IHRoZSBzaWduYXR1cmU`; // signature damaged
    sessionStorage.setItem("assess.session", JSON.stringify(s));
  });
  rankingStatuses.length = 0;
  await rate(page, A2, 3);
  await card(page, A2).getByText("Saved: you rated it 3.").waitFor();
  assert.deepEqual(rankingStatuses, [401, 200]);

  step("with Auth down when the token expires, a rating waits and is saved once Auth is back");
  await control("stop-auth");
  await page.waitForFunction(() => {
    const s = JSON.parse(sessionStorage.getItem("assess.session"));
    return s.expires_at - Date.now() / 1000 < 3;
  }, null, { timeout: TOKEN_SECS * 1000 + 10000 });
  await rate(page, A1, 2);
  await alertWith(page, "Could not reach the sign-in service").waitFor();
  await card(page, A1).getByText("Not saved:").waitFor();
  await page.getByText("1 rating is not saved yet").waitFor();
  const kept = await page.evaluate(() => JSON.parse(sessionStorage.getItem("assess.pending")));
  assert.equal(kept[A1.id]?.rank_score, "2.00", JSON.stringify(kept));
  await control("start-auth");
  await card(page, A1).getByText("Saved: you rated it 2.").waitFor({ timeout: 30000 });
  assert.ok(await page.locator("#pending").isHidden());

  step("signing out clears the tab; with Auth gone, signing in says so");
  const last = await session(page);
  await button(page, "Sign out").click();
  await page.getByLabel("Email", { exact: true }).waitFor();
  assert.deepEqual(await page.evaluate(() => Object.keys(sessionStorage)), []);
  const dead = await fetch(`${AUTH_URL}/token?grant_type=refresh_token`, {
    method: "POST",
    headers: { apikey: PUBLISHABLE_KEY, "Content-Type": "application/json" },
    body: JSON.stringify({ refresh_token: last.refresh_token }),
  });
  assert.equal(dead.status, 400, "signed out at Auth too");
  await control("stop-auth");
  await signInWithPassword(page, EMAIL, PASSWORD);
  await alertWith(page, "Could not reach the sign-in service").waitFor();
});
