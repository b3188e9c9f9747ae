//! `PUT /api/rankings/mine` and `GET /api/rankings/mine`: one rating per
//! assessor and asset, the assessor taken from the token, race-free.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::{App, fields, now, problem};

fn user_token(claims: Value) -> String {
    let mut claims = claims;
    claims["exp"] = (now() + 3600).into();
    crate::project().current.sign(&claims).unwrap()
}

fn alice() -> String {
    user_token(json!({"role": "authenticated", "email": "alice@example.com", "sub": "uuid-alice"}))
}

async fn as_user(
    app: &App,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> crate::Reply {
    let auth = format!("Bearer {token}");
    let mut headers = vec![("authorization", auth.as_str())];
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    app.server
        .send(
            method.parse().unwrap(),
            path,
            &headers,
            body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string())),
        )
        .await
}

/// A content with one fragment and `n` audio assets; returns (content, fragment, assets).
async fn audio_assets(app: &App, n: usize) -> (i64, i64, Vec<i64>) {
    let (content, fragments) = app.content_with_fragments(1).await;
    let mut assets = Vec::new();
    for i in 0..n {
        let reply = app
            .call(
                Some("authenticated"),
                "POST",
                &format!("/api/assets?fragment_id={}&asset_type=audio", fragments[0]),
                &[("content-type", "audio/ogg")],
                Bytes::from(format!("clip {i} of {content}")),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text());
        assets.push(reply.json()["id"].as_i64().unwrap());
    }
    (content, fragments[0], assets)
}

async fn rows_of(app: &App, asset: i64) -> Vec<(String, String)> {
    app.sql()
        .await
        .query(
            "SELECT assessed_by, rank_score::text FROM rankings WHERE asset_id = $1 ORDER BY id",
            &[&(asset as i32)],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_rating_by_the_same_assessor_updates_the_first() {
    let app = App::start().await;
    let (_, fragment, assets) = audio_assets(&app, 1).await;
    let path = format!("/api/rankings/mine?asset_id={}", assets[0]);

    let first = as_user(&app, &alice(), "PUT", &path, Some(json!({"rank_score": 3}))).await;
    assert_eq!(first.status, 201, "{}", first.text());
    let row = first.json();
    assert_eq!(row["assessed_by"], "alice@example.com");
    assert_eq!(row["rank_score"], "3.00");
    assert_eq!(
        row["fragment_id"], fragment,
        "the asset's fragment is filled in"
    );
    assert_eq!(
        first.header("location"),
        Some(format!("/api/rankings/{}", row["id"]).as_str())
    );
    assert!(first.header("etag").is_some());

    let second = as_user(
        &app,
        &alice(),
        "PUT",
        &path,
        Some(json!({"rank_score": "4.50", "assessment_notes": "better on a second listen"})),
    )
    .await;
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(second.json()["id"], row["id"]);
    assert_eq!(
        second.json()["assessment_notes"],
        "better on a second listen"
    );
    assert!(second.header("location").is_none());

    // Notes absent from a PUT are cleared: the body is the whole rating.
    let third = as_user(
        &app,
        &alice(),
        "PUT",
        &path,
        Some(json!({"rank_score": "4.50"})),
    )
    .await;
    assert_eq!(third.json()["assessment_notes"], Value::Null);

    // Someone else's rating is a row of their own; the summary counts both.
    let bob = user_token(json!({"role": "authenticated", "sub": "uuid-bob"}));
    let theirs = as_user(&app, &bob, "PUT", &path, Some(json!({"rank_score": "1.5"}))).await;
    assert_eq!(theirs.status, 201);
    assert_eq!(
        theirs.json()["assessed_by"],
        "uuid-bob",
        "sub when there is no email"
    );
    assert_eq!(
        rows_of(&app, assets[0]).await,
        [
            ("alice@example.com".to_owned(), "4.50".to_owned()),
            ("uuid-bob".to_owned(), "1.50".to_owned())
        ]
    );
    let summary = app
        .get(&format!("/api/rankings/summary?asset_id={}", assets[0]))
        .await
        .json();
    assert_eq!(summary["items"][0]["mean"], "3.00");
    assert_eq!(summary["items"][0]["count"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_saves_leave_one_row() {
    let app = Arc::new(App::start().await);
    let (_, _, assets) = audio_assets(&app, 1).await;
    let path = format!("/api/rankings/mine?asset_id={}", assets[0]);
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..12 {
        let (app, path) = (app.clone(), path.clone());
        tasks.spawn(async move {
            let score = format!("{}.{:02}", n % 5, n);
            as_user(
                &app,
                &alice(),
                "PUT",
                &path,
                Some(json!({"rank_score": score})),
            )
            .await
            .status
        });
    }
    let mut statuses = Vec::new();
    while let Some(status) = tasks.join_next().await {
        statuses.push(status.unwrap());
    }
    statuses.sort_unstable();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        11,
        "{statuses:?}"
    );
    assert_eq!(rows_of(&app, assets[0]).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_duplicates_stay_and_the_newest_is_the_one_updated() {
    let app = App::start().await;
    let (_, _, assets) = audio_assets(&app, 1).await;
    let sql = app.sql().await;
    for score in ["1.00", "2.00"] {
        sql.execute(
            "INSERT INTO rankings (asset_id, rank_score, assessed_by) VALUES ($1, $2::text::numeric, 'alice@example.com')",
            &[&(assets[0] as i32), &score],
        )
        .await
        .unwrap();
    }
    let reply = as_user(
        &app,
        &alice(),
        "PUT",
        &format!("/api/rankings/mine?asset_id={}", assets[0]),
        Some(json!({"rank_score": 5})),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let scores: Vec<String> = rows_of(&app, assets[0])
        .await
        .into_iter()
        .map(|r| r.1)
        .collect();
    assert_eq!(scores, ["1.00", "5.00"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn mine_lists_only_the_callers_rankings_in_the_scope_asked() {
    let app = App::start().await;
    let (content, fragment, assets) = audio_assets(&app, 2).await;
    let (_, _, elsewhere) = audio_assets(&app, 1).await;
    for asset in [assets[0], assets[1], elsewhere[0]] {
        let reply = as_user(
            &app,
            &alice(),
            "PUT",
            &format!("/api/rankings/mine?asset_id={asset}"),
            Some(json!({"rank_score": 4})),
        )
        .await;
        assert_eq!(reply.status, 201);
    }
    app.create(
        "/api/rankings",
        json!({"asset_id": assets[0], "rank_score": 1, "assessed_by": "someone else"}),
    )
    .await;
    for (query, expected) in [
        (format!("content_id={content}"), vec![assets[0], assets[1]]),
        (
            format!("fragment_id={fragment}"),
            vec![assets[0], assets[1]],
        ),
        (format!("asset_id={}", assets[1]), vec![assets[1]]),
    ] {
        let reply = as_user(
            &app,
            &alice(),
            "GET",
            &format!("/api/rankings/mine?{query}"),
            None,
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let body = reply.json();
        assert_eq!(body["assessed_by"], "alice@example.com");
        let got: Vec<i64> = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["asset_id"].as_i64().unwrap())
            .collect();
        assert_eq!(got, expected, "{query}");
    }
    for bad in [
        "",
        "?content_id=1&asset_id=1",
        "?content_id=0",
        "?assessed_by=x",
    ] {
        let reply = as_user(
            &app,
            &alice(),
            "GET",
            &format!("/api/rankings/mine{bad}"),
            None,
        )
        .await;
        problem(&reply, 400);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_are_problems_that_name_the_field() {
    let app = App::start().await;
    let (_, _, assets) = audio_assets(&app, 1).await;
    let path = format!("/api/rankings/mine?asset_id={}", assets[0]);
    let put = |token: String, path: String, body: Value| {
        let app = &app;
        async move { as_user(app, &token, "PUT", &path, Some(body)).await }
    };

    // Who rates comes from the token, never from the body.
    let reply = put(
        alice(),
        path.clone(),
        json!({"rank_score": 4, "assessed_by": "mallory"}),
    )
    .await;
    assert_eq!(fields(&problem(&reply, 422)), ["assessed_by"]);
    let reply = put(
        alice(),
        path.clone(),
        json!({"rank_score": 4, "asset_id": 1}),
    )
    .await;
    assert_eq!(fields(&problem(&reply, 422)), ["asset_id"]);
    for body in [
        json!({}),
        json!({"rank_score": null}),
        json!({"assessment_notes": "x"}),
    ] {
        let reply = put(alice(), path.clone(), body).await;
        assert_eq!(fields(&problem(&reply, 422)), ["rank_score"]);
    }
    for score in [json!("5.5"), json!(-1), json!("4.555"), json!(true)] {
        let reply = put(alice(), path.clone(), json!({"rank_score": score})).await;
        assert_eq!(fields(&problem(&reply, 422)), ["rank_score"], "{score}");
    }
    let reply = put(
        alice(),
        path.clone(),
        json!({"rank_score": 1, "assessment_notes": 7}),
    )
    .await;
    assert_eq!(fields(&problem(&reply, 422)), ["assessment_notes"]);
    let reply = put(
        alice(),
        "/api/rankings/mine".into(),
        json!({"rank_score": 1}),
    )
    .await;
    assert_eq!(fields(&problem(&reply, 400)), ["asset_id"]);
    let reply = put(
        alice(),
        "/api/rankings/mine?asset_id=999999".into(),
        json!({"rank_score": 1}),
    )
    .await;
    problem(&reply, 404);
    let reply = app
        .server
        .send(
            http::Method::PUT,
            &path,
            &[
                ("authorization", &format!("Bearer {}", alice())),
                ("content-type", "text/plain"),
            ],
            Bytes::from("4"),
        )
        .await;
    problem(&reply, 415);

    // A token that names nobody, an anon token, no token.
    let nobody = user_token(json!({"role": "authenticated"}));
    let reply = put(nobody, path.clone(), json!({"rank_score": 1})).await;
    assert!(
        problem(&reply, 403)["detail"]
            .as_str()
            .unwrap()
            .contains("names no user")
    );
    let anon = user_token(json!({"role": "anon", "sub": "x"}));
    problem(
        &put(anon, path.clone(), json!({"rank_score": 1})).await,
        403,
    );
    let reply = app.call(None, "PUT", &path, &[], Bytes::new()).await;
    problem(&reply, 401);
    assert!(
        rows_of(&app, assets[0]).await.is_empty(),
        "nothing was stored"
    );
}
