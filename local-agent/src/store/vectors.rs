//! Embeddings: their metadata rows and the sqlite-vec tables beside them
//! (one pair per dimension, see `vector_tables`), and the nearest-neighbour
//! search over them.

use std::collections::HashMap;

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::vector_tables::{self, VectorTables, quantize_binary};
use super::{Result, Store, StoreError, now};

/// The dimension of the legacy file's vectors (`vec_embeddings`,
/// `float[384]`), which its all-MiniLM-L6-v2 and the built-in n-grams share.
pub const LEGACY_DIMENSIONS: usize = 384;

/// Up to this many vectors of one model and kind, a search compares the
/// query with every one of them (exact); above it, it scans the
/// binary-quantised vectors for candidates and re-ranks those with the
/// float vectors. Chosen by measurement (the search benchmark's row 7c
/// note): at 2,000 vectors the two cost the same, at 5,000 the coarse scan
/// is slightly cheaper and at 10,000 a quarter cheaper; up to here exact
/// search costs a few milliseconds and misses nothing.
pub const EXACT_SEARCH_LIMIT: usize = 5_000;

/// How a KNN query finds its neighbours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchPlan {
    /// Compare with every float vector of the model and kind.
    Exact,
    /// Take the `candidates` nearest by Hamming distance between the
    /// binary-quantised vectors, then order those by their float distance.
    Coarse { candidates: usize },
    /// Exact for small collections, coarse (with [`SearchPlan::candidates`])
    /// above [`EXACT_SEARCH_LIMIT`].
    Auto,
}

impl SearchPlan {
    /// How many binary candidates a coarse search of `k` re-ranks: enough
    /// that the true ten nearest are among them at recall@10 ≥ 0.95 on
    /// 100k × 384 (the search benchmark measures it).
    pub fn candidates(k: usize) -> usize {
        (k * 10).max(100)
    }
}

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
    /// The dimension of that stored vector.
    pub stored_dimensions: Option<usize>,
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
    /// One KNN query among the vectors of `model` and `kind` with the
    /// dimension of `vector`; `None` for a neighbour whose row vanished
    /// between the two lookups (it still counts as seen). No vectors of that
    /// dimension: no neighbours.
    pub fn nearest(
        &self,
        model: &str,
        vector: &[f32],
        kind: SourceKind,
        k: usize,
    ) -> Result<Vec<Option<Neighbour>>> {
        self.nearest_with(model, vector, kind, k, SearchPlan::Auto)
    }

    /// [`Store::nearest`] with the plan chosen by the caller (the benchmark
    /// compares them).
    pub fn nearest_with(
        &self,
        model: &str,
        vector: &[f32],
        kind: SourceKind,
        k: usize,
        plan: SearchPlan,
    ) -> Result<Vec<Option<Neighbour>>> {
        let Some(tables) = vector_tables::find(&self.conn, vector.len())? else {
            return Ok(Vec::new());
        };
        let plan = match (plan, &tables.bit_table) {
            (_, None) => SearchPlan::Exact,
            (SearchPlan::Auto, Some(_)) => {
                if self.more_vectors_than(model, vector.len(), kind, EXACT_SEARCH_LIMIT)? {
                    SearchPlan::Coarse {
                        candidates: SearchPlan::candidates(k),
                    }
                } else {
                    SearchPlan::Exact
                }
            }
            (plan, Some(_)) => plan,
        };
        let floats = &tables.float_table;
        let knn = match (plan, &tables.bit_table) {
            (SearchPlan::Coarse { .. }, Some(bits)) => format!(
                // The join reads each candidate's float vector by rowid (a
                // point lookup in vec0), not the whole table.
                "coarse AS (
                    SELECT rowid FROM {bits}
                    WHERE embedding MATCH vec_bit(?5) AND k = ?6 AND model = ?3
                      AND source_type = ?4),
                 knn AS (
                    SELECT coarse.rowid AS rowid, vec_distance_l2(v.embedding, ?1) AS distance
                    FROM coarse JOIN {floats} v ON v.rowid = coarse.rowid
                    ORDER BY distance LIMIT ?2)"
            ),
            _ => format!(
                "knn AS (
                    SELECT rowid, distance FROM {floats}
                    WHERE embedding MATCH ?1 AND k = ?2 AND model = ?3 AND source_type = ?4)"
            ),
        };
        let rows = match kind {
            SourceKind::Content => {
                "SELECT knn.distance, c.id, c.id, c.native_text, c.translation, c.content_type, c.language
                 FROM knn
                 JOIN vector_embeddings e ON e.id = knn.rowid
                 LEFT JOIN learning_content c ON c.id = e.source_id
                 ORDER BY knn.distance"
            }
            SourceKind::Fragment => {
                "SELECT knn.distance, f.id, f.learning_content_id, f.native_text, f.body_text,
                        c.content_type, c.language
                 FROM knn
                 JOIN vector_embeddings e ON e.id = knn.rowid
                 LEFT JOIN content_fragments f ON f.id = e.source_id
                 LEFT JOIN learning_content c ON c.id = f.learning_content_id
                 ORDER BY knn.distance"
            }
        };
        let candidates = match plan {
            SearchPlan::Coarse { candidates } => candidates.max(k),
            _ => k,
        };
        let mut stmt = self.conn.prepare_cached(&format!("WITH {knn} {rows}"))?;
        let (blob, bits) = (vector_blob(vector), quantize_binary(vector));
        let (k_sql, source_type) = (k as i64, kind.source_type());
        let mut values: Vec<&dyn rusqlite::ToSql> = vec![&blob, &k_sql, &model, &source_type];
        let candidates = candidates as i64;
        if matches!(plan, SearchPlan::Coarse { .. }) {
            values.extend([&bits as &dyn rusqlite::ToSql, &candidates]);
        }
        let rows = stmt.query_map(values.as_slice(), |r| {
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
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Whether more than `limit` vectors of `model`, `dimensions` and
    /// `kind` are stored (counting stops there: a lookup in the model
    /// index, bounded whatever the store's size).
    fn more_vectors_than(
        &self,
        model: &str,
        dimensions: usize,
        kind: SourceKind,
        limit: usize,
    ) -> Result<bool> {
        let n: i64 = self
            .conn
            .prepare_cached(
                "SELECT count(*) FROM (SELECT 1 FROM vector_embeddings
                 WHERE model = ?1 AND dimensions = ?2 AND source_type = ?3 LIMIT ?4)",
            )?
            .query_row(
                params![
                    model,
                    dimensions as i64,
                    kind.source_type(),
                    limit as i64 + 1
                ],
                |r| r.get(0),
            )?;
        Ok(n as usize > limit)
    }

    /// The table pairs that hold vectors, by dimension.
    pub fn vector_tables(&self) -> Result<Vec<VectorTables>> {
        vector_tables::all(&self.conn)
    }

    /// Every row of `kind` with the text an embedding is made from and the
    /// hash of the text its current `model` vector (if any) was made from.
    pub fn embed_sources(&self, kind: SourceKind, model: &str) -> Result<Vec<EmbedSource>> {
        let sql = match kind {
            SourceKind::Content => {
                "SELECT c.id, c.title, c.native_text, c.translation, e.text_hash, e.dimensions
                 FROM learning_content c
                 LEFT JOIN vector_embeddings e
                   ON e.source_type = 'learning_content' AND e.source_id = c.id AND e.model = ?1
                 ORDER BY c.id"
            }
            SourceKind::Fragment => {
                "SELECT f.id, f.native_text, f.body_text, NULL, e.text_hash, e.dimensions
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
                stored_dimensions: r.get::<_, Option<i64>>(5)?.map(|d| d as usize),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Stores vectors of `model` in one transaction, replacing older vectors
    /// of the same row and model (whatever their dimension; vectors of other
    /// models stay). The vectors of one call share one dimension, of any
    /// size sqlite-vec holds; its tables are created the first time. Rows
    /// deleted from the mirror since their text was read are skipped.
    /// Returns how many were stored.
    pub fn put_vectors(&mut self, model: &str, vectors: &[NewVector<'_>]) -> Result<usize> {
        let Some(first) = vectors.first() else {
            return Ok(0);
        };
        let dimensions = first.vector.len();
        if let Some(v) = vectors.iter().find(|v| v.vector.len() != dimensions) {
            return Err(StoreError::Dimensions {
                got: v.vector.len(),
                expected: dimensions,
            });
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let tables = vector_tables::ensure(&tx, dimensions)?;
        let mut stored = 0;
        let stamp = now();
        let mut exists_sql = HashMap::new();
        for v in vectors {
            let table = match v.kind {
                SourceKind::Content => "learning_content",
                SourceKind::Fragment => "content_fragments",
            };
            let sql = exists_sql
                .entry(table)
                .or_insert_with(|| format!("SELECT EXISTS (SELECT 1 FROM {table} WHERE id = ?1)"));
            let exists: bool = tx.prepare_cached(sql)?.query_row([v.id], |r| r.get(0))?;
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
            if let Some(rowid) = existing {
                // Its delete triggers take the old vector out of whichever
                // dimension's tables hold it; the row comes back with its id.
                tx.prepare_cached("DELETE FROM vector_embeddings WHERE id = ?1")?
                    .execute([rowid])?;
            }
            tx.prepare_cached(
                "INSERT INTO vector_embeddings
                   (id, source_type, source_id, model, dimensions, text_hash, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                existing,
                v.kind.source_type(),
                v.id,
                model,
                dimensions as i64,
                v.text_hash,
                stamp
            ])?;
            let rowid = tx.last_insert_rowid();
            tx.prepare_cached(&format!(
                "INSERT INTO {} (rowid, embedding, model, source_type) VALUES (?1, ?2, ?3, ?4)",
                tables.float_table
            ))?
            .execute(params![
                rowid,
                vector_blob(v.vector),
                model,
                v.kind.source_type()
            ])?;
            if let Some(bits) = &tables.bit_table {
                tx.prepare_cached(&format!(
                    "INSERT INTO {bits} (rowid, embedding, model, source_type)
                     VALUES (?1, vec_bit(?2), ?3, ?4)"
                ))?
                .execute(params![
                    rowid,
                    quantize_binary(v.vector),
                    model,
                    v.kind.source_type()
                ])?;
            }
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
        // The delete triggers take each one's vectors along.
        let removed = tx.execute(
            &format!("DELETE FROM vector_embeddings WHERE id IN ({orphans})"),
            [],
        )?;
        for tables in vector_tables::all(&tx)? {
            for table in std::iter::once(&tables.float_table).chain(&tables.bit_table) {
                tx.execute(
                    &format!(
                        "DELETE FROM {table} WHERE rowid NOT IN (SELECT id FROM vector_embeddings)"
                    ),
                    [],
                )?;
            }
        }
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
