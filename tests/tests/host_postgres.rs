//! `spin:postgres/postgres@4.0.0` through the host against a real
//! PostgreSQL: each type the project's SQL uses arrives in the form Spin
//! gives it, errors arrive in Spin's variants, connections are pooled and
//! reset, and addresses outside `allowed_outbound_hosts` are refused.

mod support;

use serde_json::{Value, json};
use support::{Server, manifest, sources};

const APP: &str = r#"
spin_manifest_version = 2
[application]
name = "pg"

[variables]
db_host = { required = true }

[[trigger.http]]
route = "/..."
component = "probe"

[component.probe]
source = "{probe}"
allowed_outbound_hosts = ["postgres://{{ db_host }}"]
"#;

struct Db {
    server: Server,
    url: String,
}

impl Db {
    async fn new() -> Self {
        let url = integration_tests::db::fresh_database().await;
        let port = integration_tests::db::cluster().port();
        let server = Server::start_text(APP, &[("db_host", &format!("127.0.0.1:{port}"))]).await;
        Self { server, url }
    }

    async fn run(&self, mode: &str, sql: &str, params: Value) -> Value {
        let reply = self
            .server
            .post_json(
                "/",
                &json!({ "address": self.url, "sql": sql, "params": params, "mode": mode }),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()
    }

    async fn query(&self, sql: &str, params: Value) -> Value {
        self.run("query", sql, params).await
    }

    async fn execute(&self, sql: &str, params: Value) -> Value {
        self.run("execute", sql, params).await
    }

    /// The single row of a query, as debug strings; panics on an error.
    async fn row(&self, sql: &str, params: Value) -> Vec<String> {
        let r = self.query(sql, params).await;
        assert!(r.get("error").is_none(), "{sql}: {r}");
        let rows = r["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 1, "{r}");
        rows[0]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    }

    async fn error(&self, sql: &str, params: Value) -> String {
        let r = self.query(sql, params).await;
        r["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{sql} should fail: {r}"))
            .to_owned()
    }
}

fn jsonb(text: &str) -> String {
    format!("DbValue::Jsonb({:?})", text.as_bytes())
}

#[tokio::test(flavor = "multi_thread")]
async fn each_type_the_project_uses_reads_as_spin_gives_it() {
    let db = Db::new().await;
    let r = db
        .query(
            "SELECT 7::int4 AS i4, 9000000000::int8 AS i8, 'ภาษาไทย น้ำ'::text AS t,
                    'x'::varchar(10) AS v, '\\x00ff01'::bytea AS b,
                    '{\"b\": 1.50, \"a\": [1, \"x\"]}'::jsonb AS j,
                    1.50::numeric(3,2) AS n, 4.75::numeric AS n2, true AS yes,
                    NULL::text AS nothing,
                    '2024-01-02 03:04:05.5+07'::timestamptz AT TIME ZONE 'UTC' AS at_utc,
                    to_char('2024-01-02 03:04:05+07'::timestamptz AT TIME ZONE 'UTC',
                            'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS as_text",
            json!([]),
        )
        .await;
    let types: Vec<&str> = r["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "Int32", "Int64", "Str", "Str", "Binary", "Jsonb", "Decimal", "Decimal", "Boolean",
            "Str", "Datetime", "Str"
        ]
        .map(|t| format!("DbDataType::{t}"))
    );
    let row: Vec<String> = r["rows"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        row,
        [
            "DbValue::Int32(7)",
            "DbValue::Int64(9000000000)",
            &format!("DbValue::Str({:?})", "ภาษาไทย น้ำ"),
            "DbValue::Str(\"x\")",
            "DbValue::Binary([0, 255, 1])",
            // Re-serialised: keys sorted, whitespace gone, 1.50 -> 1.5.
            &jsonb(r#"{"a":[1,"x"],"b":1.5}"#),
            // Scale kept.
            "DbValue::Decimal(\"1.50\")",
            "DbValue::Decimal(\"4.75\")",
            "DbValue::Boolean(true)",
            "DbValue::DbNull",
            "DbValue::Datetime((2024, 1, 1, 20, 4, 5, 500000000))",
            "DbValue::Str(\"2024-01-01T20:04:05Z\")",
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn parameters_round_trip_through_a_table() {
    let db = Db::new().await;
    let created = db
        .execute(
            "CREATE TABLE probe (
                i4 int4, i8 int8, t text, v varchar(20), b bytea, j jsonb,
                n numeric(3,2), yes bool, at timestamptz)",
            json!([]),
        )
        .await;
    assert_eq!(created, json!({ "affected": 0 }));
    let inserted = db
        .execute(
            "INSERT INTO probe VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::timestamp)",
            json!([
                { "type": "int32", "value": -7 },
                { "type": "int64", "value": 9_000_000_000i64 },
                { "type": "str", "value": "น้ำ ภาษา" },
                { "type": "str", "value": "vc" },
                { "type": "binary", "value": [0, 1, 2, 255] },
                { "type": "jsonb", "value": "{\"z\": 1, \"a\": {\"k\": 2.50}}" },
                { "type": "decimal", "value": "4.99" },
                { "type": "boolean", "value": false },
                { "type": "datetime", "value": [2025, 12, 31, 23, 59, 59, 0] },
            ]),
        )
        .await;
    assert_eq!(inserted, json!({ "affected": 1 }));
    let row = db
        .row(
            "SELECT i4, i8, t, v, b, j, n, yes, at AT TIME ZONE 'UTC' FROM probe",
            json!([]),
        )
        .await;
    assert_eq!(
        row,
        [
            "DbValue::Int32(-7)",
            "DbValue::Int64(9000000000)",
            &format!("DbValue::Str({:?})", "น้ำ ภาษา"),
            "DbValue::Str(\"vc\")",
            "DbValue::Binary([0, 1, 2, 255])",
            &jsonb(r#"{"a":{"k":2.5},"z":1}"#),
            "DbValue::Decimal(\"4.99\")",
            "DbValue::Boolean(false)",
            "DbValue::Datetime((2025, 12, 31, 23, 59, 59, 0))",
        ]
    );
    // Parameters in WHERE clauses, and NULL binding to any type.
    let row = db
        .row(
            "SELECT count(*)::int4 FROM probe WHERE n = $1 AND t = $2 AND $3::text IS NULL",
            json!([
                { "type": "decimal", "value": "4.99" },
                { "type": "str", "value": "น้ำ ภาษา" },
                { "type": "null" },
            ]),
        )
        .await;
    assert_eq!(row, ["DbValue::Int32(1)"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn what_spin_refuses_is_refused() {
    let db = Db::new().await;
    // TIMESTAMPTZ fails the whole query, even now().
    let e = db.error("SELECT 1::int4, now()", json!([])).await;
    assert!(e.starts_with("Error::QueryFailed(QueryError::Text("), "{e}");
    assert!(e.contains("timestamptz"), "{e}");
    // In Spin's words: the column, then the cause again under `Caused by:`.
    assert!(e.contains("error deserializing column 1: "), "{e}");
    assert!(e.contains("Caused by:"), "{e}");
    // A datetime parameter does not bind to timestamptz without a cast.
    let e = db
        .error(
            "SELECT $1::timestamptz",
            json!([{ "type": "datetime", "value": [2025, 1, 1, 0, 0, 0, 0] }]),
        )
        .await;
    assert!(e.starts_with("Error::QueryFailed(QueryError::Text("), "{e}");
    // NUMERIC NaN, and more digits than a decimal holds.
    for sql in [
        "SELECT 'NaN'::numeric",
        "SELECT 1234567890123456789012345678901::numeric",
    ] {
        let e = db.error(sql, json!([])).await;
        assert!(
            e.starts_with("Error::QueryFailed(QueryError::Text("),
            "{sql}: {e}"
        );
    }
    // An int32 parameter does not bind to an int8 column.
    let e = db
        .error("SELECT $1::int8", json!([{ "type": "int32", "value": 1 }]))
        .await;
    assert!(e.starts_with("Error::QueryFailed(QueryError::Text("), "{e}");
    // A malformed decimal is the component's mistake.
    let e = db
        .error(
            "SELECT $1::numeric",
            json!([{ "type": "decimal", "value": "1,5" }]),
        )
        .await;
    assert!(e.starts_with("Error::BadParameter("), "{e}");
    assert!(
        e.contains(r#"invalid decimal 1,5\n\nCaused by:\n    Invalid decimal: unknown character"#),
        "{e}"
    );
    let r = db
        .execute(
            "SELECT $1::numeric",
            json!([{ "type": "decimal", "value": "1,5" }]),
        )
        .await;
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .starts_with("Error::ValueConversionFailed("),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_json_is_unsupported_and_json_parameters_are_rewritten() {
    let db = Db::new().await;
    let r = db.query("SELECT '{\"a\": 1}'::json AS j", json!([])).await;
    assert_eq!(r["columns"][0]["type"], "DbDataType::Other(\"json\")");
    assert_eq!(
        r["rows"][0][0],
        format!("DbValue::Unsupported({:?})", br#"{"a": 1}"#)
    );
    // A JSON parameter is parsed and written out again before it is bound:
    // keys sorted, no spaces, numbers through f64.
    let row = db
        .row(
            "SELECT $1::json::text",
            json!([{ "type": "jsonb", "value": "{\"b\": 1, \"a\": 1.50}" }]),
        )
        .await;
    assert_eq!(row, [r#"DbValue::Str("{\"a\":1.5,\"b\":1}")"#]);
}

/// Spin 4.0.0 to 4.0.2 never answer a query that matches no row
/// (spinframework/spin#3671); the bundled host answers it, and refuses it
/// loudly when told to model that.
#[tokio::test(flavor = "multi_thread")]
async fn a_query_that_matches_no_row() {
    let empty = "SELECT 1::int4 AS one WHERE false";
    let db = Db::new().await;
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        db.query(empty, json!([])),
    )
    .await;
    match app_server::Host::from_env() {
        app_server::Host::Bundled => {
            assert_eq!(answer.unwrap(), json!({ "columns": [], "rows": [] }));
        }
        app_server::Host::Spin(bin) => assert!(
            answer.is_err(),
            "{} answered a query that matched no row: Spin 4.0.0 to 4.0.2 never do; \
             if this Spin is fixed, say which versions hang in README",
            bin.display()
        ),
    }

    let strict = spin_host::runtime::Runtime::new()
        .unwrap()
        .with_empty_results(spin_host::postgres::EmptyResults::Refuse);
    let port = integration_tests::db::cluster().port();
    let server = Server::start_on_runtime(
        &strict,
        &manifest(APP),
        &sources(&[("db_host", &format!("127.0.0.1:{port}"))]),
    )
    .await
    .unwrap();
    let refused = Db {
        server,
        url: db.url.clone(),
    };
    let e = refused.error(empty, json!([])).await;
    assert!(e.starts_with("Error::QueryFailed(QueryError::Text("), "{e}");
    assert!(e.contains("spinframework/spin#3671"), "{e}");
    assert!(e.contains(empty), "the error names the statement: {e}");
    assert_eq!(
        refused.row("SELECT 1::int4", json!([])).await,
        ["DbValue::Int32(1)"],
        "queries with rows are answered"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn server_errors_arrive_in_spin_4_variants() {
    let db = Db::new().await;
    // Raised before any row: structured.
    let e = db.error("SELEC 1", json!([])).await;
    assert!(
        e.starts_with("Error::QueryFailed(QueryError::DbError(DbError {"),
        "{e}"
    );
    assert!(e.contains("code: \"42601\""), "{e}");

    db.execute("CREATE TABLE u (k int4 PRIMARY KEY)", json!([]))
        .await;
    db.execute("INSERT INTO u VALUES (1)", json!([])).await;
    // execute: structured, with the constraint in the extras.
    let r = db.execute("INSERT INTO u VALUES (1)", json!([])).await;
    let e = r["error"].as_str().unwrap();
    assert!(
        e.starts_with("Error::QueryFailed(QueryError::DbError(DbError {"),
        "{e}"
    );
    assert!(e.contains("code: \"23505\""), "{e}");
    assert!(e.contains("(\"constraint\", \"u_pkey\")"), "{e}");
    // query: raised while rows stream in, so Spin 4.0 reports it as text
    // holding the structured error's debug form.
    let e = db
        .error("INSERT INTO u VALUES (1) RETURNING k", json!([]))
        .await;
    assert!(e.starts_with("Error::QueryFailed(QueryError::Text("), "{e}");
    assert!(e.contains("code: \\\"23505\\\""), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_are_pooled_and_reset_between_requests() {
    let db = Db::new().await;
    let first = db.row("SELECT pg_backend_pid()", json!([])).await;
    db.execute("SET application_name = 'leaky'", json!([]))
        .await;
    let second = db.row("SELECT pg_backend_pid()", json!([])).await;
    assert_eq!(
        first, second,
        "the same pooled connection serves the next request"
    );
    let name = db
        .row("SELECT current_setting('application_name')", json!([]))
        .await;
    assert_eq!(
        name,
        ["DbValue::Str(\"\")"],
        "session state does not survive checkout"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn statements_reused_across_requests_follow_schema_changes_and_deallocation() {
    // The host prepares each SQL text once per pooled connection; what a
    // component sees must not depend on it.
    let db = Db::new().await;
    db.execute("CREATE TABLE reuse (a int)", json!([])).await;
    db.execute("INSERT INTO reuse VALUES (1)", json!([])).await;
    let select = "SELECT * FROM reuse";
    assert_eq!(db.row(select, json!([])).await, ["DbValue::Int32(1)"]);
    // The cached statement's result type changes under it.
    db.execute("ALTER TABLE reuse ADD COLUMN b text DEFAULT 'x'", json!([]))
        .await;
    assert_eq!(
        db.row(select, json!([])).await,
        ["DbValue::Int32(1)", "DbValue::Str(\"x\")"]
    );
    // The session's statements are dropped behind the host's back.
    db.execute("DEALLOCATE ALL", json!([])).await;
    assert_eq!(
        db.row(select, json!([])).await,
        ["DbValue::Int32(1)", "DbValue::Str(\"x\")"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn results_above_128_mib_are_refused() {
    let db = Db::new().await;
    let e = db
        .error(
            "SELECT repeat('x', 1048576) FROM generate_series(1, 129)",
            json!([]),
        )
        .await;
    assert!(
        e.contains("query result exceeds limit of 134217728 bytes"),
        "{e}"
    );
    let r = db
        .query(
            "SELECT repeat('x', 1048576) FROM generate_series(1, 100)",
            json!([]),
        )
        .await;
    assert_eq!(r["rows"].as_array().unwrap().len(), 100);
}

#[tokio::test(flavor = "multi_thread")]
async fn addresses_outside_allowed_outbound_hosts_are_refused() {
    let db = Db::new().await;
    let port = integration_tests::db::cluster().port();
    for (address, authority) in [
        (
            format!("postgres://postgres@127.0.0.2:{port}/x"),
            format!("127.0.0.2:{port}"),
        ),
        (
            format!("postgres://postgres@localhost:{port}/x"),
            format!("localhost:{port}"),
        ),
        (
            // No port: the driver's default, 5432, is what is checked.
            "postgres://postgres@127.0.0.1/x".to_owned(),
            "127.0.0.1:5432".to_owned(),
        ),
        (
            format!("host=127.0.0.1 port={} user=postgres", port + 1),
            format!("127.0.0.1:{}", port + 1),
        ),
    ] {
        let r = db
            .server
            .post_json(
                "/",
                &json!({ "address": address, "sql": "SELECT 1", "params": [] }),
            )
            .await
            .json();
        assert_eq!(
            r["error"],
            format!("Error::ConnectionFailed(\"address postgres://{authority} is not permitted\")"),
            "{address}"
        );
    }
    // The allowed address works, and an unreachable allowed one is a
    // connection failure rather than a refusal.
    assert_eq!(
        db.row("SELECT 1::int4", json!([])).await,
        ["DbValue::Int32(1)"]
    );
}
