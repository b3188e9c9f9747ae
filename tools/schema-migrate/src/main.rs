//! `schema-migrate`: applies `migrations/` to the database at DATABASE_URL.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Applies the project's PostgreSQL migrations, each file once, in order.
///
/// Examples:
///   DATABASE_URL=postgres://postgres@localhost/app schema-migrate
///   schema-migrate --database-url "$DATABASE_URL" status
#[derive(Parser)]
#[command(version, verbatim_doc_comment)]
struct Cli {
    /// The database, as a postgres:// URL (libpq's sslmode and sslrootcert are understood).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// The directory of <YYYYMMDDHHMMSS>_<name>.sql files.
    #[arg(long, default_value = "migrations")]
    dir: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Apply every pending file (the default).
    Apply,
    /// List pending files without applying them.
    Status,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let migrations = schema_migrate::Migrations::from_dir(&cli.dir)
        .with_context(|| format!("reading migrations from {}", cli.dir.display()))?;
    let mut client = schema_migrate::connect(&cli.database_url)
        .await
        .context("connecting to DATABASE_URL")?;
    match cli.command.unwrap_or(Command::Apply) {
        Command::Apply => {
            let report = schema_migrate::apply(&mut client, &migrations).await?;
            for file in &report.applied {
                println!("applied  {file}");
            }
            let version = migrations.latest().map_or("none", |m| m.version.as_str());
            println!(
                "schema at {version}: {} applied now, {} already applied",
                report.applied.len(),
                report.already_applied
            );
        }
        Command::Status => {
            let pending = schema_migrate::pending(&client, &migrations).await?;
            if pending.is_empty() {
                println!("up to date ({} files applied)", migrations.len());
            }
            for migration in pending {
                println!("pending  {}", migration.file_name());
            }
        }
    }
    Ok(())
}
