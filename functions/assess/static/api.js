// The API client: the token, requests with it, and errors in words.

const TOKEN_KEY = "assess.token";

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/// The claims of a JWT, unverified: only for showing the role and expiry
/// before the server has said anything. The server decides what counts.
export function claims(jwt) {
  try {
    const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")));
  } catch {
    return null;
  }
}

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

/// Sends a request with the token; answers the parsed JSON (or the Response
/// for `raw`), or throws an ApiError that says what went wrong.
export async function request(method, path, { body, raw = false } = {}) {
  const headers = { Authorization: `Bearer ${token()}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
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
  if (response.ok) return raw ? response : response.json();
  throw await problemError(response);
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
