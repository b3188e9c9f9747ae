//! The embedder section: the model, and the OpenAI-compatible endpoint a
//! model other than the built-in one needs (the `[embed]` table).

use super::file::EmbedFileConfig;
use super::{ConfigError, Key, Layers, Shown, Source, Sourced, from_file, redacted, show};
use crate::embed::{HASHED_NGRAMS_MODEL, Prefixes};

pub const ENV_EMBED_URL: &str = "THAI_AGENT_EMBED_URL";
pub const ENV_EMBED_MODEL: &str = "THAI_AGENT_EMBED_MODEL";
pub const ENV_EMBED_API_KEY: &str = "THAI_AGENT_EMBED_API_KEY";
pub const ENV_EMBED_QUERY_PREFIX: &str = "THAI_AGENT_EMBED_QUERY_PREFIX";
pub const ENV_EMBED_PASSAGE_PREFIX: &str = "THAI_AGENT_EMBED_PASSAGE_PREFIX";

const MODEL: Key = Key {
    what: "the embedding model",
    flag: Some("--model"),
    env: ENV_EMBED_MODEL,
    file: "[embed] model",
};
const URL: Key = Key {
    what: "the embedding URL",
    flag: None,
    env: ENV_EMBED_URL,
    file: "[embed] url",
};
const API_KEY: Key = Key {
    what: "the embedding key",
    flag: None,
    env: ENV_EMBED_API_KEY,
    file: "[embed] api_key",
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbedSettings {
    pub model: Sourced<String>,
    pub url: Option<Sourced<String>>,
    pub api_key: Option<Sourced<String>>,
    pub dimensions: Option<Sourced<usize>>,
    /// The name the endpoint serves `model` by, when the config file gives
    /// another one (`[embed.endpoint_names]`).
    pub endpoint_name: Option<Sourced<String>>,
    /// Put before a search's text: the setting, else what the model's
    /// family expects ([`Prefixes::for_model`]), as a default.
    pub query_prefix: Sourced<String>,
    /// Put before each stored text embedded, likewise.
    pub passage_prefix: Sourced<String>,
}

impl EmbedSettings {
    pub(super) fn resolve(l: &Layers<'_>, file: &EmbedFileConfig) -> Result<Self, ConfigError> {
        let model = l
            .value(&MODEL, l.flags.embed_model.as_ref(), file.model.as_ref())
            .unwrap_or_else(|| Sourced::built_in(HASHED_NGRAMS_MODEL.to_owned()));
        let endpoint_name = from_file(file.endpoint_names.get(&model.value).cloned());
        // The family shows in the model's name, or in the endpoint's name
        // for it.
        let mut family = Prefixes::for_model(&model.value);
        if let (true, Some(name)) = (family.is_empty(), &endpoint_name) {
            family = Prefixes::for_model(&name.value);
        }
        let prefix = |env: &str, file: Option<&String>, default: String| {
            super::pick(None, l.env_untrimmed(env), file.cloned())
                .unwrap_or_else(|| Sourced::built_in(default))
        };
        Ok(EmbedSettings {
            query_prefix: prefix(
                ENV_EMBED_QUERY_PREFIX,
                file.query_prefix.as_ref(),
                family.query,
            ),
            passage_prefix: prefix(
                ENV_EMBED_PASSAGE_PREFIX,
                file.passage_prefix.as_ref(),
                family.passage,
            ),
            endpoint_name,
            model,
            url: l.url(&URL, None, file.url.as_ref())?,
            api_key: l.value(&API_KEY, None, file.api_key.as_ref()),
            dimensions: from_file(file.dimensions),
        })
    }

    pub(super) fn shown(&self) -> Vec<Shown> {
        vec![
            show("model", Some(&self.model)),
            show("url", self.url.as_ref()),
            redacted("api_key", self.api_key.as_ref()),
            show("dimensions", self.dimensions.as_ref()),
            show("endpoint_name", self.endpoint_name.as_ref()),
            show("query_prefix", Some(&self.query_prefix)),
            show("passage_prefix", Some(&self.passage_prefix)),
        ]
    }

    /// Makes the models folder's active model the one used when no flag,
    /// variable or config file names a model.
    pub fn prefer_installed(&mut self, active: Option<String>) {
        if let (Source::Default, Some(name)) = (self.model.source, active) {
            // The prefixes no setting gives are the installed model's
            // family's, as they would be had it been named.
            let family = Prefixes::for_model(&name);
            if self.query_prefix.source == Source::Default {
                self.query_prefix.value = family.query;
            }
            if self.passage_prefix.source == Source::Default {
                self.passage_prefix.value = family.passage;
            }
            self.model = Sourced {
                value: name,
                source: Source::Installed,
            };
        }
    }

    /// Whether the built-in embedder is used only because no model is
    /// installed or named.
    pub fn is_fallback(&self) -> bool {
        self.is_builtin() && self.model.source == Source::Default
    }

    /// The prefixes in effect.
    pub fn prefixes(&self) -> Prefixes {
        Prefixes {
            query: self.query_prefix.value.clone(),
            passage: self.passage_prefix.value.clone(),
        }
    }

    /// Whether the built-in embedder serves this model.
    pub fn is_builtin(&self) -> bool {
        self.model.value == HASHED_NGRAMS_MODEL
    }

    /// The endpoint URL a non-built-in model needs.
    pub fn endpoint(&self) -> Result<&str, ConfigError> {
        self.url
            .as_ref()
            .map(|u| u.value.as_str())
            .ok_or_else(|| ConfigError::NoEmbedUrl {
                model: self.model.value.clone(),
            })
    }
}
