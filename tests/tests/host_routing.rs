//! Route matching and the request headers Spin sets: every example of
//! Spin's HTTP trigger documentation, through the router and over HTTP.

mod support;

use spin_host::routing::{RouteSpec, Router};
use support::{Server, manifest, sources};

fn router(routes: &[(&str, RouteSpec)]) -> Router {
    Router::build(routes.iter().map(|(c, r)| (*c, r))).unwrap()
}

fn route(r: &str) -> RouteSpec {
    RouteSpec::Pattern(r.to_owned())
}

fn component(router: &Router, path: &str) -> Option<String> {
    router.route(path).map(|m| m.component)
}

#[test]
fn exact_routes_match_only_themselves() {
    let r = router(&[
        ("shopping-cart", route("/cart")),
        ("checkout", route("/cart/checkout")),
    ]);
    assert_eq!(component(&r, "/cart").as_deref(), Some("shopping-cart"));
    assert_eq!(component(&r, "/cart/checkout").as_deref(), Some("checkout"));
    assert_eq!(component(&r, "/cart/other"), None);
    assert_eq!(component(&r, "/"), None);
}

#[test]
fn single_segment_wildcards_match_one_segment() {
    let r = router(&[("edit", route("/users/:userid/edit"))]);
    for path in ["/users/1/edit", "/users/alice/edit"] {
        assert_eq!(component(&r, path).as_deref(), Some("edit"), "{path}");
    }
    for path in ["/users", "/users/1", "/users/1/edit/cart"] {
        assert_eq!(component(&r, path), None, "{path}");
    }
    let m = r.route("/users/alice/edit").unwrap();
    assert_eq!(m.params, [("userid".to_owned(), "alice".to_owned())]);
}

#[test]
fn trailing_wildcards_match_the_route_and_everything_under_it() {
    let r = router(&[("user-manager", route("/users/..."))]);
    for path in ["/users", "/users/1", "/users/1/edit"] {
        assert_eq!(
            component(&r, path).as_deref(),
            Some("user-manager"),
            "{path}"
        );
    }
    assert_eq!(component(&r, "/usersx"), None);
    let all = router(&[("all", route("/..."))]);
    for path in ["/", "/favicon.ico", "/a/b/c"] {
        assert_eq!(component(&all, path).as_deref(), Some("all"), "{path}");
    }
}

#[test]
fn overlapping_routes_resolve_to_the_most_specific() {
    // The documentation's example, in each order: precedence must not
    // depend on manifest order.
    let triggers = [
        ("user-manager", route("/users/...")),
        ("admin", route("/users/admin")),
        ("shop", route("/...")),
    ];
    for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
        let r = router(&order.map(|i| triggers[i].clone()));
        assert_eq!(component(&r, "/users/1").as_deref(), Some("user-manager"));
        assert_eq!(component(&r, "/users").as_deref(), Some("user-manager"));
        assert_eq!(component(&r, "/users/admin").as_deref(), Some("admin"));
        assert_eq!(component(&r, "/cart").as_deref(), Some("shop"));
        assert_eq!(component(&r, "/").as_deref(), Some("shop"));
    }
    // Exact beats `:name`, which beats a trailing wildcard.
    let r = router(&[
        ("wild", route("/a/...")),
        ("param", route("/a/:x")),
        ("exact", route("/a/b")),
    ]);
    assert_eq!(component(&r, "/a/b").as_deref(), Some("exact"));
    assert_eq!(component(&r, "/a/c").as_deref(), Some("param"));
    assert_eq!(component(&r, "/a/c/d").as_deref(), Some("wild"));
    // The longest wildcard prefix wins.
    let r = router(&[
        ("one", route("/one/...")),
        ("three", route("/one/two/three/...")),
        ("two", route("/one/two/...")),
    ]);
    assert_eq!(
        component(&r, "/one/two/three/four").as_deref(),
        Some("three")
    );
    assert_eq!(component(&r, "/one/two/x").as_deref(), Some("two"));
}

#[test]
fn private_routes_are_never_matched() {
    let r = router(&[("internal", RouteSpec::Private)]);
    assert_eq!(component(&r, "/"), None);
    assert_eq!(component(&r, "/internal"), None);
}

const APP: &str = r#"
spin_manifest_version = 2
[application]
name = "routes"

[[trigger.http]]
route = "/users/:userid/cart/..."
component = "cart"

[[trigger.http]]
route = "/users/..."
component = "user-manager"

[[trigger.http]]
route = "/users/admin"
component = "admin"

[[trigger.http]]
route = { private = true }
component = "internal"

[[trigger.http]]
route = "/bob"
static_response = { status_code = 302, headers = { location = "/users/bob" } }

[component.cart]
source = "{probe}"
[component.user-manager]
source = "{probe}"
[component.admin]
source = "{probe}"
[component.internal]
source = "{probe}"
"#;

fn header<'a>(echo: &'a serde_json::Value, name: &str) -> Vec<&'a str> {
    echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|pair| pair[0] == name)
        .map(|pair| pair[1].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn spin_headers_match_the_documentation_table() {
    let server = Server::start(&manifest(APP), &sources(&[])).await.unwrap();
    let reply = server.get("/users/1/cart/items/3/edit?theme=pink").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let echo = reply.json();
    let addr = server.addr;
    let one = |name: &str| {
        let values = header(&echo, name);
        assert_eq!(values.len(), 1, "{name}: {values:?}");
        values[0].to_owned()
    };
    assert_eq!(
        one("spin-full-url"),
        format!("http://{addr}/users/1/cart/items/3/edit?theme=pink")
    );
    assert_eq!(one("spin-path-info"), "/items/3/edit");
    assert_eq!(one("spin-path-match-userid"), "1");
    assert_eq!(one("spin-matched-route"), "/users/:userid/cart/...");
    assert_eq!(one("spin-raw-component-route"), "/users/:userid/cart/...");
    assert_eq!(one("spin-component-route"), "/users/:userid/cart");
    assert_eq!(one("spin-base-path"), "/");
    let client = one("spin-client-addr");
    assert!(client.starts_with("127.0.0.1:"), "{client}");
    // The URL the component sees is the path and query. (`host` itself is
    // one of the headers wasmtime-wasi-http keeps from guests, as under
    // Spin; `spin-full-url` carries it.)
    assert_eq!(echo["path"], "/users/1/cart/items/3/edit");
    assert_eq!(echo["query"], "theme=pink");
}

#[tokio::test(flavor = "multi_thread")]
async fn overlapping_routes_over_http() {
    let server = Server::start(&manifest(APP), &sources(&[])).await.unwrap();
    let route_of = |reply: &support::Reply| {
        header(&reply.json(), "spin-raw-component-route")
            .first()
            .map(|s| s.to_string())
    };
    let admin = server.get("/users/admin").await;
    assert_eq!(route_of(&admin).as_deref(), Some("/users/admin"));
    assert!(header(&admin.json(), "spin-path-info") == [""]);
    let user = server.get("/users/42/").await;
    assert_eq!(route_of(&user).as_deref(), Some("/users/..."));
    assert_eq!(header(&user.json(), "spin-path-info"), ["/42/"]);
    let users = server.get("/users").await;
    assert_eq!(route_of(&users).as_deref(), Some("/users/..."));
    assert_eq!(header(&users.json(), "spin-path-info"), [""]);

    // Nothing matches: an empty 404, as Spin answers. The private route is
    // unreachable from outside.
    for path in ["/", "/internal", "/nope"] {
        let r = server.get(path).await;
        assert_eq!(r.status, 404, "{path}");
        assert!(r.body.is_empty());
    }

    // Static responses.
    let bob = server.get("/bob").await;
    assert_eq!(bob.status, 302);
    assert_eq!(bob.header("location"), Some("/users/bob"));

    // Reserved routes belong to the host.
    let health = server.get("/.well-known/spin/health").await;
    assert_eq!((health.status, health.text().as_str()), (200, "OK"));
    assert_eq!(
        server.get("/.well-known/spin/info").await.json()["name"],
        "routes"
    );
    assert_eq!(server.get("/.well-known/spin/other").await.status, 404);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_run_concurrently_in_fresh_instances() {
    let server = Server::start(&manifest(APP), &sources(&[])).await.unwrap();
    let server = std::sync::Arc::new(server);
    let mut tasks = Vec::new();
    for i in 0..32 {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let r = server.get(&format!("/users/{i}/cart/x")).await;
            assert_eq!(r.status, 200);
            header(&r.json(), "spin-path-match-userid")[0].to_owned()
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.unwrap(), i.to_string());
    }
}
