//! The migration, in order: read and convert everything (rejects decided
//! before anything is sent), import contents, fragments, then assets one
//! per request, a few in flight (each arrival checked by sha256), then
//! rankings; move the sequences;
//! verify table by table; bring the agent's mirror up to date and copy
//! `anki_cards`, `vector_embeddings` and the vectors into the store.
//!
//! Resuming: the import is an upsert by id that skips identical rows, so
//! sending a row twice changes nothing. To avoid re-sending, rows that
//! arrived are recorded in the store's `migration_progress` (with their
//! checksum), and an asset is skipped when the server already lists it with
//! the same sha256 and fields. Neither shortcut is needed for correctness:
//! the final verification reads the server back, and a row it finds missing
//! or different loses its record, so that the next run sends it again.
//!
//! Re-running after a finished migration (recorded in `migration_finished`
//! once a verification passed): the rows it delivered are never sent again,
//! whatever their checksum now, and neither are the cards and vectors, so
//! that nothing the user or the agent did since is undone (a content
//! deleted on the server, a card the Anki push updated, vectors `embed`
//! pruned). Rows the legacy file gained since are sent. The verification
//! reports what changed since instead of failing on it. `--resend` sends
//! everything again.
//!
//! An API that stops answering (its database down: 503 + Retry-After) is
//! waited for by the client's backoff; when that runs out the run stops
//! with an error that says to run the same command again.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::{Value, json};

use super::convert::Repairs;
use super::read::{self, ASSETS, CONTENT, FRAGMENTS, Plan, RANKINGS, Row};
use super::report::Reason;
use super::verify::{self, Migrated, Since, TableCheck};
use crate::api::{ApiClient, ApiError};
use crate::pull::{self, PullOptions};
use crate::store::Store;

/// Rows per import request: as many as the API takes.
pub const BATCH: usize = content_model::limits::IMPORT_BATCH_ROWS;

#[derive(Debug, Clone)]
pub struct Options {
    pub legacy: PathBuf,
    pub dry_run: bool,
    pub reject_report: PathBuf,
    pub repairs: Repairs,
    /// Progress bars on stderr.
    pub progress: bool,
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

#[derive(Debug, Clone, Default, Serialize)]
pub struct StoreCopy {
    pub anki_cards: usize,
    pub vector_embeddings: usize,
    pub vectors: usize,
    /// Legacy rows of anki_cards / vector_embeddings whose id the store
    /// gives to another card or vector after the copy. (The agent's own
    /// updates of a copied row, a push or a re-embedding, are not
    /// conflicts.)
    pub conflicts: usize,
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
    pub rejects_by_reason: std::collections::BTreeMap<&'static str, usize>,
    pub reject_report: PathBuf,
    pub next_ids: Option<Value>,
    pub verification: Vec<TableCheck>,
    pub store: Option<StoreCopy>,
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
    pub ok: bool,
}

fn source_key(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_owned())
        .display()
        .to_string()
}

/// What the store records as delivered from `source`.
fn delivered(conn: &Connection, source: &str) -> Result<Migrated> {
    let mut out = Migrated::new();
    let mut stmt =
        conn.prepare("SELECT table_name, id, checksum FROM migration_progress WHERE source = ?1")?;
    let rows = stmt.query_map([source], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        let (table, id, checksum) = row?;
        if let Some(table) = [CONTENT, FRAGMENTS, ASSETS, RANKINGS]
            .into_iter()
            .find(|t| *t == table)
        {
            out.entry(table).or_default().insert(id, checksum);
        }
    }
    Ok(out)
}

/// Which rows a run leaves out.
enum Skip<'a> {
    /// Resuming: rows recorded as arrived with the checksum they have now.
    Arrived(&'a Migrated),
    /// After a finished migration: every row it delivered, whatever it
    /// holds now (a changed legacy row is reported, not sent).
    Delivered(&'a Migrated),
    /// `--resend`: none.
    Nothing,
}

impl Skip<'_> {
    fn skips(&self, table: &str, id: i64, checksum: &str) -> bool {
        let recorded = |m: &Migrated| m.get(table).and_then(|t| t.get(&id)).cloned();
        match self {
            Skip::Arrived(m) => recorded(m).is_some_and(|c| c == checksum),
            Skip::Delivered(m) => recorded(m).is_some(),
            Skip::Nothing => false,
        }
    }
}

/// The finished migration of `source` to `api_url`, if there is one.
fn finished(
    conn: &Connection,
    source: &str,
    api_url: &str,
    plan: &Plan,
) -> Result<Option<Finished>> {
    let row = conn
        .query_row(
            "SELECT finished_at, rows, fingerprint FROM migration_finished
             WHERE source = ?1 AND api_url = ?2",
            params![source, api_url],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                ))
            },
        )
        .optional()?;
    Ok(row.map(|(finished_at, rows, fingerprint)| Finished {
        finished_at,
        api_url: api_url.to_owned(),
        rows: rows as usize,
        legacy_unchanged: fingerprint == plan_fingerprint(plan),
    }))
}

/// Every row of the plan by table, id and checksum, hashed: equal
/// fingerprints mean the legacy file holds the same rows.
fn plan_fingerprint(plan: &Plan) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for (table, id, checksum) in plan_rows(plan) {
        hash.update(format!("{table}\t{id}\t{checksum}\n"));
    }
    hex::encode(hash.finalize())
}

fn plan_rows(plan: &Plan) -> Vec<(&'static str, i64, String)> {
    let rows = |table: &'static str, rows: &[Row]| {
        rows.iter()
            .map(|r| (table, r.id, r.checksum.clone()))
            .collect::<Vec<_>>()
    };
    let mut all = rows(CONTENT, &plan.content);
    all.extend(rows(FRAGMENTS, &plan.fragments));
    all.extend(plan.assets.iter().map(|a| (ASSETS, a.id, a.checksum())));
    all.extend(rows(RANKINGS, &plan.rankings));
    all
}

/// Records the migration of `source` as finished: every row of the plan
/// (all verified) as delivered, with the plan's fingerprint.
fn mark_finished(conn: &Connection, source: &str, api_url: &str, plan: &Plan) -> Result<()> {
    let rows = plan_rows(plan);
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = (|| -> Result<()> {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        for (table, id, checksum) in &rows {
            conn.prepare_cached(
                "INSERT INTO migration_progress (source, table_name, id, checksum, arrived_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (source, table_name, id) DO UPDATE SET checksum = excluded.checksum",
            )?
            .execute(params![source, table, id, checksum, now])?;
        }
        conn.execute(
            "INSERT INTO migration_finished (source, finished_at, fingerprint, rows, api_url, checked_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?2)
             ON CONFLICT (source) DO UPDATE SET finished_at = excluded.finished_at,
                 fingerprint = excluded.fingerprint, rows = excluded.rows,
                 api_url = excluded.api_url, checked_at = excluded.checked_at",
            params![source, now, plan_fingerprint(plan), rows.len() as i64, api_url],
        )?;
        Ok(())
    })();
    match result {
        Ok(()) => conn.execute_batch("COMMIT")?,
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e);
        }
    }
    Ok(())
}

fn record(conn: &Connection, source: &str, table: &str, done: &[(i64, String)]) -> Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let now = chrono::Utc::now().to_rfc3339();
    for (id, checksum) in done {
        conn.prepare_cached(
            "INSERT INTO migration_progress (source, table_name, id, checksum, arrived_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (source, table_name, id) DO UPDATE SET checksum = excluded.checksum,
                 arrived_at = excluded.arrived_at",
        )?
        .execute(params![source, table, id, checksum, now])?;
    }
    conn.execute_batch("COMMIT")?;
    Ok(())
}

/// Drops the arrival records of the rows the verification found missing
/// or different, so that the next run sends them again.
fn forget(conn: &Connection, source: &str, checks: &[TableCheck]) -> Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    for check in checks {
        for id in &check.failing {
            conn.prepare_cached(
                "DELETE FROM migration_progress WHERE source = ?1 AND table_name = ?2 AND id = ?3",
            )?
            .execute(params![source, check.table, id])?;
        }
    }
    conn.execute_batch("COMMIT")?;
    Ok(())
}

fn bar(show: bool, len: u64, msg: &str, bytes: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len);
    let template = if bytes {
        "{msg:<18} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} [{elapsed}, eta {eta}]"
    } else {
        "{msg:<18} [{bar:30}] {pos}/{len} rows {per_sec} [{elapsed}, eta {eta}]"
    };
    b.set_style(
        ProgressStyle::with_template(template)
            .expect("valid template")
            .progress_chars("=> "),
    );
    b.set_message(msg.to_owned());
    b
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
fn refused(e: &ApiError) -> Option<String> {
    match e {
        ApiError::Rejected { status, detail } if matches!(status, 400 | 409 | 413 | 422) => {
            Some(format!("{status}: {detail}"))
        }
        _ => None,
    }
}

#[allow(clippy::too_many_arguments)]
fn send_rows(
    client: &ApiClient,
    progress: &Connection,
    skip: &Skip<'_>,
    source: &str,
    table: &'static str,
    rows: &[Row],
    plan_rejects: &mut super::report::Rejects,
    show: bool,
) -> Result<TableRun> {
    let started = Instant::now();
    let mut run = TableRun {
        table,
        ..TableRun::default()
    };
    let pb = bar(show, rows.len() as u64, table, false);
    let mut pending = Vec::new();
    for row in rows {
        if skip.skips(table, row.id, &row.checksum) {
            run.resumed += 1;
            pb.inc(1);
            continue;
        }
        pending.push(row);
    }
    for chunk in pending.chunks(BATCH) {
        let body = json!({ "rows": chunk.iter().map(|r| &r.json).collect::<Vec<_>>() });
        let done: Vec<&Row> = match client.post_json(import_path(table), &body) {
            Ok(_) => chunk.to_vec(),
            Err(e) if refused(&e).is_some() => {
                // One bad row fails its batch: find it, send the others.
                let mut ok = Vec::new();
                for row in chunk {
                    match client.post_json(import_path(table), &json!({ "rows": [&row.json] })) {
                        Ok(_) => ok.push(*row),
                        Err(e) => match refused(&e) {
                            Some(detail) => {
                                plan_rejects.add(table, row.id, "*", Reason::ServerRefused, detail)
                            }
                            None => {
                                return Err(anyhow::Error::from(e))
                                    .with_context(|| format!("importing {table} {}", row.id));
                            }
                        },
                    }
                }
                ok
            }
            Err(e) => {
                return Err(anyhow::Error::from(e)).with_context(|| format!("importing {table}"));
            }
        };
        run.sent += done.len();
        let arrived: Vec<(i64, String)> = done.iter().map(|r| (r.id, r.checksum.clone())).collect();
        record(progress, source, table, &arrived)?;
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    run.seconds = started.elapsed().as_secs_f64();
    Ok(run)
}

/// Asset uploads in flight at once. One at a time left the server and
/// PostgreSQL idle while the agent read the next blob and waited for each
/// answer; a few in flight keep both busy (most of a migration's bytes are
/// assets).
const ASSET_UPLOADS: usize = 3;

/// The import request of one asset: its path and query.
fn asset_request(asset: &read::Asset) -> (String, Vec<(&'static str, String)>) {
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

fn send_assets(
    client: &ApiClient,
    legacy: &Connection,
    progress: &Connection,
    skip: &Skip<'_>,
    source: &str,
    plan: &mut Plan,
    show: bool,
) -> Result<TableRun> {
    let started = Instant::now();
    let mut run = TableRun {
        table: ASSETS,
        ..TableRun::default()
    };
    // What the server holds already (metadata only, never bytes).
    let on_server = verify::server_rows(client, ASSETS)?;
    let total: u64 = plan.assets.iter().map(|a| a.size).sum();
    let pb = bar(show, total, "fragment_assets", true);
    let assets = plan.assets.clone();
    let mut kept = Vec::with_capacity(assets.len());
    let mut resumed = Vec::new();
    // The blobs are read here (the legacy connection stays on this thread)
    // and uploaded by a few workers; their answers come back here, where
    // each one is checked and recorded as before, in whatever order.
    let (jobs, queue) = std::sync::mpsc::sync_channel::<(read::Asset, Vec<u8>)>(ASSET_UPLOADS);
    let queue = std::sync::Mutex::new(queue);
    let (answers, answered) = std::sync::mpsc::channel();
    let outcome = std::thread::scope(|scope| -> Result<()> {
        for _ in 0..ASSET_UPLOADS {
            let (queue, answers) = (&queue, answers.clone());
            scope.spawn(move || {
                loop {
                    let job = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok((asset, bytes)) = job else { break };
                    let (path, query) = asset_request(&asset);
                    let result = client.put_bytes(&path, &query, &asset.content_type, &bytes);
                    if answers.send((asset, result)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(answers);
        let mut handle = |(asset, result): (read::Asset, Result<Value, ApiError>)| -> Result<()> {
            match result {
                Ok(row) => {
                    let sha = row["sha256"].as_str().unwrap_or_default();
                    let size = row["size"].as_u64().unwrap_or_default();
                    if sha != asset.sha256 || size != asset.size {
                        plan.rejects.add(
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
                        record(progress, source, ASSETS, &[(asset.id, asset.checksum())])?;
                        run.sent += 1;
                        run.bytes += asset.size;
                        kept.push(asset.clone());
                    }
                }
                Err(e) => match refused(&e) {
                    Some(detail) => {
                        plan.rejects
                            .add(ASSETS, asset.id, "*", Reason::ServerRefused, detail);
                    }
                    None => {
                        return Err(anyhow::Error::from(e))
                            .with_context(|| format!("importing asset {}", asset.id));
                    }
                },
            }
            pb.inc(asset.size);
            Ok(())
        };
        for asset in assets {
            // Resuming relies on the server's listing for assets, not on the
            // records; after a finished migration the records decide.
            if matches!(skip, Skip::Delivered(_)) && skip.skips(ASSETS, asset.id, &asset.checksum())
            {
                resumed.push(asset);
                continue;
            }
            let want = asset.projection();
            if let Some(got) = on_server.get(&asset.id)
                && read::checksum(&verify::project(got, &want)) == read::checksum(&want)
            {
                resumed.push(asset);
                continue;
            }
            let bytes = read::asset_bytes(legacy, asset.id)?;
            // A full queue waits for a worker; meanwhile answers pile up in
            // their channel and are handled below, so none waits long.
            jobs.send((asset, bytes))
                .map_err(|_| anyhow::anyhow!("the asset uploads stopped"))?;
            while let Ok(answer) = answered.try_recv() {
                handle(answer)?;
            }
        }
        drop(jobs);
        // Every worker ends once the queue is empty and closed.
        for answer in answered.iter() {
            handle(answer)?;
        }
        Ok(())
    });
    outcome?;
    run.resumed = resumed.len();
    pb.inc(resumed.iter().map(|a| a.size).sum());
    kept.extend(resumed);
    // In the plan's order again, whatever order the answers came in.
    kept.sort_by_key(|a| a.id);
    plan.assets = kept;
    pb.finish_and_clear();
    run.seconds = started.elapsed().as_secs_f64();
    Ok(run)
}

/// Copies anki_cards, vector_embeddings and the vectors into the store,
/// unchanged and with their ids; rows the store holds already are left
/// alone. A legacy row whose id the store then gives to another card (other
/// content or fragment) or vector (other source or model) is a conflict;
/// the same card or vector updated since (a push records new fields, hash,
/// status and maybe a new note id; `embed` a new text hash) is not.
pub fn copy_into_store(store: &Store, legacy: &Path, plan: &Plan) -> Result<StoreCopy> {
    let conn = store.conn();
    conn.execute(
        "ATTACH DATABASE ?1 AS legacy",
        [legacy.to_str().context("the legacy path is not UTF-8")?],
    )?;
    let result = (|| -> Result<StoreCopy> {
        let mut copy = StoreCopy::default();
        conn.execute_batch("BEGIN IMMEDIATE")?;
        if plan.has_cards {
            copy.anki_cards = conn.execute(
                "INSERT OR IGNORE INTO main.anki_cards SELECT * FROM legacy.anki_cards",
                [],
            )?;
        }
        if plan.has_vectors {
            copy.vector_embeddings = conn.execute(
                "INSERT OR IGNORE INTO main.vector_embeddings SELECT * FROM legacy.vector_embeddings",
                [],
            )?;
            if plan.has_vec0 {
                copy.vectors = conn.execute(
                    "INSERT INTO main.vec_embeddings (rowid, embedding, model, source_type)
                     SELECT v.rowid, v.embedding, e.model, e.source_type
                     FROM legacy.vec_embeddings v JOIN legacy.vector_embeddings e ON e.id = v.rowid
                     WHERE v.rowid NOT IN (SELECT rowid FROM main.vec_embeddings)",
                    [],
                )?;
            }
        }
        conn.execute_batch("COMMIT")?;
        let missing = |table: &str, identity: &str| -> Result<usize> {
            let n: i64 = conn.query_row(
                &format!(
                    "SELECT count(*) FROM (SELECT {identity} FROM legacy.{table}
                     EXCEPT SELECT {identity} FROM main.{table})"
                ),
                [],
                |r| r.get(0),
            )?;
            Ok(n as usize)
        };
        if plan.has_cards {
            copy.conflicts += missing("anki_cards", "id, learning_content_id, fragment_id")?;
        }
        if plan.has_vectors {
            copy.conflicts += missing("vector_embeddings", "id, source_type, source_id, model")?;
        }
        Ok(copy)
    })();
    if result.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    conn.execute("DETACH DATABASE legacy", [])?;
    result
}

/// Runs the migration. `store` and `client` are not touched in a dry run
/// (which needs neither).
pub fn run(
    opts: &Options,
    store: Option<&mut Store>,
    client: Option<&ApiClient>,
) -> Result<Summary> {
    let started = Instant::now();
    let legacy = read::open(&opts.legacy)?;
    let plan = read::plan(&legacy, opts.repairs)?;
    let mut summary = Summary {
        legacy: opts.legacy.clone(),
        dry_run: opts.dry_run,
        reject_report: opts.reject_report.clone(),
        resend: opts.resend,
        ..Summary::default()
    };
    let (Some(store), Some(client), false) = (store, client, opts.dry_run) else {
        for (table, n) in &plan.source {
            summary.tables.push(TableRun {
                table,
                source: *n,
                rejected: plan.rejects.rows_of(table),
                ..TableRun::default()
            });
        }
        finish_summary(&mut summary, &plan, started);
        plan.rejects
            .write(&opts.reject_report)
            .with_context(|| format!("writing {}", opts.reject_report.display()))?;
        summary.ok = true;
        return Ok(summary);
    };
    migrate_into(opts, store, client, &legacy, plan, summary, started).map_err(|e| {
        if e.is::<IdsTaken>() {
            // Running it again would not help: the message says what does.
            e
        } else {
            e.context(
                "the migration stopped before it finished; run the same command again to \
                 resume (what arrived is recorded and is not sent twice)",
            )
        }
    })
}

/// Rows the legacy file gained since a finished migration whose ids the
/// server has given to other rows since (both sides went on numbering from
/// the same place): sending them would overwrite the server's rows.
#[derive(Debug, thiserror::Error)]
#[error(
    "{}: new in the legacy file since the migration of {}, but the server has given \
     these ids to other rows since; nothing was sent. Importing them would overwrite the \
     server's rows: remove them from the legacy file, or give them (and their fragments, \
     assets and rankings) ids the server does not use, then run migrate again",
    .taken.iter().map(|(table, ids)| format!("{} {}", noun(table, ids.len()), join(ids))).collect::<Vec<_>>().join("; "),
    when(.finished_at)
)]
pub struct IdsTaken {
    pub finished_at: String,
    pub taken: Vec<(&'static str, Vec<i64>)>,
}

fn noun(table: &str, n: usize) -> String {
    let one = match table {
        CONTENT => "content",
        FRAGMENTS => "fragment",
        ASSETS => "asset",
        RANKINGS => "ranking",
        _ => "row",
    };
    if n == 1 {
        one.to_owned()
    } else {
        format!("{one}s")
    }
}

fn join(ids: &[i64]) -> String {
    let mut listed = ids
        .iter()
        .take(LISTED)
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if ids.len() > LISTED {
        listed.push_str(&format!(" and {} more", ids.len() - LISTED));
    }
    listed
}

/// After a finished migration: the new legacy rows (never delivered) whose
/// ids the server holds with another row.
fn ids_taken(
    client: &ApiClient,
    plan: &Plan,
    skip: &Skip<'_>,
    finished_at: &str,
) -> Result<Option<IdsTaken>> {
    let mut taken = Vec::new();
    // Per table: each row's id, checksum and what is compared with the server.
    type Rows = Vec<(i64, String, Value)>;
    let mut rows: Vec<(&'static str, Rows)> = Vec::new();
    for (table, list) in [
        (CONTENT, &plan.content),
        (FRAGMENTS, &plan.fragments),
        (RANKINGS, &plan.rankings),
    ] {
        rows.push((
            table,
            list.iter()
                .map(|r| (r.id, r.checksum.clone(), r.json.clone()))
                .collect(),
        ));
    }
    rows.push((
        ASSETS,
        plan.assets
            .iter()
            .map(|a| (a.id, a.checksum(), a.projection()))
            .collect(),
    ));
    for (table, rows) in rows {
        let new: Vec<_> = rows
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

/// The migration proper, after the plan: send, move the sequences, verify,
/// pull, copy the cards and vectors.
fn migrate_into(
    opts: &Options,
    store: &mut Store,
    client: &ApiClient,
    legacy: &Connection,
    mut plan: Plan,
    mut summary: Summary,
    started: Instant,
) -> Result<Summary> {
    let source = source_key(&opts.legacy);
    let show = opts.progress;
    let api_url = client.base_url().to_owned();
    let before = if opts.resend {
        None
    } else {
        finished(store.conn(), &source, &api_url, &plan)?
    };
    let recorded = delivered(store.conn(), &source)?;
    let skip = match (&before, opts.resend) {
        (_, true) => Skip::Nothing,
        (Some(_), false) => Skip::Delivered(&recorded),
        (None, false) => Skip::Arrived(&recorded),
    };

    if let (Some(before), Skip::Delivered(_)) = (&before, &skip)
        && let Some(taken) = ids_taken(client, &plan, &skip, &before.finished_at)?
    {
        return Err(taken.into());
    }

    let mut runs = Vec::new();
    for table in [CONTENT, FRAGMENTS] {
        let rows = if table == CONTENT {
            plan.content.clone()
        } else {
            plan.fragments.clone()
        };
        runs.push(send_rows(
            client,
            store.conn(),
            &skip,
            &source,
            table,
            &rows,
            &mut plan.rejects,
            show,
        )?);
    }
    runs.push(send_assets(
        client,
        legacy,
        store.conn(),
        &skip,
        &source,
        &mut plan,
        show,
    )?);
    let rankings = plan.rankings.clone();
    runs.push(send_rows(
        client,
        store.conn(),
        &skip,
        &source,
        RANKINGS,
        &rankings,
        &mut plan.rejects,
        show,
    )?);
    // Rows the server refused are rejects now, not expected rows.
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
    summary.tables = runs;
    plan.rejects
        .write(&opts.reject_report)
        .with_context(|| format!("writing {}", opts.reject_report.display()))?;

    summary.next_ids = Some(
        client
            .post_json("/api/import/finish", &json!({}))
            .context("moving the sequences past the imported ids")?["next_ids"]
            .clone(),
    );
    let baseline = before.as_ref().map(|_| &recorded);
    summary.verification = verify::verify(client, &plan, baseline)?;
    // A row recorded as arrived that the server does not hold as sent (a
    // database restored from an older backup, another server behind the
    // same store) would be skipped by every later run, and the failure
    // would remain however often the user runs it again. After a finished
    // migration such rows were changed since, are not failures, and keep
    // their records: they are reported, not sent.
    forget(store.conn(), &source, &summary.verification)?;
    summary.changed_since = summary
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

    // The mirror, then the legacy cards and vectors, so that search and the
    // Anki push work right away. After a finished migration they are the
    // agent's own since: a push updates cards, `embed` prunes vectors.
    pull::pull(store, client, PullOptions::default(), |_| {}).context("pulling into the store")?;
    if before.is_none() {
        summary.store = Some(copy_into_store(store, &opts.legacy, &plan)?);
    }

    finish_summary(&mut summary, &plan, started);
    summary.ok = summary.verification.iter().all(TableCheck::ok)
        && summary.store.as_ref().is_none_or(|s| s.conflicts == 0);
    if summary.ok {
        if before.is_none() {
            crate::store::failpoint("migrate-finish");
            mark_finished(store.conn(), &source, &api_url, &plan)?;
        } else {
            store.conn().execute(
                "UPDATE migration_finished SET checked_at = ?2 WHERE source = ?1",
                params![
                    source,
                    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ],
            )?;
        }
    }
    summary.migrated_before = before;
    Ok(summary)
}

fn finish_summary(summary: &mut Summary, plan: &Plan, started: Instant) {
    summary.rejected_rows = plan.rejects.total_rows();
    summary.reject_lines = plan.rejects.lines.len();
    summary.rejects_by_reason = plan.rejects.by_reason();
    summary.seconds = started.elapsed().as_secs_f64();
    let moved: usize = summary.tables.iter().map(|t| t.sent + t.resumed).sum();
    let bytes: u64 = summary.tables.iter().map(|t| t.bytes).sum();
    summary.nothing_to_do = !summary.dry_run && summary.tables.iter().all(|t| t.sent == 0);
    if summary.seconds > 0.0 {
        summary.rows_per_second = moved as f64 / summary.seconds;
        summary.mb_per_second = bytes as f64 / 1e6 / summary.seconds;
    }
}

/// The summary as text.
pub fn render(s: &Summary) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<18} {:>7} {:>8} {:>7} {:>8} {:>9} {:>10}\n",
        "table", "source", "rejected", "sent", "resumed", "rows/s", "MB"
    ));
    for t in &s.tables {
        out.push_str(&format!(
            "{:<18} {:>7} {:>8} {:>7} {:>8} {:>9.0} {:>10.2}\n",
            t.table,
            t.source,
            t.rejected,
            t.sent,
            t.resumed,
            t.rows_per_second,
            t.bytes as f64 / 1e6
        ));
    }
    out.push_str(&rejects_line(s));
    if s.dry_run {
        out.push_str("dry run: nothing was sent and the store was not touched\n");
        return out;
    }
    let resumed: usize = s.tables.iter().map(|t| t.resumed).sum();
    if let Some(before) = &s.migrated_before {
        out.push_str(&format!(
            "this file was migrated to {} on {}: its rows are not sent again, rows added to it since are; \
             the legacy file {}\n",
            before.api_url,
            when(&before.finished_at),
            if before.legacy_unchanged {
                "is unchanged since"
            } else {
                "has changed since"
            }
        ));
    }
    if s.nothing_to_do {
        out.push_str(
            "nothing to do: every row and asset had arrived already; nothing was changed\n",
        );
    } else if resumed > 0 && s.migrated_before.is_none() {
        out.push_str(&format!(
            "resumed: {resumed} rows/assets that an earlier run had delivered were skipped\n"
        ));
    }
    if let Some(next) = &s.next_ids {
        out.push_str(&format!("sequences moved, next ids: {next}\n"));
    }
    out.push_str(&format!(
        "{:.1} s, {:.0} rows/s, {:.2} MB/s\n\nverification:\n{}",
        s.seconds,
        s.rows_per_second,
        s.mb_per_second,
        verify::render(&s.verification)
    ));
    if let Some(before) = &s.migrated_before {
        out.push_str(&changes_since(&s.changed_since, &before.finished_at));
        out.push_str(&format!(
            "store: anki_cards and vectors not copied again (the migration of {} copied them; \
             since then they are the agent's own: `anki push` updates cards, `embed` prunes \
             vectors)\n",
            when(&before.finished_at)
        ));
        out.push_str(&format!(
            "to send every row of the legacy file again, restoring what was deleted or edited \
             on the server since, and copy back missing cards and vectors: \
             local-agent migrate {} --resend\n",
            s.legacy.display()
        ));
    }
    if let Some(c) = &s.store {
        out.push_str(&format!(
            "store: {} anki_cards, {} vector_embeddings and {} vectors copied{}\n",
            c.anki_cards,
            c.vector_embeddings,
            c.vectors,
            if c.conflicts > 0 {
                format!(", {} CONFLICTS (ids held by other rows)", c.conflicts)
            } else {
                String::new()
            }
        ));
    }
    out
}

/// The rejects: rows (each counted once) and report lines per reason (a
/// row refused for several reasons has a line for each).
fn rejects_line(s: &Summary) -> String {
    if s.rejected_rows == 0 {
        return format!("\nno row rejected, report: {}\n", s.reject_report.display());
    }
    format!(
        "\n{} rows rejected; {} reject lines, one per refused value (a row can have several), by reason: {}; report: {}\n",
        s.rejected_rows,
        s.reject_lines,
        s.rejects_by_reason
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        s.reject_report.display()
    )
}

/// An RFC 3339 instant as `2026-05-03 14:02 UTC`.
fn when(instant: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(instant)
        .map(|t| t.to_utc().format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|_| instant.to_owned())
}

/// How many ids of one kind of change are listed before "and N more".
const LISTED: usize = 20;

/// One line per table and kind of change: "content 2: deleted on the
/// server since the migration of …; not restored".
fn changes_since(changes: &[ChangedSince], finished_at: &str) -> String {
    if changes.is_empty() {
        return "changed since the migration: nothing; the server holds every row it delivered\n"
            .to_owned();
    }
    let mut groups: std::collections::BTreeMap<(usize, Since), Vec<i64>> = Default::default();
    let tables = [CONTENT, FRAGMENTS, ASSETS, RANKINGS];
    for c in changes {
        let order = tables.iter().position(|t| *t == c.table).unwrap_or(0);
        groups.entry((order, c.change)).or_default().push(c.id);
    }
    let date = when(finished_at);
    let mut out = String::new();
    for ((order, change), ids) in groups {
        let mut listed = join(&ids);
        if ids.len() > LISTED {
            listed.push_str(" (--json lists them all)");
        }
        let what = match change {
            Since::DeletedOnServer => {
                format!("deleted on the server since the migration of {date}; not restored")
            }
            Since::EditedOnServer => format!(
                "edited on the server since the migration of {date}; the server's version is kept"
            ),
            Since::ChangedInLegacy => {
                format!("changed in the legacy file since the migration of {date}; not sent")
            }
        };
        out.push_str(&format!(
            "{} {listed}: {what}\n",
            noun(tables[order], ids.len())
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use legacy_fixture::{LEGACY_VECTORS, legacy_schema};

    #[test]
    fn the_reject_summary_says_what_each_number_counts() {
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
            reject_report: "rejects.jsonl".into(),
            ..Summary::default()
        };
        finish_summary(&mut summary, &plan, Instant::now());
        assert_eq!((summary.rejected_rows, summary.reject_lines), (2, 3));
        let text = render(&summary);
        assert!(
            text.contains(
                "2 rows rejected; 3 reject lines, one per refused value (a row can have several), \
                 by reason: invalid_json 1, parent_rejected 1, too_long 1; report: rejects.jsonl"
            ),
            "{text}"
        );
        let none = render(&Summary {
            dry_run: true,
            reject_report: "rejects.jsonl".into(),
            ..Summary::default()
        });
        assert!(
            none.contains("no row rejected, report: rejects.jsonl"),
            "{none}"
        );
    }

    #[test]
    fn cards_and_vectors_the_agent_updated_since_are_not_conflicts_but_taken_ids_are() {
        let dir = tempfile::tempdir().unwrap();
        let legacy_path = dir.path().join("anki_vector_db.db");
        let store = Store::open(&dir.path().join("agent.db")).unwrap();
        let legacy = Connection::open(&legacy_path).unwrap();
        legacy.execute_batch(&legacy_schema()).unwrap();
        legacy.execute_batch(LEGACY_VECTORS).unwrap();
        legacy
            .execute_batch(
                r#"
                INSERT INTO anki_cards VALUES (1, 10, NULL, 1700000000001, 'Thai', 'Basic',
                    '{"Front": "สวัสดี"}', 'aa', 'synced', NULL, NULL, NULL);
                INSERT INTO anki_cards VALUES (2, 11, NULL, 1700000000002, 'Thai', 'Basic',
                    '{"Front": "ขอบคุณ"}', 'bb', 'synced', NULL, NULL, NULL);
                INSERT INTO vector_embeddings VALUES (3, 'content_fragment', 7, 'm', 384, 'cc', NULL);
                "#,
            )
            .unwrap();
        drop(legacy);
        store
            .conn()
            .execute_batch(
                r#"
                -- Card 1 as a push left it: new fields and hash, a re-created note.
                INSERT INTO anki_cards VALUES (1, 10, NULL, 1700000000999, 'Thai', 'Basic',
                    '{"Front": "สวัสดีครับ"}', 'a2', 'synced', '2026-06-01T10:00:00Z', NULL, NULL);
                -- Id 2 held by a card of another content.
                INSERT INTO anki_cards VALUES (2, 99, NULL, NULL, 'Thai', 'Basic', '{}', NULL,
                    'pending', NULL, NULL, NULL);
                -- Vector 3 re-embedded from another text.
                INSERT INTO vector_embeddings VALUES (3, 'content_fragment', 7, 'm', 384, 'c2', NULL);
                "#,
            )
            .unwrap();
        let plan = Plan {
            has_cards: true,
            has_vectors: true,
            ..Plan::default()
        };
        let copy = copy_into_store(&store, &legacy_path, &plan).unwrap();
        assert_eq!((copy.anki_cards, copy.vector_embeddings), (0, 0));
        assert_eq!(copy.conflicts, 1);
        let fields: String = store
            .conn()
            .query_row("SELECT fields FROM anki_cards WHERE id = 1", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(
            fields, r#"{"Front": "สวัสดีครับ"}"#,
            "the push's card was replaced"
        );
    }
}
