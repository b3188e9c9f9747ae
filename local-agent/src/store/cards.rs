//! The Anki card map, `anki_cards`: which note in Anki stands for which row
//! of the mirror, what was last sent to it and how that went; and the
//! mirror's rows as Anki notes are made of them. The card map's columns are
//! the legacy application's, so that a migrated file's rows carry over as
//! they are.

use std::collections::{BTreeMap, HashMap};

use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params};
use serde_json::Value;

use super::{Result, Store, text_hash};

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

/// The row a note stands for: what identifies a note and its card record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NoteOf {
    Content(i64),
    Fragment(i64),
}

impl NoteOf {
    /// `content:<id>` or `fragment:<id>`: the notes' `Key` field.
    pub fn key(self) -> String {
        match self {
            NoteOf::Content(id) => format!("content:{id}"),
            NoteOf::Fragment(id) => format!("fragment:{id}"),
        }
    }
}

/// What a note is about: its row, and for a fragment the content it
/// belongs to (recorded with the card).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subject {
    Content(i64),
    Fragment { id: i64, content: Option<i64> },
}

impl Subject {
    /// The value of the `Key` field.
    pub fn key(self) -> String {
        self.note_of().key()
    }

    pub fn note_of(self) -> NoteOf {
        match self {
            Subject::Content(id) => NoteOf::Content(id),
            Subject::Fragment { id, .. } => NoteOf::Fragment(id),
        }
    }

    pub fn content_id(self) -> Option<i64> {
        match self {
            Subject::Content(id) => Some(id),
            Subject::Fragment { content, .. } => content,
        }
    }

    pub fn fragment_id(self) -> Option<i64> {
        match self {
            Subject::Content(_) => None,
            Subject::Fragment { id, .. } => Some(id),
        }
    }
}

impl From<NoteOf> for Subject {
    /// The subject of a card whose row may have left the mirror: a
    /// fragment's content is not known then.
    fn from(of: NoteOf) -> Subject {
        match of {
            NoteOf::Content(id) => Subject::Content(id),
            NoteOf::Fragment(id) => Subject::Fragment { id, content: None },
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

/// What became of one note in a push.
#[derive(Debug, Clone)]
pub enum CardOutcome {
    /// Anki confirmed these fields on this note, in this deck.
    Synced {
        note_id: i64,
        deck: String,
        note_type: String,
    },
    /// Anki did not take the note. A note without a card yet gets one
    /// (with no note id) of `note_type`, so that `status` shows the
    /// failure; the next push tries again.
    Failed {
        note_type: String,
    },
    DeletedInAnki,
    DeletedUpstream,
}

/// One outcome to record.
#[derive(Debug, Clone)]
pub struct CardEntry<'a> {
    pub subject: Subject,
    /// The card row, when there is one.
    pub card: Option<i64>,
    pub fields: &'a BTreeMap<String, String>,
    pub outcome: CardOutcome,
}

/// sha256 hex of the fields as canonical JSON (keys sorted): the
/// `anki_cards.content_hash` of a note.
pub fn content_hash(fields: &BTreeMap<String, String>) -> String {
    text_hash(&fields_json(fields))
}

fn fields_json(fields: &BTreeMap<String, String>) -> String {
    serde_json::to_string(fields).expect("a map of strings serialises")
}

/// A learning content as its note is made of it.
#[derive(Debug, Clone)]
pub struct NoteContent {
    pub id: i64,
    pub title: String,
    pub content_type: String,
    pub native_text: String,
    pub translation: String,
    pub ipa: String,
    /// The `tags` column as the API sent it (JSON).
    pub tags: Option<String>,
}

/// A fragment as its note is made of it.
#[derive(Debug, Clone)]
pub struct NoteFragment {
    pub id: i64,
    pub content_id: Option<i64>,
    pub native_text: String,
    pub body_text: String,
    pub ipa: Option<String>,
    pub extra: Option<String>,
}

/// An audio asset of the mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioAsset {
    pub id: i64,
    pub sha256: String,
    pub content_type: Option<String>,
    pub size: i64,
}

/// `anki_cards` keeps the legacy application's timestamp format, which
/// its rows carry already.
fn card_time() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%d %H:%M:%S%.6f")
        .to_string()
}

impl Store {
    /// The cards by the row they stand for; of several rows for one, the
    /// first with a note id (then the oldest) wins.
    pub fn anki_cards(&self) -> Result<HashMap<NoteOf, Card>> {
        let mut stmt = self.conn.prepare(
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

    /// Whether the mirror still holds the row.
    pub fn in_mirror(&self, of: NoteOf) -> Result<bool> {
        let (sql, id) = match of {
            NoteOf::Content(id) => (
                "SELECT EXISTS (SELECT 1 FROM learning_content WHERE id = ?1)",
                id,
            ),
            NoteOf::Fragment(id) => (
                "SELECT EXISTS (SELECT 1 FROM content_fragments WHERE id = ?1)",
                id,
            ),
        };
        Ok(self
            .conn
            .prepare_cached(sql)?
            .query_row([id], |r| r.get(0))?)
    }

    /// Writes outcomes in one transaction.
    pub fn record_cards(&mut self, entries: &[CardEntry<'_>]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now = card_time();
        for e in entries {
            record(&tx, e, &now)?;
        }
        Ok(tx.commit()?)
    }

    /// The learning contents, by id.
    pub fn note_contents(&self) -> Result<Vec<NoteContent>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, title, content_type, native_text, translation, ipa, tags
             FROM learning_content ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(NoteContent {
                id: r.get(0)?,
                title: r.get(1)?,
                content_type: r.get(2)?,
                native_text: r.get(3)?,
                translation: r.get(4)?,
                ipa: r.get(5)?,
                tags: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The fragments, by id.
    pub fn note_fragments(&self) -> Result<Vec<NoteFragment>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, learning_content_id, native_text, body_text, ipa, extra
             FROM content_fragments ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(NoteFragment {
                id: r.get(0)?,
                content_id: r.get(1)?,
                native_text: r.get(2)?,
                body_text: r.get(3)?,
                ipa: r.get(4)?,
                extra: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The best audio asset of a fragment, by the API's rule for
    /// `/api/rankings/best`: the highest mean ranking, then the most
    /// rankings, then the lowest id; unranked assets after all ranked ones.
    pub fn best_audio(&self, fragment_id: i64) -> Result<Option<AudioAsset>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT a.id, a.sha256, a.content_type, a.size
                 FROM fragment_assets a
                 LEFT JOIN (SELECT asset_id, avg(rank_hundredths) AS mean, count(*) AS n
                            FROM rankings WHERE rank_hundredths IS NOT NULL GROUP BY asset_id) r
                        ON r.asset_id = a.id
                 WHERE a.fragment_id = ?1 AND a.asset_type = 'audio' AND a.size > 0
                 ORDER BY r.mean IS NULL, r.mean DESC, r.n DESC, a.id
                 LIMIT 1",
            )?
            .query_row([fragment_id], |r| {
                Ok(AudioAsset {
                    id: r.get(0)?,
                    sha256: r.get(1)?,
                    content_type: r.get(2)?,
                    size: r.get(3)?,
                })
            })
            .optional()?)
    }
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

fn record(tx: &Transaction<'_>, e: &CardEntry<'_>, now: &str) -> rusqlite::Result<()> {
    let fields = fields_json(e.fields);
    match (&e.outcome, e.card) {
        (
            CardOutcome::Synced {
                note_id,
                deck,
                note_type,
            },
            Some(card),
        ) => tx
            .prepare_cached(
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
                text_hash(&fields),
                now,
                e.subject.content_id()
            ]),
        (
            CardOutcome::Synced {
                note_id,
                deck,
                note_type,
            },
            None,
        ) => tx
            .prepare_cached(
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
                text_hash(&fields),
                now
            ]),
        (CardOutcome::Failed { note_type }, None) => tx
            .prepare_cached(
                "INSERT INTO anki_cards (learning_content_id, fragment_id, deck_name,
                     note_type, fields, sync_status, created_at, updated_at)
                 VALUES (?1, ?2, '', ?3, ?4, 'error', ?5, ?5)",
            )?
            .execute(params![
                e.subject.content_id(),
                e.subject.fragment_id(),
                note_type,
                fields,
                now
            ]),
        (CardOutcome::Failed { .. }, Some(card)) => set_status(tx, card, CardStatus::Error, now),
        (CardOutcome::DeletedInAnki, Some(card)) => {
            set_status(tx, card, CardStatus::DeletedInAnki, now)
        }
        (CardOutcome::DeletedUpstream, Some(card)) => {
            set_status(tx, card, CardStatus::DeletedUpstream, now)
        }
        (CardOutcome::DeletedInAnki | CardOutcome::DeletedUpstream, None) => Ok(0),
    }?;
    Ok(())
}

fn set_status(
    tx: &Transaction<'_>,
    card: i64,
    status: CardStatus,
    now: &str,
) -> rusqlite::Result<usize> {
    tx.prepare_cached("UPDATE anki_cards SET sync_status = ?2, updated_at = ?3 WHERE id = ?1")?
        .execute(params![card, status.as_str(), now])
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

    #[test]
    fn outcomes_are_recorded_and_read_back_by_row() {
        let mut store = Store::open_in_memory().unwrap();
        let fields: BTreeMap<String, String> = [("Key".to_owned(), "fragment:2".to_owned())].into();
        let fragment = Subject::Fragment {
            id: 2,
            content: Some(1),
        };
        let synced = |card| CardEntry {
            subject: fragment,
            card,
            fields: &fields,
            outcome: CardOutcome::Synced {
                note_id: 77,
                deck: "Thai".into(),
                note_type: "T".into(),
            },
        };
        store.record_cards(&[synced(None)]).unwrap();
        let cards = store.anki_cards().unwrap();
        let card = &cards[&NoteOf::Fragment(2)];
        assert_eq!(card.note_id, Some(77));
        assert_eq!(card.status, CardStatus::Synced);
        assert_eq!(card.hash.as_deref(), Some(content_hash(&fields).as_str()));
        assert_eq!(card.fields, fields);

        let failed = CardEntry {
            outcome: CardOutcome::Failed {
                note_type: "T".into(),
            },
            ..synced(Some(card.id))
        };
        store.record_cards(&[failed]).unwrap();
        let cards = store.anki_cards().unwrap();
        assert_eq!(cards[&NoteOf::Fragment(2)].status, CardStatus::Error);
        assert_eq!(cards[&NoteOf::Fragment(2)].note_id, Some(77));
        assert!(!store.in_mirror(NoteOf::Fragment(2)).unwrap());
    }
}
