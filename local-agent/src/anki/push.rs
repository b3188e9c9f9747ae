//! The push: the notes the mirror asks for, compared with what `anki_cards`
//! says was last sent, and only the difference sent to AnkiConnect.
//!
//! - A note whose rendered fields hash to the recorded `content_hash` (and
//!   whose row is `synced`) sends nothing: a push with nothing new makes no
//!   request at all.
//! - A changed note is updated in place (`updateNoteFields`) after
//!   `notesInfo` confirmed it still exists (`[{}]` means the user deleted
//!   it: then [`DeletedInAnki`] decides).
//! - A new note is added with `multi` of `addNote`, so that one refused
//!   note (a duplicate key, say) does not stop the others (`addNotes` would
//!   add none); it is recorded as `error` and tried again next time.
//! - A card whose content or fragment left the mirror is tagged
//!   `thai-content::deleted` (by [`DeletedUpstream`]); no note is ever
//!   deleted.
//! - Legacy rows (another note type, written by the old application) are
//!   updated through their own field names, never duplicated.
//!
//! Each batch's outcome is written to `anki_cards` in one transaction as
//! soon as AnkiConnect answered it; when Anki does not answer at all,
//! nothing is written.

use std::collections::{BTreeMap, HashMap, HashSet};

use rusqlite::{Connection, params};
use serde::Serialize;
use serde_json::{Value, json};

use super::connect::{Action, AnkiConnect, AnkiError};
use super::notes::{self, DELETED_TAG, MODEL_NAME, Rendered};
use super::{AnkiSettings, DeletedInAnki, DeletedUpstream, base64};
use crate::api::ApiClient;
use crate::store::{Store, StoreError, SyncPhase};

/// Notes per `multi` request.
const BATCH: usize = 250;
/// Media bytes per `multi` request (base64 makes them a third larger).
const MEDIA_BATCH_BYTES: usize = 24 * 1024 * 1024;

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
    /// Notes tagged because their content left the mirror.
    pub tagged_deleted: usize,
    pub media_stored: usize,
    pub failed: Vec<NoteFailure>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NoteFailure {
    pub key: String,
    pub note_id: Option<i64>,
    pub error: String,
}

/// A row of `anki_cards`.
#[derive(Debug, Clone)]
struct Card {
    id: i64,
    note_id: Option<i64>,
    deck: String,
    note_type: String,
    fields: BTreeMap<String, String>,
    hash: Option<String>,
    status: String,
}

fn read_cards(conn: &Connection) -> rusqlite::Result<HashMap<String, Card>> {
    let mut stmt = conn.prepare(
        "SELECT id, learning_content_id, fragment_id, anki_note_id, deck_name, note_type, fields,
                content_hash, sync_status
         FROM anki_cards ORDER BY anki_note_id IS NULL, id",
    )?;
    let rows = stmt.query_map([], |r| {
        let content: Option<i64> = r.get(1)?;
        let fragment: Option<i64> = r.get(2)?;
        let fields: Option<String> = r.get(6)?;
        let fields = fields
            .and_then(|f| serde_json::from_str::<BTreeMap<String, Value>>(&f).ok())
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s,
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                (k, v)
            })
            .collect();
        let key = match (fragment, content) {
            (Some(f), _) => Some(format!("fragment:{f}")),
            (None, Some(c)) => Some(format!("content:{c}")),
            (None, None) => None,
        };
        let card = Card {
            id: r.get(0)?,
            note_id: r.get(3)?,
            deck: r.get(4)?,
            note_type: r.get(5)?,
            fields,
            hash: r.get(7)?,
            status: r.get(8)?,
        };
        Ok(key.map(|key| (key, card)))
    })?;
    let mut cards = HashMap::new();
    for row in rows {
        let Some((key, card)) = row? else {
            continue;
        };
        // The first row per key wins: one with a note id, then the oldest.
        cards.entry(key).or_insert(card);
    }
    Ok(cards)
}

/// One note to send.
#[derive(Debug, Clone)]
struct Job {
    note: Rendered,
    card: Option<Card>,
    /// The fields sent: ours, or a legacy note's own names.
    fields: BTreeMap<String, String>,
    recreate: bool,
}

impl Job {
    fn key(&self) -> String {
        self.note.subject.key()
    }
    fn is_legacy(&self) -> bool {
        self.card
            .as_ref()
            .is_some_and(|c| c.note_type != MODEL_NAME)
    }
}

enum Outcome {
    Synced {
        note_id: i64,
        deck: String,
        note_type: String,
    },
    Failed,
    DeletedInAnki,
}

fn now() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%d %H:%M:%S%.6f")
        .to_string()
}

fn record(conn: &Connection, results: &[(&Job, Outcome)]) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    let now = now();
    for (job, outcome) in results {
        let fields = serde_json::to_string(&job.fields).expect("strings serialise");
        let subject = job.note.subject;
        match (outcome, &job.card) {
            (
                Outcome::Synced {
                    note_id,
                    deck,
                    note_type,
                },
                Some(card),
            ) => {
                tx.execute(
                    "UPDATE anki_cards SET anki_note_id = ?2, deck_name = ?3, note_type = ?4,
                         fields = ?5, content_hash = ?6, sync_status = 'synced',
                         last_synced_at = ?7, updated_at = ?7,
                         learning_content_id = coalesce(learning_content_id, ?8)
                     WHERE id = ?1",
                    params![
                        card.id,
                        note_id,
                        deck,
                        note_type,
                        fields,
                        notes::content_hash(&job.fields),
                        now,
                        subject.content_id()
                    ],
                )?;
            }
            (
                Outcome::Synced {
                    note_id,
                    deck,
                    note_type,
                },
                None,
            ) => {
                tx.execute(
                    "INSERT INTO anki_cards (learning_content_id, fragment_id, anki_note_id,
                         deck_name, note_type, fields, content_hash, sync_status, last_synced_at,
                         created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'synced', ?8, ?8, ?8)",
                    params![
                        subject.content_id(),
                        subject.fragment_id(),
                        note_id,
                        deck,
                        note_type,
                        fields,
                        notes::content_hash(&job.fields),
                        now
                    ],
                )?;
            }
            (Outcome::Failed, Some(card)) => {
                tx.execute(
                    "UPDATE anki_cards SET sync_status = 'error', updated_at = ?2 WHERE id = ?1",
                    params![card.id, now],
                )?;
            }
            (Outcome::Failed, None) => {
                // Not in Anki: remembered so that the failure shows in
                // `status`, and tried again by the next push.
                tx.execute(
                    "INSERT INTO anki_cards (learning_content_id, fragment_id, deck_name,
                         note_type, fields, sync_status, created_at, updated_at)
                     VALUES (?1, ?2, '', ?3, ?4, 'error', ?5, ?5)",
                    params![
                        subject.content_id(),
                        subject.fragment_id(),
                        MODEL_NAME,
                        fields,
                        now
                    ],
                )?;
            }
            (Outcome::DeletedInAnki, Some(card)) => {
                tx.execute(
                    "UPDATE anki_cards SET sync_status = 'deleted_in_anki', updated_at = ?2
                     WHERE id = ?1",
                    params![card.id, now],
                )?;
            }
            (Outcome::DeletedInAnki, None) => {}
        }
    }
    tx.commit()
}

fn fail(report: &mut PushReport, job: &Job, error: String) -> Outcome {
    report.failed.push(NoteFailure {
        key: job.key(),
        note_id: job.card.as_ref().and_then(|c| c.note_id),
        error,
    });
    Outcome::Failed
}

/// Pushes the mirror into Anki. `api` fetches audio bytes not cached yet;
/// without it, notes whose audio is not cached fail.
pub fn push(
    store: &mut Store,
    anki: &AnkiConnect,
    api: Option<&ApiClient>,
    settings: &AnkiSettings,
    options: PushOptions,
) -> Result<PushReport, PushError> {
    match store.sync_state()?.phase {
        SyncPhase::None => return Err(PushError::MirrorIncomplete("never pulled")),
        SyncPhase::Snapshot => return Err(PushError::MirrorIncomplete("inside a snapshot")),
        SyncPhase::Log => {}
    }
    let conn = store.conn();
    let rendered = notes::render_all(conn, settings.notes)?;
    let mut cards = read_cards(conn)?;
    let mut report = PushReport::default();

    // What to do with each note.
    let mut adds: Vec<Job> = Vec::new();
    let mut updates: Vec<Job> = Vec::new();
    let mut unchanged: Vec<Job> = Vec::new();
    for note in rendered {
        let card = cards.remove(&note.subject.key());
        let fields = match &card {
            Some(c) if c.note_type != MODEL_NAME => {
                let names: Vec<String> = c.fields.keys().cloned().collect();
                notes::map_to_legacy(&note.fields, &names)
            }
            _ => note.fields.clone(),
        };
        let job = Job {
            note,
            card,
            fields,
            recreate: false,
        };
        match &job.card {
            None => adds.push(job),
            Some(c) if c.status == "deleted_in_anki" => match settings.deleted_in_anki {
                DeletedInAnki::Leave => {}
                DeletedInAnki::Recreate => adds.push(Job {
                    recreate: true,
                    ..job
                }),
            },
            Some(c) if c.note_id.is_none() => adds.push(job),
            Some(c)
                if c.status == "synced"
                    && c.hash.as_deref() == Some(&notes::content_hash(&job.fields)) =>
            {
                unchanged.push(job)
            }
            Some(_) => updates.push(job),
        }
    }
    // Cards whose subject left the mirror (not those a policy change hides).
    let mut gone: Vec<(String, Card)> = Vec::new();
    if settings.deleted_upstream == DeletedUpstream::Tag {
        for (key, card) in cards {
            if card.note_id.is_none() || card.status == "deleted_upstream" {
                continue;
            }
            let (table, id) = key.split_once(':').expect("keys are kind:id");
            let table = if table == "fragment" {
                "content_fragments"
            } else {
                "learning_content"
            };
            let exists: bool = conn.query_row(
                &format!("SELECT EXISTS (SELECT 1 FROM {table} WHERE id = ?1)"),
                [id.parse::<i64>().unwrap_or_default()],
                |r| r.get(0),
            )?;
            if !exists {
                gone.push((key, card));
            }
        }
        gone.sort_by(|a, b| a.0.cmp(&b.0));
    }

    if adds.is_empty() && updates.is_empty() && gone.is_empty() && !options.verify {
        report.unchanged = unchanged.len();
        return Ok(report);
    }

    // Anki must answer before anything is sent or recorded.
    let version = anki.version()?;
    if version < super::connect::API_VERSION {
        return Err(AnkiError::TooOld {
            url: anki.url().to_owned(),
        }
        .into());
    }

    // Which notes still exist: the changed ones, and with --verify all.
    let mut check: Vec<Job> = std::mem::take(&mut updates);
    let verify_from = check.len();
    if options.verify {
        check.append(&mut unchanged);
    }
    for (c, chunk) in check.chunks(BATCH).enumerate() {
        let ids: Vec<i64> = chunk
            .iter()
            .map(|j| j.card.as_ref().and_then(|c| c.note_id).unwrap_or_default())
            .collect();
        let infos = anki.invoke("notesInfo", json!({"notes": ids}))?;
        let infos = infos.as_array().cloned().unwrap_or_default();
        let mut deleted = Vec::new();
        for (i, job) in chunk.iter().enumerate() {
            let index = c * BATCH + i;
            let info = infos.get(i).cloned().unwrap_or(Value::Null);
            if info.get("noteId").is_none() {
                match settings.deleted_in_anki {
                    DeletedInAnki::Leave => {
                        report.deleted_in_anki += 1;
                        deleted.push((job, Outcome::DeletedInAnki));
                    }
                    DeletedInAnki::Recreate => adds.push(Job {
                        recreate: true,
                        ..job.clone()
                    }),
                }
                continue;
            }
            let mut job = job.clone();
            if job.is_legacy() {
                // The note's own field names, as Anki has them now.
                let names: Vec<String> = info["fields"]
                    .as_object()
                    .map(|f| f.keys().cloned().collect())
                    .unwrap_or_default();
                job.fields = notes::map_to_legacy(&job.note.fields, &names);
            }
            if index < verify_from {
                updates.push(job);
            } else {
                report.unchanged += 1;
            }
        }
        record(conn, &deleted)?;
    }
    report.unchanged += unchanged.len();

    // The deck and the note type, when notes are to be added.
    if !adds.is_empty() {
        let answers = anki.multi(&[
            Action::new("createDeck", json!({"deck": settings.deck})),
            Action::new("modelNames", json!({})),
        ])?;
        let mut answers = answers.into_iter();
        answers.next().expect("two answers")?;
        let models = answers.next().expect("two answers")?;
        let has_model = models
            .as_array()
            .is_some_and(|m| m.iter().any(|n| n.as_str() == Some(MODEL_NAME)));
        if !has_model {
            match anki.invoke("createModel", notes::model_params()) {
                Ok(_) | Err(AnkiError::ModelExists) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    // Audio first: a note is only sent once its sound file is in Anki.
    let mut media_failed: HashMap<String, String> = HashMap::new();
    {
        let mut wanted: Vec<&notes::Audio> = Vec::new();
        let mut seen = HashSet::new();
        for job in updates.iter().chain(adds.iter()) {
            if let Some(audio) = &job.note.audio
                && job.fields.values().any(|v| v.contains(&audio.file_name))
                && seen.insert(audio.file_name.clone())
            {
                wanted.push(audio);
            }
        }
        let mut batch: Vec<(Action, String)> = Vec::new();
        let mut batch_bytes = 0;
        let flush = |batch: &mut Vec<(Action, String)>,
                     media_failed: &mut HashMap<String, String>,
                     report: &mut PushReport|
         -> Result<(), PushError> {
            if batch.is_empty() {
                return Ok(());
            }
            let actions: Vec<Action> = batch.iter().map(|(a, _)| a.clone()).collect();
            for (answer, (_, name)) in anki.multi(&actions)?.into_iter().zip(batch.iter()) {
                match answer {
                    Ok(_) => report.media_stored += 1,
                    Err(e) => {
                        media_failed.insert(name.clone(), format!("storing {name}: {e}"));
                    }
                }
            }
            batch.clear();
            Ok(())
        };
        for audio in wanted {
            let bytes = match audio_bytes(store, api, audio) {
                Ok(b) => b,
                Err(e) => {
                    media_failed.insert(audio.file_name.clone(), e);
                    continue;
                }
            };
            batch_bytes += bytes.len();
            batch.push((
                Action::new(
                    "storeMediaFile",
                    json!({"filename": audio.file_name, "data": base64(&bytes)}),
                ),
                audio.file_name.clone(),
            ));
            if batch_bytes >= MEDIA_BATCH_BYTES {
                flush(&mut batch, &mut media_failed, &mut report)?;
                batch_bytes = 0;
            }
        }
        flush(&mut batch, &mut media_failed, &mut report)?;
    }
    let conn = store.conn();
    let media_error = |job: &Job| {
        job.note
            .audio
            .as_ref()
            .and_then(|a| media_failed.get(&a.file_name))
            .filter(|_| {
                job.fields
                    .values()
                    .any(|v| v.contains(&job.note.audio.as_ref().unwrap().file_name))
            })
            .cloned()
    };

    // Updates in place.
    for chunk in updates.chunks(BATCH) {
        let mut results: Vec<(&Job, Outcome)> = Vec::new();
        let mut actions = Vec::new();
        let mut sent = Vec::new();
        for job in chunk {
            if let Some(e) = media_error(job) {
                let outcome = fail(&mut report, job, e);
                results.push((job, outcome));
                continue;
            }
            let card = job.card.as_ref().expect("an update has a card");
            actions.push(Action::new(
                "updateNoteFields",
                json!({"note": {"id": card.note_id, "fields": job.fields}}),
            ));
            sent.push(job);
        }
        for (answer, job) in anki.multi(&actions)?.into_iter().zip(sent) {
            let card = job.card.as_ref().expect("an update has a card");
            let outcome = match answer {
                Ok(_) => {
                    report.updated += 1;
                    Outcome::Synced {
                        note_id: card.note_id.unwrap_or_default(),
                        deck: card.deck.clone(),
                        note_type: card.note_type.clone(),
                    }
                }
                Err(AnkiError::NoteNotFound(_))
                    if settings.deleted_in_anki == DeletedInAnki::Leave =>
                {
                    report.deleted_in_anki += 1;
                    Outcome::DeletedInAnki
                }
                Err(e) => fail(&mut report, job, e.to_string()),
            };
            results.push((job, outcome));
        }
        record(conn, &results)?;
    }

    // Additions, each on its own inside a batch.
    for job in &mut adds {
        if job.recreate || job.is_legacy() {
            // A new note is always of our own note type.
            job.fields = job.note.fields.clone();
        }
    }
    for chunk in adds.chunks(BATCH) {
        let mut results: Vec<(&Job, Outcome)> = Vec::new();
        let mut actions = Vec::new();
        let mut sent = Vec::new();
        for job in chunk {
            if let Some(e) = media_error(job) {
                let outcome = fail(&mut report, job, e);
                results.push((job, outcome));
                continue;
            }
            actions.push(Action::new(
                "addNote",
                json!({"note": {
                    "deckName": settings.deck,
                    "modelName": MODEL_NAME,
                    "fields": job.fields,
                    "tags": job.note.tags,
                    "options": {"allowDuplicate": false},
                }}),
            ));
            sent.push(job);
        }
        for (answer, job) in anki.multi(&actions)?.into_iter().zip(sent) {
            let outcome = match answer.map(|v| v.as_i64()) {
                Ok(Some(note_id)) => {
                    if job.recreate {
                        report.recreated += 1;
                    } else {
                        report.added += 1;
                    }
                    Outcome::Synced {
                        note_id,
                        deck: settings.deck.clone(),
                        note_type: MODEL_NAME.to_owned(),
                    }
                }
                Ok(None) => fail(&mut report, job, "addNote answered no note id".into()),
                Err(AnkiError::Duplicate) => fail(
                    &mut report,
                    job,
                    format!(
                        "{}: Anki already has a note with Key {} (made by hand, or by an agent \
                         with another store); delete or rename that note, then push again",
                        AnkiError::Duplicate,
                        job.key()
                    ),
                ),
                Err(e) => fail(&mut report, job, e.to_string()),
            };
            results.push((job, outcome));
        }
        record(conn, &results)?;
    }

    // Contents deleted upstream: tagged, never deleted.
    if !gone.is_empty() {
        let ids: Vec<i64> = gone.iter().filter_map(|(_, c)| c.note_id).collect();
        match anki.invoke("addTags", json!({"notes": ids, "tags": DELETED_TAG})) {
            Ok(_) => {
                let tx = conn.unchecked_transaction()?;
                let now = now();
                for (_, card) in &gone {
                    tx.execute(
                        "UPDATE anki_cards SET sync_status = 'deleted_upstream', updated_at = ?2
                         WHERE id = ?1",
                        params![card.id, now],
                    )?;
                }
                tx.commit()?;
                report.tagged_deleted = gone.len();
            }
            Err(e) => {
                for (key, card) in &gone {
                    report.failed.push(NoteFailure {
                        key: key.clone(),
                        note_id: card.note_id,
                        error: format!("tagging as deleted: {e}"),
                    });
                }
            }
        }
    }
    Ok(report)
}

fn audio_bytes(
    store: &mut Store,
    api: Option<&ApiClient>,
    audio: &notes::Audio,
) -> Result<Vec<u8>, String> {
    if let Some(bytes) = store
        .cached_asset(&audio.sha256)
        .map_err(|e| e.to_string())?
    {
        return Ok(bytes);
    }
    let Some(api) = api else {
        return Err(format!(
            "the bytes of asset {} are not cached and no API is configured",
            audio.asset_id
        ));
    };
    let bytes = api
        .asset_data(audio.asset_id)
        .map_err(|e| format!("downloading asset {}: {e}", audio.asset_id))?;
    store
        .put_cached_asset(&audio.sha256, &bytes)
        .map_err(|e| format!("asset {}: {e}", audio.asset_id))?;
    Ok(bytes)
}
