//! Tokens never reach a log. The host runs in a child process (this test
//! binary again, running [`child_server`]) with every log at its most
//! talkative, so both the host's own lines and what the components write
//! to stderr are captured, while every route is called with good and bad
//! tokens, in the header and in the query string. Under a real Spin the
//! child hands on Spin's output and the components' log files when it ends.

use bytes::Bytes;

use crate::auth::bad_credentials;
use crate::support::{ChildServer, send_to};
use crate::{app_variables, token};

const CHILD_DB: &str = "API_TESTS_LOGGING_CHILD_DB";
const CHILD_PORT: &str = "API_TESTS_LOGGING_CHILD_PORT";

/// The server half of [`tokens_never_reach_the_logs`]: does nothing unless
/// that test started it.
#[test]
#[ignore = "started by tokens_never_reach_the_logs in a child process"]
fn child_server() {
    let (Ok(db_url), Ok(port)) = (std::env::var(CHILD_DB), std::env::var(CHILD_PORT)) else {
        return;
    };
    // RUST_LOG, set by the parent, is read by a real Spin too.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let variables = app_variables(&db_url, port.parse().unwrap());
    crate::support::serve_until_stdin_closes(&crate::support::borrowed(&variables));
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_never_reach_the_logs() {
    let db_url = integration_tests::db::fresh_database().await;
    let port = integration_tests::db::cluster().port();
    let child = ChildServer::spawn(
        "logging::child_server",
        &[
            (CHILD_DB, &db_url),
            (CHILD_PORT, &port.to_string()),
            (
                "RUST_LOG",
                "trace,wasmtime=info,cranelift=info,wasmtime_cranelift=info",
            ),
        ],
    );
    let addr = child.addr;

    let mut credentials = bad_credentials();
    for role in ["anon", "authenticated", "service_role"] {
        credentials.push(("valid", Some(format!("Bearer {}", token(role)))));
    }
    // The project's API keys are secrets too.
    let api = &crate::project().api;
    for key in [&api.secret, &api.publishable] {
        credentials.push(("valid key", Some(format!("Bearer {key}"))));
    }
    let in_url = token("service_role");
    let mut requests = 0;
    for (_, routes) in api_core::routes::all() {
        for route in routes {
            let path = route.pattern.replace(":id", "1");
            let method = api_core::router::method_name(&route.method);
            for (_, header) in &credentials {
                let mut headers = vec![("content-type", "application/json")];
                if let Some(h) = header {
                    headers.push(("authorization", h.as_str()));
                }
                // A body that would fail validation, so the error paths log too.
                let body = Bytes::from_static(b"{\"title\": 42}");
                send_to(addr, method.parse().unwrap(), &path, &headers, body).await;
                requests += 1;
            }
            // Clients that put the token in the URL.
            send_to(
                addr,
                method.parse().unwrap(),
                &format!("{path}?access_token={in_url}"),
                &[],
                Bytes::new(),
            )
            .await;
            requests += 1;
        }
    }

    // Closing stdin ends the child, which then writes what Spin logged.
    let log = child.finish();
    // Each host's line for a request it received.
    let request_line = match app_server::Host::from_env() {
        app_server::Host::Bundled => "spin_host::request",
        app_server::Host::Spin(_) => "Processing request on path",
    };
    let logged = log.lines().filter(|l| l.contains(request_line)).count();
    assert!(
        logged >= requests,
        "only {logged} request lines for {requests} requests: the capture is broken\n{log}"
    );
    let mut secrets: Vec<String> = credentials
        .iter()
        .filter_map(|(_, h)| h.as_deref()?.strip_prefix("Bearer ").map(str::to_owned))
        .collect();
    secrets.push(in_url);
    for secret in &secrets {
        // Any of a JWT's parts is enough to rebuild or replay it.
        for part in secret.split('.').filter(|p| p.len() > 8) {
            assert!(
                !log.contains(part),
                "a token part was logged: {part}\n{log}"
            );
        }
    }
    println!(
        "{requests} requests, {} log lines, no token in them",
        log.lines().count()
    );
}
