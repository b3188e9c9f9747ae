//! Measurements, not checks: run with
//! `cargo test -p local-agent --release --test bench -- --ignored --nocapture --test-threads 1`.
//! They print the figures quoted in the README and the issue notes.

mod support;

use std::time::Instant;

use local_agent::embed::{HashedNgrams, embed_store};
use local_agent::search::{Query, search};
use local_agent::store::{SourceKind, Store};
use support::{Agent, Stack, assert_mirror_equals_server, mirror_total, seed};

#[test]
#[ignore = "benchmark; see the file's header for how to run it"]
fn initial_pull_against_raw_sqlite_inserts() {
    let contents = std::env::var("BENCH_CONTENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let stack = Stack::start();
    seed(&stack, contents);
    let agent = Agent::new(&stack);
    let started = Instant::now();
    let report = agent.run_json(&["pull", "--page-size", "1000"]);
    let pull_secs = started.elapsed().as_secs_f64();
    assert_mirror_equals_server(&stack, &agent);
    let rows = mirror_total(&agent);
    assert_eq!(report["upserts"].as_i64(), Some(rows));

    // The same rows inserted straight into an empty store of the same
    // schema, one transaction, prepared statements: the ceiling of what
    // SQLite itself can do with them on this machine.
    let dir = tempfile::tempdir().unwrap();
    let target = Store::open(&dir.path().join("raw.db")).unwrap();
    let conn = target.conn();
    conn.execute("ATTACH DATABASE ?1 AS src", [agent.db().to_str().unwrap()])
        .unwrap();
    let mut data: Vec<(String, Vec<Vec<rusqlite::types::Value>>)> = Vec::new();
    for table in support::TABLES {
        let mut stmt = conn.prepare(&format!("SELECT * FROM src.{table}")).unwrap();
        let width = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                (0..width)
                    .map(|i| r.get::<_, rusqlite::types::Value>(i))
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .unwrap()
            .collect::<rusqlite::Result<Vec<_>>>()
            .unwrap();
        data.push((table.to_owned(), rows));
    }
    conn.execute("DETACH DATABASE src", []).unwrap();
    let started = Instant::now();
    conn.execute_batch("BEGIN").unwrap();
    for (table, rows) in &data {
        let width = rows.first().map_or(0, Vec::len);
        let marks = vec!["?"; width].join(", ");
        let mut insert = conn
            .prepare(&format!("INSERT INTO {table} VALUES ({marks})"))
            .unwrap();
        for row in rows {
            insert.execute(rusqlite::params_from_iter(row)).unwrap();
        }
    }
    conn.execute_batch("COMMIT").unwrap();
    let raw_secs = started.elapsed().as_secs_f64();

    let pull_rate = rows as f64 / pull_secs;
    let raw_rate = rows as f64 / raw_secs;
    println!(
        "initial pull: {rows} rows in {pull_secs:.2}s = {pull_rate:.0} rows/s ({} pages); \
         raw SQLite insert of the same rows: {raw_secs:.3}s = {raw_rate:.0} rows/s; ratio {:.1}%; \
         of the pull, waiting for the server {:.2}s, applying to SQLite {:.2}s",
        report["pages"],
        100.0 * pull_rate / raw_rate,
        report["fetch_seconds"].as_f64().unwrap(),
        report["apply_seconds"].as_f64().unwrap(),
    );
}

#[test]
#[ignore = "benchmark; see the file's header for how to run it"]
fn embed_throughput_and_search_latency_at_100k_vectors() {
    let n: usize = std::env::var("BENCH_VECTORS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("bench.db")).unwrap();
    // Thai-like texts: syllables combined so that texts share parts, as
    // real phrases do.
    let syllables = [
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
    let text = |i: usize| -> String {
        let mut x = i.wrapping_mul(2_654_435_761) ^ 0x9e37_79b9;
        let mut s = String::new();
        for _ in 0..(3 + i % 5) {
            s.push_str(syllables[x % syllables.len()]);
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407)
                >> 7;
        }
        s
    };
    {
        let tx = store.conn().unchecked_transaction().unwrap();
        let mut insert = tx
            .prepare(
                "INSERT INTO content_fragments (id, native_text, body_text, fragment_type)
                 VALUES (?1, ?2, '', 'sentence')",
            )
            .unwrap();
        for i in 1..=n {
            insert
                .execute(rusqlite::params![i as i64, text(i)])
                .unwrap();
        }
        drop(insert);
        tx.commit().unwrap();
    }
    let started = Instant::now();
    let report = embed_store(
        &mut store,
        &HashedNgrams,
        &[SourceKind::Fragment],
        |_, _| {},
    )
    .unwrap();
    let embed_secs = started.elapsed().as_secs_f64();
    assert_eq!(report.embedded, n);
    println!(
        "embed (hashed-ngrams-v1, stored with sqlite-vec): {n} texts in {embed_secs:.2}s = {:.0} texts/s",
        n as f64 / embed_secs
    );

    let queries: Vec<String> = (0..200).map(|i| text(i * 7919 + 3)).collect();
    let mut times = Vec::new();
    for q in &queries {
        let started = Instant::now();
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
        )
        .unwrap();
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(hits.len(), 10);
    }
    times.sort_by(f64::total_cmp);

    // Tombstones: each deleted row takes its vector out of the vec0 table.
    let started = Instant::now();
    let deleted = store
        .conn()
        .execute("DELETE FROM content_fragments WHERE id % 100 = 0", [])
        .unwrap();
    println!(
        "deleting {deleted} rows with their vectors among {n}: {:.1} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    println!(
        "search k=10 over {n} vectors (384 dims, vec0 brute-force KNN): p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms",
        times[times.len() / 2],
        times[times.len() * 95 / 100],
        times[times.len() - 1]
    );
}
