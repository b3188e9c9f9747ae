//! `model fetch` against a local server of the test's own that serves a
//! repository the way the Hugging Face hub does: `resolve/<revision>/<file>`
//! answers a `HEAD` with the size and hash (`X-Linked-Size` and
//! `X-Linked-Etag` for LFS files, which redirect to another path where the
//! bytes are; `Content-Length` and a Git-object-id `ETag` for others), a
//! 404 for files the repository lacks, and `Range` requests with 206.
//! The model it serves is a tiny BERT made here (random weights, a real
//! tokenizer.json), so the installed model really loads and embeds.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{Device, Tensor};
use local_agent::embed::{Embedder, Purpose};
use local_agent::models::hub::{Hub, HubError};
use local_agent::models::{Models, ModelsError};
use serde_json::{Value, json};
use sha2::Digest;
use support::agent_command;

const REPO: &str = "acme/tiny-bert";
const HIDDEN: usize = 32;
const VOCAB: usize = 4096;

/// The files of a tiny BERT sentence-embedding model.
fn tiny_model() -> HashMap<&'static str, Vec<u8>> {
    let config = json!({
        "architectures": ["BertModel"], "model_type": "bert", "hidden_act": "gelu",
        "hidden_size": HIDDEN, "num_hidden_layers": 1, "num_attention_heads": 4,
        "intermediate_size": 64, "max_position_embeddings": 64, "type_vocab_size": 2,
        "vocab_size": VOCAB, "layer_norm_eps": 1e-12, "pad_token_id": 0,
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "initializer_range": 0.02, "position_embedding_type": "absolute"
    });
    let mut vocab = serde_json::Map::new();
    for (i, token) in [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world", "thai", "word", "##s", "!",
    ]
    .iter()
    .enumerate()
    {
        vocab.insert((*token).to_owned(), json!(i));
    }
    let special = |id: &str, n: u32| json!({"id": id, "ids": [n], "tokens": [id]});
    let added = |id: u32, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": true})
    };
    let tokenizer = json!({
        "version": "1.0",
        "truncation": {"direction": "Right", "max_length": 128, "strategy": "LongestFirst", "stride": 0},
        "padding": {"strategy": {"Fixed": 128}, "direction": "Right", "pad_to_multiple_of": null,
                    "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"},
        "added_tokens": [added(0, "[PAD]"), added(1, "[UNK]"), added(2, "[CLS]"), added(3, "[SEP]")],
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {"[CLS]": special("[CLS]", 2), "[SEP]": special("[SEP]", 3)}},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab}
    });
    let pooling = json!({"word_embedding_dimension": HIDDEN, "pooling_mode_cls_token": false,
        "pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": false,
        "pooling_mode_mean_sqrt_len_tokens": false});

    let dev = Device::Cpu;
    let mut n = 0u32;
    let mut tensor = |shape: &[usize]| {
        n += 1;
        let len: usize = shape.iter().product();
        // Deterministic, varied values: enough for a model that runs.
        let values: Vec<f32> = (0..len)
            .map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ n) % 1000) as f32 / 10_000.0 - 0.05)
            .collect();
        Tensor::from_vec(values, shape, &dev).unwrap()
    };
    let mut weights: HashMap<String, Tensor> = HashMap::new();
    let h = HIDDEN;
    weights.insert(
        "embeddings.word_embeddings.weight".into(),
        tensor(&[VOCAB, h]),
    );
    weights.insert(
        "embeddings.position_embeddings.weight".into(),
        tensor(&[64, h]),
    );
    weights.insert(
        "embeddings.token_type_embeddings.weight".into(),
        tensor(&[2, h]),
    );
    let ones = |len: usize| Tensor::ones(len, candle_core::DType::F32, &dev).unwrap();
    let zeros = |len: usize| Tensor::zeros(len, candle_core::DType::F32, &dev).unwrap();
    for ln in [
        "embeddings.LayerNorm",
        "encoder.layer.0.attention.output.LayerNorm",
        "encoder.layer.0.output.LayerNorm",
    ] {
        weights.insert(format!("{ln}.weight"), ones(h));
        weights.insert(format!("{ln}.bias"), zeros(h));
    }
    for (name, out, inp) in [
        ("attention.self.query", h, h),
        ("attention.self.key", h, h),
        ("attention.self.value", h, h),
        ("attention.output.dense", h, h),
        ("intermediate.dense", 64, h),
        ("output.dense", h, 64),
    ] {
        weights.insert(
            format!("encoder.layer.0.{name}.weight"),
            tensor(&[out, inp]),
        );
        weights.insert(format!("encoder.layer.0.{name}.bias"), tensor(&[out]));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    candle_core::safetensors::save(&weights, &path).unwrap();
    let mut files = HashMap::new();
    files.insert("config.json", serde_json::to_vec_pretty(&config).unwrap());
    files.insert("tokenizer.json", serde_json::to_vec(&tokenizer).unwrap());
    files.insert(
        "1_Pooling/config.json",
        serde_json::to_vec(&pooling).unwrap(),
    );
    files.insert("model.safetensors", std::fs::read(&path).unwrap());
    files
}

/// How the hub double misbehaves.
#[derive(Clone, Copy, Default)]
struct Faults {
    /// The first this-many downloads of the weights close the connection
    /// after half of what they promised.
    break_lfs_gets: usize,
    /// LFS bytes are served with one byte changed (headers stay true).
    corrupt_lfs: bool,
}

#[derive(Default)]
struct Log {
    /// `METHOD path [range]`, in order.
    requests: Vec<String>,
    /// Downloads of the weights so far.
    lfs_gets: usize,
}

struct HubDouble {
    url: String,
    log: Arc<Mutex<Log>>,
    files: Arc<HashMap<&'static str, Vec<u8>>>,
}

/// Files kept in Git LFS on the hub (the weights; tokenizer.json is too for
/// large vocabularies, and here, so that two files take the redirect).
fn is_lfs(file: &str) -> bool {
    matches!(file, "model.safetensors" | "tokenizer.json")
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

fn git_oid(bytes: &[u8]) -> String {
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {}\0", bytes.len()).as_bytes());
    h.update(bytes);
    hex::encode(h.finalize())
}

impl HubDouble {
    fn start(files: HashMap<&'static str, Vec<u8>>, faults: Faults) -> HubDouble {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Log::default()));
        let files = Arc::new(files);
        let (l, f) = (log.clone(), files.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (l, f) = (l.clone(), f.clone());
                std::thread::spawn(move || serve(stream, &f, &l, faults));
            }
        });
        HubDouble { url, log, files }
    }

    fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().requests.clone()
    }
}

fn serve(
    stream: TcpStream,
    files: &HashMap<&'static str, Vec<u8>>,
    log: &Mutex<Log>,
    faults: Faults,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_owned(),
        parts.next().unwrap_or("").to_owned(),
    );
    let mut range = None;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).unwrap();
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("range")
        {
            range = Some(value.trim().to_owned());
        }
    }
    log.lock().unwrap().requests.push(match &range {
        Some(r) => format!("{method} {path} {r}"),
        None => format!("{method} {path}"),
    });
    let head = method == "HEAD";
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let prefix = format!("/{REPO}/resolve/main/");
    if let Some(file) = path.strip_prefix(&prefix) {
        let Some(bytes) = files.get(file) else {
            let body = "Entry not found";
            let _ = write!(
                out,
                "HTTP/1.1 404 Not Found\r\nX-Error-Code: EntryNotFound\r\nX-Repo-Commit: {commit}\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{}",
                body.len(),
                if head { "" } else { body }
            );
            return;
        };
        if is_lfs(file) {
            let sha = sha256_hex(bytes);
            let _ = write!(
                out,
                "HTTP/1.1 302 Found\r\nLocation: /lfs-storage/{sha}?file={file}\r\n\
                 X-Linked-Size: {}\r\nX-Linked-Etag: \"{sha}\"\r\nX-Repo-Commit: {commit}\r\n\
                 ETag: W/\"unrelated-{}\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                bytes.len(),
                bytes.len()
            );
        } else {
            let _ = write!(
                out,
                "HTTP/1.1 200 OK\r\nETag: \"{}\"\r\nX-Repo-Commit: {commit}\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                git_oid(bytes),
                bytes.len()
            );
            if !head {
                let _ = out.write_all(bytes);
            }
        }
        return;
    }
    if let Some(rest) = path.strip_prefix("/lfs-storage/") {
        let file = rest.split("?file=").nth(1).unwrap_or("");
        let Some(bytes) = files.get(file) else {
            let _ = write!(
                out,
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            return;
        };
        let mut bytes = bytes.clone();
        if faults.corrupt_lfs {
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x55;
        }
        let start: usize = range
            .as_deref()
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        let body = &bytes[start..];
        let status = if range.is_some() {
            format!(
                "206 Partial Content\r\nContent-Range: bytes {start}-{}/{}",
                bytes.len() - 1,
                bytes.len()
            )
        } else {
            "200 OK".to_owned()
        };
        let _ = write!(
            out,
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let broken = file == "model.safetensors" && {
            let mut log = log.lock().unwrap();
            log.lfs_gets += 1;
            log.lfs_gets <= faults.break_lfs_gets
        };
        if broken {
            // Half of what was promised, then the connection drops.
            let _ = out.write_all(&body[..body.len() / 2]);
            let _ = out.flush();
            let _ = out.shutdown(std::net::Shutdown::Both);
            return;
        }
        let _ = out.write_all(body);
        return;
    }
    let _ = write!(
        out,
        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
}

fn same_files(folder: &Path, files: &HashMap<&'static str, Vec<u8>>) {
    for (name, bytes) in files {
        let got = std::fs::read(folder.join(name)).unwrap();
        assert!(&got == bytes, "{name} differs from what the hub served");
    }
}

#[test]
fn model_fetch_downloads_checks_and_installs_through_the_command() {
    let hub = HubDouble::start(tiny_model(), Faults::default());
    let dir = tempfile::tempdir().unwrap();
    let models_dir = dir.path().join("models");
    let run = |args: &[&str]| {
        agent_command()
            .env("HF_ENDPOINT", &hub.url)
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .arg("--db")
            .arg(dir.path().join("agent.db"))
            .arg("--models-dir")
            .arg(&models_dir)
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["--json", "model", "fetch", REPO]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let installed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(installed["name"], "tiny-bert");
    assert_eq!(installed["dimension"], HIDDEN);
    assert_eq!(installed["active"], true);
    assert_eq!(installed["origin"]["repo"], REPO);
    assert_eq!(
        installed["origin"]["commit"],
        "0123456789abcdef0123456789abcdef01234567"
    );
    let folder = models_dir.join("tiny-bert");
    same_files(&folder, &hub.files);
    assert!(
        !models_dir.join(".partial/tiny-bert").exists(),
        "staging left behind"
    );

    let requests = hub.requests();
    // Each file: a HEAD at the hub; LFS files' bytes from where the
    // redirect points, the others straight from the hub.
    for file in [
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "modules.json",
    ] {
        assert!(
            requests.contains(&format!("HEAD /{REPO}/resolve/main/{file}")),
            "{file}: {requests:?}"
        );
    }
    assert!(requests.contains(&format!("GET /{REPO}/resolve/main/config.json")));
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("GET /lfs-storage/") && r.ends_with("file=model.safetensors")),
        "{requests:?}"
    );
    assert!(
        !requests.contains(&format!("GET /{REPO}/resolve/main/modules.json")),
        "a file the repository lacks is not fetched"
    );

    // The installed model is the default, and runs.
    let out = run(&["--json", "config"]);
    let config: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(config["embed"]["model"]["value"], "tiny-bert");
    let model = Models::new(&models_dir).load("tiny-bert").unwrap();
    let v = model.embed(&["hello world!"], Purpose::Query).unwrap();
    assert_eq!(v[0].len(), HIDDEN);
    let norm: f32 = v[0].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "{norm}");

    // Again: refused, nothing touched.
    let out = run(&["model", "fetch", REPO]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("model remove tiny-bert"));

    // A name the hub does not have.
    let out = run(&["model", "fetch", "acme/none", "--tries", "1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no config.json in acme/none"), "{err}");
}

#[test]
fn a_broken_download_resumes_where_it_stopped() {
    let hub = HubDouble::start(
        tiny_model(),
        Faults {
            break_lfs_gets: 1,
            ..Faults::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let models = Models::new(dir.path().join("models"));
    let size = hub.files["model.safetensors"].len();
    let mut client = Hub::new(&hub.url, None);
    client.tries = 1;

    // One try only: the break ends the run, the partial file stays.
    let err = models
        .fetch(&client, REPO, "main", "tiny-bert", &mut |_| {})
        .unwrap_err();
    assert!(
        matches!(err, ModelsError::Hub(HubError::Unreachable { .. })),
        "{err}"
    );
    assert!(models.list().unwrap().is_empty(), "nothing installed");
    let part = models.staging("tiny-bert").join("model.safetensors.part");
    let kept = std::fs::metadata(&part).unwrap().len();
    assert_eq!(kept as usize, size / 2, "the bytes that arrived are kept");

    // The next run asks for the rest only.
    let mut resumed_at = None;
    let installed = models
        .fetch(&client, REPO, "main", "tiny-bert", &mut |p| {
            if let local_agent::models::hub::Progress::Start {
                file: "model.safetensors",
                resumed_at: at,
                ..
            } = p
            {
                resumed_at = Some(at);
            }
        })
        .unwrap();
    assert_eq!(resumed_at, Some(kept));
    assert!(installed.active);
    let requests = hub.requests();
    let ranged: Vec<&String> = requests.iter().filter(|r| r.contains("bytes=")).collect();
    assert_eq!(ranged.len(), 1, "{requests:?}");
    assert!(ranged[0].ends_with(&format!("bytes={kept}-")), "{ranged:?}");
    same_files(&models.folder("tiny-bert"), &hub.files);

    // Within one run, a break is retried from where it stopped.
    let hub = HubDouble::start(
        tiny_model(),
        Faults {
            break_lfs_gets: 1,
            ..Faults::default()
        },
    );
    let other = Models::new(dir.path().join("other"));
    let mut client = Hub::new(&hub.url, None);
    client.tries = 3;
    other
        .fetch(&client, REPO, "main", "tiny-bert", &mut |_| {})
        .unwrap();
    assert!(
        hub.requests()
            .iter()
            .any(|r| r.ends_with(&format!("bytes={}-", size / 2))),
        "{:?}",
        hub.requests()
    );
    same_files(&other.folder("tiny-bert"), &hub.files);
}

#[test]
fn a_file_whose_hash_does_not_match_is_refused_and_nothing_is_installed() {
    let hub = HubDouble::start(
        tiny_model(),
        Faults {
            corrupt_lfs: true,
            ..Faults::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let models = Models::new(dir.path().join("models"));
    let client = Hub::new(&hub.url, None);
    let err = models
        .fetch(&client, REPO, "main", "tiny-bert", &mut |_| {})
        .unwrap_err();
    match &err {
        ModelsError::Hub(HubError::Mismatch { file, what, .. }) => {
            assert_eq!(what, &"sha256");
            assert!(
                file == "tokenizer.json" || file == "model.safetensors",
                "{file}"
            );
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("nothing was installed"), "{err}");
    assert!(models.list().unwrap().is_empty());
    assert!(!models.folder("tiny-bert").exists());
    assert!(models.active().is_none());
    // The bad bytes are gone, so the next try starts clean.
    let staged: Vec<_> = walk(&models.staging("tiny-bert"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".part"))
        .collect();
    assert!(staged.is_empty(), "{staged:?}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
