//! `local-agent embed`: vectors for the texts that changed.

use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;

use local_agent::embed::{self, EmbedReport, Embedder};
use local_agent::store::Store;

use super::{Ctx, KindArg, embedder, fallback_hint, open_store};

#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// Embedding model [env: THAI_AGENT_EMBED_MODEL] [default: the installed model (`model
    /// list`), else hashed-ngrams-v1, built in]
    #[arg(long)]
    pub model: Option<String>,
    /// Which rows to embed
    #[arg(long, value_enum, default_value_t = KindArg::All)]
    pub kind: KindArg,
}

/// The embedding pass with its progress bar; shared by `embed` and `sync`.
pub fn execute(
    ctx: &Ctx,
    store: &mut Store,
    embedder: &dyn Embedder,
    kind: KindArg,
) -> Result<EmbedReport> {
    let bar = ctx
        .out
        .bar(0, &format!("embedding with {}", embedder.model()));
    let result = embed::embed_store(store, embedder, &kind.kinds(), |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    result.context("embedding stopped; vectors of finished batches are kept")
}

pub fn run(ctx: &Ctx, args: EmbedArgs) -> Result<()> {
    let out = &ctx.out;
    let mut store = open_store(&ctx.settings)?;
    let embedder = embedder(out, &ctx.settings, ctx.backoff)?;
    let started = Instant::now();
    let report = execute(ctx, &mut store, embedder.as_ref(), args.kind)?;
    let seconds = started.elapsed().as_secs_f64();
    #[derive(Serialize)]
    struct Json<'a> {
        model: &'a str,
        #[serde(flatten)]
        report: &'a EmbedReport,
        seconds: f64,
    }
    out.print(
        &Json {
            model: embedder.model(),
            report: &report,
            seconds,
        },
        || {
            let mut text = format!(
                "{} embedded, {} unchanged, {} without text, {} stale vectors removed ({}, {seconds:.1}s).",
                report.embedded,
                report.unchanged,
                report.empty,
                report.pruned,
                embedder.model()
            );
            if report.embedded + report.unchanged == 0 {
                text.push_str("\nNothing to embed: run `local-agent pull` first.");
            }
            if let Some(hint) = fallback_hint(&ctx.settings) {
                text.push('\n');
                text.push_str(&hint);
            }
            text
        },
    )
}
