//! `local-agent status`: what is mirrored, the sync position, vectors,
//! cards, and whether the API answers.

use anyhow::Result;
use serde::Serialize;

use super::{Ctx, api_client, open_store};

pub fn run(ctx: &Ctx) -> Result<()> {
    let (out, settings, backoff) = (&ctx.out, &ctx.settings, ctx.backoff);
    let store = open_store(settings)?;
    let counts = store.counts()?;
    let sync = store.sync_state()?;
    let schema = store.schema_version()?;
    let api = match &settings.api.url {
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
                // One line per model and dimension; the model `embed` and
                // `search` use now is marked.
                let mut lines: Vec<(String, Vec<String>)> = Vec::new();
                for v in &counts.vectors {
                    let head = format!(
                        "{} ({}-d){}",
                        v.model,
                        v.dimensions,
                        if v.model == settings.embed.model.value {
                            ", in use"
                        } else {
                            ""
                        }
                    );
                    let part = format!("{} {}", v.count, v.source_type);
                    match lines.last_mut() {
                        Some((h, parts)) if *h == head => parts.push(part),
                        _ => lines.push((head, vec![part])),
                    }
                }
                lines
                    .iter()
                    .map(|(head, parts)| format!("{head}: {}", parts.join(", ")))
                    .collect::<Vec<_>>()
                    .join("\n         ")
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
