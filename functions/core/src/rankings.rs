//! Ranking summaries: the mean score and count per asset, and the
//! best-ranked asset of a fragment, which decides the audio on a card.

use serde_json::json;
use spin_sdk::pg4::ParameterValue;

use crate::crud::Params;
use crate::doc::{self, Doc};
use crate::problem::Problem;
use crate::request::Query;
use crate::respond;
use crate::router::{Ctx, Handled};
use crate::schema::{ASSET_TYPES, ASSETS, RANKINGS, Resource};
use crate::value;

/// The summary columns for asset `t`: the mean rounded half away from zero
/// to two decimals, as exact text, and the count of scored rankings.
const SUMMARY_JOIN: &str = "LEFT JOIN LATERAL (
        SELECT round(avg(r.rank_score), 2)::text AS mean, count(r.rank_score) AS count
        FROM rankings r WHERE r.asset_id = t.id
    ) s ON true";

/// `GET /api/rankings/summary?fragment_id=|asset_id=`: every asset of the
/// fragment (or the one asset), unranked ones with a null mean.
pub fn summary(ctx: &Ctx) -> Handled {
    let query = Query::parse(ctx.req, &["fragment_id", "asset_id"])?;
    let mut params = Params::default();
    let condition = match (
        query.int("fragment_id", 1, i64::from(i32::MAX))?,
        query.int("asset_id", 1, i64::from(i32::MAX))?,
    ) {
        (Some(f), None) => format!(
            "t.fragment_id = {}",
            params.push(ParameterValue::Int32(f as i32))
        ),
        (None, Some(a)) => format!("t.id = {}", params.push(ParameterValue::Int32(a as i32))),
        _ => {
            return Err(Problem::bad_request(
                "fragment_id",
                "give exactly one of fragment_id and asset_id",
            ));
        }
    };
    let rows = ctx.db()?.query(
        &format!(
            "SELECT t.id, t.fragment_id, t.asset_type, s.mean, s.count
             FROM {} AS t {SUMMARY_JOIN} WHERE {condition} ORDER BY t.id",
            ASSETS.table
        ),
        &params.values,
    )?;
    let mut items = Vec::with_capacity(rows.rows.len());
    for row in &rows.rows {
        items.push(json!({
            "asset_id": value::int(&row[0], "id")?,
            "fragment_id": value::int(&row[1], "fragment_id")?,
            "asset_type": value::text(&row[2], "asset_type")?,
            "mean": value::text(&row[3], "mean")?,
            "count": value::int(&row[4], "count")?.unwrap_or(0),
        }));
    }
    Ok(respond::json(200, &json!({ "items": items })))
}

/// `GET /api/rankings/best?fragment_id=&asset_type=audio`: the asset with
/// the highest mean; ties go to the one with more rankings, then to the
/// older (lower id). Unranked assets come after every ranked one, so a
/// fragment whose assets are all unranked yields its oldest asset.
pub fn best(ctx: &Ctx) -> Handled {
    let query = Query::parse(ctx.req, &["fragment_id", "asset_type"])?;
    let fragment = query
        .int("fragment_id", 1, i64::from(i32::MAX))?
        .ok_or_else(|| Problem::bad_request("fragment_id", "is required"))?;
    let asset_type = query.text("asset_type", 20)?.unwrap_or("audio");
    if !ASSET_TYPES.contains(&asset_type) {
        return Err(Problem::bad_request(
            "asset_type",
            format!("must be one of {}", ASSET_TYPES.join(", ")),
        ));
    }
    let rows = ctx.db()?.query(
        &format!(
            "SELECT {}, s.mean, s.count FROM {} AS t {SUMMARY_JOIN}
             WHERE t.fragment_id = $1 AND t.asset_type = $2
             ORDER BY s.mean::numeric DESC NULLS LAST, s.count DESC, t.id
             LIMIT 1",
            ASSETS.select_list(),
            ASSETS.table
        ),
        &[
            ParameterValue::Int32(fragment as i32),
            ParameterValue::Str(asset_type.to_owned()),
        ],
    )?;
    if rows.rows.is_empty() {
        return Err(Problem::not_found(format!(
            "fragment {fragment} has no {asset_type} asset"
        )));
    }
    let (asset, _) = ASSETS.row_json(&rows, 0)?;
    let row = &rows.rows[0];
    let mean = value::text(&row[value::column(&rows, "mean")], "mean")?;
    let count = value::int(&row[value::column(&rows, "count")], "count")?.unwrap_or(0);
    Ok(respond::json(
        200,
        &json!({ "asset": asset, "ranking": { "mean": mean, "count": count } }),
    ))
}

/// The assessor a request rates as: the user its token names (see
/// [`crate::auth::user_of`]). Taken from the verified token, never from the
/// request, so nobody can overwrite another assessor's rating.
fn assessor(ctx: &Ctx) -> Result<String, Problem> {
    let name = crate::auth::user_of(ctx.req, ctx.keys()?)?.ok_or_else(|| {
        Problem::new(403).kind("forbidden").detail(
            "the token names no user (it has neither an email nor a sub claim); \
             rate with a signed-in user's token",
        )
    })?;
    if name.chars().count() > 100 {
        return Err(Problem::invalid(
            "assessed_by",
            "the token's user name is longer than 100 characters",
        ));
    }
    Ok(name)
}

/// `GET /api/rankings/mine?content_id=|fragment_id=|asset_id=`: the caller's
/// own rankings of the assets of one content, one fragment or one asset,
/// oldest first, with the name they are stored under.
pub fn mine(ctx: &Ctx) -> Handled {
    let query = Query::parse(ctx.req, &["content_id", "fragment_id", "asset_id"])?;
    let name = assessor(ctx)?;
    let mut params = Params::default();
    let by = params.push(ParameterValue::Str(name.clone()));
    let ids = (
        query.int("content_id", 1, i64::from(i32::MAX))?,
        query.int("fragment_id", 1, i64::from(i32::MAX))?,
        query.int("asset_id", 1, i64::from(i32::MAX))?,
    );
    // Through the asset, not the ranking's own fragment_id, which legacy
    // rows may lack.
    let scope = match ids {
        (Some(c), None, None) => format!(
            "t.asset_id IN (SELECT a.id FROM {} a JOIN content_fragments f ON f.id = a.fragment_id
                            WHERE f.learning_content_id = {})",
            ASSETS.table,
            params.push(ParameterValue::Int32(c as i32))
        ),
        (None, Some(f), None) => format!(
            "t.asset_id IN (SELECT a.id FROM {} a WHERE a.fragment_id = {})",
            ASSETS.table,
            params.push(ParameterValue::Int32(f as i32))
        ),
        (None, None, Some(a)) => format!(
            "t.asset_id = {}",
            params.push(ParameterValue::Int32(a as i32))
        ),
        _ => {
            return Err(Problem::bad_request(
                "content_id",
                "give exactly one of content_id, fragment_id and asset_id",
            ));
        }
    };
    let rows = ctx.db()?.query(
        &format!(
            "SELECT {} FROM {} AS t WHERE t.assessed_by = {by} AND {scope} ORDER BY t.id",
            RANKINGS.select_list(),
            RANKINGS.table
        ),
        &params.values,
    )?;
    let mut items = Vec::with_capacity(rows.rows.len());
    for index in 0..rows.rows.len() {
        items.push(RANKINGS.row_json(&rows, index)?.0);
    }
    Ok(respond::json(
        200,
        &json!({ "assessed_by": name, "items": items }),
    ))
}

/// `PUT /api/rankings/mine?asset_id=`: the caller's rating of an asset,
/// `{"rank_score": "4.50", "assessment_notes": "..."}`. The first one
/// creates a ranking (201 with Location); later ones update it (200), so an
/// assessor has one rating per asset however often they change their mind.
///
/// Race-free without a unique index (legacy data may hold duplicates, on
/// which such an index would fail to build): the check-then-write runs in a
/// transaction holding an advisory lock on (asset, assessor), so two saves
/// at once serialise and the second updates what the first inserted. Where
/// legacy duplicates exist, the newest is the one updated; the older ones
/// are left as they were, since deleting judgements is not this endpoint's
/// call.
pub fn put_mine(ctx: &Ctx) -> Handled {
    let query = Query::parse(ctx.req, &["asset_id"])?;
    let asset = query
        .int("asset_id", 1, i64::from(i32::MAX))?
        .ok_or_else(|| Problem::bad_request("asset_id", "is required"))? as i32;
    let name = assessor(ctx)?;
    let body = crate::request::json_object(ctx)?;
    for key in body.keys() {
        if !["rank_score", "assessment_notes"].contains(&key.as_str()) {
            return Err(Problem::invalid(
                key.as_str(),
                "is not accepted here: the asset, its fragment and the assessor come from the request",
            ));
        }
    }
    let score = match body.get("rank_score") {
        None | Some(serde_json::Value::Null) => {
            return Err(Problem::invalid("rank_score", "is required"));
        }
        Some(v) => crate::schema::score("rank_score", v)?,
    };
    // The resource's own validation for the notes (type, NUL bytes).
    let notes = crate::schema::RANKINGS
        .input(&body, crate::schema::Mode::Update)?
        .into_iter()
        .find(|a| a.column == "assessment_notes")
        .map_or(ParameterValue::DbNull, |a| a.value);

    let db = ctx.db()?;
    let (status, rows) = db.transaction(|db| {
        db.execute(
            "SELECT pg_advisory_xact_lock($1::integer, hashtext($2::text))",
            &[ParameterValue::Int32(asset), ParameterValue::Str(name.clone())],
        )?;
        let found = db.query(
            &format!("SELECT t.fragment_id FROM {} AS t WHERE t.id = $1", ASSETS.table),
            &[ParameterValue::Int32(asset)],
        )?;
        let Some(row) = found.rows.first() else {
            return Err(crate::crud::not_found(&ASSETS, asset));
        };
        let fragment = value::int(&row[0], "fragment_id")?
            .map_or(ParameterValue::DbNull, |f| ParameterValue::Int32(f as i32));
        let values = vec![
            ParameterValue::Int32(asset),
            ParameterValue::Str(name.clone()),
            ParameterValue::Str(score.clone()),
            notes.clone(),
        ];
        let updated = db.query(
            &format!(
                "UPDATE {table} AS t SET rank_score = $3::text::numeric, assessment_notes = $4::text
                 WHERE t.id = (SELECT max(id) FROM {table} WHERE asset_id = $1 AND assessed_by = $2)
                 RETURNING {}",
                RANKINGS.select_list(),
                table = RANKINGS.table
            ),
            &values,
        )?;
        if !updated.rows.is_empty() {
            return Ok((200, updated));
        }
        let mut values = values;
        values.push(fragment);
        let inserted = db.query(
            &format!(
                "INSERT INTO {} AS t (asset_id, assessed_by, rank_score, assessment_notes, fragment_id)
                 VALUES ($1::integer, $2::text, $3::text::numeric, $4::text, $5::integer)
                 RETURNING {}",
                RANKINGS.table,
                RANKINGS.select_list()
            ),
            &values,
        )?;
        Ok((201, inserted))
    })?;
    let (row, etag) = RANKINGS.row_json(&rows, 0)?;
    let location = (status == 201).then(|| format!("/api/rankings/{}", row["id"]));
    Ok(respond::row(status, &row, &etag, location.as_deref()))
}

pub fn summary_doc(_: Option<&'static Resource>) -> Doc {
    Doc::new()
        .query("fragment_id", json!({"type": "integer"}))
        .query("asset_id", json!({"type": "integer"}))
        .json(
            "200",
            "Mean (two decimals, as a string) and count per asset.",
            json!({"type": "object"}),
        )
        .problem("400", "Neither or both filters given.")
}

pub fn best_doc(_: Option<&'static Resource>) -> Doc {
    Doc::new()
        .required_query("fragment_id", json!({"type": "integer"}))
        .query(
            "asset_type",
            json!({"enum": ["audio", "image", "video"], "default": "audio"}),
        )
        .json(
            "200",
            "The best-ranked asset: highest mean, then most rankings, then lowest id; unranked last.",
            json!({"type": "object"}),
        )
        .problem("404", "The fragment has no asset of that type.")
}

pub fn mine_doc(resource: Option<&'static Resource>) -> Doc {
    let mut doc = Doc::new();
    for param in ["content_id", "fragment_id", "asset_id"] {
        doc = doc.query_described(
            param,
            json!({"type": "integer", "minimum": 1}),
            "Give exactly one: the scope whose assets' rankings are listed.",
        );
    }
    doc.json(
        "200",
        "The caller's own rankings, oldest first, and the name they are stored under (the token's email claim, else its sub).",
        json!({"type": "object", "required": ["assessed_by", "items"], "properties": {
            "assessed_by": {"type": "string"}, "items": {"type": "array", "items": doc::row(resource)}}}),
    )
    .problem("400", "None or several of the scopes given.")
}

pub fn put_mine_doc(resource: Option<&'static Resource>) -> Doc {
    let row = doc::row(resource);
    Doc::new()
        .required_query("asset_id", json!({"type": "integer", "minimum": 1}))
        .json_body(json!({
            "type": "object", "required": ["rank_score"], "additionalProperties": false,
            "properties": {
                "rank_score": {"type": ["string", "number"], "description": "0.00 to 5.00, at most two decimals."},
                "assessment_notes": {"type": ["string", "null"]}
            }}))
        .describe("The caller's rating of the asset: the first creates a ranking under the token's user (email claim, else sub); later ones update it, so each assessor has one rating per asset. Concurrent saves are serialised. A token that names no user (neither email nor sub) is 403.")
        .json("200", "The caller's ranking, updated.", row.clone())
        .json(
            "201",
            "The caller's first ranking of the asset; Location names it.",
            row,
        )
        .problem("404", "No such asset.")
        .problem("415", "Not application/json.")
        .problem(
            "422",
            "A member is invalid or not accepted; errors name it.",
        )
}
