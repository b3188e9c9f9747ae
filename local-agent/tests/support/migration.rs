//! Helpers for the tests of `local-agent migrate`: legacy files from
//! `legacy-fixture`, and the checks that a migration ended exact (ids,
//! bytes, rejects, no row written twice).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use legacy_fixture::{Spec, Summary};
use local_agent::store::Store;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Agent, Stack, TABLES, rt};

/// Writes a legacy file into `dir` by `spec`.
pub fn legacy_file(dir: &Path, spec: &Spec) -> (PathBuf, Summary) {
    // sqlite-vec registered in this process, for the vec0 table.
    let _ = Store::open_in_memory().unwrap();
    let path = dir.join("anki_vector_db.db");
    let sum = legacy_fixture::generate(&path, spec).unwrap();
    (path, sum)
}

/// An agent whose token may import.
pub fn service_agent(stack: &Stack) -> Agent {
    let mut agent = Agent::new(stack);
    agent.token = stack.token("service_role");
    agent
}

pub fn count(stack: &Stack, table: &str) -> i64 {
    stack.query_i64(&format!("SELECT count(*) FROM {table}"))
}

/// Rows of the four content tables on the server.
pub fn server_total(stack: &Stack) -> i64 {
    TABLES.iter().map(|t| count(stack, t)).sum()
}

/// The migrate command with the test's reject report.
pub fn migrate_args<'a>(legacy: &'a Path, report: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "migrate",
        legacy.to_str().unwrap(),
        "--reject-report",
        report.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args
}

/// The longest a migration of a test's legacy file may take.
pub const MIGRATE_LIMIT: Duration = Duration::from_secs(180);

/// Runs the migration to its end; its JSON summary.
pub fn migrate(agent: &Agent, legacy: &Path, report: &Path, extra: &[&str]) -> Value {
    agent.run_json_within(&migrate_args(legacy, report, extra), MIGRATE_LIMIT)
}

pub fn read_rejects(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn rejected_ids(rejects: &[Value], table: &str) -> BTreeSet<i64> {
    rejects
        .iter()
        .filter(|r| r["table"] == table)
        .map(|r| r["id"].as_i64().unwrap())
        .collect()
}

/// Report lines for `reason` on `table`.`column` ("*": any).
pub fn lines(rejects: &[Value], table: &str, column: &str, reason: &str) -> usize {
    rejects
        .iter()
        .filter(|r| {
            (table == "*" || r["table"] == table)
                && (column == "*" || r["column"] == column)
                && r["reason"] == reason
        })
        .count()
}

/// Each defect the fixture planted is in the report with its reason,
/// exactly as many times as it was planted, and the server refused nothing.
pub fn assert_rejects_match(rejects: &[Value], sum: &Summary) {
    let expected = [
        ("learning_content", "title", "too_long", sum.overlong_titles),
        ("*", "*", "invalid_json", sum.invalid_json),
        (
            "content_fragments",
            "learning_content_id",
            "orphan",
            sum.orphan_fragments,
        ),
        (
            "fragment_assets",
            "fragment_id",
            "orphan",
            sum.orphan_assets,
        ),
        ("rankings", "asset_id", "orphan", sum.orphan_rankings),
        (
            "rankings",
            "rank_score",
            "score_out_of_range",
            sum.scores_out_of_range,
        ),
        (
            "rankings",
            "rank_score",
            "score_not_a_number",
            sum.scores_not_numbers,
        ),
        (
            "fragment_assets",
            "asset_data",
            "empty_blob",
            sum.empty_blobs,
        ),
        ("*", "*", "server_refused", 0),
        ("*", "*", "checksum_mismatch", 0),
    ];
    for (table, column, reason, n) in expected {
        assert_eq!(
            lines(rejects, table, column, reason),
            n,
            "{reason} on {table}.{column}"
        );
    }
}

pub fn legacy_ids(legacy: &rusqlite::Connection, table: &str) -> BTreeSet<i64> {
    let mut stmt = legacy.prepare(&format!("SELECT id FROM {table}")).unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

pub fn server_ids(stack: &Stack, table: &str) -> BTreeSet<i64> {
    rt().block_on(stack.pg.query(&format!("SELECT id FROM {table}"), &[]))
        .unwrap()
        .iter()
        .map(|r| i64::from(r.get::<_, i32>(0)))
        .collect()
}

pub fn server_asset_sha(stack: &Stack) -> HashMap<i64, String> {
    rt().block_on(stack.pg.query(
        "SELECT id, encode(sha256(asset_data), 'hex') FROM fragment_assets",
        &[],
    ))
    .unwrap()
    .iter()
    .map(|r| (i64::from(r.get::<_, i32>(0)), r.get::<_, String>(1)))
    .collect()
}

pub fn legacy_asset_sha(legacy: &rusqlite::Connection) -> HashMap<i64, String> {
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
pub fn assert_assets_identical(stack: &Stack, legacy: &rusqlite::Connection) {
    let source = legacy_asset_sha(legacy);
    let server = server_asset_sha(stack);
    for (id, sha) in &server {
        assert_eq!(Some(sha), source.get(id), "asset {id}");
    }
}

/// No row was written twice: the change log holds one insert per row the
/// server has and nothing else. A batch sent again after a crash (it had
/// arrived, its acknowledgement had not) must have changed nothing.
pub fn assert_each_row_written_once(stack: &Stack) {
    let rewritten = stack.query_i64(
        "SELECT count(*) FROM change_log WHERE op <> 'insert'
            OR (table_name, row_id) IN (SELECT table_name, row_id FROM change_log
                                        GROUP BY 1, 2 HAVING count(*) > 1)",
    );
    assert_eq!(rewritten, 0, "rows were updated, deleted or inserted twice");
    // One statement, so one snapshot: a request the killed agent left in
    // flight may commit between two separate counts.
    let rows = TABLES
        .iter()
        .map(|t| format!("(SELECT count(*) FROM {t})"))
        .collect::<Vec<_>>()
        .join(" + ");
    let missed = stack.query_i64(&format!(
        "SELECT {rows} - (SELECT count(*) FROM change_log)"
    ));
    assert_eq!(missed, 0, "rows the change log missed");
}

/// The server holds what the legacy file says: per table the legacy ids
/// minus the rejected ones (and source = expected + rejected), every byte
/// as it was, the reject report as the fixture planted it.
pub fn assert_server_holds_the_legacy_rows(
    stack: &Stack,
    legacy: &rusqlite::Connection,
    report: &Path,
    sum: &Summary,
) {
    let rejects = read_rejects(report);
    assert_rejects_match(&rejects, sum);
    let sources = [sum.contents, sum.fragments, sum.assets, sum.rankings];
    for (table, source) in TABLES.iter().zip(sources) {
        let rejected = rejected_ids(&rejects, table);
        let expected: BTreeSet<i64> = legacy_ids(legacy, table)
            .difference(&rejected)
            .copied()
            .collect();
        assert_eq!(server_ids(stack, table), expected, "{table}");
        assert_eq!(expected.len() + rejected.len(), source, "{table}");
    }
    assert_assets_identical(stack, legacy);
}

/// The migration ended exact: the server holds the legacy rows, each
/// written once.
pub fn assert_migration_exact(
    stack: &Stack,
    legacy: &rusqlite::Connection,
    report: &Path,
    sum: &Summary,
) {
    assert_server_holds_the_legacy_rows(stack, legacy, report, sum);
    assert_each_row_written_once(stack);
}
