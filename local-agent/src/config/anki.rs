//! The Anki section: where AnkiConnect listens, the deck, and the push's
//! policies (the `[anki]` table; only URL and deck also have flags, on
//! `anki push` and `sync`).

use super::file::AnkiFileConfig;
use super::policy::{DeletedInAnki, DeletedUpstream, NotePolicy};
use super::{ConfigError, Key, Layers, Shown, Sourced, from_file, redacted, show};

pub const ENV_ANKI_URL: &str = "THAI_AGENT_ANKI_URL";
pub const ENV_ANKI_KEY: &str = "THAI_AGENT_ANKI_KEY";
pub const ENV_ANKI_DECK: &str = "THAI_AGENT_ANKI_DECK";
pub const ENV_ANKI_TIMEOUT: &str = "THAI_AGENT_ANKI_TIMEOUT";

pub const DEFAULT_ANKI_URL: &str = "http://127.0.0.1:8765";
pub const DEFAULT_DECK: &str = "Thai";
/// Seconds the agent waits for Anki to answer one request: Anki answers on
/// its main thread, which a large media file keeps busy.
pub const DEFAULT_ANKI_TIMEOUT_SECS: u64 = 120;

const URL: Key = Key {
    what: "the Anki URL",
    flag: Some("--anki-url"),
    env: ENV_ANKI_URL,
    file: "[anki] url",
};
const API_KEY: Key = Key {
    what: "AnkiConnect's key",
    flag: None,
    env: ENV_ANKI_KEY,
    file: "[anki] api_key",
};
const DECK: Key = Key {
    what: "the deck",
    flag: Some("--deck"),
    env: ENV_ANKI_DECK,
    file: "[anki] deck",
};
const TIMEOUT: Key = Key {
    what: "the Anki timeout",
    flag: None,
    env: ENV_ANKI_TIMEOUT,
    file: "[anki] timeout",
};

/// The Anki settings in effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnkiSettings {
    pub url: Sourced<String>,
    pub api_key: Option<Sourced<String>>,
    pub deck: Sourced<String>,
    /// Seconds to wait for Anki to answer one request.
    pub timeout: Sourced<u64>,
    pub notes: Sourced<NotePolicy>,
    pub deleted_in_anki: Sourced<DeletedInAnki>,
    pub deleted_upstream: Sourced<DeletedUpstream>,
}

impl AnkiSettings {
    pub(super) fn resolve(l: &Layers<'_>, file: &AnkiFileConfig) -> Result<Self, ConfigError> {
        Ok(AnkiSettings {
            url: l
                .value(&URL, l.flags.anki_url.as_ref(), file.url.as_ref())
                .unwrap_or_else(|| Sourced::built_in(DEFAULT_ANKI_URL.to_owned())),
            api_key: l.value(&API_KEY, None, file.api_key.as_ref()),
            deck: l
                .value(&DECK, l.flags.anki_deck.as_ref(), file.deck.as_ref())
                .unwrap_or_else(|| Sourced::built_in(DEFAULT_DECK.to_owned())),
            timeout: l.seconds(&TIMEOUT, None, file.timeout, DEFAULT_ANKI_TIMEOUT_SECS)?,
            notes: from_file(file.notes).unwrap_or_default(),
            deleted_in_anki: from_file(file.deleted_in_anki).unwrap_or_default(),
            deleted_upstream: from_file(file.deleted_upstream).unwrap_or_default(),
        })
    }

    pub(super) fn shown(&self) -> Vec<Shown> {
        vec![
            show("url", Some(&self.url)),
            redacted("api_key", self.api_key.as_ref()),
            show("deck", Some(&self.deck)),
            show("timeout", Some(&self.timeout)),
            show("notes", Some(&self.notes)),
            show("deleted_in_anki", Some(&self.deleted_in_anki)),
            show("deleted_upstream", Some(&self.deleted_upstream)),
        ]
    }
}
