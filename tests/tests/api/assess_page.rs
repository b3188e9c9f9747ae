//! The assessment page's file server (functions/assess) as served from
//! spin.toml: the page at both spellings, types, validators, the policy.

use bytes::Bytes;

use crate::{App, problem};

async fn fetch(app: &App, method: &str, path: &str, headers: &[(&str, &str)]) -> crate::Reply {
    app.call(None, method, path, headers, Bytes::new()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_and_its_files_are_served_with_types_validators_and_a_strict_policy() {
    let app = App::start().await;
    let page = fetch(&app, "GET", "/assess/", &[]).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert!(
        csp.contains("script-src 'self'") && csp.contains("media-src blob:"),
        "{csp}"
    );
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert!(page.text().contains("/assess/assess.js"));
    let without_slash = fetch(&app, "GET", "/assess", &[]).await;
    assert_eq!(without_slash.status, 200);
    assert_eq!(without_slash.body, page.body);

    for (file, media_type) in [
        ("assess.js", "text/javascript; charset=utf-8"),
        ("api.js", "text/javascript; charset=utf-8"),
        ("pending.js", "text/javascript; charset=utf-8"),
        ("assess.css", "text/css; charset=utf-8"),
        ("icon.svg", "image/svg+xml"),
    ] {
        let reply = fetch(&app, "GET", &format!("/assess/{file}"), &[]).await;
        assert_eq!(reply.status, 200, "{file}");
        assert_eq!(reply.header("content-type"), Some(media_type), "{file}");
        assert_eq!(
            reply.header("content-length"),
            Some(reply.body.len().to_string().as_str())
        );
    }

    // Revalidation: the same ETag gives 304 without a body; another gives the file.
    let etag = page.header("etag").unwrap().to_owned();
    let same = fetch(&app, "GET", "/assess/", &[("if-none-match", &etag)]).await;
    assert_eq!(same.status, 304);
    assert!(same.body.is_empty());
    assert_eq!(same.header("etag"), Some(etag.as_str()));
    let other = fetch(&app, "GET", "/assess/", &[("if-none-match", "\"stale\"")]).await;
    assert_eq!(other.status, 200);
    assert_eq!(page.header("cache-control"), Some("no-cache"));

    let head = fetch(&app, "HEAD", "/assess/assess.js", &[]).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert!(
        head.header("content-length")
            .unwrap()
            .parse::<usize>()
            .unwrap()
            > 1000
    );

    // Without an Auth URL the page is told so (it then takes a pasted
    // token) and may connect to this origin only.
    let config = fetch(&app, "GET", "/assess/config.json", &[]).await;
    assert_eq!(config.status, 200);
    assert_eq!(config.header("content-type"), Some("application/json"));
    assert_eq!(config.json(), serde_json::json!({"auth": null}));
    assert!(csp.contains("connect-src 'self';"), "{csp}");

    let post = fetch(&app, "POST", "/assess/", &[]).await;
    problem(&post, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    problem(&fetch(&app, "GET", "/assess/nope.js", &[]).await, 404);
    for outside in [
        "/assess/../spin.toml",
        "/assess/static/assess.js",
        "/assess/src/lib.rs",
    ] {
        assert_eq!(
            fetch(&app, "GET", outside, &[]).await.status,
            404,
            "{outside}"
        );
    }
}
