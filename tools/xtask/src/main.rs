//! `cargo xtask up`: the whole local stack in one command.
//!
//! 1. builds every component of `spin.toml` with its `[component.*.build]`
//!    command (as `spin build` does);
//! 2. starts a throwaway PostgreSQL, unless `DATABASE_URL` is set;
//! 3. applies `migrations/`;
//! 4. serves `spin.toml` with `spin up` when Spin ≥ 3.4 is on PATH, and with
//!    the bundled Wasmtime host (`tools/spin-host`) otherwise;
//! 5. prints the URL and a development JWT for each role;
//!
//! and on Ctrl-C (or SIGTERM) stops the server and the database, leaving
//! nothing running.
//!
//! `cargo xtask test`: every test, on the bundled host and under a real
//! Spin when there is one (see [`test`]).
//!
//! `cargo xtask bench [--quick]`: builds the components, the test probe,
//! `local-agent` and `bench` in release mode, then runs `bench` (see
//! BENCHMARKS.md); its arguments go to `bench`.

mod test;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build, start PostgreSQL, migrate, and serve the API until Ctrl-C.
    Up {
        /// Where the API listens.
        #[arg(long, default_value = "127.0.0.1:3000")]
        listen: SocketAddr,
        /// Use this database instead of starting a throwaway one.
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
        /// Skip building the components.
        #[arg(long)]
        no_build: bool,
        /// Use the bundled host even when Spin is installed.
        #[arg(long)]
        bundled_host: bool,
    },
    /// Run every test on the bundled host, then the suites that serve
    /// spin.toml under a real Spin (SPIN_BIN, or `spin` on PATH) when there
    /// is one.
    Test {
        /// Arguments for `cargo test`, e.g. a test name filter.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build everything in release mode and run the benchmarks (BENCHMARKS.md).
    Bench {
        /// Arguments for `bench`, e.g. --quick, --reps 5, --only reads,search.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Up {
            listen,
            database_url,
            no_build,
            bundled_host,
        } => up(listen, database_url, no_build, bundled_host).await,
        Command::Bench { args } => bench(&args),
        Command::Test { args } => test::run(&repo_root().canonicalize()?, &args),
    }
}

fn cargo(root: &Path, args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("cargo {}", args.join(" "));
    let status = std::process::Command::new(cargo)
        .current_dir(root)
        .args(args)
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn bench(args: &[String]) -> Result<()> {
    let root = repo_root().canonicalize()?;
    build_components(&root, &root.join("spin.toml"))?;
    // The trivial component of the host-overhead row.
    cargo(
        &root,
        &[
            "build",
            "--target",
            "wasm32-wasip2",
            "--release",
            "-p",
            "test-probe",
        ],
    )?;
    cargo(
        &root,
        &["build", "--release", "-p", "local-agent", "-p", "bench"],
    )?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let status = std::process::Command::new(target.join("release/bench"))
        .args(args)
        .env(
            "BENCH_COMMAND",
            format!("cargo xtask bench {}", args.join(" ")).trim_end(),
        )
        .status()
        .context("running bench")?;
    if !status.success() {
        bail!("the benchmarks failed ({status})");
    }
    Ok(())
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

async fn up(
    listen: SocketAddr,
    database_url: Option<String>,
    no_build: bool,
    bundled_host: bool,
) -> Result<()> {
    let root = repo_root().canonicalize()?;
    let manifest_path = root.join("spin.toml");
    if !no_build {
        build_components(&root, &manifest_path)?;
    }

    // Owned for the whole run: dropping it stops the server and deletes its
    // directory, which happens on every way out of this function.
    let mut _cluster = None;
    let db_url = match database_url {
        Some(url) => {
            eprintln!("Using DATABASE_URL.");
            url
        }
        None => {
            eprintln!("Starting a throwaway PostgreSQL ...");
            let cluster = tokio::task::spawn_blocking(throwaway_pg::Cluster::start)
                .await?
                .context("starting PostgreSQL (is it installed? `apt-get install postgresql`)")?;
            cluster
                .create_database("content", None)
                .await
                .context("creating the database")?;
            let url = cluster.url("content");
            eprintln!(
                "PostgreSQL on 127.0.0.1:{} (data in {})",
                cluster.port(),
                cluster.root_dir().display()
            );
            _cluster = Some(cluster);
            url
        }
    };

    let migrations = schema_migrate::Migrations::from_dir(root.join("migrations"))?;
    let mut client = schema_migrate::connect(&db_url)
        .await
        .context("connecting to the database")?;
    let report = schema_migrate::apply(&mut client, &migrations)
        .await
        .context("applying migrations")?;
    drop(client);
    eprintln!("Migrations: {report:?}");

    let db_host = db_host(&db_url)?;
    // Credentials like a Supabase project's, new on every run: an ES256
    // signing key published as the app's JWKS, and a pair of API keys of
    // which the app holds only the digests.
    let credentials = Credentials {
        signing: dev_keys::SigningKey::es256(&format!("dev-{}", dev_keys::random_hex(4)))?,
        api: dev_keys::ApiKeys::generate(),
    };
    let variables = [
        ("db_url", db_url.clone()),
        ("db_host", db_host),
        ("jwt_jwks", dev_keys::jwks(&[&credentials.signing])),
        (
            "api_secret_keys_sha256",
            dev_keys::sha256_hex(&credentials.api.secret),
        ),
        (
            "api_publishable_keys_sha256",
            dev_keys::sha256_hex(&credentials.api.publishable),
        ),
    ];

    let spin = if bundled_host { None } else { spin_on_path() };
    let result = match spin {
        Some(version) => {
            eprintln!("Serving with Spin {version} (spin up).");
            serve_with_spin(&manifest_path, listen, &variables, &credentials).await
        }
        None => {
            eprintln!("Serving with the bundled host (tools/spin-host).");
            serve_bundled(&manifest_path, listen, &variables, &credentials).await
        }
    };
    eprintln!("Stopped.");
    result
}

/// Runs each component's build command from the manifest, in the directory
/// it names, as `spin build` would.
fn build_components(root: &Path, manifest_path: &Path) -> Result<()> {
    let text = std::fs::read_to_string(manifest_path)?;
    let manifest: toml::Table = toml::from_str(&text)?;
    let components = manifest
        .get("component")
        .and_then(toml::Value::as_table)
        .cloned()
        .unwrap_or_default();
    for (id, component) in components {
        let Some(build) = component.get("build") else {
            continue;
        };
        let command = match build.get("command") {
            Some(toml::Value::String(c)) => vec![c.clone()],
            Some(toml::Value::Array(cs)) => cs
                .iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect(),
            _ => continue,
        };
        let workdir = build
            .get("workdir")
            .and_then(toml::Value::as_str)
            .map_or_else(|| root.to_owned(), |w| root.join(w));
        for command in command {
            eprintln!("Building {id}: {command}");
            let status = std::process::Command::new("sh")
                .arg("-c")
                .arg(&command)
                .current_dir(&workdir)
                .status()
                .with_context(|| format!("running {command:?}"))?;
            if !status.success() {
                bail!("building component {id:?} failed ({status})");
            }
        }
    }
    Ok(())
}

/// `host:port` of a Postgres URL, for `allowed_outbound_hosts`.
fn db_host(db_url: &str) -> Result<String> {
    let url = url::Url::parse(db_url).context("DATABASE_URL must be a postgres:// URL")?;
    let host = url.host_str().context("DATABASE_URL has no host")?;
    Ok(format!("{host}:{}", url.port().unwrap_or(5432)))
}

/// The version of a Spin ≥ 3.4 on PATH, if there is one.
fn spin_on_path() -> Option<String> {
    let out = std::process::Command::new("spin")
        .arg("--version")
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().nth(1)?.to_owned();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next()?, parts.next().unwrap_or(0));
    ((major, minor) >= (3, 4)).then_some(version)
}

/// What `up` hands the developer: a signing key and API keys.
struct Credentials {
    signing: dev_keys::SigningKey,
    api: dev_keys::ApiKeys,
}

/// How long a development token is valid.
const TOKEN_SECS: u64 = 7 * 24 * 3600;

fn print_banner(listen: SocketAddr, credentials: &Credentials) -> Result<()> {
    println!();
    println!("API:    http://{listen}/api/health");
    for role in dev_keys::ROLES {
        println!(
            "{role:>14} token: {}",
            credentials.signing.token(role, TOKEN_SECS)?
        );
    }
    println!("    secret key: {}", credentials.api.secret);
    println!("publishable key: {}", credentials.api.publishable);
    println!("Use:    curl -H \"Authorization: Bearer <token>\" http://{listen}/api/...");
    println!("Ctrl-C stops everything.");
    println!();
    Ok(())
}

async fn serve_bundled(
    manifest_path: &Path,
    listen: SocketAddr,
    variables: &[(&str, String)],
    credentials: &Credentials,
) -> Result<()> {
    let manifest = spin_host::manifest::Manifest::from_file(manifest_path)?;
    let runtime = spin_host::runtime::Runtime::new()?;
    let sources = spin_host::variables::Sources {
        explicit: variables
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
        env: None,
    };
    let app = runtime.load(&manifest, &sources)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    print_banner(listener.local_addr()?, credentials)?;
    spin_host::trigger::serve(listener, Arc::new(app), shutdown_signal()).await?;
    Ok(())
}

async fn serve_with_spin(
    manifest_path: &Path,
    listen: SocketAddr,
    variables: &[(&str, String)],
    credentials: &Credentials,
) -> Result<()> {
    let mut command = tokio::process::Command::new("spin");
    command
        .arg("up")
        .arg("--from")
        .arg(manifest_path)
        .arg("--listen")
        .arg(listen.to_string())
        .kill_on_drop(true);
    // Through the environment rather than `--variable`, so that secrets do
    // not show in the process list.
    for (name, value) in variables {
        command.env(spin_host::variables::env_name(name), value);
    }
    let mut child = command.spawn().context("starting `spin up`")?;
    print_banner(listen, credentials)?;
    tokio::select! {
        status = child.wait() => bail!("`spin up` exited on its own ({})", status?),
        () = shutdown_signal() => {}
    }
    // Spin stops cleanly on SIGINT; give it a moment, then make sure.
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status();
    }
    if tokio::time::timeout(std::time::Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        child.kill().await?;
    }
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
