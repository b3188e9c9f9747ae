//! The credential matrix: every bad token or API key is 401 with a
//! challenge, every role beyond its rights is 403, and neither leaves a
//! trace in the database; what a Supabase project issues (ES256 and RS256
//! tokens from its JWKS, HS256 with the legacy secret, sb_ API keys) gets
//! its role.

use bytes::Bytes;
use jsonwebtoken::Algorithm;
use serde_json::json;

use crate::{App, SECRET, now, problem, project, signed};

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
    let mut bad_tokens = bad_tokens.to_vec();
    bad_tokens.extend(
        bad_credentials()
            .into_iter()
            .filter_map(|(case, header)| Some((case, header?))),
    );
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

/// `token` with its header's `kid` replaced (`None`: removed). The
/// signature stays the original key's.
fn relabelled(token: &str, kid: Option<&str>) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (header, rest) = token.split_once('.').unwrap();
    let mut header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    match kid {
        Some(kid) => header["kid"] = json!(kid),
        None => drop(header.as_object_mut().unwrap().remove("kid")),
    }
    format!("{}.{rest}", URL_SAFE_NO_PAD.encode(header.to_string()))
}

/// Authorization headers no protected route may accept (None: no header).
pub(crate) fn bad_credentials() -> Vec<(&'static str, Option<String>)> {
    let exp = now() + 600;
    let p = project();
    let bearer = |token: String| Some(format!("Bearer {token}"));
    let claims = json!({"role": "service_role", "exp": exp});
    let signed_now = |key: &dev_keys::SigningKey| key.sign(&claims).unwrap();
    let stranger = dev_keys::ApiKeys::generate();
    vec![
        ("no token", None),
        ("malformed", Some("Bearer x.y.z".to_owned())),
        ("expired", bearer(signed(Algorithm::HS256, SECRET, json!({"role": "service_role", "exp": now() - 60})))),
        ("bad signature", bearer(signed(Algorithm::HS256, "wrong-secret-wrong-secret-wrong", claims.clone()))),
        ("alg none", Some("Bearer eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJyb2xlIjoic2VydmljZV9yb2xlIiwiZXhwIjo5OTk5OTk5OTk5fQ.".to_owned())),
        ("ES256 expired", bearer(p.current.sign(&json!({"role": "service_role", "exp": now() - 60})).unwrap())),
        ("ES256 of a removed key", bearer(signed_now(&p.removed))),
        ("ES256 of an unknown kid", bearer(relabelled(&signed_now(&p.current), Some("key-nobody-published")))),
        ("ES256 without kid", bearer(relabelled(&signed_now(&p.current), None))),
        ("RS256 naming an EC key", bearer(relabelled(&signed_now(&p.rsa), Some(p.current.kid())))),
        ("ES256 naming the RSA key", bearer(relabelled(&signed_now(&p.current), Some(p.rsa.kid())))),
        ("unknown sb_secret key", bearer(stranger.secret)),
        ("unknown sb_publishable key", bearer(stranger.publishable)),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn what_a_supabase_project_issues_gets_its_role() {
    let app = App::start().await;
    let p = project();
    let get = |headers: Vec<(&'static str, String)>| {
        let app = &app;
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            app.server
                .send(http::Method::GET, "/api/content", &headers, Bytes::new())
                .await
        }
    };
    let import = |headers: Vec<(&'static str, String)>| {
        let app = &app;
        async move {
            let mut all: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            all.push(("content-type", "application/json"));
            app.server
                .send(
                    http::Method::POST,
                    "/api/import/content",
                    &all,
                    Bytes::from(json!({"rows": []}).to_string()),
                )
                .await
        }
    };
    // Tokens of the current and the previous ES256 key, and the RS256 key.
    for key in [&p.current, &p.previous, &p.rsa] {
        let service = format!("Bearer {}", key.token("service_role", 600).unwrap());
        assert_eq!(
            import(vec![("authorization", service)]).await.status,
            200,
            "{}",
            key.kid()
        );
        let anon = format!("Bearer {}", key.token("anon", 600).unwrap());
        assert_eq!(get(vec![("authorization", anon.clone())]).await.status, 200);
        problem(&import(vec![("authorization", anon)]).await, 403);
    }
    // The legacy secret, while the project still has it.
    let legacy = signed(
        Algorithm::HS256,
        SECRET,
        json!({"role": "service_role", "exp": now() + 600}),
    );
    assert_eq!(
        import(vec![("authorization", format!("Bearer {legacy}"))])
            .await
            .status,
        200
    );
    // API keys, in the apikey header or as the Bearer.
    let secret = p.api.secret.clone();
    let publishable = p.api.publishable.clone();
    assert_eq!(import(vec![("apikey", secret.clone())]).await.status, 200);
    assert_eq!(
        import(vec![("authorization", format!("Bearer {secret}"))])
            .await
            .status,
        200
    );
    assert_eq!(get(vec![("apikey", publishable.clone())]).await.status, 200);
    problem(&import(vec![("apikey", publishable.clone())]).await, 403);
    // A user's token decides over the key beside it, as Supabase has it.
    let anon = format!("Bearer {}", p.current.token("anon", 600).unwrap());
    problem(
        &import(vec![("apikey", secret.clone()), ("authorization", anon)]).await,
        403,
    );
    let user = format!("Bearer {}", p.current.token("service_role", 600).unwrap());
    assert_eq!(
        import(vec![("apikey", publishable), ("authorization", user)])
            .await
            .status,
        200
    );
    // A bad token is not rescued by a good key.
    let expired = format!(
        "Bearer {}",
        p.current
            .sign(&json!({"role": "anon", "exp": now() - 600}))
            .unwrap()
    );
    problem(
        &get(vec![("apikey", secret), ("authorization", expired)]).await,
        401,
    );
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
