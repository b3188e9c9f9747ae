//! What the mirror asks of Anki, decided before Anki is asked anything:
//! every note the mirror renders, compared with its card in `anki_cards`.

use std::collections::BTreeMap;

use super::notes::{self, Audio, MODEL_NAME, Rendered};
use super::report::{NoteFailure, PushReport};
use super::{AnkiSettings, DeletedInAnki, DeletedUpstream};
use crate::store::{Card, CardEntry, CardOutcome, CardStatus, Store, StoreError};

/// Why a note is added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Add {
    New,
    /// Deleted in Anki, added again by [`DeletedInAnki::Recreate`].
    Recreate,
    /// A legacy card made in another Anki profile.
    LegacyElsewhere,
}

/// One note to send.
#[derive(Debug, Clone)]
pub(super) struct Job {
    pub note: Rendered,
    pub card: Option<Card>,
    /// The fields sent: ours, or a legacy note's own names.
    pub fields: BTreeMap<String, String>,
    pub add: Add,
}

/// A card of another note type: written by the legacy application.
fn is_legacy(card: &Card) -> bool {
    card.note_type != MODEL_NAME
}

impl Job {
    /// The note, to be sent under the field names its card has.
    fn new(note: Rendered, card: Option<Card>) -> Job {
        let fields = match &card {
            Some(c) if is_legacy(c) => {
                let names: Vec<String> = c.fields.keys().cloned().collect();
                notes::map_to_legacy(&note.fields, &names)
            }
            _ => note.fields.clone(),
        };
        Job {
            note,
            card,
            fields,
            add: Add::New,
        }
    }

    pub fn key(&self) -> String {
        self.note.subject.key()
    }

    pub fn note_id(&self) -> Option<i64> {
        self.card.as_ref().and_then(|c| c.note_id)
    }

    pub fn is_legacy(&self) -> bool {
        self.card.as_ref().is_some_and(is_legacy)
    }

    /// To be added as a new note, which is always of the agent's type.
    pub fn into_add(self, add: Add) -> Job {
        Job {
            fields: self.note.fields.clone(),
            add,
            ..self
        }
    }

    /// The sound the sent fields play.
    pub fn audio(&self) -> Option<&Audio> {
        self.note
            .audio
            .as_ref()
            .filter(|a| self.fields.values().any(|v| v.contains(&a.file_name)))
    }

    pub fn entry(&self, outcome: CardOutcome) -> CardEntry<'_> {
        CardEntry {
            subject: self.note.subject,
            card: self.card.as_ref().map(|c| c.id),
            fields: &self.fields,
            outcome,
        }
    }

    pub fn fail(&self, report: &mut PushReport, error: String) -> CardEntry<'_> {
        report.failed.push(NoteFailure {
            key: self.key(),
            note_id: self.note_id(),
            error,
        });
        self.entry(CardOutcome::Failed {
            note_type: MODEL_NAME.to_owned(),
        })
    }
}

/// What the mirror asks of Anki.
#[derive(Debug, Default)]
pub(super) struct Plan {
    pub adds: Vec<Job>,
    pub updates: Vec<Job>,
    pub unchanged: Vec<Job>,
    /// Cards whose content or fragment left the mirror, to be tagged.
    pub gone: Vec<Card>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.adds.is_empty() && self.updates.is_empty() && self.gone.is_empty()
    }

    /// Files a note by what its card says was last sent.
    fn file(&mut self, job: Job, settings: &AnkiSettings) {
        let Some(card) = &job.card else {
            self.adds.push(job);
            return;
        };
        match (card.status, card.note_id) {
            (CardStatus::DeletedInAnki, _) => {
                if settings.deleted_in_anki.value == DeletedInAnki::Recreate {
                    self.adds.push(job.into_add(Add::Recreate));
                }
            }
            (_, None) => self.adds.push(job.into_add(Add::New)),
            (CardStatus::Synced, Some(_))
                if card.hash.as_deref() == Some(&notes::content_hash(&job.fields)) =>
            {
                self.unchanged.push(job)
            }
            _ => self.updates.push(job),
        }
    }
}

pub(super) fn plan(store: &Store, settings: &AnkiSettings) -> Result<Plan, StoreError> {
    let mut cards = store.anki_cards()?;
    let mut plan = Plan::default();
    for note in notes::render_all(store, settings.notes.value)? {
        let card = cards.remove(&note.subject.note_of());
        plan.file(Job::new(note, card), settings);
    }
    // Cards whose row left the mirror (not those a note policy hides).
    if settings.deleted_upstream.value == DeletedUpstream::Tag {
        for card in cards.into_values() {
            if card.note_id.is_some()
                && card.status != CardStatus::DeletedUpstream
                && !store.in_mirror(card.of)?
            {
                plan.gone.push(card);
            }
        }
        plan.gone.sort_by_key(|c| c.of);
    }
    Ok(plan)
}
