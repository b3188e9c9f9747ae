//! `GET /api/health` through the host, over real HTTP, against a real
//! PostgreSQL that is stopped and restarted under it, and against the
//! schema as each tool a user may apply it with leaves it.

mod support;

use support::Server;

async fn migrated_cluster() -> (throwaway_pg::Cluster, String) {
    let cluster = tokio::task::spawn_blocking(throwaway_pg::Cluster::start)
        .await
        .unwrap()
        .expect("starting PostgreSQL");
    cluster.create_database("health", None).await.unwrap();
    let url = cluster.url("health");
    let mut client = schema_migrate::connect(&url).await.unwrap();
    schema_migrate::apply(&mut client, &integration_tests::db::migrations())
        .await
        .unwrap();
    (cluster, url)
}

fn latest_version() -> String {
    integration_tests::db::migrations()
        .latest()
        .expect("at least one migration")
        .version
        .clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn health_follows_the_database_down_and_back_up() {
    let (cluster, url) = migrated_cluster().await;
    let db_host = format!("127.0.0.1:{}", cluster.port());
    let server = Server::project(&[("db_url", &url), ("db_host", &db_host), ("jwt_secret", "x")])
        .await
        .expect("serving spin.toml");

    let up = server.get("/api/health").await;
    assert_eq!(up.status, 200, "{}", up.text());
    assert_eq!(up.header("content-type"), Some("application/json"));
    assert_eq!(
        up.json(),
        serde_json::json!({
            "status": "ok",
            "database": "ok",
            "schema": "ok",
            "schema_version": latest_version(),
        })
    );

    // Stop the server under the host: pooled connections die with it.
    let mut cluster = tokio::task::spawn_blocking(move || {
        let mut cluster = cluster;
        cluster.stop().expect("stopping PostgreSQL");
        cluster
    })
    .await
    .unwrap();
    for _ in 0..2 {
        let down = server.get("/api/health").await;
        assert_eq!(down.status, 503, "{}", down.text());
        assert_eq!(
            down.header("content-type"),
            Some("application/problem+json")
        );
        assert!(down.header("retry-after").is_some());
        let problem = down.json();
        assert_eq!(problem["status"], 503);
        assert_eq!(problem["type"], "about:blank");
        assert_eq!(problem["title"], "Service Unavailable");
        assert!(problem["detail"].is_string());
        assert!(
            !down.text().contains("postgres://"),
            "no connection string leaks"
        );
    }
    // The host itself is alive.
    assert_eq!(server.get("/.well-known/spin/health").await.status, 200);

    cluster = tokio::task::spawn_blocking(move || {
        cluster.restart().expect("restarting PostgreSQL");
        cluster
    })
    .await
    .unwrap();
    let again = server.get("/api/health").await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["schema_version"], latest_version());

    server.shutdown().await.unwrap();
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread")]
async fn other_methods_get_405_with_allow() {
    let server = Server::project(&[
        ("db_url", "postgres://nobody@127.0.0.1:1/x?sslmode=disable"),
        ("jwt_secret", "x"),
    ])
    .await
    .unwrap();
    for method in [http::Method::POST, http::Method::DELETE, http::Method::PUT] {
        let r = server
            .send(method, "/api/health", &[], bytes::Bytes::new())
            .await;
        assert_eq!(r.status, 405);
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        assert_eq!(r.json()["status"], 405);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unmigrated_database_is_not_healthy() {
    let url = integration_tests::db::empty_database().await;
    let port = integration_tests::db::cluster().port();
    let server = Server::project(&[
        ("db_url", &url),
        ("db_host", &format!("127.0.0.1:{port}")),
        ("jwt_secret", "x"),
    ])
    .await
    .unwrap();
    let r = server.get("/api/health").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
}

/// An empty database of the shared cluster with migrations/ applied file by
/// file with `psql -f`, as a user without the project's migrator does.
async fn applied_with_psql() -> String {
    let url = integration_tests::db::empty_database().await;
    let psql = throwaway_pg::Binaries::locate()
        .expect("the PostgreSQL binaries")
        .dir()
        .join("psql");
    for migration in integration_tests::db::migrations().iter() {
        let file = integration_tests::db::migrations_dir()
            .join(format!("{}_{}.sql", migration.version, migration.name));
        let out = std::process::Command::new(&psql)
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "--single-transaction",
                "-d",
                &url,
                "-f",
            ])
            .arg(&file)
            .output()
            .expect("running psql");
        assert!(
            out.status.success(),
            "psql -f {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    url
}

async fn health_of(url: &str) -> support::Reply {
    let port = integration_tests::db::cluster().port();
    let db_host = format!("127.0.0.1:{port}");
    let server = Server::project(&[("db_url", url), ("db_host", &db_host), ("jwt_secret", "x")])
        .await
        .expect("serving spin.toml");
    let reply = server.get("/api/health").await;
    server.shutdown().await.unwrap();
    reply
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schema_applied_with_psql_is_healthy_without_a_version() {
    let url = applied_with_psql().await;
    let reply = health_of(&url).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json(),
        serde_json::json!({"status": "ok", "database": "ok", "schema": "ok", "schema_version": null})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schema_applied_by_the_supabase_cli_reports_its_ledger() {
    let url = applied_with_psql().await;
    // The ledger `supabase db push` keeps beside the schema it applies.
    let client = integration_tests::db::connect(&url).await;
    client
        .batch_execute(
            "CREATE SCHEMA supabase_migrations;
             CREATE TABLE supabase_migrations.schema_migrations (
                 version text PRIMARY KEY, statements text[], name text)",
        )
        .await
        .unwrap();
    for migration in integration_tests::db::migrations().iter() {
        client
            .execute(
                "INSERT INTO supabase_migrations.schema_migrations (version, statements, name)
                 VALUES ($1, ARRAY[$2], $3)",
                &[&migration.version, &migration.sql, &migration.name],
            )
            .await
            .unwrap();
    }
    let reply = health_of(&url).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["schema"], "ok");
    assert_eq!(reply.json()["schema_version"], latest_version());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schema_without_the_newest_migration_is_not_healthy() {
    let url = applied_with_psql().await;
    // Undo what the newest migration added: the functions read it.
    let client = integration_tests::db::connect(&url).await;
    client
        .batch_execute("ALTER TABLE fragment_assets DROP COLUMN content_type")
        .await
        .unwrap();
    let reply = health_of(&url).await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(
        reply.header("content-type"),
        Some("application/problem+json")
    );
    let detail = reply.json()["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("apply migrations/"), "{detail}");
    assert!(
        !detail.contains("content_type"),
        "schema details stay in the log: {detail}"
    );
}
