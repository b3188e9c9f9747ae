//! Ranking summaries: the mean score and count per asset, and the
//! best-ranked asset of a fragment, which decides the audio on a card.

use serde_json::json;
use spin_sdk::pg4::ParameterValue;

use crate::crud::Params;
use crate::problem::Problem;
use crate::request::Query;
use crate::respond;
use crate::router::{Ctx, Handled};
use crate::schema::{ASSET_TYPES, ASSETS};
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
