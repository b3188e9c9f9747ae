//! The change feed: snapshot, then the log in commit-safe order, with
//! tombstones; late commits are never skipped; pruned cursors re-snapshot.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

use crate::{App, problem};

/// Follows the feed from `cursor` until it has no more; returns the changes
/// as (table, op, id) and the last cursor.
async fn drain(
    app: &App,
    cursor: Option<&str>,
    limit: usize,
) -> (Vec<(String, String, i64)>, Vec<Value>, String) {
    let mut cursor = cursor.map(str::to_owned);
    let mut seen = Vec::new();
    let mut pages = Vec::new();
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/changes?limit={limit}&cursor={c}"),
            None => format!("/api/changes?limit={limit}"),
        };
        let reply = app.get(&path).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let page = reply.json();
        for change in page["changes"].as_array().unwrap() {
            seen.push((
                change["table"].as_str().unwrap().to_owned(),
                change["op"].as_str().unwrap().to_owned(),
                change["id"].as_i64().unwrap(),
            ));
        }
        cursor = Some(page["next_cursor"].as_str().unwrap().to_owned());
        let more = page["has_more"].as_bool().unwrap();
        pages.push(page);
        if !more {
            return (seen, pages, cursor.unwrap());
        }
    }
}

/// Uploads a few bytes of audio for `fragment`; returns the asset's id.
async fn audio(app: &App, fragment: i64) -> i64 {
    app.call(
        Some("authenticated"),
        "POST",
        &format!("/api/assets?fragment_id={fragment}&asset_type=audio"),
        &[("content-type", "audio/mpeg")],
        Bytes::from_static(b"mp3"),
    )
    .await
    .json()["id"]
        .as_i64()
        .unwrap()
}

fn change(table: &str, op: &str, id: i64) -> (String, String, i64) {
    (table.to_owned(), op.to_owned(), id)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_then_the_log_with_tombstones() {
    let app = App::start_isolated().await;
    let (content, fragments) = app.content_with_fragments(2).await;
    let asset = audio(&app, fragments[0]).await;
    let ranking = app
        .create("/api/rankings", json!({"fragment_id": fragments[0], "asset_id": asset, "rank_score": "3.25", "assessed_by": "a"}))
        .await["id"]
        .as_i64()
        .unwrap();

    let (snapshot, pages, cursor) = drain(&app, None, 2).await;
    assert_eq!(
        snapshot,
        [
            change("learning_content", "upsert", content),
            change("content_fragments", "upsert", fragments[0]),
            change("content_fragments", "upsert", fragments[1]),
            change("fragment_assets", "upsert", asset),
            change("rankings", "upsert", ranking),
        ],
        "every row once, parents first"
    );
    assert!(
        pages
            .iter()
            .all(|p| p["changes"].as_array().unwrap().len() <= 2)
    );
    assert_eq!(pages.first().unwrap()["phase"], "snapshot");
    assert_eq!(pages.last().unwrap()["phase"], "log");
    let asset_row = pages
        .iter()
        .flat_map(|p| p["changes"].as_array().unwrap().clone())
        .find(|c| c["table"] == "fragment_assets")
        .unwrap();
    assert_eq!(asset_row["row"]["sha256"].as_str().unwrap().len(), 64);
    assert!(
        asset_row["row"].get("asset_data").is_none(),
        "no bytes in the feed"
    );
    let ranking_row = pages
        .iter()
        .flat_map(|p| p["changes"].as_array().unwrap().clone())
        .find(|c| c["table"] == "rankings")
        .unwrap();
    assert_eq!(ranking_row["row"]["rank_score"], "3.25");

    // Changes after the snapshot arrive from the log, in order.
    app.write(
        "PATCH",
        &format!("/api/content/{content}"),
        &json!({"title": "ใหม่"}),
    )
    .await;
    app.call(
        Some("authenticated"),
        "DELETE",
        &format!("/api/fragments/{}", fragments[0]),
        &[],
        Bytes::new(),
    )
    .await;
    let newer = app.content_with_fragments(0).await.0;
    let (log, pages, _) = eventually(&app, &cursor, 5).await;
    let mut cascade: Vec<_> = log[1..4].to_vec();
    cascade.sort();
    assert_eq!(log[0], change("learning_content", "upsert", content));
    assert_eq!(
        cascade,
        [
            change("content_fragments", "delete", fragments[0]),
            change("fragment_assets", "delete", asset),
            change("rankings", "delete", ranking),
        ]
    );
    assert_eq!(log[4], change("learning_content", "upsert", newer));
    assert_eq!(log.len(), 5);
    let updated = pages
        .iter()
        .flat_map(|p| p["changes"].as_array().unwrap().clone())
        .find(|c| c["id"] == content)
        .unwrap();
    assert_eq!(updated["row"]["title"], "ใหม่");

    problem(&app.get("/api/changes?cursor=garbage").await, 400);
    assert_eq!(app.get("/api/changes?limit=5000").await.status, 200);
    problem(&app.get("/api/changes?limit=5001").await, 400);
}

/// Drains from `cursor` until at least `want` changes came (other tests'
/// transactions in the same cluster may hold the feed back for a moment).
async fn eventually(
    app: &App,
    cursor: &str,
    want: usize,
) -> (Vec<(String, String, i64)>, Vec<Value>, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut all = Vec::new();
    let mut pages = Vec::new();
    let mut cursor = cursor.to_owned();
    loop {
        let (seen, more_pages, next) = drain(app, Some(&cursor), 100).await;
        all.extend(seen);
        pages.extend(more_pages);
        cursor = next;
        if all.len() >= want || Instant::now() > deadline {
            return (all, pages, cursor);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_late_commit_is_delivered_not_skipped() {
    let app = App::start().await;
    let (_, _, cursor) = drain(&app, None, 100).await;
    let mut sql = app.sql().await;
    let slow = sql.transaction().await.unwrap();
    let slow_id: i32 = slow
        .query_one(
            "INSERT INTO learning_content (title, content_type, native_text, translation, ipa)
             VALUES ('ช้า', 'phrase', 'ช้า', 'slow', 'cʰáː') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let fast = app.content_with_fragments(0).await.0;
    // The fast row committed, but the slow transaction is older and open:
    // nothing after it may be handed out yet.
    let (held, _, held_cursor) = drain(&app, Some(&cursor), 100).await;
    assert!(
        held.is_empty(),
        "handed out past an open transaction: {held:?}"
    );
    assert_eq!(held_cursor, cursor, "the cursor does not move past it");
    slow.commit().await.unwrap();
    let (log, _, _) = eventually(&app, &cursor, 2).await;
    assert_eq!(
        log,
        [
            change("learning_content", "upsert", i64::from(slow_id)),
            change("learning_content", "upsert", fast),
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cursor_behind_the_pruned_log_is_told_to_resnapshot() {
    let app = App::start().await;
    let (_, _, cursor) = drain(&app, None, 100).await;
    app.content_with_fragments(1).await;
    let sql = app.sql().await;
    // Prune until the entries behind the cursor are gone (other tests'
    // open transactions can keep them for a moment).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let removed: i64 = sql
            .query_one("SELECT prune_change_log(interval '0 seconds')", &[])
            .await
            .unwrap()
            .get(0);
        if removed > 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let expired = app.get(&format!("/api/changes?cursor={cursor}")).await;
    let body = problem(&expired, 410);
    assert_eq!(
        body["type"],
        "https://thai-content.dev/problems/cursor-expired"
    );
    // Starting over works and delivers the current rows.
    let (fresh, _, _) = drain(&app, None, 100).await;
    assert_eq!(fresh.len(), 2);
}

/// The feed's rows are made by PostgreSQL as JSON text, the API's GET
/// builds them from values: both must say the same for every kind of field
/// (texts that need escaping, JSON with exact decimals, nulls, scores,
/// timestamps), in the snapshot and in the log.
#[tokio::test(flavor = "multi_thread")]
async fn feed_rows_equal_the_rows_get_returns_for_every_kind() {
    let app = App::start_isolated().await;
    let awkward = "\"quoted\" \\ back\u{1}slash\ttab\nline ภาษาไทย 🐘 </script>";
    let content = app
        .create(
            "/api/content",
            json!({
                "title": awkward, "content_type": "phrase", "native_text": "สวัสดี",
                "translation": "hello", "ipa": "sa.wàt.diː", "difficulty_level": 3,
                "tags": ["greeting", 1.50, {"deep": [null, true, 12345678901234567890_u64]}],
                "content_metadata": null
            }),
        )
        .await["id"]
        .as_i64()
        .unwrap();
    let fragment = app
        .create(
            "/api/fragments",
            json!({
                "learning_content_id": content, "native_text": awkward, "body_text": "",
                "fragment_type": "word", "fragment_metadata": {"n": -0.000100, "s": "é"}
            }),
        )
        .await["id"]
        .as_i64()
        .unwrap();
    let asset = audio(&app, fragment).await;
    let ranking = app
        .create(
            "/api/rankings",
            json!({"fragment_id": fragment, "asset_id": asset, "rank_score": "4.50",
                   "assessed_by": awkward, "assessment_notes": null}),
        )
        .await["id"]
        .as_i64()
        .unwrap();
    let paths = [
        ("learning_content", "content", content),
        ("content_fragments", "fragments", fragment),
        ("fragment_assets", "assets", asset),
        ("rankings", "rankings", ranking),
    ];
    let (_, pages, cursor) = drain(&app, None, 3).await;
    same_as_get(&app, &paths, &pages, "snapshot").await;
    assert_eq!(
        pages
            .iter()
            .find_map(|p| {
                p["changes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|c| c["table"] == "learning_content")
                    .cloned()
            })
            .unwrap()["row"]["title"],
        awkward
    );

    // Each row changed once more: now they come from the log.
    for (_, path, id) in paths {
        let body = match path {
            "content" => json!({"content_metadata": {"k": [1e3, "ß"]}}),
            "fragments" => json!({"extra": "x\"y"}),
            "assets" => json!({"asset_metadata": {"voice": "th-TH"}}),
            _ => json!({"rank_score": "0.25"}),
        };
        let reply = app
            .write("PATCH", &format!("/api/{path}/{id}"), &body)
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let (_, pages, _) = eventually(&app, &cursor, 4).await;
    same_as_get(&app, &paths, &pages, "log").await;
}

/// Asserts that the last change of each (table, path, id) among the pages
/// of `phase` carries the row `GET /api/<path>/<id>` returns now.
async fn same_as_get(app: &App, rows: &[(&str, &str, i64)], pages: &[Value], phase: &str) {
    let changes: Vec<Value> = pages
        .iter()
        .filter(|p| p["phase"] == phase)
        .flat_map(|p| p["changes"].as_array().unwrap().clone())
        .collect();
    for (table, path, id) in rows {
        let fed = changes
            .iter()
            .rev()
            .find(|c| c["table"] == *table && c["id"] == *id)
            .unwrap_or_else(|| panic!("{table} {id} is not in the {phase}"));
        let got = app.get(&format!("/api/{path}/{id}")).await.json();
        assert_eq!(fed["row"], got, "{table} in the {phase}");
    }
}
