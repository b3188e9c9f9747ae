//! `local-agent pull`: brings the mirror up to date with the change feed.

use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;

use local_agent::pull::{self, PullOptions, PullReport};
use local_agent::store::Store;

use super::output::retry_notices;
use super::{Ctx, api_client, open_store};

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Re-read everything (a full snapshot) instead of only changes
    #[arg(long)]
    pub full: bool,
    /// Rows per page asked of the server
    #[arg(long, default_value_t = pull::DEFAULT_PAGE_SIZE,
          value_parser = clap::value_parser!(u32)
              .range(1..=i64::from(content_model::limits::FEED_PAGE_MAX)))]
    pub page_size: u32,
}

/// The pull, with a spinner that counts pages and says each retry; shared
/// by `pull` and `sync`.
pub fn execute(ctx: &Ctx, store: &mut Store, options: PullOptions) -> Result<PullReport> {
    let spinner = ctx.out.spinner("pulling changes");
    let client = api_client(&ctx.settings, ctx.backoff)?
        .with_retry_hook(retry_notices(&ctx.out, Some(spinner.clone())));
    let result = pull::pull(store, &client, options, |p| {
        let phase = match p.phase {
            local_agent::feed::Phase::Snapshot => "snapshot",
            local_agent::feed::Phase::Log => "changes",
        };
        spinner.set_message(format!("{phase}: {} rows in {} pages", p.changes, p.pages));
    });
    spinner.finish_and_clear();
    result.context("pull stopped; what it applied is kept, run it again to continue")
}

pub fn run(ctx: &Ctx, args: PullArgs) -> Result<()> {
    let out = &ctx.out;
    let mut store = open_store(&ctx.settings)?;
    let started = Instant::now();
    let report = execute(
        ctx,
        &mut store,
        PullOptions {
            full: args.full,
            page_size: args.page_size,
        },
    )?;
    let seconds = started.elapsed().as_secs_f64();
    #[derive(Serialize)]
    struct Json<'a> {
        #[serde(flatten)]
        report: &'a pull::PullReport,
        seconds: f64,
    }
    out.print(
        &Json {
            report: &report,
            seconds,
        },
        || {
            let mut text = if report.upserts + report.deletes + report.swept == 0 {
                "Already up to date.".to_owned()
            } else {
                format!(
                    "Pulled {} pages in {seconds:.1}s: {} rows added or updated, {} deleted{}.",
                    report.pages,
                    report.upserts,
                    report.deletes,
                    if report.swept > 0 {
                        format!(", {} removed as no longer on the server", report.swept)
                    } else {
                        String::new()
                    }
                )
            };
            if report.cursor_expired > 0 {
                text.push_str(
                    "\nThe server had pruned its change log past our cursor: re-read everything.",
                );
            }
            // Assets and rankings carry no text that `embed` indexes.
            if report.text_upserts > 0 {
                text.push_str("\nNext: `local-agent embed` to index the new texts.");
            }
            text
        },
    )
}
