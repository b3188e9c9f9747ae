//! Bulk import for migrations, service role only: rows keep their ids
//! (inserted, or updated when the id exists), with the same validation as
//! the normal endpoints; a finish step moves the id sequences past them.

use serde_json::{Value, json};

use crate::crud::{self, Params};
use crate::doc::{self, Doc};
use crate::problem::Problem;
use crate::request::{self, Query};
use crate::respond;
use crate::router::{Ctx, Handled};
use crate::schema::{ALL, CONTENT, FRAGMENTS, Mode, RANKINGS, Resource};

/// Rows one request may carry.
pub const MAX_BATCH: usize = content_model::limits::IMPORT_BATCH_ROWS;

pub fn content(ctx: &Ctx) -> Handled {
    batch(ctx, &CONTENT)
}

pub fn fragments(ctx: &Ctx) -> Handled {
    batch(ctx, &FRAGMENTS)
}

pub fn rankings(ctx: &Ctx) -> Handled {
    batch(ctx, &RANKINGS)
}

/// `POST /api/import/<path>` with `{"rows": [...]}`: all or nothing. A bad
/// row fails the batch with its position in the field (`rows[3].title`).
fn batch(ctx: &Ctx, resource: &'static Resource) -> Handled {
    Query::parse(ctx.req, &[])?;
    let mut body = request::json_object(ctx)?;
    let rows = match body.remove("rows") {
        Some(Value::Array(rows)) => rows,
        _ => return Err(Problem::invalid("rows", "must be an array of row objects")),
    };
    if let Some(extra) = body.keys().next() {
        return Err(Problem::invalid(
            extra.as_str(),
            "is not a member of an import batch",
        ));
    }
    if rows.len() > MAX_BATCH {
        return Err(Problem::invalid(
            "rows",
            format!("holds {} rows; send at most {MAX_BATCH}", rows.len()),
        ));
    }
    let mut statements = Vec::with_capacity(rows.len());
    for (index, row) in rows.iter().enumerate() {
        let at = |problem: Problem| renamed(problem, index);
        let object = row
            .as_object()
            .ok_or_else(|| Problem::invalid(format!("rows[{index}]"), "must be an object"))?;
        let assignments = resource.input(object, Mode::Import).map_err(at)?;
        let mut params = Params::default();
        let sql = crud::insert_sql(resource.table, &assignments, &mut params, true);
        statements.push((sql, params.values));
    }
    let db = ctx.db()?;
    db.transaction(|db| {
        for (index, (sql, params)) in statements.iter().enumerate() {
            db.execute(sql, params).map_err(|p| renamed(p, index))?;
        }
        Ok(())
    })?;
    Ok(respond::json(200, &json!({ "imported": rows.len() })))
}

/// Puts the row's position in front of each field at fault.
fn renamed(mut problem: Problem, index: usize) -> Problem {
    for error in &mut problem.errors {
        error.field = format!("rows[{index}].{}", error.field);
    }
    problem.detail = Some(format!(
        "rows[{index}]: {}",
        problem.detail.unwrap_or_default()
    ));
    problem
}

/// `POST /api/import/finish`: each id sequence continues after the highest
/// id, so rows created later never collide with imported ones.
pub fn finish(ctx: &Ctx) -> Handled {
    Query::parse(ctx.req, &[])?;
    let db = ctx.db()?;
    let mut next = serde_json::Map::new();
    for resource in ALL {
        let rows = db.query(
            &format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), coalesce(max(id), 0) + 1, false)
                 FROM {table}",
                table = resource.table
            ),
            &[],
        )?;
        let value = crate::value::int(&rows.rows[0][0], "setval")?;
        next.insert(resource.table.to_owned(), value.into());
    }
    Ok(respond::json(200, &json!({ "next_ids": next })))
}

pub fn rows_doc(resource: Option<&'static Resource>) -> Doc {
    Doc::new()
        .json_body(
            json!({"type": "object", "required": ["rows"], "properties": {
            "rows": {"type": "array", "maxItems": MAX_BATCH, "items": doc::row(resource)}}}),
        )
        .json(
            "200",
            "All rows stored (inserted, or updated by id).",
            json!({"type": "object"}),
        )
        .problem(
            "422",
            "A row is invalid; errors name rows[i].field. Nothing was stored.",
        )
}

pub fn finish_doc(_: Option<&'static Resource>) -> Doc {
    Doc::new().json(
        "200",
        "Sequences moved past the highest ids.",
        json!({"type": "object"}),
    )
}
