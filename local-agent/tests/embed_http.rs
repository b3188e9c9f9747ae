//! The OpenAI-compatible embedder against a small, faithful double of the
//! `/v1/embeddings` wire protocol over real HTTP: request and response
//! shapes as OpenAI, Ollama and LM Studio use them, their error bodies,
//! 429 with Retry-After, and the agent's own handling of each.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use local_agent::backoff::Backoff;
use local_agent::embed::{EmbedError, Embedder, HashedNgrams, OpenAiEmbedder, Purpose};
use serde_json::{Value, json};

/// What the double was asked, for assertions.
#[derive(Default)]
struct Seen {
    requests: AtomicUsize,
    bodies: Mutex<Vec<Value>>,
    auth: Mutex<Vec<Option<String>>>,
}

/// The double. Models it knows:
/// - `mini-384`: 384-dimensional vectors (un-normalised, answered in
///   reverse order: clients must use `index`), like all-minilm;
/// - `wide-768`: 768 dimensions, like nomic-embed-text;
/// - `multilingual-e5-small`: 384 dimensions, a name of the e5 family;
/// - `busy-384`: the first request gets 429 with `Retry-After: 1`;
/// - `down-384`: always 503.
///
/// Any other model gets OpenAI's 404 `model_not_found`. With `key` set, a
/// request without `Authorization: Bearer <key>` gets 401.
struct Double {
    url: String,
    seen: Arc<Seen>,
}

impl Double {
    fn start(key: Option<&'static str>) -> Double {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        let seen = Arc::new(Seen::default());
        let state = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let state = state.clone();
                std::thread::spawn(move || serve(stream, &state, key));
            }
        });
        Double { url, seen }
    }

    fn requests(&self) -> usize {
        self.seen.requests.load(Ordering::SeqCst)
    }
}

fn serve(stream: TcpStream, seen: &Seen, key: Option<&str>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    // HTTP/1.1 keep-alive: one connection may carry several requests.
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0;
        let mut auth = None;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap(),
                "authorization" => auth = Some(value.trim().to_owned()),
                _ => {}
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let n = seen.requests.fetch_add(1, Ordering::SeqCst);
        seen.auth.lock().unwrap().push(auth.clone());
        let (status, headers, reply) = answer(&request_line, &body, auth, key, n, seen);
        let text = reply.to_string();
        write!(
            writer,
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{headers}\r\n{text}",
            text.len()
        )
        .unwrap();
    }
}

fn error(status: u16, message: &str, code: &str) -> (u16, String, Value) {
    (
        status,
        String::new(),
        json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}}),
    )
}

fn answer(
    request_line: &str,
    body: &[u8],
    auth: Option<String>,
    key: Option<&str>,
    n: usize,
    seen: &Seen,
) -> (u16, String, Value) {
    if !request_line.starts_with("POST /v1/embeddings ") {
        return error(404, "Invalid URL", "unknown_url");
    }
    if let Some(key) = key
        && auth.as_deref() != Some(&format!("Bearer {key}"))
    {
        return error(401, "Incorrect API key provided", "invalid_api_key");
    }
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return error(
            400,
            "We could not parse the JSON body of your request.",
            "invalid_json",
        );
    };
    seen.bodies.lock().unwrap().push(request.clone());
    let model = request["model"].as_str().unwrap_or_default().to_owned();
    let inputs: Vec<String> = match &request["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect(),
        _ => return error(400, "'input' is a required property", "invalid_input"),
    };
    let dims = match model.as_str() {
        "mini-384" | "multilingual-e5-small" => 384,
        "wide-768" => 768,
        "busy-384" if n == 0 => {
            return (
                429,
                "retry-after: 1\r\n".to_owned(),
                json!({"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}),
            );
        }
        "busy-384" => 384,
        "down-384" => {
            return (
                503,
                String::new(),
                json!({"error": {"message": "The engine is currently overloaded", "type": "server_error"}}),
            );
        }
        other => {
            return error(
                404,
                &format!("The model `{other}` does not exist or you do not have access to it."),
                "model_not_found",
            );
        }
    };
    let mut data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let base = HashedNgrams.vector(text);
            let embedding: Vec<f32> = (0..dims).map(|i| base[i % 384] * 3.0).collect();
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    data.reverse();
    (
        200,
        String::new(),
        json!({"object": "list", "data": data, "model": model,
               "usage": {"prompt_tokens": 1, "total_tokens": 1}}),
    )
}

fn quick() -> Backoff {
    Backoff {
        attempts: 3,
        base: Duration::from_millis(50),
        max: Duration::from_secs(2),
    }
}

#[test]
fn vectors_come_back_in_input_order_normalised() {
    let double = Double::start(Some("sk-test"));
    let e = OpenAiEmbedder::new(
        &double.url,
        "mini-384",
        Some("sk-test".into()),
        None,
        quick(),
    );
    let texts = ["สวัสดี", "ขอบคุณ", "ลาก่อน"];
    let vectors = e.embed(&texts, Purpose::Passage).unwrap();
    assert_eq!(vectors.len(), 3);
    for (text, v) in texts.iter().zip(&vectors) {
        let expected = HashedNgrams.vector(text);
        let diff: f32 = v.iter().zip(&expected).map(|(a, b)| (a - b).abs()).sum();
        assert!(diff < 1e-4, "{text}: not the vector of its own text");
    }
    let body = double.seen.bodies.lock().unwrap()[0].clone();
    assert_eq!(body["model"], "mini-384");
    assert_eq!(body["input"], json!(texts));
    assert_eq!(body["encoding_format"], "float");
    assert!(body.get("dimensions").is_none(), "{body}");
    assert_eq!(
        double.seen.auth.lock().unwrap()[0].as_deref(),
        Some("Bearer sk-test")
    );
}

#[test]
fn the_endpoints_errors_become_advice() {
    let double = Double::start(Some("sk-test"));
    let wrong_key =
        OpenAiEmbedder::new(&double.url, "mini-384", Some("nope".into()), None, quick());
    let err = wrong_key.embed(&["a"], Purpose::Passage).unwrap_err();
    assert!(
        matches!(err, EmbedError::Unauthorized { status: 401, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("Incorrect API key") && err.to_string().contains("api_key"));

    let unknown = OpenAiEmbedder::new(
        &double.url,
        "nomodel",
        Some("sk-test".into()),
        None,
        quick(),
    );
    let err = unknown.embed(&["a"], Purpose::Passage).unwrap_err();
    assert!(
        matches!(err, EmbedError::Rejected { status: 404, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("does not exist"), "{err}");

    let wide = OpenAiEmbedder::new(
        &double.url,
        "wide-768",
        Some("sk-test".into()),
        Some(384),
        quick(),
    );
    let err = wide.embed(&["a"], Purpose::Passage).unwrap_err();
    assert!(
        matches!(
            err,
            EmbedError::Dimensions {
                got: 768,
                expected: 384,
                ..
            }
        ),
        "{err}"
    );
    let asked = double.seen.bodies.lock().unwrap().last().unwrap().clone();
    assert_eq!(asked["dimensions"], 384, "the dimensions setting is sent");

    let before = double.requests();
    let down = OpenAiEmbedder::new(
        &double.url,
        "down-384",
        Some("sk-test".into()),
        None,
        quick(),
    );
    let err = down.embed(&["a"], Purpose::Passage).unwrap_err();
    assert!(
        matches!(
            err,
            EmbedError::Unavailable {
                status: 503,
                attempts: 3,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(double.requests() - before, 3, "bounded retries");
}

#[test]
fn a_429_is_retried_after_the_time_the_server_asks() {
    let double = Double::start(None);
    let heard = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = heard.clone();
    let e = OpenAiEmbedder::new(&double.url, "busy-384", None, None, quick()).with_retry_hook(
        std::sync::Arc::new(move |n: &local_agent::backoff::RetryNotice| {
            log.lock()
                .unwrap()
                .push((n.attempt, n.of, n.reason.clone()));
        }),
    );
    let started = Instant::now();
    let vectors = e.embed(&["สวัสดี"], Purpose::Passage).unwrap();
    assert_eq!(vectors.len(), 1);
    assert_eq!(double.requests(), 2);
    let heard = heard.lock().unwrap().clone();
    assert_eq!(heard.len(), 1, "the retry is told: {heard:?}");
    assert_eq!((heard[0].0, heard[0].1), (2, 3));
    assert!(heard[0].2.starts_with("429: "), "{heard:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After ignored"
    );
}

#[test]
fn nothing_listening_is_reported_with_the_builtin_alternative() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let e = OpenAiEmbedder::new(
        &format!("http://127.0.0.1:{port}/v1"),
        "mini-384",
        None,
        None,
        quick(),
    );
    let err = e.embed(&["a"], Purpose::Passage).unwrap_err();
    assert!(
        matches!(err, EmbedError::Unreachable { attempts: 3, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("hashed-ngrams-v1"), "{err}");
}

/// A store at `db` holding `texts` as fragments 1, 2, …, as a pull would
/// leave it.
fn store_with_fragments(db: &std::path::Path, texts: &[&str]) {
    let mut store = local_agent::store::Store::open(db).unwrap();
    let changes: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            json!({"table": "content_fragments", "op": "upsert", "id": i + 1, "row": {
                "id": i + 1, "learning_content_id": null, "native_text": text, "body_text": "",
                "ipa": null, "extra": null, "fragment_type": "sentence",
                "fragment_metadata": null, "created_at": null, "updated_at": null}})
        })
        .collect();
    let page = serde_json::from_value(json!({
        "changes": changes, "next_cursor": "c", "has_more": false, "phase": "snapshot"}))
    .unwrap();
    store
        .apply_page(
            local_agent::store::PageBase {
                expected_cursor: None,
                new_snapshot: true,
                source_url: "http://api",
            },
            &page,
        )
        .unwrap();
}

/// Runs the agent on `db` against the double, with `config` as its config
/// file and `env` on top.
fn agent(
    double: &Double,
    dir: &std::path::Path,
    config: &str,
    env: &[(&str, &str)],
    args: &[&str],
) -> std::process::Output {
    let config_path = dir.join("config.toml");
    std::fs::write(&config_path, config).unwrap();
    let mut cmd = support::agent_command();
    cmd.arg("--db")
        .arg(dir.join("agent.db"))
        .arg("--config")
        .arg(&config_path)
        .env("THAI_AGENT_EMBED_URL", &double.url);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The texts the double was sent, per request, in order.
fn inputs(double: &Double) -> Vec<Vec<String>> {
    double
        .seen
        .bodies
        .lock()
        .unwrap()
        .iter()
        .map(|b| {
            b["input"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_owned())
                .collect()
        })
        .collect()
}

#[test]
fn an_e5_model_gets_query_and_passage_prefixes_at_the_endpoint() {
    let double = Double::start(None);
    let dir = tempfile::tempdir().unwrap();
    let texts = ["ขอบคุณมากครับ", "ห้องน้ำอยู่ที่ไหน", "วันนี้อากาศร้อน"];
    store_with_fragments(&dir.path().join("agent.db"), &texts);
    let model = ["--model", "multilingual-e5-small"];
    agent(
        &double,
        dir.path(),
        "",
        &[],
        &[&["embed"][..], &model[..]].concat(),
    );
    let sent = inputs(&double);
    assert_eq!(sent.len(), 1, "one batch");
    let expected: Vec<String> = texts.iter().map(|t| format!("passage: {t}")).collect();
    assert_eq!(sent[0], expected);
    let out = agent(
        &double,
        dir.path(),
        "",
        &[],
        &[&["--json", "search", "ขอบคุณ", "--k", "1"][..], &model[..]].concat(),
    );
    assert_eq!(inputs(&double)[1], ["query: ขอบคุณ"]);
    let hits: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(hits[0]["native_text"], "ขอบคุณมากครับ", "{hits}");

    // `config` shows them, as the model's family's defaults.
    let out = agent(
        &double,
        dir.path(),
        "",
        &[("THAI_AGENT_EMBED_MODEL", "multilingual-e5-small")],
        &["--json", "config"],
    );
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    let embed = &shown["embed"];
    assert_eq!(
        embed["query_prefix"],
        json!({"value": "query: ", "source": "default"}),
        "{shown:#}"
    );
    assert_eq!(
        embed["passage_prefix"],
        json!({"value": "passage: ", "source": "default"})
    );
}

#[test]
fn prefixes_of_the_settings_reach_the_endpoint_for_any_model() {
    let double = Double::start(None);
    let dir = tempfile::tempdir().unwrap();
    store_with_fragments(&dir.path().join("agent.db"), &["ขอบคุณมากครับ"]);
    // The config file gives the passage prefix; the environment the query
    // prefix, its trailing space kept.
    let config = "[embed]\nmodel = \"mini-384\"\npassage_prefix = \"search_document: \"\n";
    let env = [("THAI_AGENT_EMBED_QUERY_PREFIX", "search_query: ")];
    agent(&double, dir.path(), config, &env, &["embed"]);
    agent(&double, dir.path(), config, &env, &["search", "ขอบคุณ"]);
    assert_eq!(
        inputs(&double),
        [
            vec!["search_document: ขอบคุณมากครับ".to_owned()],
            vec!["search_query: ขอบคุณ".to_owned()]
        ]
    );
    let out = agent(&double, dir.path(), config, &env, &["--json", "config"]);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        shown["embed"]["query_prefix"],
        json!({"value": "search_query: ", "source": "env"}),
        "{shown:#}"
    );
    assert_eq!(
        shown["embed"]["passage_prefix"],
        json!({"value": "search_document: ", "source": "file"})
    );
    // An e5 model's prefixes can be turned off (a server that adds them
    // itself): an empty string in the file.
    let config =
        "[embed]\nmodel = \"multilingual-e5-small\"\nquery_prefix = \"\"\npassage_prefix = \"\"\n";
    agent(&double, dir.path(), config, &[], &["embed"]);
    agent(&double, dir.path(), config, &[], &["search", "ห้องน้ำ"]);
    assert_eq!(
        inputs(&double)[2..],
        [vec!["ขอบคุณมากครับ".to_owned()], vec!["ห้องน้ำ".to_owned()]]
    );
}

#[test]
fn legacy_384_d_vectors_and_a_768_d_endpoint_model_share_the_store() {
    let double = Double::start(None);
    let dir = tempfile::tempdir().unwrap();
    let texts = ["ขอบคุณมากครับ", "ห้องน้ำอยู่ที่ไหน", "วันนี้อากาศร้อน"];
    store_with_fragments(&dir.path().join("agent.db"), &texts);
    // The legacy file's model, served by the endpoint under another name
    // (as Ollama serves all-MiniLM-L6-v2 as all-minilm), and a 768-d one.
    let config = "[embed.endpoint_names]\n\"all-MiniLM-L6-v2\" = \"mini-384\"\n";
    let legacy = ["--model", "all-MiniLM-L6-v2"];
    let wide = ["--model", "wide-768"];
    for model in [&legacy, &wide] {
        let out = agent(
            &double,
            dir.path(),
            config,
            &[],
            &[&["--json", "embed"][..], &model[..]].concat(),
        );
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["embedded"], 3, "{report}");
    }
    let store = local_agent::store::Store::open(&dir.path().join("agent.db")).unwrap();
    let n = |sql: &str| -> i64 { store.conn().query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(n("SELECT count(*) FROM vec_embeddings"), 3);
    assert_eq!(n("SELECT count(*) FROM vec_embeddings_768"), 3);
    drop(store);
    // Each model searches its own vectors.
    for model in [&legacy, &wide] {
        let out = agent(
            &double,
            dir.path(),
            config,
            &[],
            &[
                &["--json", "search", "ห้องน้ำที่ไหน", "--k", "3"][..],
                &model[..],
            ]
            .concat(),
        );
        let hits: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(hits.as_array().unwrap().len(), 3, "{model:?}: {hits}");
        assert_eq!(hits[0]["native_text"], "ห้องน้ำอยู่ที่ไหน", "{model:?}: {hits}");
    }
    // Switching back re-embeds nothing: each model's vectors were kept.
    let before = double.requests();
    agent(
        &double,
        dir.path(),
        config,
        &[],
        &[&["embed"][..], &legacy[..]].concat(),
    );
    assert_eq!(double.requests(), before);
    // `status` lists both, with their dimensions.
    let out = agent(&double, dir.path(), config, &[], &["--json", "status"]);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut seen: Vec<(String, i64, i64)> = status["mirror"]["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["model"].as_str().unwrap().to_owned(),
                v["dimensions"].as_i64().unwrap(),
                v["count"].as_i64().unwrap(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("all-MiniLM-L6-v2".to_owned(), 384, 3),
            ("wide-768".to_owned(), 768, 3)
        ]
    );
    let out = agent(&double, dir.path(), config, &[], &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("all-MiniLM-L6-v2 (384-d): 3 content_fragment")
            && text.contains("wide-768 (768-d): 3 content_fragment"),
        "{text}"
    );
}

#[test]
fn the_cli_embeds_and_searches_through_the_endpoint() {
    let double = Double::start(Some("sk-test"));
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("agent.db");
    // A store with a few fragments, as a pull would leave it.
    store_with_fragments(&db, &["ขอบคุณมากครับ", "ห้องน้ำอยู่ที่ไหน", "วันนี้อากาศร้อน"]);
    let run = |args: &[&str]| {
        support::agent_command()
            .arg("--db")
            .arg(&db)
            .arg("--config")
            .arg(dir.path().join("none.toml"))
            .env("THAI_AGENT_EMBED_URL", &double.url)
            .env("THAI_AGENT_EMBED_API_KEY", "sk-test")
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&[
        "--json", "embed", "--model", "mini-384", "--kind", "fragment",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (report["model"].as_str(), report["embedded"].as_u64()),
        (Some("mini-384"), Some(3))
    );
    let requests = double.requests();
    // Unchanged texts are not sent again.
    let out = run(&["--json", "embed", "--model", "mini-384"]);
    assert!(out.status.success());
    assert_eq!(double.requests(), requests);

    let out = run(&[
        "--json",
        "search",
        "ขอบคุณ",
        "--model",
        "mini-384",
        "--k",
        "2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hits: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(hits[0]["native_text"], "ขอบคุณมากครับ", "{hits}");

    // The endpoint's refusal reaches the user with a non-zero exit.
    let out = run(&["embed", "--model", "nomodel"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}
