//! The `schema-migrate` command as a user runs it.

use std::path::Path;
use std::process::{Command, Output};

fn migrations_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations"))
}

fn run(database_url: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_schema-migrate"));
    command
        .env_remove("DATABASE_URL")
        .arg("--dir")
        .arg(migrations_dir())
        .args(args);
    if let Some(url) = database_url {
        command.env("DATABASE_URL", url);
    }
    command.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn applies_then_reports_up_to_date() {
    let cluster = throwaway_pg::Cluster::start().unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(cluster.create_database("app", None))
        .unwrap();
    let url = cluster.url("app");
    let files = std::fs::read_dir(migrations_dir())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "sql")
        })
        .count();

    let status = run(Some(&url), &["status"]);
    assert!(status.status.success(), "{}", text(&status.stderr));
    assert_eq!(text(&status.stdout).matches("pending  ").count(), files);

    let first = run(Some(&url), &[]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let out = text(&first.stdout);
    assert_eq!(out.matches("applied  ").count(), files, "{out}");
    assert!(
        out.contains(&format!("{files} applied now, 0 already applied")),
        "{out}"
    );

    let second = run(Some(&url), &["apply"]);
    assert!(second.status.success(), "{}", text(&second.stderr));
    let out = text(&second.stdout);
    assert!(
        out.contains(&format!("0 applied now, {files} already applied")),
        "{out}"
    );

    let status = run(Some(&url), &["status"]);
    assert!(text(&status.stdout).starts_with("up to date"));
}

#[test]
fn without_a_database_it_says_what_to_set() {
    let out = run(None, &[]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--database-url"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn an_unreachable_database_fails_with_a_message() {
    // Port 1 on loopback: nothing listens there.
    let out = run(
        Some("postgres://postgres@127.0.0.1:1/app?sslmode=disable"),
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("error: connecting to DATABASE_URL"),
        "{err}"
    );
}
