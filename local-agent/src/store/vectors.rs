//! Embeddings: their metadata rows and the sqlite-vec index beside them.

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Result, Store, StoreError, now};

/// Dimensions of every vector in `vec_embeddings` (the legacy table's size).
pub const DIMENSIONS: usize = 384;

/// Which mirror table a vector belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Content,
    Fragment,
}

impl SourceKind {
    /// The `vector_embeddings.source_type` value, as the legacy file writes it.
    pub fn source_type(self) -> &'static str {
        match self {
            SourceKind::Content => "learning_content",
            SourceKind::Fragment => "content_fragment",
        }
    }
}

/// A row whose text may need a (new) vector.
#[derive(Debug, Clone)]
pub struct EmbedSource {
    pub kind: SourceKind,
    pub id: i64,
    pub text: String,
    /// sha256 of the text the stored vector of this model was made from.
    pub stored_hash: Option<String>,
}

/// A computed vector ready to be stored.
#[derive(Debug, Clone)]
pub struct NewVector<'a> {
    pub kind: SourceKind,
    pub id: i64,
    pub text_hash: &'a str,
    pub vector: &'a [f32],
}

/// The sha256 of a text, as lowercase hex (the `text_hash` column).
pub fn text_hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Little-endian f32s, the blob layout sqlite-vec reads for `float[N]`.
pub fn vector_blob(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Neighbour {
    pub kind: SourceKind,
    pub id: i64,
    /// L2 distance between unit vectors: 0 is identical, 2 opposite.
    pub distance: f64,
    pub learning_content_id: Option<i64>,
    pub native_text: String,
    /// The translation (contents) or body text (fragments).
    pub meaning: String,
    pub content_type: Option<String>,
    pub language: Option<String>,
}

impl Store {
    /// One KNN query; `None` for a neighbour whose row vanished between the
    /// two lookups (it still counts as seen).
    pub fn nearest(
        &self,
        model: &str,
        vector: &[f32],
        kind: SourceKind,
        k: usize,
    ) -> Result<Vec<Option<Neighbour>>> {
        let sql = match kind {
            SourceKind::Content => {
                "WITH knn AS (
                    SELECT rowid, distance FROM vec_embeddings
                    WHERE embedding MATCH ?1 AND k = ?2 AND model = ?3 AND source_type = ?4)
                 SELECT knn.distance, c.id, c.id, c.native_text, c.translation, c.content_type, c.language
                 FROM knn
                 JOIN vector_embeddings e ON e.id = knn.rowid
                 LEFT JOIN learning_content c ON c.id = e.source_id
                 ORDER BY knn.distance"
            }
            SourceKind::Fragment => {
                "WITH knn AS (
                    SELECT rowid, distance FROM vec_embeddings
                    WHERE embedding MATCH ?1 AND k = ?2 AND model = ?3 AND source_type = ?4)
                 SELECT knn.distance, f.id, f.learning_content_id, f.native_text, f.body_text,
                        c.content_type, c.language
                 FROM knn
                 JOIN vector_embeddings e ON e.id = knn.rowid
                 LEFT JOIN content_fragments f ON f.id = e.source_id
                 LEFT JOIN learning_content c ON c.id = f.learning_content_id
                 ORDER BY knn.distance"
            }
        };
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map(
            params![vector_blob(vector), k as i64, model, kind.source_type()],
            |r| {
                let id: Option<i64> = r.get(1)?;
                let Some(id) = id else { return Ok(None) };
                Ok(Some(Neighbour {
                    kind,
                    id,
                    distance: r.get(0)?,
                    learning_content_id: r.get(2)?,
                    native_text: r.get(3)?,
                    meaning: r.get(4)?,
                    content_type: r.get(5)?,
                    language: r.get(6)?,
                }))
            },
        )?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Every row of `kind` with the text an embedding is made from and the
    /// hash of the text its current `model` vector (if any) was made from.
    pub fn embed_sources(&self, kind: SourceKind, model: &str) -> Result<Vec<EmbedSource>> {
        let sql = match kind {
            SourceKind::Content => {
                "SELECT c.id, c.title, c.native_text, c.translation, e.text_hash
                 FROM learning_content c
                 LEFT JOIN vector_embeddings e
                   ON e.source_type = 'learning_content' AND e.source_id = c.id AND e.model = ?1
                 ORDER BY c.id"
            }
            SourceKind::Fragment => {
                "SELECT f.id, f.native_text, f.body_text, NULL, e.text_hash
                 FROM content_fragments f
                 LEFT JOIN vector_embeddings e
                   ON e.source_type = 'content_fragment' AND e.source_id = f.id AND e.model = ?1
                 ORDER BY f.id"
            }
        };
        let mut stmt = self.conn.prepare(sql)?;
        let rows = stmt.query_map([model], |r| {
            let parts: [Option<String>; 3] = [r.get(1)?, r.get(2)?, r.get(3)?];
            Ok(EmbedSource {
                kind,
                id: r.get(0)?,
                text: source_text(parts.iter().flatten().map(String::as_str)),
                stored_hash: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Stores vectors of `model` in one transaction, replacing older vectors
    /// of the same row and model. Rows deleted from the mirror since their
    /// text was read are skipped. Returns how many were stored.
    pub fn put_vectors(&mut self, model: &str, vectors: &[NewVector<'_>]) -> Result<usize> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut stored = 0;
        let stamp = now();
        for v in vectors {
            if v.vector.len() != DIMENSIONS {
                return Err(StoreError::Dimensions {
                    got: v.vector.len(),
                    expected: DIMENSIONS,
                });
            }
            let table = match v.kind {
                SourceKind::Content => "learning_content",
                SourceKind::Fragment => "content_fragments",
            };
            let exists: bool = tx
                .prepare_cached(&format!(
                    "SELECT EXISTS (SELECT 1 FROM {table} WHERE id = ?1)"
                ))?
                .query_row([v.id], |r| r.get(0))?;
            if !exists {
                continue;
            }
            let existing: Option<i64> = tx
                .prepare_cached(
                    "SELECT id FROM vector_embeddings
                     WHERE source_type = ?1 AND source_id = ?2 AND model = ?3",
                )?
                .query_row(params![v.kind.source_type(), v.id, model], |r| r.get(0))
                .optional()?;
            let rowid = match existing {
                Some(rowid) => {
                    tx.prepare_cached(
                        "UPDATE vector_embeddings
                         SET dimensions = ?2, text_hash = ?3, created_at = ?4 WHERE id = ?1",
                    )?
                    .execute(params![
                        rowid,
                        DIMENSIONS as i64,
                        v.text_hash,
                        stamp
                    ])?;
                    tx.prepare_cached("DELETE FROM vec_embeddings WHERE rowid = ?1")?
                        .execute([rowid])?;
                    rowid
                }
                None => {
                    tx.prepare_cached(
                        "INSERT INTO vector_embeddings
                           (source_type, source_id, model, dimensions, text_hash, created_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )?
                    .execute(params![
                        v.kind.source_type(),
                        v.id,
                        model,
                        DIMENSIONS as i64,
                        v.text_hash,
                        stamp
                    ])?;
                    tx.last_insert_rowid()
                }
            };
            tx.prepare_cached(
                "INSERT INTO vec_embeddings (rowid, embedding, model, source_type)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                rowid,
                vector_blob(v.vector),
                model,
                v.kind.source_type()
            ])?;
            stored += 1;
        }
        tx.commit()?;
        Ok(stored)
    }

    /// Removes vectors whose row is no longer mirrored (the delete triggers
    /// cover deletes made through this store; this also covers vectors that
    /// arrived without their rows, e.g. copied from a legacy file) and index
    /// entries without metadata. Returns how many metadata rows went.
    pub fn prune_orphan_vectors(&mut self) -> Result<usize> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let orphans = "SELECT e.id FROM vector_embeddings e
             WHERE (e.source_type = 'learning_content'
                    AND NOT EXISTS (SELECT 1 FROM learning_content c WHERE c.id = e.source_id))
                OR (e.source_type = 'content_fragment'
                    AND NOT EXISTS (SELECT 1 FROM content_fragments f WHERE f.id = e.source_id))";
        // The delete trigger takes each one's vector along.
        let removed = tx.execute(
            &format!("DELETE FROM vector_embeddings WHERE id IN ({orphans})"),
            [],
        )?;
        tx.execute(
            "DELETE FROM vec_embeddings WHERE rowid NOT IN (SELECT id FROM vector_embeddings)",
            [],
        )?;
        tx.commit()?;
        Ok(removed)
    }
}

/// The text embedded for a row: its fields joined by newlines. Kept in one
/// place because the text hash that decides re-embedding depends on it.
pub fn source_text<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    parts
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}
