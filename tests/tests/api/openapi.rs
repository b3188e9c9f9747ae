//! The OpenAPI document lists exactly the routes that are served.

use std::collections::BTreeSet;

use spin_host::manifest::Handler;
use spin_host::routing::RouteSpec;

use crate::App;

#[tokio::test(flavor = "multi_thread")]
async fn every_served_route_is_documented_and_nothing_else() {
    let app = App::start().await;
    let reply = app
        .call(None, "GET", "/api/openapi.json", &[], bytes::Bytes::new())
        .await;
    assert_eq!(reply.status, 200);
    let doc = reply.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();

    // What the routers serve, in OpenAPI's path syntax.
    let routed: BTreeSet<(String, String)> = api_core::routes::all()
        .into_iter()
        .flat_map(|(_, routes)| routes)
        .map(|r| {
            let path = r
                .pattern
                .split('/')
                .map(|s| match s.strip_prefix(':') {
                    Some(name) => format!("{{{name}}}"),
                    None => s.to_owned(),
                })
                .collect::<Vec<_>>()
                .join("/");
            (api_core::router::method_name(&r.method).to_owned(), path)
        })
        .collect();
    assert_eq!(documented, routed);

    // Every documented path lies under a route of spin.toml with the
    // component that serves it, and every spin.toml route is documented.
    let manifest = crate::support::project_manifest();
    let components: BTreeSet<String> = api_core::routes::all()
        .iter()
        .map(|(c, _)| (*c).to_owned())
        .collect();
    let mut covered = BTreeSet::new();
    for trigger in &manifest.http_triggers {
        let (Handler::Component(component), RouteSpec::Pattern(route)) =
            (&trigger.handler, &trigger.route)
        else {
            panic!("spin.toml has a trigger that is not a public component route");
        };
        // The document describes the API; the assessment page (`/assess`)
        // is files, tested in `assess_page.rs`.
        if !(route == "/api" || route.starts_with("/api/")) {
            continue;
        }
        assert!(
            components.contains(component),
            "spin.toml routes to {component}, which has no route table"
        );
        let table = api_core::routes::all()
            .into_iter()
            .find(|(c, _)| c == component)
            .unwrap()
            .1;
        let matched: Vec<_> = table
            .iter()
            .filter(|r| spin_route_covers(route, r.pattern))
            .collect();
        assert!(
            !matched.is_empty(),
            "spin.toml route {route} serves nothing documented"
        );
        covered.extend(matched.iter().map(|r| r.pattern));
    }
    let all_patterns: BTreeSet<&str> = api_core::routes::all()
        .into_iter()
        .flat_map(|(_, r)| r)
        .map(|r| r.pattern)
        .collect();
    assert_eq!(
        covered, all_patterns,
        "every router path is reachable through spin.toml"
    );

    // Statuses the tests rely on are documented.
    assert!(doc["paths"]["/api/assets/{id}/data"]["get"]["responses"]["206"].is_object());
    assert!(doc["paths"]["/api/changes"]["get"]["responses"]["410"].is_object());
    assert!(doc["paths"]["/api/content/{id}"]["patch"]["responses"]["412"].is_object());
}

/// Spin's matching: exact, or a `/...` wildcard covering the prefix and below.
fn spin_route_covers(route: &str, pattern: &str) -> bool {
    match route.strip_suffix("/...") {
        Some(prefix) => pattern == prefix || pattern.starts_with(&format!("{prefix}/")),
        None => route == pattern,
    }
}
