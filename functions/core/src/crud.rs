//! List, create, read, update and delete for any declared [`Resource`].

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use spin_sdk::http::{Method, Response};
use spin_sdk::pg4::{ParameterValue, RowSet};

use crate::auth::Role;
use crate::cursor;
use crate::doc::{self, Doc};
use crate::problem::Problem;
use crate::request::{self, Query};
use crate::respond;
use crate::router::{Ctx, Handled, Op, Route};
use crate::schema::{Assignment, Filter, Mode, Resource};
use crate::value;

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;

/// The most row text one page of a list carries. A Spin host refuses a
/// query result over 128 MiB, and 500 rows of long texts can pass that: a
/// page is cut short at this budget instead (always keeping its first
/// row), and its cursor leads to the rest.
pub const PAGE_BYTES: i64 = content_model::limits::PAGE_BYTES as i64;

/// The five routes of a resource: `/api/<path>` and `/api/<path>/:id`.
/// `get` is the single-row handler and `get_doc` its description (content
/// swaps in its `expand`).
pub fn routes(
    resource: &'static Resource,
    get_op: Op,
    get: fn(&Ctx) -> Handled,
    get_doc: fn(Option<&'static Resource>) -> Doc,
) -> Vec<Route> {
    let collection = resource.collection_route;
    let item = resource.item_route;
    let anyone = Some(Role::Anon);
    let writer = Some(Role::Authenticated);
    let mut routes =
        vec![Route::new(Op::List, Method::Get, collection, anyone, list, list_doc).on(resource)];
    if resource.json_create {
        routes.push(
            Route::new(
                Op::Create,
                Method::Post,
                collection,
                writer,
                create,
                create_doc,
            )
            .on(resource),
        );
    }
    routes.extend([
        Route::new(get_op, Method::Get, item, anyone, get, get_doc).on(resource),
        Route::new(Op::Update, Method::Patch, item, writer, update, update_doc).on(resource),
        Route::new(Op::Delete, Method::Delete, item, writer, delete, delete_doc).on(resource),
    ]);
    routes
}

fn list_doc(resource: Option<&'static Resource>) -> Doc {
    let r = resource.expect("list routes have a resource");
    let mut doc = Doc::new();
    for (param, filter) in r.filters {
        let schema = match filter {
            Filter::IntEq(_) => json!({"type": "integer", "minimum": 1}),
            _ => json!({"type": "string", "maxLength": 200}),
        };
        doc = doc.query(param, schema);
    }
    doc.query(
        "limit",
        json!({"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}),
    )
    .query_described(
        "cursor",
        json!({"type": "string"}),
        "The next value of the previous page.",
    )
    .json(
        "200",
        "A page, ordered by id.",
        json!({"type": "object", "required": ["items", "next"], "properties": {
            "items": {"type": "array", "items": doc::row(resource)},
            "next": {"type": ["string", "null"]}}}),
    )
    .problem("400", "An unknown or malformed parameter.")
}

fn create_doc(resource: Option<&'static Resource>) -> Doc {
    let row = doc::row(resource);
    Doc::new()
        .json_body(row.clone())
        .json("201", "Created; Location and ETag name it.", row)
        .problem("415", "Not application/json.")
        .problem("422", "A field is invalid; errors name it.")
        .problem("409", "Conflicts with an existing row.")
}

/// A row by id, with the conditional-request headers every row read takes.
pub fn get_doc(resource: Option<&'static Resource>) -> Doc {
    get_doc_with(Doc::new(), doc::row(resource))
}

/// [`get_doc`] with more parameters before it and another body schema.
pub fn get_doc_with(doc: Doc, body: Value) -> Doc {
    doc.header("If-None-Match", None)
        .json("200", "The row, with its ETag.", body)
        .empty("304", "Not modified.")
        .problem("404", "No such row.")
}

fn update_doc(resource: Option<&'static Resource>) -> Doc {
    Doc::new()
        .header("If-Match", None)
        .json_body(json!({"type": "object",
            "description": "Members present are set (null clears a nullable field); members absent stay; unknown members are refused."}))
        .json("200", "The updated row.", doc::row(resource))
        .problem("404", "No such row.")
        .problem("412", "If-Match does not match the current ETag.")
        .problem("422", "A field is invalid; errors name it.")
}

fn delete_doc(_: Option<&'static Resource>) -> Doc {
    Doc::new()
        .header("If-Match", None)
        .empty("204", "Deleted, with its children.")
        .problem("404", "No such row.")
        .problem("412", "If-Match does not match the current ETag.")
}

#[derive(Serialize, Deserialize)]
struct Position {
    after: i32,
}

/// Builds `$n` placeholders while collecting their values.
#[derive(Default)]
pub struct Params {
    pub values: Vec<ParameterValue>,
}

impl Params {
    pub fn push(&mut self, value: ParameterValue) -> String {
        self.values.push(value);
        format!("${}", self.values.len())
    }
}

/// `GET /api/<path>`: filtered, keyset-paginated by id.
pub fn list(ctx: &Ctx) -> Handled {
    let resource = ctx.resource();
    let mut known: Vec<&str> = resource.filters.iter().map(|(name, _)| *name).collect();
    known.extend(["limit", "cursor"]);
    let query = Query::parse(ctx.req, &known)?;
    let limit = query.limit(DEFAULT_LIMIT, MAX_LIMIT)?;
    let mut params = Params::default();
    let mut conditions = Vec::new();
    for (name, filter) in resource.filters {
        let Some(condition) = filter_condition(&query, name, filter, &mut params)? else {
            continue;
        };
        conditions.push(condition);
    }
    if let Some(text) = query.get("cursor") {
        let position: Position = cursor::decode("cursor", text)?;
        conditions.push(format!(
            "t.id > {}",
            params.push(ParameterValue::Int32(position.after))
        ));
    }
    let where_clause = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let sql = page_sql(
        resource,
        &where_clause,
        &params.push(ParameterValue::Int64(limit + 1)),
        &mut params,
    );
    let rows = ctx.db()?.query(&sql, &params.values)?;
    let mut items = Vec::with_capacity(rows.rows.len());
    for index in 0..rows.rows.len().min(limit as usize) {
        items.push(resource.row_json(&rows, index)?.0);
    }
    let next = if rows.rows.len() as i64 > limit || cut_short(&rows)? {
        let last = items
            .last()
            .and_then(|item| item["id"].as_i64())
            .unwrap_or_default();
        Value::from(cursor::encode(&Position { after: last as i32 }))
    } else {
        Value::Null
    };
    Ok(respond::json(200, &json!({ "items": items, "next": next })))
}

/// A keyset page of `resource` in id order: at most `limit` rows (a
/// placeholder) matching `where_clause`, and no more rows than fit in
/// [`PAGE_BYTES`], always at least one. Read [`cut_short`] on the result.
pub fn page_sql(
    resource: &Resource,
    where_clause: &str,
    limit: &str,
    params: &mut Params,
) -> String {
    page_rows_sql(
        resource,
        &resource.select_list_without_etag(),
        where_clause,
        limit,
        params,
    )
}

/// [`page_sql`] selecting `select` (over the columns of `t`) instead of
/// the fields, still with `_full` and in id order.
pub fn page_rows_sql(
    resource: &Resource,
    select: &str,
    where_clause: &str,
    limit: &str,
    params: &mut Params,
) -> String {
    let budget = params.push(ParameterValue::Int64(PAGE_BYTES));
    // The running total and the look at the next row are windows in the
    // page's own order, so the index scan still stops at the LIMIT (plus
    // the one row `lead` looks ahead to); each row's size is computed once.
    format!(
        "SELECT {select}, t._more AND t._before + t._bytes >= {budget} AS _full FROM (
             SELECT t.*, sum(t._bytes) OVER w - t._bytes AS _before,
                    lead(t.id) OVER w IS NOT NULL AS _more
             FROM (SELECT {columns}, {size} AS _bytes FROM {table} AS t {where_clause}) AS t
             WINDOW w AS (ORDER BY t.id) ORDER BY t.id LIMIT {limit}
         ) AS t WHERE t._before < {budget} ORDER BY t.id",
        columns = resource.columns(),
        size = resource.size_expr(),
        table = resource.table,
    )
}

/// Whether a [`page_sql`] page stopped at the byte budget, with rows left
/// that would otherwise have been on it.
pub fn cut_short(rows: &RowSet) -> Result<bool, Problem> {
    Ok(match rows.rows.last() {
        Some(row) => value::boolean(&row[value::column(rows, "_full")], "_full")? == Some(true),
        None => false,
    })
}

fn filter_condition(
    query: &Query,
    name: &str,
    filter: &Filter,
    params: &mut Params,
) -> Result<Option<String>, Problem> {
    Ok(match filter {
        Filter::IntEq(column) => query.int(name, 1, i64::from(i32::MAX))?.map(|n| {
            format!(
                "t.{column} = {}",
                params.push(ParameterValue::Int32(n as i32))
            )
        }),
        Filter::TextEq(column) => query.text(name, 200)?.map(|v| {
            format!(
                "t.{column} = {}",
                params.push(ParameterValue::Str(v.to_owned()))
            )
        }),
        Filter::JsonTag(column) => query.text(name, 200)?.map(|v| {
            // Containment of a one-element array: answered by the GIN index.
            format!(
                "t.{column} @> jsonb_build_array({}::text)",
                params.push(ParameterValue::Str(v.to_owned()))
            )
        }),
        Filter::Substring(columns) => query.text(name, 200)?.map(|v| {
            let placeholder = params.push(ParameterValue::Str(v.to_lowercase()));
            let tests: Vec<String> = columns
                .iter()
                .map(|c| format!("strpos(lower(t.{c}), {placeholder}) > 0"))
                .collect();
            format!("({})", tests.join(" OR "))
        }),
    })
}

/// The row `id` of `resource` as JSON with its ETag, or 404.
pub fn fetch(ctx: &Ctx, resource: &Resource, id: i32) -> Result<(Value, String), Problem> {
    let sql = format!(
        "SELECT {} FROM {} AS t WHERE t.id = $1",
        resource.select_list(),
        resource.table
    );
    let rows = ctx.db()?.query(&sql, &[ParameterValue::Int32(id)])?;
    if rows.rows.is_empty() {
        return Err(not_found(resource, id));
    }
    resource.row_json(&rows, 0)
}

pub fn not_found(resource: &Resource, id: i32) -> Problem {
    Problem::not_found(format!(
        "there is no {} with id {id}",
        resource.schema_name.to_lowercase()
    ))
}

/// `GET /api/<path>/:id`, with `If-None-Match` → 304.
pub fn get(ctx: &Ctx) -> Handled {
    let resource = ctx.resource();
    Query::parse(ctx.req, &[])?;
    let id = ctx.id("id")?;
    let (row, etag) = fetch(ctx, resource, id)?;
    Ok(conditional_get(ctx, &row, &etag))
}

/// 304 when the client's copy is current, else the row.
pub fn conditional_get(ctx: &Ctx, body: &Value, etag: &str) -> Response {
    if let Some(tags) = request::etags(ctx.req, "if-none-match")
        && request::if_none_match(&tags, etag)
    {
        return Response::builder()
            .status(304)
            .header("etag", respond::quote(etag))
            .body(Vec::new())
            .build();
    }
    respond::row(200, body, etag, None)
}

/// An `INSERT INTO <table> AS t` of `assignments`, whose values go into
/// `params`. With `upsert`, a row whose id exists is updated instead, and
/// only when something differs: a re-run of an import writes nothing, keeps
/// `updated_at` and leaves the change feed quiet.
pub fn insert_sql(
    table: &str,
    assignments: &[Assignment],
    params: &mut Params,
    upsert: bool,
) -> String {
    let columns: Vec<&str> = assignments.iter().map(|a| a.column).collect();
    let values: Vec<String> = assignments
        .iter()
        .map(|a| format!("{}{}", params.push(a.value.clone()), a.cast))
        .collect();
    let mut sql = format!(
        "INSERT INTO {table} AS t ({}) VALUES ({})",
        columns.join(", "),
        values.join(", ")
    );
    if upsert {
        let updated: Vec<&str> = columns.into_iter().filter(|c| *c != "id").collect();
        let sets: Vec<String> = updated
            .iter()
            .map(|c| format!("{c} = EXCLUDED.{c}"))
            .collect();
        let old: Vec<String> = updated.iter().map(|c| format!("t.{c}")).collect();
        let new: Vec<String> = updated.iter().map(|c| format!("EXCLUDED.{c}")).collect();
        sql.push_str(&format!(
            " ON CONFLICT (id) DO UPDATE SET {} WHERE ({}) IS DISTINCT FROM ({})",
            sets.join(", "),
            old.join(", "),
            new.join(", ")
        ));
    }
    sql
}

/// `POST /api/<path>`: 201 with `Location` and the stored row.
pub fn create(ctx: &Ctx) -> Handled {
    let resource = ctx.resource();
    Query::parse(ctx.req, &[])?;
    let body = request::json_object(ctx)?;
    let assignments = resource.input(&body, Mode::Create)?;
    let mut params = Params::default();
    let sql = format!(
        "{} RETURNING {}",
        insert_sql(resource.table, &assignments, &mut params, false),
        resource.select_list()
    );
    let rows = ctx.db()?.query(&sql, &params.values)?;
    let (row, etag) = resource.row_json(&rows, 0)?;
    let location = format!("/api/{}/{}", resource.path, row["id"]);
    Ok(respond::row(201, &row, &etag, Some(&location)))
}

/// The `If-Match` condition for a write, as SQL on `t`; `None` when the
/// request has none or `*` (which only needs the row to exist).
fn if_match_condition(
    ctx: &Ctx,
    resource: &Resource,
    params: &mut Params,
) -> Result<Option<String>, Problem> {
    let Some(tags) = request::etags(ctx.req, "if-match") else {
        return Ok(None);
    };
    if tags.iter().any(|t| t.tag == "*") {
        return Ok(None);
    }
    let strong: Vec<String> = tags
        .iter()
        .filter(|t| !t.weak)
        .map(|t| params.push(ParameterValue::Str(t.tag.clone())))
        .collect();
    if strong.is_empty() {
        // Weak tags never satisfy If-Match: no row can match.
        return Ok(Some("false".to_owned()));
    }
    Ok(Some(format!(
        "{} IN ({})",
        resource.etag_expr(),
        strong.join(", ")
    )))
}

/// After a conditional write touched nothing: 404 if the row is gone, else 412.
fn missing_or_stale(ctx: &Ctx, resource: &Resource, id: i32) -> Problem {
    match fetch(ctx, resource, id) {
        Ok(_) => Problem::new(412)
            .kind("precondition-failed")
            .detail("the row changed since the ETag given in If-Match; fetch it again"),
        Err(problem) => problem,
    }
}

/// `PATCH /api/<path>/:id`: absent members stay, `null` clears.
pub fn update(ctx: &Ctx) -> Handled {
    let resource = ctx.resource();
    Query::parse(ctx.req, &[])?;
    let id = ctx.id("id")?;
    let body = request::json_object(ctx)?;
    let assignments = resource.input(&body, Mode::Update)?;
    let mut params = Params::default();
    let id_param = params.push(ParameterValue::Int32(id));
    let condition = if_match_condition(ctx, resource, &mut params)?;
    let sets: Vec<String> = if assignments.is_empty() {
        // Nothing to change: still a conditional request on the row.
        vec!["id = t.id".to_owned()]
    } else {
        assignments
            .into_iter()
            .map(|a| format!("{} = {}{}", a.column, params.push(a.value), a.cast))
            .collect()
    };
    let sql = format!(
        "UPDATE {} AS t SET {} WHERE t.id = {id_param}{} RETURNING {}",
        resource.table,
        sets.join(", "),
        condition.map(|c| format!(" AND {c}")).unwrap_or_default(),
        resource.select_list()
    );
    let rows = ctx.db()?.query(&sql, &params.values)?;
    if rows.rows.is_empty() {
        return Err(missing_or_stale(ctx, resource, id));
    }
    let (row, etag) = resource.row_json(&rows, 0)?;
    Ok(respond::row(200, &row, &etag, None))
}

/// `DELETE /api/<path>/:id`: 204; the schema cascades to children.
pub fn delete(ctx: &Ctx) -> Handled {
    let resource = ctx.resource();
    Query::parse(ctx.req, &[])?;
    let id = ctx.id("id")?;
    let mut params = Params::default();
    let id_param = params.push(ParameterValue::Int32(id));
    let condition = if_match_condition(ctx, resource, &mut params)?;
    let sql = format!(
        "DELETE FROM {} AS t WHERE t.id = {id_param}{}",
        resource.table,
        condition.map(|c| format!(" AND {c}")).unwrap_or_default(),
    );
    if ctx.db()?.execute(&sql, &params.values)? == 0 {
        return Err(missing_or_stale(ctx, resource, id));
    }
    Ok(respond::no_content())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::ALL;

    #[test]
    fn pages_compute_no_etags() {
        for resource in ALL {
            let sql = page_sql(resource, "", "$9", &mut Params::default());
            assert!(!sql.contains("md5("), "{sql}");
            assert!(sql.contains("NULL::text AS _etag"), "{sql}");
        }
    }
}
