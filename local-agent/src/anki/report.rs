//! What a push did, and why it stopped.

use std::collections::BTreeSet;

use serde::Serialize;

use super::connect::AnkiError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    #[error(transparent)]
    Anki(#[from] AnkiError),
    #[error("the mirror is not complete yet ({0}): run `local-agent pull` first, then push again")]
    MirrorIncomplete(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PushReport {
    pub added: usize,
    pub updated: usize,
    pub unchanged: usize,
    /// Notes deleted in Anki and left alone by the policy (this push).
    pub deleted_in_anki: usize,
    /// Notes deleted in Anki and added again by the policy.
    pub recreated: usize,
    /// Legacy cards whose note type this Anki profile does not have (they
    /// were made in another profile): created anew as the agent's notes.
    pub legacy_recreated: usize,
    /// Those note types.
    pub legacy_note_types: BTreeSet<String>,
    /// Notes Anki had already under their key (an earlier push stopped
    /// before Anki's answer arrived): taken over and updated.
    pub adopted: usize,
    /// Cards Anki put in another deck than the one asked for, moved.
    pub moved_to_deck: usize,
    /// Notes tagged because their content left the mirror.
    pub tagged_deleted: usize,
    pub media_stored: usize,
    /// Sound files Anki had already (their names are their digests).
    pub media_present: usize,
    pub media_bytes: u64,
    /// Of the files stored, those written straight into Anki's media
    /// folder on this computer.
    pub media_into_folder: usize,
    pub failed: Vec<NoteFailure>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NoteFailure {
    pub key: String,
    pub note_id: Option<i64>,
    pub error: String,
}
