//! `local-agent pull` end to end: the binary against the real components
//! (served by the Wasmtime host from spin.toml) and a real PostgreSQL.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{Agent, Stack, assert_mirror_equals_server, mirror_total, seed};

#[test]
fn an_empty_store_gets_everything_then_api_writes_arrive() {
    let _serial = support::serial();
    let stack = Stack::start();
    let c1 = stack.create(
        "/api/content",
        json!({"title": "ทักทาย", "content_type": "phrase", "language": "thai",
               "native_text": "สวัสดีครับ", "translation": "hello", "ipa": "sà.wàt.diː kʰráp",
               "difficulty_level": 1, "tags": ["greeting", "polite"],
               "content_metadata": {"source": "book", "level": 1.50}}),
    );
    let f1 = stack.create(
        "/api/fragments",
        json!({"learning_content_id": c1, "native_text": "สวัสดี", "body_text": "hello",
               "ipa": "sà.wàt.diː", "extra": null, "fragment_type": "word",
               "fragment_metadata": {"pos": "interjection"}}),
    );
    let f2 = stack.create(
        "/api/fragments",
        json!({"learning_content_id": c1, "native_text": "ครับ", "body_text": "polite particle",
               "fragment_type": "word"}),
    );
    let a1 = stack.upload(f1, b"ID3 fake mp3 bytes");
    stack.create(
        "/api/rankings",
        json!({"fragment_id": f1, "asset_id": a1, "rank_score": "4.50", "assessed_by": "nok",
               "assessment_notes": "ชัดเจน"}),
    );

    let agent = Agent::new(&stack);
    let first = agent.run_json(&["pull"]);
    assert_eq!(first["upserts"], 5, "{first}");
    assert_eq!(first["snapshot"], true);
    assert_mirror_equals_server(&stack, &agent);
    let (score, hundredths): (String, i64) = agent
        .mirror()
        .query_row(
            "SELECT rank_score, rank_hundredths FROM rankings",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((score.as_str(), hundredths), ("4.50", 450));

    // Nothing changed: nothing to apply.
    let idle = agent.run_json(&["pull"]);
    assert_eq!(
        (idle["upserts"].as_u64(), idle["deletes"].as_u64()),
        (Some(0), Some(0))
    );

    // Inserts, updates and deletes through the API.
    let c2 = stack.create(
        "/api/content",
        json!({"title": "ขอบคุณ", "content_type": "phrase", "native_text": "ขอบคุณมาก",
               "translation": "thank you very much", "ipa": "kʰɔ̀ːp.kʰun mâːk"}),
    );
    stack.create(
        "/api/fragments",
        json!({"learning_content_id": c2, "native_text": "ขอบคุณ", "body_text": "thank you",
               "fragment_type": "word"}),
    );
    let (status, body) = stack.call(
        "PATCH",
        &format!("/api/content/{c1}"),
        Some(json!({"translation": "hello (polite)", "tags": ["greeting"]})),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = stack.call("DELETE", &format!("/api/fragments/{f2}"), None);
    assert!(status == 204 || status == 200, "{status} {body}");
    let second = agent.run_json(&["pull"]);
    assert_eq!(second["snapshot"], false, "{second}");
    assert_eq!(second["deletes"], 1, "{second}");
    assert_mirror_equals_server(&stack, &agent);

    // Deleting a content cascades on the server; the tombstones of its
    // children arrive too.
    let (status, _) = stack.call("DELETE", &format!("/api/content/{c1}"), None);
    assert!(status == 204 || status == 200);
    agent.run_json(&["pull"]);
    assert_mirror_equals_server(&stack, &agent);
    assert_eq!(support::mirror_total(&agent), 2);

    // `--full` re-reads everything and ends in the same state.
    let full = agent.run_json(&["pull", "--full", "--page-size", "1"]);
    assert_eq!(full["snapshot"], true);
    assert_mirror_equals_server(&stack, &agent);

    let status = agent.run_json(&["status"]);
    assert_eq!(status["mirror"]["learning_content"], 1);
    assert_eq!(status["sync"]["phase"], "log");
    assert_eq!(status["api"]["answers"], true, "{status}");
}

#[test]
fn a_pull_killed_at_any_moment_converges_on_the_next_run() {
    let _serial = support::serial();
    let stack = Stack::start();
    seed(&stack, 300); // 300 contents, 900 fragments, 450 assets, 450 rankings
    let agent = Agent::new(&stack);
    let mut kills_mid_pull = 0;

    // Crashes with a page written but not committed, during the snapshot.
    for nth in [1, 9, 40] {
        crash_mid_page(&agent, nth);
    }
    // Kills during the snapshot, after different amounts of progress.
    for progress in [1, 250, 900] {
        if kill_after(&agent, progress) {
            kills_mid_pull += 1;
        }
    }
    agent.run_json(&["pull", "--page-size", "7"]);
    assert_mirror_equals_server(&stack, &agent);

    // Kills while following the log: many small transactions of updates,
    // inserts and deletes (with cascades).
    for round in 0..40 {
        stack.sql(&format!(
            "UPDATE learning_content SET translation = translation || ' r{round}'
               WHERE id % 40 = {round};
             UPDATE rankings SET rank_score = ((id + {round}) % 501) / 100.0 WHERE id % 40 = {round};
             DELETE FROM content_fragments WHERE id = {round} * 20 + 3;
             INSERT INTO content_fragments (learning_content_id, native_text, body_text, fragment_type)
               VALUES ({round} + 1, 'ใหม่ {round}', 'new', 'word');"
        ));
    }
    crash_mid_page(&agent, 2);
    for progress in [1, 100] {
        if kill_after_change(&agent, progress) {
            kills_mid_pull += 1;
        }
    }
    crash_mid_page(&agent, 5);
    let last = agent.run_json(&["pull", "--page-size", "7"]);
    assert_eq!(last["snapshot"], false, "{last}");
    assert_mirror_equals_server(&stack, &agent);
    assert!(
        kills_mid_pull >= 3,
        "only {kills_mid_pull} of the kills hit a running pull: the test proves too little"
    );
}

/// Runs a pull that aborts inside its `nth` page transaction, after the
/// rows and the cursor were written and before the commit.
fn crash_mid_page(agent: &Agent, nth: u32) {
    let out = agent
        .command(&["--quiet", "pull", "--page-size", "7"])
        .env(
            local_agent::store::FAILPOINT_ENV,
            format!("apply-page:{nth}"),
        )
        .output()
        .expect("running local-agent");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(6),
        "the pull should have aborted in page {nth}: {out:?}"
    );
}

/// Starts a pull with small pages and SIGKILLs it once the mirror has
/// grown by `progress` rows. Returns whether it was still running.
fn kill_after(agent: &Agent, progress: i64) -> bool {
    let before = if agent.db().exists() {
        mirror_total(agent)
    } else {
        0
    };
    let mut child = agent
        .command(&["--quiet", "pull", "--page-size", "7"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting local-agent");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().expect("polling the child").is_some() {
            return false;
        }
        if agent.db().exists() && mirror_total(agent) >= before + progress {
            break;
        }
        assert!(Instant::now() < deadline, "the pull made no progress");
        std::thread::sleep(Duration::from_millis(2));
    }
    // std's kill is SIGKILL on Unix: no destructor, no rollback handler.
    let running = child.try_wait().expect("polling the child").is_none();
    child.kill().expect("killing local-agent");
    child.wait().expect("reaping local-agent");
    running
}

/// Like [`kill_after`], for the log phase: progress is measured by the
/// pages applied (the row count barely moves when rows are updated).
fn kill_after_change(agent: &Agent, pages: u32) -> bool {
    let last_pull = || -> Option<String> {
        agent
            .mirror()
            .query_row("SELECT last_pull_at FROM sync_state", [], |r| r.get(0))
            .ok()
            .flatten()
    };
    let mut seen = last_pull();
    let mut child = agent
        .command(&["--quiet", "pull", "--page-size", "3"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting local-agent");
    let mut applied = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while applied < pages {
        if child.try_wait().expect("polling the child").is_some() {
            return false;
        }
        let now = last_pull();
        if now != seen {
            applied += 1;
            seen = now;
        }
        assert!(Instant::now() < deadline, "the pull made no progress");
        std::thread::sleep(Duration::from_millis(1));
    }
    let running = child.try_wait().expect("polling the child").is_none();
    child.kill().expect("killing local-agent");
    child.wait().expect("reaping local-agent");
    running
}

#[test]
fn a_log_pruned_past_the_cursor_triggers_a_resnapshot_that_ends_equal() {
    let _serial = support::serial();
    let stack = Stack::start();
    seed(&stack, 40);
    let agent = Agent::new(&stack);
    agent.run_json(&["pull", "--page-size", "50"]);
    assert_mirror_equals_server(&stack, &agent);

    // Changes the agent has not seen, then the log pruned past its cursor:
    // the deletes are no longer in the log, only the snapshot can tell.
    stack.sql(
        "DELETE FROM learning_content WHERE id IN (3, 4, 5);
         UPDATE content_fragments SET body_text = 'changed' WHERE id % 5 = 0;
         INSERT INTO learning_content (title, content_type, native_text, translation, ipa)
           VALUES ('ใหม่', 'phrase', 'น้ำ', 'water', 'náːm');",
    );
    let pruned = stack.query_i64("SELECT prune_change_log(interval '0 seconds')");
    assert!(pruned > 0, "nothing was pruned");

    let report = agent.run_json(&["pull", "--page-size", "50"]);
    assert_eq!(report["cursor_expired"], 1, "{report}");
    assert_eq!(report["snapshot"], true);
    assert!(report["swept"].as_u64().unwrap() > 0, "{report}");
    assert_mirror_equals_server(&stack, &agent);

    // And the next pull follows the log again.
    stack.sql("UPDATE learning_content SET title = 'อีกครั้ง' WHERE id = 1;");
    let next = agent.run_json(&["pull"]);
    assert_eq!(
        (next["snapshot"].as_bool(), next["upserts"].as_u64()),
        (Some(false), Some(1))
    );
    assert_mirror_equals_server(&stack, &agent);
}

#[test]
fn pointed_at_another_server_the_mirror_follows_it() {
    let _serial = support::serial();
    let first = Stack::start();
    seed(&first, 10);
    let second = Stack::start();
    seed(&second, 4);
    second.sql("UPDATE learning_content SET title = 'ที่สอง' WHERE id = 1;");
    let mut agent = Agent::new(&first);
    agent.run_json(&["pull"]);
    assert_mirror_equals_server(&first, &agent);
    // The first server's cursor means nothing to the second one.
    agent.api_url = second.api_url.clone();
    agent.token = second.token("anon");
    let report = agent.run_json(&["pull"]);
    assert_eq!(report["snapshot"], true, "{report}");
    assert_mirror_equals_server(&second, &agent);
}

#[test]
fn pulled_texts_are_embedded_and_found_again() {
    let _serial = support::serial();
    let stack = Stack::start();
    seed(&stack, 20);
    stack.sql(
        "INSERT INTO learning_content (title, content_type, native_text, translation, ipa)
         VALUES ('ห้องน้ำ', 'phrase', 'ห้องน้ำอยู่ที่ไหนครับ', 'where is the toilet', '');",
    );
    let agent = Agent::new(&stack);
    agent.run_json(&["pull"]);
    let embedded = agent.run_json(&["embed"]);
    assert_eq!(embedded["embedded"], 21 + 60, "{embedded}");
    let hits = agent.run_json(&["search", "ห้องน้ำอยู่ที่ไหน", "--kind", "content", "--k", "3"]);
    assert_eq!(hits[0]["native_text"], "ห้องน้ำอยู่ที่ไหนครับ", "{hits}");
    assert_eq!(hits.as_array().unwrap().len(), 3);

    // A deleted row's vector goes with it; an edited text is re-embedded.
    stack.sql(
        "DELETE FROM learning_content WHERE title = 'ห้องน้ำ';
         UPDATE content_fragments SET native_text = 'แก้ไขแล้ว' WHERE id = 1;",
    );
    agent.run_json(&["pull"]);
    let again = agent.run_json(&["embed"]);
    assert_eq!(again["embedded"], 1, "{again}");
    let status = agent.run_json(&["status"]);
    let vectors: i64 = status["mirror"]["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["count"].as_i64().unwrap())
        .sum();
    assert_eq!(vectors, 20 + 60);
}

#[test]
fn a_database_outage_is_ridden_out_with_backoff() {
    let _serial = support::serial();
    // While its database is down the API answers 503 with Retry-After; the
    // agent waits as asked and finishes once the database is back, with
    // nothing lost or doubled.
    let mut stack = Stack::start_isolated();
    seed(&stack, 5);
    let agent = Agent::new(&stack);
    agent.run_json(&["pull"]);
    stack.sql("UPDATE learning_content SET title = 'ระหว่างหยุด' WHERE id = 2;");
    stack.stop_database();
    let child = agent
        .command(&["--json", "pull", "--tries", "10"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting local-agent");
    std::thread::sleep(Duration::from_secs(4));
    stack.restart_database();
    let out = child.wait_with_output().expect("waiting for local-agent");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("503") && stderr.contains("attempt 2 of 10"),
        "{stderr}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["upserts"], 1, "{report}");
    assert_mirror_equals_server(&stack, &agent);

    // Down for longer than the agent waits: a clear failure, non-zero exit,
    // and the next run (database back) completes.
    stack.sql("UPDATE learning_content SET title = 'อีกที' WHERE id = 3;");
    stack.stop_database();
    let out = agent.run(&["pull", "--tries", "2"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("kept failing (503") && stderr.contains("run it again"),
        "{stderr}"
    );
    stack.restart_database();
    agent.run_json(&["pull"]);
    assert_mirror_equals_server(&stack, &agent);
}

#[test]
fn pull_suggests_embed_only_when_contents_or_fragments_changed() {
    let _serial = support::serial();
    let stack = Stack::start();
    seed(&stack, 2);
    let agent = Agent::new(&stack);
    let said = |out: std::process::Output| -> String {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let embed = "Next: `local-agent embed`";
    let first = said(agent.run(&["pull"]));
    assert!(first.contains(embed), "{first}");

    // Only an asset and a ranking change: nothing for `embed` to index.
    let fragment = stack.query_i64("SELECT min(id)::bigint FROM content_fragments");
    let asset = stack.upload(fragment, b"ID3 more audio");
    stack.create(
        "/api/rankings",
        json!({"fragment_id": fragment, "asset_id": asset, "rank_score": "3.50",
               "assessed_by": "nok"}),
    );
    stack.sql(
        "UPDATE rankings SET assessment_notes = 'ชัด' WHERE id = (SELECT min(id) FROM rankings)",
    );
    let media = said(agent.run(&["pull"]));
    assert!(media.contains("rows added or updated"), "{media}");
    assert!(!media.contains("embed"), "{media}");

    // A fragment's text changes: now there is.
    let (status, body) = stack.call(
        "PATCH",
        &format!("/api/fragments/{fragment}"),
        Some(json!({"body_text": "hello there"})),
    );
    assert_eq!(status, 200, "{body}");
    let text = said(agent.run(&["pull"]));
    assert!(text.contains(embed), "{text}");
    let json = agent.run_json(&["pull"]);
    assert_eq!(json["text_upserts"], 0, "{json}");
}
