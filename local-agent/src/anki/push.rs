//! The push: the notes the mirror asks for, compared with what `anki_cards`
//! says was last sent, and only the difference sent to AnkiConnect, phase by
//! phase: [`plan`] (no request), [`check_notes`] (do the notes to update
//! still exist?), the deck and note type, the sound files ([`media`]),
//! [`update`], [`add`] (then [`place_in_deck`]), [`tag_gone`].
//!
//! - A note whose rendered fields hash to the recorded `content_hash` (and
//!   whose card is synced) sends nothing: a push with nothing new makes no
//!   request at all.
//! - A changed note is updated in place (`updateNoteFields`) after
//!   `notesInfo` confirmed it still exists (`[{}]` means the user deleted
//!   it: then [`DeletedInAnki`] decides).
//! - A legacy card (another note type, written by the old application) is
//!   updated through its own field names, never duplicated. When the Anki
//!   profile lacks its note type altogether, the note was made in another
//!   profile (a learner on a new computer): it is created anew as a note
//!   of the agent's type, and the report says so.
//! - A new note is added with `multi` of `addNote`, so that one refused
//!   note does not stop the others (`addNotes` would add none). Anki may
//!   put the cards elsewhere than the deck asked for (the add-on on Anki 26
//!   does): every added note's cards are checked and moved. A note Anki
//!   already has under its key (an earlier push stopped before Anki's
//!   answer arrived) is taken over and updated, not reported as a
//!   duplicate.
//! - A card whose content or fragment left the mirror is tagged
//!   `thai-content::deleted` (by [`DeletedUpstream`]); no note is ever
//!   deleted.
//!
//! Each request's outcome is written to `anki_cards` in one transaction as
//! soon as AnkiConnect answered it; a request Anki did not answer records
//! nothing, and what it may have done is found again by the next push.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use rusqlite::Connection;
use serde::Serialize;
use serde_json::{Value, json};

use super::cards::{self, Card, CardStatus, Entry, Outcome};
use super::connect::{API_VERSION, Action, AnkiConnect, AnkiError, Batcher, REQUEST_ACTIONS};
use super::media;
use super::notes::{self, Audio, DELETED_TAG, MODEL_NAME, Rendered};
use super::{AnkiSettings, DeletedInAnki, DeletedUpstream, Progress};
use crate::api::ApiClient;
use crate::store::{Store, StoreError, SyncPhase};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    #[error(transparent)]
    Anki(#[from] AnkiError),
    #[error("the mirror is not complete yet ({0}): run `local-agent pull` first, then push again")]
    MirrorIncomplete(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the store: {0}")]
    Sql(#[from] rusqlite::Error),
}

#[derive(Debug, Clone, Copy, Default)]
pub struct PushOptions {
    /// Also ask Anki whether every unchanged note still exists (one
    /// `notesInfo` request), to apply the deleted-in-Anki rule to them.
    pub verify: bool,
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
    pub failed: Vec<NoteFailure>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NoteFailure {
    pub key: String,
    pub note_id: Option<i64>,
    pub error: String,
}

/// Why a note is added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Add {
    New,
    /// Deleted in Anki, added again by [`DeletedInAnki::Recreate`].
    Recreate,
    /// A legacy card made in another Anki profile.
    LegacyElsewhere,
}

/// One note to send.
#[derive(Debug, Clone)]
struct Job {
    note: Rendered,
    card: Option<Card>,
    /// The fields sent: ours, or a legacy note's own names.
    fields: BTreeMap<String, String>,
    add: Add,
}

impl Job {
    fn key(&self) -> String {
        self.note.subject.key()
    }

    fn note_id(&self) -> Option<i64> {
        self.card.as_ref().and_then(|c| c.note_id)
    }

    fn is_legacy(&self) -> bool {
        self.card.as_ref().is_some_and(Card::is_legacy)
    }

    /// To be added as a new note, which is always of the agent's type.
    fn into_add(self, add: Add) -> Job {
        Job {
            fields: self.note.fields.clone(),
            add,
            ..self
        }
    }

    /// The sound the sent fields play.
    fn audio(&self) -> Option<&Audio> {
        self.note
            .audio
            .as_ref()
            .filter(|a| self.fields.values().any(|v| v.contains(&a.file_name)))
    }

    fn entry(&self, outcome: Outcome) -> Entry<'_> {
        Entry {
            subject: self.note.subject,
            card: self.card.as_ref().map(|c| c.id),
            fields: &self.fields,
            outcome,
        }
    }

    fn fail(&self, report: &mut PushReport, error: String) -> Entry<'_> {
        report.failed.push(NoteFailure {
            key: self.key(),
            note_id: self.note_id(),
            error,
        });
        self.entry(Outcome::Failed)
    }
}

/// What the mirror asks of Anki, decided before Anki is asked anything.
#[derive(Debug, Default)]
struct Plan {
    adds: Vec<Job>,
    updates: Vec<Job>,
    unchanged: Vec<Job>,
    /// Cards whose content or fragment left the mirror, to be tagged.
    gone: Vec<Card>,
}

fn plan(conn: &Connection, settings: &AnkiSettings) -> rusqlite::Result<Plan> {
    let mut cards = cards::read(conn)?;
    let mut plan = Plan::default();
    for note in notes::render_all(conn, settings.notes.value)? {
        let card = cards.remove(&note.subject.note_of());
        let fields = match &card {
            Some(c) if c.is_legacy() => {
                let names: Vec<String> = c.fields.keys().cloned().collect();
                notes::map_to_legacy(&note.fields, &names)
            }
            _ => note.fields.clone(),
        };
        let job = Job {
            note,
            card,
            fields,
            add: Add::New,
        };
        let Some(card) = &job.card else {
            plan.adds.push(job);
            continue;
        };
        match (card.status, card.note_id) {
            (CardStatus::DeletedInAnki, _) => {
                if settings.deleted_in_anki.value == DeletedInAnki::Recreate {
                    plan.adds.push(job.into_add(Add::Recreate));
                }
            }
            (_, None) => plan.adds.push(job.into_add(Add::New)),
            (CardStatus::Synced, Some(_))
                if card.hash.as_deref() == Some(&notes::content_hash(&job.fields)) =>
            {
                plan.unchanged.push(job)
            }
            _ => plan.updates.push(job),
        }
    }
    // Cards whose row left the mirror (not those a note policy hides).
    if settings.deleted_upstream.value == DeletedUpstream::Tag {
        for card in cards.into_values() {
            if card.note_id.is_some()
                && card.status != CardStatus::DeletedUpstream
                && !card.of.in_mirror(conn)?
            {
                plan.gone.push(card);
            }
        }
        plan.gone.sort_by_key(|c| c.of);
    }
    Ok(plan)
}

/// Pushes the mirror into Anki. `api` fetches audio bytes not cached yet;
/// without it, notes whose audio is not cached fail.
pub fn push(
    store: &mut Store,
    anki: &AnkiConnect,
    api: Option<&ApiClient>,
    settings: &AnkiSettings,
    options: PushOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<PushReport, PushError> {
    match store.sync_state()?.phase {
        SyncPhase::None => return Err(PushError::MirrorIncomplete("never pulled")),
        SyncPhase::Snapshot => return Err(PushError::MirrorIncomplete("inside a snapshot")),
        SyncPhase::Log => {}
    }
    let mut plan = plan(store.conn(), settings)?;
    let mut report = PushReport::default();
    if plan.adds.is_empty() && plan.updates.is_empty() && plan.gone.is_empty() && !options.verify {
        report.unchanged = plan.unchanged.len();
        return Ok(report);
    }

    // Anki must answer before anything is sent or recorded.
    if anki.version()? < API_VERSION {
        return Err(AnkiError::TooOld {
            url: anki.url().to_owned(),
        }
        .into());
    }
    let deleted = check_notes(anki, &mut plan, settings, options.verify, &mut report)?;
    if !plan.adds.is_empty() {
        prepare_collection(anki, settings)?;
    }

    // Audio first: a note is only sent once its sound file is in Anki.
    let mut seen = HashSet::new();
    let wanted: Vec<&Audio> = plan
        .updates
        .iter()
        .chain(&plan.adds)
        .filter_map(Job::audio)
        .filter(|a| seen.insert(a.file_name.clone()))
        .collect();
    let sent = media::send(store, anki, api, &wanted, progress)?;
    report.media_stored = sent.stored;
    report.media_present = sent.present;
    report.media_bytes = sent.bytes;

    let conn = store.conn();
    let mut notes = Tally {
        done: 0,
        total: plan.updates.len() + plan.adds.len(),
        progress,
    };
    update(
        anki,
        conn,
        &plan.updates,
        &sent.failed,
        settings,
        &mut report,
        &mut notes,
    )?;
    add(
        anki,
        conn,
        &plan.adds,
        &sent.failed,
        settings,
        &mut report,
        &mut notes,
    )?;
    tag_gone(anki, conn, &plan.gone, &mut report)?;
    // Only now: a push that stops early has not decided about these.
    let entries: Vec<Entry<'_>> = deleted
        .iter()
        .map(|j| j.entry(Outcome::DeletedInAnki))
        .collect();
    cards::record(conn, &entries)?;
    Ok(report)
}

/// Notes sent so far, for the progress display.
struct Tally<'p> {
    done: usize,
    total: usize,
    progress: &'p mut dyn FnMut(Progress),
}

impl Tally<'_> {
    fn add(&mut self, n: usize) {
        self.done += n;
        (self.progress)(Progress::Notes {
            done: self.done,
            total: self.total,
        });
    }
}

/// Asks Anki whether the notes to update (with `verify`, all recorded
/// notes) still exist; moves those that do not to the adds or, by the
/// policy, answers them as deleted in Anki (recorded at the end).
fn check_notes(
    anki: &AnkiConnect,
    plan: &mut Plan,
    settings: &AnkiSettings,
    verify: bool,
    report: &mut PushReport,
) -> Result<Vec<Job>, AnkiError> {
    let mut check = std::mem::take(&mut plan.updates);
    let verify_from = check.len();
    if verify {
        check.append(&mut plan.unchanged);
    } else {
        report.unchanged = plan.unchanged.len();
    }
    // A legacy note whose type the profile lacks cannot have been deleted
    // here: it was made in another profile.
    let models: HashSet<String> = if check.iter().any(Job::is_legacy) {
        model_names(anki)?
    } else {
        HashSet::new()
    };
    let mut deleted = Vec::new();
    let mut index = 0;
    let mut jobs = check.into_iter().peekable();
    while jobs.peek().is_some() {
        let chunk: Vec<Job> = jobs.by_ref().take(REQUEST_ACTIONS).collect();
        let ids: Vec<i64> = chunk
            .iter()
            .map(|j| j.note_id().unwrap_or_default())
            .collect();
        let infos = anki.invoke("notesInfo", json!({ "notes": ids }))?;
        let infos = infos.as_array().cloned().unwrap_or_default();
        for (job, info) in chunk
            .into_iter()
            .zip(infos.into_iter().chain(std::iter::repeat(Value::Null)))
        {
            let verifying = index >= verify_from;
            index += 1;
            if info.get("noteId").is_none() {
                let note_type = job
                    .card
                    .as_ref()
                    .map(|c| c.note_type.clone())
                    .unwrap_or_default();
                if job.is_legacy() && !models.contains(&note_type) {
                    report.legacy_note_types.insert(note_type);
                    plan.adds.push(job.into_add(Add::LegacyElsewhere));
                    continue;
                }
                match settings.deleted_in_anki.value {
                    DeletedInAnki::Leave => {
                        report.deleted_in_anki += 1;
                        deleted.push(job);
                    }
                    DeletedInAnki::Recreate => plan.adds.push(job.into_add(Add::Recreate)),
                }
                continue;
            }
            let mut job = job;
            if job.is_legacy() {
                // The note's own field names, as Anki has them now.
                let names: Vec<String> = info["fields"]
                    .as_object()
                    .map(|f| f.keys().cloned().collect())
                    .unwrap_or_default();
                job.fields = notes::map_to_legacy(&job.note.fields, &names);
            }
            if verifying {
                report.unchanged += 1;
            } else {
                plan.updates.push(job);
            }
        }
    }
    Ok(deleted)
}

fn model_names(anki: &AnkiConnect) -> Result<HashSet<String>, AnkiError> {
    Ok(anki
        .invoke("modelNames", json!({}))?
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str().map(str::to_owned))
        .collect())
}

/// The deck and the agent's note type, before notes are added.
fn prepare_collection(anki: &AnkiConnect, settings: &AnkiSettings) -> Result<(), AnkiError> {
    anki.invoke("createDeck", json!({ "deck": settings.deck.value }))?;
    if !model_names(anki)?.contains(MODEL_NAME) {
        match anki.invoke("createModel", notes::model_params()) {
            Ok(_) | Err(AnkiError::ModelExists) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Splits off the jobs whose sound could not be stored: they fail, and
/// are tried again by the next push.
fn without_sound<'j>(
    jobs: &'j [Job],
    media_failed: &HashMap<String, String>,
    report: &mut PushReport,
    conn: &Connection,
) -> rusqlite::Result<Vec<&'j Job>> {
    let mut ready = Vec::new();
    let mut blocked = Vec::new();
    for job in jobs {
        match job.audio().and_then(|a| media_failed.get(&a.file_name)) {
            Some(e) => blocked.push(job.fail(report, e.clone())),
            None => ready.push(job),
        }
    }
    cards::record(conn, &blocked)?;
    Ok(ready)
}

/// Changed notes, in place.
fn update(
    anki: &AnkiConnect,
    conn: &Connection,
    jobs: &[Job],
    media_failed: &HashMap<String, String>,
    settings: &AnkiSettings,
    report: &mut PushReport,
    tally: &mut Tally<'_>,
) -> Result<(), PushError> {
    let ready = without_sound(jobs, media_failed, report, conn)?;
    tally.add(jobs.len() - ready.len());
    let actions = ready.into_iter().map(|job| {
        let action = Action::new(
            "updateNoteFields",
            json!({"note": {"id": job.note_id(), "fields": job.fields}}),
        );
        (action, job)
    });
    for batch in Batcher::pack(actions) {
        let mut entries = Vec::new();
        let (answered, closed) = anki.multi_tagged(batch)?;
        for (answer, job) in answered {
            let card = job.card.as_ref().expect("an update has a card");
            entries.push(match answer {
                Ok(_) => {
                    report.updated += 1;
                    job.entry(Outcome::Synced {
                        note_id: card.note_id.unwrap_or_default(),
                        deck: card.deck.clone(),
                        note_type: card.note_type.clone(),
                    })
                }
                Err(AnkiError::NoteNotFound(_))
                    if settings.deleted_in_anki.value == DeletedInAnki::Leave =>
                {
                    report.deleted_in_anki += 1;
                    job.entry(Outcome::DeletedInAnki)
                }
                Err(e) => job.fail(report, e.to_string()),
            });
        }
        cards::record(conn, &entries)?;
        tally.add(entries.len());
        closed.check()?;
    }
    Ok(())
}

/// New notes, each on its own inside a batch; then their cards into the
/// deck asked for.
fn add(
    anki: &AnkiConnect,
    conn: &Connection,
    jobs: &[Job],
    media_failed: &HashMap<String, String>,
    settings: &AnkiSettings,
    report: &mut PushReport,
    tally: &mut Tally<'_>,
) -> Result<(), PushError> {
    let ready = without_sound(jobs, media_failed, report, conn)?;
    tally.add(jobs.len() - ready.len());
    let actions = ready.into_iter().map(|job| {
        let action = Action::new(
            "addNote",
            json!({"note": {
                "deckName": settings.deck.value,
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
        // Each added note, and whether Anki had it already.
        let mut added: Vec<(&Job, i64, bool)> = Vec::new();
        let mut known: Vec<&Job> = Vec::new();
        let (answered, closed) = anki.multi_tagged(batch)?;
        for (answer, job) in answered {
            match answer.map(|v| v.as_i64()) {
                Ok(Some(note_id)) => added.push((job, note_id, false)),
                Ok(None) => entries.push(job.fail(report, "addNote answered no note id".into())),
                Err(AnkiError::Duplicate) => known.push(job),
                Err(e) => entries.push(job.fail(report, e.to_string())),
            }
        }
        // Added but not yet in their deck: the next push finds them again.
        closed.check()?;
        for (job, found) in adopt(anki, &known)? {
            match found {
                Ok(note_id) => added.push((job, note_id, true)),
                Err(e) => entries.push(job.fail(report, e)),
            }
        }
        let note_ids: Vec<i64> = added.iter().map(|(_, id, _)| *id).collect();
        report.moved_to_deck += place_in_deck(anki, &note_ids, &settings.deck.value)?;
        for (job, note_id, adopted) in added {
            match job.add {
                _ if adopted => report.adopted += 1,
                Add::New => report.added += 1,
                Add::Recreate => report.recreated += 1,
                Add::LegacyElsewhere => report.legacy_recreated += 1,
            }
            entries.push(job.entry(Outcome::Synced {
                note_id,
                deck: settings.deck.value.clone(),
                note_type: MODEL_NAME.to_owned(),
            }));
        }
        cards::record(conn, &entries)?;
        tally.add(entries.len());
    }
    Ok(())
}

/// A job and the note id Anki has for it, or why it cannot be taken over.
type Adopted<'j> = (&'j Job, Result<i64, String>);

/// The notes Anki refused as duplicates: Anki already has a note of the
/// agent's type with the same `Key`. One such note is this job's note (an
/// earlier push added it and stopped before recording it): it is updated
/// and taken over. Anything else is a failure the learner must resolve.
fn adopt<'j>(anki: &AnkiConnect, jobs: &[&'j Job]) -> Result<Vec<Adopted<'j>>, AnkiError> {
    let searches = jobs.iter().map(|job| {
        let query = format!("\"note:{MODEL_NAME}\" \"Key:{}\"", job.key());
        (Action::new("findNotes", json!({ "query": query })), *job)
    });
    let mut found = Vec::new();
    let mut out = Vec::new();
    for batch in Batcher::pack(searches) {
        let (answered, closed) = anki.multi_tagged(batch)?;
        closed.check()?;
        for (answer, job) in answered {
            match answer {
                Ok(ids) => {
                    let ids: Vec<i64> = ids
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_i64)
                        .collect();
                    found.push((job, ids));
                }
                Err(e) => out.push((job, Err(format!("looking up its Key: {e}")))),
            }
        }
    }
    let mut updates = Vec::new();
    for (job, ids) in found {
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
    let elsewhere = |cards: &Value| -> Result<Vec<(String, i64)>, AnkiError> {
        let decks = anki.invoke("getDecks", json!({ "cards": cards }))?;
        let Value::Object(decks) = decks else {
            return Err(AnkiError::Protocol(format!("getDecks answered {decks}")));
        };
        Ok(decks
            .into_iter()
            .filter(|(name, _)| name != deck)
            .flat_map(|(name, ids)| {
                let ids: Vec<i64> = ids
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_i64)
                    .collect();
                ids.into_iter().map(move |id| (name.clone(), id))
            })
            .collect())
    };
    let misplaced = elsewhere(&cards)?;
    if misplaced.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = misplaced.iter().map(|(_, id)| *id).collect();
    anki.invoke("changeDeck", json!({ "cards": ids, "deck": deck }))?;
    let still = elsewhere(&json!(ids))?;
    if let Some((name, _)) = still.first() {
        return Err(AnkiError::Other(format!(
            "{} card(s) stayed in deck {name} after being moved to {deck}; move them in Anki's \
             browser (Change Deck), then push again",
            still.len()
        )));
    }
    Ok(ids.len())
}

/// Contents deleted upstream: tagged, never deleted.
fn tag_gone(
    anki: &AnkiConnect,
    conn: &Connection,
    gone: &[Card],
    report: &mut PushReport,
) -> Result<(), PushError> {
    if gone.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = gone.iter().filter_map(|c| c.note_id).collect();
    match anki.invoke("addTags", json!({"notes": ids, "tags": DELETED_TAG})) {
        Ok(_) => {
            let no_fields = BTreeMap::new();
            let entries: Vec<Entry<'_>> = gone
                .iter()
                .map(|card| Entry {
                    subject: card.of.into(),
                    card: Some(card.id),
                    fields: &no_fields,
                    outcome: Outcome::DeletedUpstream,
                })
                .collect();
            cards::record(conn, &entries)?;
            report.tagged_deleted = gone.len();
        }
        Err(e) => {
            for card in gone {
                report.failed.push(NoteFailure {
                    key: card.of.key(),
                    note_id: card.note_id,
                    error: format!("tagging as deleted: {e}"),
                });
            }
        }
    }
    Ok(())
}
