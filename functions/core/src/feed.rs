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
use serde_json::json;
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
                halving_on_507(limit, |limit| snapshot_page(db, 0, 0, &h, limit))
            }
            Some(Position::Snapshot { t, a, h }) => {
                halving_on_507(limit, |limit| snapshot_page(db, t, a, &h, limit))
            }
            Some(Position::Log { x, i }) => {
                halving_on_507(limit, |limit| log_page(db, x.clone(), i, limit))
            }
        }
    })?;
    Ok(respond::json_text(200, page.render()))
}

/// A page as [`content_model::feed::ChangePage`] reads it, with its changes
/// already JSON text: each row's JSON is made by PostgreSQL and only passes
/// through here, rather than crossing the host value by value and being
/// parsed and printed again.
struct Page {
    phase: &'static str,
    /// The members of `changes`, comma-separated.
    changes: String,
    next: Position,
    has_more: bool,
}

impl Page {
    fn render(&self) -> String {
        let next = serde_json::to_string(&cursor::encode(&self.next)).expect("strings serialise");
        format!(
            r#"{{"phase":"{}","changes":[{}],"next_cursor":{next},"has_more":{}}}"#,
            self.phase, self.changes, self.has_more
        )
    }
}

/// SQL for the change an upserted row of `t` makes, as JSON text.
fn upsert_sql(resource: &Resource) -> String {
    format!(
        r#"'{{"table":"{}","op":"upsert","id":' || t.id || ',"row":' || {} || '}}'"#,
        resource.table,
        resource.json_expr()
    )
}

/// Runs `page` for `limit` entries; when its rows pass the host's cap on
/// one query result (507), asks again with half as many, down to one.
fn halving_on_507(
    mut limit: i64,
    mut page: impl FnMut(i64) -> Result<Page, Problem>,
) -> Result<Page, Problem> {
    loop {
        match page(limit) {
            Err(problem) if problem.status == 507 && limit > 1 => limit /= 2,
            page => return page,
        }
    }
}

fn snapshot_page(
    db: &Db,
    mut table: usize,
    mut after: i32,
    h: &str,
    limit: i64,
) -> Result<Page, Problem> {
    let mut changes: Vec<String> = Vec::new();
    let mut taken = 0;
    while table < ALL.len() && taken < limit {
        let resource = ALL[table];
        let want = limit - taken;
        let mut params = Params::default();
        let rows_sql = crud::page_rows_sql(
            resource,
            &format!("t.id, {} AS change", upsert_sql(resource)),
            &format!("WHERE t.id > {}", params.push(ParameterValue::Int32(after))),
            &params.push(ParameterValue::Int64(want)),
            &mut params,
        );
        // One row for the table's part of the page, whatever its length.
        let sql = format!(
            "SELECT count(*), max(p.id), coalesce(bool_or(p._full), false),
                    string_agg(p.change, ',' ORDER BY p.id)
             FROM ({rows_sql}) AS p"
        );
        let rows = db.query(&sql, &params.values)?;
        let row = &rows.rows[0];
        let count = value::int(&row[0], "count")?.unwrap_or_default();
        let cut_short = value::boolean(&row[2], "_full")?.unwrap_or_default();
        if let Some(text) = value::text(&row[3], "changes")? {
            changes.push(text);
            after = value::int(&row[1], "max")?.unwrap_or_default() as i32;
        }
        taken += count;
        if cut_short {
            // A page of long rows: the rest of this table comes next.
            break;
        }
        if count < want {
            table += 1;
            after = 0;
        }
    }
    let next = if table < ALL.len() {
        Position::Snapshot {
            t: table,
            a: after,
            h: h.to_owned(),
        }
    } else {
        // (h, -1): every entry with xid >= h (log ids start at 1).
        check_horizon(db, h, -1)?;
        Position::Log {
            x: h.to_owned(),
            i: -1,
        }
    };
    Ok(Page {
        phase: "snapshot",
        changes: changes.join(","),
        next,
        // After the last snapshot page the log follows.
        has_more: true,
    })
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

/// The log after (`x`, `i`), `limit` entries at most, with the rows they
/// changed as they are now.
fn log_page(db: &Db, x: String, i: i64, limit: i64) -> Result<Page, Problem> {
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
    let mut current: HashMap<(&'static str, i32), String> = HashMap::new();
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
                "SELECT t.id, {} FROM {} AS t WHERE t.id IN ({})",
                upsert_sql(resource),
                resource.table,
                placeholders.join(", ")
            ),
            &params,
        )?;
        for row in &rows.rows {
            let id = value::int(&row[0], "id")?.unwrap_or_default() as i32;
            let change = value::text(&row[1], "change")?.unwrap_or_default();
            current.insert((resource.table, id), change);
        }
    }
    let changes: Vec<String> = order
        .iter()
        .map(
            |(resource, id)| match current.remove(&(resource.table, *id)) {
                Some(change) => change,
                // Deleted, now or by a later entry: a tombstone either way.
                None => format!(
                    r#"{{"table":"{}","op":"delete","id":{id}}}"#,
                    resource.table
                ),
            },
        )
        .collect();
    Ok(Page {
        phase: "log",
        changes: changes.join(","),
        next: Position::Log {
            x: last.0,
            i: last.1,
        },
        has_more,
    })
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
