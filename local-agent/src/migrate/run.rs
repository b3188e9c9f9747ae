//! The migration, in order: read and convert everything (rejects decided
//! before anything is sent), import contents, fragments, then assets, then
//! rankings; move the sequences; verify table by table; bring the agent's
//! mirror up to date and copy `anki_cards`, `vector_embeddings` and the
//! vectors into the store.
//!
//! Resuming: the import is an upsert by id that skips identical rows, so
//! sending a row twice changes nothing. To avoid re-sending, rows that
//! arrived are recorded in the store (with their checksum), and an asset is
//! skipped when the server already lists it with the same sha256 and
//! fields. Neither shortcut is needed for correctness: the final
//! verification reads the server back, and a row it finds missing or
//! different loses its record, so that the next run sends it again.
//!
//! Re-running after a finished migration (recorded once a verification
//! passed): the rows it delivered are never sent again, whatever their
//! checksum now, and neither are the cards and vectors, so that nothing the
//! user or the agent did since is undone (a content deleted on the server,
//! a card the Anki push updated, vectors `embed` pruned). Rows the legacy
//! file gained since are sent. The verification reports what changed since
//! instead of failing on it. `--resend` sends everything again.
//!
//! An API that stops answering (its database down: 503 + Retry-After) is
//! waited for by the client's backoff; when that runs out the run stops
//! with an error that says to run the same command again.

use std::time::Instant;

use rusqlite::Connection;
use serde_json::json;

use super::error::MigrateError;
use super::progress::{Phase, Progress};
use super::read::{self, CONTENT, FRAGMENTS, Plan, RANKINGS};
use super::records::{self, Skip};
use super::rerun::ids_taken;
use super::send::Sending;
use super::summary::{Finished, Options, Summary, TableRun};
use super::verify::{self, Migrated, TableCheck};
use crate::api::ApiClient;
use crate::pull::{self, PullOptions};
use crate::store::{LegacyTables, Store};

/// Runs the migration, saying how it goes through `on_progress`. `store`
/// and `client` are not touched in a dry run (which needs neither).
pub fn run(
    opts: &Options,
    store: Option<&mut Store>,
    client: Option<&ApiClient>,
    mut on_progress: impl FnMut(Progress),
) -> Result<Summary, MigrateError> {
    let started = Instant::now();
    on_progress(Progress::Phase(Phase::Reading));
    let legacy = read::open(&opts.legacy)?;
    let mut plan =
        read::plan(&legacy, opts.repairs).map_err(MigrateError::reading(&opts.legacy))?;
    let mut summary = Summary::new(opts);
    let (Some(store), Some(client), false) = (store, client, opts.dry_run) else {
        summary.planned(&plan);
        summary.tally(&plan, started);
        write_rejects(opts, &plan)?;
        summary.ok = true;
        return Ok(summary);
    };
    let run = Run {
        opts,
        client,
        legacy: &legacy,
        progress: &mut on_progress,
    };
    match run.migrate(store, &mut plan, summary) {
        Ok(mut summary) => {
            summary.tally(&plan, started);
            Ok(summary)
        }
        // Running it again would not help: the message says what does.
        Err(e @ MigrateError::IdsTaken(_)) => Err(e),
        Err(e) => Err(MigrateError::Stopped(Box::new(e))),
    }
}

fn write_rejects(opts: &Options, plan: &Plan) -> Result<(), MigrateError> {
    plan.rejects
        .write(&opts.reject_report)
        .map_err(MigrateError::writing(&opts.reject_report))
}

/// A migration under way, after the plan.
struct Run<'a> {
    opts: &'a Options,
    client: &'a ApiClient,
    legacy: &'a Connection,
    progress: &'a mut dyn FnMut(Progress),
}

impl Run<'_> {
    /// Sends, moves the sequences, verifies, pulls, copies the cards and
    /// vectors, and records a migration that passed as finished.
    fn migrate(
        mut self,
        store: &mut Store,
        plan: &mut Plan,
        mut summary: Summary,
    ) -> Result<Summary, MigrateError> {
        let source = records::source_key(&self.opts.legacy);
        let api_url = self.client.base_url().to_owned();
        let before = if self.opts.resend {
            None
        } else {
            records::finished(store, &source, &api_url, plan)?
        };
        let recorded = records::delivered(store, &source)?;
        let skip = match (&before, self.opts.resend) {
            (_, true) => Skip::Nothing,
            (Some(_), false) => Skip::Delivered(&recorded),
            (None, false) => Skip::Arrived(&recorded),
        };
        if let (Some(before), Skip::Delivered(_)) = (&before, &skip)
            && let Some(taken) = ids_taken(self.client, plan, &skip, &before.finished_at)?
        {
            return Err(taken.into());
        }
        summary.tables = self.send(store, &source, skip, plan)?;
        write_rejects(self.opts, plan)?;
        (self.progress)(Progress::Phase(Phase::MovingSequences));
        let finish = self.client.post_json("/api/import/finish", &json!({}));
        summary.next_ids = Some(finish.map_err(MigrateError::MoveSequences)?["next_ids"].clone());
        let baseline = before.as_ref().map(|_| &recorded);
        summary.verification = self.verify(store, &source, plan, baseline)?;
        summary.note_changes_since();
        summary.store = self.fill_store(store, plan, before.as_ref())?;
        summary.ok = summary.verification.iter().all(TableCheck::ok)
            && summary.store.as_ref().is_none_or(|s| s.conflicts == 0);
        if summary.ok {
            match before {
                None => {
                    crate::store::failpoint("migrate-finish");
                    records::mark_finished(store, &source, &api_url, plan)?;
                }
                Some(_) => store.migration_checked(&source)?,
            }
        }
        summary.migrated_before = before;
        Ok(summary)
    }

    /// Imports the four tables, parents before children; rows the server
    /// refused leave the plan (they are rejects now, not expected rows).
    fn send(
        &mut self,
        store: &mut Store,
        source: &str,
        skip: Skip<'_>,
        plan: &mut Plan,
    ) -> Result<Vec<TableRun>, MigrateError> {
        let mut sending = Sending {
            client: self.client,
            store,
            source,
            skip,
            legacy: self.legacy,
            legacy_path: &self.opts.legacy,
            progress: &mut *self.progress,
        };
        let mut runs = vec![
            sending.rows(CONTENT, &plan.content, &mut plan.rejects)?,
            sending.rows(FRAGMENTS, &plan.fragments, &mut plan.rejects)?,
            sending.assets(plan)?,
            sending.rows(RANKINGS, &plan.rankings, &mut plan.rejects)?,
        ];
        let rejects = &plan.rejects;
        plan.content.retain(|r| !rejects.contains(CONTENT, r.id));
        plan.fragments
            .retain(|r| !rejects.contains(FRAGMENTS, r.id));
        plan.rankings.retain(|r| !rejects.contains(RANKINGS, r.id));
        for run in &mut runs {
            run.source = plan.source.get(run.table).copied().unwrap_or(0);
            run.rejected = plan.rejects.rows_of(run.table);
            run.rows_per_second = if run.seconds > 0.0 {
                (run.sent + run.resumed) as f64 / run.seconds
            } else {
                0.0
            };
        }
        Ok(runs)
    }

    /// Reads the server back and compares. A row recorded as arrived that
    /// the server does not hold as sent (a database restored from an older
    /// backup, another server behind the same store) would be skipped by
    /// every later run, and the failure would remain however often the
    /// user runs it again: its record goes. After a finished migration such
    /// rows were changed since, are not failures, and keep their records:
    /// they are reported, not sent.
    fn verify(
        &mut self,
        store: &mut Store,
        source: &str,
        plan: &Plan,
        baseline: Option<&Migrated>,
    ) -> Result<Vec<TableCheck>, MigrateError> {
        (self.progress)(Progress::Phase(Phase::Verifying));
        let checks = verify::verify(self.client, plan, baseline)?;
        records::forget_failing(store, source, &checks)?;
        Ok(checks)
    }

    /// The mirror, then the legacy cards and vectors, so that search and
    /// the Anki push work right away. After a finished migration they are
    /// the agent's own since: a push updates cards, `embed` prunes vectors;
    /// they are not copied again.
    fn fill_store(
        &mut self,
        store: &mut Store,
        plan: &Plan,
        before: Option<&Finished>,
    ) -> Result<Option<crate::store::LegacyCopy>, MigrateError> {
        (self.progress)(Progress::Phase(Phase::Pulling));
        pull::pull(store, self.client, PullOptions::default(), |_| {})
            .map_err(MigrateError::Pull)?;
        if before.is_some() {
            return Ok(None);
        }
        (self.progress)(Progress::Phase(Phase::CopyingIntoStore));
        let tables = LegacyTables {
            cards: plan.has_cards,
            vectors: plan.has_vectors,
            vec0: plan.has_vec0,
        };
        Ok(Some(store.copy_legacy(&self.opts.legacy, tables)?))
    }
}
