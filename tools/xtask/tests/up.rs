//! `cargo xtask up` keeps the local database between runs: rows written
//! through the API before Ctrl-C are there after the next `up`; `--fresh`
//! starts empty; two `up` on one data folder are refused. `--auth-url`
//! points the assessment page and the API at a running Supabase Auth.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

/// A running `xtask up`, with what its banner handed out.
struct Up {
    child: Child,
    api: String,
    /// The service_role token (none with `--auth-url`: Auth's users sign in).
    token: Option<String>,
    database: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn up_command(data: &Path, db_port: u16, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
    command
        .args([
            "up",
            "--no-build",
            "--bundled-host",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data)
        .args(["--db-port", &db_port.to_string()])
        .args(extra)
        .env_remove("DATABASE_URL");
    command
}

fn start(data: &Path, db_port: u16, extra: &[&str]) -> Up {
    let mut child = up_command(data, db_port, extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting xtask up");
    let stdout = child.stdout.take().expect("piped stdout");
    let (mut api, mut token, mut database) = (None, None, None);
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.expect("reading the banner");
        if let Some(url) = line.strip_prefix("API:    ") {
            api = Some(url.trim_end_matches("/api/health").to_owned());
        } else if let Some(t) = line.trim_start().strip_prefix("service_role token: ") {
            token = Some(t.to_owned());
        } else if let Some(url) = line.strip_prefix("Database: ") {
            database = Some(url.to_owned());
        } else if line.starts_with("Ctrl-C stops everything") {
            break;
        }
    }
    // Read on, so that whatever it prints later finds the pipe open.
    std::thread::spawn(move || lines.for_each(drop));
    Up {
        child,
        api: api.expect("the banner names the API"),
        token,
        database: database.expect("the banner names the database"),
    }
}

impl Up {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let token = self
            .token
            .as_deref()
            .expect("the banner handed out a token");
        self.call_with(token, method, path, body)
    }

    fn call_with(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let url = format!("{}{path}", self.api);
        let auth = format!("Bearer {token}");
        let mut response = match body {
            Some(b) => agent
                .post(&url)
                .header("Authorization", &auth)
                .send_json(&b),
            None => agent.get(&url).header("Authorization", &auth).call(),
        }
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Ctrl-C, and the exit status.
    fn interrupt(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-INT", &pid]).status().unwrap();
        for _ in 0..600 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        panic!("xtask up did not stop within 60 s of Ctrl-C");
    }
}

#[test]
fn the_local_database_keeps_its_rows_across_runs_and_is_held_by_one_up() {
    app_server::components::wasm_dir().expect("building the components");
    let dir = tempfile::tempdir().unwrap();
    // Root runs the server as `postgres`, which must reach the folder.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let data = dir.path().join("pg");
    let db_port = free_port();

    let first = start(&data, db_port, &[]);
    assert!(
        first
            .database
            .contains(&format!("127.0.0.1:{db_port}/content")),
        "{}",
        first.database
    );
    let (status, row) = first.call(
        "POST",
        "/api/content",
        Some(json!({
            "title": "kept between runs", "content_type": "phrase",
            "native_text": "สวัสดี", "translation": "hello", "ipa": "sà.wàt.diː"
        })),
    );
    assert_eq!(status, 201, "{row}");
    let id = row["id"].as_i64().unwrap();
    assert!(first.interrupt().success(), "Ctrl-C is a clean stop");

    let second = start(&data, db_port, &[]);
    let (status, row) = second.call("GET", &format!("/api/content/{id}"), None);
    assert_eq!(status, 200, "the row survived the restart: {row}");
    assert_eq!(row["title"], "kept between runs");
    // A second `up` on the same folder is refused, and says why.
    let out = up_command(&data, free_port(), &[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("is in use by another `cargo xtask up`") && stderr.contains("--data-dir"),
        "{stderr}"
    );
    assert!(second.interrupt().success());

    let fresh = start(&data, db_port, &["--fresh"]);
    let (status, _) = fresh.call("GET", &format!("/api/content/{id}"), None);
    assert_eq!(status, 404, "--fresh starts empty");
    assert!(fresh.interrupt().success());
}

#[test]
fn an_auth_url_where_no_auth_answers_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let closed = format!("http://127.0.0.1:{}/auth/v1", free_port());
    let out = up_command(
        &dir.path().join("pg"),
        free_port(),
        &["--auth-url", &closed],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("{closed}/.well-known/jwks.json"))
            && stderr.contains("is Supabase Auth running there?"),
        "{stderr}"
    );
    assert!(!dir.path().join("pg").exists(), "no database was started");
}

/// Runs only where `GOTRUE_RUN` names the script that starts the real
/// Supabase Auth (`cargo xtask test`'s Supabase Auth leg).
#[test]
fn up_with_an_auth_url_serves_the_pages_sign_in_and_accepts_supabase_auth_tokens() {
    let Some(run) = std::env::var_os("GOTRUE_RUN").filter(|v| !v.is_empty()) else {
        println!("NOT RUN: set GOTRUE_RUN to the script that starts Supabase Auth");
        return;
    };
    app_server::components::wasm_dir().expect("building the components");
    let state = tempfile::tempdir().unwrap();
    let started = Command::new(&run)
        .arg(state.path())
        .env("GOTRUE_CORS_ALLOWED_HEADERS", "apikey")
        .output()
        .unwrap();
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let env: std::collections::HashMap<String, String> =
        std::fs::read_to_string(state.path().join("env"))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
    let stop = std::path::PathBuf::from(&run).with_file_name("stop-gotrue.sh");
    let _stop = Defer(Some(move || {
        let _ = Command::new(stop).arg(state.path()).arg("--purge").output();
    }));
    let (auth_url, anon) = (&env["GOTRUE_URL"], &env["ANON_KEY"]);

    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let up = start(
        &dir.path().join("pg"),
        free_port(),
        &["--auth-url", auth_url, "--auth-publishable-key", anon],
    );
    assert!(up.token.is_none(), "no development tokens with --auth-url");

    // The page learns where to sign in.
    let config: Value = ureq::get(format!("{}/assess/config.json", up.api))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    assert_eq!(
        config,
        json!({"auth": {"url": auth_url, "publishable_key": anon}})
    );
    // A user signed up at Auth is accepted by the API.
    let session: Value = ureq::post(format!("{auth_url}/signup"))
        .send_json(json!({"email": "up@example.com", "password": "a long passphrase"}))
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    let token = session["access_token"].as_str().expect("signed up and in");
    let (status, body) = up.call_with(token, "GET", "/api/content", None);
    assert_eq!(status, 200, "{body}");
    assert!(up.interrupt().success());
}

/// Runs its closure when dropped, even when the test panics.
struct Defer<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> Drop for Defer<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}
