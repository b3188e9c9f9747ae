//! `GET /api/changes?cursor=&limit=`: the change feed.
//!
//! Without a cursor a client first gets a snapshot: every current row of
//! the four tables, parents first, page by page (`"phase": "snapshot"`).
//! The snapshot remembers the oldest transaction still running when it
//! began, `h`; every transaction older than `h` had finished, so its effects
//! are in the rows the snapshot reads later. The feed then continues with
//! the change log from `xid >= h` (`"phase": "log"`), in (xid, id) order,
//! handing out only transactions older than the oldest one still running:
//! a transaction that commits late can never be skipped. When the log was
//! pruned past a cursor, the answer is 410 and the client starts over.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use spin_sdk::pg4::ParameterValue;

use crate::crud::{self, Params};
use crate::cursor;
use crate::db::Db;
use crate::doc::Doc;
use crate::problem::Problem;
use crate::request::Query;
use crate::respond;
use crate::router::{Ctx, Handled};
use crate::schema::{ALL, Resource};
use crate::value;

pub const DEFAULT_LIMIT: i64 = content_model::limits::FEED_PAGE_DEFAULT as i64;
pub const MAX_LIMIT: i64 = content_model::limits::FEED_PAGE_MAX as i64;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "p")]
enum Position {
    /// Reading table `t` (index into [`ALL`]) after id `a`; the log resumes at `h`.
    #[serde(rename = "s")]
    Snapshot { t: usize, a: i32, h: String },
    /// After log entry (`x`, `i`).
    #[serde(rename = "l")]
    Log { x: String, i: i64 },
}

pub fn changes(ctx: &Ctx) -> Handled {
    let query = Query::parse(ctx.req, &["cursor", "limit"])?;
    let limit = query.limit(DEFAULT_LIMIT, MAX_LIMIT)?;
    let position = match query.get("cursor") {
        None | Some("") => None,
        Some(text) => Some(cursor::decode::<Position>("cursor", text)?),
    };
    if let Some(Position::Snapshot { t, .. }) = &position
        && *t > ALL.len()
    {
        return Err(Problem::bad_request(
            "cursor",
            "is not a cursor this API handed out",
        ));
    }
    let db = ctx.db()?;
    // One snapshot for the page: log entries, horizon and rows agree.
    let page = db.transaction(|db| {
        db.execute(
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY",
            &[],
        )?;
        match position {
            None => {
                let rows = db.query("SELECT pg_snapshot_xmin(pg_current_snapshot())::text", &[])?;
                let h = value::text(&rows.rows[0][0], "xmin")?.unwrap_or_default();
                snapshot_page(db, 0, 0, h, limit)
            }
            Some(Position::Snapshot { t, a, h }) => snapshot_page(db, t, a, h, limit),
            Some(Position::Log { x, i }) => log_page(db, &x, i, limit),
        }
    })?;
    Ok(respond::json(200, &page))
}

fn snapshot_page(
    db: &Db,
    mut table: usize,
    mut after: i32,
    h: String,
    limit: i64,
) -> Result<Value, Problem> {
    let mut changes = Vec::new();
    while table < ALL.len() && (changes.len() as i64) < limit {
        let resource = ALL[table];
        let want = limit - changes.len() as i64;
        let mut params = Params::default();
        let sql = crud::page_sql(
            resource,
            &format!("WHERE t.id > {}", params.push(ParameterValue::Int32(after))),
            &params.push(ParameterValue::Int64(want)),
            &mut params,
        );
        let rows = db.query(&sql, &params.values)?;
        for index in 0..rows.rows.len() {
            let (row, _) = resource.row_json(&rows, index)?;
            after = row["id"].as_i64().unwrap_or_default() as i32;
            changes.push(json!({"table": resource.table, "op": "upsert", "id": after, "row": row}));
        }
        if crud::cut_short(&rows)? {
            // A page of long rows: the rest of this table comes next.
            break;
        }
        if (rows.rows.len() as i64) < want {
            table += 1;
            after = 0;
        }
    }
    let next = if table < ALL.len() {
        Position::Snapshot {
            t: table,
            a: after,
            h,
        }
    } else {
        // (h, -1): every entry with xid >= h (log ids start at 1).
        check_horizon(db, &h, -1)?;
        Position::Log { x: h, i: -1 }
    };
    Ok(json!({
        "phase": "snapshot",
        "changes": changes,
        "next_cursor": cursor::encode(&next),
        // After the last snapshot page the log follows.
        "has_more": true,
    }))
}

/// 410 when entries after the cursor may already have been pruned.
fn check_horizon(db: &Db, x: &str, i: i64) -> Result<(), Problem> {
    let rows = db.query(
        "SELECT ($1::text::xid8, $2::bigint) < (xid, id) FROM change_log_horizon",
        &[ParameterValue::Str(x.to_owned()), ParameterValue::Int64(i)],
    )?;
    let expired = rows
        .rows
        .first()
        .map(|r| value::boolean(&r[0], "expired"))
        .transpose()?
        .flatten()
        .unwrap_or(false);
    if expired {
        return Err(Problem::new(410).kind("cursor-expired").detail(
            "the change log no longer reaches back to this cursor; start again without a cursor",
        ));
    }
    Ok(())
}

/// The log after (`x`, `i`), `limit` entries at most. Rows changed in the
/// log are fetched whole; when the rows of a page pass the host's cap on
/// one query result (507), the page is asked again with half the entries,
/// down to one.
fn log_page(db: &Db, x: &str, i: i64, mut limit: i64) -> Result<Value, Problem> {
    loop {
        match log_entries(db, x.to_owned(), i, limit) {
            Err(problem) if problem.status == 507 && limit > 1 => limit /= 2,
            page => return page,
        }
    }
}

fn log_entries(db: &Db, x: String, i: i64, limit: i64) -> Result<Value, Problem> {
    if x.is_empty() || !x.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Problem::bad_request(
            "cursor",
            "is not a cursor this API handed out",
        ));
    }
    check_horizon(db, &x, i)?;
    let entries = db.query(
        "SELECT c.xid::text, c.id, c.table_name, c.row_id, c.op
         FROM change_log c
         WHERE (c.xid, c.id) > ($1::text::xid8, $2::bigint)
           AND c.xid < pg_snapshot_xmin(pg_current_snapshot())
         ORDER BY c.xid, c.id
         LIMIT $3",
        &[
            ParameterValue::Str(x.clone()),
            ParameterValue::Int64(i),
            ParameterValue::Int64(limit),
        ],
    )?;
    let has_more = entries.rows.len() as i64 == limit;
    let mut last = (x, i);
    // What the page says of each row: only its last entry matters, since the
    // row is delivered as it is now.
    let mut order: Vec<(&'static Resource, i32)> = Vec::new();
    let mut deleted: HashMap<(&'static str, i32), bool> = HashMap::new();
    for entry in &entries.rows {
        let xid = value::text(&entry[0], "xid")?.unwrap_or_default();
        let id = value::int(&entry[1], "id")?.unwrap_or_default();
        last = (xid, id);
        let table = value::text(&entry[2], "table_name")?.unwrap_or_default();
        let Some(resource) = Resource::by_table(&table) else {
            continue;
        };
        let row_id = value::int(&entry[3], "row_id")?.unwrap_or_default() as i32;
        let op = value::text(&entry[4], "op")?.unwrap_or_default();
        order.retain(|(r, id)| !(r.table == resource.table && *id == row_id));
        order.push((resource, row_id));
        deleted.insert((resource.table, row_id), op == "delete");
    }
    let mut current: HashMap<(&'static str, i32), Value> = HashMap::new();
    for resource in ALL {
        let ids: Vec<i32> = order
            .iter()
            .filter(|(r, id)| r.table == resource.table && !deleted[&(r.table, *id)])
            .map(|(_, id)| *id)
            .collect();
        if ids.is_empty() {
            continue;
        }
        let placeholders: Vec<String> = (1..=ids.len()).map(|n| format!("${n}")).collect();
        let params: Vec<ParameterValue> = ids.iter().map(|id| ParameterValue::Int32(*id)).collect();
        let rows = db.query(
            &format!(
                "SELECT {} FROM {} AS t WHERE t.id IN ({})",
                resource.select_list(),
                resource.table,
                placeholders.join(", ")
            ),
            &params,
        )?;
        for index in 0..rows.rows.len() {
            let (row, _) = resource.row_json(&rows, index)?;
            let id = row["id"].as_i64().unwrap_or_default() as i32;
            current.insert((resource.table, id), row);
        }
    }
    let changes: Vec<Value> = order
        .iter()
        .map(
            |(resource, id)| match current.remove(&(resource.table, *id)) {
                Some(row) => json!({"table": resource.table, "op": "upsert", "id": id, "row": row}),
                // Deleted, now or by a later entry: a tombstone either way.
                None => json!({"table": resource.table, "op": "delete", "id": id}),
            },
        )
        .collect();
    Ok(json!({
        "phase": "log",
        "changes": changes,
        "next_cursor": cursor::encode(&Position::Log { x: last.0, i: last.1 }),
        "has_more": has_more,
    }))
}

pub fn changes_doc(_: Option<&'static Resource>) -> Doc {
    Doc::new()
        .query("cursor", json!({"type": "string"}))
        .query(
            "limit",
            json!({"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}),
        )
        .json("200", "A page of changes.", json!({
            "type": "object", "required": ["phase", "changes", "next_cursor", "has_more"],
            "properties": {
                "phase": {"enum": ["snapshot", "log"]},
                "changes": {"type": "array", "items": {"type": "object", "required": ["table", "op", "id"], "properties": {
                    "table": {"enum": ALL.iter().map(|r| r.table).collect::<Vec<_>>()},
                    "op": {"enum": ["upsert", "delete"]}, "id": {"type": "integer"}, "row": {"type": "object"}}}},
                "next_cursor": {"type": "string"}, "has_more": {"type": "boolean"}
            }
        }))
        .problem("410", "The cursor is older than the log; start again without one.")
}
