//! The command line as a user meets it: help, errors and exit codes,
//! configuration precedence, JSON output, quiet pipes.

mod support;

use std::process::Output;

use serde_json::Value;
use support::agent_command;

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn config(&self) -> std::path::PathBuf {
        self.dir.path().join("config.toml")
    }

    fn db(&self) -> std::path::PathBuf {
        self.dir.path().join("agent.db")
    }

    /// The binary with a private home, so that neither the caller's
    /// config nor its store can leak in.
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let home = self.dir.path().join("home");
        let mut command = agent_command();
        command
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .args(args);
        for (k, v) in env {
            command.env(k, v);
        }
        command.output().unwrap()
    }

    fn run_ok(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let out = self.run(args, env);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        out
    }

    fn json(&self, args: &[&str], env: &[(&str, &str)]) -> Value {
        let out = self.run_ok(args, env);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {}", text(&out.stdout)))
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    port
}

#[test]
fn help_lists_the_commands_with_examples() {
    let env = Env::new();
    let out = env.run_ok(&["--help"], &[]);
    let help = text(&out.stdout);
    for word in [
        "init",
        "pull",
        "embed",
        "search",
        "status",
        "completions",
        "Examples:",
        "THAI_AGENT_API_URL",
    ] {
        assert!(help.contains(word), "--help lacks {word}:\n{help}");
    }
    let search = text(&env.run_ok(&["search", "--help"], &[]).stdout);
    assert!(
        search.contains("--content-type") && search.contains("Examples:"),
        "{search}"
    );
    let version = text(&env.run_ok(&["--version"], &[]).stdout);
    assert_eq!(
        version.trim(),
        format!("local-agent {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_bad_flag_exits_2_naming_it() {
    let env = Env::new();
    let out = env.run(&["pull", "--ful"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("--ful") && err.contains("--full"), "{err}");
    let out = env.run(&["search", "x", "--k", "many"], &[]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn an_unreachable_api_fails_with_what_to_check() {
    let env = Env::new();
    let url = format!("http://127.0.0.1:{}", closed_port());
    let started = std::time::Instant::now();
    let out = env.run(
        &[
            "--db",
            env.db().to_str().unwrap(),
            "--api-url",
            &url,
            "--tries",
            "2",
            "pull",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains(&url), "{err}");
    assert!(
        err.contains("cannot reach the API") && err.contains("--api-url"),
        "{err}"
    );
    assert!(err.contains("2 attempt(s)"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));

    // Nothing configured at all: say how to configure.
    let out = env.run(&["--db", env.db().to_str().unwrap(), "pull"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("local-agent init"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn flags_beat_the_environment_which_beats_the_config_file() {
    let env = Env::new();
    std::fs::write(
        env.config(),
        "api_url = \"http://from-file:1\"\ntoken = \"file-token\"\n[embed]\nmodel = \"file-model\"\nurl = \"http://embed:2/v1\"\n",
    )
    .unwrap();
    let config = env.config();
    let cfg = config.to_str().unwrap();
    let show = |args: &[&str], vars: &[(&str, &str)]| -> Value {
        let mut all = vec!["--config", cfg, "--json"];
        all.extend_from_slice(args);
        all.push("config");
        env.json(&all, vars)
    };
    let file_only = show(&[], &[]);
    assert_eq!(file_only["api_url"]["value"], "http://from-file:1");
    assert_eq!(file_only["api_url"]["source"], "file");
    assert_eq!(file_only["token"]["value"], "<redacted>", "{file_only}");
    assert_eq!(file_only["embed"]["model"]["value"], "file-model");

    let vars = [
        ("THAI_AGENT_API_URL", "http://from-env:2"),
        ("THAI_AGENT_EMBED_MODEL", "env-model"),
    ];
    let with_env = show(&[], &vars);
    assert_eq!(with_env["api_url"]["value"], "http://from-env:2");
    assert_eq!(with_env["api_url"]["source"], "env");
    assert_eq!(with_env["embed"]["model"]["value"], "env-model");
    assert_eq!(with_env["token"]["source"], "file");

    let with_flag = show(&["--api-url", "http://from-flag:3"], &vars);
    assert_eq!(with_flag["api_url"]["value"], "http://from-flag:3");
    assert_eq!(with_flag["api_url"]["source"], "flag");

    // The config file's own location follows the same order.
    let other = env.dir.path().join("other.toml");
    std::fs::write(&other, "api_url = \"http://other:4\"\n").unwrap();
    let via_env = env.json(
        &["--json", "config"],
        &[("THAI_AGENT_CONFIG", other.to_str().unwrap())],
    );
    assert_eq!(via_env["api_url"]["value"], "http://other:4");
    assert_eq!(via_env["config_file"]["source"], "env");
}

#[test]
fn defaults_live_in_the_platform_directories() {
    let env = Env::new();
    let shown = env.json(&["--json", "config"], &[]);
    let home = env.dir.path().join("home");
    assert_eq!(
        shown["config_file"]["value"],
        home.join(".config/local-agent/config.toml")
            .to_str()
            .unwrap()
    );
    assert_eq!(
        shown["db"]["value"],
        home.join(".local/share/local-agent/agent.db")
            .to_str()
            .unwrap()
    );
    assert_eq!(shown["db"]["source"], "default");
    assert_eq!(shown["embed"]["model"]["value"], "hashed-ngrams-v1");
}

#[test]
fn init_writes_a_private_config_and_protects_an_existing_token() {
    let env = Env::new();
    let cfg = env.config();
    let cfg = cfg.to_str().unwrap();
    let url = format!("http://127.0.0.1:{}", closed_port());
    let out = env.run_ok(
        &[
            "--config",
            cfg,
            "--api-url",
            &url,
            "--token",
            "tok-1",
            "init",
        ],
        &[],
    );
    let said = text(&out.stdout);
    assert!(
        said.contains("does not answer yet") && said.contains("local-agent pull"),
        "{said}"
    );
    let written = std::fs::read_to_string(cfg).unwrap();
    assert!(
        written.contains(&url) && written.contains("tok-1"),
        "{written}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(cfg).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let out = env.run(
        &[
            "--config",
            cfg,
            "--api-url",
            &url,
            "--token",
            "tok-2",
            "init",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--force"),
        "{}",
        text(&out.stderr)
    );
    assert!(std::fs::read_to_string(cfg).unwrap().contains("tok-1"));
    env.run_ok(
        &[
            "--config",
            cfg,
            "--api-url",
            &url,
            "--token",
            "tok-2",
            "init",
            "--force",
        ],
        &[],
    );
    assert!(std::fs::read_to_string(cfg).unwrap().contains("tok-2"));

    // Then everything else reads it.
    let shown = env.json(&["--config", cfg, "--json", "config"], &[]);
    assert_eq!(shown["api_url"]["value"], url.as_str());

    // A typo in the file is reported with the file and the key.
    std::fs::write(cfg, "api-url = \"x\"\n").unwrap();
    let out = env.run(&["--config", cfg, "status"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("config.toml") && err.contains("api-url"),
        "{err}"
    );
}

#[test]
fn status_and_search_on_a_new_store() {
    let env = Env::new();
    let db = env.db();
    let db = db.to_str().unwrap();
    let status = env.json(&["--db", db, "--json", "status"], &[]);
    assert_eq!(status["schema_version"], local_agent::store::SCHEMA_VERSION);
    assert_eq!(status["mirror"]["learning_content"], 0);
    assert_eq!(status["sync"]["phase"], "none");
    assert_eq!(status["api"]["answers"], false);

    let out = env.run(&["--db", db, "search", "สวัสดี"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("local-agent pull") && err.contains("local-agent embed"),
        "{err}"
    );

    // Output to a pipe carries no progress bar or terminal codes.
    let out = env.run_ok(&["--db", db, "embed"], &[]);
    assert!(
        out.stderr.is_empty(),
        "stderr in a pipe: {:?}",
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("run `local-agent pull` first"));
}

#[test]
fn completions_are_generated_for_common_shells() {
    let env = Env::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = env.run_ok(&["completions", shell], &[]);
        let script = text(&out.stdout);
        assert!(
            script.contains("local-agent") && script.contains("pull"),
            "{shell}"
        );
    }
}

#[test]
fn tokens_are_never_printed() {
    let stack = support::Stack::start();
    support::seed(&stack, 3);
    let mut agent = support::Agent::new(&stack);
    let (legacy, _) =
        support::migration::legacy_file(agent.dir.path(), &legacy_fixture::Spec::small(7));
    let legacy = legacy.to_str().unwrap().to_owned();
    let good = stack.token("authenticated");
    let forged = {
        // The right shape with a signature the server will refuse.
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        parts[2] = parts[2].chars().rev().collect();
        parts.join(".")
    };
    let mut said = String::new();
    let mut failures = 0;
    for token in [&good, &forged] {
        agent.token = token.clone();
        for args in [
            &["config"][..],
            &["--json", "config"],
            &["status"],
            &["--json", "pull"],
            &["pull"],
            &["search", "น้ำ"],
            // Not a service-role token: refused by the import endpoints.
            &["migrate", &legacy],
            &["--json", "migrate", &legacy],
        ] {
            let out = agent.run(args);
            failures += usize::from(!out.status.success());
            said += &text(&out.stdout);
            said += &text(&out.stderr);
        }
    }
    // The forged token and the migrations must have failed, and said why.
    assert!(failures >= 6, "{failures} failures\n{said}");
    assert!(
        said.contains("401") || said.to_lowercase().contains("token"),
        "{said}"
    );
    for token in [&good, &forged] {
        for part in token.split('.') {
            assert!(
                !said.contains(part),
                "a token part was printed: {part}\n{said}"
            );
        }
    }
}

#[test]
fn an_api_that_never_answers_times_out_is_retried_and_names_the_setting() {
    let env = Env::new();
    let url = format!("http://{}", support::silent_server());
    let started = std::time::Instant::now();
    let out = env.run(
        &[
            "pull",
            "--api-url",
            &url,
            "--api-timeout",
            "1",
            "--tries",
            "2",
        ],
        &[],
    );
    let elapsed = started.elapsed();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&url), "names the server: {stderr}");
    assert!(stderr.contains("no answer within 1 s"), "{stderr}");
    assert!(
        stderr.contains("--api-timeout"),
        "names the setting: {stderr}"
    );
    assert!(stderr.contains("2 attempt(s)"), "retried: {stderr}");
    // Two tries of 1 s and the backoff between them, not a wait without end.
    assert!(elapsed < std::time::Duration::from_secs(30), "{elapsed:?}");
}
