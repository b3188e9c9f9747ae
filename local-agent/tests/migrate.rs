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
    // Rows count once, reject lines once per refused value.
    let rejected_rows: BTreeSet<(String, i64)> = rejects
        .iter()
        .map(|r| {
            (
                r["table"].as_str().unwrap().to_owned(),
                r["id"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(summary["rejected_rows"], rejected_rows.len(), "{summary:#}");
    assert_eq!(summary["reject_lines"], rejects.len(), "{summary:#}");
    assert!(
        rejects.len() > rejected_rows.len(),
        "no row with several reasons"
    );

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
    // Binary-quantised too, for the coarse search of large stores.
    assert_eq!(n("SELECT count(*) FROM vec_bits_384") as usize, sum.vectors);
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
    // Everything arrived and was recorded, but the run stopped before it
    // could record the migration as finished: it did not end.
    let out = agent
        .command(&migrate_args(&legacy_path, &report, &["--json"]))
        .env(local_agent::store::FAILPOINT_ENV, "migrate-finish:1")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the failpoint was not reached");
    assert_server_holds_the_legacy_rows(&stack, &legacy, &report, &sum);
    let finished: i64 = agent
        .mirror()
        .query_row("SELECT count(*) FROM migration_finished", [], |r| r.get(0))
        .unwrap();
    assert_eq!(finished, 0);
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
    // A user's token (403 from the import endpoints) and the publishable
    // key alike: the service credential goes to this run, never into the
    // config file with `init --token`.
    for token in [keys.publishable.clone(), stack.token("authenticated")] {
        agent.token = token;
        let out = agent.run(&migrate_args(&legacy_path, &report, &[]));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "THAI_AGENT_TOKEN=sb_secret_… local-agent migrate {}",
                legacy_path.display()
            )),
            "{stderr}"
        );
        assert!(!stderr.contains("init --token"), "{stderr}");
        assert!(!stderr.contains("run the same command again"), "{stderr}");
    }
    assert_eq!(server_total(&stack), 0);

    agent.token = keys.secret.clone();
    let summary = migrate(&agent, &legacy_path, &report, &[]);
    assert_eq!(summary["ok"], true, "{summary:#}");
    assert!(server_total(&stack) > 0);
}

/// Ids per (table, change) in a summary's `changed_since`.
fn changed_since(summary: &Value) -> BTreeMap<(String, String), BTreeSet<i64>> {
    let mut out: BTreeMap<(String, String), BTreeSet<i64>> = BTreeMap::new();
    for c in summary["changed_since"].as_array().unwrap() {
        out.entry((
            c["table"].as_str().unwrap().to_owned(),
            c["change"].as_str().unwrap().to_owned(),
        ))
        .or_default()
        .insert(c["id"].as_i64().unwrap());
    }
    out
}

fn sent(summary: &Value, table: &str) -> u64 {
    summary["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == table)
        .unwrap()["sent"]
        .as_u64()
        .unwrap()
}

/// The change log's entries after `after`: (table, row id, op).
fn changes_after(stack: &Stack, after: i64) -> Vec<(String, i64, String)> {
    rt().block_on(stack.pg.query(
        "SELECT table_name, row_id::bigint, op FROM change_log WHERE id > $1 ORDER BY id",
        &[&after],
    ))
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

fn title(stack: &Stack, id: i64) -> String {
    rt().block_on(stack.pg.query_one(
        "SELECT title FROM learning_content WHERE id = $1",
        &[&(id as i32)],
    ))
    .unwrap()
    .get(0)
}

/// The issue's scenario: a finished migration, then normal use (a content
/// deleted and another edited through the API, a card updated by a push,
/// vectors pruned by `embed`), the legacy file edited and given a new row.
/// Re-running migrate checks and reports: nothing deleted or edited since
/// comes back, no card or vector is copied back, only the new row is sent,
/// and it exits 0. `--resend` then restores everything.
#[test]
fn a_rerun_after_normal_use_reports_what_changed_since_and_undoes_nothing_until_resend() {
    let stack = Stack::start();
    let agent = service_agent(&stack);
    let (legacy_path, sum) = legacy_file(agent.dir.path(), &Spec::small(17));
    let legacy = rusqlite::Connection::open(&legacy_path).unwrap();
    let report = agent.dir.path().join("rejects.jsonl");
    let first = migrate(&agent, &legacy_path, &report, &[]);
    assert_eq!(first["ok"], true, "{first:#}");
    assert!(first["migrated_before"].is_null());

    // A content with fragments, assets and rankings, deleted through the API
    // (the server cascades to its children).
    let deleted = stack.query_i64(
        "SELECT min(c.id)::bigint FROM learning_content c
         JOIN content_fragments f ON f.learning_content_id = c.id
         JOIN fragment_assets a ON a.fragment_id = f.id
         JOIN rankings r ON r.asset_id = a.id",
    );
    let ids_of = |sql: &str| -> BTreeSet<i64> {
        rt().block_on(stack.pg.query(sql, &[&(deleted as i32)]))
            .unwrap()
            .iter()
            .map(|r| r.get::<_, i64>(0))
            .collect()
    };
    let gone_fragments =
        ids_of("SELECT id::bigint FROM content_fragments WHERE learning_content_id = $1");
    let gone_assets = ids_of(
        "SELECT a.id::bigint FROM fragment_assets a JOIN content_fragments f ON f.id = a.fragment_id
         WHERE f.learning_content_id = $1",
    );
    let gone_rankings = ids_of(
        "SELECT r.id::bigint FROM rankings r JOIN content_fragments f ON f.id = r.fragment_id
         WHERE f.learning_content_id = $1",
    );
    assert!(!gone_fragments.is_empty() && !gone_assets.is_empty() && !gone_rankings.is_empty());
    let (status, body) = stack.call("DELETE", &format!("/api/content/{deleted}"), None);
    assert!(status == 200 || status == 204, "{status} {body}");
    // Another content edited on the server, a third one in the legacy file.
    let contents: Vec<i64> = server_ids(&stack, "learning_content")
        .into_iter()
        .filter(|id| *id != deleted)
        .collect();
    let (edited_on_server, edited_in_legacy) = (contents[0], contents[1]);
    let (status, body) = stack.call(
        "PATCH",
        &format!("/api/content/{edited_on_server}"),
        Some(json!({"title": "แก้ไขบนเซิร์ฟเวอร์"})),
    );
    assert_eq!(status, 200, "{body}");
    let legacy_title_before = title(&stack, edited_in_legacy);
    // As the old application edits: SQLAlchemy's onupdate stamps updated_at.
    legacy
        .execute(
            "UPDATE learning_content SET title = 'แก้ไขในไฟล์เก่า',
                    updated_at = '2026-06-02 09:00:00.000000' WHERE id = ?1",
            [edited_in_legacy],
        )
        .unwrap();
    // A row the legacy file gained after the migration (the old application
    // was used on), with an id the server never gave out.
    let new_id = legacy_ids(&legacy, "learning_content").last().unwrap() + 500;
    legacy
        .execute(
            "INSERT INTO learning_content (id, title, content_type, language, native_text, translation, ipa)
             VALUES (?1, 'ใหม่', 'word', 'thai', 'ใหม่', 'new', 'màj')",
            [new_id],
        )
        .unwrap();

    // Normal use of the agent: a pull, a push updating a legacy card, an
    // embed that prunes vectors whose rows are not mirrored.
    agent.run_json(&["pull"]);
    let pushed_fields = r#"{"Front": "สวัสดีครับ", "Back": "hello (pushed)"}"#;
    {
        let store = agent.mirror();
        let n = store
            .execute(
                "UPDATE anki_cards SET fields = ?1, content_hash = ?2, sync_status = 'synced',
                        last_synced_at = '2026-06-01T10:00:00Z', updated_at = '2026-06-01T10:00:00Z'
                 WHERE id = 1",
                rusqlite::params![pushed_fields, "f".repeat(64)],
            )
            .unwrap();
        assert_eq!(n, 1);
    }
    let embedded = agent.run_json(&["embed"]);
    assert!(embedded["pruned"].as_u64().unwrap() > 0, "{embedded:#}");
    let store_counts = || -> (i64, i64, i64, String) {
        let store = agent.mirror();
        let n = |sql: &str| -> i64 { store.query_row(sql, [], |r| r.get(0)).unwrap() };
        (
            n("SELECT count(*) FROM vector_embeddings WHERE model = 'all-MiniLM-L6-v2'"),
            n("SELECT count(*) FROM vec_embeddings"),
            n("SELECT count(*) FROM anki_cards"),
            store
                .query_row("SELECT fields FROM anki_cards WHERE id = 1", [], |r| {
                    r.get(0)
                })
                .unwrap(),
        )
    };
    let in_store = store_counts();
    assert!((in_store.0 as usize) < sum.vectors, "nothing was pruned");
    assert_eq!(in_store.3, pushed_fields);

    // The re-run: exit 0, only the new row sent, nothing undone.
    let log_before = stack.query_i64("SELECT coalesce(max(id), 0) FROM change_log");
    let out = agent
        .start(&migrate_args(&legacy_path, &report, &["--json"]))
        .finish(MIGRATE_LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let again: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["ok"], true, "{again:#}");
    assert_eq!(again["migrated_before"]["legacy_unchanged"], false);
    assert!(again["store"].is_null(), "cards and vectors copied again");
    let changed = changed_since(&again);
    let expect =
        |table: &str, change: &str| changed[&(table.to_owned(), change.to_owned())].clone();
    assert_eq!(
        expect("learning_content", "deleted_on_server"),
        BTreeSet::from([deleted])
    );
    assert_eq!(
        expect("content_fragments", "deleted_on_server"),
        gone_fragments
    );
    assert_eq!(expect("fragment_assets", "deleted_on_server"), gone_assets);
    assert_eq!(expect("rankings", "deleted_on_server"), gone_rankings);
    assert_eq!(
        expect("learning_content", "edited_on_server"),
        BTreeSet::from([edited_on_server])
    );
    assert_eq!(
        expect("learning_content", "changed_in_legacy"),
        BTreeSet::from([edited_in_legacy])
    );
    assert_eq!(changed.len(), 6, "{changed:?}");
    assert_eq!(sent(&again, "learning_content"), 1);
    for table in ["content_fragments", "fragment_assets", "rankings"] {
        assert_eq!(sent(&again, table), 0, "{table}");
    }
    // On the server: the new row and nothing else.
    assert_eq!(
        changes_after(&stack, log_before),
        vec![("learning_content".to_owned(), new_id, "insert".to_owned())]
    );
    assert!(!server_ids(&stack, "learning_content").contains(&deleted));
    for (table, gone) in [
        ("content_fragments", &gone_fragments),
        ("fragment_assets", &gone_assets),
        ("rankings", &gone_rankings),
    ] {
        assert!(
            server_ids(&stack, table).is_disjoint(gone),
            "{table} came back"
        );
    }
    assert_eq!(title(&stack, edited_on_server), "แก้ไขบนเซิร์ฟเวอร์");
    assert_eq!(title(&stack, edited_in_legacy), legacy_title_before);
    // In the store: no vector or card copied back, the pushed card as pushed.
    assert_eq!(store_counts(), in_store);

    // The same check as text names each change, and how to undo them.
    let log_before = stack.query_i64("SELECT coalesce(max(id), 0) FROM change_log");
    let out = agent
        .start(&migrate_args(&legacy_path, &report, &[]))
        .finish(MIGRATE_LIMIT);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        text.contains(&format!(
            "content {deleted}: deleted on the server since the migration of "
        )) && text.contains("; not restored"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "content {edited_on_server}: edited on the server since"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "content {edited_in_legacy}: changed in the legacy file since"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "local-agent migrate {} --resend",
            legacy_path.display()
        )),
        "{text}"
    );
    assert!(changes_after(&stack, log_before).is_empty());
    assert_eq!(store_counts(), in_store);

    // --resend: everything again; the pushed card is the same card, not a
    // conflict.
    let out = agent
        .start(&migrate_args(
            &legacy_path,
            &report,
            &["--json", "--resend"],
        ))
        .finish(MIGRATE_LIMIT);
    let resent: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(resent["ok"], true, "{resent:#}");
    assert_eq!(resent["store"]["conflicts"], 0, "{resent:#}");
    let rejects = read_rejects(&report);
    for table in TABLES {
        let expected: BTreeSet<i64> = legacy_ids(&legacy, table)
            .difference(&rejected_ids(&rejects, table))
            .copied()
            .collect();
        assert!(server_ids(&stack, table).is_superset(&expected), "{table}");
    }
    assert!(server_ids(&stack, "content_fragments").is_superset(&gone_fragments));
    assert_eq!(title(&stack, edited_in_legacy), "แก้ไขในไฟล์เก่า");
    assert_ne!(title(&stack, edited_on_server), "แก้ไขบนเซิร์ฟเวอร์");
    assert_assets_identical(&stack, &legacy);
    // And then a check finds nothing changed since.
    let last = migrate(&agent, &legacy_path, &report, &[]);
    assert_eq!(last["ok"], true, "{last:#}");
    assert_eq!(last["nothing_to_do"], true, "{last:#}");
    assert_eq!(
        last["migrated_before"]["legacy_unchanged"], true,
        "{last:#}"
    );
    assert!(last["changed_since"].as_array().unwrap().is_empty());
}

/// The Content-Type of a migrated asset comes from whatever its legacy
/// metadata says about it, not only `format`.
#[test]
fn assets_arrive_with_the_media_type_their_legacy_metadata_names() {
    let stack = Stack::start();
    let agent = service_agent(&stack);
    let spec = Spec {
        contents: 4,
        fragments_per_content: 1,
        assets: 4,
        asset_bytes: 1024,
        rankings: 0,
        defect_every: 0,
        vectors: false,
        seed: 3,
    };
    let (legacy_path, _) = legacy_file(agent.dir.path(), &spec);
    let legacy = rusqlite::Connection::open(&legacy_path).unwrap();
    let assets: Vec<i64> = legacy_ids(&legacy, "fragment_assets").into_iter().collect();
    let metadata = [
        (
            r#"{"voice": "th-TH", "mime_type": "audio/mpeg"}"#,
            "audio/mpeg",
        ),
        (r#"{"filename": "tts/สวัสดี.ogg"}"#, "audio/ogg"),
        (r#"{"format": "wav"}"#, "audio/wav"),
        (r#"{"voice": "th-TH"}"#, "application/octet-stream"),
    ];
    for (id, (meta, _)) in assets.iter().zip(metadata) {
        legacy
            .execute(
                "UPDATE fragment_assets SET asset_metadata = ?1 WHERE id = ?2",
                rusqlite::params![meta, id],
            )
            .unwrap();
    }
    let report = agent.dir.path().join("rejects.jsonl");
    let summary = migrate(&agent, &legacy_path, &report, &[]);
    assert_eq!(summary["ok"], true, "{summary:#}");
    for (id, (meta, want)) in assets.iter().zip(metadata) {
        let got: String = rt()
            .block_on(stack.pg.query_one(
                "SELECT content_type FROM fragment_assets WHERE id = $1",
                &[&(*id as i32)],
            ))
            .unwrap()
            .get(0);
        assert_eq!(got, want, "asset {id} with {meta}");
    }
}

/// A file that is not the legacy database gets a message that names it,
/// says what it is not and what migrate reads; nothing is sent.
#[test]
fn a_file_that_is_not_the_legacy_database_is_named_and_explained() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(
        &text,
        "สวัสดี: these are my notes, not a database\n".repeat(40),
    )
    .unwrap();
    let other = dir.path().join("other.db");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE learning_content (id INTEGER PRIMARY KEY)")
        .unwrap();
    let missing = dir.path().join("anki_vector_db.db");
    let run = |file: &std::path::Path, extra: &[&str]| {
        let out = support::agent_command()
            .arg("--db")
            .arg(dir.path().join("agent.db"))
            .arg("--config")
            .arg(dir.path().join("none.toml"))
            // Nothing listens there: the file is refused before any request.
            .args(["--api-url", "http://127.0.0.1:9", "--token", "sb_secret_x"])
            .arg("migrate")
            .arg(file)
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for extra in [&[][..], &["--dry-run"]] {
        let (code, said) = run(&text, extra);
        assert_eq!(code, Some(1), "{said}");
        assert!(said.contains(&text.display().to_string()), "{said}");
        assert!(said.contains("is not an SQLite database"), "{said}");
        assert!(said.contains("anki_vector_db.db"), "{said}");
        assert!(!said.contains("cannot reach"), "{said}");
    }
    let (code, said) = run(&other, &[]);
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains(&other.display().to_string())
            && said.contains("not the old application's")
            && said.contains("content_fragments, fragment_assets, rankings"),
        "{said}"
    );
    let (code, said) = run(&missing, &[]);
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains(&format!("there is no file {}", missing.display())),
        "{said}"
    );
}

/// An OpenAI-compatible `/v1/embeddings` endpoint that serves one model
/// under one name (OpenAI's 404 `model_not_found` for any other) and embeds
/// every text as `vector`. Returns its base URL and the model names it was
/// asked for.
fn embeddings_endpoint(
    name: &'static str,
    vector: Vec<f32>,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = asked.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut writer = stream;
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                continue;
            }
            let mut length = 0;
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                let header = header.trim_end();
                if header.is_empty() {
                    break;
                }
                if let Some((k, v)) = header.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let request: Value = serde_json::from_slice(&body).unwrap();
            let model = request["model"].as_str().unwrap().to_owned();
            seen.lock().unwrap().push(model.clone());
            let (status, answer) = if model == name {
                let inputs = request["input"].as_array().map_or(1, Vec::len);
                let data: Vec<Value> = (0..inputs)
                    .map(|i| json!({"object": "embedding", "index": i, "embedding": vector}))
                    .collect();
                (
                    "200 OK",
                    json!({"object": "list", "data": data, "model": model}),
                )
            } else {
                (
                    "404 Not Found",
                    json!({"error": {"message": format!("The model `{model}` does not exist or you do not have access to it."),
                                     "type": "invalid_request_error", "param": null, "code": "model_not_found"}}),
                )
            };
            let answer = answer.to_string();
            let _ = write!(
                writer,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    (url, asked)
}

/// `search --model <the legacy model>` right after `migrate`: the legacy
/// vectors are searchable once an endpoint embeds the query with that
/// model, also one that serves it under another name; without one the
/// message says so instead of the generic advice.
#[test]
fn the_legacy_vectors_are_searched_with_the_legacy_model_right_after_migrate() {
    let stack = Stack::start();
    let agent = service_agent(&stack);
    let (legacy_path, _) = legacy_file(agent.dir.path(), &Spec::small(8));
    let legacy = rusqlite::Connection::open(&legacy_path).unwrap();
    let report = agent.dir.path().join("rejects.jsonl");
    assert_eq!(migrate(&agent, &legacy_path, &report, &[])["ok"], true);
    let search = [
        "search",
        "สวัสดีครับ",
        "--model",
        "all-MiniLM-L6-v2",
        "--k",
        "3",
    ];

    let out = agent.run(&search);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("vectors of all-MiniLM-L6-v2")
            && stderr.contains("THAI_AGENT_EMBED_URL")
            && stderr.contains("[embed.endpoint_names]"),
        "{stderr}"
    );

    // An endpoint (like Ollama) that serves the model as all-minilm, and
    // embeds any text as the legacy vector of one migrated fragment.
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
    let (url, asked) = embeddings_endpoint("all-minilm", vector.clone());
    let config = agent.dir.path().join("config.toml");
    std::fs::write(&config, format!("[embed]\nurl = \"{url}\"\n")).unwrap();
    // Asked for the model by the legacy file's name, it does not know it.
    let out = agent.run(&search);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");

    std::fs::write(
        &config,
        format!(
            "[embed]\nurl = \"{url}\"\n\n[embed.endpoint_names]\n\"all-MiniLM-L6-v2\" = \"all-minilm\"\n"
        ),
    )
    .unwrap();
    let hits = agent.run_json(&search);
    assert_eq!(hits[0]["id"], fragment, "{hits:#}");
    // The agent L2-normalises what an endpoint returns; the fixture's
    // legacy vectors are not unit length: the query is this vector scaled.
    let norm = vector
        .iter()
        .map(|x| f64::from(*x).powi(2))
        .sum::<f64>()
        .sqrt();
    let distance = hits[0]["distance"].as_f64().unwrap();
    assert!((distance - (norm - 1.0).abs()).abs() < 1e-3, "{hits:#}");
    assert_eq!(
        asked.lock().unwrap().as_slice(),
        ["all-MiniLM-L6-v2", "all-minilm"]
    );
}

/// Both sides went on numbering after the migration: a row the legacy file
/// gained with an id the server has since given to another row is not sent
/// over it; the run stops before sending anything and says what to do.
#[test]
fn a_new_legacy_row_whose_id_the_server_gave_out_since_is_not_sent_over_it() {
    let stack = Stack::start();
    let agent = service_agent(&stack);
    let spec = Spec {
        contents: 5,
        fragments_per_content: 1,
        assets: 2,
        asset_bytes: 512,
        rankings: 2,
        defect_every: 0,
        vectors: false,
        seed: 12,
    };
    let (legacy_path, _) = legacy_file(agent.dir.path(), &spec);
    let legacy = rusqlite::Connection::open(&legacy_path).unwrap();
    let report = agent.dir.path().join("rejects.jsonl");
    assert_eq!(migrate(&agent, &legacy_path, &report, &[])["ok"], true);
    let on_server = stack.create(
        "/api/content",
        json!({"title": "บนเซิร์ฟเวอร์", "content_type": "word", "native_text": "ใหม่",
               "translation": "made on the server", "ipa": "màj"}),
    );
    legacy
        .execute(
            "INSERT INTO learning_content (id, title, content_type, language, native_text, translation, ipa)
             VALUES (?1, 'ในไฟล์เก่า', 'word', 'thai', 'เก่า', 'made in the old app', 'kàw')",
            [on_server],
        )
        .unwrap();
    let log = count(&stack, "change_log");
    let out = agent
        .start(&migrate_args(&legacy_path, &report, &[]))
        .finish(MIGRATE_LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "content {on_server}: new in the legacy file since the migration of "
        )) && stderr.contains("nothing was sent")
            && !stderr.contains("run the same command again"),
        "{stderr}"
    );
    assert_eq!(count(&stack, "change_log"), log, "something was sent");
    assert_eq!(title(&stack, on_server), "บนเซิร์ฟเวอร์");

    // Renumbered in the legacy file, it goes.
    let free = on_server + 100;
    legacy
        .execute(
            "UPDATE learning_content SET id = ?1 WHERE id = ?2",
            [free, on_server],
        )
        .unwrap();
    let again = migrate(&agent, &legacy_path, &report, &[]);
    assert_eq!(again["ok"], true, "{again:#}");
    assert_eq!(sent(&again, "learning_content"), 1);
    assert_eq!(title(&stack, free), "ในไฟล์เก่า");
    assert_eq!(title(&stack, on_server), "บนเซิร์ฟเวอร์");
}
