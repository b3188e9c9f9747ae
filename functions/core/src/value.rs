//! Reading result cells. The SQL of this crate selects every value in a
//! form whose mapping is the same on every Spin host: integers, text and
//! bytes; JSON, numerics and timestamps arrive as their text.

use serde_json::Value;
use spin_sdk::pg4::{DbValue, RowSet};

use crate::problem::Problem;

/// A cell the SQL promised but the host did not deliver: a bug, not input.
fn unexpected(what: &str, cell: &DbValue) -> Problem {
    eprintln!("unexpected database value for {what}: {cell:?}");
    Problem::new(500).detail("the database returned an unexpected value")
}

pub fn int(cell: &DbValue, what: &str) -> Result<Option<i64>, Problem> {
    match cell {
        DbValue::DbNull => Ok(None),
        DbValue::Int16(v) => Ok(Some(i64::from(*v))),
        DbValue::Int32(v) => Ok(Some(i64::from(*v))),
        DbValue::Int64(v) => Ok(Some(*v)),
        other => Err(unexpected(what, other)),
    }
}

pub fn text(cell: &DbValue, what: &str) -> Result<Option<String>, Problem> {
    match cell {
        DbValue::DbNull => Ok(None),
        DbValue::Str(v) => Ok(Some(v.clone())),
        other => Err(unexpected(what, other)),
    }
}

pub fn bytes(cell: &DbValue, what: &str) -> Result<Option<Vec<u8>>, Problem> {
    match cell {
        DbValue::DbNull => Ok(None),
        DbValue::Binary(v) => Ok(Some(v.clone())),
        other => Err(unexpected(what, other)),
    }
}

/// Like [`bytes`], taking the cell: a large value is moved, not copied.
pub fn into_bytes(cell: DbValue, what: &str) -> Result<Option<Vec<u8>>, Problem> {
    match cell {
        DbValue::DbNull => Ok(None),
        DbValue::Binary(v) => Ok(Some(v)),
        other => Err(unexpected(what, &other)),
    }
}

pub fn boolean(cell: &DbValue, what: &str) -> Result<Option<bool>, Problem> {
    match cell {
        DbValue::DbNull => Ok(None),
        DbValue::Boolean(v) => Ok(Some(*v)),
        other => Err(unexpected(what, other)),
    }
}

/// JSON text (selected as `col::text`) as a value. serde_json is built with
/// `arbitrary_precision`, so numbers keep their exact digits.
pub fn json(cell: &DbValue, what: &str) -> Result<Value, Problem> {
    match text(cell, what)? {
        None => Ok(Value::Null),
        Some(text) => serde_json::from_str(&text).map_err(|_| unexpected(what, cell)),
    }
}

/// The index of a column by name. Only for a result with rows: hosts take
/// the column list from the first row, so an empty result may have none.
pub fn column(rows: &RowSet, name: &str) -> usize {
    rows.columns
        .iter()
        .position(|c| c.name == name)
        .unwrap_or_else(|| panic!("the query selects no column {name}"))
}
