//! The Windows leg of `cargo xtask test`: builds `local-agent.exe` for
//! `x86_64-pc-windows-gnu` (release, the build `cargo xtask dist` packs)
//! and runs `local-agent/tests/windows.rs` with it under Wine, against the
//! real Spin and the real Anki when the other legs have them. Without Wine
//! or mingw-w64 it is not run, and the summary says so.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::dist::WINDOWS;

/// The test target, its variables (see local-agent/tests/windows.rs), and
/// its test that needs Anki.
const SUITE: &str = "windows";
const EXE_ENV: &str = "LOCAL_AGENT_WINDOWS_EXE";
const WINE_ENV: &str = "WINE";
const ANKI_TEST: &str = "anki_push_on_windows";

pub enum Leg {
    NotRun(String),
    Ran {
        ok: bool,
        build: Duration,
        tests: Duration,
        anki: bool,
    },
}

/// Wine's loader: `WINE`, Debian's, or `wine64`/`wine` on PATH.
fn wine() -> Option<PathBuf> {
    if let Some(wine) = std::env::var_os(WINE_ENV).filter(|w| !w.is_empty()) {
        return Some(PathBuf::from(wine));
    }
    let debian = PathBuf::from("/usr/lib/wine/wine64");
    if debian.is_file() {
        return Some(debian);
    }
    let path = std::env::var_os("PATH")?;
    ["wine64", "wine"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

pub fn run(root: &Path, spin: Option<&Path>, anki: Option<&Path>) -> Result<Leg> {
    let Some(wine) = wine() else {
        return Ok(Leg::NotRun(
            "no Wine (Debian: apt-get install wine64; ./dev test installs it)".into(),
        ));
    };
    if let Some(missing) = WINDOWS.missing() {
        return Ok(Leg::NotRun(missing));
    }
    eprintln!("Windows leg: local-agent.exe under {}", wine.display());
    let started = Instant::now();
    let exe = match WINDOWS.build(root) {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("{e:#}");
            return Ok(Leg::Ran {
                ok: false,
                build: started.elapsed(),
                tests: Duration::ZERO,
                anki: false,
            });
        }
    };
    let build = started.elapsed();
    let started = Instant::now();
    let mut args: Vec<String> = [
        "--workspace",
        "--locked",
        "--test",
        SUITE,
        "--",
        "--ignored",
    ]
    .map(str::to_owned)
    .to_vec();
    // Without Anki its test is left out, and the summary says so.
    if anki.is_none() {
        args.extend(["--skip".to_owned(), ANKI_TEST.to_owned()]);
    }
    args.extend(["--test-threads".to_owned(), "1".to_owned()]);
    let mut vars = vec![(EXE_ENV, exe.as_path()), (WINE_ENV, wine.as_path())];
    vars.extend(anki.map(|script| (crate::test::ANKI_RUN, script)));
    let ok = crate::test::cargo_test(root, &args, spin, &vars)?;
    Ok(Leg::Ran {
        ok,
        build,
        tests: started.elapsed(),
        anki: anki.is_some(),
    })
}

impl Leg {
    pub fn failed(&self) -> bool {
        matches!(self, Leg::Ran { ok: false, .. })
    }

    pub fn summary(&self, spin: bool) -> String {
        match self {
            Leg::NotRun(why) => format!("NOT RUN: {why}"),
            Leg::Ran {
                ok,
                build,
                tests,
                anki,
            } => format!(
                "{} ({:.0} s: local-agent.exe built in {:.0} s, the learner's scenario{}{}{})",
                if *ok { "passed" } else { "FAILED" },
                (*build + *tests).as_secs_f64(),
                build.as_secs_f64(),
                if *anki {
                    " and `anki push` into the real Anki"
                } else {
                    ""
                },
                if spin {
                    ", served by the real Spin"
                } else {
                    ""
                },
                if *anki {
                    ""
                } else {
                    "; its `anki push` NOT RUN: no ANKI_RUN"
                },
            ),
        }
    }
}
