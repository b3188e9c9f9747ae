//! The content API over real HTTP: the built components served from
//! spin.toml by the host, against a real PostgreSQL. One test binary, so the
//! components are built and compiled once.

#[path = "../support/mod.rs"]
mod support;

mod assess_page;
mod assessor;
mod assets;
mod auth;
mod bad_input;
mod content;
mod feed;
mod fuzz;
mod import;
mod limits;
mod logging;
mod openapi;
mod outage;
mod rankings;

use bytes::Bytes;
use serde_json::Value;
use support::{Reply, Server, borrowed};

/// The asset size limit the tests run with: small enough to test cheaply,
/// large enough for a 2 MiB TTS file.
pub const MAX_ASSET_BYTES: usize = 3 * 1024 * 1024;

/// The project's legacy HS256 JWT secret.
pub const SECRET: &str = "test-jwt-secret-that-is-long-enough-for-hs256";

/// A served app over a fresh migrated database.
pub struct App {
    pub server: Server,
    pub db_url: String,
    /// Set when the app has a PostgreSQL cluster of its own.
    cluster: Option<throwaway_pg::Cluster>,
}

impl App {
    /// An app over a fresh database in the cluster all tests share.
    pub async fn start() -> App {
        let db_url = integration_tests::db::fresh_database().await;
        let port = integration_tests::db::cluster().port();
        Self::serve(db_url, port, None).await
    }

    /// An app over a cluster of its own, for tests that watch transaction
    /// ids: other tests' transactions would hold its feed back.
    pub async fn start_isolated() -> App {
        let (cluster, db_url) = integration_tests::db::private_cluster().await;
        let port = cluster.port();
        Self::serve(db_url, port, Some(cluster)).await
    }

    async fn serve(db_url: String, port: u16, cluster: Option<throwaway_pg::Cluster>) -> App {
        let variables = app_variables(&db_url, port);
        let server = Server::project(&borrowed(&variables))
            .await
            .expect("serving spin.toml");
        App {
            server,
            db_url,
            cluster,
        }
    }

    /// The app's own cluster (see [`App::start_isolated`]), to stop and restart.
    pub fn cluster_mut(&mut self) -> &mut Option<throwaway_pg::Cluster> {
        &mut self.cluster
    }

    pub async fn sql(&self) -> tokio_postgres::Client {
        integration_tests::db::connect(&self.db_url).await
    }

    /// A request as `role` (None: no Authorization header).
    pub async fn call(
        &self,
        role: Option<&str>,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Reply {
        let auth = role.map(|r| format!("Bearer {}", token(r)));
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if let Some(auth) = &auth {
            all.push(("authorization", auth));
        }
        self.server
            .send(method.parse().unwrap(), path, &all, body)
            .await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Some("anon"), "GET", path, &[], Bytes::new())
            .await
    }

    pub async fn write(&self, method: &str, path: &str, body: &Value) -> Reply {
        self.call(
            Some("authenticated"),
            method,
            path,
            &[("content-type", "application/json")],
            Bytes::from(body.to_string()),
        )
        .await
    }

    /// Creates a row and returns it, failing the test on anything but 201.
    pub async fn create(&self, collection: &str, body: Value) -> Value {
        let reply = self.write("POST", collection, &body).await;
        assert_eq!(reply.status, 201, "{}", reply.text());
        reply.json()
    }

    /// A content with `fragments` fragments; returns (content id, fragment ids).
    pub async fn content_with_fragments(&self, fragments: usize) -> (i64, Vec<i64>) {
        let content = self
            .create(
                "/api/content",
                serde_json::json!({
                    "title": "ตลาดน้ำ", "content_type": "dialogue", "native_text": "ไปตลาดน้ำกัน",
                    "translation": "Let's go to the floating market", "ipa": "paj ta.làːt náːm kan"
                }),
            )
            .await;
        let id = content["id"].as_i64().unwrap();
        let mut ids = Vec::new();
        for n in 0..fragments {
            let fragment = self
                .create(
                    "/api/fragments",
                    serde_json::json!({
                        "learning_content_id": id, "native_text": format!("คำ{n}"),
                        "body_text": format!("word {n}"), "fragment_type": "word"
                    }),
                )
                .await;
            ids.push(fragment["id"].as_i64().unwrap());
        }
        (id, ids)
    }

    /// An audio asset of `fragment` with `bytes`, written straight into the
    /// table: past the upload limit, as a legacy import may leave one.
    pub async fn stored_asset(&self, fragment: i64, bytes: &[u8]) -> i32 {
        self.sql()
            .await
            .query_one(
                "INSERT INTO fragment_assets (fragment_id, asset_type, asset_data, content_type)
                 VALUES ($1, 'audio', $2, 'audio/wav') RETURNING id",
                &[&(fragment as i32), &bytes],
            )
            .await
            .unwrap()
            .get(0)
    }
}

/// The test project's credentials, as a Supabase project made this year
/// has them: two ES256 signing keys (the current one and the one it
/// replaced, still published), an RS256 one, a key that was removed from
/// the JWKS, the legacy HS256 secret, and a pair of API keys.
pub struct Project {
    pub current: dev_keys::SigningKey,
    pub previous: dev_keys::SigningKey,
    pub rsa: dev_keys::SigningKey,
    pub removed: dev_keys::SigningKey,
    pub api: dev_keys::ApiKeys,
}

pub fn project() -> &'static Project {
    static PROJECT: std::sync::OnceLock<Project> = std::sync::OnceLock::new();
    PROJECT.get_or_init(|| Project {
        current: dev_keys::SigningKey::es256("key-2026-current").unwrap(),
        previous: dev_keys::SigningKey::es256("key-2025-previous").unwrap(),
        rsa: dev_keys::SigningKey::rs256("key-rsa").unwrap(),
        removed: dev_keys::SigningKey::es256("key-2024-removed").unwrap(),
        api: dev_keys::ApiKeys::generate(),
    })
}

/// The variables the tests serve spin.toml with, over the database at
/// `db_url` on a server listening on `port`.
pub fn app_variables(db_url: &str, port: u16) -> Vec<(&'static str, String)> {
    let p = project();
    vec![
        ("db_url", db_url.to_owned()),
        ("db_host", format!("127.0.0.1:{port}")),
        (
            "jwt_jwks",
            dev_keys::jwks(&[&p.current, &p.previous, &p.rsa]),
        ),
        ("jwt_secret", SECRET.to_owned()),
        (
            "api_secret_keys_sha256",
            dev_keys::sha256_hex(&p.api.secret),
        ),
        (
            "api_publishable_keys_sha256",
            dev_keys::sha256_hex(&p.api.publishable),
        ),
        ("max_asset_bytes", MAX_ASSET_BYTES.to_string()),
    ]
}

/// A valid token for `role`, an hour long, signed with the project's
/// current ES256 key.
pub fn token(role: &str) -> String {
    project().current.token(role, 3600).unwrap()
}

/// `claims` signed with HS256 and `secret`: the legacy path.
pub fn signed(alg: jsonwebtoken::Algorithm, secret: &str, claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Asserts a problem+json reply with `status`, returning its body.
pub fn problem(reply: &Reply, status: u16) -> Value {
    assert_eq!(reply.status, status, "{}", reply.text());
    assert_eq!(
        reply.header("content-type"),
        Some("application/problem+json"),
        "{}",
        reply.text()
    );
    let body = reply.json();
    assert_eq!(body["status"], status);
    assert!(body["title"].is_string());
    body
}

/// The fields a problem names.
pub fn fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["field"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}
