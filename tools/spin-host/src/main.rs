//! `spin-host`: serves a Spin application like `spin up --from spin.toml`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use spin_host::manifest::Manifest;
use spin_host::postgres::EmptyResults;
use spin_host::runtime::Runtime;
use spin_host::variables::Sources;

/// Serve a Spin application (manifest v2, HTTP trigger) with Wasmtime.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The application manifest.
    #[arg(short = 'f', long = "from", default_value = "spin.toml")]
    from: PathBuf,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// An application variable, NAME=VALUE; wins over SPIN_VARIABLE_NAME and
    /// defaults. May be repeated.
    #[arg(long = "variable", value_parser = parse_variable)]
    variables: Vec<(String, String)>,
    /// Fail every Postgres query that matches no row, naming it, where Spin
    /// 4.0.0 to 4.0.2 would never answer it (spinframework/spin#3671).
    #[arg(long)]
    refuse_empty_results: bool,
    /// The most linear memory one instance may have, in bytes (as Spin's
    /// option of that name).
    #[arg(long, value_name = "BYTES")]
    max_instance_memory: Option<usize>,
}

fn parse_variable(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))
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
    let args = Args::parse();

    let manifest = Manifest::from_file(&args.from)?;
    let mut runtime = Runtime::new()?.with_empty_results(if args.refuse_empty_results {
        EmptyResults::Refuse
    } else {
        EmptyResults::Answer
    });
    if let Some(bytes) = args.max_instance_memory {
        runtime = runtime.with_max_instance_memory(bytes);
    }
    let sources = Sources {
        explicit: args.variables.into_iter().collect(),
        env: None,
    };
    let app = runtime
        .load(&manifest, &sources)
        .with_context(|| format!("cannot serve {}", args.from.display()))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;

    eprintln!("Serving http://{addr}");
    eprintln!("Available Routes:");
    for (route, component) in app.router.routes() {
        eprintln!("  {component}: http://{addr}{route}");
    }

    spin_host::trigger::serve(listener, Arc::new(app), shutdown_signal()).await?;
    eprintln!("Stopped.");
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
