//! A database outage under a stream of requests: every request answers
//! promptly with success or 503 + Retry-After, the host survives, and all is
//! well again once the database is back.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;

use crate::App;

/// The longest any request may take, outage or not.
const REQUEST_BUDGET: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread")]
async fn requests_get_503_while_the_database_is_down_and_recover_after() {
    let mut app = App::start_isolated().await;
    let (content, _) = app.content_with_fragments(1).await;
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();

    let mut send = async |app: &App, n: usize| {
        let started = Instant::now();
        let reply = if n.is_multiple_of(3) {
            app.write("POST", "/api/content", &json!({"title": format!("r{n}"), "content_type": "p", "native_text": "x", "translation": "y", "ipa": "z"}))
                .await
        } else if n % 3 == 1 {
            app.get(&format!("/api/content/{content}?expand=fragments"))
                .await
        } else {
            app.get("/api/changes?limit=10").await
        };
        let took = started.elapsed();
        assert!(took < REQUEST_BUDGET, "request {n} took {took:?}");
        match reply.status {
            200 | 201 => {}
            503 => {
                assert_eq!(
                    reply.header("content-type"),
                    Some("application/problem+json")
                );
                let retry: u64 = reply
                    .header("retry-after")
                    .expect("503 carries Retry-After")
                    .parse()
                    .unwrap();
                assert!((1..=60).contains(&retry));
                assert!(!reply.text().contains("postgres://"));
            }
            other => panic!("request {n}: unexpected {other}: {}", reply.text()),
        }
        *statuses.entry(reply.status).or_default() += 1;
        reply.status
    };

    for n in 0..30 {
        assert!(send(&app, n).await < 300, "before the outage all succeed");
    }
    let cluster = app.cluster_mut();
    let mut cluster_owned = cluster.take().unwrap();
    let cluster_owned = tokio::task::spawn_blocking(move || {
        cluster_owned.stop().expect("stopping PostgreSQL");
        cluster_owned
    })
    .await
    .unwrap();
    for n in 30..90 {
        assert_eq!(send(&app, n).await, 503, "while the database is down");
    }
    let cluster_owned = tokio::task::spawn_blocking(move || {
        let mut c = cluster_owned;
        c.restart().expect("restarting PostgreSQL");
        c
    })
    .await
    .unwrap();
    *app.cluster_mut() = Some(cluster_owned);
    // Pooled connections died with the server; the first requests after the
    // restart may still meet one. Within a few seconds all must succeed.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut n = 90;
    loop {
        let status = send(&app, n).await;
        n += 1;
        if status < 300 {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery after the restart");
    }
    for m in n..n + 30 {
        assert!(send(&app, m).await < 300, "after recovery all succeed");
    }
    let health = app
        .call(None, "GET", "/api/health", &[], Bytes::new())
        .await;
    assert_eq!(health.status, 200);
    println!("outage: {statuses:?}");
}
