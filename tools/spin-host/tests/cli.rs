//! The `spin-host` binary refuses to start without a required variable,
//! and says which one and how to set it.

use std::process::Command;

#[test]
fn missing_required_variable_stops_startup_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("spin.toml");
    std::fs::write(
        &manifest,
        r#"
spin_manifest_version = 2
[application]
name = "needs-a-secret"
[variables]
jwt_secret = { required = true, secret = true }
[[trigger.http]]
route = "/..."
component = "app"
[component.app]
source = "app.wasm"
[component.app.variables]
secret = "{{ jwt_secret }}"
"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_spin-host"))
        .args([
            "--from",
            manifest.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .env_remove("SPIN_VARIABLE_JWT_SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("\"jwt_secret\""), "{stderr}");
    assert!(stderr.contains("SPIN_VARIABLE_JWT_SECRET"), "{stderr}");

    // The same manifest with the variable set gets past variables, to the
    // (missing) component file.
    let out = Command::new(env!("CARGO_BIN_EXE_spin-host"))
        .args([
            "--from",
            manifest.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .env("SPIN_VARIABLE_JWT_SECRET", "s")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("app.wasm"), "{stderr}");
    assert!(!stderr.contains("jwt_secret"), "{stderr}");
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Builds the test probe component (release, wasm32-wasip2).
fn probe_wasm() -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&root)
        .args([
            "build",
            "--quiet",
            "--target",
            "wasm32-wasip2",
            "--release",
            "-p",
            "test-probe",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("wasm32-wasip2/release/test_probe.wasm")
}

#[test]
fn serves_logs_each_request_and_stops_cleanly_on_sigterm() {
    use std::io::{BufRead, BufReader, Read, Write};

    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("spin.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"
spin_manifest_version = 2
[application]
name = "probe"
[[trigger.http]]
route = "/..."
component = "probe"
[component.probe]
source = "{}"
"#,
            probe_wasm().display()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_spin-host"))
        .args([
            "--from",
            manifest.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Killed when the test ends, whether it passed or not.
    let mut child = KillOnDrop(child);
    let child = &mut child.0;
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "host exited early"
        );
        if let Some(rest) = line.trim().strip_prefix("Serving http://") {
            break rest.to_owned();
        }
    };

    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "GET /x/ping HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("pong"), "{response}");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "the host did not stop on SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    let log: Vec<&str> = rest
        .lines()
        .filter(|l| l.contains("spin_host::request"))
        .collect();
    assert_eq!(log.len(), 1, "one log line per request: {rest}");
    assert!(log[0].contains("GET /x/ping 200 probe"), "{}", log[0]);
    assert!(rest.contains("Stopped."), "{rest}");
}
