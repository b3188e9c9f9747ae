//! `local-agent anki push`: the mirror into Anki through AnkiConnect.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use serde::Serialize;

use local_agent::anki::PushReport;
use local_agent::store::Store;

use super::{Ctx, api_client, open_store};

#[derive(Debug, Subcommand)]
pub enum AnkiCommand {
    /// Add new notes, update changed ones; unchanged notes send nothing
    #[command(
        after_help = "Examples:\n  local-agent anki push\n  local-agent anki push --deck 'Thai::Mirror' --json\n  local-agent anki push --verify   # also notice notes deleted in Anki"
    )]
    Push(AnkiArgs),
}

#[derive(Debug, Clone, Args)]
pub struct AnkiArgs {
    /// AnkiConnect's URL [env: THAI_AGENT_ANKI_URL] [default: http://127.0.0.1:8765]
    #[arg(long, value_name = "URL")]
    pub anki_url: Option<String>,
    /// The deck new notes go to [env: THAI_AGENT_ANKI_DECK] [default: Thai]
    #[arg(long)]
    pub deck: Option<String>,
    /// Also check that every unchanged note still exists in Anki
    #[arg(long)]
    pub verify: bool,
}

/// The push itself, with its progress bars; shared by `anki push` and
/// `sync`. `args`' URL and deck are in the settings already (they are
/// flags of the Anki section).
pub fn execute(ctx: &Ctx, args: &AnkiArgs, store: &mut Store) -> Result<PushReport> {
    let (out, settings, backoff) = (&ctx.out, &ctx.settings, ctx.backoff);
    let anki_settings = &settings.anki;
    let anki = local_agent::anki::AnkiConnect::new(
        &anki_settings.url.value,
        anki_settings.api_key.as_ref().map(|k| k.value.clone()),
        Duration::from_secs(anki_settings.timeout.value),
    );
    // Audio not cached yet is fetched from the API when one is configured.
    let api = settings
        .api
        .url
        .as_ref()
        .map(|_| api_client(settings, backoff))
        .transpose()?;
    let report = local_agent::anki::push(
        store,
        &anki,
        api.as_ref(),
        anki_settings,
        local_agent::anki::PushOptions {
            verify: args.verify,
        },
        &mut out.push_progress(),
    )?;
    Ok(report)
}

pub fn describe_push(report: &PushReport, deck: &str, seconds: f64) -> String {
    let r = report;
    let mut text =
        if r.added + r.updated + r.recreated + r.legacy_recreated + r.adopted + r.tagged_deleted
            == 0
            && r.failed.is_empty()
        {
            format!(
                "Anki is up to date ({} notes unchanged, {seconds:.1}s).",
                r.unchanged
            )
        } else {
            format!(
                "Anki: {} added to {deck}, {} updated, {} unchanged, {} re-created, {} tagged \
             deleted; {} sound files stored ({:.1} MB), {} already there ({seconds:.1}s).",
                r.added,
                r.updated,
                r.unchanged,
                r.recreated,
                r.tagged_deleted,
                r.media_stored,
                r.media_bytes as f64 / 1e6,
                r.media_present,
            )
        };
    if r.legacy_recreated > 0 {
        let types: Vec<&str> = r.legacy_note_types.iter().map(String::as_str).collect();
        text.push_str(&format!(
            "\n{} card(s) of the old application point at notes of type {} that this Anki \
             profile does not have (it is another profile or a new computer): they were created \
             anew in {deck}; their review history stays in the old profile.",
            r.legacy_recreated,
            types.join(", ")
        ));
    }
    if r.adopted > 0 {
        text.push_str(&format!(
            "\n{} note(s) were already in Anki from a push that stopped before Anki answered; \
             they were updated, not added twice.",
            r.adopted
        ));
    }
    if r.moved_to_deck > 0 {
        text.push_str(&format!(
            "\nAnki put {} new card(s) outside {deck}; they were moved into it.",
            r.moved_to_deck
        ));
    }
    if r.deleted_in_anki > 0 {
        text.push_str(&format!(
            "\n{} note(s) were deleted in Anki and are left alone ([anki] deleted_in_anki = \
             \"recreate\" adds them again).",
            r.deleted_in_anki
        ));
    }
    for failure in &r.failed {
        text.push_str(&format!("\nfailed {}: {}", failure.key, failure.error));
    }
    if !r.failed.is_empty() {
        text.push_str("\nThe failed notes are tried again by the next push.");
    }
    text
}

pub fn run(ctx: &Ctx, args: &AnkiArgs) -> Result<()> {
    let out = &ctx.out;
    let mut store = open_store(&ctx.settings)?;
    let started = Instant::now();
    let report = execute(ctx, args, &mut store)?;
    let deck = &ctx.settings.anki.deck.value;
    let seconds = started.elapsed().as_secs_f64();
    #[derive(Serialize)]
    struct Json<'a> {
        deck: &'a str,
        #[serde(flatten)]
        report: &'a PushReport,
        seconds: f64,
    }
    out.print(
        &Json {
            deck,
            report: &report,
            seconds,
        },
        || describe_push(&report, deck, seconds),
    )?;
    if !report.failed.is_empty() {
        bail!("{} note(s) could not be pushed", report.failed.len());
    }
    Ok(())
}
