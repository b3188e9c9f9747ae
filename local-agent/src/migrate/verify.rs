//! The end-of-run check: every table read back through the API (lists,
//! page by page) and compared row by row with what the legacy file holds
//! minus its rejects, by a checksum of what matters (texts byte for byte,
//! JSON as JSON, timestamps as instants, scores exactly, asset sha256 and
//! size). Rows on the server that the file does not hold are counted as
//! `extra` but do not fail the check (they may have been written since).

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;
use serde_json::{Map, Value};

use super::read::{self, ASSETS, CONTENT, FRAGMENTS, Plan, RANKINGS};
use crate::api::ApiClient;

#[derive(Debug, Clone, Serialize)]
pub struct TableCheck {
    pub table: &'static str,
    pub source: usize,
    pub rejected: usize,
    pub expected: usize,
    pub on_server: usize,
    pub matching: usize,
    pub missing: usize,
    pub differing: usize,
    pub extra: usize,
    /// A few ids that are missing or differ, for the message.
    pub examples: Vec<i64>,
    /// All of them.
    #[serde(skip)]
    pub failing: Vec<i64>,
}

impl TableCheck {
    pub fn ok(&self) -> bool {
        self.missing == 0 && self.differing == 0 && self.matching == self.expected
    }
}

/// The API path that lists a table.
pub fn list_path(table: &str) -> &'static str {
    match table {
        CONTENT => "/api/content",
        FRAGMENTS => "/api/fragments",
        ASSETS => "/api/assets",
        _ => "/api/rankings",
    }
}

/// Every row the server holds for `table`, by id.
pub fn server_rows(client: &ApiClient, table: &str) -> Result<BTreeMap<i64, Value>> {
    let mut out = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = vec![("limit", "500".to_owned())];
        if let Some(c) = &cursor {
            query.push(("cursor", c.clone()));
        }
        let page = client.get_json(list_path(table), &query)?;
        for item in page["items"].as_array().into_iter().flatten() {
            if let Some(id) = item["id"].as_i64() {
                out.insert(id, item.clone());
            }
        }
        match page["next"].as_str() {
            Some(next) if !next.is_empty() => cursor = Some(next.to_owned()),
            _ => return Ok(out),
        }
    }
}

/// The server row reduced to the members of `like` (what was sent).
pub fn project(server: &Value, like: &Value) -> Value {
    let mut m = Map::new();
    if let Some(keys) = like.as_object() {
        for k in keys.keys() {
            m.insert(k.clone(), server.get(k).cloned().unwrap_or(Value::Null));
        }
    }
    Value::Object(m)
}

fn compare(
    table: &'static str,
    plan: &Plan,
    expected: Vec<(i64, Value)>,
    server: &BTreeMap<i64, Value>,
) -> TableCheck {
    let source = plan.source.get(table).copied().unwrap_or(0);
    let mut check = TableCheck {
        table,
        source,
        rejected: plan.rejects.rows_of(table),
        expected: expected.len(),
        on_server: server.len(),
        matching: 0,
        missing: 0,
        differing: 0,
        extra: 0,
        examples: Vec::new(),
        failing: Vec::new(),
    };
    let mut known = std::collections::HashSet::new();
    for (id, want) in &expected {
        known.insert(*id);
        match server.get(id) {
            None => {
                check.missing += 1;
                check.failing.push(*id);
            }
            Some(got) if read::checksum(&project(got, want)) == read::checksum(want) => {
                check.matching += 1;
            }
            Some(_) => {
                check.differing += 1;
                check.failing.push(*id);
            }
        }
    }
    check.extra = server.keys().filter(|id| !known.contains(id)).count();
    check.examples = check.failing.iter().take(5).copied().collect();
    check
}

/// Reads every table back and compares.
pub fn verify(client: &ApiClient, plan: &Plan) -> Result<Vec<TableCheck>> {
    let rows = |v: &[read::Row]| v.iter().map(|r| (r.id, r.json.clone())).collect::<Vec<_>>();
    Ok(vec![
        compare(
            CONTENT,
            plan,
            rows(&plan.content),
            &server_rows(client, CONTENT)?,
        ),
        compare(
            FRAGMENTS,
            plan,
            rows(&plan.fragments),
            &server_rows(client, FRAGMENTS)?,
        ),
        compare(
            ASSETS,
            plan,
            plan.assets.iter().map(|a| (a.id, a.projection())).collect(),
            &server_rows(client, ASSETS)?,
        ),
        compare(
            RANKINGS,
            plan,
            rows(&plan.rankings),
            &server_rows(client, RANKINGS)?,
        ),
    ])
}

/// The checks as a text table.
pub fn render(checks: &[TableCheck]) -> String {
    let mut s = format!(
        "{:<18} {:>7} {:>8} {:>8} {:>9} {:>8} {:>7} {:>9} {:>6}  result\n",
        "table",
        "source",
        "rejected",
        "expected",
        "on server",
        "matching",
        "missing",
        "differing",
        "extra"
    );
    for c in checks {
        s.push_str(&format!(
            "{:<18} {:>7} {:>8} {:>8} {:>9} {:>8} {:>7} {:>9} {:>6}  {}\n",
            c.table,
            c.source,
            c.rejected,
            c.expected,
            c.on_server,
            c.matching,
            c.missing,
            c.differing,
            c.extra,
            if c.ok() {
                "ok".to_owned()
            } else {
                format!("MISMATCH (e.g. ids {:?})", c.examples)
            }
        ));
    }
    s
}
