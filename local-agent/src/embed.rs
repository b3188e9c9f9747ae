//! Text to vectors: a built-in embedder that needs no network and no model
//! file, an OpenAI-compatible `/v1/embeddings` client (Ollama, LM Studio,
//! OpenAI), and the pass that brings the store's vectors up to date.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backoff::{Backoff, Exhausted, RetryHook, Transient, is_transient, parse_retry_after};
use crate::store::{DIMENSIONS, NewVector, SourceKind, Store, StoreError, text_hash};

/// The built-in model's name, stored with each of its vectors. A change to
/// the algorithm must change the name, or old and new vectors would mix.
pub const HASHED_NGRAMS_MODEL: &str = "hashed-ngrams-v1";

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
        "model {model} returns {got}-dimensional vectors; the store holds {expected}. Pick a \
         {expected}-dimensional model (e.g. all-minilm in Ollama) or, for models that can \
         shorten their output (OpenAI text-embedding-3-*), set embed.dimensions = {expected}"
    )]
    Dimensions {
        model: String,
        got: usize,
        expected: usize,
    },
    #[error("there is no text to embed")]
    EmptyText,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Something that turns texts into [`DIMENSIONS`]-dimensional vectors.
pub trait Embedder {
    /// The name stored with every vector it makes.
    fn model(&self) -> &str;
    /// How many texts one call should carry.
    fn batch_size(&self) -> usize;
    /// One vector per text, in order.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// Feature hashing of character n-grams (1 to 4 code points).
///
/// Thai writes words without spaces, so word tokens are not available
/// without a dictionary; character n-grams match shared syllables and
/// words wherever they fall. Each n-gram is hashed (FNV-1a, stable across
/// platforms and releases) to one of 384 buckets with a sign, the weights
/// summed and the vector L2-normalised, so that the vec0 table's L2
/// distance orders results as cosine similarity would.
#[derive(Debug, Clone, Copy, Default)]
pub struct HashedNgrams;

impl HashedNgrams {
    /// Longer n-grams carry more meaning; unigrams only break ties.
    const WEIGHTS: [f32; 4] = [0.25, 1.0, 1.0, 0.75];

    pub fn vector(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0.0f32; DIMENSIONS];
        // Lowercase and one space per run of whitespace, padded so that the
        // n-grams at the start and end are marked as such.
        let mut chars = vec![' '];
        for c in text.chars().flat_map(char::to_lowercase) {
            if c.is_whitespace() {
                if chars.last() != Some(&' ') {
                    chars.push(' ');
                }
            } else if !c.is_control() {
                chars.push(c);
            }
        }
        if chars.last() != Some(&' ') {
            chars.push(' ');
        }
        let mut buf = String::new();
        for (i, weight) in Self::WEIGHTS.iter().enumerate() {
            let n = i + 1;
            for gram in chars.windows(n) {
                if n == 1 && gram[0] == ' ' {
                    continue;
                }
                buf.clear();
                buf.extend(gram);
                let h = fnv1a(n as u8, buf.as_bytes());
                let bucket = (h % DIMENSIONS as u64) as usize;
                let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
                v[bucket] += sign * weight;
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }
}

fn fnv1a(seed: u8, bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in std::iter::once(seed).chain(bytes.iter().copied()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // FNV's low bits mix poorly for short inputs; a final avalanche
    // (from MurmurHash3) spreads them before the modulo.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

impl Embedder for HashedNgrams {
    fn model(&self) -> &str {
        HASHED_NGRAMS_MODEL
    }

    fn batch_size(&self) -> usize {
        512
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(texts.iter().map(|t| self.vector(t)).collect())
    }
}

/// An OpenAI-compatible `POST {url}/embeddings` endpoint.
pub struct OpenAiEmbedder {
    agent: ureq::Agent,
    url: String,
    model: String,
    /// The name the endpoint knows `model` by, when it is another one.
    endpoint_name: Option<String>,
    api_key: Option<String>,
    /// Sent as `dimensions` for models that can shorten their vectors.
    dimensions: Option<usize>,
    backoff: Backoff,
    on_retry: Option<RetryHook>,
}

impl std::fmt::Debug for OpenAiEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiEmbedder")
            .field("url", &self.url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[derive(Serialize)]
struct EmbeddingRequest<'a> {
    model: &'a str,
    input: &'a [&'a str],
    encoding_format: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<usize>,
}

#[derive(Deserialize)]
struct EmbeddingResponse {
    data: Vec<EmbeddingDatum>,
}

#[derive(Deserialize)]
struct EmbeddingDatum {
    index: usize,
    embedding: Vec<f32>,
}

#[derive(Deserialize, Default)]
struct OpenAiErrorBody {
    error: Option<OpenAiError>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OpenAiError {
    Object { message: String },
    // Ollama answers {"error": "model \"x\" not found, try pulling it first"}.
    Text(String),
}

impl OpenAiEmbedder {
    /// `url` is the API base (`http://localhost:11434/v1`) or the full
    /// `…/embeddings` address.
    pub fn new(
        url: &str,
        model: &str,
        api_key: Option<String>,
        dimensions: Option<usize>,
        backoff: Backoff,
    ) -> OpenAiEmbedder {
        let url = url.trim_end_matches('/');
        let url = if url.ends_with("/embeddings") {
            url.to_owned()
        } else {
            format!("{url}/embeddings")
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            // A large batch on a CPU-only local model takes a while.
            .timeout_global(Some(Duration::from_secs(300)))
            .build()
            .into();
        OpenAiEmbedder {
            agent,
            url,
            model: model.to_owned(),
            endpoint_name: None,
            api_key,
            dimensions,
            backoff,
            on_retry: None,
        }
    }

    /// Asks the endpoint for the model by `name` while the vectors stay
    /// filed under the name given to [`OpenAiEmbedder::new`]. One model has
    /// several names: the legacy file files its vectors as
    /// `all-MiniLM-L6-v2` (sentence-transformers' name), Ollama serves that
    /// model as `all-minilm`; a query must be embedded by the same model as
    /// the vectors it is compared with, whatever the endpoint calls it.
    pub fn with_endpoint_name(mut self, name: &str) -> OpenAiEmbedder {
        self.endpoint_name = Some(name.to_owned());
        self
    }

    /// Tells `hook` of each retry before its wait (a notice on the
    /// terminal), as the API client does.
    pub fn with_retry_hook(mut self, hook: RetryHook) -> OpenAiEmbedder {
        self.on_retry = Some(hook);
        self
    }

    fn requested(&self) -> &str {
        self.endpoint_name.as_deref().unwrap_or(&self.model)
    }

    fn call(&self, texts: &[&str]) -> Result<Result<Vec<Vec<f32>>, EmbedError>, Transient> {
        let mut req = self.agent.post(&self.url);
        if let Some(key) = &self.api_key {
            req = req.header("Authorization", format!("Bearer {key}"));
        }
        let body = EmbeddingRequest {
            model: self.requested(),
            input: texts,
            encoding_format: "float",
            dimensions: self.dimensions,
        };
        let mut response = req.send_json(&body).map_err(|e| Transient {
            status: 0,
            reason: e.to_string(),
            after: None,
        })?;
        let status = response.status().as_u16();
        let protocol = |reason: String| EmbedError::Protocol {
            url: self.url.clone(),
            reason,
        };
        if (200..300).contains(&status) {
            let parsed: EmbeddingResponse = match response
                .body_mut()
                .with_config()
                .limit(256 * 1024 * 1024)
                .read_json()
            {
                Ok(p) => p,
                Err(e) => return Ok(Err(protocol(e.to_string()))),
            };
            if parsed.data.len() != texts.len() {
                return Ok(Err(protocol(format!(
                    "{} vectors for {} texts",
                    parsed.data.len(),
                    texts.len()
                ))));
            }
            let mut out = vec![Vec::new(); texts.len()];
            for datum in parsed.data {
                match out.get_mut(datum.index) {
                    Some(slot) if slot.is_empty() => *slot = datum.embedding,
                    _ => {
                        return Ok(Err(protocol(format!(
                            "bad or repeated index {}",
                            datum.index
                        ))));
                    }
                }
            }
            if let Some(v) = out.iter().find(|v| v.len() != DIMENSIONS) {
                return Ok(Err(EmbedError::Dimensions {
                    model: self.requested().to_owned(),
                    got: v.len(),
                    expected: DIMENSIONS,
                }));
            }
            // Endpoints differ on whether they normalise; the store's L2
            // distance ranks like cosine only for unit vectors.
            for v in &mut out {
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                if norm > 0.0 {
                    v.iter_mut().for_each(|x| *x /= norm);
                }
            }
            return Ok(Ok(out));
        }
        let after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let message = match serde_json::from_str::<OpenAiErrorBody>(&text)
            .unwrap_or_default()
            .error
        {
            Some(OpenAiError::Object { message }) | Some(OpenAiError::Text(message)) => message,
            None => text.chars().take(200).collect(),
        };
        match status {
            401 | 403 => Ok(Err(EmbedError::Unauthorized { status, message })),
            s if is_transient(s) => Err(Transient {
                status,
                reason: message,
                after,
            }),
            _ => Ok(Err(EmbedError::Rejected { status, message })),
        }
    }
}

impl Embedder for OpenAiEmbedder {
    fn model(&self) -> &str {
        &self.model
    }

    fn batch_size(&self) -> usize {
        64
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        match self
            .backoff
            .retry(self.on_retry.as_ref(), || self.call(texts))
        {
            Ok(answer) => answer,
            Err(Exhausted { last, attempts }) if last.status == 0 => Err(EmbedError::Unreachable {
                url: self.url.clone(),
                attempts,
                reason: last.reason,
            }),
            Err(Exhausted { last, attempts }) => Err(EmbedError::Unavailable {
                status: last.status,
                message: last.reason,
                attempts,
            }),
        }
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
            if source.stored_hash.as_deref() == Some(hash.as_str()) {
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
        let vectors = embedder.embed(&texts)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn the_same_text_gives_the_same_unit_vector() {
        let e = HashedNgrams;
        let a = e.vector("ขอบคุณมากครับ");
        let b = e.vector("ขอบคุณมากครับ");
        assert_eq!(a, b);
        assert_eq!(a.len(), DIMENSIONS);
        let norm = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
        assert!(e.vector("").iter().all(|x| *x == 0.0));
    }

    #[test]
    fn the_vector_is_stable_across_releases() {
        // Pinned values: if this fails, the algorithm changed and
        // HASHED_NGRAMS_MODEL must get a new name.
        let v = HashedNgrams.vector("สวัสดี");
        let nonzero = v.iter().filter(|x| **x != 0.0).count();
        let checksum: f64 = v
            .iter()
            .enumerate()
            .map(|(i, x)| (i as f64 + 1.0) * f64::from(*x))
            .sum();
        assert_eq!(nonzero, 20);
        assert!((checksum - -199.2333).abs() < 1e-3, "{checksum}");
    }

    #[test]
    fn thai_without_spaces_is_split_into_character_ngrams() {
        let e = HashedNgrams;
        // Combining marks (the tone mark ่ and the vowel ี) are code points
        // of their own: a text that differs only by a tone mark is close
        // but not identical.
        let with_tone = e.vector("ไม่");
        let without = e.vector("ไม");
        assert_ne!(with_tone, without);
        assert!(cosine(&with_tone, &without) > 0.3);
        // Whitespace and case do not matter.
        assert_eq!(e.vector("Hello  World"), e.vector("hello world"));
    }

    /// Counts the texts it is asked to embed.
    struct Counting(std::cell::Cell<usize>);

    impl Embedder for Counting {
        fn model(&self) -> &str {
            HASHED_NGRAMS_MODEL
        }
        fn batch_size(&self) -> usize {
            2
        }
        fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
            self.0.set(self.0.get() + texts.len());
            HashedNgrams.embed(texts)
        }
    }

    fn apply(store: &mut Store, from: Option<&str>, to: &str, changes: serde_json::Value) {
        let page: crate::feed::ChangePage = serde_json::from_value(serde_json::json!({
            "changes": changes, "next_cursor": to, "has_more": false,
            "phase": if from.is_none() { "snapshot" } else { "log" }}))
        .unwrap();
        store
            .apply_page(
                crate::store::PageBase {
                    expected_cursor: from,
                    new_snapshot: from.is_none(),
                    source_url: "http://api",
                },
                &page,
            )
            .unwrap();
    }

    fn fragment(id: i64, native: &str) -> serde_json::Value {
        serde_json::json!({"table": "content_fragments", "op": "upsert", "id": id, "row": {
            "id": id, "learning_content_id": null, "native_text": native, "body_text": "",
            "ipa": null, "extra": null, "fragment_type": "word", "fragment_metadata": null,
            "created_at": null, "updated_at": null}})
    }

    #[test]
    fn only_changed_texts_are_embedded_again() {
        let mut store = Store::open_in_memory().unwrap();
        apply(
            &mut store,
            None,
            "c1",
            serde_json::json!([
                fragment(1, "หนึ่ง"),
                fragment(2, "สอง"),
                fragment(3, "สาม"),
                fragment(4, " ")
            ]),
        );
        let counting = Counting(std::cell::Cell::new(0));
        let kinds = [SourceKind::Fragment];
        let mut calls = Vec::new();
        let first = embed_store(&mut store, &counting, &kinds, |done, total| {
            calls.push((done, total))
        })
        .unwrap();
        assert_eq!((first.embedded, first.unchanged, first.empty), (3, 0, 1));
        assert_eq!(calls, vec![(0, 3), (2, 3), (3, 3)]);
        assert_eq!(counting.0.get(), 3);

        let again = embed_store(&mut store, &counting, &kinds, |_, _| {}).unwrap();
        assert_eq!((again.embedded, again.unchanged), (0, 3));
        assert_eq!(counting.0.get(), 3, "nothing re-sent");

        // One text edited, one row deleted upstream.
        apply(
            &mut store,
            Some("c1"),
            "c2",
            serde_json::json!([fragment(2, "สองครั้ง"),
                {"table": "content_fragments", "op": "delete", "id": 3}]),
        );
        let after = embed_store(&mut store, &counting, &kinds, |_, _| {}).unwrap();
        assert_eq!((after.embedded, after.unchanged), (1, 1));
        assert_eq!(counting.0.get(), 4);
        let stored: String = store
            .conn()
            .query_row(
                "SELECT text_hash FROM vector_embeddings WHERE source_id = 2",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(stored, text_hash("สองครั้ง"));
        assert_eq!(store.counts().unwrap().vectors[0].count, 2);
    }

    #[test]
    fn near_duplicates_are_closer_than_unrelated_texts() {
        let e = HashedNgrams;
        let query = e.vector("ขอบคุณมาก");
        let near = e.vector("ขอบคุณมากครับ");
        let unrelated = [
            "ห้องน้ำอยู่ที่ไหน",
            "วันนี้อากาศร้อนมาก",
            "ฉันชอบกินข้าวผัด",
            "where is the train station",
        ];
        let near_score = cosine(&query, &near);
        for text in unrelated {
            let score = cosine(&query, &e.vector(text));
            assert!(near_score > score + 0.2, "{text}: {score} vs {near_score}");
        }
    }
}
