//! The `anki_cards` record: which note in Anki stands for which row of the
//! mirror, what was last sent to it, and how that went. Its columns are the
//! legacy application's, so that a migrated file's rows carry over as they
//! are.

use std::collections::{BTreeMap, HashMap};

use rusqlite::{Connection, params};
use serde_json::Value;

use super::notes::{self, MODEL_NAME, NoteOf, Subject};

/// `anki_cards.sync_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardStatus {
    /// Not sent yet (the legacy application's default).
    Pending,
    /// Anki holds the fields whose hash is recorded.
    Synced,
    /// The last attempt failed; the next push tries again.
    Error,
    /// The learner deleted the note in Anki; `[anki] deleted_in_anki` decides.
    DeletedInAnki,
    /// The row left the mirror and the note was tagged.
    DeletedUpstream,
}

impl CardStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CardStatus::Pending => "pending",
            CardStatus::Synced => "synced",
            CardStatus::Error => "error",
            CardStatus::DeletedInAnki => "deleted_in_anki",
            CardStatus::DeletedUpstream => "deleted_upstream",
        }
    }

    /// A status this agent does not write (another application's) reads as
    /// pending: the note is compared and sent again, never skipped.
    pub fn parse(text: &str) -> CardStatus {
        match text {
            "synced" => CardStatus::Synced,
            "error" => CardStatus::Error,
            "deleted_in_anki" => CardStatus::DeletedInAnki,
            "deleted_upstream" => CardStatus::DeletedUpstream,
            _ => CardStatus::Pending,
        }
    }
}

/// A row of `anki_cards`.
#[derive(Debug, Clone)]
pub struct Card {
    pub id: i64,
    pub of: NoteOf,
    pub note_id: Option<i64>,
    pub deck: String,
    pub note_type: String,
    pub fields: BTreeMap<String, String>,
    pub hash: Option<String>,
    pub status: CardStatus,
}

impl Card {
    /// A card of another note type: written by the legacy application.
    pub fn is_legacy(&self) -> bool {
        self.note_type != MODEL_NAME
    }
}

/// The cards by the row they stand for; of several rows for one, the first
/// with a note id (then the oldest) wins.
pub fn read(conn: &Connection) -> rusqlite::Result<HashMap<NoteOf, Card>> {
    let mut stmt = conn.prepare(
        "SELECT id, learning_content_id, fragment_id, anki_note_id, deck_name, note_type, fields,
                content_hash, sync_status
         FROM anki_cards ORDER BY anki_note_id IS NULL, id",
    )?;
    let rows = stmt.query_map([], |r| {
        let content: Option<i64> = r.get(1)?;
        let fragment: Option<i64> = r.get(2)?;
        let of = match (fragment, content) {
            (Some(f), _) => NoteOf::Fragment(f),
            (None, Some(c)) => NoteOf::Content(c),
            (None, None) => return Ok(None),
        };
        let fields: Option<String> = r.get(6)?;
        Ok(Some(Card {
            id: r.get(0)?,
            of,
            note_id: r.get(3)?,
            deck: r.get(4)?,
            note_type: r.get(5)?,
            fields: parse_fields(fields.as_deref()),
            hash: r.get(7)?,
            status: CardStatus::parse(&r.get::<_, String>(8)?),
        }))
    })?;
    let mut cards = HashMap::new();
    for card in rows {
        if let Some(card) = card? {
            cards.entry(card.of).or_insert(card);
        }
    }
    Ok(cards)
}

/// The recorded fields; the legacy application also wrote non-string
/// values, which Anki would show as their text.
fn parse_fields(json: Option<&str>) -> BTreeMap<String, String> {
    json.and_then(|f| serde_json::from_str::<BTreeMap<String, Value>>(f).ok())
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
        .collect()
}

/// What became of one note in a push.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Anki confirmed these fields on this note, in this deck.
    Synced {
        note_id: i64,
        deck: String,
        note_type: String,
    },
    Failed,
    DeletedInAnki,
    DeletedUpstream,
}

/// One outcome to record.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    pub subject: Subject,
    /// The card row, when there is one.
    pub card: Option<i64>,
    pub fields: &'a BTreeMap<String, String>,
    pub outcome: Outcome,
}

fn now() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%d %H:%M:%S%.6f")
        .to_string()
}

/// Writes outcomes in one transaction.
pub fn record(conn: &Connection, entries: &[Entry<'_>]) -> rusqlite::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let tx = conn.unchecked_transaction()?;
    let now = now();
    for e in entries {
        let fields = serde_json::to_string(e.fields).expect("strings serialise");
        match (&e.outcome, e.card) {
            (
                Outcome::Synced {
                    note_id,
                    deck,
                    note_type,
                },
                Some(card),
            ) => {
                tx.prepare_cached(
                    "UPDATE anki_cards SET anki_note_id = ?2, deck_name = ?3, note_type = ?4,
                         fields = ?5, content_hash = ?6, sync_status = 'synced',
                         last_synced_at = ?7, updated_at = ?7,
                         learning_content_id = coalesce(learning_content_id, ?8)
                     WHERE id = ?1",
                )?
                .execute(params![
                    card,
                    note_id,
                    deck,
                    note_type,
                    fields,
                    notes::content_hash(e.fields),
                    now,
                    e.subject.content_id()
                ])?;
            }
            (
                Outcome::Synced {
                    note_id,
                    deck,
                    note_type,
                },
                None,
            ) => {
                tx.prepare_cached(
                    "INSERT INTO anki_cards (learning_content_id, fragment_id, anki_note_id,
                         deck_name, note_type, fields, content_hash, sync_status, last_synced_at,
                         created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'synced', ?8, ?8, ?8)",
                )?
                .execute(params![
                    e.subject.content_id(),
                    e.subject.fragment_id(),
                    note_id,
                    deck,
                    note_type,
                    fields,
                    notes::content_hash(e.fields),
                    now
                ])?;
            }
            (Outcome::Failed, None) => {
                // Not in Anki: remembered so that the failure shows in
                // `status`, and tried again by the next push.
                tx.prepare_cached(
                    "INSERT INTO anki_cards (learning_content_id, fragment_id, deck_name,
                         note_type, fields, sync_status, created_at, updated_at)
                     VALUES (?1, ?2, '', ?3, ?4, 'error', ?5, ?5)",
                )?
                .execute(params![
                    e.subject.content_id(),
                    e.subject.fragment_id(),
                    MODEL_NAME,
                    fields,
                    now
                ])?;
            }
            (Outcome::Failed, Some(card)) => set_status(&tx, card, CardStatus::Error, &now)?,
            (Outcome::DeletedInAnki, Some(card)) => {
                set_status(&tx, card, CardStatus::DeletedInAnki, &now)?
            }
            (Outcome::DeletedUpstream, Some(card)) => {
                set_status(&tx, card, CardStatus::DeletedUpstream, &now)?
            }
            (Outcome::DeletedInAnki | Outcome::DeletedUpstream, None) => {}
        }
    }
    tx.commit()
}

fn set_status(conn: &Connection, card: i64, status: CardStatus, now: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE anki_cards SET sync_status = ?2, updated_at = ?3 WHERE id = ?1")?
        .execute(params![card, status.as_str(), now])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_foreign_ones_read_as_pending() {
        for s in [
            CardStatus::Pending,
            CardStatus::Synced,
            CardStatus::Error,
            CardStatus::DeletedInAnki,
            CardStatus::DeletedUpstream,
        ] {
            assert_eq!(CardStatus::parse(s.as_str()), s);
        }
        assert_eq!(CardStatus::parse("modified"), CardStatus::Pending);
    }

    #[test]
    fn recorded_fields_read_back_as_text() {
        let f = parse_fields(Some(r#"{"Thai":"ไก่","Count":3,"Empty":null}"#));
        assert_eq!(f["Thai"], "ไก่");
        assert_eq!(f["Count"], "3");
        assert_eq!(f["Empty"], "");
        assert!(parse_fields(Some("not json")).is_empty());
    }
}
