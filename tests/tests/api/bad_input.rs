//! The bad-input matrix: malformed, hostile and absurd requests across the
//! routes each get their documented 4xx as problem+json, never a 5xx, and
//! change nothing in the database.

use bytes::Bytes;
use serde_json::json;

use crate::{App, MAX_ASSET_BYTES, problem};

/// One request and the status it must get.
struct Case {
    name: String,
    method: &'static str,
    path: String,
    role: Option<&'static str>,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
    status: u16,
}

fn case(
    name: impl Into<String>,
    method: &'static str,
    path: impl Into<String>,
    status: u16,
) -> Case {
    Case {
        name: name.into(),
        method,
        path: path.into(),
        role: Some("service_role"),
        headers: Vec::new(),
        body: Bytes::new(),
        status,
    }
}

impl Case {
    fn json(mut self, body: impl Into<Bytes>) -> Self {
        self.headers
            .push(("content-type", "application/json".into()));
        self.body = body.into();
        self
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }
}

/// Counts and digests of every table: "unchanged" is equality of these.
pub(crate) async fn state(app: &App) -> Vec<String> {
    let sql = app.sql().await;
    let mut out = Vec::new();
    for table in [
        "learning_content",
        "content_fragments",
        "fragment_assets",
        "rankings",
        "change_log",
    ] {
        let row = sql
            .query_one(
                &format!("SELECT count(*)::text || ':' || coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '') FROM {table} t"),
                &[],
            )
            .await
            .unwrap();
        out.push(format!("{table} {}", row.get::<_, String>(0)));
    }
    out
}

fn valid_content() -> serde_json::Value {
    json!({"title": "t", "content_type": "phrase", "native_text": "น้ำ", "translation": "water", "ipa": "náːm"})
}

fn with(field: &str, value: serde_json::Value) -> String {
    let mut body = valid_content();
    body[field] = value;
    body.to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_request_gets_its_4xx_and_changes_nothing() {
    let app = App::start().await;
    let (content, fragments) = app.content_with_fragments(1).await;
    let f = fragments[0];
    let asset = app
        .call(
            Some("authenticated"),
            "POST",
            &format!("/api/assets?fragment_id={f}&asset_type=audio"),
            &[("content-type", "audio/mpeg")],
            Bytes::from(vec![7u8; 1000]),
        )
        .await
        .json()["id"]
        .as_i64()
        .unwrap();
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let deep_object = format!(
        r#"{{"title": "t", "content_metadata": {}{}}}"#,
        "{\"a\":".repeat(200),
        "}".repeat(200)
    );

    let mut cases = vec![
        // Malformed and deeply nested JSON.
        case("truncated JSON", "POST", "/api/content", 400).json("{\"title\": \"x\""),
        case("trailing garbage", "POST", "/api/content", 400).json(format!("{} x", valid_content())),
        case("single quotes", "POST", "/api/content", 400).json("{'title': 'x'}"),
        case("empty body", "POST", "/api/content", 400).json(""),
        case("deep array", "POST", "/api/content", 400).json(deep.clone()),
        case("deep object", "PATCH", format!("/api/content/{content}"), 400).json(deep_object),
        case("array body", "POST", "/api/content", 422).json("[1,2,3]"),
        case("string body", "POST", "/api/fragments", 422).json("\"hello\""),
        case("null body", "PATCH", format!("/api/fragments/{f}"), 422).json("null"),
        // Wrong types.
        case("title number", "POST", "/api/content", 422).json(with("title", json!(42))),
        case("title object", "POST", "/api/content", 422).json(with("title", json!({"a": 1}))),
        case("difficulty string", "POST", "/api/content", 422).json(with("difficulty_level", json!("3"))),
        case("difficulty bool", "POST", "/api/content", 422).json(with("difficulty_level", json!(true))),
        case("difficulty float", "POST", "/api/content", 422).json(with("difficulty_level", json!(1.5))),
        case("fragment content id string", "POST", "/api/fragments", 422)
            .json(json!({"learning_content_id": "1", "native_text": "x", "body_text": "y", "fragment_type": "w"}).to_string()),
        case("score bool", "POST", "/api/rankings", 422).json(json!({"asset_id": asset, "rank_score": false, "assessed_by": "a"}).to_string()),
        case("score array", "POST", "/api/rankings", 422).json(json!({"asset_id": asset, "rank_score": [5], "assessed_by": "a"}).to_string()),
        // Missing and extra fields.
        case("missing everything", "POST", "/api/content", 422).json("{}"),
        case("missing ipa", "POST", "/api/content", 422)
            .json(json!({"title": "t", "content_type": "p", "native_text": "x", "translation": "y"}).to_string()),
        case("missing assessed_by", "POST", "/api/rankings", 422).json(json!({"asset_id": asset}).to_string()),
        case("extra field", "POST", "/api/content", 422).json(with("admin", json!(true))),
        case("extra field on patch", "PATCH", "/api/rankings/999", 422).json("{\"x\": 1}"),
        case("id in create", "POST", "/api/fragments", 422)
            .json(json!({"id": 5, "native_text": "x", "body_text": "y", "fragment_type": "w"}).to_string()),
        case("size on patch", "PATCH", format!("/api/assets/{asset}"), 422).json("{\"size\": 1}"),
        // Overlong strings (varchar limits count characters).
        case("title 201 Thai chars", "POST", "/api/content", 422).json(with("title", json!("ข".repeat(201)))),
        case("content_type 51", "POST", "/api/content", 422).json(with("content_type", json!("x".repeat(51)))),
        case("assessed_by 101", "POST", "/api/rankings", 422)
            .json(json!({"asset_id": asset, "assessed_by": "a".repeat(101)}).to_string()),
        case("fragment_type 51", "PATCH", format!("/api/fragments/{f}"), 422).json(json!({"fragment_type": "w".repeat(51)}).to_string()),
        // Invalid UTF-8 and NUL bytes.
        case("invalid UTF-8", "POST", "/api/content", 400).json(Bytes::from_static(b"{\"title\": \"\xff\xfe\"}")),
        case("NUL in text", "POST", "/api/content", 422).json(with("native_text", json!("a\u{0}b"))),
        case("NUL in JSON", "POST", "/api/content", 422).json(with("tags", json!(["ok", "n\u{0}ul"]))),
        case("NUL in JSON key", "PATCH", format!("/api/content/{content}"), 422).json(r#"{"content_metadata": {"k\u0000": 1}}"#),
        case("NUL in query", "GET", "/api/content?q=a%00b", 400),
        // Huge and negative numbers.
        case("difficulty 2^31", "POST", "/api/content", 422).json(with("difficulty_level", json!(2_147_483_648_i64))),
        case("difficulty 1e400", "POST", "/api/content", 422).json(r#"{"title":"t","content_type":"p","native_text":"x","translation":"y","ipa":"z","difficulty_level":1e400}"#),
        case("score 5.01", "POST", "/api/rankings", 422).json(json!({"asset_id": asset, "rank_score": "5.01", "assessed_by": "a"}).to_string()),
        case("score -0.01", "POST", "/api/rankings", 422).json(json!({"asset_id": asset, "rank_score": -0.01, "assessed_by": "a"}).to_string()),
        case("score 1e308", "POST", "/api/rankings", 422).json(r#"{"asset_id": 1, "rank_score": 1e308, "assessed_by": "a"}"#),
        case("negative content id", "POST", "/api/fragments", 422)
            .json(json!({"learning_content_id": -1, "native_text": "x", "body_text": "y", "fragment_type": "w"}).to_string()),
        case("fragment_id huge", "POST", "/api/assets?fragment_id=99999999999999&asset_type=audio", 422)
            .header("content-type", "audio/mpeg").body(Bytes::from_static(b"x")),
        case("fragment_id text", "POST", "/api/assets?fragment_id=abc&asset_type=audio", 400)
            .header("content-type", "audio/mpeg").body(Bytes::from_static(b"x")),
        // Path traversal and odd ids.
        case("dotdot id", "GET", "/api/content/..", 404),
        case("encoded traversal", "GET", "/api/content/..%2F..%2Fetc%2Fpasswd", 404),
        case("traversal in data", "GET", "/api/assets/..%2F1/data", 404),
        case("id zero", "GET", "/api/fragments/0", 404),
        case("id negative", "DELETE", "/api/rankings/-1", 404),
        case("id overflow", "PATCH", "/api/content/2147483648", 404).json("{}"),
        case("id float", "GET", "/api/assets/1.5", 404),
        case("id hex", "GET", "/api/content/0x10", 404),
        // Absurd limit and cursor values.
        case("limit zero", "GET", "/api/content?limit=0", 400),
        case("limit huge", "GET", "/api/fragments?limit=99999999999999999999", 400),
        case("limit negative", "GET", "/api/rankings?limit=-5", 400),
        case("limit text", "GET", "/api/assets?limit=ten", 400),
        case("feed limit over max", "GET", "/api/changes?limit=5001", 400),
        case("cursor garbage", "GET", "/api/content?cursor=%27%3B%20DROP%20TABLE", 400),
        case("cursor long", "GET", format!("/api/content?cursor={}", "A".repeat(2000)), 400),
        case("feed cursor garbage", "GET", "/api/changes?cursor=eyJwIjoibCIsIngiOiJhYmMiLCJpIjoxfQ", 400),
        case("feed cursor bad table", "GET", "/api/changes?cursor=eyJwIjoicyIsInQiOjk5LCJhIjowLCJoIjoiMSJ9", 400),
        case("duplicate parameter", "GET", "/api/content?limit=1&limit=2", 400),
        case("unknown filter", "GET", "/api/fragments?colour=red", 400),
        case("summary without filter", "GET", "/api/rankings/summary", 400),
        case("best bad type", "GET", format!("/api/rankings/best?fragment_id={f}&asset_type=smell"), 400),
        case("expand unknown", "GET", format!("/api/content/{content}?expand=everything"), 400),
        // Broken Range headers on a real asset: 416 when outside.
        case("range past end", "GET", format!("/api/assets/{asset}/data"), 416).header("range", "bytes=1000-"),
        case("range suffix zero", "GET", format!("/api/assets/{asset}/data"), 416).header("range", "bytes=-0"),
        // Wrong Content-Type.
        case("form body", "POST", "/api/content", 415).header("content-type", "application/x-www-form-urlencoded").body(Bytes::from("title=x")),
        case("no content type", "PATCH", format!("/api/content/{content}"), 415).body(Bytes::from("{}")),
        case("text/json", "POST", "/api/import/content", 415).header("content-type", "text/json").body(Bytes::from("{\"rows\":[]}")),
        case("asset without media type", "POST", format!("/api/assets?fragment_id={f}&asset_type=audio"), 415).body(Bytes::from_static(b"x")),
        // Oversized bodies.
        case("asset over the limit", "POST", format!("/api/assets?fragment_id={f}&asset_type=audio"), 413)
            .header("content-type", "audio/mpeg").body(Bytes::from(vec![0u8; MAX_ASSET_BYTES + 1])),
        case("JSON over 8 MiB", "POST", "/api/content", 413).json(with("native_text", json!("x".repeat(9 * 1024 * 1024)))),
        case("import batch too big", "POST", "/api/import/content", 422)
            .json(json!({"rows": (0..501).map(|i| json!({"id": i + 1})).collect::<Vec<_>>()}).to_string()),
        case("import rows not array", "POST", "/api/import/rankings", 422).json("{\"rows\": {}}"),
        case("import extra member", "POST", "/api/import/fragments", 422).json("{\"rows\": [], \"mode\": \"fast\"}"),
        // Wrong methods.
        case("PUT content", "PUT", format!("/api/content/{content}"), 405).json("{}"),
        case("DELETE collection", "DELETE", "/api/fragments", 405),
        case("POST changes", "POST", "/api/changes", 405).json("{}"),
    ];
    // Conditional requests that must refuse.
    cases.push(
        case(
            "stale If-Match",
            "PATCH",
            format!("/api/content/{content}"),
            412,
        )
        .json("{\"title\": \"x\"}")
        .header("if-match", "\"0000\""),
    );
    cases.push(
        case(
            "weak If-Match",
            "DELETE",
            format!("/api/fragments/{f}"),
            412,
        )
        .header("if-match", "W/\"abc\""),
    );
    // References to rows that do not exist.
    cases.push(
        case("ranking of missing asset", "POST", "/api/rankings", 422)
            .json(json!({"asset_id": 987654, "assessed_by": "a"}).to_string()),
    );
    cases.push(
        case("patch missing row", "PATCH", "/api/content/987654", 404).json("{\"title\": \"x\"}"),
    );
    assert!(cases.len() >= 60, "the matrix has {} cases", cases.len());

    let before = state(&app).await;
    for c in &cases {
        let headers: Vec<(&str, &str)> = c.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let reply = app
            .call(c.role, c.method, &c.path, &headers, c.body.clone())
            .await;
        assert!(reply.status < 500, "{}: 5xx {}", c.name, reply.text());
        assert_eq!(reply.status, c.status, "{}: {}", c.name, reply.text());
        let body = problem(&reply, c.status);
        assert!(
            body["detail"].is_string(),
            "{}: a problem says what is wrong",
            c.name
        );
        let text = reply.text();
        for leak in ["SELECT", "INSERT", "postgres://", "panicked", "src/"] {
            assert!(!text.contains(leak), "{}: leaks {leak}: {text}", c.name);
        }
    }
    assert_eq!(
        state(&app).await,
        before,
        "a refused request changed the database"
    );
    println!(
        "bad-input matrix: {} cases, all refused with their 4xx",
        cases.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn injection_strings_are_stored_literally_and_harm_nothing() {
    let app = App::start().await;
    let hostile = [
        "'; DROP TABLE learning_content; --",
        "\" OR 1=1 --",
        "$1); DELETE FROM rankings; --",
        "Robert'); DROP TABLE students;--",
        "\\x00\\'\\\"",
    ];
    for text in hostile {
        let row = app.create("/api/content", json!({"title": text, "content_type": text, "native_text": text, "translation": text, "ipa": text, "tags": [text]})).await;
        assert_eq!(row["title"], text);
        let found = app
            .get(&format!(
                "/api/content?q={}",
                form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>()
            ))
            .await;
        assert_eq!(found.status, 200);
        assert!(
            found.json()["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["title"] == text),
            "{text}"
        );
        let by_tag = app
            .get(&format!(
                "/api/content?tag={}",
                form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>()
            ))
            .await;
        assert_eq!(
            by_tag.json()["items"].as_array().unwrap().len(),
            1,
            "{text}"
        );
    }
    let count: i64 = app
        .sql()
        .await
        .query_one("SELECT count(*) FROM learning_content", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, hostile.len() as i64);
}
