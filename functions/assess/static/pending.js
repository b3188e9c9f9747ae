// Ratings not yet saved, kept in session storage so that neither a failed
// save nor a reload loses what the assessor chose or typed.

const KEY = "assess.pending";

function read() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY)) ?? {};
  } catch {
    return {};
  }
}

function write(all) {
  sessionStorage.setItem(KEY, JSON.stringify(all));
}

/// Every pending entry: { asset_id, rank_score, assessment_notes }.
export function all() {
  return Object.values(read());
}

export function get(assetId) {
  return read()[assetId] ?? null;
}

/// Records (or replaces) what should be saved for an asset. A score may be
/// null while only notes were typed: kept, but not sent until scored.
export function put(assetId, entry) {
  const current = read();
  current[assetId] = { ...current[assetId], ...entry, asset_id: assetId };
  write(current);
  return current[assetId];
}

/// Forgets an entry once the server holds exactly it; a newer edit made
/// while the save was in flight stays pending.
export function settle(assetId, sent) {
  const current = read();
  const now = current[assetId];
  if (now && now.rank_score === sent.rank_score && now.assessment_notes === sent.assessment_notes) {
    delete current[assetId];
    write(current);
  }
}
