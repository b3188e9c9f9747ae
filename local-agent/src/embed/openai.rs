//! An OpenAI-compatible `/v1/embeddings` client (Ollama, LM Studio, OpenAI).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{EmbedError, Embedder, Prefixes, Purpose};
use crate::backoff::{Backoff, Exhausted, RetryHook, Transient, is_transient, parse_retry_after};

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
    /// Put before each text, by purpose, before it is sent.
    prefixes: Prefixes,
    backoff: Backoff,
    on_retry: Option<RetryHook>,
}

impl std::fmt::Debug for OpenAiEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiEmbedder")
            .field("url", &self.url)
            .field("model", &self.model)
            .field("prefixes", &self.prefixes)
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
            prefixes: Prefixes::for_model(model),
            backoff,
            on_retry: None,
        }
    }

    /// Sends `prefixes` before the texts instead of those of the model's
    /// family ([`Prefixes::for_model`], the default).
    pub fn with_prefixes(mut self, prefixes: Prefixes) -> OpenAiEmbedder {
        self.prefixes = prefixes;
        self
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
        // `texts` carry their prefixes already (see `embed`).
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
            // Any dimension, but one per answer, and the one asked for.
            let expected = self
                .dimensions
                .unwrap_or_else(|| out.first().map_or(0, Vec::len));
            if let Some(v) = out.iter().find(|v| v.len() != expected || v.is_empty()) {
                return Ok(Err(EmbedError::Dimensions {
                    model: self.requested().to_owned(),
                    got: v.len(),
                    expected,
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

    fn dimensions(&self) -> Option<usize> {
        self.dimensions
    }

    fn embed(&self, texts: &[&str], purpose: Purpose) -> Result<Vec<Vec<f32>>, EmbedError> {
        let prefixed: Vec<_> = texts
            .iter()
            .map(|t| self.prefixes.apply(purpose, t))
            .collect();
        let texts: Vec<&str> = prefixed.iter().map(|t| &**t).collect();
        match self
            .backoff
            .retry(self.on_retry.as_ref(), || self.call(&texts))
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
