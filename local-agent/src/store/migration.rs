//! What `migrate` keeps in the store: the legacy rows that arrived on the
//! server (`migration_progress`), the migrations whose verification passed
//! (`migration_finished`), and the legacy file's Anki cards and vectors,
//! copied in as they are.

use std::path::{Path, PathBuf};

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

use super::{Result, Store, StoreError};

/// A legacy row the server acknowledged, with the checksum it was sent with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArrivedRow {
    pub table: String,
    pub id: i64,
    pub checksum: String,
}

/// A migration recorded as finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedMigration {
    pub finished_at: String,
    /// Rows it delivered.
    pub rows: usize,
    /// The fingerprint of the rows it delivered.
    pub fingerprint: String,
}

/// Which of the optional tables the legacy file has.
#[derive(Debug, Clone, Copy, Default)]
pub struct LegacyTables {
    /// anki_cards.
    pub cards: bool,
    /// vector_embeddings.
    pub vectors: bool,
    /// vec_embeddings, the vec0 index.
    pub vec0: bool,
}

/// What a copy of the legacy cards and vectors did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LegacyCopy {
    pub anki_cards: usize,
    pub vector_embeddings: usize,
    pub vectors: usize,
    /// Legacy rows of anki_cards / vector_embeddings whose id the store
    /// gives to another card or vector after the copy. (The agent's own
    /// updates of a copied row, a push or a re-embedding, are not
    /// conflicts.)
    pub conflicts: usize,
}

/// An instant to the second, as `migration_finished` holds them (shown to
/// the user as the migration's date).
fn now_secs() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Records a row as arrived now: its checksum and time.
const RECORD_ARRIVAL: &str =
    "INSERT INTO migration_progress (source, table_name, id, checksum, arrived_at)
     VALUES (?1, ?2, ?3, ?4, ?5)
     ON CONFLICT (source, table_name, id) DO UPDATE SET checksum = excluded.checksum,
         arrived_at = excluded.arrived_at";

/// Records a row as delivered by a finished migration: a row recorded as
/// arrived keeps the time it arrived.
const RECORD_DELIVERED: &str =
    "INSERT INTO migration_progress (source, table_name, id, checksum, arrived_at)
     VALUES (?1, ?2, ?3, ?4, ?5)
     ON CONFLICT (source, table_name, id) DO UPDATE SET checksum = excluded.checksum";

fn record_rows(
    tx: &rusqlite::Transaction<'_>,
    sql: &str,
    source: &str,
    rows: &[ArrivedRow],
    at: &str,
) -> Result<()> {
    let mut upsert = tx.prepare_cached(sql)?;
    for row in rows {
        upsert.execute(params![source, row.table, row.id, row.checksum, at])?;
    }
    Ok(())
}

impl Store {
    /// The rows recorded as arrived from the legacy file `source`.
    pub fn arrived_rows(&self, source: &str) -> Result<Vec<ArrivedRow>> {
        let mut stmt = self
            .conn
            .prepare("SELECT table_name, id, checksum FROM migration_progress WHERE source = ?1")?;
        let rows = stmt
            .query_map([source], |r| {
                Ok(ArrivedRow {
                    table: r.get(0)?,
                    id: r.get(1)?,
                    checksum: r.get(2)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Records rows of `source` as arrived now, each with its checksum.
    pub fn record_arrivals(&mut self, source: &str, rows: &[ArrivedRow]) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now = chrono::Utc::now().to_rfc3339();
        record_rows(&tx, RECORD_ARRIVAL, source, rows, &now)?;
        tx.commit()?;
        Ok(())
    }

    /// Drops the arrival records of rows of `source`, `(table, id)`, so that
    /// the next run sends them again.
    pub fn forget_arrivals<'a>(
        &mut self,
        source: &str,
        rows: impl IntoIterator<Item = (&'a str, i64)>,
    ) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut delete = tx.prepare_cached(
                "DELETE FROM migration_progress WHERE source = ?1 AND table_name = ?2 AND id = ?3",
            )?;
            for (table, id) in rows {
                delete.execute(params![source, table, id])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The finished migration of `source` to `api_url`, if there is one.
    pub fn finished_migration(
        &self,
        source: &str,
        api_url: &str,
    ) -> Result<Option<FinishedMigration>> {
        Ok(self
            .conn
            .query_row(
                "SELECT finished_at, rows, fingerprint FROM migration_finished
                 WHERE source = ?1 AND api_url = ?2",
                params![source, api_url],
                |r| {
                    Ok(FinishedMigration {
                        finished_at: r.get(0)?,
                        rows: r.get::<_, i64>(1)? as usize,
                        fingerprint: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    /// Records the migration of `source` to `api_url` as finished, in one
    /// transaction with `rows` (all it delivered) as arrived.
    pub fn finish_migration(
        &mut self,
        source: &str,
        api_url: &str,
        fingerprint: &str,
        rows: &[ArrivedRow],
    ) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now = now_secs();
        record_rows(&tx, RECORD_DELIVERED, source, rows, &now)?;
        tx.execute(
            "INSERT INTO migration_finished (source, finished_at, fingerprint, rows, api_url, checked_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?2)
             ON CONFLICT (source) DO UPDATE SET finished_at = excluded.finished_at,
                 fingerprint = excluded.fingerprint, rows = excluded.rows,
                 api_url = excluded.api_url, checked_at = excluded.checked_at",
            params![source, now, fingerprint, rows.len() as i64, api_url],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Notes that the finished migration of `source` was checked again now.
    pub fn migration_checked(&self, source: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE migration_finished SET checked_at = ?2 WHERE source = ?1",
            params![source, now_secs()],
        )?;
        Ok(())
    }

    /// Copies anki_cards, vector_embeddings and the vectors of the legacy
    /// file into the store, unchanged and with their ids; rows the store
    /// holds already are left alone. A legacy row whose id the store then
    /// gives to another card (other content or fragment) or vector (other
    /// source or model) is a conflict; the same card or vector updated
    /// since (a push records new fields, hash, status and maybe a new note
    /// id; `embed` a new text hash) is not.
    pub fn copy_legacy(&mut self, legacy: &Path, tables: LegacyTables) -> Result<LegacyCopy> {
        let path = legacy.to_str().ok_or_else(|| StoreError::NotUtf8 {
            path: PathBuf::from(legacy),
        })?;
        self.conn.execute("ATTACH DATABASE ?1 AS legacy", [path])?;
        let copied = self.copy_attached(tables);
        // Detached whatever happened: the connection outlives this copy.
        self.conn.execute("DETACH DATABASE legacy", [])?;
        copied
    }

    fn copy_attached(&mut self, tables: LegacyTables) -> Result<LegacyCopy> {
        let mut copy = LegacyCopy::default();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        if tables.cards {
            copy.anki_cards = tx.execute(
                "INSERT OR IGNORE INTO main.anki_cards SELECT * FROM legacy.anki_cards",
                [],
            )?;
        }
        if tables.vectors {
            copy.vector_embeddings = tx.execute(
                "INSERT OR IGNORE INTO main.vector_embeddings SELECT * FROM legacy.vector_embeddings",
                [],
            )?;
            if tables.vec0 {
                copy.vectors = tx.execute(
                    "INSERT INTO main.vec_embeddings (rowid, embedding, model, source_type)
                     SELECT v.rowid, v.embedding, e.model, e.source_type
                     FROM legacy.vec_embeddings v JOIN legacy.vector_embeddings e ON e.id = v.rowid
                     WHERE v.rowid NOT IN (SELECT rowid FROM main.vec_embeddings)",
                    [],
                )?;
                // The same vectors binary-quantised, for the coarse search.
                // Quantised here rather than by `vec_quantize_binary` in an
                // INSERT … SELECT: the bit subtype its result carries does
                // not survive the join, and vec0 then takes it for floats.
                let missing = tx
                    .prepare(
                        "SELECT v.rowid, v.embedding, e.model, e.source_type
                         FROM legacy.vec_embeddings v
                         JOIN legacy.vector_embeddings e ON e.id = v.rowid
                         WHERE v.rowid NOT IN (SELECT rowid FROM main.vec_bits_384)",
                    )?
                    .query_map([], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, Vec<u8>>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, String>(3)?,
                        ))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let mut insert = tx.prepare(
                    "INSERT INTO main.vec_bits_384 (rowid, embedding, model, source_type)
                     VALUES (?1, vec_bit(?2), ?3, ?4)",
                )?;
                for (rowid, blob, model, source_type) in missing {
                    let vector: Vec<f32> = blob
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect();
                    insert.execute(params![
                        rowid,
                        super::quantize_binary(&vector),
                        model,
                        source_type
                    ])?;
                }
                drop(insert);
            }
        }
        tx.commit()?;
        if tables.cards {
            copy.conflicts +=
                self.not_in_store("anki_cards", "id, learning_content_id, fragment_id")?;
        }
        if tables.vectors {
            copy.conflicts +=
                self.not_in_store("vector_embeddings", "id, source_type, source_id, model")?;
        }
        Ok(copy)
    }

    /// Legacy rows of `table` whose `identity` the store does not hold.
    fn not_in_store(&self, table: &str, identity: &str) -> Result<usize> {
        let n: i64 = self.conn.query_row(
            &format!(
                "SELECT count(*) FROM (SELECT {identity} FROM legacy.{table}
                 EXCEPT SELECT {identity} FROM main.{table})"
            ),
            [],
            |r| r.get(0),
        )?;
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use legacy_fixture::{LEGACY_VECTORS, legacy_schema};
    use rusqlite::Connection;

    #[test]
    fn cards_and_vectors_the_agent_updated_since_are_not_conflicts_but_taken_ids_are() {
        let dir = tempfile::tempdir().unwrap();
        let legacy_path = dir.path().join("anki_vector_db.db");
        let mut store = Store::open(&dir.path().join("agent.db")).unwrap();
        let legacy = Connection::open(&legacy_path).unwrap();
        legacy.execute_batch(&legacy_schema()).unwrap();
        legacy.execute_batch(LEGACY_VECTORS).unwrap();
        legacy
            .execute_batch(
                r#"
                INSERT INTO anki_cards VALUES (1, 10, NULL, 1700000000001, 'Thai', 'Basic',
                    '{"Front": "สวัสดี"}', 'aa', 'synced', NULL, NULL, NULL);
                INSERT INTO anki_cards VALUES (2, 11, NULL, 1700000000002, 'Thai', 'Basic',
                    '{"Front": "ขอบคุณ"}', 'bb', 'synced', NULL, NULL, NULL);
                INSERT INTO vector_embeddings VALUES (3, 'content_fragment', 7, 'm', 384, 'cc', NULL);
                "#,
            )
            .unwrap();
        drop(legacy);
        store
            .conn()
            .execute_batch(
                r#"
                -- Card 1 as a push left it: new fields and hash, a re-created note.
                INSERT INTO anki_cards VALUES (1, 10, NULL, 1700000000999, 'Thai', 'Basic',
                    '{"Front": "สวัสดีครับ"}', 'a2', 'synced', '2026-06-01T10:00:00Z', NULL, NULL);
                -- Id 2 held by a card of another content.
                INSERT INTO anki_cards VALUES (2, 99, NULL, NULL, 'Thai', 'Basic', '{}', NULL,
                    'pending', NULL, NULL, NULL);
                -- Vector 3 re-embedded from another text.
                INSERT INTO vector_embeddings VALUES (3, 'content_fragment', 7, 'm', 384, 'c2', NULL);
                "#,
            )
            .unwrap();
        let tables = LegacyTables {
            cards: true,
            vectors: true,
            vec0: false,
        };
        let copy = store.copy_legacy(&legacy_path, tables).unwrap();
        assert_eq!((copy.anki_cards, copy.vector_embeddings), (0, 0));
        assert_eq!(copy.conflicts, 1);
        let fields: String = store
            .conn()
            .query_row("SELECT fields FROM anki_cards WHERE id = 1", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(
            fields, r#"{"Front": "สวัสดีครับ"}"#,
            "the push's card was replaced"
        );
    }

    #[test]
    fn a_finished_migration_records_its_rows_and_forgotten_rows_are_sent_again() {
        let mut store = Store::open_in_memory().unwrap();
        let row = |table: &str, id: i64| ArrivedRow {
            table: table.into(),
            id,
            checksum: format!("{table}{id}"),
        };
        store
            .record_arrivals("legacy.db", &[row("rankings", 1), row("rankings", 2)])
            .unwrap();
        store
            .forget_arrivals("legacy.db", [("rankings", 2)])
            .unwrap();
        assert_eq!(
            store.arrived_rows("legacy.db").unwrap(),
            [row("rankings", 1)]
        );
        assert_eq!(
            store.finished_migration("legacy.db", "http://a").unwrap(),
            None
        );
        store
            .finish_migration("legacy.db", "http://a", "f", &[row("rankings", 3)])
            .unwrap();
        let finished = store
            .finished_migration("legacy.db", "http://a")
            .unwrap()
            .unwrap();
        assert_eq!((finished.rows, finished.fingerprint.as_str()), (1, "f"));
        assert_eq!(
            store.finished_migration("legacy.db", "http://b").unwrap(),
            None
        );
        store.migration_checked("legacy.db").unwrap();
        assert_eq!(store.arrived_rows("legacy.db").unwrap().len(), 2);
    }
}
