//! `GET /api/content/:id?expand=fragments`: a content with its fragments,
//! each with its assets' metadata and ranking summaries — what a card
//! builder needs, in one response.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use spin_sdk::pg4::ParameterValue;

use crate::crud;
use crate::doc::{self, Doc};
use crate::problem::Problem;
use crate::request::Query;
use crate::router::{Ctx, Handled};
use crate::schema::{ASSETS, CONTENT, FRAGMENTS, Resource};
use crate::value;

/// The content route's GET: plain, or expanded with `expand=fragments`.
/// `GET /api/content/{id}`, which may also carry its fragments.
pub fn get_content_doc(resource: Option<&'static Resource>) -> Doc {
    let row = doc::row(resource);
    let params = Doc::new().query_described(
        "expand",
        json!({"enum": ["fragments"]}),
        "fragments: include the fragments, their assets' metadata and ranking summaries.",
    );
    // Expanded, the content also carries `fragments` (each with `assets`,
    // each with `ranking`): the plain row schema with those.
    let body = json!({"anyOf": [row, {"type": "object", "required": ["id", "fragments"],
        "properties": {"fragments": {"type": "array", "items": {"type": "object",
            "required": ["id", "assets"], "properties": {"assets": {"type": "array"}}}}}}]});
    crud::get_doc_with(params, body)
}

pub fn get_content(ctx: &Ctx) -> Handled {
    let query = Query::parse(ctx.req, &["expand"])?;
    match query.get("expand") {
        None => crud::get(ctx),
        Some("fragments") => {
            let id = ctx.id("id")?;
            let db = ctx.db()?;
            // One snapshot for the three reads, so the tree is consistent.
            let body = db.transaction(|_| {
                db.execute(
                    "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY",
                    &[],
                )?;
                tree(ctx, id)
            })?;
            let etag = hex::encode(&Sha256::digest(body.to_string().as_bytes())[..16]);
            Ok(crud::conditional_get(ctx, &body, &etag))
        }
        Some(_) => Err(Problem::bad_request(
            "expand",
            "the only expansion is fragments",
        )),
    }
}

fn tree(ctx: &Ctx, id: i32) -> Result<Value, Problem> {
    let db = ctx.db()?;
    let (mut content, _) = crud::fetch(ctx, &CONTENT, id)?;
    let fragments = db.query(
        &format!(
            "SELECT {} FROM {} AS t WHERE t.learning_content_id = $1 ORDER BY t.id",
            FRAGMENTS.select_list(),
            FRAGMENTS.table
        ),
        &[ParameterValue::Int32(id)],
    )?;
    let assets = db.query(
        &format!(
            "SELECT {}, s.mean, s.count
             FROM {} AS t
             JOIN content_fragments f ON f.id = t.fragment_id
             LEFT JOIN LATERAL (
                 SELECT round(avg(r.rank_score), 2)::text AS mean, count(r.rank_score) AS count
                 FROM rankings r WHERE r.asset_id = t.id
             ) s ON true
             WHERE f.learning_content_id = $1
             ORDER BY t.id",
            ASSETS.select_list(),
            ASSETS.table
        ),
        &[ParameterValue::Int32(id)],
    )?;
    let mut by_fragment: Vec<(i64, Value)> = Vec::with_capacity(assets.rows.len());
    for index in 0..assets.rows.len() {
        // Hosts describe the columns from the first row: look them up only
        // when there is one.
        let mean = value::column(&assets, "mean");
        let count = value::column(&assets, "count");
        let (mut asset, _) = ASSETS.row_json(&assets, index)?;
        let row = &assets.rows[index];
        asset["ranking"] = serde_json::json!({
            "mean": value::text(&row[mean], "mean")?,
            "count": value::int(&row[count], "count")?.unwrap_or(0),
        });
        let fragment = asset["fragment_id"].as_i64().unwrap_or_default();
        by_fragment.push((fragment, asset));
    }
    let mut list = Vec::with_capacity(fragments.rows.len());
    for index in 0..fragments.rows.len() {
        let (mut fragment, _) = FRAGMENTS.row_json(&fragments, index)?;
        let fid = fragment["id"].as_i64().unwrap_or_default();
        fragment["assets"] = by_fragment
            .iter()
            .filter(|(f, _)| *f == fid)
            .map(|(_, a)| a.clone())
            .collect();
        list.push(fragment);
    }
    content["fragments"] = Value::Array(list);
    Ok(content)
}
