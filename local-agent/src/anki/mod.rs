//! Anki through AnkiConnect: [`connect`] is the add-on's wire protocol,
//! [`notes`] what a note holds and [`push`] the idempotent sync of the
//! mirror into the collection, phase by phase (`plan`, `check`, [`media`],
//! `update`, `add`), recorded in the store's card map (`anki_cards`).
//!
//! Its settings, policies included, are the config's Anki section
//! ([`AnkiSettings`], the `[anki]` table of the config file):
//! - `notes`: `both` (default), `fragments` or `contents`: one note per
//!   fragment (with its best audio) and/or one per learning content.
//! - `deleted_in_anki`: `leave` (default; the user deleted it on purpose,
//!   the row is marked `deleted_in_anki` and never re-created) or
//!   `recreate`.
//! - `deleted_upstream`: `tag` (default; the note gets the tag
//!   `thai-content::deleted`, its review history stays) or `leave`. The
//!   agent never deletes a note.

mod add;
mod check;
pub mod connect;
pub mod media;
pub mod notes;
mod plan;
pub mod push;
mod report;
mod session;
mod update;

pub use connect::{AnkiConnect, AnkiError};
pub use push::{PushOptions, push};
pub use report::{NoteFailure, PushError, PushReport};

pub use crate::config::{AnkiSettings, DeletedInAnki, DeletedUpstream, NotePolicy};

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
}
