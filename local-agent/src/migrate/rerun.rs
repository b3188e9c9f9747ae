//! The check before a re-run after a finished migration sends anything:
//! both sides may have gone on numbering from the same place, and a row
//! the legacy file gained since may carry an id the server has given to
//! another row. Sending it would overwrite that row.

use serde_json::Value;

use super::read::{self, ASSETS, CONTENT, FRAGMENTS, Plan, RANKINGS};
use super::records::Skip;
use super::verify;
use super::wording::{list_ids, noun, when};
use crate::api::{ApiClient, ApiError};

/// Rows the legacy file gained since a finished migration whose ids the
/// server has given to other rows since.
#[derive(Debug, thiserror::Error)]
#[error(
    "{}: new in the legacy file since the migration of {}, but the server has given \
     these ids to other rows since; nothing was sent. Importing them would overwrite the \
     server's rows: remove them from the legacy file, or give them (and their fragments, \
     assets and rankings) ids the server does not use, then run migrate again",
    .taken.iter().map(|(table, ids)| format!("{} {}", noun(table, ids.len()), list_ids(ids))).collect::<Vec<_>>().join("; "),
    when(.finished_at)
)]
pub struct IdsTaken {
    pub finished_at: String,
    pub taken: Vec<(&'static str, Vec<i64>)>,
}

/// A row as the check compares it: id, checksum, and what the server's
/// row is compared with.
type Candidate = (i64, String, Value);

/// Every row of the plan by table, as the check compares them.
fn candidates(plan: &Plan) -> Vec<(&'static str, Vec<Candidate>)> {
    let rows = |list: &[read::Row]| {
        list.iter()
            .map(|r| (r.id, r.checksum.clone(), r.json.clone()))
            .collect()
    };
    vec![
        (CONTENT, rows(&plan.content)),
        (FRAGMENTS, rows(&plan.fragments)),
        (RANKINGS, rows(&plan.rankings)),
        (
            ASSETS,
            plan.assets
                .iter()
                .map(|a| (a.id, a.checksum(), a.projection()))
                .collect(),
        ),
    ]
}

/// After a finished migration: the new legacy rows (never delivered) whose
/// ids the server holds with another row.
pub(super) fn ids_taken(
    client: &ApiClient,
    plan: &Plan,
    skip: &Skip<'_>,
    finished_at: &str,
) -> Result<Option<IdsTaken>, ApiError> {
    let mut taken = Vec::new();
    for (table, rows) in candidates(plan) {
        let new: Vec<Candidate> = rows
            .into_iter()
            .filter(|(id, checksum, _)| !skip.skips(table, *id, checksum))
            .collect();
        if new.is_empty() {
            continue;
        }
        let on_server = verify::server_rows(client, table)?;
        let ids: Vec<i64> = new
            .iter()
            .filter(|(id, checksum, want)| {
                on_server
                    .get(id)
                    .is_some_and(|got| read::checksum(&verify::project(got, want)) != *checksum)
            })
            .map(|(id, _, _)| *id)
            .collect();
        if !ids.is_empty() {
            taken.push((table, ids));
        }
    }
    Ok((!taken.is_empty()).then(|| IdsTaken {
        finished_at: finished_at.to_owned(),
        taken,
    }))
}
