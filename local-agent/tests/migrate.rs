//! `local-agent migrate` end to end: a legacy file written by
//! `legacy-fixture` (planted, counted defects; real SQLite with sqlite-vec),
//! the binary, the real components served by the Wasmtime host, a real
//! PostgreSQL.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use legacy_fixture::{Spec, Summary};
use local_agent::search::{Query, search_vector};
use local_agent::store::{SourceKind, Store};
use rusqlite::types::Value as Sql;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{Agent, Stack, rt};

const TABLES: [&str; 4] = [
    "learning_content",
    "content_fragments",
    "fragment_assets",
    "rankings",
];

fn legacy_file(dir: &Path, spec: &Spec) -> (PathBuf, Summary) {
    // sqlite-vec registered in this process, for the vec0 table.
    let _ = Store::open_in_memory().unwrap();
    let path = dir.join("anki_vector_db.db");
    let sum = legacy_fixture::generate(&path, spec).unwrap();
    (path, sum)
}

fn service_agent(stack: &Stack) -> Agent {
    let mut agent = Agent::new(stack);
    agent.token = stack.token("service_role");
    agent
}

fn count(stack: &Stack, table: &str) -> i64 {
    stack.query_i64(&format!("SELECT count(*) FROM {table}"))
}

fn read_rejects(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn rejected_ids(rejects: &[Value], table: &str) -> BTreeSet<i64> {
    rejects
        .iter()
        .filter(|r| r["table"] == table)
        .map(|r| r["id"].as_i64().unwrap())
        .collect()
}

fn lines(rejects: &[Value], table: &str, column: &str, reason: &str) -> usize {
    rejects
        .iter()
        .filter(|r| {
            (table == "*" || r["table"] == table)
                && (column == "*" || r["column"] == column)
                && r["reason"] == reason
        })
        .count()
}

fn legacy_ids(legacy: &rusqlite::Connection, table: &str) -> BTreeSet<i64> {
    let mut stmt = legacy.prepare(&format!("SELECT id FROM {table}")).unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn server_ids(stack: &Stack, table: &str) -> BTreeSet<i64> {
    rt().block_on(stack.pg.query(&format!("SELECT id FROM {table}"), &[]))
        .unwrap()
        .iter()
        .map(|r| i64::from(r.get::<_, i32>(0)))
        .collect()
}

fn server_asset_sha(stack: &Stack) -> HashMap<i64, String> {
    rt().block_on(stack.pg.query(
        "SELECT id, encode(sha256(asset_data), 'hex') FROM fragment_assets",
        &[],
    ))
    .unwrap()
    .iter()
    .map(|r| (i64::from(r.get::<_, i32>(0)), r.get::<_, String>(1)))
    .collect()
}

fn legacy_asset_sha(legacy: &rusqlite::Connection) -> HashMap<i64, String> {
    let mut stmt = legacy
        .prepare("SELECT id, asset_data FROM fragment_assets")
        .unwrap();
    stmt.query_map([], |r| {
        let bytes: Vec<u8> = r.get(1)?;
        Ok((r.get(0)?, hex::encode(Sha256::digest(&bytes))))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// Every imported asset's bytes are the legacy bytes.
fn assert_assets_identical(stack: &Stack, legacy: &rusqlite::Connection) {
    let source = legacy_asset_sha(legacy);
    let server = server_asset_sha(stack);
    for (id, sha) in &server {
        assert_eq!(Some(sha), source.get(id), "asset {id}");
    }
}

fn migrate(agent: &Agent, legacy: &Path, report: &Path, extra: &[&str]) -> Value {
    let mut args = vec![
        "migrate",
        legacy.to_str().unwrap(),
        "--reject-report",
        report.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    agent.run_json(&args)
}

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

    // Each planted defect is in the report with its reason, exactly.
    assert_eq!(
        lines(&rejects, "learning_content", "title", "too_long"),
        sum.overlong_titles
    );
    assert_eq!(lines(&rejects, "*", "*", "invalid_json"), sum.invalid_json);
    assert_eq!(
        lines(
            &rejects,
            "content_fragments",
            "learning_content_id",
            "orphan"
        ),
        sum.orphan_fragments
    );
    assert_eq!(
        lines(&rejects, "fragment_assets", "fragment_id", "orphan"),
        sum.orphan_assets
    );
    assert_eq!(
        lines(&rejects, "rankings", "asset_id", "orphan"),
        sum.orphan_rankings
    );
    assert_eq!(
        lines(&rejects, "rankings", "rank_score", "score_out_of_range"),
        sum.scores_out_of_range
    );
    assert_eq!(
        lines(&rejects, "rankings", "rank_score", "score_not_a_number"),
        sum.scores_not_numbers
    );
    assert_eq!(
        lines(&rejects, "fragment_assets", "asset_data", "empty_blob"),
        sum.empty_blobs
    );
    assert_eq!(lines(&rejects, "*", "*", "server_refused"), 0);

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

    // Migrated + rejected = source, table by table, and the ids are exact.
    let source_counts = [sum.contents, sum.fragments, sum.assets, sum.rankings];
    for (table, source) in TABLES.iter().zip(source_counts) {
        let rejected = rejected_ids(&rejects, table);
        let expected: BTreeSet<i64> = legacy_ids(&legacy, table)
            .difference(&rejected)
            .copied()
            .collect();
        assert_eq!(server_ids(&stack, table), expected, "{table}");
        assert_eq!(expected.len() + rejected.len(), source, "{table}");
    }
    assert_assets_identical(&stack, &legacy);

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

    let mut child = agent
        .command(&[
            "--quiet",
            "migrate",
            legacy_path.to_str().unwrap(),
            "--reject-report",
            report.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the migration ended before it could be killed"
        );
        if count(&stack, "fragment_assets") >= 15 {
            break;
        }
        assert!(Instant::now() < deadline, "no asset arrived");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
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
    for (table, n) in TABLES
        .iter()
        .zip([sum.contents, sum.fragments, sum.assets, sum.rankings])
    {
        assert_eq!(count(&stack, table), n as i64, "{table}");
    }
    assert_assets_identical(&stack, &legacy);
    assert!(read_rejects(&report).is_empty());
}
