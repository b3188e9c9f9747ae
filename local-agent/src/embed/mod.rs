//! Text to vectors: a built-in embedder that needs no network and no model
//! file, an OpenAI-compatible `/v1/embeddings` client (Ollama, LM Studio,
//! OpenAI), and the pass that brings the store's vectors up to date.

mod bert;
mod ngrams;
mod openai;
mod prefix;
#[cfg(test)]
mod tests;

use serde::Serialize;

use crate::store::{NewVector, SourceKind, Store, StoreError, text_hash};

pub use bert::{BertEmbedder, ModelError, Pooling, REQUIRED_FILES};
pub use ngrams::{HASHED_NGRAMS_MODEL, HashedNgrams};
pub use openai::OpenAiEmbedder;
pub use prefix::Prefixes;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbedError {
    #[error(
        "cannot reach the embedding endpoint {url} ({reason}) after {attempts} attempt(s); \
         is the server (Ollama, LM Studio, …) running? Or use the built-in embedder: \
         --model {HASHED_NGRAMS_MODEL}"
    )]
    Unreachable {
        url: String,
        attempts: u32,
        reason: String,
    },
    #[error(
        "the embedding endpoint refused the key ({status}: {message}); set embed.api_key in \
         the config file or THAI_AGENT_EMBED_API_KEY"
    )]
    Unauthorized { status: u16, message: String },
    #[error("the embedding endpoint answered {status}: {message}")]
    Rejected { status: u16, message: String },
    #[error("the embedding endpoint kept failing ({status}: {message}) over {attempts} attempt(s)")]
    Unavailable {
        status: u16,
        message: String,
        attempts: u32,
    },
    #[error("the embedding endpoint {url} sent an answer this agent cannot use: {reason}")]
    Protocol { url: String, reason: String },
    #[error(
        "model {model} returned {got}-dimensional vectors where {expected} were expected (the \
         embed.dimensions setting, or the size of the other vectors of the answer); remove \
         embed.dimensions for a model that cannot shorten its output (only models like \
         OpenAI's text-embedding-3-* can)"
    )]
    Dimensions {
        model: String,
        got: usize,
        expected: usize,
    },
    #[error("model {model} could not embed: {reason}")]
    Model { model: String, reason: String },
    #[error("there is no text to embed")]
    EmptyText,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a text is embedded for: e5-family models were trained with a
/// different prefix for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A search's text.
    Query,
    /// A stored text that searches look for.
    Passage,
}

/// Something that turns texts into vectors.
pub trait Embedder {
    /// The name stored with every vector it makes.
    fn model(&self) -> &str;
    /// How many texts one call should carry.
    fn batch_size(&self) -> usize;
    /// One vector per text, in order, all of the model's one dimension (any
    /// dimension); the embedder applies its model's prefix for `purpose`
    /// itself.
    fn embed(&self, texts: &[&str], purpose: Purpose) -> Result<Vec<Vec<f32>>, EmbedError>;
    /// The dimension of its vectors when it is known without embedding
    /// anything (a fixed model, or one asked to shorten its output): stored
    /// vectors of the model with another dimension are then made again.
    fn dimensions(&self) -> Option<usize> {
        None
    }
}

/// What an embedding pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EmbedReport {
    /// Rows whose vector was (re)computed.
    pub embedded: usize,
    /// Rows whose vector was already made from their current text.
    pub unchanged: usize,
    /// Rows without text, which get no vector.
    pub empty: usize,
    /// Vectors removed because their row is gone.
    pub pruned: usize,
}

/// Brings the store's vectors of `embedder`'s model up to date: rows whose
/// text changed (or that have no vector of this model) are embedded in
/// batches, each batch stored in its own transaction so that an interrupted
/// run keeps what it finished; vectors of rows no longer mirrored go.
/// `progress(done, total)` is called after each batch.
pub fn embed_store(
    store: &mut Store,
    embedder: &dyn Embedder,
    kinds: &[SourceKind],
    mut progress: impl FnMut(usize, usize),
) -> Result<EmbedReport, EmbedError> {
    let mut report = EmbedReport {
        pruned: store.prune_orphan_vectors()?,
        ..EmbedReport::default()
    };
    let mut todo = Vec::new();
    for &kind in kinds {
        for source in store.embed_sources(kind, embedder.model())? {
            if source.text.trim().is_empty() {
                report.empty += 1;
                continue;
            }
            let hash = text_hash(&source.text);
            let same_size = match (embedder.dimensions(), source.stored_dimensions) {
                (Some(wanted), Some(stored)) => wanted == stored,
                _ => true,
            };
            if source.stored_hash.as_deref() == Some(hash.as_str()) && same_size {
                report.unchanged += 1;
            } else {
                todo.push((source, hash));
            }
        }
    }
    let total = todo.len();
    progress(0, total);
    for batch in todo.chunks(embedder.batch_size().max(1)) {
        let texts: Vec<&str> = batch.iter().map(|(s, _)| s.text.as_str()).collect();
        let vectors = embedder.embed(&texts, Purpose::Passage)?;
        let rows: Vec<NewVector<'_>> = batch
            .iter()
            .zip(&vectors)
            .map(|((source, hash), vector)| NewVector {
                kind: source.kind,
                id: source.id,
                text_hash: hash,
                vector,
            })
            .collect();
        store.put_vectors(embedder.model(), &rows)?;
        report.embedded += batch.len();
        progress(report.embedded, total);
    }
    Ok(report)
}
