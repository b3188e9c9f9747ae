//! The read mirror of the content tables and where it stands in the
//! change feed.

use std::sync::OnceLock;

use content_model::{Field, Kind, Table};
use rusqlite::types::Value as Sql;
use rusqlite::{Connection, TransactionBehavior, params, params_from_iter};
use serde::Serialize;
use serde_json::{Map, Value};

use super::{Result, Store, StoreError, failpoint, now};
use crate::feed::{Change, ChangePage, Op, Phase, Score};

/// Where the mirror stands in the change feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncPhase {
    /// Never pulled.
    None,
    /// Inside a full snapshot: rows not delivered yet may be stale.
    Snapshot,
    /// Following the log: the mirror equals the server as of the cursor.
    Log,
}

impl SyncPhase {
    fn as_str(self) -> &'static str {
        match self {
            SyncPhase::None => "none",
            SyncPhase::Snapshot => "snapshot",
            SyncPhase::Log => "log",
        }
    }

    fn parse(s: &str) -> SyncPhase {
        match s {
            "snapshot" => SyncPhase::Snapshot,
            "log" => SyncPhase::Log,
            _ => SyncPhase::None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncState {
    /// The API the mirror follows; a cursor means nothing to another one.
    pub source_url: Option<String>,
    pub cursor: Option<String>,
    pub phase: SyncPhase,
    pub snapshot_gen: i64,
    pub snapshot_started_at: Option<String>,
    pub last_pull_at: Option<String>,
    pub caught_up_at: Option<String>,
}

/// What the page being applied continues from.
#[derive(Debug, Clone, Copy)]
pub struct PageBase<'a> {
    /// The cursor this pull read from the store before fetching the page;
    /// applying fails if another pull moved it meanwhile.
    pub expected_cursor: Option<&'a str>,
    /// The page was fetched without a cursor: it opens a new snapshot.
    pub new_snapshot: bool,
    pub source_url: &'a str,
}

/// What applying one page did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Applied {
    pub upserts: usize,
    /// Of the upserts, contents and fragments: rows whose text may need a
    /// new vector.
    pub text_upserts: usize,
    pub deletes: usize,
    /// Rows removed at the end of a snapshot because it did not deliver them.
    pub swept: usize,
    /// Changes for tables this agent does not mirror.
    pub skipped: usize,
    pub snapshot_completed: bool,
}

impl Store {
    pub fn sync_state(&self) -> Result<SyncState> {
        read_sync_state(&self.conn)
    }

    /// Applies one feed page and moves the cursor past it, atomically: after
    /// a crash the store holds either the page and its cursor or neither.
    pub fn apply_page(&mut self, base: PageBase<'_>, page: &ChangePage) -> Result<Applied> {
        // IMMEDIATE takes the write lock before reading the cursor, so two
        // pulls cannot both read it and then both apply.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let state = read_sync_state(&tx)?;
        if state.cursor.as_deref() != base.expected_cursor {
            return Err(StoreError::CursorMoved);
        }
        let mut generation = state.snapshot_gen;
        let mut phase = state.phase;
        let mut snapshot_started_at = state.snapshot_started_at;
        if base.new_snapshot {
            generation += 1;
            phase = SyncPhase::Snapshot;
            snapshot_started_at = Some(now());
        }

        let mut applied = Applied::default();
        // The snapshot is complete once the feed moves to the log or runs
        // out: whatever it did not deliver is gone on the server. Sweeping
        // before applying the page is safe because the page's own upserts
        // carry the current generation either way.
        if phase == SyncPhase::Snapshot && (page.phase == Phase::Log || !page.has_more) {
            for table in content_model::ALL {
                applied.swept += tx.execute(
                    &format!("DELETE FROM {} WHERE sync_gen < ?1", table.name),
                    [generation],
                )?;
            }
            phase = SyncPhase::Log;
            applied.snapshot_completed = true;
        }

        for change in &page.changes {
            let Some(table) = Table::by_name(&change.table) else {
                applied.skipped += 1;
                continue;
            };
            match change.op {
                Op::Delete => {
                    tx.prepare_cached(&format!("DELETE FROM {} WHERE id = ?1", table.name))?
                        .execute([change.id])?;
                    applied.deletes += 1;
                }
                Op::Upsert => {
                    upsert(&tx, table, change, generation)?;
                    applied.upserts += 1;
                    if carries_text(table) {
                        applied.text_upserts += 1;
                    }
                }
            }
        }

        let stamp = now();
        tx.execute(
            "UPDATE sync_state SET source_url = ?1, cursor = ?2, phase = ?3, snapshot_gen = ?4,
                    snapshot_started_at = ?5, last_pull_at = ?6,
                    caught_up_at = CASE WHEN ?7 THEN ?6 ELSE caught_up_at END",
            params![
                base.source_url,
                page.next_cursor,
                phase.as_str(),
                generation,
                snapshot_started_at,
                stamp,
                !page.has_more,
            ],
        )?;
        failpoint("apply-page");
        tx.commit()?;
        Ok(applied)
    }

    /// Adds the columns the content model has and the mirror lacks (a
    /// column added on the server after this file was created). Rows
    /// mirrored before have no value in them, so the cursor is forgotten:
    /// the next pull reads a full snapshot, which fills them in.
    pub(super) fn widen_mirror(&mut self) -> Result<()> {
        // Looked at without a lock first: every command opens the store,
        // and a `search` must not wait for a running pull's write lock.
        if missing_columns(&self.conn)?.is_empty() {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Exclusive)?;
        let missing = missing_columns(&tx)?;
        for (table, column, sql_type) in &missing {
            tx.execute(
                &format!("ALTER TABLE {table} ADD COLUMN {column} {sql_type}"),
                [],
            )?;
        }
        if !missing.is_empty() {
            tx.execute("UPDATE sync_state SET cursor = NULL", [])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Forgets the cursor so that the next pull starts a full snapshot; the
    /// mirrored rows stay until that snapshot sweeps what is gone.
    pub fn reset_cursor(&mut self) -> Result<()> {
        self.conn
            .execute("UPDATE sync_state SET cursor = NULL", [])?;
        Ok(())
    }
}

fn read_sync_state(conn: &Connection) -> Result<SyncState> {
    Ok(conn.query_row(
        "SELECT source_url, cursor, phase, snapshot_gen, snapshot_started_at, last_pull_at, caught_up_at
         FROM sync_state WHERE singleton = 1",
        [],
        |r| {
            Ok(SyncState {
                source_url: r.get(0)?,
                cursor: r.get(1)?,
                phase: SyncPhase::parse(&r.get::<_, String>(2)?),
                snapshot_gen: r.get(3)?,
                snapshot_started_at: r.get(4)?,
                last_pull_at: r.get(5)?,
                caught_up_at: r.get(6)?,
            })
        },
    )?)
}

/// Whether a table's rows are embedded (their text may need a new vector).
fn carries_text(table: &Table) -> bool {
    [
        content_model::LEARNING_CONTENT.name,
        content_model::CONTENT_FRAGMENTS.name,
    ]
    .contains(&table.name)
}

/// A mirror column: a field under its JSON name, plus, for a score, its
/// value in hundredths beside the exact text, for ordering without floats
/// (`rank_score` → `rank_hundredths`).
pub(super) fn columns(table: &Table) -> Vec<(String, &'static str)> {
    let mut columns = Vec::new();
    for field in table.fields {
        columns.push((field.name.to_owned(), sqlite_type(field.kind)));
        if field.kind == Kind::Score {
            columns.push((hundredths_column(field), "INTEGER"));
        }
    }
    columns
}

fn hundredths_column(field: &Field) -> String {
    format!("{}_hundredths", field.name.trim_end_matches("_score"))
}

fn sqlite_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Id | Kind::Int | Kind::BigInt => "INTEGER",
        Kind::Text(_) | Kind::Enum(_) | Kind::Json | Kind::Score | Kind::Timestamp => "TEXT",
    }
}

/// `INSERT … ON CONFLICT (id) DO UPDATE` over every mirror column of
/// `table` and `sync_gen`, built once per table.
fn upsert_sql(table: &Table) -> &'static str {
    static SQL: OnceLock<Vec<(&'static str, String)>> = OnceLock::new();
    let all = SQL.get_or_init(|| {
        content_model::ALL
            .iter()
            .map(|t| {
                let mut names: Vec<String> = columns(t).into_iter().map(|(n, _)| n).collect();
                names.push("sync_gen".into());
                let placeholders: Vec<String> =
                    (1..=names.len()).map(|i| format!("?{i}")).collect();
                let updates: Vec<String> = names
                    .iter()
                    .filter(|n| *n != "id")
                    .map(|n| format!("{n} = excluded.{n}"))
                    .collect();
                let sql = format!(
                    "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT (id) DO UPDATE SET {}",
                    t.name,
                    names.join(", "),
                    placeholders.join(", "),
                    updates.join(", ")
                );
                (t.name, sql)
            })
            .collect()
    });
    all.iter()
        .find(|(name, _)| *name == table.name)
        .map(|(_, sql)| sql.as_str())
        .expect("every model table has an upsert")
}

fn upsert(
    conn: &Connection,
    table: &'static Table,
    change: &Change,
    generation: i64,
) -> Result<()> {
    let bad = |reason: String| StoreError::BadRow {
        table: table.name,
        id: change.id,
        reason,
    };
    let row = match &change.row {
        Some(Value::Object(row)) => row,
        Some(_) => return Err(bad("the row is not a JSON object".into())),
        None => return Err(bad("an upsert without a row".into())),
    };
    let mut values = Vec::with_capacity(table.fields.len() + 2);
    for field in table.fields {
        if field.kind == Kind::Id {
            values.push(Sql::Integer(change.id));
            continue;
        }
        push_cell(field, row, &mut values).map_err(bad)?;
    }
    values.push(Sql::Integer(generation));
    conn.prepare_cached(upsert_sql(table))?
        .execute(params_from_iter(values))?;
    Ok(())
}

/// Appends the mirror value(s) of one field of a row to `values`, checked against its kind: a
/// row this agent cannot read is refused rather than mirrored wrongly.
fn push_cell(field: &Field, row: &Map<String, Value>, values: &mut Vec<Sql>) -> Result<(), String> {
    let name = field.name;
    let value = match row.get(name) {
        None | Some(Value::Null) if field.nullable => {
            values.push(Sql::Null);
            if field.kind == Kind::Score {
                values.push(Sql::Null);
            }
            return Ok(());
        }
        None => return Err(format!("missing field `{name}`")),
        Some(Value::Null) => return Err(format!("`{name}` is null")),
        Some(value) => value,
    };
    let wrong = |expected: &str| format!("`{name}` is {value}, not {expected}");
    match field.kind {
        Kind::Id | Kind::Int | Kind::BigInt => {
            values.push(Sql::Integer(
                value.as_i64().ok_or_else(|| wrong("an integer"))?,
            ));
        }
        Kind::Text(_) | Kind::Enum(_) | Kind::Timestamp => {
            values.push(Sql::Text(
                value.as_str().ok_or_else(|| wrong("a string"))?.to_owned(),
            ));
        }
        Kind::Json => values.push(Sql::Text(value.to_string())),
        Kind::Score => {
            // The contract says a string; a bare number is mirrored as its
            // literal text rather than refused.
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return Err(wrong("a decimal string")),
            };
            let score = Score::parse(&text).ok_or_else(|| {
                format!("`{name}` {text:?} is not a decimal with at most two fractional digits")
            })?;
            values.push(Sql::Text(score.text));
            values.push(Sql::Integer(score.hundredths));
        }
    }
    Ok(())
}

/// The mirror columns of the content model that the file lacks, as
/// (table, column, type).
fn missing_columns(conn: &Connection) -> Result<Vec<(&'static str, String, &'static str)>> {
    let mut missing = Vec::new();
    for table in content_model::ALL {
        let present: Vec<String> = conn
            .prepare_cached("SELECT name FROM pragma_table_info(?1)")?
            .query_map([table.name], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for (column, sql_type) in columns(table) {
            if !present.contains(&column) {
                missing.push((table.name, column, sql_type));
            }
        }
    }
    Ok(missing)
}
