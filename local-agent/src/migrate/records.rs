//! What the store records of a legacy file's migration, as the run reads
//! it: the rows that arrived (so that a resumed run does not send them
//! again) and whether a migration of the file finished (so that a re-run
//! does not undo what happened since).

use std::path::Path;

use super::read::{ASSETS, CONTENT, FRAGMENTS, Plan, RANKINGS, Row};
use super::summary::Finished;
use super::verify::{Migrated, TableCheck};
use crate::store::{ArrivedRow, Store, StoreError};

/// The key the store files a legacy file's records under: the same file
/// by any path is the same migration.
pub(super) fn source_key(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_owned())
        .display()
        .to_string()
}

/// What the store records as delivered from `source`, by table and id.
pub(super) fn delivered(store: &Store, source: &str) -> Result<Migrated, StoreError> {
    let mut out = Migrated::new();
    for row in store.arrived_rows(source)? {
        if let Some(table) = [CONTENT, FRAGMENTS, ASSETS, RANKINGS]
            .into_iter()
            .find(|t| *t == row.table)
        {
            out.entry(table).or_default().insert(row.id, row.checksum);
        }
    }
    Ok(out)
}

/// Which rows a run leaves out.
pub(super) enum Skip<'a> {
    /// Resuming: rows recorded as arrived with the checksum they have now.
    Arrived(&'a Migrated),
    /// After a finished migration: every row it delivered, whatever it
    /// holds now (a changed legacy row is reported, not sent).
    Delivered(&'a Migrated),
    /// `--resend`: none.
    Nothing,
}

impl Skip<'_> {
    pub(super) fn skips(&self, table: &str, id: i64, checksum: &str) -> bool {
        let recorded = |m: &Migrated| m.get(table).and_then(|t| t.get(&id)).cloned();
        match self {
            Skip::Arrived(m) => recorded(m).is_some_and(|c| c == checksum),
            Skip::Delivered(m) => recorded(m).is_some(),
            Skip::Nothing => false,
        }
    }
}

/// The finished migration of `source` to `api_url`, if there is one.
pub(super) fn finished(
    store: &Store,
    source: &str,
    api_url: &str,
    plan: &Plan,
) -> Result<Option<Finished>, StoreError> {
    Ok(store
        .finished_migration(source, api_url)?
        .map(|recorded| Finished {
            finished_at: recorded.finished_at,
            api_url: api_url.to_owned(),
            rows: recorded.rows,
            legacy_unchanged: recorded.fingerprint == fingerprint(&plan_rows(plan)),
        }))
}

/// Records the migration of `source` as finished: every row of the plan
/// (all verified) as delivered, with the plan's fingerprint.
pub(super) fn mark_finished(
    store: &mut Store,
    source: &str,
    api_url: &str,
    plan: &Plan,
) -> Result<(), StoreError> {
    let rows = plan_rows(plan);
    store.finish_migration(source, api_url, &fingerprint(&rows), &rows)
}

/// Drops the arrival records of the rows the verification found missing
/// or different, so that the next run sends them again.
pub(super) fn forget_failing(
    store: &mut Store,
    source: &str,
    checks: &[TableCheck],
) -> Result<(), StoreError> {
    store.forget_arrivals(
        source,
        checks
            .iter()
            .flat_map(|check| check.failing.iter().map(|id| (check.table, *id))),
    )
}

/// Rows of `table` as the store records them.
pub(super) fn arrived<'r>(table: &str, rows: impl IntoIterator<Item = &'r Row>) -> Vec<ArrivedRow> {
    rows.into_iter()
        .map(|r| ArrivedRow {
            table: table.to_owned(),
            id: r.id,
            checksum: r.checksum.clone(),
        })
        .collect()
}

/// Every row of the plan, table by table.
fn plan_rows(plan: &Plan) -> Vec<ArrivedRow> {
    let mut all = arrived(CONTENT, &plan.content);
    all.extend(arrived(FRAGMENTS, &plan.fragments));
    all.extend(plan.assets.iter().map(|a| ArrivedRow {
        table: ASSETS.to_owned(),
        id: a.id,
        checksum: a.checksum(),
    }));
    all.extend(arrived(RANKINGS, &plan.rankings));
    all
}

/// Every row by table, id and checksum, hashed: equal fingerprints mean
/// the legacy file holds the same rows.
fn fingerprint(rows: &[ArrivedRow]) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for row in rows {
        hash.update(format!("{}\t{}\t{}\n", row.table, row.id, row.checksum));
    }
    hex::encode(hash.finalize())
}
