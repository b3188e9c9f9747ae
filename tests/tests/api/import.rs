//! Bulk import: ids and timestamps kept, all-or-nothing batches, idempotent
//! re-runs, sequences moved past the imported ids.

use bytes::Bytes;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{App, fields, problem};

async fn import(app: &App, path: &str, rows: Value) -> crate::support::Reply {
    app.call(
        Some("service_role"),
        "POST",
        path,
        &[("content-type", "application/json")],
        Bytes::from(json!({ "rows": rows }).to_string()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn imported_rows_keep_their_ids_and_timestamps() {
    let app = App::start().await;
    let content = json!([
        {"id": 100, "title": "หนึ่ง", "content_type": "phrase", "native_text": "หนึ่ง", "translation": "one", "ipa": "nɯ̀ŋ",
         "tags": ["numbers"], "created_at": "2024-01-02T03:04:05.123456Z", "updated_at": "2024-02-03T04:05:06Z"},
        {"id": 250, "title": "สอง", "content_type": "phrase", "native_text": "สอง", "translation": "two", "ipa": "sɔ̌ːŋ"}
    ]);
    let reply = import(&app, "/api/import/content", content.clone()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["imported"], 2);
    let fragments = json!([{"id": 700, "learning_content_id": 100, "native_text": "หนึ่ง", "body_text": "one", "fragment_type": "word"}]);
    assert_eq!(
        import(&app, "/api/import/fragments", fragments.clone())
            .await
            .status,
        200
    );

    let bytes = b"RIFF legacy wav bytes".to_vec();
    let asset = app
        .call(
            Some("service_role"),
            "PUT",
            "/api/import/assets/900?fragment_id=700&asset_type=audio&created_at=2024-01-02T00:00:00Z&asset_metadata=%7B%22voice%22%3A%22th%22%7D",
            &[("content-type", "audio/wav")],
            Bytes::from(bytes.clone()),
        )
        .await;
    assert_eq!(asset.status, 201, "{}", asset.text());
    assert_eq!(asset.json()["sha256"], hex::encode(Sha256::digest(&bytes)));
    assert_eq!(asset.json()["asset_metadata"], json!({"voice": "th"}));
    let rankings = json!([{"id": 5000, "fragment_id": 700, "asset_id": 900, "rank_score": 4.5, "assessed_by": "legacy"}]);
    assert_eq!(
        import(&app, "/api/import/rankings", rankings.clone())
            .await
            .status,
        200
    );

    let got = app.get("/api/content/100").await.json();
    assert_eq!(got["created_at"], "2024-01-02T03:04:05.123456Z");
    assert_eq!(got["updated_at"], "2024-02-03T04:05:06.000000Z");
    assert_eq!(
        app.get("/api/rankings/5000").await.json()["rank_score"],
        "4.50"
    );

    // A re-run changes nothing and logs nothing.
    let sql = app.sql().await;
    let log_before: i64 = sql
        .query_one("SELECT count(*) FROM change_log", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        import(&app, "/api/import/content", content).await.status,
        200
    );
    assert_eq!(
        import(&app, "/api/import/fragments", fragments)
            .await
            .status,
        200
    );
    assert_eq!(
        import(&app, "/api/import/rankings", rankings).await.status,
        200
    );
    let again = app
        .call(Some("service_role"), "PUT", "/api/import/assets/900?fragment_id=700&asset_type=audio&created_at=2024-01-02T00:00:00Z&asset_metadata=%7B%22voice%22%3A%22th%22%7D",
              &[("content-type", "audio/wav")], Bytes::from(bytes))
        .await;
    assert_eq!(again.status, 201, "{}", again.text());
    let log_after: i64 = sql
        .query_one("SELECT count(*) FROM change_log", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(log_after, log_before);
    assert_eq!(
        app.get("/api/content/100").await.json()["updated_at"],
        "2024-02-03T04:05:06.000000Z"
    );

    // Finish: new rows continue after the imported ids.
    let finish = app
        .call(
            Some("service_role"),
            "POST",
            "/api/import/finish",
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(finish.status, 200, "{}", finish.text());
    assert_eq!(finish.json()["next_ids"]["learning_content"], 251);
    let created = app.content_with_fragments(1).await;
    assert_eq!(created.0, 251);
    assert_eq!(created.1, [701]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_row_fails_its_whole_batch_naming_the_row() {
    let app = App::start().await;
    let rows = json!([
        {"id": 1, "title": "ok", "content_type": "p", "native_text": "x", "translation": "y", "ipa": "z"},
        {"id": 2, "title": "ก".repeat(201), "content_type": "p", "native_text": "x", "translation": "y", "ipa": "z"}
    ]);
    let reply = import(&app, "/api/import/content", rows).await;
    assert_eq!(fields(&problem(&reply, 422)), ["rows[1].title"]);
    let orphan = json!([{"id": 9, "learning_content_id": 12345, "native_text": "x", "body_text": "y", "fragment_type": "w"}]);
    let reply = import(&app, "/api/import/fragments", orphan).await;
    assert_eq!(
        fields(&problem(&reply, 422)),
        ["rows[0].learning_content_id"]
    );
    let no_id = json!([{"title": "t", "content_type": "p", "native_text": "x", "translation": "y", "ipa": "z"}]);
    assert_eq!(
        fields(&problem(
            &import(&app, "/api/import/content", no_id).await,
            422
        )),
        ["rows[0].id"]
    );
    let too_many: Vec<Value> = (1..=501).map(|i| json!({"id": i})).collect();
    assert_eq!(
        fields(&problem(
            &import(&app, "/api/import/content", Value::Array(too_many)).await,
            422
        )),
        ["rows"]
    );
    let count: i64 = app
        .sql()
        .await
        .query_one("SELECT count(*) FROM learning_content", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0, "nothing of a failed batch was stored");
}
