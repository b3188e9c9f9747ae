//! `local-agent migrate`: moves a legacy SQLite file into the API's
//! database.

mod summary;

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use local_agent::api::ApiError;
use local_agent::migrate::{self, MigrateError, Phase, Progress, Unit};
use local_agent::store::Store;

use super::output::{Output, retry_notices};
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
fn needs_service_role(err: MigrateError, legacy: &Path) -> anyhow::Error {
    let Some(ApiError::Unauthorized { status, detail }) = err.api() else {
        return err.into();
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

/// The bars of a migration on stderr: one per table while it is sent
/// (assets by their bytes), a spinner for each other phase. Whatever is
/// shown is cleared when it is dropped, so the summary starts on a clean
/// line also after an error.
struct Bars<'a> {
    out: &'a Output,
    shown: Option<ProgressBar>,
}

impl<'a> Bars<'a> {
    fn new(out: &'a Output) -> Self {
        Bars { out, shown: None }
    }

    fn show(&mut self, progress: Progress) {
        match progress {
            Progress::Phase(phase) => self.replace(self.out.spinner(phase_text(phase))),
            Progress::Sending { table, total, unit } => {
                self.replace(table_bar(self.out, total, table, unit))
            }
            Progress::Advanced { amount, .. } => {
                if let Some(bar) = &self.shown {
                    bar.inc(amount);
                }
            }
            Progress::Sent { .. } => self.clear(),
        }
    }

    fn replace(&mut self, bar: ProgressBar) {
        self.clear();
        self.shown = Some(bar);
    }

    fn clear(&mut self) {
        if let Some(bar) = self.shown.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Bars<'_> {
    fn drop(&mut self) {
        self.clear();
    }
}

fn phase_text(phase: Phase) -> &'static str {
    match phase {
        Phase::Reading => "reading the legacy file",
        Phase::MovingSequences => "moving the sequences",
        Phase::Verifying => "verifying: reading every table back",
        Phase::Pulling => "pulling into the store",
        Phase::CopyingIntoStore => "copying the Anki cards and vectors into the store",
    }
}

fn table_bar(out: &Output, len: u64, table: &str, unit: Unit) -> ProgressBar {
    if !out.progress {
        return ProgressBar::hidden();
    }
    let template = match unit {
        Unit::Bytes => {
            "{msg:<18} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} [{elapsed}, eta {eta}]"
        }
        Unit::Rows => "{msg:<18} [{bar:30}] {pos}/{len} rows {per_sec} [{elapsed}, eta {eta}]",
    };
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(table.to_owned());
    bar
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
        resend,
    };
    let mut bars = Bars::new(out);
    let summary = if dry_run {
        // Registers sqlite-vec for the legacy file's vec0 table; no file.
        let _vec = Store::open_in_memory()?;
        migrate::run(&options, None, None, |p| bars.show(p))?
    } else {
        let mut store = open_store(settings)?;
        let client = api_client(settings, backoff)?.with_retry_hook(retry_notices(out, None));
        migrate::run(&options, Some(&mut store), Some(&client), |p| bars.show(p))
            .map_err(|e| needs_service_role(e, &options.legacy))?
    };
    drop(bars);
    out.print(&summary, || summary::render(&summary))?;
    if !summary.ok {
        bail!(
            "the verification found differences (see the table above); run the same command \
             again to resume, and report it if they remain"
        );
    }
    Ok(())
}
