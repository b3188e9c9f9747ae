//! New notes: the deck and the agent's note type made ready, each note
//! added on its own inside a batch (`multi` of `addNote`, so that one
//! refused note does not stop the others), a note Anki has already under
//! its key taken over, and the added notes' cards moved into the deck
//! asked for (the add-on on Anki 26 puts them in `Default`).

use serde_json::{Value, json};

use super::AnkiSettings;
use super::check::model_names;
use super::connect::{Action, AnkiConnect, AnkiError, Batcher};
use super::notes::{self, MODEL_NAME};
use super::plan::{Add, Job};
use super::report::PushError;
use super::session::Session;
use crate::store::{CardEntry, CardOutcome};

/// The deck and the agent's note type, before notes are added.
pub(super) fn prepare_collection(
    anki: &AnkiConnect,
    settings: &AnkiSettings,
) -> Result<(), AnkiError> {
    anki.invoke("createDeck", json!({ "deck": settings.deck.value }))?;
    if !model_names(anki)?.contains(MODEL_NAME) {
        match anki.invoke("createModel", notes::model_params()) {
            Ok(_) | Err(AnkiError::ModelExists) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// New notes, each on its own inside a batch; then their cards into the
/// deck asked for.
pub(super) fn add(s: &mut Session<'_, '_>, jobs: &[Job]) -> Result<(), PushError> {
    let ready = s.without_sound(jobs)?;
    s.tally.add(jobs.len() - ready.len());
    let deck = s.settings.deck.value.clone();
    let actions = ready.into_iter().map(|job| {
        let action = Action::new(
            "addNote",
            json!({"note": {
                "deckName": deck,
                "modelName": MODEL_NAME,
                "fields": job.fields,
                "tags": job.note.tags,
                "options": {"allowDuplicate": false},
            }}),
        );
        (action, job)
    });
    for batch in Batcher::pack(actions) {
        let mut entries = Vec::new();
        let added = add_batch(s, batch, &mut entries)?;
        let note_ids: Vec<i64> = added.iter().map(|(_, id, _)| *id).collect();
        s.report.moved_to_deck += place_in_deck(s.anki, &note_ids, &deck)?;
        for (job, note_id, adopted) in added {
            match job.add {
                _ if adopted => s.report.adopted += 1,
                Add::New => s.report.added += 1,
                Add::Recreate => s.report.recreated += 1,
                Add::LegacyElsewhere => s.report.legacy_recreated += 1,
            }
            entries.push(job.entry(CardOutcome::Synced {
                note_id,
                deck: deck.clone(),
                note_type: MODEL_NAME.to_owned(),
            }));
        }
        s.record(&entries)?;
        s.tally.add(entries.len());
    }
    Ok(())
}

/// An added note: its job, its note id, and whether Anki had it already.
type Added<'j> = (&'j Job, i64, bool);

/// Sends one batch of `addNote`, taking over the notes Anki refused as
/// duplicates; the notes that failed go to `failed`.
fn add_batch<'j>(
    s: &mut Session<'_, '_>,
    batch: Vec<(Action, &'j Job)>,
    failed: &mut Vec<CardEntry<'j>>,
) -> Result<Vec<Added<'j>>, PushError> {
    let mut added = Vec::new();
    let mut known: Vec<&Job> = Vec::new();
    let (answered, closed) = s.anki.multi_tagged(batch)?;
    for (answer, job) in answered {
        match answer.map(|v| v.as_i64()) {
            Ok(Some(note_id)) => added.push((job, note_id, false)),
            Ok(None) => failed.push(job.fail(s.report, "addNote answered no note id".into())),
            Err(AnkiError::Duplicate) => known.push(job),
            Err(e) => failed.push(job.fail(s.report, e.to_string())),
        }
    }
    // Added but not yet in their deck: the next push finds them again.
    closed.check()?;
    for (job, found) in adopt(s.anki, &known)? {
        match found {
            Ok(note_id) => added.push((job, note_id, true)),
            Err(e) => failed.push(job.fail(s.report, e)),
        }
    }
    Ok(added)
}

/// A job and the note id Anki has for it, or why it cannot be taken over.
type Adopted<'j> = (&'j Job, Result<i64, String>);

/// The notes Anki refused as duplicates: Anki already has a note of the
/// agent's type with the same `Key`. One such note is this job's note (an
/// earlier push added it and stopped before recording it): it is updated
/// and taken over. Anything else is a failure the learner must resolve.
fn adopt<'j>(anki: &AnkiConnect, jobs: &[&'j Job]) -> Result<Vec<Adopted<'j>>, AnkiError> {
    let mut out = Vec::new();
    let mut updates = Vec::new();
    for (job, ids) in find_by_key(anki, jobs, &mut out)? {
        match ids.as_slice() {
            [id] => {
                let action = Action::new(
                    "updateNoteFields",
                    json!({"note": {"id": id, "fields": job.fields}}),
                );
                updates.push((action, (job, *id)));
            }
            ids => out.push((
                job,
                Err(format!(
                    "{}: Anki has {} notes of type {MODEL_NAME} with Key {}; keep one (delete \
                     the others in Anki's browser), then push again",
                    AnkiError::Duplicate,
                    ids.len(),
                    job.key()
                )),
            )),
        }
    }
    for batch in Batcher::pack(updates) {
        let (answered, closed) = anki.multi_tagged(batch)?;
        closed.check()?;
        for (answer, (job, id)) in answered {
            out.push((job, answer.map(|_| id).map_err(|e| e.to_string())));
        }
    }
    Ok(out)
}

/// The notes of the agent's type with each job's `Key`; a failed lookup
/// goes to `failed`.
fn find_by_key<'j>(
    anki: &AnkiConnect,
    jobs: &[&'j Job],
    failed: &mut Vec<Adopted<'j>>,
) -> Result<Vec<(&'j Job, Vec<i64>)>, AnkiError> {
    let searches = jobs.iter().map(|job| {
        let query = format!("\"note:{MODEL_NAME}\" \"Key:{}\"", job.key());
        (Action::new("findNotes", json!({ "query": query })), *job)
    });
    let mut found = Vec::new();
    for batch in Batcher::pack(searches) {
        let (answered, closed) = anki.multi_tagged(batch)?;
        closed.check()?;
        for (answer, job) in answered {
            match answer {
                Ok(ids) => found.push((job, ids_of(&ids))),
                Err(e) => failed.push((job, Err(format!("looking up its Key: {e}")))),
            }
        }
    }
    Ok(found)
}

fn ids_of(ids: &Value) -> Vec<i64> {
    ids.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_i64)
        .collect()
}

/// Moves the cards of `note_ids` that are not in `deck` into it, and checks
/// that they arrived; answers how many were moved.
fn place_in_deck(anki: &AnkiConnect, note_ids: &[i64], deck: &str) -> Result<usize, AnkiError> {
    if note_ids.is_empty() {
        return Ok(0);
    }
    let query = format!(
        "nid:{}",
        note_ids
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    let cards = anki.invoke("findCards", json!({ "query": query }))?;
    let misplaced = elsewhere(anki, &cards, deck)?;
    if misplaced.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = misplaced.iter().map(|(_, id)| *id).collect();
    anki.invoke("changeDeck", json!({ "cards": ids, "deck": deck }))?;
    let still = elsewhere(anki, &json!(ids), deck)?;
    if let Some((name, _)) = still.first() {
        return Err(AnkiError::Other(format!(
            "{} card(s) stayed in deck {name} after being moved to {deck}; move them in Anki's \
             browser (Change Deck), then push again",
            still.len()
        )));
    }
    Ok(ids.len())
}

/// The cards (of `cards`) in another deck than `deck`, with that deck.
fn elsewhere(
    anki: &AnkiConnect,
    cards: &Value,
    deck: &str,
) -> Result<Vec<(String, i64)>, AnkiError> {
    let decks = anki.invoke("getDecks", json!({ "cards": cards }))?;
    let Value::Object(decks) = decks else {
        return Err(AnkiError::Protocol(format!("getDecks answered {decks}")));
    };
    Ok(decks
        .into_iter()
        .filter(|(name, _)| name != deck)
        .flat_map(|(name, ids)| ids_of(&ids).into_iter().map(move |id| (name.clone(), id)))
        .collect())
}
