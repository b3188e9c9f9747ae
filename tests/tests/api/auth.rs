//! The JWT matrix: every bad token is 401 with a challenge, every role
//! beyond its rights is 403, and neither leaves a trace in the database.

use bytes::Bytes;
use jsonwebtoken::Algorithm;
use serde_json::json;

use crate::{App, now, problem, signed};

const SECRET: &str = "test-jwt-secret-that-is-long-enough-for-hs256";

#[tokio::test(flavor = "multi_thread")]
async fn bad_tokens_get_401_and_weak_roles_403() {
    let app = App::start().await;
    let body = json!({"title": "t", "content_type": "p", "native_text": "x", "translation": "y", "ipa": "z"}).to_string();
    let exp = now() + 600;
    let bad_tokens = [
        ("malformed", "Bearer not-a-jwt".to_owned()),
        (
            "expired",
            format!(
                "Bearer {}",
                signed(
                    Algorithm::HS256,
                    SECRET,
                    json!({"role": "service_role", "exp": now() - 600})
                )
            ),
        ),
        (
            "not yet valid",
            format!(
                "Bearer {}",
                signed(
                    Algorithm::HS256,
                    SECRET,
                    json!({"role": "service_role", "exp": exp, "nbf": now() + 600})
                )
            ),
        ),
        (
            "bad signature",
            format!(
                "Bearer {}",
                signed(
                    Algorithm::HS256,
                    "some-other-secret-of-enough-length",
                    json!({"role": "service_role", "exp": exp})
                )
            ),
        ),
        (
            "HS384",
            format!(
                "Bearer {}",
                signed(
                    Algorithm::HS384,
                    SECRET,
                    json!({"role": "service_role", "exp": exp})
                )
            ),
        ),
        // {"alg":"none"} . {"role":"service_role"} . (no signature)
        (
            "alg none",
            "Bearer eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJyb2xlIjoic2VydmljZV9yb2xlIn0."
                .to_owned(),
        ),
        ("basic scheme", "Basic dXNlcjpwYXNz".to_owned()),
    ];
    for (case, header) in &bad_tokens {
        for (method, path) in [
            ("GET", "/api/content"),
            ("POST", "/api/content"),
            ("GET", "/api/changes"),
        ] {
            let reply = app
                .server
                .send(
                    method.parse().unwrap(),
                    path,
                    &[
                        ("authorization", header),
                        ("content-type", "application/json"),
                    ],
                    Bytes::from(body.clone()),
                )
                .await;
            problem(&reply, 401);
            assert!(
                reply
                    .header("www-authenticate")
                    .unwrap()
                    .starts_with("Bearer"),
                "{case}"
            );
        }
    }
    let none = app
        .call(None, "GET", "/api/content", &[], Bytes::new())
        .await;
    problem(&none, 401);
    assert_eq!(
        none.header("www-authenticate"),
        Some("Bearer realm=\"api\"")
    );

    // anon reads but does not write; authenticated writes but does not import.
    let anon_write = app
        .call(
            Some("anon"),
            "POST",
            "/api/content",
            &[("content-type", "application/json")],
            Bytes::from(body.clone()),
        )
        .await;
    problem(&anon_write, 403);
    let user_import = app
        .call(Some("authenticated"), "POST", "/api/import/content", &[("content-type", "application/json")],
              Bytes::from(json!({"rows": [{"id": 1, "title": "t", "content_type": "p", "native_text": "x", "translation": "y", "ipa": "z"}]}).to_string()))
        .await;
    problem(&user_import, 403);
    let unknown_role = app
        .call(
            Some("supabase_admin"),
            "GET",
            "/api/content",
            &[],
            Bytes::new(),
        )
        .await;
    problem(&unknown_role, 403);
    assert_eq!(
        app.call(Some("anon"), "GET", "/api/content", &[], Bytes::new())
            .await
            .status,
        200
    );

    let count: i64 = app
        .sql()
        .await
        .query_one("SELECT count(*) FROM learning_content", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0, "no refused request wrote anything");
    // The public routes need no token.
    assert_eq!(
        app.call(None, "GET", "/api/health", &[], Bytes::new())
            .await
            .status,
        200
    );
    assert_eq!(
        app.call(None, "GET", "/api/openapi.json", &[], Bytes::new())
            .await
            .status,
        200
    );
}

/// Authorization headers no protected route may accept (None: no header).
pub(crate) fn bad_credentials() -> Vec<(&'static str, Option<String>)> {
    let exp = now() + 600;
    vec![
        ("no token", None),
        ("malformed", Some("Bearer x.y.z".to_owned())),
        ("expired", Some(format!("Bearer {}", signed(Algorithm::HS256, SECRET, json!({"role": "service_role", "exp": now() - 60}))))),
        ("bad signature", Some(format!("Bearer {}", signed(Algorithm::HS256, "wrong-secret-wrong-secret-wrong", json!({"role": "service_role", "exp": exp}))))),
        ("alg none", Some("Bearer eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJyb2xlIjoic2VydmljZV9yb2xlIiwiZXhwIjo5OTk5OTk5OTk5fQ.".to_owned())),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn every_protected_route_refuses_every_bad_credential() {
    let app = App::start().await;
    let bad = bad_credentials();
    let mut tried = 0;
    for (_, routes) in api_core::routes::all() {
        for route in routes {
            let Some(needed) = route.role else { continue };
            let path = route.pattern.replace(":id", "1");
            let method = api_core::router::method_name(&route.method);
            for (case, header) in &bad {
                let mut headers = vec![("content-type", "application/json")];
                if let Some(h) = header {
                    headers.push(("authorization", h.as_str()));
                }
                let reply = app
                    .server
                    .send(
                        method.parse().unwrap(),
                        &path,
                        &headers,
                        Bytes::from_static(b"{}"),
                    )
                    .await;
                let body = problem(&reply, 401);
                assert_eq!(
                    body.as_object()
                        .unwrap()
                        .keys()
                        .filter(|k| !["type", "title", "status", "detail"].contains(&k.as_str()))
                        .count(),
                    0,
                    "{method} {path} {case}: no data in the body"
                );
                tried += 1;
            }
            // One role short of what the route needs.
            let weaker = match needed {
                api_core::Role::Anon => continue,
                api_core::Role::Authenticated => "anon",
                api_core::Role::ServiceRole => "authenticated",
            };
            let reply = app
                .call(
                    Some(weaker),
                    method,
                    &path,
                    &[("content-type", "application/json")],
                    Bytes::from_static(b"{}"),
                )
                .await;
            problem(&reply, 403);
            tried += 1;
        }
    }
    assert!(tried > 100, "{tried}");
    println!("auth matrix: {tried} requests refused");
}
