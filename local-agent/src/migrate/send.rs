//! The import of contents, fragments and rankings: batches of rows, as
//! many as the API takes, each acknowledged batch recorded as arrived.

use std::time::Instant;

use rusqlite::Connection;
use serde_json::json;

use super::error::MigrateError;
use super::progress::{Progress, Unit};
use super::read::{CONTENT, FRAGMENTS, Row};
use super::records::{Skip, arrived};
use super::report::{Reason, Rejects};
use super::summary::TableRun;
use crate::api::{ApiClient, ApiError};
use crate::store::Store;

/// Rows per import request: as many as the API takes.
pub const BATCH: usize = content_model::limits::IMPORT_BATCH_ROWS;

/// What the sending of every table needs.
pub(super) struct Sending<'a> {
    pub client: &'a ApiClient,
    pub store: &'a mut Store,
    /// The legacy file's key in the store's records.
    pub source: &'a str,
    pub skip: Skip<'a>,
    /// The legacy file, for the asset bytes.
    pub legacy: &'a Connection,
    pub legacy_path: &'a std::path::Path,
    pub progress: &'a mut dyn FnMut(Progress),
}

fn import_path(table: &str) -> &'static str {
    match table {
        CONTENT => "/api/import/content",
        FRAGMENTS => "/api/import/fragments",
        _ => "/api/import/rankings",
    }
}

/// A refusal the server answers for one row (422, 409, 413): a reject, not
/// a failure of the run.
pub(super) fn refused(e: &ApiError) -> Option<String> {
    match e {
        ApiError::Rejected { status, detail } if matches!(status, 400 | 409 | 413 | 422) => {
            Some(format!("{status}: {detail}"))
        }
        _ => None,
    }
}

impl Sending<'_> {
    /// Sends the rows of `table` the skip leaves; a row the server refuses
    /// becomes a reject.
    pub(super) fn rows(
        &mut self,
        table: &'static str,
        rows: &[Row],
        rejects: &mut Rejects,
    ) -> Result<TableRun, MigrateError> {
        let started = Instant::now();
        let mut run = TableRun {
            table,
            ..TableRun::default()
        };
        (self.progress)(Progress::Sending {
            table,
            total: rows.len() as u64,
            unit: Unit::Rows,
        });
        let pending: Vec<&Row> = rows
            .iter()
            .filter(|r| !self.skip.skips(table, r.id, &r.checksum))
            .collect();
        run.resumed = rows.len() - pending.len();
        (self.progress)(Progress::Advanced {
            table,
            amount: run.resumed as u64,
        });
        for chunk in pending.chunks(BATCH) {
            let done = self.batch(table, chunk, rejects)?;
            run.sent += done.len();
            self.store
                .record_arrivals(self.source, &arrived(table, done))?;
            (self.progress)(Progress::Advanced {
                table,
                amount: chunk.len() as u64,
            });
        }
        (self.progress)(Progress::Sent { table });
        run.seconds = started.elapsed().as_secs_f64();
        Ok(run)
    }

    /// One import request; the rows that arrived.
    fn batch<'r>(
        &self,
        table: &'static str,
        chunk: &[&'r Row],
        rejects: &mut Rejects,
    ) -> Result<Vec<&'r Row>, MigrateError> {
        let body = json!({ "rows": chunk.iter().map(|r| &r.json).collect::<Vec<_>>() });
        match self.client.post_json(import_path(table), &body) {
            Ok(_) => Ok(chunk.to_vec()),
            // One bad row fails its batch: find it, send the others.
            Err(e) if refused(&e).is_some() => self.one_by_one(table, chunk, rejects),
            Err(source) => Err(MigrateError::Import { table, source }),
        }
    }

    fn one_by_one<'r>(
        &self,
        table: &'static str,
        chunk: &[&'r Row],
        rejects: &mut Rejects,
    ) -> Result<Vec<&'r Row>, MigrateError> {
        let mut ok = Vec::new();
        for row in chunk {
            let body = json!({ "rows": [&row.json] });
            match self.client.post_json(import_path(table), &body) {
                Ok(_) => ok.push(*row),
                Err(source) => match refused(&source) {
                    Some(detail) => rejects.add(table, row.id, "*", Reason::ServerRefused, detail),
                    None => {
                        return Err(MigrateError::ImportRow {
                            table,
                            id: row.id,
                            source,
                        });
                    }
                },
            }
        }
        Ok(ok)
    }
}
