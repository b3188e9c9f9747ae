//! What a run was asked to do and what it did: the summary that `--json`
//! prints as it is and the command renders as text.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

use super::convert::Repairs;
use super::read::Plan;
use super::verify::{Since, TableCheck};
use crate::store::LegacyCopy;

#[derive(Debug, Clone)]
pub struct Options {
    pub legacy: PathBuf,
    pub dry_run: bool,
    pub reject_report: PathBuf,
    pub repairs: Repairs,
    /// Send every row again, even after a finished migration.
    pub resend: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TableRun {
    pub table: &'static str,
    pub source: usize,
    pub rejected: usize,
    /// Sent in this run.
    pub sent: usize,
    /// Skipped: recorded as arrived by an earlier run (or, for assets,
    /// already on the server with the same sha256 and fields).
    pub resumed: usize,
    pub seconds: f64,
    pub rows_per_second: f64,
    pub bytes: u64,
}

/// A finished migration of this legacy file to this server, as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct Finished {
    pub finished_at: String,
    pub api_url: String,
    /// Rows it delivered.
    pub rows: usize,
    /// Whether the legacy file holds now what it held then.
    pub legacy_unchanged: bool,
}

/// A row a finished migration delivered that differs now.
#[derive(Debug, Clone, Serialize)]
pub struct ChangedSince {
    pub table: &'static str,
    pub id: i64,
    pub change: Since,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub legacy: PathBuf,
    pub dry_run: bool,
    pub tables: Vec<TableRun>,
    /// Rows rejected (a row counts once, whatever its reasons).
    pub rejected_rows: usize,
    /// Lines of the reject report: one per refused value.
    pub reject_lines: usize,
    /// Reject lines per reason.
    pub rejects_by_reason: BTreeMap<&'static str, usize>,
    pub reject_report: PathBuf,
    pub next_ids: Option<Value>,
    pub verification: Vec<TableCheck>,
    pub store: Option<LegacyCopy>,
    pub seconds: f64,
    pub rows_per_second: f64,
    pub mb_per_second: f64,
    /// Nothing was sent: everything had arrived before.
    pub nothing_to_do: bool,
    /// `--resend`: every row was sent again.
    pub resend: bool,
    /// The finished migration this run found: it only checked and sent
    /// rows the legacy file gained since.
    pub migrated_before: Option<Finished>,
    /// What differs from that migration; not undone.
    pub changed_since: Vec<ChangedSince>,
    /// The verification passed and the copy into the store met no
    /// conflict.
    pub ok: bool,
}

impl Summary {
    pub(super) fn new(opts: &Options) -> Summary {
        Summary {
            legacy: opts.legacy.clone(),
            dry_run: opts.dry_run,
            reject_report: opts.reject_report.clone(),
            resend: opts.resend,
            ..Summary::default()
        }
    }

    /// The tables as a dry run sees them: read, nothing sent.
    pub(super) fn planned(&mut self, plan: &Plan) {
        self.tables = plan
            .source
            .iter()
            .map(|(table, n)| TableRun {
                table,
                source: *n,
                rejected: plan.rejects.rows_of(table),
                ..TableRun::default()
            })
            .collect();
    }

    /// The rejects' counts, the time and the rates.
    pub(super) fn tally(&mut self, plan: &Plan, started: Instant) {
        self.rejected_rows = plan.rejects.total_rows();
        self.reject_lines = plan.rejects.lines.len();
        self.rejects_by_reason = plan.rejects.by_reason();
        self.seconds = started.elapsed().as_secs_f64();
        let moved: usize = self.tables.iter().map(|t| t.sent + t.resumed).sum();
        let bytes: u64 = self.tables.iter().map(|t| t.bytes).sum();
        self.nothing_to_do = !self.dry_run && self.tables.iter().all(|t| t.sent == 0);
        if self.seconds > 0.0 {
            self.rows_per_second = moved as f64 / self.seconds;
            self.mb_per_second = bytes as f64 / 1e6 / self.seconds;
        }
    }

    /// Each row the verification found changed since the finished
    /// migration.
    pub(super) fn note_changes_since(&mut self) {
        self.changed_since = self
            .verification
            .iter()
            .flat_map(|check| {
                check.since.iter().map(|(id, change)| ChangedSince {
                    table: check.table,
                    id: *id,
                    change: *change,
                })
            })
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::read::{CONTENT, FRAGMENTS};
    use crate::migrate::report::Reason;

    #[test]
    fn the_rejects_count_rows_once_and_lines_per_refused_value() {
        let mut plan = Plan::default();
        plan.rejects
            .add(CONTENT, 1, "title", Reason::TooLong, "201".into());
        plan.rejects
            .add(CONTENT, 1, "tags", Reason::InvalidJson, "x".into());
        plan.rejects.add(
            FRAGMENTS,
            5,
            "learning_content_id",
            Reason::ParentRejected,
            "learning_content 1 was rejected".into(),
        );
        let mut summary = Summary {
            dry_run: true,
            ..Summary::default()
        };
        summary.tally(&plan, Instant::now());
        assert_eq!((summary.rejected_rows, summary.reject_lines), (2, 3));
        assert_eq!(
            summary.rejects_by_reason,
            BTreeMap::from([("invalid_json", 1), ("parent_rejected", 1), ("too_long", 1)])
        );
        assert!(!summary.nothing_to_do, "a dry run sends nothing by design");
    }
}
