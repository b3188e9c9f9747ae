//! A sentence-embedding model of the BERT family run inside the agent, on
//! the CPU, from a folder laid out as the model hub and sentence-transformers
//! lay it out: `config.json`, `tokenizer.json`, `model.safetensors`, and,
//! when the model defines them, `sentence_bert_config.json` (the longest
//! input) and `1_Pooling/config.json` (how token vectors become one).

use std::path::{Path, PathBuf};

use candle_core::{D, DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use serde::Deserialize;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use super::{EmbedError, Embedder, Prefixes, Purpose};

/// The files a model folder must hold.
pub const REQUIRED_FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

/// Why a model folder cannot be loaded or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not what a sentence-embedding model needs: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "{} holds a {kind} model; this agent runs BERT-family models (model_type \"bert\", e.g. \
         all-MiniLM-L6-v2, multilingual-e5-small, paraphrase-multilingual-MiniLM-L12-v2); \
         serve this one through an OpenAI-compatible endpoint instead (embed.url)",
         path.display()
    )]
    Unsupported { path: PathBuf, kind: String },
    #[error("the model failed on a batch of texts: {0}")]
    Run(String),
}

/// How a model turns the vectors of a text's tokens into one vector
/// (sentence-transformers' `1_Pooling/config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The average over the text's tokens (the attention mask), padding
    /// excluded.
    Mean,
    /// The first token's (`[CLS]`) vector.
    Cls,
}

#[derive(Deserialize)]
struct PoolingFile {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

#[derive(Deserialize)]
struct SentenceBertFile {
    max_seq_length: Option<usize>,
}

/// The keys of `config.json` read before handing it to the BERT loader.
#[derive(Deserialize)]
struct ModelKind {
    model_type: Option<String>,
    hidden_size: usize,
    max_position_embeddings: usize,
}

/// A sentence-embedding model loaded from its folder.
pub struct BertEmbedder {
    name: String,
    model: BertModel,
    tokenizer: Tokenizer,
    pooling: Pooling,
    prefixes: Prefixes,
    dimension: usize,
    max_tokens: usize,
    device: Device,
}

impl std::fmt::Debug for BertEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BertEmbedder")
            .field("name", &self.name)
            .field("pooling", &self.pooling)
            .field("dimension", &self.dimension)
            .field("max_tokens", &self.max_tokens)
            .finish()
    }
}

/// Texts run through the network together: sorted by length first, so
/// that a batch pads its short texts only up to similar ones.
const RUN_BATCH: usize = 16;

impl BertEmbedder {
    /// Loads the model in `dir`, whose vectors are stored under `name`.
    pub fn load(dir: &Path, name: &str) -> Result<BertEmbedder, ModelError> {
        for file in REQUIRED_FILES {
            let path = dir.join(file);
            if !path.is_file() {
                return Err(ModelError::Invalid {
                    path: dir.to_owned(),
                    reason: format!("it has no {file}"),
                });
            }
        }
        let config_path = dir.join("config.json");
        let config_text = read(&config_path)?;
        let invalid = |path: &Path, reason: String| ModelError::Invalid {
            path: path.to_owned(),
            reason,
        };
        let kind: ModelKind =
            serde_json::from_str(&config_text).map_err(|e| invalid(&config_path, e.to_string()))?;
        match kind.model_type.as_deref() {
            Some("bert") | None => {}
            Some(other) => {
                return Err(ModelError::Unsupported {
                    path: dir.to_owned(),
                    kind: other.to_owned(),
                });
            }
        }
        let config: BertConfig =
            serde_json::from_str(&config_text).map_err(|e| invalid(&config_path, e.to_string()))?;

        check_modules(dir)?;
        let pooling = read_pooling(dir)?;
        let max_tokens = read_max_tokens(dir)?
            .unwrap_or(kind.max_position_embeddings)
            .min(kind.max_position_embeddings);

        let tokenizer_path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| invalid(&tokenizer_path, e.to_string()))?;
        // The model's own input limit, whatever tokenizer.json says (some
        // truncate shorter than the model was trained for, as
        // sentence-transformers overrides too).
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                ..TruncationParams::default()
            }))
            .map_err(|e| invalid(&tokenizer_path, e.to_string()))?;
        // Pad a batch to its longest text only: some tokenizer.json pad
        // every text to 128 tokens, which costs time and changes nothing,
        // as pooling and attention skip padding.
        let padding = tokenizer.get_padding().cloned().unwrap_or_default();
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_to_multiple_of: None,
            ..padding
        }));

        let device = Device::Cpu;
        let weights = dir.join("model.safetensors");
        let vb = weights_of(&weights, &device)?;
        let model = BertModel::load(vb, &config).map_err(|e| invalid(&weights, e.to_string()))?;
        Ok(BertEmbedder {
            name: name.to_owned(),
            model,
            tokenizer,
            pooling,
            prefixes: Prefixes::for_model(name),
            dimension: kind.hidden_size,
            max_tokens,
            device,
        })
    }

    /// Other prefixes than its family's (the settings' `query_prefix` and
    /// `passage_prefix`).
    pub fn with_prefixes(mut self, prefixes: Prefixes) -> BertEmbedder {
        self.prefixes = prefixes;
        self
    }

    /// The length of every vector it makes.
    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// How its token vectors become one.
    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// The longest input, in tokens; longer texts are cut.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Vectors for texts already prefixed, all of one batch.
    fn run(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, ModelError> {
        let run = |e: &dyn std::fmt::Display| ModelError::Run(e.to_string());
        let encodings = self
            .tokenizer
            .encode_batch(texts, true)
            .map_err(|e| run(&e))?;
        let rows = encodings.len();
        let len = encodings.first().map_or(0, |e| e.get_ids().len());
        let mut ids = Vec::with_capacity(rows * len);
        let mut types = Vec::with_capacity(rows * len);
        let mut mask = Vec::with_capacity(rows * len);
        for e in &encodings {
            ids.extend_from_slice(e.get_ids());
            types.extend_from_slice(e.get_type_ids());
            mask.extend_from_slice(e.get_attention_mask());
        }
        let tensor =
            |v: Vec<u32>| Tensor::from_vec(v, (rows, len), &self.device).map_err(|e| run(&e));
        let (ids, types, mask) = (tensor(ids)?, tensor(types)?, tensor(mask)?);
        let pooled = (|| -> candle_core::Result<Vec<Vec<f32>>> {
            let hidden = self.model.forward(&ids, &types, Some(&mask))?;
            let pooled = match self.pooling {
                Pooling::Cls => hidden.i((.., 0))?,
                Pooling::Mean => {
                    let weights = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
                    let sum = hidden.broadcast_mul(&weights)?.sum(1)?;
                    let count = weights.sum(1)?.clamp(1e-9f32, f32::MAX)?;
                    sum.broadcast_div(&count)?
                }
            };
            // Unit length: the store's L2 distance then orders as cosine.
            let norm = pooled.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
            pooled
                .broadcast_div(&norm.clamp(1e-12f32, f32::MAX)?)?
                .to_vec2::<f32>()
        })()
        .map_err(|e| run(&e))?;
        Ok(pooled)
    }
}

impl Embedder for BertEmbedder {
    fn model(&self) -> &str {
        &self.name
    }

    fn batch_size(&self) -> usize {
        64
    }

    fn embed(&self, texts: &[&str], purpose: Purpose) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut order: Vec<usize> = (0..texts.len()).collect();
        // Length in bytes stands in for length in tokens well enough to
        // group similar texts.
        order.sort_by_key(|&i| texts[i].len());
        let mut out = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(RUN_BATCH) {
            let batch: Vec<String> = chunk
                .iter()
                .map(|&i| self.prefixes.apply(purpose, texts[i]).into_owned())
                .collect();
            let vectors = self.run(batch).map_err(|e| EmbedError::Model {
                model: self.name.clone(),
                reason: e.to_string(),
            })?;
            for (&i, v) in chunk.iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }
}

fn read(path: &Path) -> Result<String, ModelError> {
    std::fs::read_to_string(path).map_err(|source| ModelError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The pooling `1_Pooling/config.json` names; mean when there is none (what
/// sentence-transformers does with a plain BERT checkpoint).
fn read_pooling(dir: &Path) -> Result<Pooling, ModelError> {
    let path = dir.join("1_Pooling").join("config.json");
    if !path.is_file() {
        return Ok(Pooling::Mean);
    }
    let file: PoolingFile =
        serde_json::from_str(&read(&path)?).map_err(|e| ModelError::Invalid {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    let modes = [
        file.pooling_mode_cls_token,
        file.pooling_mode_mean_tokens,
        file.pooling_mode_max_tokens,
        file.pooling_mode_mean_sqrt_len_tokens,
    ];
    match modes {
        [true, false, false, false] => Ok(Pooling::Cls),
        [false, true, false, false] => Ok(Pooling::Mean),
        _ => Err(ModelError::Invalid {
            path,
            reason: "this agent pools by the first token (cls) or the mean of the tokens; \
                     the model asks for another pooling"
                .to_owned(),
        }),
    }
}

/// Refuses a model whose sentence-transformers modules go beyond what is run
/// here (the network, pooling, normalising): a dense layer after the
/// pooling (LaBSE has one) left out would give wrong vectors silently.
fn check_modules(dir: &Path) -> Result<(), ModelError> {
    #[derive(Deserialize)]
    struct Module {
        #[serde(rename = "type")]
        kind: String,
    }
    let path = dir.join("modules.json");
    if !path.is_file() {
        return Ok(());
    }
    let modules: Vec<Module> =
        serde_json::from_str(&read(&path)?).map_err(|e| ModelError::Invalid {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    for m in modules {
        let known = ["Transformer", "Pooling", "Normalize"]
            .iter()
            .any(|k| m.kind.ends_with(&format!(".{k}")) || m.kind == *k);
        if !known {
            return Err(ModelError::Invalid {
                path,
                reason: format!(
                    "it has a {} module, which this agent does not run (it runs the network, \
                     its pooling and normalisation); serve the model through an \
                     OpenAI-compatible endpoint instead (embed.url)",
                    m.kind
                ),
            });
        }
    }
    Ok(())
}

/// sentence-transformers' `max_seq_length`, when the folder has one.
fn read_max_tokens(dir: &Path) -> Result<Option<usize>, ModelError> {
    let path = dir.join("sentence_bert_config.json");
    if !path.is_file() {
        return Ok(None);
    }
    let file: SentenceBertFile =
        serde_json::from_str(&read(&path)?).map_err(|e| ModelError::Invalid {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    Ok(file.max_seq_length)
}

/// The weights, mapped from the file rather than read: a multilingual
/// model's are hundreds of MB, and a copy would double what loading takes.
fn weights_of(path: &Path, device: &Device) -> Result<VarBuilder<'static>, ModelError> {
    // SAFETY: the mapping is only sound while nobody rewrites the file.
    // Model files live in the agent's own models folder, which installs a
    // model by renaming a finished folder into place and removes one by
    // deleting its folder: no file is ever written in place once installed.
    #[allow(unsafe_code)]
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[path.to_owned()], DType::F32, device) };
    vb.map_err(|e| ModelError::Invalid {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}
