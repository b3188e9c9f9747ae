//! The Windows build of `local-agent` (`x86_64-pc-windows-gnu`, the `.exe`
//! the release archive holds) run under Wine as a learner runs it on
//! Windows: `init` with the config and the store in their default places
//! under `%APPDATA%`, `migrate` of a legacy file, `pull`, `embed`,
//! `search` with a Thai argument, `status`, `config`, and `anki push` into
//! the real Anki desktop, against the real components (under the real Spin
//! when `SPIN_BIN` is set) and PostgreSQL. The checks are the Linux
//! suites': the mirror equals the server, the migration is exact, the
//! notes, decks and sound files' bytes are in the collection.
//!
//! Everything a Windows path can hold that an ASCII one cannot is there:
//! the Windows user is `ผู้เรียน` (Wine names the profile folder after
//! `USER`), the exe, the legacy file and the Wine prefix sit in a folder
//! named `ผู้เรียน test …`, with a space.
//!
//! Needs `LOCAL_AGENT_WINDOWS_EXE` (the built `.exe`), Wine (`WINE`, else
//! `/usr/lib/wine/wine64`, `wine64` or `wine` on PATH) and mingw-w64's
//! `x86_64-w64-mingw32-gcc` (`WINDOWS_CC`). The tests are ignored
//! otherwise; `cargo xtask test` builds the exe and runs them when Wine and
//! mingw-w64 are there, and says `Windows (Wine): NOT RUN` when not. By hand:
//! `LOCAL_AGENT_WINDOWS_EXE=target/x86_64-pc-windows-gnu/release/local-agent.exe
//! cargo test -p local-agent --test windows -- --ignored --test-threads 1`
//! (the Anki test also needs `ANKI_RUN`, as `real_anki.rs` does).
//!
//! Wine 8.0 lacks `ProcessPrng` (bcryptprimitives.dll), which Rust's
//! standard library imports and Windows 10 and 11 have. When the exe does
//! not start for that reason, the set-up builds `tests/wine/process_prng.c`
//! into a `bcryptprimitives.dll` beside the test's copy of the exe. That
//! helps Wine only: the exe is the one that ships, unchanged.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use legacy_fixture::Spec;
use serde_json::{Value, json};
use support::anki_desktop::{RealAnki, assert_collection_matches};
use support::migration::{assert_migration_exact, legacy_file};
use support::{Stack, TABLES, assert_store_equals_server};

/// The built Windows binary.
const EXE_ENV: &str = "LOCAL_AGENT_WINDOWS_EXE";
/// The Wine loader to run it with.
const WINE_ENV: &str = "WINE";
/// mingw-w64's C compiler, for the ProcessPrng DLL.
const CC_ENV: &str = "WINDOWS_CC";

/// The Windows user name (Wine takes it from `USER`).
const USER_NAME: &str = "ผู้เรียน";

/// The longest one command may take under Wine (the first one creates the
/// Wine prefix, about 10 s).
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// A Wine prefix of the test's own, the exe copied into a folder with a
/// space and Thai in its name, and how to run it there.
struct Windows {
    root: tempfile::TempDir,
    prefix: PathBuf,
    exe: PathBuf,
    wine: PathBuf,
    runs: std::cell::Cell<usize>,
}

fn wine_binary() -> PathBuf {
    if let Some(wine) = std::env::var_os(WINE_ENV).filter(|w| !w.is_empty()) {
        return PathBuf::from(wine);
    }
    let debian = PathBuf::from("/usr/lib/wine/wine64");
    if debian.is_file() {
        return debian;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    ["wine64", "wine"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
        .expect("Wine: set WINE, or install it (Debian: apt-get install wine64)")
}

/// The path Wine's `Z:` drive (the Unix root) gives a Unix path.
fn windows_path(unix: &Path) -> String {
    format!(
        "Z:{}",
        unix.to_str().expect("a UTF-8 path").replace('/', "\\")
    )
}

impl Windows {
    fn set_up() -> Windows {
        let built = std::env::var_os(EXE_ENV).map(PathBuf::from).expect(
            "LOCAL_AGENT_WINDOWS_EXE must name the built local-agent.exe \
             (cargo build --release --target x86_64-pc-windows-gnu -p local-agent); \
             `cargo xtask test` sets it",
        );
        let root = tempfile::Builder::new()
            .prefix("ผู้เรียน test ")
            .tempdir()
            .expect("a temporary directory");
        let programs = root.path().join("Program Files").join("thai agent");
        std::fs::create_dir_all(&programs).unwrap();
        let exe = programs.join("local-agent.exe");
        std::fs::copy(&built, &exe).unwrap_or_else(|e| panic!("copying {}: {e}", built.display()));
        let windows = Windows {
            prefix: root.path().join("wine prefix"),
            exe,
            wine: wine_binary(),
            root,
            runs: std::cell::Cell::new(0),
        };
        let started = Instant::now();
        let probe = windows.run(&["--version"], &[]);
        println!(
            "Wine prefix created, first run in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        if !probe.status.success() {
            // Wine 8 lacks ProcessPrng; see the module's documentation.
            windows.add_process_prng();
        }
        let version = windows.run(&["--version"], &[]);
        assert!(
            version.status.success(),
            "local-agent.exe --version under Wine: {}",
            String::from_utf8_lossy(&version.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&version.stdout).trim(),
            format!("local-agent {}", env!("CARGO_PKG_VERSION"))
        );
        windows
    }

    fn add_process_prng(&self) {
        let cc = std::env::var(CC_ENV).unwrap_or_else(|_| "x86_64-w64-mingw32-gcc".into());
        let source = support::repo_root().join("local-agent/tests/wine/process_prng.c");
        let dll = self.exe.with_file_name("bcryptprimitives.dll");
        let out = Command::new(&cc)
            .args(["-shared", "-O2", "-o"])
            .arg(&dll)
            .arg(&source)
            .arg("-ladvapi32")
            .output()
            .unwrap_or_else(|e| panic!("running {cc} (mingw-w64): {e}"));
        assert!(
            out.status.success(),
            "building the ProcessPrng DLL: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        println!(
            "this Wine lacks ProcessPrng: {} placed beside the test's exe",
            dll.display()
        );
    }

    /// `C:\users\<user>\AppData\Roaming` as a Unix path.
    fn roaming(&self) -> PathBuf {
        self.prefix
            .join("drive_c/users")
            .join(USER_NAME)
            .join("AppData/Roaming")
    }

    /// The store in its default place, as a Unix path.
    fn store(&self) -> rusqlite::Connection {
        let path = self
            .roaming()
            .join("thai-content/local-agent/data/agent.db");
        rusqlite::Connection::open(&path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
    }

    /// Starts the exe under Wine with `args` and the extra variables, none
    /// of the caller's THAI_AGENT_* ones, its output in files.
    fn spawn(&self, args: &[&str], vars: &[(&str, &str)]) -> Run {
        let n = self.runs.get();
        self.runs.set(n + 1);
        let stdout = self.root.path().join(format!("run-{n}.out"));
        let stderr = self.root.path().join(format!("run-{n}.err"));
        let mut command = Command::new(&self.wine);
        command
            .arg(&self.exe)
            .args(args)
            .current_dir(self.root.path())
            .env("WINEPREFIX", &self.prefix)
            .env("USER", USER_NAME)
            .env("LOGNAME", USER_NAME)
            // No Mono or Gecko installer prompts when the prefix is made;
            // no debug channels on stderr (the exe's own stderr is checked).
            .env("WINEDLLOVERRIDES", "mscoree,mshtml=")
            .env("WINEDEBUG", "-all")
            .env_remove("DISPLAY")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("THAI_AGENT_") {
                command.env_remove(key);
            }
        }
        command.envs(vars.iter().copied());
        Run {
            child: command.spawn().expect("starting Wine"),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            stdout,
            stderr,
        }
    }

    /// Runs the exe to its end; fails the test past RUN_LIMIT.
    fn run(&self, args: &[&str], vars: &[(&str, &str)]) -> Output {
        self.spawn(args, vars).finish()
    }

    /// Runs with `--json`, asserts success, returns the parsed output.
    fn json(&self, args: &[&str], vars: &[(&str, &str)]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run(&all, vars);
        assert!(
            out.status.success(),
            "local-agent.exe {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "local-agent.exe {args:?} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Pulls until the store satisfies `sql` (see support::pull_until).
    fn pull_until(&self, sql: &str) {
        for _ in 0..100 {
            self.json(&["pull"], &[]);
            if self
                .store()
                .query_row(sql, [], |r| r.get::<_, bool>(0))
                .unwrap()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("the store never satisfied {sql}");
    }

    /// `init` with the API and a reader's token, config in its default place.
    fn init(&self, stack: &Stack) {
        let report = self.json(
            &[
                "init",
                "--api-url",
                &stack.api_url,
                "--token",
                &stack.token("anon"),
            ],
            &[],
        );
        assert_eq!(report["api_answers"], true, "{report}");
        assert_eq!(report["token_saved"], true, "{report}");
        let file = self
            .roaming()
            .join("thai-content/local-agent/config/config.toml");
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("the config file {}: {e}", file.display()));
        assert!(text.contains(&stack.api_url), "{text}");
    }
}

/// One run of the exe under Wine.
struct Run {
    child: std::process::Child,
    args: Vec<String>,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Run {
    fn finish(mut self) -> Output {
        let deadline = Instant::now() + RUN_LIMIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("polling Wine") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "local-agent.exe {:?} still running after {RUN_LIMIT:?}: {}",
                    self.args,
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Output {
            status,
            stdout: std::fs::read(&self.stdout).unwrap(),
            stderr: std::fs::read(&self.stderr).unwrap(),
        }
    }
}

impl Drop for Windows {
    fn drop(&mut self) {
        // Wine's server for this prefix lingers a few seconds after the
        // last program; stop it before the prefix is removed.
        let server = ["wineserver", "wineserver64"]
            .iter()
            .map(|name| self.wine.with_file_name(name))
            .find(|path| path.is_file())
            .unwrap_or_else(|| PathBuf::from("wineserver"));
        let _ = Command::new(server)
            .arg("-k")
            .env("WINEPREFIX", &self.prefix)
            .status();
    }
}

fn count(conn: &rusqlite::Connection, table: &str) -> i64 {
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

#[test]
#[ignore = "needs the Windows build and Wine: set LOCAL_AGENT_WINDOWS_EXE (cargo xtask test does)"]
fn a_learners_day_on_windows() {
    let stack = Stack::start();
    let windows = Windows::set_up();
    let started = Instant::now();

    // `init` writes the config under %APPDATA%, and `config` says so.
    windows.init(&stack);
    let config = windows.json(&["config"], &[]);
    let roaming = format!(r"C:\users\{USER_NAME}\AppData\Roaming\thai-content\local-agent");
    assert_eq!(
        config["config_file"]["value"],
        format!(r"{roaming}\config\config.toml"),
        "{config}"
    );
    assert_eq!(config["config_file"]["source"], "default");
    assert_eq!(
        config["db"]["value"],
        format!(r"{roaming}\data\agent.db"),
        "{config}"
    );
    assert_eq!(config["db"]["source"], "default");
    assert_eq!(config["api_url"]["value"], stack.api_url.as_str());
    assert_eq!(config["api_url"]["source"], "file");
    assert_eq!(config["token"]["value"], "<redacted>", "{config}");
    assert_eq!(
        config["anki"]["url"]["value"], "http://127.0.0.1:8765",
        "the same default AnkiConnect URL as elsewhere: {config}"
    );

    // `migrate` of a legacy file in the Thai folder, with the service
    // credential given for that run only (as README says).
    let (legacy_path, sum) = legacy_file(windows.root.path(), &Spec::small(27));
    let report = windows.root.path().join("rejects.jsonl");
    let summary = windows.json(
        &[
            "migrate",
            &windows_path(&legacy_path),
            "--reject-report",
            &windows_path(&report),
        ],
        &[("THAI_AGENT_TOKEN", &stack.token("service_role"))],
    );
    assert_eq!(summary["ok"], true, "{summary:#}");
    let legacy = rusqlite::Connection::open(&legacy_path).unwrap();
    assert_migration_exact(&stack, &legacy, &report, &sum);
    assert_store_equals_server(&stack, &windows.store());

    // Written since, with Thai text: `pull` brings it.
    let sentence = "ฉันชอบกินข้าวเหนียวมะม่วงที่ตลาดน้ำ";
    let content = stack.create(
        "/api/content",
        json!({"title": "ของหวาน", "content_type": "phrase", "language": "thai",
               "native_text": sentence, "translation": "I like mango sticky rice",
               "ipa": "tɕʰǎn tɕʰɔ̂ːp kin kʰâːw.nǐaw.ma.mûaŋ"}),
    );
    let fragment = stack.create(
        "/api/fragments",
        json!({"learning_content_id": content, "native_text": sentence,
               "body_text": "mango sticky rice", "fragment_type": "sentence"}),
    );
    windows.pull_until(&format!(
        "SELECT count(*) = 1 FROM content_fragments WHERE id = {fragment}"
    ));
    assert_store_equals_server(&stack, &windows.store());

    // `embed`: every text gets a vector of the built-in model.
    let embedded = windows.json(&["embed"], &[]);
    let store = windows.store();
    let texts = count(&store, "learning_content") + count(&store, "content_fragments");
    let total = ["embedded", "unchanged", "empty"]
        .iter()
        .map(|k| embedded[k].as_i64().unwrap())
        .sum::<i64>();
    assert_eq!(total, texts, "{embedded}");
    assert!(embedded["embedded"].as_i64().unwrap() > 0, "{embedded}");

    // `search` with Thai as the argument (UTF-16 on Windows' command line):
    // the fragment with that very text comes first.
    let hits = windows.json(&["search", sentence, "--k", "3"], &[]);
    let hits = hits.as_array().expect("a list of hits");
    assert!(!hits.is_empty());
    assert_eq!(hits[0]["id"], fragment, "{hits:?}");
    assert_eq!(hits[0]["native_text"], sentence, "{hits:?}");

    // `status` counts what the server holds.
    let status = windows.json(&["status"], &[]);
    for table in TABLES {
        assert_eq!(
            status["mirror"][table],
            stack.query_i64(&format!("SELECT count(*) FROM {table}")),
            "{table}: {status}"
        );
    }
    assert_eq!(status["api"]["answers"], true, "{status}");
    println!(
        "init, config, migrate, pull, embed, search and status under Wine: {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
#[ignore = "needs the Windows build, Wine and the real Anki: set LOCAL_AGENT_WINDOWS_EXE and ANKI_RUN"]
fn anki_push_on_windows_into_the_real_anki() {
    let stack = Stack::start();
    support::seed(&stack, 20);
    let windows = Windows::set_up();
    windows.init(&stack);
    windows.pull_until("SELECT (SELECT count(*) FROM content_fragments) = 60");
    assert_store_equals_server(&stack, &windows.store());
    let anki = RealAnki::start();
    let started = Instant::now();
    let report = windows.json(&["anki", "push", "--anki-url", &anki.url()], &[]);
    println!(
        "anki push under Wine: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(report["added"], 80, "{report}");
    assert_eq!(report["failed"], json!([]), "{report}");
    assert_eq!(report["media_stored"], 30, "{report}");
    assert_collection_matches(&stack, &windows.store(), &anki);
    // Pushed again, nothing changed: nothing sent.
    let again = windows.json(&["anki", "push", "--anki-url", &anki.url()], &[]);
    assert_eq!(again["unchanged"], 80, "{again}");
    assert_eq!(again["added"], 0, "{again}");
}

#[test]
#[ignore = "needs the Windows build and Wine: set LOCAL_AGENT_WINDOWS_EXE (cargo xtask test does)"]
fn ctrl_c_during_a_pull_on_windows_leaves_nothing_half_written() {
    let stack = Stack::start();
    support::seed(&stack, 2000);
    let windows = Windows::set_up();
    windows.init(&stack);
    let wal = windows
        .roaming()
        .join("thai-content/local-agent/data/agent.db-wal");
    let mut run = windows.spawn(&["--json", "pull", "--page-size", "50"], &[]);
    // Ctrl-C once pages have been committed (the write-ahead log grows);
    // the store is not opened meanwhile: Wine's file locks are not the
    // ones this process's SQLite would see.
    let deadline = Instant::now() + RUN_LIMIT;
    while std::fs::metadata(&wal).map_or(0, |m| m.len()) < 256 * 1024 {
        assert!(
            run.child.try_wait().unwrap().is_none(),
            "the pull ended before it could be interrupted"
        );
        assert!(Instant::now() < deadline, "the pull wrote nothing");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Wine turns SIGINT into the console's Ctrl-C event, as a key press
    // in the learner's console would raise it.
    let pid = run.child.id().to_string();
    let status = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(status.success());
    // The console's default handler ends the process (Windows says
    // STATUS_CONTROL_C_EXIT, Wine 8 exits with 0): no report was printed.
    let out = run.finish();
    assert!(
        out.stdout.is_empty(),
        "the pull finished despite Ctrl-C: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    {
        let store = windows.store();
        let check: String = store
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        let mirrored: i64 = TABLES.iter().map(|t| count(&store, t)).sum();
        let total: i64 = TABLES
            .iter()
            .map(|t| stack.query_i64(&format!("SELECT count(*) FROM {t}")))
            .sum();
        println!("Ctrl-C after {mirrored} of {total} rows");
        assert!(mirrored < total, "the pull had ended before Ctrl-C");
    }
    // The next pull goes on from the last whole page and ends exact.
    windows.json(&["pull"], &[]);
    assert_store_equals_server(&stack, &windows.store());
}
