//! Content and fragments: CRUD, conditional requests, filters, pagination,
//! the expanded read.

use std::collections::BTreeSet;

use bytes::Bytes;
use serde_json::json;

use crate::{App, fields, problem};

/// Thai with tone marks and above/below vowels (combining characters).
const THAI: &str = "ผู้หญิงคนนั้นกำลังพูดภาษาไทยอย่างคล่องแคล่ว";

#[tokio::test(flavor = "multi_thread")]
async fn content_lifecycle_with_etags() {
    let app = App::start().await;
    // Raw text: a JSON value built in Rust would turn 1.50 into 1.5.
    let body = format!(
        r#"{{"title": "ผู้หญิง", "content_type": "sentence", "native_text": "{THAI}",
            "translation": "That woman speaks Thai fluently", "ipa": "pʰûː.jǐŋ",
            "tags": ["people", "ภาษา"], "content_metadata": {{"level": 2, "score": 1.50, "nested": {{"b": [1, 2]}}}},
            "difficulty_level": 3}}"#
    );
    let created = app
        .call(
            Some("authenticated"),
            "POST",
            "/api/content",
            &[("content-type", "application/json")],
            Bytes::from(body),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let row = created.json();
    let id = row["id"].as_i64().unwrap();
    assert_eq!(
        created.header("location"),
        Some(format!("/api/content/{id}").as_str())
    );
    let etag = created.header("etag").unwrap().to_owned();
    assert_eq!(row["native_text"], THAI, "Thai arrives byte-identical");
    assert_eq!(row["language"], "thai", "the schema's default");
    assert_eq!(
        row["content_metadata"],
        serde_json::from_str::<serde_json::Value>(
            r#"{"level": 2, "score": 1.50, "nested": {"b": [1, 2]}}"#
        )
        .unwrap()
    );
    assert_eq!(
        row["content_metadata"]["score"].to_string(),
        "1.50",
        "JSON numbers keep their digits"
    );
    assert!(row["created_at"].as_str().unwrap().ends_with('Z'));

    let got = app.get(&format!("/api/content/{id}")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json(), row);
    assert_eq!(got.header("etag"), Some(etag.as_str()));
    let raw = app
        .sql()
        .await
        .query_one(
            "SELECT native_text FROM learning_content WHERE id = $1",
            &[&(id as i32)],
        )
        .await
        .unwrap()
        .get::<_, String>(0);
    assert_eq!(raw.as_bytes(), THAI.as_bytes());

    let not_modified = app
        .call(
            Some("anon"),
            "GET",
            &format!("/api/content/{id}"),
            &[("if-none-match", &etag)],
            Bytes::new(),
        )
        .await;
    assert_eq!(not_modified.status, 304);
    assert!(not_modified.body.is_empty());

    // PATCH: absent members stay, null clears, the ETag changes.
    let patched = app
        .call(
            Some("authenticated"),
            "PATCH",
            &format!("/api/content/{id}"),
            &[("content-type", "application/json"), ("if-match", &etag)],
            Bytes::from(json!({"title": "ผู้หญิงคนนั้น", "difficulty_level": null}).to_string()),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text());
    let after = patched.json();
    assert_eq!(after["title"], "ผู้หญิงคนนั้น");
    assert_eq!(after["difficulty_level"], json!(null));
    assert_eq!(after["native_text"], THAI);
    assert_eq!(after["tags"], json!(["people", "ภาษา"]));
    let new_etag = patched.header("etag").unwrap().to_owned();
    assert_ne!(new_etag, etag);

    // The old ETag is stale now: 412 for PATCH and DELETE, nothing changes.
    for method in ["PATCH", "DELETE"] {
        let stale = app
            .call(
                Some("authenticated"),
                method,
                &format!("/api/content/{id}"),
                &[("content-type", "application/json"), ("if-match", &etag)],
                Bytes::from(json!({"title": "lost update"}).to_string()),
            )
            .await;
        problem(&stale, 412);
    }
    assert_eq!(
        app.get(&format!("/api/content/{id}")).await.json()["title"],
        "ผู้หญิงคนนั้น"
    );

    let invalid = app
        .write(
            "PATCH",
            &format!("/api/content/{id}"),
            &json!({"titel": "typo"}),
        )
        .await;
    assert_eq!(fields(&problem(&invalid, 422)), ["titel"]);
    let read_only = app
        .write(
            "PATCH",
            &format!("/api/content/{id}"),
            &json!({"created_at": "2020-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(fields(&problem(&read_only, 422)), ["created_at"]);

    let deleted = app
        .call(
            Some("authenticated"),
            "DELETE",
            &format!("/api/content/{id}"),
            &[("if-match", &new_etag)],
            Bytes::new(),
        )
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    problem(&app.get(&format!("/api/content/{id}")).await, 404);
    problem(
        &app.call(
            Some("authenticated"),
            "DELETE",
            &format!("/api/content/{id}"),
            &[],
            Bytes::new(),
        )
        .await,
        404,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn create_validates_every_field() {
    let app = App::start().await;
    let base = json!({"title": "t", "content_type": "phrase", "native_text": "น้ำ", "translation": "water", "ipa": "náːm"});
    let cases = [
        (json!({"title": "t"}), "content_type"),
        (
            json!({"title": "ก".repeat(201), "content_type": "p", "native_text": "x", "translation": "y", "ipa": "z"}),
            "title",
        ),
        (
            json!({"title": 5, "content_type": "p", "native_text": "x", "translation": "y", "ipa": "z"}),
            "title",
        ),
        (
            json!({"title": null, "content_type": "p", "native_text": "x", "translation": "y", "ipa": "z"}),
            "title",
        ),
        (
            json!({"title": "t", "content_type": "p", "native_text": "a\u{0}b", "translation": "y", "ipa": "z"}),
            "native_text",
        ),
        (
            json!({"title": "t", "content_type": "p", "native_text": "x", "translation": "y", "ipa": "z", "difficulty_level": 2.5}),
            "difficulty_level",
        ),
        (
            json!({"title": "t", "content_type": "p", "native_text": "x", "translation": "y", "ipa": "z", "difficulty_level": 99999999999_i64}),
            "difficulty_level",
        ),
        (
            json!({"title": "t", "content_type": "p", "native_text": "x", "translation": "y", "ipa": "z", "id": 7}),
            "id",
        ),
        (
            json!({"title": "t", "content_type": "p", "native_text": "x", "translation": "y", "ipa": "z", "surprise": 1}),
            "surprise",
        ),
        (
            json!({"title": "t", "content_type": "p", "native_text": "x", "translation": "y", "ipa": "z", "language": "far-too-long"}),
            "language",
        ),
    ];
    for (body, field) in cases {
        let reply = app.write("POST", "/api/content", &body).await;
        assert_eq!(fields(&problem(&reply, 422)), [field], "{body}");
    }
    // Not JSON, not an object, not application/json.
    let broken = app
        .call(
            Some("authenticated"),
            "POST",
            "/api/content",
            &[("content-type", "application/json")],
            Bytes::from("{\"title\": "),
        )
        .await;
    problem(&broken, 400);
    problem(
        &app.write("POST", "/api/content", &json!([1, 2])).await,
        422,
    );
    let form = app
        .call(
            Some("authenticated"),
            "POST",
            "/api/content",
            &[("content-type", "text/plain")],
            Bytes::from(base.to_string()),
        )
        .await;
    problem(&form, 415);
    let count: i64 = app
        .sql()
        .await
        .query_one("SELECT count(*) FROM learning_content", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0, "nothing refused was stored");
    // SQL in a value is only text.
    let injection = app
        .create("/api/content", json!({"title": "'); DROP TABLE learning_content; --", "content_type": "p", "native_text": "x", "translation": "y", "ipa": "z"}))
        .await;
    assert_eq!(injection["title"], "'); DROP TABLE learning_content; --");
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_filter_and_page_without_losing_or_repeating_rows() {
    let app = App::start().await;
    let mut expected_food = BTreeSet::new();
    for n in 0..23 {
        let food = n % 3 == 0;
        let row = app
            .create(
                "/api/content",
                json!({
                    "title": format!("เรื่อง {n}"),
                    "content_type": if n % 2 == 0 { "phrase" } else { "dialogue" },
                    "language": if n == 5 { "lao" } else { "thai" },
                    "native_text": if n == 7 { "ข้าวเหนียวมะม่วง".to_owned() } else { format!("ข้อความ {n}") },
                    "translation": format!("text {n}"), "ipa": "x",
                    "tags": if food { json!(["food", "daily"]) } else { json!(["daily"]) },
                }),
            )
            .await;
        if food {
            expected_food.insert(row["id"].as_i64().unwrap());
        }
    }
    // All pages of 5: 23 rows, each once, in id order.
    let mut seen = Vec::new();
    let mut path = "/api/content?limit=5".to_owned();
    loop {
        let page = app.get(&path).await;
        assert_eq!(page.status, 200, "{}", page.text());
        let body = page.json();
        let items = body["items"].as_array().unwrap();
        assert!(items.len() <= 5);
        seen.extend(items.iter().map(|i| i["id"].as_i64().unwrap()));
        match body["next"].as_str() {
            Some(next) => path = format!("/api/content?limit=5&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 23);
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "stable id order, no repeats: {seen:?}"
    );

    let ids = |body: serde_json::Value| -> BTreeSet<i64> {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(
        ids(app.get("/api/content?tag=food&limit=500").await.json()),
        expected_food
    );
    assert_eq!(
        ids(app.get("/api/content?content_type=dialogue").await.json()).len(),
        11
    );
    assert_eq!(
        ids(app.get("/api/content?language=lao").await.json()).len(),
        1
    );
    let found = app
        .get("/api/content?q=%E0%B8%A1%E0%B8%B0%E0%B8%A1%E0%B9%88%E0%B8%A7%E0%B8%87")
        .await
        .json(); // มะม่วง
    assert_eq!(found["items"].as_array().unwrap().len(), 1);
    assert_eq!(found["items"][0]["native_text"], "ข้าวเหนียวมะม่วง");
    assert_eq!(
        ids(app.get("/api/content?q=TEXT%201").await.json()).len(),
        1 + 10,
        "case-insensitive: text 1, 10..19"
    );

    for bad in [
        "/api/content?limit=0",
        "/api/content?limit=501",
        "/api/content?limit=-1",
        "/api/content?limit=abc",
        "/api/content?cursor=not-a-cursor",
        "/api/content?colour=red",
        "/api/content?tag=a&tag=b",
    ] {
        problem(&app.get(bad).await, 400);
    }
    // Fragments filter by their content.
    let (content, fragment_ids) = app.content_with_fragments(3).await;
    let listed = app
        .get(&format!("/api/fragments?learning_content_id={content}"))
        .await
        .json();
    let got: Vec<i64> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect();
    assert_eq!(got, fragment_ids);
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_content_cascades_and_expand_shows_the_tree() {
    let app = App::start().await;
    let (content, fragments) = app.content_with_fragments(2).await;
    let upload = app
        .call(
            Some("authenticated"),
            "POST",
            &format!("/api/assets?fragment_id={}&asset_type=audio", fragments[0]),
            &[("content-type", "audio/mpeg")],
            Bytes::from_static(b"ID3 fake mp3 bytes"),
        )
        .await;
    assert_eq!(upload.status, 201, "{}", upload.text());
    let asset = upload.json()["id"].as_i64().unwrap();
    for score in ["4.00", "5.00", "4.50"] {
        app.create("/api/rankings", json!({"fragment_id": fragments[0], "asset_id": asset, "rank_score": score, "assessed_by": "nok"}))
            .await;
    }

    let tree = app
        .get(&format!("/api/content/{content}?expand=fragments"))
        .await;
    assert_eq!(tree.status, 200, "{}", tree.text());
    let body = tree.json();
    assert_eq!(body["id"], content);
    let listed: Vec<i64> = body["fragments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, fragments);
    let assets = body["fragments"][0]["assets"].as_array().unwrap();
    assert_eq!(assets.len(), 1);
    assert_eq!(assets[0]["id"], asset);
    assert_eq!(assets[0]["content_type"], "audio/mpeg");
    assert_eq!(assets[0]["ranking"], json!({"mean": "4.50", "count": 3}));
    assert!(assets[0].get("asset_data").is_none(), "metadata only");
    assert_eq!(body["fragments"][1]["assets"], json!([]));
    problem(
        &app.get(&format!("/api/content/{content}?expand=everything"))
            .await,
        400,
    );

    assert_eq!(
        app.call(
            Some("authenticated"),
            "DELETE",
            &format!("/api/content/{content}"),
            &[],
            bytes::Bytes::new()
        )
        .await
        .status,
        204
    );
    problem(
        &app.get(&format!("/api/fragments/{}", fragments[0])).await,
        404,
    );
    problem(&app.get(&format!("/api/assets/{asset}")).await, 404);
    let left: i64 = app
        .sql()
        .await
        .query_one("SELECT count(*) FROM rankings", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn ids_in_paths_and_methods_are_checked() {
    let app = App::start().await;
    // Expanding a content whose fragments have no assets (an empty result
    // set carries no column list on Spin hosts).
    let (bare, bare_fragments) = app.content_with_fragments(2).await;
    let tree = app
        .get(&format!("/api/content/{bare}?expand=fragments"))
        .await;
    assert_eq!(tree.status, 200, "{}", tree.text());
    assert_eq!(
        tree.json()["fragments"].as_array().unwrap().len(),
        bare_fragments.len()
    );
    assert_eq!(tree.json()["fragments"][0]["assets"], json!([]));
    for path in [
        "/api/content/abc",
        "/api/content/0",
        "/api/content/-3",
        "/api/content/99999999999",
        "/api/content/..%2F..%2Fetc",
    ] {
        problem(&app.get(path).await, 404);
    }
    let put = app.write("PUT", "/api/content/1", &json!({})).await;
    let body = problem(&put, 405);
    assert!(body["detail"].is_string());
    let allow = put.header("allow").unwrap();
    assert!(
        allow.contains("PATCH") && allow.contains("DELETE"),
        "{allow}"
    );
    // A fragment pointing at a missing content is refused on its field.
    let orphan = app
        .write("POST", "/api/fragments", &json!({"learning_content_id": 424242, "native_text": "x", "body_text": "y", "fragment_type": "word"}))
        .await;
    assert_eq!(fields(&problem(&orphan, 422)), ["learning_content_id"]);
}
