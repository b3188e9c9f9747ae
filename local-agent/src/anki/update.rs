//! Notes Anki has already: changed fields updated in place, and notes whose
//! row left the mirror tagged (never deleted).

use std::collections::BTreeMap;

use serde_json::json;

use super::DeletedInAnki;
use super::connect::{Action, AnkiError, Batcher};
use super::notes::DELETED_TAG;
use super::plan::Job;
use super::report::{NoteFailure, PushError};
use super::session::Session;
use crate::store::{Card, CardEntry, CardOutcome};

/// Changed notes, in place.
pub(super) fn update(s: &mut Session<'_, '_>, jobs: &[Job]) -> Result<(), PushError> {
    let ready = s.without_sound(jobs)?;
    s.tally.add(jobs.len() - ready.len());
    let actions = ready.into_iter().map(|job| {
        let action = Action::new(
            "updateNoteFields",
            json!({"note": {"id": job.note_id(), "fields": job.fields}}),
        );
        (action, job)
    });
    for batch in Batcher::pack(actions) {
        let (answered, closed) = s.anki.multi_tagged(batch)?;
        let entries: Vec<CardEntry<'_>> = answered
            .into_iter()
            .map(|(answer, job)| updated(s, job, answer))
            .collect();
        s.record(&entries)?;
        s.tally.add(entries.len());
        closed.check()?;
    }
    Ok(())
}

/// What Anki's answer to one update means for its card.
fn updated<'j>(
    s: &mut Session<'_, '_>,
    job: &'j Job,
    answer: Result<serde_json::Value, AnkiError>,
) -> CardEntry<'j> {
    let card = job.card.as_ref().expect("an update has a card");
    match answer {
        Ok(_) => {
            s.report.updated += 1;
            job.entry(CardOutcome::Synced {
                note_id: card.note_id.unwrap_or_default(),
                deck: card.deck.clone(),
                note_type: card.note_type.clone(),
            })
        }
        Err(AnkiError::NoteNotFound(_))
            if s.settings.deleted_in_anki.value == DeletedInAnki::Leave =>
        {
            s.report.deleted_in_anki += 1;
            job.entry(CardOutcome::DeletedInAnki)
        }
        Err(e) => job.fail(s.report, e.to_string()),
    }
}

/// Contents deleted upstream: tagged, never deleted.
pub(super) fn tag_gone(s: &mut Session<'_, '_>, gone: &[Card]) -> Result<(), PushError> {
    if gone.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = gone.iter().filter_map(|c| c.note_id).collect();
    match s
        .anki
        .invoke("addTags", json!({"notes": ids, "tags": DELETED_TAG}))
    {
        Ok(_) => {
            let no_fields = BTreeMap::new();
            let entries: Vec<CardEntry<'_>> = gone
                .iter()
                .map(|card| CardEntry {
                    subject: card.of.into(),
                    card: Some(card.id),
                    fields: &no_fields,
                    outcome: CardOutcome::DeletedUpstream,
                })
                .collect();
            s.record(&entries)?;
            s.report.tagged_deleted = gone.len();
        }
        Err(e) => {
            for card in gone {
                s.report.failed.push(NoteFailure {
                    key: card.of.key(),
                    note_id: card.note_id,
                    error: format!("tagging as deleted: {e}"),
                });
            }
        }
    }
    Ok(())
}
