//! Where vectors of each dimension live: one sqlite-vec `vec0` table of
//! float vectors per dimension (partitioned by model, so a KNN query only
//! reads its model's vectors) and, beside it, a `bit[N]` table holding the
//! same vectors binary-quantised (one bit per dimension, its sign) for the
//! coarse scan of large collections; the kind (`source_type`) is a
//! partition key too, as a metadata column is checked row by row by
//! sqlite-vec 0.1.9 (six times the cost of the coarse scan of 100k
//! vectors). `vector_tables` lists them; the
//! 384-dimensional pair is the legacy file's `vec_embeddings` and
//! `vec_bits_384`, created by the schema, the others are created the first
//! time a vector of their dimension is stored.

use rusqlite::{OptionalExtension, Transaction};

use super::{Result, StoreError};

/// The largest dimension sqlite-vec accepts in a `vec0` column.
pub const MAX_DIMENSIONS: usize = 8192;

/// The float and bit tables of one dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VectorTables {
    pub dimensions: usize,
    pub float_table: String,
    /// `None` when the dimension is not a multiple of 8 (sqlite-vec's
    /// `bit[N]` needs whole bytes): such vectors are always searched exactly.
    pub bit_table: Option<String>,
}

/// The binary quantisation sqlite-vec's `vec_quantize_binary` computes:
/// bit `i` (least significant first within each byte) is set when
/// component `i` is positive.
pub fn quantize_binary(vector: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; vector.len().div_ceil(8)];
    for (i, x) in vector.iter().enumerate() {
        if *x > 0.0 {
            out[i / 8] |= 1 << (i % 8);
        }
    }
    out
}

/// The tables of `dimensions`, if any vector of that size was stored.
pub(super) fn find(conn: &rusqlite::Connection, dimensions: usize) -> Result<Option<VectorTables>> {
    Ok(conn
        .prepare_cached("SELECT float_table, bit_table FROM vector_tables WHERE dimensions = ?1")?
        .query_row([dimensions as i64], |r| {
            Ok(VectorTables {
                dimensions,
                float_table: r.get(0)?,
                bit_table: r.get(1)?,
            })
        })
        .optional()?)
}

/// Every table pair, smallest dimension first.
pub(super) fn all(conn: &rusqlite::Connection) -> Result<Vec<VectorTables>> {
    let mut stmt = conn.prepare_cached(
        "SELECT dimensions, float_table, bit_table FROM vector_tables ORDER BY dimensions",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(VectorTables {
            dimensions: r.get::<_, i64>(0)? as usize,
            float_table: r.get(1)?,
            bit_table: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// The tables of `dimensions`, created (with the trigger that removes a
/// vector from them when its `vector_embeddings` row goes) when missing.
pub(super) fn ensure(tx: &Transaction<'_>, dimensions: usize) -> Result<VectorTables> {
    if dimensions == 0 || dimensions > MAX_DIMENSIONS {
        return Err(StoreError::DimensionsOutOfRange { got: dimensions });
    }
    if let Some(tables) = find(tx, dimensions)? {
        return Ok(tables);
    }
    // Names are made from the number only: nothing from outside reaches
    // the SQL text.
    let float_table = format!("vec_embeddings_{dimensions}");
    let bit_table = dimensions
        .is_multiple_of(8)
        .then(|| format!("vec_bits_{dimensions}"));
    tx.execute_batch(&format!(
        "CREATE VIRTUAL TABLE {float_table} USING vec0(
             embedding float[{dimensions}],
             model text partition key,
             source_type text partition key
         );"
    ))?;
    let mut removal = format!("DELETE FROM {float_table} WHERE rowid = OLD.id;");
    if let Some(bits) = &bit_table {
        tx.execute_batch(&format!(
            "CREATE VIRTUAL TABLE {bits} USING vec0(
                 embedding bit[{dimensions}],
                 model text partition key,
                 source_type text partition key
             );"
        ))?;
        removal.push_str(&format!(" DELETE FROM {bits} WHERE rowid = OLD.id;"));
    }
    tx.execute_batch(&format!(
        "CREATE TRIGGER vector_embeddings_drop_vector_{dimensions}
             AFTER DELETE ON vector_embeddings BEGIN {removal} END;"
    ))?;
    tx.execute(
        "INSERT INTO vector_tables (dimensions, float_table, bit_table) VALUES (?1, ?2, ?3)",
        rusqlite::params![dimensions as i64, float_table, bit_table],
    )?;
    Ok(VectorTables {
        dimensions,
        float_table,
        bit_table,
    })
}
