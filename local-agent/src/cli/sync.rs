//! `local-agent sync`: `pull`, then `embed`, then `anki push`, each as its
//! own command does it.

use std::time::Instant;

use anyhow::{Result, bail};
use serde::Serialize;

use local_agent::anki::PushReport;
use local_agent::embed::EmbedReport;
use local_agent::pull::{PullOptions, PullReport};

use super::anki::{self, AnkiArgs, describe_push};
use super::{Ctx, KindArg, embed, embedder, open_store, pull};

pub fn run(ctx: &Ctx, args: &AnkiArgs) -> Result<()> {
    let out = &ctx.out;
    let mut store = open_store(&ctx.settings)?;
    let started = Instant::now();
    let pulled = pull::execute(ctx, &mut store, PullOptions::default())?;
    let embedder = embedder(out, &ctx.settings, ctx.backoff)?;
    let embedded = embed::execute(ctx, &mut store, embedder.as_ref(), KindArg::All)?;
    let report = anki::execute(ctx, args, &mut store)?;
    let seconds = started.elapsed().as_secs_f64();
    #[derive(Serialize)]
    struct Json<'a> {
        pull: &'a PullReport,
        embed: &'a EmbedReport,
        anki: &'a PushReport,
        seconds: f64,
    }
    out.print(
        &Json {
            pull: &pulled,
            embed: &embedded,
            anki: &report,
            seconds,
        },
        || {
            format!(
                "Pulled {} rows added or updated, {} deleted; {} embedded.\n{}",
                pulled.upserts,
                pulled.deletes,
                embedded.embedded,
                describe_push(&report, &ctx.settings.anki.deck.value, seconds)
            )
        },
    )?;
    if !report.failed.is_empty() {
        bail!("{} note(s) could not be pushed", report.failed.len());
    }
    Ok(())
}
