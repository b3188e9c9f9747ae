// Signing in with the project's Supabase Auth, and the session that follows:
// an access token for the API and a refresh token that renews it before it
// expires. Both stay in this tab's session storage and go when it closes.
//
// The app says where Auth is (/assess/config.json); without an Auth URL the
// page is in development mode and takes a pasted token instead.

const SESSION_KEY = "assess.session";
/// Renew this long before the access token expires (at most; a short-lived
/// token is renewed when a quarter of its life is left).
const RENEW_MARGIN_SECS = 60;
/// A token this close to its expiry is renewed before a request goes out.
const STALE_SECS = 5;

let settings = null; // { url, publishable_key } of the project's Auth, or null
let renewTimer = null;
let renewing = null; // the one renewal under way, shared by all callers
let onEnded = () => {};

/// A failed call to Auth: `message` is for people, `code` is Auth's
/// `error_code` (or "unreachable"), `retryable` says whether trying again
/// later may work.
export class AuthError extends Error {
  constructor(message, { code = null, status = 0, retryable = false } = {}) {
    super(message);
    this.code = code;
    this.status = status;
    this.retryable = retryable;
  }
}

/// Reads the app's settings; answers whether sign-in goes through Auth.
export async function loadConfig() {
  let response;
  try {
    response = await fetch("/assess/config.json", { cache: "no-store" });
  } catch {
    throw new AuthError("Could not reach this site to read its sign-in settings; reload the page.",
      { code: "unreachable", retryable: true });
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    throw new AuthError(`This site's sign-in settings are wrong: ${body?.detail ?? `status ${response.status}`}. Tell its administrator.`,
      { status: response.status });
  }
  settings = body?.auth ?? null;
  return settings !== null;
}

export function configured() {
  return settings !== null;
}

/// Where people sign in, for the page to say so.
export function authHost() {
  return settings ? new URL(settings.url).host : null;
}

/// Called with a message when the session ends by itself (Auth no longer
/// knows the refresh token), so that the page asks to sign in again.
export function onSessionEnded(callback) {
  onEnded = callback;
}

// ----------------------------------------------------------------- session

export function session() {
  try {
    return JSON.parse(sessionStorage.getItem(SESSION_KEY));
  } catch {
    return null;
  }
}

export function accessToken() {
  return session()?.access_token ?? null;
}

/// Keeps the tokens of Auth's answer (or a pasted token, in development)
/// and schedules the renewal.
function keep({ access_token, refresh_token = null, expires_in = null, user = null }) {
  const claims = decodeClaims(access_token);
  const now = Date.now() / 1000;
  // The lifetime counted on this machine's clock, so a skewed clock does
  // not make the page renew too late; the token's own exp otherwise.
  const lifetime = expires_in ?? (claims?.exp ? claims.exp - (claims.iat ?? now) : null);
  const stored = {
    access_token,
    refresh_token,
    issued_at: now,
    expires_at: lifetime ? now + lifetime : (claims?.exp ?? null),
    email: user?.email ?? claims?.email ?? null,
  };
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(stored));
  scheduleRenewal();
  return stored;
}

/// A pasted token (development only): no refresh token, no renewal.
export function usePastedToken(token) {
  const claims = decodeClaims(token);
  sessionStorage.setItem(SESSION_KEY, JSON.stringify({
    access_token: token, refresh_token: null, issued_at: Date.now() / 1000,
    expires_at: claims?.exp ?? null, email: claims?.email ?? null,
  }));
}

export function forget() {
  clearTimeout(renewTimer);
  renewTimer = null;
  sessionStorage.removeItem(SESSION_KEY);
}

/// The claims of a JWT, unverified: only for showing the role and timing
/// renewals. The API decides what counts.
export function decodeClaims(jwt) {
  try {
    const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")));
  } catch {
    return null;
  }
}

function renewable() {
  return configured() && Boolean(session()?.refresh_token);
}

/// Renews the access token ahead of its expiry while the tab is open.
export function scheduleRenewal() {
  clearTimeout(renewTimer);
  const s = session();
  if (!renewable() || !s.expires_at) return;
  const lifetime = s.expires_at - (s.issued_at ?? s.expires_at);
  const margin = Math.min(RENEW_MARGIN_SECS, Math.max(STALE_SECS, lifetime / 4));
  const delayMs = Math.max(0, (s.expires_at - margin) * 1000 - Date.now());
  renewTimer = setTimeout(() => {
    renew().catch(() => {
      // Auth unreachable: the next request tries again before it goes out.
    });
  }, delayMs);
}

/// A new access token from the refresh token (Auth rotates the latter).
/// Concurrent callers share one renewal: a refresh token is good once.
export function renew() {
  if (!renewable()) {
    return Promise.reject(new AuthError("Your session has ended. Sign in again; unsaved ratings are kept.",
      { code: "session_missing" }));
  }
  renewing ??= (async () => {
    const refreshToken = session().refresh_token;
    try {
      const answer = await call("/token?grant_type=refresh_token", { body: { refresh_token: refreshToken } });
      return keep(answer).access_token;
    } catch (err) {
      if (!err.retryable) {
        // Signed out elsewhere, or the session was revoked: only signing
        // in again helps. Pending ratings stay in their own storage.
        forget();
        onEnded(err.message);
      }
      throw err;
    } finally {
      renewing = null;
    }
  })();
  return renewing;
}

/// The access token to send now: renewed first when it is about to expire
/// and can be renewed; null when there is none.
export async function freshAccessToken() {
  const s = session();
  if (!s?.access_token) return null;
  if (s.expires_at && s.expires_at - Date.now() / 1000 < STALE_SECS && renewable()) {
    return renew();
  }
  return s.access_token;
}

export function canRenew() {
  return renewable();
}

// ---------------------------------------------------------------- sign-in

/// Auth's settings for this project (is sign-up open?); null if unreadable.
export async function projectSettings() {
  try {
    return await call("/settings", { method: "GET" });
  } catch {
    return null;
  }
}

export async function signInWithPassword(email, password) {
  return keep(await call("/token?grant_type=password", { body: { email, password } }));
}

/// Creates the account. Answers the session when the project signs new
/// users in at once, or null when they must confirm their address first.
export async function signUp(email, password) {
  const answer = await call("/signup", { body: { email, password } });
  return answer.access_token ? keep(answer) : null;
}

/// Asks Auth to email a one-time code to an existing account.
export async function sendCode(email) {
  await call("/otp", { body: { email, create_user: false } });
}

export async function signInWithCode(email, code) {
  return keep(await call("/verify", { body: { type: "email", email, token: code } }));
}

/// Ends the session at Auth (its refresh tokens stop working) and here.
/// Answers an error message when Auth could not be told, else null.
export async function signOut() {
  const token = accessToken();
  const tell = configured() && session()?.refresh_token;
  forget();
  if (!tell) return null;
  try {
    await call("/logout", { token });
    return null;
  } catch (err) {
    // An expired access token means the session is ending anyway.
    return err.status === 401 || err.status === 403 ? null : err.message;
  }
}

// ------------------------------------------------------------------ wire

const MESSAGES = {
  invalid_credentials: "Wrong email or password. Check both, or sign in with a code sent by email.",
  email_not_confirmed: "This email address is not confirmed yet: open the link in the confirmation email first, or sign in with a code sent by email.",
  over_request_rate_limit: "Too many attempts from this browser for now. Wait a few minutes, then try again.",
  over_email_send_rate_limit: "Too many emails were sent to this address for now. Wait a few minutes before asking for another code.",
  signup_disabled: "This project does not let people create their own accounts. Ask its administrator for one.",
  email_provider_disabled: "This project does not sign people in by email. Ask its administrator.",
  otp_disabled: "No account uses this email address. Check it, or create an account with a password.",
  otp_expired: "That code is wrong or has expired. Ask for a new code.",
  user_already_exists: "An account with this email address exists already. Sign in instead.",
  email_exists: "An account with this email address exists already. Sign in instead.",
  email_address_invalid: "Auth does not accept this email address. Check it.",
  refresh_token_not_found: "Your session has ended (signed out, or it expired). Sign in again; unsaved ratings are kept.",
  refresh_token_already_used: "Your session has ended (signed out, or it expired). Sign in again; unsaved ratings are kept.",
  session_not_found: "Your session has ended (signed out, or it expired). Sign in again; unsaved ratings are kept.",
  session_expired: "Your session has ended (signed out, or it expired). Sign in again; unsaved ratings are kept.",
};

/// One request to Auth, with the project's publishable key as `apikey`
/// (what a hosted project's gateway asks for).
async function call(path, { method = "POST", body, token } = {}) {
  if (!settings) throw new AuthError("No sign-in service is configured.");
  const headers = {};
  if (settings.publishable_key) headers.apikey = settings.publishable_key;
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(`${settings.url}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
  } catch {
    throw new AuthError(
      `Could not reach the sign-in service (${authHost()}). Check your connection and try again; if it persists, tell the site's administrator.`,
      { code: "unreachable", retryable: true },
    );
  }
  if (response.status === 204) return {};
  const answer = await response.json().catch(() => null);
  if (response.ok) return answer ?? {};
  // Auth answers {code: 400, error_code, msg}, or {code, message} when a
  // newer API version is asked for, or OAuth's {error, error_description}.
  const code = answer?.error_code ?? (typeof answer?.code === "string" ? answer.code : null) ?? answer?.error ?? null;
  const said = answer?.msg ?? answer?.message ?? answer?.error_description ?? null;
  const status = response.status;
  let message = MESSAGES[code];
  if (!message && status === 429) message = MESSAGES.over_request_rate_limit;
  if (!message && code === "weak_password") message = `Choose a stronger password: ${said ?? "this one is too weak"}.`;
  if (!message && status >= 500) message = `The sign-in service had a problem (status ${status}). Try again in a moment.`;
  if (!message) message = said ? `Sign-in failed: ${said}.` : `Sign-in failed (status ${status}).`;
  throw new AuthError(message, { code, status, retryable: status >= 500 || status === 429 });
}
