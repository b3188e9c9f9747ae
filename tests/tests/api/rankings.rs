//! Rankings: exact decimal scores, per-asset summaries, the best asset.

use bytes::Bytes;
use serde_json::json;

use crate::{App, fields, problem};

async fn audio(app: &App, fragment: i64) -> i64 {
    let reply = app
        .call(
            Some("authenticated"),
            "POST",
            &format!("/api/assets?fragment_id={fragment}&asset_type=audio"),
            &[("content-type", "audio/ogg")],
            Bytes::from(format!(
                "ogg bytes of fragment {fragment} {}",
                rand_suffix()
            )),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    reply.json()["id"].as_i64().unwrap()
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[tokio::test(flavor = "multi_thread")]
async fn scores_are_exact_two_decimal_numbers_from_0_to_5() {
    let app = App::start().await;
    let (_, fragments) = app.content_with_fragments(1).await;
    let asset = audio(&app, fragments[0]).await;
    for (given, stored) in [
        (json!("4.99"), "4.99"),
        (json!(5.00), "5.00"),
        (json!("0"), "0.00"),
        (json!(2.5), "2.50"),
    ] {
        let row = app
            .create("/api/rankings", json!({"asset_id": asset, "fragment_id": fragments[0], "rank_score": given, "assessed_by": "a"}))
            .await;
        assert_eq!(row["rank_score"], stored);
    }
    for bad in [
        json!("5.01"),
        json!(-0.01),
        json!(4.999),
        json!("abc"),
        json!(true),
        json!(1e2),
    ] {
        let reply = app
            .write(
                "POST",
                "/api/rankings",
                &json!({"asset_id": asset, "rank_score": bad, "assessed_by": "a"}),
            )
            .await;
        assert_eq!(fields(&problem(&reply, 422)), ["rank_score"], "{bad}");
    }
    let stored: String = app
        .sql()
        .await
        .query_one(
            "SELECT string_agg(rank_score::text, ',' ORDER BY id) FROM rankings",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, "4.99,5.00,0.00,2.50");
}

#[tokio::test(flavor = "multi_thread")]
async fn summaries_and_the_best_asset_follow_the_stated_rule() {
    let app = App::start().await;
    let (_, fragments) = app.content_with_fragments(1).await;
    let f = fragments[0];
    let (a, b, c, unranked) = (
        audio(&app, f).await,
        audio(&app, f).await,
        audio(&app, f).await,
        audio(&app, f).await,
    );
    let rate = |asset: i64, score: &'static str| {
        let app = &app;
        async move {
            app.create("/api/rankings", json!({"fragment_id": f, "asset_id": asset, "rank_score": score, "assessed_by": "x"}))
                .await;
        }
    };
    // a: 1, 2, 2 → mean 1.666… → "1.67"; b: 4.5, 4.5 → "4.50" (2 rankings);
    // c: 4.5 → "4.50" (1 ranking): b wins the tie on count.
    for s in ["1", "2", "2"] {
        rate(a, s).await;
    }
    rate(b, "4.5").await;
    rate(b, "4.50").await;
    rate(c, "4.50").await;

    let summary = app
        .get(&format!("/api/rankings/summary?fragment_id={f}"))
        .await;
    assert_eq!(summary.status, 200, "{}", summary.text());
    let items = summary.json()["items"].clone();
    assert_eq!(
        items,
        json!([
            {"asset_id": a, "fragment_id": f, "asset_type": "audio", "mean": "1.67", "count": 3},
            {"asset_id": b, "fragment_id": f, "asset_type": "audio", "mean": "4.50", "count": 2},
            {"asset_id": c, "fragment_id": f, "asset_type": "audio", "mean": "4.50", "count": 1},
            {"asset_id": unranked, "fragment_id": f, "asset_type": "audio", "mean": null, "count": 0},
        ])
    );
    let best = app
        .get(&format!(
            "/api/rankings/best?fragment_id={f}&asset_type=audio"
        ))
        .await
        .json();
    assert_eq!(best["asset"]["id"], b);
    assert_eq!(best["ranking"], json!({"mean": "4.50", "count": 2}));

    // Without rankings, the oldest asset is the best.
    let (_, other) = app.content_with_fragments(1).await;
    let first = audio(&app, other[0]).await;
    audio(&app, other[0]).await;
    let best = app
        .get(&format!("/api/rankings/best?fragment_id={}", other[0]))
        .await
        .json();
    assert_eq!(best["asset"]["id"], first);
    problem(
        &app.get(&format!(
            "/api/rankings/best?fragment_id={}&asset_type=video",
            other[0]
        ))
        .await,
        404,
    );
    problem(&app.get("/api/rankings/summary").await, 400);
    problem(&app.get("/api/rankings/best").await, 400);

    // Filters on the list.
    let mine = app.get(&format!("/api/rankings?asset_id={a}")).await.json();
    assert_eq!(mine["items"].as_array().unwrap().len(), 3);
}
