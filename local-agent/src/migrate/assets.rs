//! The import of assets: one request per asset with its bytes, a few in
//! flight, each arrival checked against the sha256 and size it left with.
//! Resuming relies on the server's listing, not on the records: an asset
//! the server lists with the same sha256 and fields is not sent again.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, Sender};
use std::time::Instant;

use serde_json::Value;

use super::error::MigrateError;
use super::progress::{Progress, Unit};
use super::read::{self, ASSETS, Asset, Plan};
use super::records::Skip;
use super::report::{Reason, Rejects};
use super::send::{Sending, refused};
use super::summary::TableRun;
use super::verify;
use crate::api::{ApiClient, ApiError};
use crate::store::ArrivedRow;

/// Asset uploads in flight at once. One at a time left the server and
/// PostgreSQL idle while the agent read the next blob and waited for each
/// answer; a few in flight keep both busy (most of a migration's bytes are
/// assets).
const ASSET_UPLOADS: usize = 3;

/// An asset and the server's answer to its upload.
type Answer = (Asset, Result<Value, ApiError>);

/// The import request of one asset: its path and query.
fn asset_request(asset: &Asset) -> (String, Vec<(&'static str, String)>) {
    let mut query = vec![("asset_type", asset.asset_type.clone())];
    if let Some(f) = asset.fragment_id {
        query.push(("fragment_id", f.to_string()));
    }
    if let Some(by) = &asset.created_by {
        query.push(("created_by", by.clone()));
    }
    if let Some(at) = &asset.created_at {
        query.push(("created_at", at.clone()));
    }
    if let Some(m) = &asset.metadata {
        query.push(("asset_metadata", m.to_string()));
    }
    (format!("/api/import/assets/{}", asset.id), query)
}

/// Uploads the assets it receives until the queue closes or its answers
/// are no longer taken.
fn upload_worker(
    client: &ApiClient,
    queue: &Mutex<Receiver<(Asset, Vec<u8>)>>,
    answers: Sender<Answer>,
) {
    loop {
        let job = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok((asset, bytes)) = job else { break };
        let (path, query) = asset_request(&asset);
        let result = client.put_bytes(&path, &query, &asset.content_type, &bytes);
        if answers.send((asset, result)).is_err() {
            break;
        }
    }
}

/// Whether `asset` need not be sent: the server lists it as it is, or
/// (after a finished migration) the records say it was delivered.
fn already_there(skip: &Skip<'_>, on_server: &BTreeMap<i64, Value>, asset: &Asset) -> bool {
    if matches!(skip, Skip::Delivered(_)) && skip.skips(ASSETS, asset.id, &asset.checksum()) {
        return true;
    }
    let want = asset.projection();
    on_server
        .get(&asset.id)
        .is_some_and(|got| read::checksum(&verify::project(got, &want)) == read::checksum(&want))
}

impl Sending<'_> {
    /// Sends the assets the server lacks; those refused or stored with
    /// other bytes become rejects and leave the plan.
    pub(super) fn assets(&mut self, plan: &mut Plan) -> Result<TableRun, MigrateError> {
        let started = Instant::now();
        // What the server holds already (metadata only, never bytes).
        let on_server = verify::server_rows(self.client, ASSETS)?;
        (self.progress)(Progress::Sending {
            table: ASSETS,
            total: plan.assets.iter().map(|a| a.size).sum(),
            unit: Unit::Bytes,
        });
        let (resumed, to_send): (Vec<Asset>, Vec<Asset>) = std::mem::take(&mut plan.assets)
            .into_iter()
            .partition(|a| already_there(&self.skip, &on_server, a));
        let mut run = TableRun {
            table: ASSETS,
            resumed: resumed.len(),
            ..TableRun::default()
        };
        let mut kept = self.upload(to_send, &mut plan.rejects, &mut run)?;
        (self.progress)(Progress::Advanced {
            table: ASSETS,
            amount: resumed.iter().map(|a| a.size).sum(),
        });
        kept.extend(resumed);
        // In the plan's order again, whatever order the answers came in.
        kept.sort_by_key(|a| a.id);
        plan.assets = kept;
        (self.progress)(Progress::Sent { table: ASSETS });
        run.seconds = started.elapsed().as_secs_f64();
        Ok(run)
    }

    /// Uploads `assets`; those that arrived intact.
    ///
    /// The blobs are read here (the legacy connection stays on this
    /// thread) and uploaded by a few workers; their answers come back
    /// here, where each one is checked and recorded, in whatever order.
    fn upload(
        &mut self,
        assets: Vec<Asset>,
        rejects: &mut Rejects,
        run: &mut TableRun,
    ) -> Result<Vec<Asset>, MigrateError> {
        let mut kept = Vec::with_capacity(assets.len());
        let (jobs, queue) = std::sync::mpsc::sync_channel(ASSET_UPLOADS);
        let queue = Mutex::new(queue);
        let (answers, answered) = std::sync::mpsc::channel();
        let (client, legacy, legacy_path) = (self.client, self.legacy, self.legacy_path);
        std::thread::scope(|scope| {
            for _ in 0..ASSET_UPLOADS {
                let (queue, answers) = (&queue, answers.clone());
                scope.spawn(move || upload_worker(client, queue, answers));
            }
            drop(answers);
            let mut handle = |answer: Answer| self.answer(answer, rejects, run, &mut kept);
            for asset in assets {
                let bytes = read::asset_bytes(legacy, asset.id)
                    .map_err(MigrateError::reading(legacy_path))?;
                // A full queue waits for a worker; meanwhile answers pile
                // up in their channel and are handled below, so none waits
                // long.
                jobs.send((asset, bytes))
                    .map_err(|_| MigrateError::UploadsStopped)?;
                while let Ok(answer) = answered.try_recv() {
                    handle(answer)?;
                }
            }
            drop(jobs);
            // Every worker ends once the queue is empty and closed.
            answered.iter().try_for_each(handle)
        })?;
        Ok(kept)
    }

    /// Checks and records one upload's answer.
    fn answer(
        &mut self,
        (asset, result): Answer,
        rejects: &mut Rejects,
        run: &mut TableRun,
        kept: &mut Vec<Asset>,
    ) -> Result<(), MigrateError> {
        match result {
            Ok(row) => {
                let sha = row["sha256"].as_str().unwrap_or_default();
                let size = row["size"].as_u64().unwrap_or_default();
                if sha != asset.sha256 || size != asset.size {
                    rejects.add(
                        ASSETS,
                        asset.id,
                        "asset_data",
                        Reason::ChecksumMismatch,
                        format!(
                            "sent {} bytes with sha256 {}, the server holds {size} bytes with {sha}",
                            asset.size, asset.sha256
                        ),
                    );
                } else {
                    let arrived = ArrivedRow {
                        table: ASSETS.to_owned(),
                        id: asset.id,
                        checksum: asset.checksum(),
                    };
                    self.store.record_arrivals(self.source, &[arrived])?;
                    run.sent += 1;
                    run.bytes += asset.size;
                    kept.push(asset.clone());
                }
            }
            Err(source) => match refused(&source) {
                Some(detail) => rejects.add(ASSETS, asset.id, "*", Reason::ServerRefused, detail),
                None => {
                    return Err(MigrateError::ImportAsset {
                        id: asset.id,
                        source,
                    });
                }
            },
        }
        (self.progress)(Progress::Advanced {
            table: ASSETS,
            amount: asset.size,
        });
        Ok(())
    }
}
