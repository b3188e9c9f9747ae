//! The push's policies, as the `[anki]` table names them.

use serde::{Deserialize, Serialize};

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
