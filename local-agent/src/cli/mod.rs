//! The command line: argument parsing and one module per command, each with
//! its arguments and its `run` (`sync` runs the `execute` of `pull`,
//! `embed` and `anki push`); [`output`] is how results reach the user.

mod anki;
mod config;
mod embed;
mod init;
mod migrate;
mod model;
mod output;
mod pull;
mod search;
mod status;
mod sync;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use local_agent::api::ApiClient;
use local_agent::backoff::Backoff;
use local_agent::config::{Dirs, FileConfig, Flags, Settings};
use local_agent::embed::{Embedder, HashedNgrams, OpenAiEmbedder};
use local_agent::models::Models;
use local_agent::store::{SourceKind, Store};

use output::{Output, retry_notices};

const EXAMPLES: &str = "\
Examples:
  local-agent init --api-url http://127.0.0.1:3000 --token \"$JWT\"
  local-agent pull                 # fetch what changed since the last pull
  local-agent model fetch multilingual-e5-small   # search by meaning, offline
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
    /// Where embedding models are installed [env: THAI_AGENT_MODELS_DIR] [default: models
    /// in the platform data dir]
    #[arg(long, global = true, value_name = "PATH")]
    pub models_dir: Option<PathBuf>,
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
    Init(init::InitArgs),
    /// Bring the local mirror up to date with the API's change feed
    #[command(
        after_help = "Examples:\n  local-agent pull\n  local-agent pull --full   # re-read everything"
    )]
    Pull(pull::PullArgs),
    /// Compute vectors for contents and fragments whose text changed
    #[command(
        after_help = "Examples:\n  local-agent embed\n  local-agent embed --model all-minilm   # with embed.url set to e.g. http://localhost:11434/v1"
    )]
    Embed(embed::EmbedArgs),
    /// Find the contents or fragments nearest to a text
    #[command(
        after_help = "Examples:\n  local-agent search 'สวัสดีครับ'\n  local-agent search 'thank you' --kind content --k 3 --json"
    )]
    Search(search::SearchArgs),
    /// Install, list and remove the embedding models that run inside the agent
    Model {
        #[command(subcommand)]
        command: model::ModelCommand,
    },
    /// Move a legacy SQLite file into the API's database (service-role token)
    #[command(
        after_help = "Examples:\n  local-agent migrate anki_vector_db.db --dry-run\n  local-agent migrate anki_vector_db.db --reject-report rejects.jsonl --repair decimal-comma\n  local-agent migrate anki_vector_db.db --resend   # after a finished migration: send everything again"
    )]
    Migrate(migrate::MigrateArgs),
    /// Send the mirror to Anki through the AnkiConnect add-on
    Anki {
        #[command(subcommand)]
        command: anki::AnkiCommand,
    },
    /// pull, then embed, then anki push
    #[command(after_help = "Example:\n  local-agent sync --json")]
    Sync(anki::AnkiArgs),
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
pub enum KindArg {
    Fragment,
    Content,
    All,
}

impl KindArg {
    pub fn kinds(self) -> Vec<SourceKind> {
        match self {
            KindArg::Fragment => vec![SourceKind::Fragment],
            KindArg::Content => vec![SourceKind::Content],
            KindArg::All => vec![SourceKind::Content, SourceKind::Fragment],
        }
    }
}

/// What every command works with.
pub struct Ctx {
    pub out: Output,
    pub settings: Settings,
    /// The config file as read (`init` writes it back).
    pub file: FileConfig,
    pub backoff: Backoff,
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
    let flags = flags(&cli);
    let dirs = Dirs::platform();
    let config_path = local_agent::config::config_path(&flags, &env_var, dirs.as_ref())?;
    let file = FileConfig::load(&config_path.value)?;
    let mut settings =
        local_agent::config::resolve(&flags, &env_var, config_path, &file, dirs.as_ref())?;
    settings
        .embed
        .prefer_installed(Models::new(&settings.models_dir.value).active());
    let ctx = Ctx {
        out,
        settings,
        file,
        backoff: Backoff {
            attempts: cli.global.tries,
            ..Backoff::default()
        },
    };
    match cli.command {
        Command::Init(args) => init::run(ctx, args),
        Command::Pull(args) => pull::run(&ctx, args),
        Command::Embed(args) => embed::run(&ctx, args),
        Command::Search(args) => search::run(&ctx, args),
        Command::Model { command } => model::run(&ctx, command),
        Command::Migrate(args) => migrate::run(&ctx, args),
        Command::Anki {
            command: anki::AnkiCommand::Push(args),
        } => anki::run(&ctx, &args),
        Command::Sync(args) => sync::run(&ctx, &args),
        Command::Status => status::run(&ctx),
        Command::Config => config::run(&ctx),
        Command::Completions { .. } => unreachable!("handled above"),
    }
}

/// The settings given as flags, global or of the command.
fn flags(cli: &Cli) -> Flags {
    let g = &cli.global;
    let mut flags = Flags {
        config: g.config.clone(),
        db: g.db.clone(),
        api_url: g.api_url.clone(),
        token: g.token.clone(),
        api_timeout: g.api_timeout,
        models_dir: g.models_dir.clone(),
        ..Flags::default()
    };
    match &cli.command {
        Command::Embed(embed::EmbedArgs { model, .. })
        | Command::Search(search::SearchArgs { model, .. }) => flags.embed_model.clone_from(model),
        Command::Anki {
            command: anki::AnkiCommand::Push(args),
        }
        | Command::Sync(args) => {
            flags.anki_url.clone_from(&args.anki_url);
            flags.anki_deck.clone_from(&args.deck);
        }
        _ => {}
    }
    flags
}

pub(crate) fn open_store(settings: &Settings) -> Result<Store> {
    let path = &settings.db.value;
    Store::open(path).with_context(|| format!("opening the store {}", path.display()))
}

pub(crate) fn api_client(settings: &Settings, backoff: Backoff) -> Result<ApiClient> {
    let Some(url) = &settings.api.url else {
        bail!(
            "no API URL configured; run `local-agent init --api-url <URL> --token <JWT>`, \
             or pass --api-url or set THAI_AGENT_API_URL"
        );
    };
    Ok(ApiClient::new(
        &url.value,
        settings.api.token.as_ref().map(|t| t.value.clone()),
        backoff,
    )
    .with_timeout(Duration::from_secs(settings.api.timeout.value)))
}

/// The one line `embed` and `search` add when only the built-in embedder is
/// there.
pub(crate) fn fallback_hint(settings: &Settings) -> Option<String> {
    settings.embed.is_fallback().then(|| {
        format!(
            "The built-in embedder matches spellings, not meaning: `local-agent model fetch {}` \
             installs a model that searches by meaning, offline.",
            local_agent::models::SUGGESTED_MODEL
        )
    })
}

pub(crate) fn embedder(
    out: &Output,
    settings: &Settings,
    backoff: Backoff,
) -> Result<Box<dyn Embedder>> {
    let e = &settings.embed;
    if e.is_builtin() {
        return Ok(Box::new(HashedNgrams));
    }
    // A model installed in the models folder runs in the agent, offline.
    let models = Models::new(&settings.models_dir.value);
    if models.is_installed(&e.model.value) {
        let spinner = out.spinner(&format!("loading {}", e.model.value));
        let model = models.load(&e.model.value);
        spinner.finish_and_clear();
        return Ok(Box::new(model?.with_prefixes(e.prefixes())));
    }
    let embedder = OpenAiEmbedder::new(
        e.endpoint()?,
        &e.model.value,
        e.api_key.as_ref().map(|k| k.value.clone()),
        e.dimensions.as_ref().map(|d| d.value),
        backoff,
    )
    .with_prefixes(e.prefixes())
    .with_retry_hook(retry_notices(out, None));
    Ok(Box::new(match &e.endpoint_name {
        Some(name) => embedder.with_endpoint_name(&name.value),
        None => embedder,
    }))
}
