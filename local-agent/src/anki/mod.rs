//! Anki through AnkiConnect: [`connect`] is the add-on's wire protocol,
//! [`notes`] what a note holds and [`push`] the idempotent sync of the
//! mirror into the collection, recorded in `anki_cards`.
//!
//! Policies (all in the `[anki]` table of the config file):
//! - `notes`: `both` (default), `fragments` or `contents`: one note per
//!   fragment (with its best audio) and/or one per learning content.
//! - `deleted_in_anki`: `leave` (default; the user deleted it on purpose,
//!   the row is marked `deleted_in_anki` and never re-created) or
//!   `recreate`.
//! - `deleted_upstream`: `tag` (default; the note gets the tag
//!   `thai-content::deleted`, its review history stays) or `leave`. The
//!   agent never deletes a note.

pub mod cards;
pub mod connect;
pub mod media;
pub mod notes;
pub mod push;

use serde::{Deserialize, Serialize};

pub use connect::{AnkiConnect, AnkiError};
pub use push::{PushError, PushOptions, PushReport, push};

pub const DEFAULT_URL: &str = "http://127.0.0.1:8765";
pub const DEFAULT_DECK: &str = "Thai";
pub const ENV_ANKI_URL: &str = "THAI_AGENT_ANKI_URL";
pub const ENV_ANKI_KEY: &str = "THAI_AGENT_ANKI_KEY";
pub const ENV_ANKI_DECK: &str = "THAI_AGENT_ANKI_DECK";
pub const ENV_ANKI_TIMEOUT: &str = "THAI_AGENT_ANKI_TIMEOUT";
/// Seconds the agent waits for Anki to answer one request: Anki answers on
/// its main thread, which a large media file keeps busy.
pub const DEFAULT_TIMEOUT_SECS: u64 = 120;

/// How far a push is, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Media {
        files: usize,
        files_total: usize,
        bytes: u64,
        bytes_total: u64,
    },
    Notes {
        done: usize,
        total: usize,
    },
}

/// Which notes the mirror becomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotePolicy {
    /// One note per learning content and one per fragment.
    #[default]
    Both,
    /// One note per fragment, with the fragment's best audio.
    Fragments,
    /// One note per learning content.
    Contents,
}

impl NotePolicy {
    pub fn contents(self) -> bool {
        matches!(self, NotePolicy::Both | NotePolicy::Contents)
    }

    pub fn fragments(self) -> bool {
        matches!(self, NotePolicy::Both | NotePolicy::Fragments)
    }
}

/// What to do about a note the user deleted in Anki.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeletedInAnki {
    /// Mark the card `deleted_in_anki` and never send it again.
    #[default]
    Leave,
    /// Add it again (a new note, without the old review history).
    Recreate,
}

/// What to do about a note whose content or fragment was deleted upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeletedUpstream {
    /// Add the tag `thai-content::deleted`; the note and its reviews stay.
    #[default]
    Tag,
    /// Do nothing to the note.
    Leave,
}

/// The `[anki]` table of the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnkiFileConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deck: Option<String>,
    /// Seconds to wait for Anki to answer one request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notes: Option<NotePolicy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_in_anki: Option<DeletedInAnki>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_upstream: Option<DeletedUpstream>,
}

impl AnkiFileConfig {
    pub fn is_empty(&self) -> bool {
        self == &AnkiFileConfig::default()
    }
}

/// The Anki settings in effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnkiSettings {
    pub url: String,
    #[serde(skip)]
    pub api_key: Option<String>,
    pub deck: String,
    /// Seconds to wait for Anki to answer one request.
    pub timeout_secs: u64,
    pub notes: NotePolicy,
    pub deleted_in_anki: DeletedInAnki,
    pub deleted_upstream: DeletedUpstream,
}

impl AnkiSettings {
    /// Flags, then the environment, then the file, then the defaults.
    pub fn resolve(
        file: &AnkiFileConfig,
        url_flag: Option<String>,
        deck_flag: Option<String>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> AnkiSettings {
        let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        AnkiSettings {
            url: url_flag
                .or_else(|| env(ENV_ANKI_URL))
                .or_else(|| file.url.clone())
                .unwrap_or_else(|| DEFAULT_URL.to_owned()),
            api_key: env(ENV_ANKI_KEY).or_else(|| file.api_key.clone()),
            deck: deck_flag
                .or_else(|| env(ENV_ANKI_DECK))
                .or_else(|| file.deck.clone())
                .unwrap_or_else(|| DEFAULT_DECK.to_owned()),
            // A value that is not a positive number of seconds falls back
            // to the default rather than to no timeout at all.
            timeout_secs: env(ENV_ANKI_TIMEOUT)
                .and_then(|v| v.trim().parse().ok())
                .or(file.timeout)
                .filter(|secs| *secs > 0)
                .unwrap_or(DEFAULT_TIMEOUT_SECS),
            notes: file.notes.unwrap_or_default(),
            deleted_in_anki: file.deleted_in_anki.unwrap_or_default(),
            deleted_upstream: file.deleted_upstream.unwrap_or_default(),
        }
    }
}

/// Standard base64 with padding, as `storeMediaFile` takes its `data`.
pub(crate) fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn settings_resolve_flag_env_file_default() {
        let file = AnkiFileConfig {
            url: Some("http://file:1".into()),
            deck: Some("FileDeck".into()),
            deleted_in_anki: Some(DeletedInAnki::Recreate),
            ..Default::default()
        };
        let env = |n: &str| (n == ENV_ANKI_URL).then(|| "http://env:2".to_owned());
        let s = AnkiSettings::resolve(&file, None, Some("FlagDeck".into()), &env);
        assert_eq!(s.url, "http://env:2");
        assert_eq!(s.deck, "FlagDeck");
        assert_eq!(s.notes, NotePolicy::Both);
        assert_eq!(s.deleted_in_anki, DeletedInAnki::Recreate);
        assert_eq!(s.deleted_upstream, DeletedUpstream::Tag);
        let d = AnkiSettings::resolve(&AnkiFileConfig::default(), None, None, &|_| None);
        assert_eq!(d.url, DEFAULT_URL);
        assert_eq!(d.deck, DEFAULT_DECK);
        assert_eq!(d.timeout_secs, DEFAULT_TIMEOUT_SECS);
        let with_timeout = AnkiFileConfig {
            timeout: Some(30),
            ..Default::default()
        };
        let t = AnkiSettings::resolve(&with_timeout, None, None, &|_| None);
        assert_eq!(t.timeout_secs, 30);
        let env = |n: &str| (n == ENV_ANKI_TIMEOUT).then(|| "600".to_owned());
        assert_eq!(
            AnkiSettings::resolve(&with_timeout, None, None, &env).timeout_secs,
            600
        );
    }
}
