//! Rows 5–7: the local agent, run as the user runs it, next to the tool
//! a user would otherwise reach for.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use local_agent::embed::{HashedNgrams, embed_store};
use local_agent::search::{Query, search};
use local_agent::store::{SourceKind, Store, vector_blob};
use serde_json::Value;

use crate::Sizes;
use crate::procs;
use crate::report::{Row, Target};
use crate::stack::{Serving, Stack};
use crate::stats::{Figure, Latencies, median};

const MIRRORED: [&str; 4] = [
    "learning_content",
    "content_fragments",
    "fragment_assets",
    "rankings",
];

/// The `local-agent` binary with a store and config of its own, and none
/// of the caller's THAI_AGENT_* settings.
fn agent(bin: &Path, dir: &Path, api: &str, token: &str) -> Command {
    let mut command = Command::new(bin);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("THAI_AGENT_") {
            command.env_remove(key);
        }
    }
    command
        .arg("--json")
        .arg("--db")
        .arg(dir.join("agent.db"))
        .arg("--config")
        .arg(dir.join("config.toml"))
        .args(["--api-url", api, "--token", token]);
    command
}

/// Row 5: the legacy file into a fresh database with `local-agent migrate`
/// (which verifies every row afterwards), and with pgloader.
pub async fn migration(
    stack: &Stack,
    on: &Serving,
    agent_bin: &Path,
    work: &Path,
    sizes: &Sizes,
) -> Result<Row> {
    let legacy = work.join("legacy.db");
    let spec = sizes.legacy.clone();
    let generated = {
        let legacy = legacy.clone();
        tokio::task::spawn_blocking(move || legacy_fixture::generate_clean(&legacy, &spec))
            .await??
    };
    let file_mb = std::fs::metadata(&legacy)?.len() as f64 / 1e6;
    let token = stack.token("service_role")?;
    let mut ours = Figure::named("local-agent migrate (import API, then verification)");
    let mut base = Figure::named("pgloader, the same file into an empty database");
    let mut rates = (Vec::new(), Vec::new());
    // No warm-up: every run starts from an empty database, as a real
    // migration does.
    for rep in 0..sizes.migration_reps {
        let url = stack.database(&format!("migrate_{}_{rep}", on.tag)).await?;
        let server = stack.serve(&on.host, &url).await?;
        let dir = tempfile::tempdir_in(work)?;
        let started = Instant::now();
        let out = procs::run(
            agent(
                agent_bin,
                dir.path(),
                &format!("http://{}", server.addr),
                &token,
            )
            .arg("migrate")
            .arg(&legacy)
            .arg("--reject-report")
            .arg(dir.path().join("rejects.jsonl")),
            Duration::from_secs(900),
        )?;
        let secs = started.elapsed().as_secs_f64();
        let summary: Value = serde_json::from_slice(&out.stdout).context("migrate --json")?;
        anyhow::ensure!(
            summary["ok"] == Value::Bool(true),
            "migration not verified: {summary}"
        );
        drop(server);

        let pg_db = format!("pgloader_{}_{rep}", on.tag);
        let pg_url = stack
            .empty_database(&pg_db)
            .await?
            .replace("?sslmode=disable", "");
        // pgloader's default prefetch (100,000 rows) of 150 KB blobs
        // exhausts its heap; batches of a few hundred rows do not.
        let load = dir.path().join("legacy.load");
        std::fs::write(
            &load,
            format!(
                "LOAD DATABASE\n  FROM sqlite://{}\n  INTO {pg_url}\n  \
                 WITH include drop, create tables, create indexes, reset sequences,\n       \
                 prefetch rows = 200, batch rows = 200;\n",
                legacy.display()
            ),
        )?;
        let started = Instant::now();
        procs::run(
            Command::new("pgloader")
                .arg("--quiet")
                .arg(&load)
                .current_dir(dir.path()),
            Duration::from_secs(900),
        )?;
        let pg_secs = started.elapsed().as_secs_f64();
        // pgloader reports rows it could not load and still exits 0: a
        // baseline that dropped rows would not be the same work.
        let client = stack.connect(&pg_db).await?;
        for (table, expected) in [
            ("learning_content", generated.contents),
            ("content_fragments", generated.fragments),
            ("fragment_assets", generated.assets),
            ("rankings", generated.rankings),
        ] {
            let n: i64 = client
                .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                .await?
                .get(0);
            anyhow::ensure!(
                n as usize == expected,
                "pgloader loaded {n} of {expected} rows of {table}"
            );
        }
        ours.runs.push(secs);
        base.runs.push(pg_secs);
        rates.0.push(file_mb / secs);
        rates.1.push(file_mb / pg_secs);
    }
    // The next host's run generates it again, from the same seed.
    std::fs::remove_file(&legacy)?;
    let spec = &sizes.legacy;
    Ok(Row::new(
        "5",
        format!(
            "Migration of a legacy file: {} contents, {} fragments, {} assets of {} KB, {} rankings ({file_mb:.0} MB)",
            generated.contents, generated.fragments, generated.assets, spec.asset_bytes / 1000, generated.rankings
        ),
        "s",
        false,
        ours,
        base,
        Some(Target::SpeedAtLeast(1.0)),
    )
    .note(format!(
        "migration throughput {:.1} MB/s (local-agent) vs {:.1} MB/s (pgloader), of the legacy file's size",
        median(&rates.0),
        median(&rates.1)
    )))
}

/// Row 6: a first pull of every row into an empty store, next to the same
/// rows inserted straight into an empty store of the same schema (one
/// transaction, prepared statements: what SQLite itself can do with them).
pub fn pull(
    stack: &Stack,
    on: &Serving,
    agent_bin: &Path,
    work: &Path,
    sizes: &Sizes,
) -> Result<Row> {
    let api = on.app.url();
    let token = stack.token("anon")?;
    let mut ours = Figure::named("local-agent pull (HTTP feed, then SQLite)");
    let mut base = Figure::named("raw SQLite INSERTs of the same rows, one transaction");
    let mut fetch_share = Vec::new();
    let mut total = 0;
    for rep in 0..=sizes.reps {
        let dir = tempfile::tempdir_in(work)?;
        let started = Instant::now();
        let out = procs::run(
            agent(agent_bin, dir.path(), &api, &token).arg("pull"),
            Duration::from_secs(600),
        )?;
        let secs = started.elapsed().as_secs_f64();
        let report: Value = serde_json::from_slice(&out.stdout).context("pull --json")?;
        let rows = report["upserts"].as_u64().context("upserts")? as usize;
        let raw_secs = raw_insert(&dir.path().join("agent.db"), &dir.path().join("raw.db"))?;
        if rep > 0 {
            ours.runs.push(rows as f64 / secs);
            base.runs.push(rows as f64 / raw_secs);
            fetch_share.push(report["fetch_seconds"].as_f64().unwrap_or(f64::NAN) / secs);
        }
        total = rows;
    }
    Ok(Row::new(
        "6",
        format!("Initial pull of {total} rows into the agent's store"),
        "rows/s",
        true,
        ours,
        base,
        Some(Target::SpeedAtLeast(0.3)),
    )
    .note(format!(
        "of the pull's wall time, {:.0} % is waiting for the server's pages",
        100.0 * median(&fetch_share)
    )))
}

/// Copies the mirrored rows of the store at `from` into a new store at
/// `to`, timing only the INSERTs.
fn raw_insert(from: &Path, to: &Path) -> Result<f64> {
    let target = Store::open(to)?;
    let conn = target.conn();
    conn.execute(
        "ATTACH DATABASE ?1 AS src",
        [from.to_str().context("path")?],
    )?;
    let mut data: Vec<(&str, Vec<Vec<rusqlite::types::Value>>)> = Vec::new();
    for table in MIRRORED {
        let mut stmt = conn.prepare(&format!("SELECT * FROM src.{table}"))?;
        let width = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                (0..width)
                    .map(|i| r.get::<_, rusqlite::types::Value>(i))
                    .collect::<rusqlite::Result<Vec<_>>>()
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        data.push((table, rows));
    }
    conn.execute("DETACH DATABASE src", [])?;
    let started = Instant::now();
    conn.execute_batch("BEGIN")?;
    for (table, rows) in &data {
        let width = rows.first().map_or(0, Vec::len);
        let marks = vec!["?"; width].join(", ");
        let mut insert = conn.prepare(&format!("INSERT INTO {table} VALUES ({marks})"))?;
        for row in rows {
            insert.execute(rusqlite::params_from_iter(row))?;
        }
    }
    conn.execute_batch("COMMIT")?;
    Ok(started.elapsed().as_secs_f64())
}

/// Thai-like texts: syllables combined so that texts share parts, as real
/// phrases do.
pub fn text(i: usize) -> String {
    const SYLLABLES: [&str; 26] = [
        "สวัส",
        "ดี",
        "ขอบ",
        "คุณ",
        "มาก",
        "ครับ",
        "ค่ะ",
        "ห้อง",
        "น้ำ",
        "อยู่",
        "ที่",
        "ไหน",
        "วัน",
        "นี้",
        "อา",
        "กาศ",
        "ร้อน",
        "ฉัน",
        "ชอบ",
        "กิน",
        "ข้าว",
        "ผัด",
        "ไป",
        "ตลาด",
        "รถ",
        "ไฟ",
    ];
    let mut x = i.wrapping_mul(2_654_435_761) ^ 0x9e37_79b9;
    let mut s = String::new();
    for _ in 0..(3 + i % 5) {
        s.push_str(SYLLABLES[x % SYLLABLES.len()]);
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407)
            >> 7;
    }
    s
}

/// Row 7: `search` (embed the text, KNN, join the mirror) next to the KNN
/// query alone, issued directly on the same vec0 table with the same vector.
pub fn search_knn(work: &Path, sizes: &Sizes) -> Result<Row> {
    let n = sizes.vectors;
    let mut store = Store::open(&work.join("search.db"))?;
    {
        let tx = store.conn().unchecked_transaction()?;
        let mut insert = tx.prepare(
            "INSERT INTO content_fragments (id, native_text, body_text, fragment_type)
             VALUES (?1, ?2, '', 'sentence')",
        )?;
        for i in 1..=n {
            insert.execute(rusqlite::params![i as i64, text(i)])?;
        }
        drop(insert);
        tx.commit()?;
    }
    let started = Instant::now();
    let report = embed_store(
        &mut store,
        &HashedNgrams,
        &[SourceKind::Fragment],
        |_, _| {},
    )?;
    let embed_secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(report.embedded == n, "embedded {} of {n}", report.embedded);

    let model = local_agent::embed::Embedder::model(&HashedNgrams).to_owned();
    let queries: Vec<String> = (0..sizes.searches).map(|i| text(i * 7919 + 3)).collect();
    let vectors: Vec<Vec<u8>> = queries
        .iter()
        .map(|q| vector_blob(&HashedNgrams.vector(q)))
        .collect();
    let direct_sql = "SELECT rowid, distance FROM vec_embeddings
                      WHERE embedding MATCH ?1 AND k = 10 AND model = ?2 AND source_type = ?3";
    let mut ours = Figure::named("local-agent search (embed + KNN + mirror rows)");
    let mut base = Figure::named("the same vec0 KNN query, issued directly");
    let (mut ol, mut bl) = (Latencies::default(), Latencies::default());
    for rep in 0..=sizes.reps {
        let (mut mine, mut raw) = (Vec::new(), Vec::new());
        // Interleaved, so that both see the same state of the caches.
        for (q, v) in queries.iter().zip(&vectors) {
            let t = Instant::now();
            let hits = search(
                &store,
                &HashedNgrams,
                &Query {
                    text: q,
                    k: 10,
                    kind: SourceKind::Fragment,
                    content_type: None,
                    language: None,
                },
            )?;
            mine.push(t.elapsed().as_secs_f64() * 1e3);
            anyhow::ensure!(hits.len() == 10, "search found {}", hits.len());

            let t = Instant::now();
            let mut stmt = store.conn().prepare_cached(direct_sql)?;
            let found = stmt
                .query_map(
                    rusqlite::params![v, model, SourceKind::Fragment.source_type()],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, f64>(1)?)),
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            raw.push(t.elapsed().as_secs_f64() * 1e3);
            anyhow::ensure!(found.len() == 10, "the direct query found {}", found.len());
        }
        if rep > 0 {
            ours.runs.push(median(&mine));
            ol.add(&mine);
            base.runs.push(median(&raw));
            bl.add(&raw);
        }
    }
    ol.fill(&mut ours);
    bl.fill(&mut base);

    // Tombstones: each deleted row takes its vector out of the vec0 table.
    let started = Instant::now();
    let deleted = store
        .conn()
        .execute("DELETE FROM content_fragments WHERE id % 100 = 0", [])?;
    let delete_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(Row::new(
        "7",
        format!("Search: top-10 over {n} vectors of 384 dimensions, {} queries", sizes.searches),
        "ms",
        false,
        ours,
        base,
        Some(Target::SpeedAtLeast(1.0 / 1.2)),
    )
    .note(format!(
        "the built-in embedder computed and stored {n} vectors in {embed_secs:.1} s ({:.0} texts/s)",
        n as f64 / embed_secs
    ))
    .note(format!(
        "deleting {deleted} mirrored rows with their vectors among {n}: {delete_ms:.0} ms"
    )))
}
