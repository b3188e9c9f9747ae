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
//! An API that stops answering (its database down: 503 + Retry-After) is
//! waited for by the client's backoff; when that runs out the run stops
//! with an error that says to run the same command again.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rusqlite::{Connection, params};
use serde::Serialize;
use serde_json::{Value, json};

use super::convert::Repairs;
use super::read::{self, ASSETS, CONTENT, FRAGMENTS, Plan, RANKINGS, Row};
use super::report::Reason;
use super::verify::{self, TableCheck};
use crate::api::{ApiClient, ApiError};
use crate::pull::{self, PullOptions};
use crate::store::Store;

/// Rows per import request (the API takes at most 500).
pub const BATCH: usize = 500;

#[derive(Debug, Clone)]
pub struct Options {
    pub legacy: PathBuf,
    pub dry_run: bool,
    pub reject_report: PathBuf,
    pub repairs: Repairs,
    /// Progress bars on stderr.
    pub progress: bool,
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
    /// Legacy rows of anki_cards / vector_embeddings the store does not
    /// hold identically after the copy (an id taken by another row).
    pub conflicts: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub legacy: PathBuf,
    pub dry_run: bool,
    pub tables: Vec<TableRun>,
    pub rejected_rows: usize,
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
    pub ok: bool,
}

fn source_key(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_owned())
        .display()
        .to_string()
}

fn arrived(conn: &Connection, source: &str, table: &str, id: i64, checksum: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM migration_progress
             WHERE source = ?1 AND table_name = ?2 AND id = ?3 AND checksum = ?4)",
        )?
        .query_row(params![source, table, id, checksum], |r| r.get(0))?)
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

fn send_rows(
    client: &ApiClient,
    progress: Option<&Connection>,
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
        if let Some(conn) = progress
            && arrived(conn, source, table, row.id, &row.checksum)?
        {
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
        if let Some(conn) = progress {
            let arrived: Vec<(i64, String)> =
                done.iter().map(|r| (r.id, r.checksum.clone())).collect();
            record(conn, source, table, &arrived)?;
        }
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
/// alone, and any legacy row not then held identically is a conflict.
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
        let missing = |table: &str| -> Result<usize> {
            let n: i64 = conn.query_row(
                &format!("SELECT count(*) FROM (SELECT * FROM legacy.{table} EXCEPT SELECT * FROM main.{table})"),
                [],
                |r| r.get(0),
            )?;
            Ok(n as usize)
        };
        if plan.has_cards {
            copy.conflicts += missing("anki_cards")?;
        }
        if plan.has_vectors {
            copy.conflicts += missing("vector_embeddings")?;
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
    migrate_into(opts, store, client, &legacy, plan, summary, started).context(
        "the migration stopped before it finished; run the same command again to resume \
         (what arrived is recorded and is not sent twice)",
    )
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

    let content = plan.content.clone();
    let mut runs = vec![send_rows(
        client,
        Some(store.conn()),
        &source,
        CONTENT,
        &content,
        &mut plan.rejects,
        show,
    )?];
    let fragments = plan.fragments.clone();
    runs.push(send_rows(
        client,
        Some(store.conn()),
        &source,
        FRAGMENTS,
        &fragments,
        &mut plan.rejects,
        show,
    )?);
    runs.push(send_assets(
        client,
        legacy,
        store.conn(),
        &source,
        &mut plan,
        show,
    )?);
    let rankings = plan.rankings.clone();
    runs.push(send_rows(
        client,
        Some(store.conn()),
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
    summary.verification = verify::verify(client, &plan)?;
    // A row recorded as arrived that the server does not hold as sent (a
    // database restored from an older backup, another server behind the
    // same store, an edit since) would be skipped by every later run, and
    // the failure would remain however often the user runs it again.
    forget(store.conn(), &source, &summary.verification)?;

    // The mirror, then the legacy cards and vectors, so that search and the
    // Anki push work right away.
    pull::pull(store, client, PullOptions::default(), |_| {}).context("pulling into the store")?;
    summary.store = Some(copy_into_store(store, &opts.legacy, &plan)?);

    finish_summary(&mut summary, &plan, started);
    summary.ok = summary.verification.iter().all(TableCheck::ok)
        && summary.store.as_ref().is_none_or(|s| s.conflicts == 0);
    Ok(summary)
}

fn finish_summary(summary: &mut Summary, plan: &Plan, started: Instant) {
    summary.rejected_rows = plan.rejects.total_rows();
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
    out.push_str(&format!(
        "\n{} rows rejected ({}), report: {}\n",
        s.rejected_rows,
        if s.rejects_by_reason.is_empty() {
            "none".to_owned()
        } else {
            s.rejects_by_reason
                .iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        },
        s.reject_report.display()
    ));
    if s.dry_run {
        out.push_str("dry run: nothing was sent and the store was not touched\n");
        return out;
    }
    let resumed: usize = s.tables.iter().map(|t| t.resumed).sum();
    if s.nothing_to_do {
        out.push_str(
            "nothing to do: every row and asset had arrived already; nothing was changed\n",
        );
    } else if resumed > 0 {
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
