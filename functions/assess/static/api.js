// The API client: requests with the session's access token (renewed when
// it is about to expire, and once more after a 401), errors in words.

import * as auth from "./auth.js";

/// A failed request: `message` is for people; `retryable` says whether the
/// same request may succeed later (the network or the database was down).
export class ApiError extends Error {
  constructor(message, { status = 0, retryable = false, retryAfter = null } = {}) {
    super(message);
    this.status = status;
    this.retryable = retryable;
    this.retryAfter = retryAfter;
  }
}

/// Sends a request with the access token; answers the parsed JSON (or the
/// Response for `raw`), or throws an ApiError that says what went wrong.
/// Nothing goes out without a token.
export async function request(method, path, { body, raw = false } = {}) {
  let response = await send(method, path, body, await currentToken());
  if (response.status === 401 && auth.canRenew()) {
    // The token may have expired in transit, or the tab slept past the
    // renewal: renew once and send the same request again.
    response = await send(method, path, body, await currentToken({ renew: true }));
  }
  if (response.ok) return raw ? response : response.json();
  throw await problemError(response);
}

async function currentToken({ renew = false } = {}) {
  let token;
  try {
    token = renew ? await auth.renew() : await auth.freshAccessToken();
  } catch (err) {
    // Auth unreachable: keep trying later. Session ended: sign in again.
    throw new ApiError(err.message, { status: err.retryable ? 0 : 401, retryable: err.retryable });
  }
  if (!token) throw new ApiError("You are not signed in.", { status: 401 });
  return token;
}

async function send(method, path, body, token) {
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  try {
    return await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch {
    throw new ApiError(
      "Could not reach the server (it may be down, or you are offline).",
      { retryable: true },
    );
  }
}

async function problemError(response) {
  let problem = null;
  try {
    problem = await response.json();
  } catch {
    // Not JSON: a proxy's or the host's own page; the status says enough.
  }
  const status = response.status;
  const parts = [];
  if (status === 401) {
    parts.push("The server did not accept your token");
  } else if (status === 403) {
    parts.push("Your token may not do this");
  } else if (problem?.title) {
    parts.push(problem.title);
  } else {
    parts.push(`The server answered ${status}`);
  }
  if (problem?.detail) parts.push(problem.detail);
  for (const e of problem?.errors ?? []) {
    if (!problem.detail?.includes(e.message)) parts.push(`${e.field}: ${e.message}`);
  }
  const retryAfter = Number(response.headers.get("Retry-After")) || null;
  return new ApiError(parts.join(": ") + ".", {
    status,
    retryable: status === 503 || status === 502 || status === 504 || status === 429,
    retryAfter,
  });
}

/// Every page of a list endpoint, up to `max` items.
export async function listAll(path, max = 2000) {
  const items = [];
  let cursor = null;
  do {
    const sep = path.includes("?") ? "&" : "?";
    const page = await request(
      "GET",
      `${path}${sep}limit=500${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`,
    );
    items.push(...page.items);
    cursor = page.next;
  } while (cursor && items.length < max);
  return items;
}

/// The bytes of an asset as a Blob URL, with their SHA-256. An <audio src>
/// cannot send the Authorization header, and a token in the URL would end
/// up in logs and history; so the page fetches the bytes with the header
/// and plays them from memory. Seeking works on a Blob; TTS clips are small.
/// The digest is checked against the asset's metadata, so an assessor never
/// judges audio that was damaged on the way.
export async function assetUrl(asset) {
  const response = await request("GET", `/api/assets/${asset.id}/data`, { raw: true });
  const blob = await response.blob();
  let sha256 = null;
  if (crypto.subtle) { // only in secure contexts (https, localhost)
    const digest = await crypto.subtle.digest("SHA-256", await blob.arrayBuffer());
    sha256 = [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
    if (asset.sha256 && sha256 !== asset.sha256) {
      throw new ApiError("The audio arrived damaged (its checksum does not match); reload to try again.");
    }
  }
  return { url: URL.createObjectURL(blob), sha256 };
}
