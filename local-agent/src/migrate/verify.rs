//! The end-of-run check: every table read back through the API (lists,
//! page by page) and compared row by row with what the legacy file holds
//! minus its rejects, by a checksum of what matters (texts byte for byte,
//! JSON as JSON, timestamps as instants, scores exactly, asset sha256 and
//! size). Rows on the server that the file does not hold are counted as
//! `extra` but do not fail the check (they may have been written since).
//!
//! After a finished migration, a row it migrated that is now missing or
//! different was changed since (deleted or edited on the server, or changed
//! in the legacy file): it is reported as such, not as a failure.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::{Map, Value};

use super::read::{self, ASSETS, CONTENT, FRAGMENTS, Plan, RANKINGS};
use crate::api::{ApiClient, ApiError};

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
    /// Of the missing and differing rows, those a finished migration had
    /// delivered and that were changed since: not failures.
    pub changed_since: usize,
    /// A few ids that are missing or differ (changes since excepted), for
    /// the message.
    pub examples: Vec<i64>,
    /// All of them.
    #[serde(skip)]
    pub failing: Vec<i64>,
    /// The rows changed since the finished migration, with what changed.
    #[serde(skip)]
    pub since: Vec<(i64, Since)>,
}

impl TableCheck {
    pub fn ok(&self) -> bool {
        self.failing.is_empty()
            && self.missing + self.differing == self.changed_since
            && self.matching + self.changed_since == self.expected
    }
}

/// How a row that a finished migration delivered differs now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Since {
    /// The server no longer holds it.
    DeletedOnServer,
    /// The server holds another version; the legacy row is as migrated.
    EditedOnServer,
    /// The legacy row is not what was migrated (so it was not sent).
    ChangedInLegacy,
}

/// What a finished migration delivered: per table, id → the checksum the
/// row was sent with.
pub type Migrated = HashMap<&'static str, HashMap<i64, String>>;

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
pub fn server_rows(client: &ApiClient, table: &str) -> Result<BTreeMap<i64, Value>, ApiError> {
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
    migrated: Option<&Migrated>,
) -> TableCheck {
    let delivered = migrated.and_then(|m| m.get(table));
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
        changed_since: 0,
        examples: Vec::new(),
        failing: Vec::new(),
        since: Vec::new(),
    };
    let mut known = std::collections::HashSet::new();
    for (id, want) in &expected {
        known.insert(*id);
        let sum = read::checksum(want);
        let found = server.get(id);
        if let Some(got) = found
            && read::checksum(&project(got, want)) == sum
        {
            check.matching += 1;
            continue;
        }
        if found.is_none() {
            check.missing += 1;
        } else {
            check.differing += 1;
        }
        let change = match (found, delivered.and_then(|d| d.get(id))) {
            // Never delivered by a finished migration: this run's to get right.
            (_, None) => {
                check.failing.push(*id);
                continue;
            }
            (None, Some(_)) => Since::DeletedOnServer,
            (Some(_), Some(sent)) if *sent != sum => Since::ChangedInLegacy,
            (Some(_), Some(_)) => Since::EditedOnServer,
        };
        check.changed_since += 1;
        check.since.push((*id, change));
    }
    check.extra = server.keys().filter(|id| !known.contains(id)).count();
    check.examples = check.failing.iter().take(5).copied().collect();
    check
}

/// Reads every table back and compares. `migrated`: what a finished
/// migration delivered, when there was one.
pub fn verify(
    client: &ApiClient,
    plan: &Plan,
    migrated: Option<&Migrated>,
) -> Result<Vec<TableCheck>, ApiError> {
    let rows = |v: &[read::Row]| v.iter().map(|r| (r.id, r.json.clone())).collect::<Vec<_>>();
    Ok(vec![
        compare(
            CONTENT,
            plan,
            rows(&plan.content),
            &server_rows(client, CONTENT)?,
            migrated,
        ),
        compare(
            FRAGMENTS,
            plan,
            rows(&plan.fragments),
            &server_rows(client, FRAGMENTS)?,
            migrated,
        ),
        compare(
            ASSETS,
            plan,
            plan.assets.iter().map(|a| (a.id, a.projection())).collect(),
            &server_rows(client, ASSETS)?,
            migrated,
        ),
        compare(
            RANKINGS,
            plan,
            rows(&plan.rankings),
            &server_rows(client, RANKINGS)?,
            migrated,
        ),
    ])
}
