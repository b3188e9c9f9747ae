// The assessment page: sign in with the project's Supabase Auth (email and
// password, or a code sent by email), choose content, listen to each
// fragment's audio and rate it from 0 to 5. Ratings go through
// PUT /api/rankings/mine, so a second rating updates the first.

import * as api from "./api.js";
import * as auth from "./auth.js";
import * as pending from "./pending.js";

const $ = (id) => document.getElementById(id);
const RETRY_EVERY_MS = 3000;
const AUDIO_LOADS_AT_ONCE = 3;

const state = {
  contents: [],
  tree: null, // the content with its fragments and assets (expand=fragments)
  mine: new Map(), // asset id -> my ranking row
  who: null,
  cards: new Map(), // asset id -> { el, asset, fragment, label }
  blobUrls: [],
  inFlight: new Set(),
  failures: new Map(), // asset id -> ApiError of the last attempt
  current: null, // asset id the shortcuts act on
  generation: 0, // bumped on each render, so stale audio loads are dropped
};

// ---------------------------------------------------------------- messages

function say(text) {
  $("status").textContent = text;
}

function alertText(text) {
  const el = $("alert");
  el.textContent = text ?? "";
  el.hidden = !text;
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

// ----------------------------------------------------------------- sign-in

function showSignIn(message) {
  $("workspace").hidden = true;
  $("who").hidden = true;
  $("sign-in").hidden = false;
  if (message) alertText(message);
  const first = auth.configured() ? ($("email").value ? $("password") : $("email")) : $("token");
  first.focus();
}

/// Runs a sign-in step with its buttons disabled, showing Auth's refusal
/// in words; answers the step's result or null.
async function attempt(what, step) {
  const buttons = [...$("sign-in").querySelectorAll("button")];
  for (const b of buttons) b.disabled = true;
  say(what);
  try {
    return await step();
  } catch (err) {
    say("");
    alertText(err.message);
    return null;
  } finally {
    for (const b of buttons) b.disabled = false;
  }
}

function emailEntered() {
  const email = $("email").value.trim();
  if (!email || !email.includes("@")) {
    alertText("Enter your email address.");
    $("email").focus();
    return null;
  }
  return email;
}

async function signInWithPassword() {
  const email = emailEntered();
  if (!email) return;
  if (!$("password").value) {
    alertText("Enter your password, or ask for a code by email below.");
    $("password").focus();
    return;
  }
  const session = await attempt("Signing in…", () => auth.signInWithPassword(email, $("password").value));
  if (session) await signedIn();
}

async function signUp() {
  const email = emailEntered();
  if (!email) return;
  if (!$("password").value) {
    alertText("Choose a password for the new account.");
    $("password").focus();
    return;
  }
  const result = await attempt("Creating the account…", async () => ({
    session: await auth.signUp(email, $("password").value),
  }));
  if (!result) return;
  if (result.session) {
    await signedIn();
  } else {
    alertText(null);
    say(`Account created. Open the link in the email sent to ${email} to confirm the address, then sign in here.`);
  }
}

async function sendCode() {
  const email = emailEntered();
  if (!email) return;
  const sent = await attempt("Sending a code…", async () => {
    await auth.sendCode(email);
    return true;
  });
  if (!sent) return;
  alertText(null);
  $("code-step").hidden = false;
  $("code").value = "";
  $("code").focus();
  say(`A code is on its way to ${email}. Type it here; it works once and for a short while.`);
}

async function signInWithCode() {
  const email = emailEntered();
  if (!email) return;
  const code = $("code").value.replace(/\s+/g, "");
  if (!/^\d{6,10}$/.test(code)) {
    alertText("Type the code from the email: its digits only.");
    $("code").focus();
    return;
  }
  const session = await attempt("Signing in…", () => auth.signInWithCode(email, code));
  if (session) await signedIn();
}

async function signedIn() {
  alertText(null);
  $("password").value = "";
  $("code").value = "";
  $("code-step").hidden = true;
  await openWorkspace();
}

/// Development only (no Auth configured): a pasted token.
async function signInWithToken(raw) {
  const token = raw.trim().replace(/^Bearer\s+/i, "");
  const claims = auth.decodeClaims(token);
  if (!claims) {
    showSignIn("That does not look like a token: a token is three parts separated by dots.");
    return;
  }
  if (claims.exp && claims.exp * 1000 < Date.now()) {
    showSignIn("This token has expired; get a new one.");
    return;
  }
  auth.usePastedToken(token);
  alertText(null);
  await openWorkspace();
}

async function openWorkspace() {
  say("Loading content…");
  try {
    const all = await api.listAll("/api/content");
    const types = [...new Set(all.map((c) => c.content_type))].sort();
    fillSelect($("content-type"), [["", "All types"], ...types.map((t) => [t, t])],
      sessionStorage.getItem("assess.contentType") ?? "");
  } catch (err) {
    if (err.status === 401 || err.status === 403) {
      auth.forget();
      showSignIn(`Signing in failed. ${err.message}`);
    } else {
      showSignIn(`Could not load the content list. ${err.message}`);
    }
    say("");
    return;
  }
  // Ratings refused for want of a session go out again with the new one.
  for (const [id, err] of state.failures) if (err.status === 401) state.failures.delete(id);
  const session = auth.session();
  const role = auth.decodeClaims(session?.access_token)?.role;
  $("sign-in").hidden = true;
  $("workspace").hidden = false;
  $("who").hidden = false;
  $("who-name").textContent = session?.email ? `Signed in as ${session.email}` : `Signed in (${role ?? "unknown role"})`;
  if (role === "anon") {
    alertText("This token has the anon role: it can listen but not rate. Sign in with an authenticated token to rate.");
  }
  await loadContents();
}

async function signOut() {
  const unsaved = pending.all().length;
  if (unsaved && !confirm(`${unsaved} rating(s) are not saved yet and will be discarded. Sign out anyway?`)) {
    return;
  }
  const problem = await auth.signOut();
  sessionStorage.clear();
  clearFragments();
  updatePendingPanel();
  say(problem ? `Signed out in this tab. ${problem}` : "Signed out.");
  showSignIn();
}

function sessionEnded(message) {
  showSignIn(message);
}

/// After the API refused the session: sign in again, nothing pending is lost.
function signInAgain(err) {
  const again = "Sign in again; unsaved ratings are kept.";
  showSignIn(err.message.includes(again) ? err.message : `${err.message} ${again}`);
}

// ----------------------------------------------------------------- content

function fillSelect(select, options, chosen) {
  select.replaceChildren(...options.map(([value, label]) => el("option", { value, text: label })));
  if (options.some(([value]) => value === chosen)) select.value = chosen;
}

async function loadContents() {
  const type = $("content-type").value;
  sessionStorage.setItem("assess.contentType", type);
  try {
    state.contents = await api.listAll(
      type ? `/api/content?content_type=${encodeURIComponent(type)}` : "/api/content",
    );
  } catch (err) {
    alertText(`Could not load the content list. ${err.message}`);
    return;
  }
  const select = $("content");
  if (!state.contents.length) {
    fillSelect(select, [["", "No content of this type"]], "");
    clearFragments();
    $("fragments").append(el("p", { class: "empty", text: "There is no content to assess." }));
    say("");
    return;
  }
  fillSelect(
    select,
    state.contents.map((c) => [String(c.id), `${c.title} (${c.content_type})`]),
    sessionStorage.getItem("assess.content") ?? "",
  );
  await loadContent(select.value);
}

async function loadContent(id) {
  sessionStorage.setItem("assess.content", id);
  say("Loading fragments…");
  try {
    const [tree, mine] = await Promise.all([
      api.request("GET", `/api/content/${id}?expand=fragments`),
      api.request("GET", `/api/rankings/mine?content_id=${id}`),
    ]);
    state.tree = tree;
    state.mine = new Map(mine.items.map((r) => [r.asset_id, r])); // newest last wins
    state.who = mine.assessed_by;
    $("who-name").textContent = `Rating as ${mine.assessed_by}`;
  } catch (err) {
    if (err.status === 401) {
      signInAgain(err);
    } else {
      alertText(`Could not load this content. ${err.message}`);
    }
    say("");
    return;
  }
  const types = [...new Set(state.tree.fragments.map((f) => f.fragment_type))].sort();
  fillSelect($("fragment-type"), [["", "All types"], ...types.map((t) => [t, t])],
    sessionStorage.getItem("assess.fragmentType") ?? "");
  render();
}

function isRatedByMe(assetId) {
  return state.mine.has(assetId) || pending.get(assetId)?.rank_score != null;
}

function audioOf(fragment) {
  return fragment.assets.filter((a) => a.asset_type === "audio");
}

// ------------------------------------------------------------------ render

function clearFragments() {
  state.generation += 1;
  for (const url of state.blobUrls) URL.revokeObjectURL(url);
  state.blobUrls = [];
  state.cards.clear();
  $("fragments").replaceChildren();
}

function render() {
  clearFragments();
  const fragmentType = $("fragment-type").value;
  const unrankedOnly = $("unranked").checked;
  sessionStorage.setItem("assess.fragmentType", fragmentType);
  const shown = state.tree.fragments.filter((f) => {
    if (fragmentType && f.fragment_type !== fragmentType) return false;
    if (unrankedOnly) return audioOf(f).some((a) => !isRatedByMe(a.id));
    return true;
  });
  const main = $("fragments");
  main.append(el("h2", { class: "meta", text: `${state.tree.title}: ${shown.length} of ${state.tree.fragments.length} fragments` }));
  if (!shown.length) {
    main.append(el("p", { class: "empty", text: unrankedOnly
      ? "You have rated every audio here. Choose other content, or clear “Unranked only”."
      : "No fragment matches these filters." }));
  }
  for (const fragment of shown) main.append(renderFragment(fragment));
  state.current = [...state.cards.keys()][0] ?? null;
  updatePendingPanel();
  say(`Showing ${shown.length} fragment(s) of “${state.tree.title}”.`);
  loadAudio(state.generation);
}

function renderFragment(fragment) {
  const textId = `fragment-${fragment.id}-text`;
  const audio = audioOf(fragment);
  const list = el("ol", { class: "assets" });
  audio.forEach((asset, index) => {
    const label = `audio ${index + 1} of ${audio.length} for ${fragment.native_text}`;
    list.append(renderAsset(asset, fragment, index, audio.length, label));
  });
  return el("article", { class: "fragment", "aria-labelledby": textId, "data-fragment-id": fragment.id },
    el("p", { class: "thai", lang: "th", id: textId, text: fragment.native_text }),
    el("p", { class: "translation", text: fragment.body_text }),
    fragment.ipa ? el("p", { class: "ipa", text: `/${fragment.ipa}/`, "aria-label": `IPA: ${fragment.ipa}` }) : null,
    el("p", { class: "meta", text: fragment.fragment_type }),
    audio.length ? list : el("p", { class: "empty", text: "This fragment has no audio." }),
  );
}

function renderAsset(asset, fragment, index, total, label) {
  const id = asset.id;
  const prefix = `asset-${id}`;
  const voice = asset.asset_metadata?.voice ?? asset.asset_metadata?.engine ?? asset.created_by;
  const scores = el("div", { class: "scores" });
  for (let n = 0; n <= 5; n++) {
    scores.append(el("button", {
      type: "button", "data-score": n, "aria-pressed": "false", "aria-label": `${n} of 5`,
      text: String(n), onclick: () => rate(id, n),
    }));
  }
  const notes = el("textarea", { id: `${prefix}-notes`, rows: 2 });
  notes.addEventListener("input", () => noteChanged(id, notes.value));
  notes.addEventListener("change", () => save(id));
  const card = el("li", {
    class: "asset", tabindex: "0", "data-asset-id": id,
    "aria-labelledby": `${prefix}-title`, "aria-describedby": `${prefix}-summary ${prefix}-state`,
    onfocusin: () => setCurrent(id),
  },
    el("h3", { id: `${prefix}-title` }, `Audio ${index + 1} of ${total}`,
      voice ? el("span", { class: "meta", text: ` · ${voice}` }) : null),
    el("audio", { controls: true, preload: "auto", "aria-label": label }),
    el("p", { class: "audio-loading help", text: "Loading audio…" }),
    el("p", { class: "summary", id: `${prefix}-summary` }),
    el("fieldset", { class: "rating" }, el("legend", { text: "Your rating" }), scores),
    el("div", { class: "notes" }, el("label", { for: `${prefix}-notes`, text: "Notes (optional)" }), notes),
    el("p", { class: "save-state", id: `${prefix}-state` }),
  );
  state.cards.set(id, { el: card, asset, fragment, label });
  showSummary(id, asset.ranking);
  const waiting = pending.get(id);
  const mine = state.mine.get(id);
  notes.value = waiting?.assessment_notes ?? mine?.assessment_notes ?? "";
  showScore(id, waiting?.rank_score ?? mine?.rank_score ?? null);
  if (waiting) showSaveState(id, "pending", waiting.rank_score == null
    ? "Notes not saved: choose a score to save them."
    : "Not saved yet: waiting to be sent.");
  else if (mine) showSaveState(id, "saved", `Saved: you rated it ${Number(mine.rank_score)}.`);
  return card;
}

function showSummary(id, ranking) {
  const card = state.cards.get(id);
  if (!card) return;
  const count = ranking?.count ?? 0;
  card.el.querySelector(".summary").textContent = count
    ? `Mean ${ranking.mean} from ${count} rating${count === 1 ? "" : "s"}`
    : "Not ranked yet";
}

function showScore(id, score) {
  const card = state.cards.get(id);
  if (!card) return;
  for (const button of card.el.querySelectorAll(".scores button")) {
    const pressed = score != null && Number(button.dataset.score) === Number(score);
    button.setAttribute("aria-pressed", String(pressed));
  }
}

function showSaveState(id, kind, text) {
  const card = state.cards.get(id);
  if (!card) return;
  const p = card.el.querySelector(".save-state");
  p.className = `save-state ${kind}`;
  p.textContent = text;
}

// ------------------------------------------------------------------- audio

async function loadAudio(generation) {
  const queue = [...state.cards.keys()];
  const worker = async () => {
    while (queue.length && generation === state.generation) {
      const id = queue.shift();
      const card = state.cards.get(id);
      const note = card.el.querySelector(".audio-loading");
      try {
        const { url, sha256 } = await api.assetUrl(card.asset);
        if (generation !== state.generation) {
          URL.revokeObjectURL(url);
          return;
        }
        state.blobUrls.push(url);
        const audio = card.el.querySelector("audio");
        if (sha256) audio.dataset.sha256 = sha256;
        audio.src = url;
        note.remove();
      } catch (err) {
        note.className = "audio-error";
        note.textContent = `This audio could not be loaded. ${err.message}`;
      }
    }
  };
  await Promise.all(Array.from({ length: AUDIO_LOADS_AT_ONCE }, worker));
}

async function togglePlay(id) {
  const audio = state.cards.get(id)?.el.querySelector("audio");
  if (!audio) return;
  if (!audio.src) {
    say("This audio is still loading.");
    return;
  }
  if (audio.paused) {
    for (const other of document.querySelectorAll("audio")) if (other !== audio) other.pause();
    try {
      await audio.play();
      say(`Playing ${state.cards.get(id).label}.`);
    } catch (err) {
      say(`The browser would not play this audio: ${err.message}`);
    }
  } else {
    audio.pause();
    say("Paused.");
  }
}

// ------------------------------------------------------------------ rating

function rate(id, score) {
  const entry = pending.put(id, {
    rank_score: `${score}.00`,
    assessment_notes: notesOf(id),
  });
  showScore(id, entry.rank_score);
  save(id);
}

function notesOf(id) {
  const value = state.cards.get(id)?.el.querySelector("textarea").value ?? "";
  return value.trim() ? value : null;
}

let noteTimers = new Map();
function noteChanged(id, value) {
  const mine = state.mine.get(id);
  const score = pending.get(id)?.rank_score ?? mine?.rank_score ?? null;
  pending.put(id, { rank_score: score, assessment_notes: value.trim() ? value : null });
  showSaveState(id, "pending", score == null
    ? "Notes not saved: choose a score to save them."
    : "Notes not saved yet.");
  updatePendingPanel();
  clearTimeout(noteTimers.get(id));
  noteTimers.set(id, setTimeout(() => save(id), 1200));
}

async function save(id) {
  const entry = pending.get(id);
  if (!entry || entry.rank_score == null || state.inFlight.has(id)) return;
  state.inFlight.add(id);
  const sent = { rank_score: entry.rank_score, assessment_notes: entry.assessment_notes ?? null };
  showSaveState(id, "pending", "Saving…");
  updatePendingPanel();
  try {
    const row = await api.request("PUT", `/api/rankings/mine?asset_id=${id}`, { body: sent });
    pending.settle(id, sent);
    state.mine.set(id, row);
    state.failures.delete(id);
    const label = state.cards.get(id)?.label ?? `audio ${id}`;
    showSaveState(id, "saved", `Saved: you rated it ${Number(row.rank_score)}.`);
    say(`Saved ${Number(row.rank_score)} for ${label}.`);
    if (!state.failures.size) alertText(null);
    try {
      const summary = await api.request("GET", `/api/rankings/summary?asset_id=${id}`);
      showSummary(id, summary.items[0]);
    } catch {
      // The rating is saved; the mean shows on the next load.
    }
  } catch (err) {
    state.failures.set(id, err);
    const label = state.cards.get(id)?.label ?? `audio ${id}`;
    const keep = err.retryable ? "It is kept in this tab and will be retried." : "It is kept in this tab; change it or press Retry now.";
    showSaveState(id, "failed", `Not saved: ${err.message}`);
    alertText(`Your rating ${Number(sent.rank_score)} for ${label} was not saved. ${err.message} ${keep}`);
    if (err.status === 401) signInAgain(err);
  } finally {
    state.inFlight.delete(id);
    updatePendingPanel();
    // An edit made while this save was in flight goes out now.
    const now = pending.get(id);
    if (now && !state.failures.has(id) && (now.rank_score !== sent.rank_score || now.assessment_notes !== sent.assessment_notes)) {
      save(id);
    }
  }
}

function retryAll({ all = false } = {}) {
  if (!auth.accessToken()) return;
  for (const entry of pending.all()) {
    const failure = state.failures.get(entry.asset_id);
    if (all || !failure || failure.retryable) save(entry.asset_id);
  }
}

function updatePendingPanel() {
  const waiting = pending.all().filter((e) => e.rank_score != null).length;
  $("pending").hidden = waiting === 0;
  $("pending-text").textContent = waiting === 1
    ? "1 rating is not saved yet. It is kept in this tab and retried every few seconds."
    : `${waiting} ratings are not saved yet. They are kept in this tab and retried every few seconds.`;
}

// ---------------------------------------------------------------- keyboard

function setCurrent(id) {
  if (state.current != null) state.cards.get(state.current)?.el.classList.remove("current");
  state.current = id;
  state.cards.get(id)?.el.classList.add("current");
}

function move(step, byFragment) {
  const ids = [...state.cards.keys()];
  if (!ids.length) return;
  let index = Math.max(0, ids.indexOf(state.current));
  if (byFragment) {
    const fragmentOf = (i) => state.cards.get(ids[i]).fragment.id;
    const here = fragmentOf(index);
    let i = index;
    while (i >= 0 && i < ids.length && fragmentOf(i) === here) i += step;
    if (i < 0 || i >= ids.length) return;
    if (step < 0) { // to the first audio of the previous fragment
      const there = fragmentOf(i);
      while (i > 0 && fragmentOf(i - 1) === there) i -= 1;
    }
    index = i;
  } else {
    index = Math.min(ids.length - 1, Math.max(0, index + step));
  }
  const card = state.cards.get(ids[index]).el;
  card.focus();
  card.scrollIntoView({ block: "nearest" });
}

function isTyping(target) {
  if (target.isContentEditable) return true;
  const tag = target.tagName;
  if (tag === "TEXTAREA" || tag === "SELECT") return true;
  return tag === "INPUT" && !["checkbox", "radio", "button", "submit"].includes(target.type);
}

function onKey(event) {
  if ($("workspace").hidden || event.ctrlKey || event.metaKey || event.altKey) return;
  const target = event.target;
  if (isTyping(target) || target.tagName === "AUDIO") return;
  const id = state.current;
  if (/^[0-5]$/.test(event.key) && id != null) {
    event.preventDefault();
    rate(id, Number(event.key));
  } else if (event.key === " ") {
    // Buttons, links and checkboxes keep Space for themselves.
    if (["BUTTON", "A", "SUMMARY", "INPUT"].includes(target.tagName) || id == null) return;
    event.preventDefault();
    togglePlay(id);
  } else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    event.preventDefault();
    move(event.key === "ArrowDown" ? 1 : -1, false);
  } else if (event.key === "ArrowRight" || event.key === "ArrowLeft") {
    event.preventDefault();
    move(event.key === "ArrowRight" ? 1 : -1, true);
  }
}

// -------------------------------------------------------------------- start

async function start() {
  $("sign-in-form").addEventListener("submit", (event) => {
    event.preventDefault();
    signInWithToken($("token").value);
  });
  $("password-form").addEventListener("submit", (event) => {
    event.preventDefault();
    signInWithPassword();
  });
  $("sign-up").addEventListener("click", signUp);
  $("send-code").addEventListener("click", sendCode);
  $("code-form").addEventListener("submit", (event) => {
    event.preventDefault();
    signInWithCode();
  });
  $("sign-out").addEventListener("click", signOut);
  $("content-type").addEventListener("change", loadContents);
  $("content").addEventListener("change", (e) => loadContent(e.target.value));
  $("fragment-type").addEventListener("change", render);
  $("unranked").addEventListener("change", render);
  $("retry").addEventListener("click", () => retryAll({ all: true }));
  document.addEventListener("keydown", onKey);
  window.addEventListener("online", () => retryAll());
  auth.onSessionEnded(sessionEnded);
  setInterval(() => retryAll(), RETRY_EVERY_MS);
  updatePendingPanel();

  try {
    await auth.loadConfig();
  } catch (err) {
    alertText(err.message);
    return;
  }
  if (auth.configured()) {
    $("auth-sign-in").hidden = false;
    $("auth-where").textContent = `Sign in with your account at ${auth.authHost()}.`;
    // Offer sign-up only where the project lets people create accounts.
    auth.projectSettings().then((settings) => {
      $("sign-up").hidden = !settings || settings.disable_signup === true;
    });
  } else {
    $("sign-in-form").hidden = false;
  }
  if (auth.accessToken()) {
    auth.scheduleRenewal();
    openWorkspace();
  } else {
    showSignIn();
  }
}

start();
