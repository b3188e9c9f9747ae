//! SIGKILL at random moments of `local-agent pull` and `local-agent
//! migrate`, the real binary against the real components and PostgreSQL.
//!
//! Each trial draws everything from one seed, printed before it runs: the
//! data, the page size, how many kills, where each lands (a delay after the
//! start, or an amount of progress seen in the store or on the server) and
//! the writes between them. Replay with `CRASH_SEEDS=<seed>[,<seed>…]`
//! (the choices repeat; the moment a kill lands depends on the machine).
//! After the kills one more run must succeed and end exact.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use legacy_fixture::Spec;
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;
use support::migration::{
    assert_assets_identical, assert_each_row_written_once, assert_migration_exact, count,
    legacy_file, migrate, migrate_args, read_rejects, rejected_ids, server_total, service_agent,
};
use support::{Agent, Stack, TABLES, assert_mirror_equals_server, mirror_total};

const PULL_TRIALS: usize = 12;
const MIGRATE_TRIALS: usize = 10;

/// The longest the test waits for the agent to reach a kill point.
const WAIT_LIMIT: Duration = Duration::from_secs(60);
/// The longest a run that is not killed may take.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// The trials' seeds: CRASH_SEEDS, or fresh ones.
fn seeds(trials: usize) -> Vec<u64> {
    match std::env::var("CRASH_SEEDS") {
        Ok(s) => s
            .split(',')
            .map(|x| {
                x.trim()
                    .parse()
                    .expect("CRASH_SEEDS: comma-separated numbers")
            })
            .collect(),
        Err(_) => (0..trials).map(|_| fastrand::u64(..1_000_000)).collect(),
    }
}

/// What the kills of one test did.
#[derive(Default)]
struct Tally {
    kills: usize,
    /// The process was still running when SIGKILL arrived.
    landed: usize,
}

impl Tally {
    fn record(&mut self, landed: bool) {
        self.kills += 1;
        self.landed += usize::from(landed);
    }

    /// Kill points are drawn inside the work, so nearly every kill should
    /// land mid-run; allow a few to miss (a run may still end first on a
    /// fast machine), not many.
    fn assert_meaningful(&self, what: &str) {
        println!(
            "{what}: {} kills, {} landed mid-run, {} runs ended before their kill point",
            self.kills,
            self.landed,
            self.kills - self.landed
        );
        assert!(
            self.landed * 4 >= self.kills * 3 && self.landed > 0,
            "{what}: only {} of {} kills hit a running process: the test proves too little",
            self.landed,
            self.kills
        );
    }
}

const SIGKILL: i32 = 9;

/// Starts the agent with `args` and SIGKILLs it once `reached` says so.
/// Returns whether the kill landed while the process was still working. A
/// run that ends by itself first must have succeeded.
fn kill_when(agent: &Agent, args: &[&str], mut reached: impl FnMut() -> bool) -> bool {
    let mut run = agent.start(args);
    let deadline = Instant::now() + WAIT_LIMIT;
    while run.running() && !reached() {
        assert!(
            Instant::now() < deadline,
            "the kill point was not reached in {WAIT_LIMIT:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    // The exit status, not a check before the kill, says whether it landed.
    let out = run.kill();
    let landed = out.status.signal() == Some(SIGKILL);
    assert!(
        landed || out.status.success(),
        "a run that ended by itself failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "      {}",
        if landed {
            "landed mid-run"
        } else {
            "the run had ended"
        }
    );
    landed
}

/// The store read-only, without creating it or taking part in its writes.
fn peek<T>(agent: &Agent, read: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Option<T> {
    if !agent.db().exists() {
        return None;
    }
    let conn = Connection::open_with_flags(agent.db(), OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
    read(&conn).ok()
}

/// Where a kill lands.
#[derive(Debug, Clone, Copy)]
enum Point {
    /// This long after the start.
    After(Duration),
    /// After this many steps of progress (pages a pull applied).
    Steps(u32),
    /// Once this many more rows arrived on the server (a migration).
    Rows(i64),
    /// This long after every row arrived on the server: the migration is
    /// in its last phase (sequences, verification, pull, copy of the
    /// cards and vectors).
    Imported(Duration),
}

/// Counts the changes of a value that moves whenever the run progresses.
struct Steps<T> {
    last: Option<T>,
    steps: u32,
}

impl<T: PartialEq> Steps<T> {
    fn new() -> Self {
        Steps {
            last: None,
            steps: 0,
        }
    }

    fn observe(&mut self, now: T) -> u32 {
        if self.last.as_ref().is_some_and(|l| *l != now) {
            self.steps += 1;
        }
        self.last = Some(now);
        self.steps
    }
}

/// Writes on the server between pulls: edits, inserts and deletes (with
/// their cascades) across the four tables, picked by the seed.
fn write_some(stack: &Stack, rng: &mut fastrand::Rng, statements: usize) {
    let mut sql = String::new();
    for n in 0..statements {
        let k = rng.usize(..40);
        let m = rng.u32(2..20);
        sql.push_str(&match rng.usize(..7) {
            0 => format!(
                "UPDATE learning_content SET translation = translation || ' w{n}' WHERE id % {m} = {};",
                k as u32 % m
            ),
            1 => format!(
                "INSERT INTO content_fragments (learning_content_id, native_text, body_text, fragment_type)
                 SELECT id, 'ใหม่ {n}', 'new', 'word' FROM learning_content ORDER BY id OFFSET {k} LIMIT 1;"
            ),
            2 => format!(
                "DELETE FROM content_fragments WHERE id = (SELECT id FROM content_fragments ORDER BY id OFFSET {k} LIMIT 1);"
            ),
            3 => format!(
                "UPDATE rankings SET rank_score = ((id + {k}) % 501) / 100.0 WHERE id % {m} = {};",
                k as u32 % m
            ),
            4 => format!(
                "DELETE FROM learning_content WHERE id = (SELECT id FROM learning_content ORDER BY id OFFSET {k} LIMIT 1);"
            ),
            5 => format!(
                "INSERT INTO fragment_assets (fragment_id, asset_type, asset_data, content_type, created_by)
                 SELECT id, 'audio', convert_to('new audio {n} ' || id, 'UTF8'), 'audio/mpeg', 'tts'
                 FROM content_fragments ORDER BY id OFFSET {k} LIMIT 1;"
            ),
            _ => format!(
                "DELETE FROM fragment_assets WHERE id = (SELECT id FROM fragment_assets ORDER BY id OFFSET {k} LIMIT 1);"
            ),
        });
    }
    stack.sql(&sql);
}

/// Where a pull is: its cursor and how many rows the mirror holds. Each
/// page applied moves one of them.
fn pull_progress(agent: &Agent) -> Option<(Option<String>, i64)> {
    let cursor = peek(agent, |c| {
        c.query_row("SELECT cursor FROM sync_state", [], |r| r.get(0))
    })?;
    Some((cursor, mirror_total(agent)))
}

fn pull_trial(seed: u64, tally: &mut Tally) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let stack = Stack::start();
    support::seed(&stack, rng.i64(40..=160));
    let agent = Agent::new(&stack);
    // 0: kills during the first snapshot; 1: while following the log;
    // 2: during a `--full` snapshot over a complete mirror.
    let mode = rng.usize(..3);
    // What the pull has to go through: rows for a snapshot, changes for
    // the log.
    let work = if mode == 1 {
        agent.run_json_within(&["pull"], RUN_LIMIT);
        let logged = count(&stack, "change_log");
        write_some(&stack, &mut rng, 40);
        count(&stack, "change_log") - logged
    } else {
        if mode == 2 {
            agent.run_json_within(&["pull"], RUN_LIMIT);
            write_some(&stack, &mut rng, 40);
        }
        server_total(&stack)
    };
    // At least ten pages.
    let page = rng.u32(2..=(work / 10).clamp(2, 40) as u32);
    let kills = rng.usize(1..=4);
    println!("  page size {page}, mode {mode}, {work} rows or changes to go, {kills} kill(s)");
    // Pages still to come, about (pages already seen are taken off, and a
    // run that ended left none): kill points drawn within two thirds of
    // them land mid-run, although the polling may miss a page or two.
    let mut pages = work / i64::from(page);
    let page_size = page.to_string();
    for n in 0..kills {
        if mode == 1 || pages < 6 {
            let logged = count(&stack, "change_log");
            write_some(&stack, &mut rng, 30);
            pages += (count(&stack, "change_log") - logged) / i64::from(page);
        }
        let mut args = vec!["--quiet", "pull", "--page-size", &page_size];
        if mode == 2 && n == 0 {
            args.push("--full");
        }
        // Delays short enough to fall inside any pull: they catch the start
        // (the store opened or created, the snapshot begun, the first page).
        let point = if rng.bool() {
            Point::After(Duration::from_millis(rng.u64(0..=40)))
        } else {
            let share = (pages * 2 / 3 / (kills - n) as i64).max(1);
            Point::Steps(rng.u32(1..=share as u32))
        };
        println!("    kill {n}: {point:?} of about {pages} pages");
        let started = Instant::now();
        let mut seen = Steps::new();
        let landed = kill_when(&agent, &args, || {
            let steps = seen.observe(pull_progress(&agent));
            match point {
                Point::After(delay) => started.elapsed() >= delay,
                Point::Steps(n) => steps >= n,
                _ => unreachable!("not drawn for a pull"),
            }
        });
        tally.record(landed);
        pages = if landed {
            pages - i64::from(seen.steps)
        } else {
            0
        };
        if rng.bool() {
            let statements = rng.usize(1..10);
            write_some(&stack, &mut rng, statements);
        }
    }
    // The last run with the default page size: a cursor does not depend on
    // the page size it was written with.
    agent.run_json_within(&["pull"], RUN_LIMIT);
    let phase: Option<String> = peek(&agent, |c| {
        c.query_row("SELECT phase FROM sync_state", [], |r| r.get(0))
    });
    assert_eq!(
        phase.as_deref(),
        Some("log"),
        "the last pull left a snapshot open"
    );
    assert_mirror_equals_server(&stack, &agent);
}

#[test]
fn pulls_killed_at_random_moments_converge() {
    let _serial = support::serial();
    let started = Instant::now();
    let mut tally = Tally::default();
    for (n, seed) in seeds(PULL_TRIALS).into_iter().enumerate() {
        println!(
            "pull trial {n}: seed {seed} (replay: CRASH_SEEDS={seed} cargo test -p local-agent --test crashes pulls_killed)"
        );
        let trial = Instant::now();
        pull_trial(seed, &mut tally);
        println!("  {:.1} s", trial.elapsed().as_secs_f64());
    }
    tally.assert_meaningful("pull");
    println!("pull trials took {:.1} s", started.elapsed().as_secs_f64());
}

fn migrate_trial(seed: u64, tally: &mut Tally) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let stack = Stack::start();
    let agent = service_agent(&stack);
    let spec = Spec {
        contents: rng.usize(8..=30),
        fragments_per_content: rng.usize(1..=3),
        assets: rng.usize(30..=80),
        asset_bytes: rng.usize(1024..=256 * 1024),
        rankings: rng.usize(10..=80),
        defect_every: [0, 6, 10][rng.usize(..3)],
        vectors: rng.bool(),
        seed,
    };
    let (legacy_path, sum) = legacy_file(agent.dir.path(), &spec);
    let legacy = Connection::open(&legacy_path).unwrap();
    let report = agent.dir.path().join("rejects.jsonl");

    // What will arrive, from the dry run's rejects.
    let dry_report = agent.dir.path().join("dry.jsonl");
    migrate(&agent, &legacy_path, &dry_report, &["--dry-run"]);
    let rejected = read_rejects(&dry_report);
    let accepted: Vec<i64> = TABLES
        .iter()
        .zip([sum.contents, sum.fragments, sum.assets, sum.rankings])
        .map(|(t, n)| (n - rejected_ids(&rejected, t).len()) as i64)
        .collect();
    let expected: i64 = accepted.iter().sum();
    // Rankings go last, in one batch: rows before them are followed by
    // more work of the same run.
    let before_rankings = expected - accepted[3];

    let kills = rng.usize(1..=3);
    println!(
        "  {} contents, {} fragments, {} assets of {} bytes, {} rankings, {} reject lines, {kills} kill(s)",
        sum.contents,
        sum.fragments,
        sum.assets,
        spec.asset_bytes,
        sum.rankings,
        rejected.len()
    );
    for n in 0..kills {
        let arrived = server_total(&stack);
        let to_go = before_rankings - arrived;
        let point = match rng.usize(..3) {
            // Early: the store, the plan, the first batches; only a short
            // delay when little is left to send (the rest of such a run is
            // quick: skips, sequences, verification, pull, copy).
            0 => Point::After(Duration::from_millis(if to_go > 10 {
                rng.u64(0..=150)
            } else {
                rng.u64(0..=30)
            })),
            // Among the assets, at least one still to send.
            1 if to_go > 1 => Point::Rows(rng.i64(1..to_go)),
            _ => Point::Imported(Duration::from_millis(rng.u64(0..=40))),
        };
        println!("    kill {n}: {point:?}");
        let started = Instant::now();
        let mut imported_at = None;
        tally.record(kill_when(
            &agent,
            &migrate_args(&legacy_path, &report, &["--quiet"]),
            || match point {
                Point::After(delay) => started.elapsed() >= delay,
                Point::Rows(rows) => server_total(&stack) >= arrived + rows,
                Point::Imported(tail) => {
                    if imported_at.is_none() && server_total(&stack) >= expected {
                        imported_at = Some(Instant::now());
                    }
                    imported_at.is_some_and(|at| at.elapsed() >= tail)
                }
                Point::Steps(_) => unreachable!("not drawn for a migration"),
            },
        ));
        // Whenever it stopped, what is on the server is exact so far: no
        // asset cut short by a request killed mid-body, no row twice.
        assert_assets_identical(&stack, &legacy);
        assert_each_row_written_once(&stack);
    }
    let summary = migrate(&agent, &legacy_path, &report, &[]);
    assert_eq!(summary["ok"], true, "{summary:#}");
    assert_eq!(
        read_rejects(&report),
        rejected,
        "other rejects than the dry run's"
    );
    assert_migration_exact(&stack, &legacy, &report, &sum);
    // The summary counts what the report holds.
    let mut by_reason = serde_json::Map::new();
    for line in &rejected {
        let reason = line["reason"].as_str().unwrap().to_owned();
        let n = by_reason.get(&reason).and_then(|v| v.as_u64()).unwrap_or(0);
        by_reason.insert(reason, (n + 1).into());
    }
    assert_eq!(summary["rejects_by_reason"], Value::Object(by_reason));
    for (table, source) in
        TABLES
            .iter()
            .zip([sum.contents, sum.fragments, sum.assets, sum.rankings])
    {
        let run = summary["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["table"] == *table)
            .unwrap();
        assert_eq!(run["source"], source, "{table}");
        assert_eq!(
            run["rejected"],
            rejected_ids(&rejected, table).len(),
            "{table}"
        );
    }
    // The store: the mirror pulled at the end, the cards and vectors.
    assert_mirror_equals_server(&stack, &agent);
    let store = agent.mirror();
    let rows = |table: &str| -> usize {
        store
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap() as usize
    };
    assert_eq!(rows("anki_cards"), sum.anki_cards);
    assert_eq!(rows("vector_embeddings"), sum.vectors);
    assert_eq!(rows("vec_embeddings"), sum.vectors);
}

#[test]
fn migrations_killed_at_random_moments_finish_exact() {
    let _serial = support::serial();
    let started = Instant::now();
    let mut tally = Tally::default();
    for (n, seed) in seeds(MIGRATE_TRIALS).into_iter().enumerate() {
        println!(
            "migrate trial {n}: seed {seed} (replay: CRASH_SEEDS={seed} cargo test -p local-agent --test crashes migrations_killed)"
        );
        let trial = Instant::now();
        migrate_trial(seed, &mut tally);
        println!("  {:.1} s", trial.elapsed().as_secs_f64());
    }
    tally.assert_meaningful("migrate");
    println!(
        "migrate trials took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
