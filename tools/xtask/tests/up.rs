//! `cargo xtask up` keeps the local database between runs: rows written
//! through the API before Ctrl-C are there after the next `up`; `--fresh`
//! starts empty; two `up` on one data folder are refused.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

/// A running `xtask up`, with what its banner handed out.
struct Up {
    child: Child,
    api: String,
    token: String,
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
        token: token.expect("the banner hands out a service_role token"),
        database: database.expect("the banner names the database"),
    }
}

impl Up {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let url = format!("{}{path}", self.api);
        let auth = format!("Bearer {}", self.token);
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
