//! The assessment page in a real browser: Debian's Chromium, driven by
//! `tests/browser/assess.test.mjs` (playwright-core), against the real
//! stack: a throwaway PostgreSQL, the host serving spin.toml with the built
//! components. This test seeds the data through the API, runs the script,
//! and stops and restarts the server when the script asks, so that the
//! failed save it checks is a real outage.
//!
//! Needs `chromium` (or `CHROMIUM_PATH`), `node` and
//! `npm ci --prefix tests/browser`; without them it fails and says so.
//!
//! Signing in with Supabase Auth runs against the real Auth (GoTrue) that
//! the script `GOTRUE_RUN` names starts (`../shared/gotrue/run-gotrue.sh`,
//! with `stop-gotrue.sh` beside it); without it that test prints `NOT RUN`
//! and `cargo xtask test`'s summary says so.

#[path = "support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use sha2::Digest;
use support::{Reply, Server, borrowed, repo_root};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const SECRET: &str = "browser-test-jwt-secret-long-enough-for-hs256";
const ASSESSOR: &str = "assessor@example.com";
/// Long enough to hear, short enough to play to its end quickly.
const CLIP_SECS: f64 = 0.6;
/// The whole browser run; the script's own waits are far shorter.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(240);

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(secret: &str, claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn assessor_claims() -> Value {
    json!({
        "role": "authenticated", "email": ASSESSOR,
        "sub": "6f1c1d3e-0000-4000-8000-00000000a55e", "exp": now() + 3600
    })
}

/// A mono 16-bit PCM WAV of a sine tone: real audio Chromium decodes, so
/// the page's player can be played to its end.
fn wav(frequency: f64) -> Vec<u8> {
    let rate: u32 = 8000;
    let samples = (f64::from(rate) * CLIP_SECS) as u32;
    let data_len = samples * 2;
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes()); // fmt chunk size
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes()); // bytes per second
    out.extend_from_slice(&2u16.to_le_bytes()); // block align
    out.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for n in 0..samples {
        let t = f64::from(n) / f64::from(rate);
        let sample = (t * frequency * std::f64::consts::TAU).sin() * 0.3 * f64::from(i16::MAX);
        out.extend_from_slice(&(sample as i16).to_le_bytes());
    }
    out
}

/// What the browser run needs on this machine, or what to install.
fn prerequisites() -> (PathBuf, PathBuf) {
    let chromium = std::env::var_os("CHROMIUM_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        chromium.exists(),
        "{} is missing: install Debian's Chromium (apt-get install chromium) \
         or set CHROMIUM_PATH; the browser tests cannot run without it",
        chromium.display()
    );
    let project = repo_root().join("tests/browser");
    assert!(
        project
            .join("node_modules/playwright-core/package.json")
            .exists(),
        "tests/browser/node_modules is missing: run `npm ci --prefix tests/browser` (Node 20 or later)"
    );
    let node = std::process::Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|out| out.status.success()),
        "node is not on PATH: install Node.js 20 or later (apt-get install nodejs npm)"
    );
    (chromium, project)
}

/// Where the run leaves its screenshots, beside the build output.
fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    target.join("test-output/assess")
}

struct Stack {
    server: Option<Server>,
    addr: std::net::SocketAddr,
    variables: Vec<(&'static str, String)>,
}

impl Stack {
    fn server(&self) -> &Server {
        self.server.as_ref().expect("the server is running")
    }

    async fn call(&self, method: &str, path: &str, content_type: &str, body: Bytes) -> Reply {
        let auth = format!("Bearer {}", token(SECRET, assessor_claims()));
        self.server()
            .send(
                method.parse().unwrap(),
                path,
                &[("authorization", &auth), ("content-type", content_type)],
                body,
            )
            .await
    }

    async fn create(&self, path: &str, body: Value) -> Value {
        let reply = self
            .call(
                "POST",
                path,
                "application/json",
                Bytes::from(body.to_string()),
            )
            .await;
        assert_eq!(reply.status, 201, "{path}: {}", reply.text());
        reply.json()
    }

    async fn stop(&mut self) {
        let server = self.server.take().expect("running");
        server.shutdown().await.expect("the server stopped cleanly");
    }

    /// A new server on the same address: the page keeps its URL.
    async fn restart(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(err) if Instant::now() < deadline => {
                    eprintln!("rebinding {}: {err}; retrying", self.addr);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(err) => panic!("rebinding {}: {err}", self.addr),
            }
        };
        self.server = Some(
            Server::project_on(listener, &borrowed(&self.variables))
                .await
                .expect("serving spin.toml again"),
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn assessors_listen_rate_and_lose_nothing_when_the_api_is_down() {
    let (chromium, project) = prerequisites();
    let db_url = integration_tests::db::fresh_database().await;
    let db_host = format!("127.0.0.1:{}", integration_tests::db::cluster().port());
    let variables = vec![
        ("db_url", db_url.clone()),
        ("db_host", db_host),
        ("jwt_secret", SECRET.to_owned()),
    ];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::project_on(listener, &borrowed(&variables))
        .await
        .expect("serving spin.toml");
    let mut stack = Stack {
        server: Some(server),
        addr,
        variables,
    };

    // Seed: a content with two fragments, three audio clips, and one
    // earlier rating by someone else, so the mean visibly moves.
    stack
        .create(
            "/api/content",
            json!({"title": "ตัวเลข", "content_type": "vocabulary", "native_text": "หนึ่ง สอง สาม",
                   "translation": "one two three", "ipa": "nɯ̀ŋ sɔ̌ːŋ sǎːm"}),
        )
        .await;
    let content = stack
        .create(
            "/api/content",
            json!({"title": "ทักทาย", "content_type": "dialogue", "native_text": "สวัสดีครับ ขอบคุณครับ",
                   "translation": "Hello. Thank you.", "ipa": "sa.wàt.diː kʰráp kʰɔ̀ːp.kʰun kʰráp"}),
        )
        .await;
    let content_id = content["id"].as_i64().unwrap();
    let mut fragments = Vec::new();
    for (text, meaning, ipa) in [
        ("สวัสดีครับ", "hello (said by a man)", "sa.wàt.diː kʰráp"),
        ("ขอบคุณครับ", "thank you (said by a man)", "kʰɔ̀ːp.kʰun kʰráp"),
    ] {
        fragments.push(
            stack
                .create(
                    "/api/fragments",
                    json!({"learning_content_id": content_id, "native_text": text,
                           "body_text": meaning, "ipa": ipa, "fragment_type": "phrase"}),
                )
                .await,
        );
    }
    let mut assets = Vec::new();
    let clips = [wav(440.0), wav(554.37), wav(659.25)];
    for (fragment, clip) in [&fragments[0], &fragments[0], &fragments[1]]
        .into_iter()
        .zip(&clips)
    {
        let reply = stack
            .call(
                "POST",
                &format!(
                    "/api/assets?fragment_id={}&asset_type=audio",
                    fragment["id"]
                ),
                "audio/wav",
                Bytes::from(clip.clone()),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text());
        assets.push(reply.json());
    }
    stack
        .create(
            "/api/rankings",
            json!({"asset_id": assets[0]["id"], "fragment_id": fragments[0]["id"],
                   "rank_score": "2.00", "assessed_by": "other@example.com"}),
        )
        .await;

    let fixture = json!({
        "content_id": content_id,
        "duration_secs": CLIP_SECS,
        "fragments": fragments,
        // The digests of the files as made here, not as the server reports.
        "assets": assets[..2].iter().zip(&clips).map(|(a, bytes)| json!({
            "id": a["id"],
            "sha256": hex::encode(sha2::Sha256::digest(bytes)),
        })).collect::<Vec<_>>(),
        "third_asset_id": assets[2]["id"],
    });
    let artifacts = artifacts_dir();
    std::fs::create_dir_all(&artifacts).unwrap();
    let bad_token = token("some-other-projects-secret-of-length", assessor_claims());

    let started = Instant::now();
    let script = Script::new(&project, "assess.test.mjs", &chromium, &artifacts)
        .env("ASSESS_BASE_URL", format!("http://{addr}"))
        .env("ASSESS_TOKEN", token(SECRET, assessor_claims()))
        .env("ASSESS_BAD_TOKEN", bad_token)
        .env("ASSESS_ASSESSOR", ASSESSOR)
        .env("ASSESS_FIXTURE", fixture.to_string());
    let status = script
        .run(async |command| match command {
            "stop-api" => stack.stop().await,
            "start-api" => stack.restart().await,
            other => panic!("the script asked for {other:?}"),
        })
        .await;
    println!(
        "browser run: {:.1}s; screenshots: {}, {}",
        started.elapsed().as_secs_f64(),
        artifacts.join("assess-desktop.png").display(),
        artifacts.join("assess-phone.png").display()
    );
    assert!(
        status.success(),
        "the browser scenario failed ({status}); see its output above"
    );
    for shot in ["assess-desktop.png", "assess-phone.png"] {
        let size = std::fs::metadata(artifacts.join(shot)).map_or(0, |m| m.len());
        assert!(size > 10_000, "{shot} is missing or blank ({size} bytes)");
    }

    // What the page did is what the database holds: one ranking per asset
    // for this assessor, with the last score and the notes typed.
    let client = integration_tests::db::connect(&db_url).await;
    let rows = client
        .query(
            "SELECT asset_id, rank_score::text, assessment_notes FROM rankings
             WHERE assessed_by = $1 ORDER BY asset_id",
            &[&ASSESSOR],
        )
        .await
        .unwrap();
    let got: Vec<(i32, String, Option<String>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let id = |a: &Value| a["id"].as_i64().unwrap() as i32;
    assert_eq!(
        got,
        [
            (
                id(&assets[0]),
                "5.00".to_owned(),
                Some("clear voice, tones right".to_owned())
            ),
            (id(&assets[1]), "3.00".to_owned(), None),
        ]
    );
}

/// A browser script of tests/browser run by node, its `@@control` lines
/// answered by the caller.
struct Script {
    command: tokio::process::Command,
}

impl Script {
    fn new(project: &Path, file: &str, chromium: &Path, artifacts: &Path) -> Script {
        let mut command = tokio::process::Command::new("node");
        command
            .arg(file)
            .current_dir(project)
            .env("ASSESS_ARTIFACTS", artifacts)
            .env("CHROMIUM_PATH", chromium)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        Script { command }
    }

    fn env(mut self, name: &str, value: impl AsRef<std::ffi::OsStr>) -> Script {
        self.command.env(name, value);
        self
    }

    /// Runs the script to its end; each control line is handed to
    /// `control`, and confirmed to the script once that has finished.
    async fn run(mut self, mut control: impl AsyncFnMut(&str)) -> std::process::ExitStatus {
        let mut child = self.command.spawn().expect("starting node");
        let mut stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let run = async {
            while let Some(line) = lines
                .next_line()
                .await
                .expect("reading the script's output")
            {
                let Some(command) = line.strip_prefix("@@control ") else {
                    println!("{line}");
                    continue;
                };
                control(command).await;
                stdin.write_all(b"ok\n").await.unwrap();
                stdin.flush().await.unwrap();
            }
            child.wait().await.expect("waiting for node")
        };
        tokio::time::timeout(SCRIPT_TIMEOUT, run)
            .await
            .unwrap_or_else(|_| panic!("the browser run took more than {SCRIPT_TIMEOUT:?}"))
    }
}

/// The variable naming the script that starts the real Supabase Auth.
const GOTRUE_RUN: &str = "GOTRUE_RUN";
/// How long Auth's access tokens live in the sign-in test: short, so that
/// the page renews its session several times within the run.
const AUTH_TOKEN_SECS: u64 = 30;

/// The real Supabase Auth (GoTrue) with its own PostgreSQL, as `run-gotrue.sh`
/// starts it: stopped and its state deleted when dropped.
struct Auth {
    run: PathBuf,
    state: tempfile::TempDir,
    /// What run-gotrue.sh wrote to STATE/env: GOTRUE_URL, SERVICE_ROLE_KEY, …
    env: HashMap<String, String>,
}

impl Auth {
    async fn start(run: PathBuf) -> Auth {
        let state = tempfile::tempdir().expect("a folder for Auth's state");
        let mut auth = Auth {
            run,
            state,
            env: HashMap::new(),
        };
        auth.launch(&[]).await;
        let text = std::fs::read_to_string(auth.state.path().join("env"))
            .expect("run-gotrue.sh writes STATE/env");
        auth.env = text
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        auth
    }

    async fn launch(&self, extra: &[(&str, String)]) {
        let out = tokio::process::Command::new(&self.run)
            .arg(self.state.path())
            // Tokens that expire within the run; the page sends `apikey`,
            // which a hosted project's gateway asks for, so Auth must allow
            // it in CORS requests.
            .env("GOTRUE_JWT_EXP", AUTH_TOKEN_SECS.to_string())
            .env("GOTRUE_CORS_ALLOWED_HEADERS", "apikey")
            .envs(extra.iter().map(|(k, v)| (*k, v)))
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap_or_else(|e| panic!("running {}: {e}", self.run.display()));
        assert!(
            out.status.success(),
            "{} failed ({}): {}{}",
            self.run.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn var(&self, name: &str) -> &str {
        self.env
            .get(name)
            .unwrap_or_else(|| panic!("run-gotrue.sh's env has no {name}"))
    }

    fn stop_script(&self) -> PathBuf {
        self.run.with_file_name("stop-gotrue.sh")
    }

    async fn stop(&self) {
        let status = tokio::process::Command::new(self.stop_script())
            .arg(self.state.path())
            .stdout(Stdio::null())
            .status()
            .await
            .expect("running stop-gotrue.sh");
        assert!(status.success(), "stop-gotrue.sh failed ({status})");
    }

    /// Starts it again on the same ports, with the same keys and users.
    async fn restart(&self) {
        let port = |url: &str| url.rsplit(':').next().unwrap().to_owned();
        self.launch(&[
            ("AUTH_PORT", port(self.var("GOTRUE_URL"))),
            ("PG_PORT", self.var("PGPORT").to_owned()),
        ])
        .await;
    }
}

impl Drop for Auth {
    fn drop(&mut self) {
        let _ = std::process::Command::new(self.stop_script())
            .arg(self.state.path())
            .arg("--purge")
            .stdout(Stdio::null())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn assessors_sign_in_with_supabase_auth_and_keep_their_session() {
    let Some(run) = std::env::var_os(GOTRUE_RUN).filter(|v| !v.is_empty()) else {
        println!(
            "NOT RUN: signing in with Supabase Auth needs the real Auth: set {GOTRUE_RUN} to \
             a script that starts it (../shared/gotrue/run-gotrue.sh, stop-gotrue.sh beside it)"
        );
        return;
    };
    let run = PathBuf::from(run)
        .canonicalize()
        .unwrap_or_else(|e| panic!("{GOTRUE_RUN} names no script: {e}"));
    let (chromium, project) = prerequisites();
    let auth = Auth::start(run).await;
    let auth_url = auth.var("GOTRUE_URL").to_owned();
    let jwks = std::fs::read_to_string(auth.state.path().join("jwks.json"))
        .expect("run-gotrue.sh keeps Auth's JWKS in STATE/jwks.json");

    let db_url = integration_tests::db::fresh_database().await;
    let db_host = format!("127.0.0.1:{}", integration_tests::db::cluster().port());
    // The app as a deployment against a Supabase project has it: Auth's
    // JWKS, issuer and audience, and the page pointed at Auth.
    let variables = vec![
        ("db_url", db_url.clone()),
        ("db_host", db_host),
        ("jwt_jwks", jwks),
        ("jwt_issuer", auth.var("JWT_ISSUER").to_owned()),
        ("jwt_audience", "authenticated".to_owned()),
        ("supabase_url", auth_url.clone()),
        ("supabase_publishable_key", auth.var("ANON_KEY").to_owned()),
    ];
    let server = Server::project(&borrowed(&variables))
        .await
        .expect("serving spin.toml");

    // Seed through SQL: the app accepts only Auth's users here.
    let client = integration_tests::db::connect(&db_url).await;
    let content_id: i32 = client
        .query_one(
            "INSERT INTO learning_content (title, content_type, native_text, translation, ipa)
             VALUES ('ทักทาย', 'dialogue', 'สวัสดีครับ', 'Hello.', 'sa.wàt.diː kʰráp') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let fragment_id: i32 = client
        .query_one(
            "INSERT INTO content_fragments (learning_content_id, native_text, body_text, fragment_type)
             VALUES ($1, 'สวัสดีครับ', 'hello (said by a man)', 'phrase') RETURNING id",
            &[&content_id],
        )
        .await
        .unwrap()
        .get(0);
    let mut asset_ids = Vec::new();
    for frequency in [440.0, 554.37] {
        let id: i32 = client
            .query_one(
                "INSERT INTO fragment_assets (fragment_id, asset_type, asset_data, content_type)
                 VALUES ($1, 'audio', $2, 'audio/wav') RETURNING id",
                &[&fragment_id, &wav(frequency)],
            )
            .await
            .unwrap()
            .get(0);
        asset_ids.push(id);
    }
    let fixture = json!({
        "content_id": content_id,
        "assets": asset_ids.iter().map(|id| json!({"id": id})).collect::<Vec<_>>(),
    });

    let artifacts = artifacts_dir();
    std::fs::create_dir_all(&artifacts).unwrap();
    let email = format!("assessor-{}@example.com", now());
    let started = Instant::now();
    let status = Script::new(&project, "sign-in.test.mjs", &chromium, &artifacts)
        .env("ASSESS_BASE_URL", format!("http://{}", server.addr))
        .env("ASSESS_AUTH_URL", &auth_url)
        .env("ASSESS_AUTH_SERVICE_KEY", auth.var("SERVICE_ROLE_KEY"))
        .env("ASSESS_AUTH_PUBLISHABLE_KEY", auth.var("ANON_KEY"))
        .env("ASSESS_AUTH_TOKEN_SECS", AUTH_TOKEN_SECS.to_string())
        .env("ASSESS_ASSESSOR", &email)
        .env(
            "ASSESS_UNCONFIRMED",
            format!("unconfirmed-{}@example.com", now()),
        )
        .env("ASSESS_FIXTURE", fixture.to_string())
        .run(async |command| match command {
            "stop-auth" => auth.stop().await,
            "start-auth" => auth.restart().await,
            other => panic!("the script asked for {other:?}"),
        })
        .await;
    println!(
        "sign-in run: {:.1}s; screenshots: {}, {}",
        started.elapsed().as_secs_f64(),
        artifacts.join("sign-in-desktop.png").display(),
        artifacts.join("sign-in-phone.png").display()
    );
    if !status.success()
        && let Some(output) = server.output()
    {
        println!("the server's output:\n{output}");
    }
    assert!(
        status.success(),
        "the sign-in scenario failed ({status}); see its output above"
    );
    for shot in ["sign-in-desktop.png", "sign-in-phone.png"] {
        let size = std::fs::metadata(artifacts.join(shot)).map_or(0, |m| m.len());
        assert!(size > 10_000, "{shot} is missing or blank ({size} bytes)");
    }

    // The ratings the page sent with Auth's tokens are stored under the
    // address the assessor signed up with, the last score of each.
    let rows = client
        .query(
            "SELECT asset_id, rank_score::text FROM rankings WHERE assessed_by = $1 ORDER BY asset_id",
            &[&email],
        )
        .await
        .unwrap();
    let got: Vec<(i32, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        got,
        [
            (asset_ids[0], "2.00".to_owned()),
            (asset_ids[1], "3.00".to_owned())
        ]
    );
}
