//! Property-based fuzzing from the API's own OpenAPI document with
//! schemathesis: thousands of generated requests, no 5xx, and every response
//! as the document says (status, content type, headers, body schema), and
//! schema-invalid requests refused.

use std::process::Command;

use bytes::Bytes;
use serde_json::json;

use crate::{App, token};

/// The checks that judge the API against its document. The "positive data
/// acceptance" heuristic is left out: a schema cannot say that a referenced
/// row must exist or that a cursor must be one the API handed out.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
response_headers_conformance,response_schema_conformance,negative_data_rejection";

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_nothing_in_thousands_of_requests() {
    let program = std::env::var("SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".into());
    if Command::new(&program).arg("--version").output().is_err() {
        panic!(
            "schemathesis is not installed: `python3 -m pip install schemathesis==4.32.5` (or set SCHEMATHESIS)"
        );
    }
    let app = App::start().await;
    // Rows for the generated ids to find: ids 1..=3 of every table.
    for _ in 0..3 {
        let (_, fragments) = app.content_with_fragments(1).await;
        let asset = app
            .call(
                Some("authenticated"),
                "POST",
                &format!("/api/assets?fragment_id={}&asset_type=audio", fragments[0]),
                &[("content-type", "audio/mpeg")],
                Bytes::from_static(b"ID3 bytes"),
            )
            .await
            .json()["id"]
            .clone();
        app.create("/api/rankings", json!({"fragment_id": fragments[0], "asset_id": asset, "rank_score": "3.50", "assessed_by": "fuzz"}))
            .await;
    }
    let seed = std::env::var("FUZZ_SEED").unwrap_or_else(|_| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            .to_string()
    });
    let base = format!("http://{}", app.server.addr);
    let auth = format!("Authorization: Bearer {}", token("service_role"));
    let output = tokio::task::spawn_blocking(move || {
        Command::new(program)
            .args([
                "run",
                &format!("{base}/api/openapi.json"),
                "--url",
                &base,
                "-H",
                &auth,
            ])
            .args([
                "--checks",
                CHECKS,
                "--max-examples",
                "30",
                "--seed",
                &seed,
                "--no-color",
            ])
            .env("SCHEMATHESIS_HOOKS", "")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}\n{stderr}");
    assert!(
        output.status.success(),
        "schemathesis found failures (see above)"
    );
    let generated: usize = stdout
        .lines()
        .find_map(|line| {
            line.trim()
                .split_once(" generated")
                .and_then(|(n, _)| n.trim().parse().ok())
        })
        .expect("schemathesis reports how many cases it generated");
    assert!(
        generated >= 1000,
        "only {generated} requests were generated"
    );
}
