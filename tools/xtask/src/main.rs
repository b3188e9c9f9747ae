//! `cargo xtask up`: the whole local stack in one command.
//!
//! 1. builds every component of `spin.toml` (the packages its
//!    `[component.*.build]` commands name, in one cargo run, exactly as the
//!    test suites build them, so that either reuses the other's build);
//! 2. starts PostgreSQL with its data kept in `.local/postgres` (reused on
//!    the next run; `--fresh` starts empty), unless `DATABASE_URL` is set;
//! 3. applies `migrations/` (bringing kept data forward);
//! 4. serves `spin.toml` with `spin up` when Spin ≥ 3.4 is on PATH, and with
//!    the bundled Wasmtime host (`tools/spin-host`) otherwise;
//! 5. prints the URL and a development JWT for each role (or, with
//!    `--auth-url`, points the app and the assessment page at a running
//!    Supabase Auth, whose users then sign in);
//!
//! and on Ctrl-C (or SIGTERM) stops the server and the database, leaving
//! nothing running and the data in place.
//!
//! `cargo xtask test`: every test, on the bundled host and under a real
//! Spin when there is one (see [`test`]).
//!
//! `cargo xtask dist`: the release archives of `local-agent` for Windows
//! and Linux (see [`dist`]).
//!
//! `cargo xtask bench [--quick]`: builds the components, the test probe,
//! `local-agent` and `bench` in release mode, then runs `bench` (see
//! BENCHMARKS.md); its arguments go to `bench`.

mod dist;
mod test;
mod wine;

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
        /// Use this database instead of the local one.
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
        /// Where the local database keeps its data between runs.
        #[arg(long, default_value = ".local/postgres")]
        data_dir: PathBuf,
        /// Delete the local database's data first and start empty.
        #[arg(long)]
        fresh: bool,
        /// The local database's port on 127.0.0.1.
        #[arg(long, default_value_t = 54330)]
        db_port: u16,
        /// Skip building the components.
        #[arg(long)]
        no_build: bool,
        /// Use the bundled host even when Spin is installed.
        #[arg(long)]
        bundled_host: bool,
        /// A running Supabase Auth (e.g. `supabase start`'s
        /// http://127.0.0.1:54321/auth/v1): the assessment page signs in
        /// there, and the API accepts its tokens (its JWKS and issuer).
        #[arg(long, value_name = "URL")]
        auth_url: Option<String>,
        /// The project's publishable (anon) key, which the page sends to
        /// that Auth as `apikey`.
        #[arg(
            long,
            env = "SUPABASE_PUBLISHABLE_KEY",
            value_name = "KEY",
            requires = "auth_url"
        )]
        auth_publishable_key: Option<String>,
    },
    /// Run every test on the bundled host, then the suites that serve
    /// spin.toml under a real Spin (SPIN_BIN, or `spin` on PATH) when there
    /// is one.
    Test {
        /// Arguments for `cargo test`, e.g. a test name filter.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the release archives of local-agent for Windows and Linux,
    /// with SHA256SUMS.
    Dist {
        /// Where the archives go.
        #[arg(long, default_value = "target/dist")]
        out: PathBuf,
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
            data_dir,
            fresh,
            db_port,
            no_build,
            bundled_host,
            auth_url,
            auth_publishable_key,
        } => {
            let database = match database_url {
                Some(url) => Database::Url(url),
                None => Database::Local {
                    dir: data_dir,
                    port: db_port,
                    fresh,
                },
            };
            let auth = auth_url.map(|url| AuthServer {
                url: url.trim_end_matches('/').to_owned(),
                publishable_key: auth_publishable_key.unwrap_or_default(),
            });
            up(listen, database, no_build, bundled_host, auth).await
        }
        Command::Bench { args } => bench(&args),
        Command::Dist { out } => {
            let root = repo_root().canonicalize()?;
            dist::run(&root, &root.join(out))
        }
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
    build_components()?;
    // The trivial component of the floor and host-overhead rows.
    app_server::components::build(&["test-probe".to_owned()])?;
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

/// The database `up` serves.
enum Database {
    /// One the user runs (`--database-url`, `DATABASE_URL`).
    Url(String),
    /// The local one, its data kept in `dir` (relative to the project).
    Local {
        dir: PathBuf,
        port: u16,
        fresh: bool,
    },
}

/// The Supabase Auth that `up --auth-url` points the app at.
struct AuthServer {
    url: String,
    publishable_key: String,
}

impl AuthServer {
    /// The app's variables for this Auth: its JWKS (fetched now), its URL
    /// as the issuer, and the page's sign-in settings.
    async fn app_variables(&self) -> Result<Vec<(&'static str, String)>> {
        let jwks_url = format!("{}/.well-known/jwks.json", self.url);
        let key = self.publishable_key.clone();
        let url = jwks_url.clone();
        let jwks = tokio::task::spawn_blocking(move || -> Result<String> {
            let mut request = ureq::get(&url);
            if !key.is_empty() {
                request = request.header("apikey", &key);
            }
            Ok(request.call()?.body_mut().read_to_string()?)
        })
        .await?
        .with_context(|| {
            format!(
                "fetching the signing keys from {jwks_url}: is Supabase Auth running there? \
                 (--auth-url is its base URL, e.g. http://127.0.0.1:54321/auth/v1)"
            )
        })?;
        let keys: serde_json::Value = serde_json::from_str(&jwks)
            .with_context(|| format!("{jwks_url} did not answer a JSON Web Key Set"))?;
        if keys["keys"].as_array().is_none_or(|k| k.is_empty()) {
            bail!("{jwks_url} lists no signing key: is --auth-url the Auth URL of the project?");
        }
        Ok(vec![
            ("jwt_jwks", jwks),
            ("jwt_issuer", self.url.clone()),
            ("jwt_audience", "authenticated".to_owned()),
            ("supabase_url", self.url.clone()),
            ("supabase_publishable_key", self.publishable_key.clone()),
        ])
    }
}

async fn up(
    listen: SocketAddr,
    database: Database,
    no_build: bool,
    bundled_host: bool,
    auth: Option<AuthServer>,
) -> Result<()> {
    let root = repo_root().canonicalize()?;
    // Before the build: a wrong URL is worth knowing at once.
    let auth_variables = match &auth {
        Some(auth) => Some(auth.app_variables().await?),
        None => None,
    };
    if !no_build {
        build_components()?;
    }

    // Owned for the whole run: dropping it stops the server (with a
    // checkpoint; the data stays), which happens on every way out of this
    // function.
    let mut _cluster = None;
    let local = matches!(database, Database::Local { .. });
    let db_url = match database {
        Database::Url(url) => {
            eprintln!("Using DATABASE_URL.");
            url
        }
        Database::Local { dir, port, fresh } => {
            let dir = root.join(dir);
            let (cluster, url) = local_database(&dir, port, fresh).await?;
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
    // Credentials like a Supabase project's, new on every run.
    let credentials = dev_keys::Credentials::generate(&format!("dev-{}", dev_keys::random_hex(4)))?;
    let mut variables = vec![("db_url", db_url.clone()), ("db_host", db_host)];
    variables.extend(credentials.app_variables());
    if let Some(auth_variables) = auth_variables {
        // Auth's keys instead of the generated one; the API keys stay.
        variables.retain(|(name, _)| *name != "jwt_jwks");
        variables.extend(auth_variables);
    }
    let banner = Banner {
        credentials: &credentials,
        local_db: local.then_some(db_url.as_str()),
        auth_url: auth.as_ref().map(|a| a.url.as_str()),
    };

    let spin = if bundled_host { None } else { spin_on_path() };
    let result = match spin {
        Some(version) => {
            eprintln!("Serving with Spin {version} (spin up).");
            serve_with_spin(listen, &variables, &banner).await
        }
        None => {
            eprintln!("Serving with the bundled host (tools/spin-host).");
            serve_bundled(listen, &variables, &banner).await
        }
    };
    eprintln!("Stopped.");
    result
}

/// Starts the local database (its data in `dir`, kept between runs) and
/// makes sure it has the `content` database; answers its URL.
async fn local_database(
    dir: &Path,
    port: u16,
    fresh: bool,
) -> Result<(throwaway_pg::Cluster, String)> {
    if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
        bail!(
            "port {port} on 127.0.0.1 is taken (another `cargo xtask up`, or another \
             PostgreSQL?): stop it, or choose another port with --db-port"
        );
    }
    eprintln!(
        "Starting PostgreSQL, data in {}{} ...",
        dir.display(),
        if fresh {
            " (fresh: the old data is deleted)"
        } else {
            ""
        }
    );
    let owned = dir.to_owned();
    let cluster =
        tokio::task::spawn_blocking(move || throwaway_pg::Cluster::keep(&owned, port, fresh))
            .await?
            .map_err(|e| match e {
                throwaway_pg::Error::InUse(dir) => anyhow::anyhow!(
                    "{} is in use by another `cargo xtask up`: stop that one first (Ctrl-C), or \
                 give this one its own folder with --data-dir",
                    dir.display()
                ),
                e => anyhow::Error::from(e),
            })
            .context("starting PostgreSQL")?;
    let client = cluster.connect("postgres").await?;
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = 'content'", &[])
        .await?
        .is_some();
    if !exists {
        cluster
            .create_database("content", None)
            .await
            .context("creating the database")?;
    }
    let url = cluster.url("content");
    eprintln!(
        "PostgreSQL: {url}\n  data kept in {} between runs; `cargo xtask up --fresh` starts empty",
        dir.display()
    );
    Ok((cluster, url))
}

/// Builds spin.toml's components the way the test suites do (one cargo run
/// over all their packages), so that neither rebuilds after the other.
fn build_components() -> Result<()> {
    let packages = app_server::components::packages()?;
    eprintln!("Building the components: {}", packages.join(", "));
    app_server::components::build(&packages)?;
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

/// How long a development token is valid.
const TOKEN_SECS: u64 = 7 * 24 * 3600;

/// What `up` prints once the app is served.
struct Banner<'a> {
    credentials: &'a dev_keys::Credentials,
    /// The local database's URL; one the user gave may hold a password and
    /// is not echoed.
    local_db: Option<&'a str>,
    auth_url: Option<&'a str>,
}

fn print_banner(listen: SocketAddr, banner: &Banner) -> Result<()> {
    let credentials = banner.credentials;
    println!();
    println!("API:    http://{listen}/api/health");
    if let Some(url) = banner.local_db {
        println!("Database: {url}");
    }
    match banner.auth_url {
        Some(auth) => {
            println!("Assess: http://{listen}/assess/ (sign in with a user of {auth})");
            println!("Tokens: the ones {auth} issues (its JWKS and issuer are the app's)");
        }
        None => {
            println!("Assess: http://{listen}/assess/ (paste the authenticated token)");
            for role in dev_keys::ROLES {
                println!("{role:>14} token: {}", credentials.token(role, TOKEN_SECS)?);
            }
        }
    }
    println!("    secret key: {}", credentials.api.secret);
    println!("publishable key: {}", credentials.api.publishable);
    println!("Use:    curl -H \"Authorization: Bearer <token>\" http://{listen}/api/...");
    println!("Ctrl-C stops everything.");
    println!();
    Ok(())
}

async fn serve_bundled(
    listen: SocketAddr,
    variables: &[(&str, String)],
    banner: &Banner<'_>,
) -> Result<()> {
    // The components are where cargo built them, which is not spin.toml's
    // `target/` when CARGO_TARGET_DIR is set.
    let manifest = app_server::components::manifest_in(&app_server::components::output_dir())?;
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
    print_banner(listener.local_addr()?, banner)?;
    spin_host::trigger::serve(listener, Arc::new(app), shutdown_signal()).await?;
    Ok(())
}

async fn serve_with_spin(
    listen: SocketAddr,
    variables: &[(&str, String)],
    banner: &Banner<'_>,
) -> Result<()> {
    // spin.toml with absolute sources, where cargo built them (not
    // spin.toml's `target/` when CARGO_TARGET_DIR is set).
    let out = app_server::components::output_dir();
    let dir = out.join("../../spin-up");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let manifest_path = dir.join("spin.toml");
    std::fs::write(
        &manifest_path,
        app_server::components::manifest_text_in(&out)?,
    )?;
    let mut command = tokio::process::Command::new("spin");
    command
        .arg("up")
        .arg("--from")
        .arg(&manifest_path)
        .arg("--listen")
        .arg(listen.to_string())
        .kill_on_drop(true);
    // Through the environment rather than `--variable`, so that secrets do
    // not show in the process list.
    for (name, value) in variables {
        command.env(spin_host::variables::env_name(name), value);
    }
    let mut child = command.spawn().context("starting `spin up`")?;
    print_banner(listen, banner)?;
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
