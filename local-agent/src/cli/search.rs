//! `local-agent search`: the contents or fragments nearest to a text.

use std::time::Instant;

use anyhow::{Result, bail};
use clap::Args;

use local_agent::search::{self, Query};
use local_agent::store::SourceKind;

use local_agent::models::Models;

use super::{Ctx, KindArg, embedder, fallback_hint, open_store};

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// The text to look for
    pub text: String,
    /// How many results
    #[arg(long, short, default_value_t = 10)]
    pub k: usize,
    /// Search fragments or whole contents
    #[arg(long, value_enum, default_value_t = KindArg::Fragment)]
    pub kind: KindArg,
    /// Only contents of this content type (e.g. phrase)
    #[arg(long)]
    pub content_type: Option<String>,
    /// Only contents in this language (e.g. thai)
    #[arg(long)]
    pub language: Option<String>,
    /// Embedding model whose vectors to search [default: as for embed]
    #[arg(long)]
    pub model: Option<String>,
}

pub fn run(ctx: &Ctx, args: SearchArgs) -> Result<()> {
    let (out, settings, backoff) = (&ctx.out, &ctx.settings, ctx.backoff);
    if args.kind == KindArg::All {
        bail!("search looks in one kind at a time: --kind fragment or --kind content");
    }
    let query = &Query {
        text: &args.text,
        k: args.k,
        kind: args.kind.kinds()[0],
        content_type: args.content_type.as_deref(),
        language: args.language.as_deref(),
    };
    let store = open_store(settings)?;
    let model = &settings.embed.model.value;
    if !settings.embed.is_builtin()
        && settings.embed.url.is_none()
        && !Models::new(&settings.models_dir.value).is_installed(model)
    {
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
        if let Some(hint) = fallback_hint(settings) {
            text.push('\n');
            text.push_str(&hint);
        }
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
