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
