//! The command line: argument parsing, the commands, and how their results
//! are shown (text for people, `--json` for scripts, progress bars only on
//! a terminal).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use local_agent::api::{ApiClient, RetryNotice};
use local_agent::backoff::Backoff;
use local_agent::config::{self, Dirs, FileConfig, Flags, Settings};
use local_agent::embed::{self, Embedder, HashedNgrams, OpenAiEmbedder};
use local_agent::pull::{self, PullOptions};
use local_agent::search::{self, Query};
use local_agent::store::{SourceKind, Store};

const EXAMPLES: &str = "\
Examples:
  local-agent init --api-url http://127.0.0.1:3000 --token \"$JWT\"
  local-agent pull                 # fetch what changed since the last pull
  local-agent embed                # vectors for new and edited texts
  local-agent search 'ขอบคุณ' --k 5
  local-agent status --json | jq .mirror

Settings come from flags, then THAI_AGENT_* environment variables, then the
config file (`local-agent config` shows which one won).";

/// The learner's agent beside Anki: mirrors the Thai content API into one
/// SQLite file, embeds its texts and finds similar ones.
#[derive(Debug, Parser)]
#[command(name = "local-agent", version, about, after_help = EXAMPLES)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// The store file [env: THAI_AGENT_DB] [default: in the platform data dir]
    #[arg(long, global = true, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// The config file [env: THAI_AGENT_CONFIG] [default: in the platform config dir]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Base URL of the content API [env: THAI_AGENT_API_URL]
    #[arg(long, global = true, value_name = "URL")]
    pub api_url: Option<String>,
    /// The API credential [env: THAI_AGENT_TOKEN]: a user's access token (JWT) or
    /// the project's publishable key (sb_publishable_…); `migrate` needs the secret key
    /// (sb_secret_…). Prefer the environment or the config file, as other users can see
    /// flags in `ps`
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Seconds to wait for the API to start answering a request before the
    /// try counts as failed [env: THAI_AGENT_API_TIMEOUT] [default: 60]
    #[arg(long, global = true, value_name = "SECONDS")]
    pub api_timeout: Option<u64>,
    /// Print results as JSON (for scripts); no progress bars
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress bars or notices on stderr, only errors
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// How many times an HTTP call is tried before giving up
    #[arg(long, global = true, value_name = "N", default_value_t = 6,
          value_parser = clap::value_parser!(u32).range(1..=20))]
    pub tries: u32,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write the config file with the API URL and token (mode 0600)
    #[command(
        after_help = "Example:\n  local-agent init --api-url https://api.example.org --token \"$JWT\""
    )]
    Init {
        /// Replace an API URL or token the file holds already
        #[arg(long)]
        force: bool,
    },
    /// Bring the local mirror up to date with the API's change feed
    #[command(
        after_help = "Examples:\n  local-agent pull\n  local-agent pull --full   # re-read everything"
    )]
    Pull {
        /// Re-read everything (a full snapshot) instead of only changes
        #[arg(long)]
        full: bool,
        /// Rows per page asked of the server
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=1000))]
        page_size: u32,
    },
    /// Compute vectors for contents and fragments whose text changed
    #[command(
        after_help = "Examples:\n  local-agent embed\n  local-agent embed --model all-minilm   # with embed.url set to e.g. http://localhost:11434/v1"
    )]
    Embed {
        /// Embedding model [env: THAI_AGENT_EMBED_MODEL] [default: hashed-ngrams-v1, built in]
        #[arg(long)]
        model: Option<String>,
        /// Which rows to embed
        #[arg(long, value_enum, default_value_t = KindArg::All)]
        kind: KindArg,
    },
    /// Find the contents or fragments nearest to a text
    #[command(
        after_help = "Examples:\n  local-agent search 'สวัสดีครับ'\n  local-agent search 'thank you' --kind content --k 3 --json"
    )]
    Search {
        /// The text to look for
        text: String,
        /// How many results
        #[arg(long, short, default_value_t = 10)]
        k: usize,
        /// Search fragments or whole contents
        #[arg(long, value_enum, default_value_t = KindArg::Fragment)]
        kind: KindArg,
        /// Only contents of this content type (e.g. phrase)
        #[arg(long)]
        content_type: Option<String>,
        /// Only contents in this language (e.g. thai)
        #[arg(long)]
        language: Option<String>,
        /// Embedding model whose vectors to search [default: as for embed]
        #[arg(long)]
        model: Option<String>,
    },
    /// Move a legacy SQLite file into the API's database (service-role token)
    #[command(
        after_help = "Examples:\n  local-agent migrate anki_vector_db.db --dry-run\n  local-agent migrate anki_vector_db.db --reject-report rejects.jsonl --repair decimal-comma\n  local-agent migrate anki_vector_db.db --resend   # after a finished migration: send everything again"
    )]
    Migrate {
        /// The legacy file (anki_vector_db.db)
        legacy: PathBuf,
        /// Read, convert and report the rejects; send nothing, touch no store
        #[arg(long)]
        dry_run: bool,
        /// Where the rejects go (JSON Lines) [default: <legacy>.rejects.jsonl]
        #[arg(long, value_name = "FILE")]
        reject_report: Option<PathBuf>,
        /// Apply a documented repair to a class of problem (off by default)
        #[arg(long, value_enum, value_name = "CLASS")]
        repair: Vec<RepairArg>,
        /// Send every row again, also after a finished migration: restores what
        /// was deleted or edited on the server since
        #[arg(long)]
        resend: bool,
    },
    /// Send the mirror to Anki through the AnkiConnect add-on
    Anki {
        #[command(subcommand)]
        command: AnkiCommand,
    },
    /// pull, then embed, then anki push
    #[command(after_help = "Example:\n  local-agent sync --json")]
    Sync(AnkiArgs),
    /// Show what is mirrored, the sync position, vectors, cards and whether the API answers
    Status,
    /// Show the settings in effect and where each comes from
    Config,
    /// Print a shell completion script
    #[command(
        after_help = "Example:\n  local-agent completions bash > ~/.local/share/bash-completion/completions/local-agent"
    )]
    Completions { shell: clap_complete::Shell },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RepairArg {
    /// Read a score written with a decimal comma ('4,5') as 4.50
    DecimalComma,
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    Fragment,
    Content,
    All,
}

impl KindArg {
    fn kinds(self) -> Vec<SourceKind> {
        match self {
            KindArg::Fragment => vec![SourceKind::Fragment],
            KindArg::Content => vec![SourceKind::Content],
            KindArg::All => vec![SourceKind::Content, SourceKind::Fragment],
        }
    }
}

/// How results reach the user.
struct Output {
    json: bool,
    /// Progress bars: a terminal on stderr, and neither --json nor --quiet.
    progress: bool,
    /// No notices on stderr either (errors still are).
    quiet: bool,
}

impl Output {
    fn print<T: Serialize>(&self, value: &T, text: impl FnOnce() -> String) -> Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        } else {
            println!("{}", text());
        }
        Ok(())
    }

    fn spinner(&self, message: &str) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("valid template"),
        );
        bar.set_message(message.to_owned());
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    }

    fn bar(&self, len: u64, message: &str) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {human_pos}/{human_len} [{elapsed} elapsed, {eta} left]",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_message(message.to_owned());
        bar
    }
}

impl Output {
    /// A bar over bytes, with a message that counts files.
    fn bytes_bar(&self, len: u64, message: &str) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} \
                 [{elapsed} elapsed, {eta} left]",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_message(message.to_owned());
        bar
    }

    /// The bars of a push: the sound files (bytes and files), then the
    /// notes.
    fn push_progress(&self) -> impl FnMut(local_agent::anki::Progress) + '_ {
        use local_agent::anki::Progress;
        let mut media: Option<ProgressBar> = None;
        let mut notes: Option<ProgressBar> = None;
        move |p| match p {
            Progress::Media {
                files,
                files_total,
                bytes,
                bytes_total,
            } => {
                let bar = media.get_or_insert_with(|| self.bytes_bar(bytes_total, "sound files"));
                bar.set_position(bytes);
                bar.set_message(format!("sound files {files}/{files_total}"));
                if files == files_total {
                    bar.finish_and_clear();
                }
            }
            Progress::Notes { done, total } => {
                let bar = notes.get_or_insert_with(|| self.bar(total as u64, "notes"));
                bar.set_position(done as u64);
                if done == total {
                    bar.finish_and_clear();
                }
            }
        }
    }
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

pub fn run(cli: Cli) -> Result<()> {
    let out = Output {
        json: cli.global.json,
        progress: !cli.global.json && !cli.global.quiet && std::io::stderr().is_terminal(),
        quiet: cli.global.quiet,
    };
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(
            shell,
            &mut Cli::command(),
            "local-agent",
            &mut std::io::stdout(),
        );
        return Ok(());
    }
    let embed_model = match &cli.command {
        Command::Embed { model, .. } | Command::Search { model, .. } => model.clone(),
        _ => None,
    };
    let flags = Flags {
        config: cli.global.config.clone(),
        db: cli.global.db.clone(),
        api_url: cli.global.api_url.clone(),
        token: cli.global.token.clone(),
        api_timeout: cli.global.api_timeout,
        embed_model,
        ..Flags::default()
    };
    let dirs = Dirs::platform();
    let config_path = config::config_path(&flags, &env_var, dirs.as_ref())?;
    let file = FileConfig::load(&config_path.value)?;
    let settings = config::resolve(&flags, &env_var, config_path, &file, dirs.as_ref())?;
    let backoff = Backoff {
        attempts: cli.global.tries,
        ..Backoff::default()
    };

    match cli.command {
        Command::Init { force } => init(&out, &settings, file, force, backoff),
        Command::Pull { full, page_size } => run_pull(&out, &settings, backoff, full, page_size),
        Command::Embed { kind, .. } => run_embed(&out, &settings, backoff, kind),
        Command::Search {
            text,
            k,
            kind,
            content_type,
            language,
            ..
        } => {
            if kind == KindArg::All {
                bail!("search looks in one kind at a time: --kind fragment or --kind content");
            }
            let query = Query {
                text: &text,
                k,
                kind: kind.kinds()[0],
                content_type: content_type.as_deref(),
                language: language.as_deref(),
            };
            run_search(&out, &settings, backoff, &query)
        }
        Command::Migrate {
            legacy,
            dry_run,
            reject_report,
            repair,
            resend,
        } => run_migrate(
            &out,
            &settings,
            backoff,
            legacy,
            (dry_run, resend),
            reject_report,
            &repair,
        ),
        Command::Anki {
            command: AnkiCommand::Push(args),
        } => run_anki_push(&out, &settings, &file, backoff, &args),
        Command::Sync(args) => run_sync(&out, &settings, &file, backoff, &args),
        Command::Status => status(&out, &settings, backoff),
        Command::Config => out.print(&settings, || describe_settings(&settings)),
        Command::Completions { .. } => unreachable!("handled above"),
    }
}

fn open_store(settings: &Settings) -> Result<Store> {
    let path = &settings.db.value;
    Store::open(path).with_context(|| format!("opening the store {}", path.display()))
}

fn api_client(settings: &Settings, backoff: Backoff) -> Result<ApiClient> {
    let Some(url) = &settings.api_url else {
        bail!(
            "no API URL configured; run `local-agent init --api-url <URL> --token <JWT>`, \
             or pass --api-url or set THAI_AGENT_API_URL"
        );
    };
    Ok(ApiClient::new(
        &url.value,
        settings.token.as_ref().map(|t| t.value.clone()),
        backoff,
    )
    .with_timeout(Duration::from_secs(settings.api_timeout.value)))
}

fn embedder(out: &Output, settings: &Settings, backoff: Backoff) -> Result<Box<dyn Embedder>> {
    let e = &settings.embed;
    if e.is_builtin() {
        return Ok(Box::new(HashedNgrams));
    }
    let embedder = OpenAiEmbedder::new(
        e.endpoint()?,
        &e.model.value,
        e.api_key.as_ref().map(|k| k.value.clone()),
        e.dimensions,
        backoff,
    )
    .with_retry_hook(retry_notices(out, None));
    Ok(Box::new(match &e.endpoint_name {
        Some(name) => embedder.with_endpoint_name(name),
        None => embedder,
    }))
}

#[derive(Serialize)]
struct InitReport<'a> {
    config_file: &'a std::path::Path,
    api_url: Option<&'a str>,
    token_saved: bool,
    api_answers: Option<bool>,
}

fn init(
    out: &Output,
    settings: &Settings,
    mut file: FileConfig,
    force: bool,
    backoff: Backoff,
) -> Result<()> {
    let path = &settings.config_file.value;
    let api_url = settings.api_url.as_ref().map(|u| u.value.clone());
    let token = settings.token.as_ref().map(|t| t.value.clone());
    if api_url.is_none() {
        bail!("init needs the API URL: local-agent init --api-url <URL> --token <JWT>");
    }
    let replaces =
        |old: &Option<String>, new: &Option<String>| old.is_some() && new.is_some() && old != new;
    if !force && (replaces(&file.api_url, &api_url) || replaces(&file.token, &token)) {
        bail!(
            "{} already holds another API URL or token; add --force to replace them",
            path.display()
        );
    }
    file.api_url = api_url.clone();
    if token.is_some() {
        file.token = token.clone();
    }
    file.save(path)?;
    let answers = api_client(
        settings,
        Backoff {
            attempts: 1,
            ..backoff
        },
    )?
    .health()
    .is_ok();
    let report = InitReport {
        config_file: path,
        api_url: api_url.as_deref(),
        token_saved: file.token.is_some(),
        api_answers: Some(answers),
    };
    out.print(&report, || {
        let mut text = format!("Wrote {} (readable by you only).", path.display());
        if file.token.is_none() {
            text.push_str("\nNo token saved: add one with --token <JWT> if the API requires it.");
        }
        if answers {
            text.push_str("\nThe API answers. Next: `local-agent pull`.");
        } else {
            text.push_str(&format!(
                "\nThe API at {} does not answer yet; `local-agent status` checks again. \
                 Then: `local-agent pull`.",
                api_url.as_deref().unwrap_or_default()
            ));
        }
        text
    })
}

/// Says each retry (a 503, a dropped connection) as it happens, so a user
/// waiting out an outage knows why nothing moves: on the progress bar when
/// one is shown, else on stderr, even with --json (stdout stays data).
fn retry_notices(out: &Output, bar: Option<ProgressBar>) -> local_agent::api::RetryHook {
    let quiet = out.quiet;
    Arc::new(move |n: &RetryNotice| {
        let text = format!(
            "{}; attempt {} of {} in {:.1}s",
            n.reason,
            n.attempt,
            n.of,
            n.wait.as_secs_f64()
        );
        match &bar {
            Some(bar) if !bar.is_hidden() => bar.set_message(text),
            _ if quiet => {}
            _ => eprintln!("{text}"),
        }
    })
}

fn run_pull(
    out: &Output,
    settings: &Settings,
    backoff: Backoff,
    full: bool,
    page_size: u32,
) -> Result<()> {
    let mut store = open_store(settings)?;
    let spinner = out.spinner("pulling changes");
    let client =
        api_client(settings, backoff)?.with_retry_hook(retry_notices(out, Some(spinner.clone())));
    let started = Instant::now();
    let result = pull::pull(&mut store, &client, PullOptions { full, page_size }, |p| {
        let phase = match p.phase {
            local_agent::feed::Phase::Snapshot => "snapshot",
            local_agent::feed::Phase::Log => "changes",
        };
        spinner.set_message(format!("{phase}: {} rows in {} pages", p.changes, p.pages));
    });
    spinner.finish_and_clear();
    let report =
        result.context("pull stopped; what it applied is kept, run it again to continue")?;
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

fn run_embed(out: &Output, settings: &Settings, backoff: Backoff, kind: KindArg) -> Result<()> {
    let mut store = open_store(settings)?;
    let embedder = embedder(out, settings, backoff)?;
    let bar = out.bar(0, &format!("embedding with {}", embedder.model()));
    let started = Instant::now();
    let result = embed::embed_store(
        &mut store,
        embedder.as_ref(),
        &kind.kinds(),
        |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    );
    bar.finish_and_clear();
    let report = result.context("embedding stopped; vectors of finished batches are kept")?;
    let seconds = started.elapsed().as_secs_f64();
    #[derive(Serialize)]
    struct Json<'a> {
        model: &'a str,
        #[serde(flatten)]
        report: &'a embed::EmbedReport,
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
            text
        },
    )
}

fn run_search(
    out: &Output,
    settings: &Settings,
    backoff: Backoff,
    query: &Query<'_>,
) -> Result<()> {
    let store = open_store(settings)?;
    let model = &settings.embed.model.value;
    if !settings.embed.is_builtin() && settings.embed.url.is_none() {
        // Vectors of this model are there (copied by `migrate` from the
        // legacy file), but the query text can only be compared with them
        // once the same model has embedded it.
        let stored: i64 = store
            .counts()?
            .vectors
            .iter()
            .filter(|v| &v.model == model)
            .map(|v| v.count)
            .sum();
        if stored > 0 {
            bail!(
                "the store holds {stored} vectors of {model} (the legacy file's, copied by \
                 `local-agent migrate`, or made by an earlier `embed`), but a search must embed \
                 the query with the same model, and no endpoint serves it: set embed.url in the \
                 config file or THAI_AGENT_EMBED_URL to an OpenAI-compatible endpoint that \
                 serves {model} (one that knows it by another name, like Ollama's all-minilm \
                 for all-MiniLM-L6-v2, is named under [embed.endpoint_names]); or search the \
                 built-in model's vectors instead: `local-agent embed`, then search without \
                 --model"
            );
        }
    }
    let embedder = embedder(out, settings, backoff)?;
    let started = Instant::now();
    let hits = search::search(&store, embedder.as_ref(), query)?;
    let elapsed = started.elapsed();
    if hits.is_empty() && !out.json {
        let vectors: i64 = store
            .counts()?
            .vectors
            .iter()
            .filter(|v| v.model == embedder.model() && v.source_type == query.kind.source_type())
            .map(|v| v.count)
            .sum();
        if vectors == 0 {
            bail!(
                "no {} vectors of model {} in the store yet: run `local-agent pull` and then \
                 `local-agent embed`",
                query.kind.source_type(),
                embedder.model()
            );
        }
    }
    out.print(&hits, || {
        let mut text = String::new();
        for hit in &hits {
            let id = match hit.kind {
                SourceKind::Fragment => format!(
                    "fragment {} (content {})",
                    hit.id,
                    hit.learning_content_id
                        .map_or_else(|| "-".to_owned(), |c| c.to_string())
                ),
                SourceKind::Content => format!("content {}", hit.id),
            };
            text.push_str(&format!(
                "{:.4}  {id}\n        {}\n        {}\n",
                hit.distance,
                one_line(&hit.native_text),
                one_line(&hit.meaning)
            ));
        }
        if hits.is_empty() {
            text.push_str("No match (try without --content-type/--language).\n");
        }
        text.push_str(&format!(
            "{} result(s) in {:.1} ms ({}).",
            hits.len(),
            elapsed.as_secs_f64() * 1000.0,
            embedder.model()
        ));
        text
    })
}

fn one_line(text: &str) -> String {
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > 100 {
        format!("{}…", line.chars().take(99).collect::<String>())
    } else {
        line
    }
}

fn status(out: &Output, settings: &Settings, backoff: Backoff) -> Result<()> {
    let store = open_store(settings)?;
    let counts = store.counts()?;
    let sync = store.sync_state()?;
    let schema = store.schema_version()?;
    let api = match &settings.api_url {
        None => ApiStatus {
            url: None,
            answers: false,
            detail: "not configured: run `local-agent init --api-url <URL> --token <JWT>`".into(),
        },
        Some(url) => match api_client(settings, backoff)?.health() {
            Ok(health) => ApiStatus {
                url: Some(url.value.clone()),
                answers: true,
                detail: health.to_string(),
            },
            Err(e) => ApiStatus {
                url: Some(url.value.clone()),
                answers: false,
                detail: e.to_string(),
            },
        },
    };
    #[derive(Serialize)]
    struct Status<'a> {
        store: &'a std::path::Path,
        schema_version: i64,
        mirror: &'a local_agent::store::Counts,
        sync: &'a local_agent::store::SyncState,
        api: &'a ApiStatus,
    }
    out.print(
        &Status {
            store: &settings.db.value,
            schema_version: schema,
            mirror: &counts,
            sync: &sync,
            api: &api,
        },
        || {
            let vectors = if counts.vectors.is_empty() {
                "none (run `local-agent embed`)".to_owned()
            } else {
                counts
                    .vectors
                    .iter()
                    .map(|v| format!("{} {} of {}", v.count, v.source_type, v.model))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let position = match sync.phase {
                local_agent::store::SyncPhase::None => {
                    "never pulled (run `local-agent pull`)".to_owned()
                }
                local_agent::store::SyncPhase::Snapshot => {
                    "inside a full snapshot (run `local-agent pull` to finish it)".to_owned()
                }
                local_agent::store::SyncPhase::Log => "following the change log".to_owned(),
            };
            format!(
                "Store    {} (schema {schema})\n\
                 Mirror   {} contents, {} fragments, {} assets ({} cached), {} rankings\n\
                 Sync     {position}\n\
                 Cursor   {}\n\
                 Pulled   last page {}, caught up {}\n\
                 Vectors  {vectors}\n\
                 Anki     {} cards\n\
                 API      {} — {}",
                settings.db.value.display(),
                counts.learning_content,
                counts.content_fragments,
                counts.fragment_assets,
                counts.cached_assets,
                counts.rankings,
                sync.cursor.as_deref().unwrap_or("-"),
                sync.last_pull_at.as_deref().unwrap_or("never"),
                sync.caught_up_at.as_deref().unwrap_or("never"),
                counts.anki_cards,
                api.url.as_deref().unwrap_or("-"),
                if api.answers {
                    format!("answers: {}", api.detail)
                } else {
                    api.detail.clone()
                },
            )
        },
    )
}

#[derive(Serialize)]
struct ApiStatus {
    url: Option<String>,
    answers: bool,
    detail: String,
}

fn describe_settings(s: &Settings) -> String {
    fn src(source: config::Source) -> &'static str {
        match source {
            config::Source::Flag => "flag",
            config::Source::Env => "environment",
            config::Source::File => "config file",
            config::Source::Default => "default",
        }
    }
    let opt = |v: &Option<config::Sourced<String>>, secret: bool| match v {
        Some(v) if secret => format!("<set> ({})", src(v.source)),
        Some(v) => format!("{} ({})", v.value, src(v.source)),
        None => "-".to_owned(),
    };
    format!(
        "config file  {} ({})\n\
         store        {} ({})\n\
         api url      {}\n\
         token        {}\n\
         api timeout  {} s ({})\n\
         embed model  {} ({})\n\
         embed url    {}\n\
         embed key    {}",
        s.config_file.value.display(),
        src(s.config_file.source),
        s.db.value.display(),
        src(s.db.source),
        opt(&s.api_url, false),
        opt(&s.token, true),
        s.api_timeout.value,
        src(s.api_timeout.source),
        s.embed.model.value,
        src(s.embed.model.source),
        opt(&s.embed.url, false),
        opt(&s.embed.api_key, true),
    )
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

fn run_migrate(
    out: &Output,
    settings: &Settings,
    backoff: Backoff,
    legacy: PathBuf,
    (dry_run, resend): (bool, bool),
    reject_report: Option<PathBuf>,
    repair: &[RepairArg],
) -> Result<()> {
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

fn anki_settings(file: &FileConfig, args: &AnkiArgs) -> local_agent::anki::AnkiSettings {
    local_agent::anki::AnkiSettings::resolve(
        &file.anki,
        args.anki_url.clone(),
        args.deck.clone(),
        &env_var,
    )
}

/// The push itself, shared by `anki push` and `sync`.
fn push_to_anki(
    out: &Output,
    settings: &Settings,
    file: &FileConfig,
    backoff: Backoff,
    args: &AnkiArgs,
    store: &mut Store,
) -> Result<(
    local_agent::anki::AnkiSettings,
    local_agent::anki::PushReport,
)> {
    let anki_settings = anki_settings(file, args);
    let anki = local_agent::anki::AnkiConnect::new(
        &anki_settings.url,
        anki_settings.api_key.clone(),
        Duration::from_secs(anki_settings.timeout_secs),
    );
    // Audio not cached yet is fetched from the API when one is configured.
    let api = settings
        .api_url
        .as_ref()
        .map(|_| api_client(settings, backoff))
        .transpose()?;
    let report = local_agent::anki::push(
        store,
        &anki,
        api.as_ref(),
        &anki_settings,
        local_agent::anki::PushOptions {
            verify: args.verify,
        },
        &mut out.push_progress(),
    )?;
    Ok((anki_settings, report))
}

fn describe_push(report: &local_agent::anki::PushReport, deck: &str, seconds: f64) -> String {
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

fn run_anki_push(
    out: &Output,
    settings: &Settings,
    file: &FileConfig,
    backoff: Backoff,
    args: &AnkiArgs,
) -> Result<()> {
    let mut store = open_store(settings)?;
    let started = Instant::now();
    let (anki_settings, report) = push_to_anki(out, settings, file, backoff, args, &mut store)?;
    let seconds = started.elapsed().as_secs_f64();
    #[derive(Serialize)]
    struct Json<'a> {
        deck: &'a str,
        #[serde(flatten)]
        report: &'a local_agent::anki::PushReport,
        seconds: f64,
    }
    out.print(
        &Json {
            deck: &anki_settings.deck,
            report: &report,
            seconds,
        },
        || describe_push(&report, &anki_settings.deck, seconds),
    )?;
    if !report.failed.is_empty() {
        bail!("{} note(s) could not be pushed", report.failed.len());
    }
    Ok(())
}

fn run_sync(
    out: &Output,
    settings: &Settings,
    file: &FileConfig,
    backoff: Backoff,
    args: &AnkiArgs,
) -> Result<()> {
    let mut store = open_store(settings)?;
    let started = Instant::now();
    let spinner = out.spinner("pulling changes");
    let client =
        api_client(settings, backoff)?.with_retry_hook(retry_notices(out, Some(spinner.clone())));
    let pulled = pull::pull(
        &mut store,
        &client,
        PullOptions {
            full: false,
            page_size: 500,
        },
        |_| {},
    );
    spinner.finish_and_clear();
    let pulled = pulled.context("pull stopped; what it applied is kept, run sync again")?;
    let embedder = embedder(out, settings, backoff)?;
    let bar = out.bar(0, &format!("embedding with {}", embedder.model()));
    let embedded = embed::embed_store(
        &mut store,
        embedder.as_ref(),
        &KindArg::All.kinds(),
        |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    );
    bar.finish_and_clear();
    let embedded = embedded.context("embedding stopped; vectors of finished batches are kept")?;
    let (anki_settings, report) = push_to_anki(out, settings, file, backoff, args, &mut store)?;
    let seconds = started.elapsed().as_secs_f64();
    #[derive(Serialize)]
    struct Json<'a> {
        pull: &'a pull::PullReport,
        embed: &'a embed::EmbedReport,
        anki: &'a local_agent::anki::PushReport,
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
                describe_push(&report, &anki_settings.deck, seconds)
            )
        },
    )?;
    if !report.failed.is_empty() {
        bail!("{} note(s) could not be pushed", report.failed.len());
    }
    Ok(())
}
