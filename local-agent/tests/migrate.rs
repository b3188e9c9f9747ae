//! `local-agent migrate` end to end: a legacy file written by
//! `legacy-fixture` (planted, counted defects; real SQLite with sqlite-vec),
//! the binary, the real components served by the Wasmtime host, a real
//! PostgreSQL.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use legacy_fixture::Spec;
use local_agent::search::{Query, search_vector};
use local_agent::store::{SourceKind, Store};
use rusqlite::types::Value as Sql;
use serde_json::{Value, json};
use support::migration::{
    MIGRATE_LIMIT, assert_assets_identical, assert_each_row_written_once, assert_migration_exact,
    assert_server_holds_the_legacy_rows, count, legacy_file, legacy_ids, migrate, migrate_args,
    read_rejects, rejected_ids, server_ids, server_total, service_agent,
};
use support::{Background, Stack, TABLES, rt};

#[test]
fn a_dirty_legacy_file_migrates_with_exact_rejects_then_reruns_as_a_no_op() {
    let stack = Stack::start();
    let agent = service_agent(&stack);
    let (legacy_path, sum) = legacy_file(agent.dir.path(), &Spec::small(42));
    let legacy = rusqlite::Connection::open(&legacy_path).unwrap();
    let report = agent.dir.path().join("rejects.jsonl");

    // --dry-run: the same rejects, nothing written anywhere.
    let dry = migrate(&agent, &legacy_path, &report, &["--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    for table in TABLES {
        assert_eq!(count(&stack, table), 0, "{table} after a dry run");
    }
    assert!(!agent.db().exists(), "a dry run created the store");
    let dry_rejects = read_rejects(&report);
    assert!(!dry_rejects.is_empty());

    let started = Instant::now();
    let summary = migrate(&agent, &legacy_path, &report, &[]);
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(summary["ok"], true, "{summary:#}");
    let rejects = read_rejects(&report);
    assert_eq!(rejects, dry_rejects, "the dry run announced other rejects");

    // Each planted defect is in the report with its reason, exactly; the
    // server holds the ids of the rest, their bytes, each row written once.
    assert_migration_exact(&stack, &legacy, &report, &sum);

    // Children of rejected parents are rejected with that reason.
    let bad_content = rejected_ids(&rejects, "learning_content");
    let mut stmt = legacy
        .prepare("SELECT id, learning_content_id FROM content_fragments")
        .unwrap();
    let fragments: Vec<(i64, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (id, parent) in &fragments {
        if bad_content.contains(parent) {
            assert!(rejects.iter().any(|r| r["table"] == "content_fragments"
                && r["id"] == *id
                && r["reason"] == "parent_rejected"));
        }
    }

    // Thai text byte for byte, JSON as JSON, scores exactly.
    let server_text: HashMap<i64, (String, String, Option<String>)> = rt()
        .block_on(stack.pg.query(
            "SELECT id, native_text, ipa, tags::text FROM learning_content",
            &[],
        ))
        .unwrap()
        .iter()
        .map(|r| {
            (
                i64::from(r.get::<_, i32>(0)),
                (r.get(1), r.get(2), r.get(3)),
            )
        })
        .collect();
    let mut stmt = legacy
        .prepare("SELECT id, native_text, ipa, tags FROM learning_content")
        .unwrap();
    let mut seen = 0;
    for row in stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        })
        .unwrap()
    {
        let (id, native, ipa, tags) = row.unwrap();
        let Some((s_native, s_ipa, s_tags)) = server_text.get(&id) else {
            continue;
        };
        assert_eq!(s_native.as_bytes(), native.as_bytes());
        assert_eq!(s_ipa.as_bytes(), ipa.as_bytes());
        let want = match tags.as_deref() {
            None | Some("") | Some("null") => None,
            Some(t) => Some(serde_json::from_str::<Value>(t).unwrap()),
        };
        let got = s_tags
            .as_deref()
            .map(|t| serde_json::from_str::<Value>(t).unwrap());
        assert_eq!(got, want, "tags of {id}");
        seen += 1;
    }
    assert!(seen > 0);
    let server_scores: HashMap<i64, Option<String>> = rt()
        .block_on(
            stack
                .pg
                .query("SELECT id, rank_score::text FROM rankings", &[]),
        )
        .unwrap()
        .iter()
        .map(|r| (i64::from(r.get::<_, i32>(0)), r.get(1)))
        .collect();
    let mut stmt = legacy
        .prepare("SELECT id, rank_score FROM rankings")
        .unwrap();
    for row in stmt
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Sql>(1)?)))
        .unwrap()
    {
        let (id, score) = row.unwrap();
        let Some(got) = server_scores.get(&id) else {
            continue;
        };
        let want = match score {
            Sql::Real(f) => format!("{f:.2}"),
            Sql::Integer(i) => format!("{i}.00"),
            other => panic!("ranking {id} arrived from {other:?}"),
        };
        assert_eq!(got.as_deref(), Some(want.as_str()), "ranking {id}");
    }

    // The Anki cards and vectors are in the store, unchanged and searchable.
    let store = Store::open(&agent.db()).unwrap();
    let n = |sql: &str| -> i64 { store.conn().query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(
        n("SELECT count(*) FROM anki_cards") as usize,
        sum.anki_cards
    );
    assert_eq!(
        n("SELECT count(*) FROM vector_embeddings") as usize,
        sum.vectors
    );
    assert_eq!(
        n("SELECT count(*) FROM vec_embeddings") as usize,
        sum.vectors
    );
    let fragment = *server_ids(&stack, "content_fragments")
        .iter()
        .next()
        .unwrap();
    let blob: Vec<u8> = legacy
        .query_row(
            "SELECT v.embedding FROM vec_embeddings v JOIN vector_embeddings e ON e.id = v.rowid
             WHERE e.source_type = 'content_fragment' AND e.source_id = ?1",
            [fragment],
            |r| r.get(0),
        )
        .unwrap();
    let vector: Vec<f32> = blob
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let hits = search_vector(
        &store,
        "all-MiniLM-L6-v2",
        &vector,
        &Query {
            text: "",
            k: 3,
            kind: SourceKind::Fragment,
            content_type: None,
            language: None,
        },
    )
    .unwrap();
    assert_eq!(hits[0].id, fragment, "{hits:?}");
    drop(store);

    // A second run changes nothing and says so.
    let changes = count(&stack, "change_log");
    let again = migrate(&agent, &legacy_path, &report, &[]);
    assert_eq!(again["ok"], true);
    assert_eq!(again["nothing_to_do"], true, "{again:#}");
    assert_eq!(
        count(&stack, "change_log"),
        changes,
        "a re-run wrote to the database"
    );
    assert_eq!(read_rejects(&report), rejects);

    // Sequences were moved: a new row gets the next id.
    let max = legacy_ids(&legacy, "learning_content")
        .into_iter()
        .max()
        .unwrap();
    let id = stack.create(
        "/api/content",
        json!({"title": "ใหม่", "content_type": "word", "native_text": "ใหม่",
               "translation": "new", "ipa": "màj"}),
    );
    assert!(id > max, "new id {id} not above {max}");
    let max_server: i64 =
        stack.query_i64("SELECT max(id)::bigint FROM learning_content WHERE id <> 0");
    assert_eq!(id, max_server);

    let rows: u64 = summary["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["sent"].as_u64().unwrap())
        .sum();
    println!(
        "small fixture: {rows} rows/assets in {seconds:.2} s (binary wall time): {:.0} rows/s, {:.2} MB/s; tool says {:.0} rows/s, {:.2} MB/s",
        rows as f64 / seconds,
        sum.bytes as f64 / 1e6 / seconds,
        summary["rows_per_second"].as_f64().unwrap(),
        summary["mb_per_second"].as_f64().unwrap()
    );
}

#[test]
fn a_migration_killed_mid_assets_finishes_exactly_on_the_next_run() {
    let stack = Stack::start();
    let agent = service_agent(&stack);
    let spec = Spec {
        contents: 20,
        fragments_per_content: 2,
        assets: 120,
        asset_bytes: 256 * 1024,
        rankings: 100,
        defect_every: 0,
        vectors: true,
        seed: 9,
    };
    let (legacy_path, sum) = legacy_file(agent.dir.path(), &spec);
    let legacy = rusqlite::Connection::open(&legacy_path).unwrap();
    let report = agent.dir.path().join("rejects.jsonl");

    let mut child = agent.start(&migrate_args(&legacy_path, &report, &["--quiet"]));
    wait_for_assets(&stack, &mut child, 15);
    child.kill();
    let partial = count(&stack, "fragment_assets");
    assert!(
        partial < sum.assets as i64,
        "all assets had arrived already"
    );
    assert_eq!(count(&stack, "rankings"), 0);

    let summary = migrate(&agent, &legacy_path, &report, &[]);
    assert_eq!(summary["ok"], true, "{summary:#}");
    let resumed: BTreeMap<String, u64> = summary["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["table"].as_str().unwrap().to_owned(),
                t["resumed"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(resumed["learning_content"], sum.contents as u64);
    assert!(resumed["fragment_assets"] >= 15, "{resumed:?}");
    assert_migration_exact(&stack, &legacy, &report, &sum);
    assert!(read_rejects(&report).is_empty());
}

/// The longest a migration may take to stop after its database went away
/// when it is told to try twice: one wait (the API's Retry-After, 5 s) and
/// the requests, each answered promptly with 503.
const GIVE_UP_BUDGET: Duration = Duration::from_secs(30);
/// The longest a migration riding out an outage of a few seconds may take
/// after the database is back: its remaining work and at most one more
/// backoff wait (15 s at the most).
const RIDE_OUT_BUDGET: Duration = Duration::from_secs(90);

/// Waits until at least `n` assets are on the server, the migration still
/// running. Returns how many there are.
fn wait_for_assets(stack: &Stack, migration: &mut Background, n: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            migration.running(),
            "the migration ended too early: {}",
            migration.stderr()
        );
        let arrived = count(stack, "fragment_assets");
        if arrived >= n {
            return arrived;
        }
        assert!(Instant::now() < deadline, "assets stopped arriving");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_database_outage_mid_migration_stops_it_cleanly_or_is_ridden_out_and_ends_exact() {
    let mut stack = Stack::start_isolated();
    let agent = service_agent(&stack);
    let spec = Spec {
        contents: 20,
        fragments_per_content: 2,
        // Enough that the migration is still sending assets when the
        // database has stopped.
        assets: 150,
        asset_bytes: 128 * 1024,
        rankings: 80,
        defect_every: 10,
        vectors: true,
        seed: 23,
    };
    let (legacy_path, sum) = legacy_file(agent.dir.path(), &spec);
    let legacy = rusqlite::Connection::open(&legacy_path).unwrap();
    let report = agent.dir.path().join("rejects.jsonl");
    let args = |extra: &'static [&'static str]| {
        let mut args = vec![
            "--json",
            "migrate",
            legacy_path.to_str().unwrap(),
            "--reject-report",
            report.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        args
    };

    // Told to try twice, the migration stops: non-zero exit, a message that
    // says why and what to do, within the budget.
    let mut first = agent.start(&args(&["--tries", "2"]));
    let before = wait_for_assets(&stack, &mut first, 10);
    stack.stop_database();
    let out = first.finish(GIVE_UP_BUDGET);
    stack.restart_database();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the migration stopped before it finished")
            && stderr.contains("run the same command again")
            && stderr.contains("kept failing (503")
            && !stderr.contains("next pull"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    println!("the run told to try twice: {}", stderr.trim());
    // Nothing lost or doubled so far: what arrived is byte for byte the
    // legacy file's, each row written once, no ranking ahead of its asset,
    // and the agent records as arrived only what is on the server.
    let partial = count(&stack, "fragment_assets");
    assert!(
        partial >= before && partial < sum.assets as i64,
        "{partial}"
    );
    assert_eq!(count(&stack, "rankings"), 0);
    assert_assets_identical(&stack, &legacy);
    assert_each_row_written_once(&stack);
    let recorded: BTreeSet<i64> = {
        let store = agent.mirror();
        let mut stmt = store
            .prepare("SELECT id FROM migration_progress WHERE table_name = 'fragment_assets'")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert!(
        recorded.is_subset(&server_ids(&stack, "fragment_assets")),
        "assets recorded as arrived that are not on the server"
    );

    // With its default patience the re-run rides out an outage of a few
    // seconds (503 + Retry-After) and ends exact.
    let mut second = agent.start(&args(&[]));
    wait_for_assets(&stack, &mut second, partial + 10);
    stack.stop_database();
    let down = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        second.running(),
        "the migration did not wait for the database"
    );
    stack.restart_database();
    let out = second.finish(RIDE_OUT_BUDGET);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["ok"], true, "{summary:#}");
    // The wait was said, not silent (on stderr: stdout is the JSON).
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("503") && said.contains("; attempt "),
        "{said}"
    );
    println!(
        "outage: the first run stopped with {partial} of {} assets; the second, its database down for 3 s, ended {:.1} s after it stopped",
        sum.assets,
        down.elapsed().as_secs_f64()
    );
    let resumed = summary["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "fragment_assets")
        .unwrap()["resumed"]
        .as_u64()
        .unwrap();
    assert!(resumed >= partial as u64, "{summary:#}");
    assert_migration_exact(&stack, &legacy, &report, &sum);
}

#[test]
fn rows_recorded_as_arrived_but_gone_from_the_server_are_sent_again() {
    // The database restored from a backup taken before the migration ended
    // (or the same store pointed at another server): the store's progress
    // says rows arrived that the server does not hold. The verification
    // finds them missing; the run the message asks for must send them.
    let stack = Stack::start();
    let agent = service_agent(&stack);
    let (legacy_path, sum) = legacy_file(agent.dir.path(), &Spec::small(31));
    let legacy = rusqlite::Connection::open(&legacy_path).unwrap();
    let report = agent.dir.path().join("rejects.jsonl");
    assert_eq!(migrate(&agent, &legacy_path, &report, &[])["ok"], true);
    let lost_fragments = count(&stack, "content_fragments") / 2;
    stack.sql(&format!(
        "DELETE FROM rankings;
         DELETE FROM content_fragments WHERE id IN
             (SELECT id FROM content_fragments ORDER BY id DESC LIMIT {lost_fragments});
         UPDATE learning_content SET title = 'edited since' WHERE id = (SELECT min(id) FROM learning_content);"
    ));

    let args = migrate_args(&legacy_path, &report, &["--json"]);
    let out = agent.start(&args).finish(MIGRATE_LIMIT);
    assert_eq!(out.status.code(), Some(1), "the losses went unnoticed");
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    let missing: u64 = summary["verification"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["missing"].as_u64().unwrap() + t["differing"].as_u64().unwrap())
        .sum();
    assert!(missing > 0, "{summary:#}");

    let again = migrate(&agent, &legacy_path, &report, &[]);
    assert_eq!(again["ok"], true, "{again:#}");
    assert_server_holds_the_legacy_rows(&stack, &legacy, &report, &sum);
    let title: String = rt()
        .block_on(stack.pg.query_one(
            "SELECT title FROM learning_content ORDER BY id LIMIT 1",
            &[],
        ))
        .unwrap()
        .get(0);
    assert_ne!(title, "edited since");
    // And then there is nothing left to do.
    let last = migrate(&agent, &legacy_path, &report, &[]);
    assert_eq!(last["nothing_to_do"], true, "{last:#}");
}

/// The credentials a Supabase project hands out: the publishable key reads
/// (a pull) but cannot migrate, and says what migrating takes; the secret
/// key migrates.
#[test]
fn the_secret_key_migrates_and_the_publishable_key_is_told_what_it_needs() {
    let stack = Stack::start();
    let keys = stack.api_keys();
    let mut agent = support::Agent::new(&stack);
    let (legacy_path, _) = legacy_file(agent.dir.path(), &Spec::small(7));
    let report = agent.dir.path().join("rejects.jsonl");

    agent.token = keys.publishable.clone();
    let pulled = agent.run_json(&["pull"]);
    assert_eq!(pulled["snapshot"], true, "{pulled}");
    let out = agent.run(&migrate_args(&legacy_path, &report, &[]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("takes the service role"), "{stderr}");
    assert!(stderr.contains("sb_secret_"), "{stderr}");
    assert!(
        !stderr.contains(&keys.publishable),
        "the key is never printed: {stderr}"
    );
    assert_eq!(server_total(&stack), 0);

    agent.token = keys.secret.clone();
    let summary = migrate(&agent, &legacy_path, &report, &[]);
    assert_eq!(summary["ok"], true, "{summary:#}");
    assert!(server_total(&stack) > 0);
}
