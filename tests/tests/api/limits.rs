//! Resource limits: a body over a route's limit is refused before it is
//! read whole, whether its length is declared or it comes chunked, and
//! nothing is read at all for a caller whose token fails.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use crate::bad_input::state;
use crate::support::parse_reply;
use crate::{App, MAX_ASSET_BYTES, problem, token};

/// What each hostile body would send if it were read to its end: far
/// beyond any limit, so reading it whole would take minutes and gigabytes.
const ENDLESS: u64 = 4 << 30;

/// How much of a refused body may have left the client: the route's limit
/// plus what the sockets and the host buffer on the way.
const SLACK: u64 = 16 << 20;

struct Outcome {
    status: u16,
    content_type: Option<String>,
    body: serde_json::Value,
    /// Body bytes written to the socket before the answer came.
    sent: u64,
}

/// Sends a body of [`ENDLESS`] bytes, chunked or with its length declared,
/// over a raw connection that behaves as RFC 9112 §9.6 asks of a client:
/// it keeps watching for an answer while it writes and stops writing as
/// soon as one arrives. What it wrote by then is what the server let in
/// (bounded by the kernel's socket buffers), so a server that read the
/// body whole would show here as gigabytes or a timeout.
async fn send_endless(
    app: &App,
    method: &str,
    path: &str,
    auth: Option<String>,
    content_type: &str,
    declared: bool,
) -> Outcome {
    let mut stream = tokio::net::TcpStream::connect(app.server.addr)
        .await
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: {content_type}\r\n",
        app.server.addr
    );
    head += &if declared {
        format!("content-length: {ENDLESS}\r\n")
    } else {
        "transfer-encoding: chunked\r\n".to_owned()
    };
    if let Some(auth) = auth {
        head += &format!("authorization: {auth}\r\n");
    }
    head += "\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();

    const CHUNK: usize = 64 << 10;
    let frame: Vec<u8> = if declared {
        vec![b'x'; CHUNK]
    } else {
        [format!("{CHUNK:x}\r\n").as_bytes(), &[b'x'; CHUNK], b"\r\n"].concat()
    };
    let mut sent = 0u64;
    let mut offset = 0;
    let mut refused = false;
    let mut response = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let answer = loop {
        let writing = response.is_empty() && !refused && sent < ENDLESS;
        tokio::select! {
            biased;
            () = tokio::time::sleep_until(deadline) => panic!("no answer within a minute: the body must not be read whole"),
            ready = stream.readable() => {
                ready.unwrap();
                match stream.try_read_buf(&mut response) {
                    Ok(0) => break parse(&response).expect("the server closed before answering"),
                    Ok(_) => if let Some(answer) = parse(&response) { break answer },
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("reading the answer: {e}"),
                }
            }
            ready = stream.writable(), if writing => {
                ready.unwrap();
                match stream.try_write(&frame[offset..]) {
                    Ok(n) => {
                        offset += n;
                        if offset == frame.len() {
                            offset = 0;
                            sent += CHUNK as u64;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    // The server stopped reading and closed: the answer is
                    // in the receive buffer or on its way.
                    Err(_) => refused = true,
                }
            }
        }
    };
    Outcome { sent, ..answer }
}

/// A whole HTTP/1.1 answer, once all of it is in.
fn parse(bytes: &[u8]) -> Option<Outcome> {
    let reply = parse_reply(bytes)?;
    Some(Outcome {
        status: reply.status,
        content_type: reply.header("content-type").map(str::to_owned),
        body: serde_json::from_slice(&reply.body).unwrap_or(serde_json::Value::Null),
        sent: 0,
    })
}

fn bearer(role: &str) -> Option<String> {
    Some(format!("Bearer {}", token(role)))
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_over_the_limit_are_refused_before_they_are_read_whole() {
    let app = App::start().await;
    let (_, fragments) = app.content_with_fragments(1).await;
    let upload = format!("/api/assets?fragment_id={}&asset_type=audio", fragments[0]);
    let before = state(&app).await;

    let import = format!("{upload}&created_by=legacy");
    let json = api_core::router::MAX_JSON_BYTES as u64;
    let asset = MAX_ASSET_BYTES as u64;
    // (method, route, role, content type, limit of that route)
    let routes = [
        (
            "POST",
            upload.as_str(),
            "authenticated",
            "audio/mpeg",
            asset,
        ),
        (
            "PUT",
            &import.replace("/api/assets?", "/api/import/assets/900?"),
            "service_role",
            "audio/mpeg",
            asset,
        ),
        (
            "POST",
            "/api/content",
            "authenticated",
            "application/json",
            json,
        ),
        (
            "PATCH",
            "/api/content/1",
            "authenticated",
            "application/json",
            json,
        ),
        (
            "PUT",
            "/api/rankings/mine",
            "authenticated",
            "application/json",
            json,
        ),
        (
            "POST",
            "/api/import/content",
            "service_role",
            "application/json",
            json,
        ),
    ];
    for (method, path, role, content_type, limit) in routes {
        for declared in [true, false] {
            let out = send_endless(&app, method, path, bearer(role), content_type, declared).await;
            let what = format!(
                "{method} {path} ({})",
                if declared {
                    "length declared"
                } else {
                    "chunked"
                }
            );
            assert_eq!(out.status, 413, "{what}: {}", out.body);
            assert_eq!(
                out.content_type.as_deref(),
                Some("application/problem+json"),
                "{what}"
            );
            assert_eq!(
                out.body["errors"][0]["field"], "body",
                "{what}: {}",
                out.body
            );
            assert!(
                out.body["detail"]
                    .as_str()
                    .unwrap()
                    .contains(&limit.to_string()),
                "{what}: {}",
                out.body
            );
            let ceiling = if declared { SLACK } else { limit + SLACK };
            assert!(
                out.sent < ceiling,
                "{what}: {} bytes left the client before the refusal (ceiling {ceiling})",
                out.sent
            );
        }
    }
    // A caller without a valid token gets nothing read at all.
    for auth in [None, Some("Bearer not-a-token".to_owned()), bearer("anon")] {
        let out = send_endless(&app, "POST", &upload, auth.clone(), "audio/mpeg", false).await;
        assert!(matches!(out.status, 401 | 403), "{auth:?}: {}", out.body);
        assert!(out.sent < SLACK, "{auth:?}: {} bytes read", out.sent);
    }
    assert_eq!(
        state(&app).await,
        before,
        "a refused body changed the database"
    );

    // The limits are limits, not bans: a body of exactly the limit is taken.
    for (size, status) in [(MAX_ASSET_BYTES, 201), (MAX_ASSET_BYTES + 1, 413)] {
        let body = Bytes::from(vec![7u8; size]);
        let headers = [("content-type", "audio/mpeg")];
        let reply = app
            .call(Some("authenticated"), "POST", &upload, &headers, body)
            .await;
        if status == 413 {
            problem(&reply, 413);
        }
        assert_eq!(reply.status, status, "{size} bytes: {}", reply.text());
    }
}

/// Follows `next` (lists) or `next_cursor` (the feed) from `first` to the
/// end, returning each page's body.
async fn all_pages(app: &App, first: &str, feed: bool) -> Vec<serde_json::Value> {
    let mut pages = Vec::new();
    let mut path = first.to_owned();
    loop {
        let reply = app.get(&path).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        let page = reply.json();
        let next = if feed {
            (page["phase"] == "snapshot").then(|| page["next_cursor"].as_str().unwrap().to_owned())
        } else {
            page["next"].as_str().map(str::to_owned)
        };
        pages.push(page);
        let Some(cursor) = next else { break pages };
        let base = first.split('?').next().unwrap();
        path = format!("{base}?limit=500&cursor={cursor}");
        assert!(pages.len() < 100, "the pages never end");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn results_past_the_hosts_cap_are_paged_or_refused_never_crashed_on() {
    // Its own cluster: the feed's log waits for every open transaction of
    // the cluster, other tests' included.
    let app = App::start_isolated().await;
    let sql = app.sql().await;
    // 40 contents of 4 MiB each: 160 MiB, past the 128 MiB a Spin host
    // lets one query return, all of which a 500-row page would ask for.
    const ROWS: usize = 40;
    let thai = "ก".repeat((4 << 20) / 3);
    for n in 0..ROWS {
        sql.execute(
            "INSERT INTO learning_content (title, content_type, native_text, translation, ipa)
             VALUES ($1, 'article', $2, 'long', 'long')",
            &[&format!("long {n}"), &thai],
        )
        .await
        .unwrap();
    }

    let pages = all_pages(&app, "/api/content?limit=500", false).await;
    let mut ids: Vec<i64> = Vec::new();
    for page in &pages {
        let items = page["items"].as_array().unwrap();
        assert!(!items.is_empty(), "a page without rows before the end");
        assert!(
            items.len() as i64 * (4 << 20) <= api_core::crud::PAGE_BYTES,
            "{} rows of 4 MiB on one page",
            items.len()
        );
        for item in items {
            assert_eq!(item["native_text"].as_str().unwrap().len(), thai.len());
            ids.push(item["id"].as_i64().unwrap());
        }
    }
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "a row came twice");
    assert_eq!(ids.len(), ROWS, "rows lost between pages");
    assert!(pages.len() >= 5, "only {} pages for 160 MiB", pages.len());

    // The feed's snapshot pages the same way.
    let pages = all_pages(&app, "/api/changes?limit=1000", true).await;
    let snapshot: Vec<i64> = pages
        .iter()
        .flat_map(|p| p["changes"].as_array().unwrap().clone())
        .filter(|c| c["table"] == "learning_content")
        .map(|c| c["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        snapshot, ids,
        "the snapshot lost, repeated or reordered rows"
    );
    assert!(
        pages.len() >= 5,
        "only {} feed pages for 160 MiB",
        pages.len()
    );

    // Then all 40 change at once: the log's page asks for fewer entries
    // until its rows fit, and every change arrives once.
    let mut cursor = pages.last().unwrap()["next_cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    sql.execute("UPDATE learning_content SET translation = 'changed'", &[])
        .await
        .unwrap();
    let mut changed = Vec::new();
    let mut log_pages = 0;
    loop {
        let reply = app
            .get(&format!("/api/changes?limit=1000&cursor={cursor}"))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let page = reply.json();
        assert_eq!(page["phase"], "log");
        for change in page["changes"].as_array().unwrap() {
            assert_eq!(change["row"]["translation"], "changed");
            changed.push(change["id"].as_i64().unwrap());
        }
        log_pages += 1;
        cursor = page["next_cursor"].as_str().unwrap().to_owned();
        if page["has_more"] == false || log_pages > 100 {
            break;
        }
    }
    assert_eq!(changed, ids, "the log lost, repeated or reordered changes");
    assert!(
        log_pages >= 2,
        "160 MiB of changed rows on {log_pages} page"
    );

    // An asset far larger than one read slice comes back byte for byte,
    // whole and as a range across a slice boundary.
    let (_, fragments) = app.content_with_fragments(1).await;
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let big: Vec<u8> = (0..40 << 20)
        .map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng as u8
        })
        .collect();
    let asset = app.stored_asset(fragments[0], &big).await;
    let whole = app.get(&format!("/api/assets/{asset}/data")).await;
    assert_eq!(whole.status, 200);
    assert!(
        whole.body[..] == big[..],
        "the 40 MiB asset came back changed"
    );
    let (first, last) = ((16 << 20) - 100, (16 << 20) + 100);
    let part = app
        .call(
            Some("anon"),
            "GET",
            &format!("/api/assets/{asset}/data"),
            &[("range", &format!("bytes={first}-{last}"))],
            Bytes::new(),
        )
        .await;
    assert_eq!(part.status, 206);
    assert!(part.body[..] == big[first..=last]);

    // One row past the cap cannot be paged: it is refused with a problem,
    // and the host goes on serving.
    let huge: i32 = sql
        .query_one(
            "INSERT INTO learning_content (title, content_type, native_text, translation, ipa)
             VALUES ('huge', 'article', repeat('x', 130 << 20), 'x', 'x') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let refused = app.get(&format!("/api/content/{huge}")).await;
    let body = problem(&refused, 507);
    assert!(!body["detail"].as_str().unwrap().is_empty());
    let document = app.get("/api/openapi.json").await.json();
    assert!(
        document["paths"]["/api/content/{id}"]["get"]["responses"]["507"].is_object(),
        "the 507 is documented"
    );
    let after = app.get(&format!("/api/content/{}", ids[0])).await;
    assert_eq!(after.status, 200);
}
