//! `local-agent migrate`: moves a legacy SQLite file into the API's
//! database.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};

use local_agent::store::Store;

use super::output::retry_notices;
use super::{Ctx, api_client, open_store};

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The legacy file (anki_vector_db.db)
    pub legacy: PathBuf,
    /// Read, convert and report the rejects; send nothing, touch no store
    #[arg(long)]
    pub dry_run: bool,
    /// Where the rejects go (JSON Lines) [default: <legacy>.rejects.jsonl]
    #[arg(long, value_name = "FILE")]
    pub reject_report: Option<PathBuf>,
    /// Apply a documented repair to a class of problem (off by default)
    #[arg(long, value_enum, value_name = "CLASS")]
    pub repair: Vec<RepairArg>,
    /// Send every row again, also after a finished migration: restores what
    /// was deleted or edited on the server since
    #[arg(long)]
    pub resend: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RepairArg {
    /// Read a score written with a decimal comma ('4,5') as 4.50
    DecimalComma,
}

/// A migration refused for want of rights gets the advice that fits it:
/// the import takes the service role, which has no place in a learner's
/// config file. It replaces the client's general advice for a refused
/// credential (store one with `init --token`), which would put it there.
fn needs_service_role(err: anyhow::Error, legacy: &std::path::Path) -> anyhow::Error {
    let refused =
        err.chain().find_map(
            |cause| match cause.downcast_ref::<local_agent::api::ApiError>() {
                Some(local_agent::api::ApiError::Unauthorized { status, detail }) => {
                    Some((*status, detail.clone()))
                }
                _ => None,
            },
        );
    let Some((status, detail)) = refused else {
        return err;
    };
    anyhow::anyhow!(
        "the API refused this credential for the import ({status}: {detail}): the migration \
         takes the service role. Give the project's secret key (sb_secret_…) or a service_role \
         token to this run only, in the environment: \
         THAI_AGENT_TOKEN=sb_secret_… local-agent migrate {} (or with --token, which other \
         users can see in `ps`). Do not store it with `local-agent init`: the config file on a \
         learner's machine keeps the learner's own credential",
        legacy.display()
    )
}

pub fn run(ctx: &Ctx, args: MigrateArgs) -> Result<()> {
    let (out, settings, backoff) = (&ctx.out, &ctx.settings, ctx.backoff);
    let MigrateArgs {
        legacy,
        dry_run,
        reject_report,
        repair,
        resend,
    } = args;
    use local_agent::migrate;
    let reject_report = reject_report.unwrap_or_else(|| {
        let mut name = legacy.clone().into_os_string();
        name.push(".rejects.jsonl");
        PathBuf::from(name)
    });
    let options = migrate::Options {
        legacy,
        dry_run,
        reject_report,
        repairs: migrate::Repairs {
            decimal_comma: repair.contains(&RepairArg::DecimalComma),
        },
        progress: out.progress,
        resend,
    };
    let summary = if dry_run {
        // Registers sqlite-vec for the legacy file's vec0 table; no file.
        let _vec = Store::open_in_memory()?;
        migrate::run(&options, None, None)?
    } else {
        let mut store = open_store(settings)?;
        let client = api_client(settings, backoff)?.with_retry_hook(retry_notices(out, None));
        migrate::run(&options, Some(&mut store), Some(&client))
            .map_err(|e| needs_service_role(e, &options.legacy))?
    };
    out.print(&summary, || migrate::run::render(&summary))?;
    if !summary.ok {
        bail!(
            "the verification found differences (see the table above); run the same command \
             again to resume, and report it if they remain"
        );
    }
    Ok(())
}
