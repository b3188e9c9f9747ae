//! `local-agent model`: the sentence-embedding models run inside the agent.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use indicatif::ProgressBar;
use serde::Serialize;

use local_agent::models::hub::{Hub, Progress};
use local_agent::models::{Installed, KNOWN_MODELS, Models, check_name, name_for_repo, repo_for};

use super::Ctx;

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Download a model from the Hugging Face hub and make it the default
    #[command(after_help = "Examples:
  local-agent model fetch multilingual-e5-small      # Thai and 90+ languages, 384-d, ~470 MB
  local-agent model fetch sentence-transformers/all-MiniLM-L6-v2
  HF_ENDPOINT=https://hf-mirror.example local-agent model fetch multilingual-e5-small

Short names: multilingual-e5-small, paraphrase-multilingual-MiniLM-L12-v2,
all-MiniLM-L6-v2, all-MiniLM-L12-v2; any other BERT-family sentence-transformers
model by its hub name (owner/name). A broken download resumes when run again.")]
    Fetch(FetchArgs),
    /// Install a model from a folder (config.json, tokenizer.json, model.safetensors)
    #[command(
        after_help = "Example:\n  local-agent model add ./all-MiniLM-L6-v2 --name all-MiniLM-L6-v2"
    )]
    Add(AddArgs),
    /// Show the installed models
    List,
    /// Make an installed model the default for embed and search
    Use { name: String },
    /// Delete an installed model
    Remove { name: String },
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// A short name (multilingual-e5-small) or a hub repository (owner/name)
    pub model: String,
    /// The branch, tag or commit to download
    #[arg(long, default_value = "main")]
    pub revision: String,
    /// Install under this name [default: the repository's name]
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// The model's folder
    pub folder: PathBuf,
    /// Install under this name (vectors are filed under it) [default: the folder's name]
    #[arg(long)]
    pub name: Option<String>,
}

pub fn run(ctx: &Ctx, command: ModelCommand) -> Result<()> {
    let models = Models::new(&ctx.settings.models_dir.value);
    match command {
        ModelCommand::Fetch(args) => fetch(ctx, &models, &args),
        ModelCommand::Add(args) => add(ctx, &models, &args),
        ModelCommand::List => list(ctx, &models),
        ModelCommand::Use { name } => {
            models.set_active(&name)?;
            let installed = find(&models, &name)?;
            ctx.out.print(&installed, || {
                format!("{name} is now the default model for embed and search.")
            })
        }
        ModelCommand::Remove { name } => {
            let removed = models.remove(&name)?;
            ctx.out.print(&removed, || {
                let mut text = format!("Removed {name} ({}).", size(removed.size));
                if removed.active {
                    text.push_str(
                        "\nNo model is the default now: `local-agent model use <name>` picks one.",
                    );
                }
                text
            })
        }
    }
}

fn find(models: &Models, name: &str) -> Result<Installed> {
    models
        .list()?
        .into_iter()
        .find(|m| m.name == name)
        .with_context(|| format!("model {name} vanished from {}", models.dir().display()))
}

fn installed_text(m: &Installed) -> String {
    format!(
        "Installed {} in {} ({}, {} dimensions); it is now the default for embed and search.\n\
         Run `local-agent embed` to embed the mirror with it.",
        m.name,
        m.folder.display(),
        size(m.size),
        m.dimension
            .map_or_else(|| "?".to_owned(), |d| d.to_string()),
    )
}

fn fetch(ctx: &Ctx, models: &Models, args: &FetchArgs) -> Result<()> {
    let Some(repo) = repo_for(&args.model) else {
        let known: Vec<&str> = KNOWN_MODELS.iter().map(|(n, _)| *n).collect();
        anyhow::bail!(
            "{:?} is neither a known model ({}) nor a hub repository (owner/name)",
            args.model,
            known.join(", ")
        );
    };
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| name_for_repo(&repo).to_owned());
    check_name(&name)?;
    let mut hub = Hub::from_env();
    hub.tries = ctx.backoff.attempts;
    let out = &ctx.out;
    let mut bar: Option<ProgressBar> = None;
    let mut current = String::new();
    let result = models.fetch(&hub, &repo, &args.revision, &name, &mut |p| match p {
        Progress::Start {
            file,
            size,
            resumed_at,
        } => {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            current = file.to_owned();
            let b = out.bytes_bar(size, file);
            b.set_position(resumed_at);
            if resumed_at > 0 && !out.quiet && b.is_hidden() {
                eprintln!("{file}: resuming at {resumed_at} of {size} bytes");
            }
            bar = Some(b);
        }
        Progress::Bytes { done } => {
            if let Some(b) = &bar {
                b.set_position(done);
            }
        }
        Progress::Retry { file, reason } => match &bar {
            Some(b) if !b.is_hidden() => b.set_message(format!("{file}: {reason}; resuming")),
            _ if out.quiet => {}
            _ => eprintln!("{file}: {reason}; resuming"),
        },
    });
    if let Some(b) = bar.take() {
        b.finish_and_clear();
    }
    let installed = result.with_context(|| {
        if current.is_empty() {
            format!("fetching {repo} from {}", hub.endpoint())
        } else {
            format!("fetching {repo} from {} ({current})", hub.endpoint())
        }
    })?;
    out.print(&installed, || installed_text(&installed))
}

fn add(ctx: &Ctx, models: &Models, args: &AddArgs) -> Result<()> {
    let name = match &args.name {
        Some(n) => n.clone(),
        None => args
            .folder
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_owned))
            .with_context(|| {
                format!(
                    "{} has no folder name to install it under; pass --name",
                    args.folder.display()
                )
            })?,
    };
    let spinner = ctx.out.spinner(&format!("checking and installing {name}"));
    let installed = models.add_folder(&args.folder, &name);
    spinner.finish_and_clear();
    let installed = installed?;
    ctx.out.print(&installed, || installed_text(&installed))
}

fn list(ctx: &Ctx, models: &Models) -> Result<()> {
    let list = models.list()?;
    #[derive(Serialize)]
    struct Json<'a> {
        folder: &'a std::path::Path,
        models: &'a [Installed],
    }
    ctx.out.print(
        &Json {
            folder: models.dir(),
            models: &list,
        },
        || {
            if list.is_empty() {
                return format!(
                    "No model installed in {}; search uses the built-in n-gram embedder.\n\
                     `local-agent model fetch {}` installs a multilingual one.",
                    models.dir().display(),
                    local_agent::models::SUGGESTED_MODEL
                );
            }
            let mut text = String::new();
            for m in &list {
                text.push_str(&format!(
                    "{} {:<40} {:>5} dims {:>10}  {}\n",
                    if m.active { "*" } else { " " },
                    m.name,
                    m.dimension
                        .map_or_else(|| "?".to_owned(), |d| d.to_string()),
                    size(m.size),
                    m.folder.display()
                ));
            }
            text.push_str("* the default for embed and search");
            text
        },
    )
}

fn size(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}
