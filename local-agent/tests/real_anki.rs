//! `local-agent anki push` against the real Anki desktop with the real
//! AnkiConnect add-on: what the double of `anki.rs` cannot show (how the
//! add-on reads requests, where it puts cards, what a quit Anki does to a
//! push). Every check reads the collection itself: notes, fields, the deck
//! of every card, the sound files' bytes by sha256.
//!
//! Anki is started by the script that `ANKI_RUN` names, which must start
//! Anki headless with AnkiConnect on `ANKICONNECT_PORT`, keep its profile
//! under `ANKI_BASE` (`ANKI_FRESH=1`: empty), print Anki's pid, and have a
//! `stop-anki.sh` beside it (the interface of the team's `run-anki.sh`).
//! The tests are ignored without it; `cargo xtask test` runs them when
//! `ANKI_RUN` is set and says `real Anki: NOT RUN` otherwise. By hand:
//! `ANKI_RUN=/path/run-anki.sh cargo test -p local-agent --test real_anki -- --ignored --test-threads 1`.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::anki_desktop::{ALL_NOTES, RealAnki, assert_collection_matches};
use support::{Agent, Stack, pull_until};

/// A learner's content at a realistic size: `contents` texts of five
/// fragments each; audio of 20–120 KB (a TTS sentence as mp3) on
/// `audio` fragments, ranked.
fn seed(stack: &Stack, contents: i64, audio: i64) {
    stack.sql(&format!(
        "INSERT INTO learning_content (title, content_type, language, native_text, translation, ipa,
                                       difficulty_level, tags)
         SELECT 'บทที่ ' || g, CASE WHEN g % 3 = 0 THEN 'story' ELSE 'phrase' END, 'thai',
                repeat('วันนี้อากาศดีมาก เราไปตลาดกันไหม ', 1 + g % 4) || g,
                repeat('The weather is nice today; shall we go to the market? ', 1 + g % 4),
                'wan.níː ʔaː.kàːt diː mâːk', 1 + g % 5, jsonb_build_array('lesson' || (g % 12))
         FROM generate_series(1, {contents}) g;
         INSERT INTO content_fragments (learning_content_id, native_text, body_text, ipa, extra,
                                        fragment_type)
         SELECT c.id, 'ประโยคที่ ' || k || ' ของบทที่ ' || c.id, 'sentence ' || k || ' of ' || c.id,
                'prà.jòːk', CASE WHEN k = 1 THEN 'first' END, 'sentence'
         FROM learning_content c, generate_series(1, 5) k;
         INSERT INTO fragment_assets (fragment_id, asset_type, asset_data, asset_metadata,
                                      content_type, created_by)
         SELECT f.id, 'audio',
                decode('494433' || (SELECT string_agg(md5(f.id || ':' || s), '')
                                    FROM generate_series(1, (20000 + (f.id * 7919) % 100000) / 16) s),
                       'hex'),
                jsonb_build_object('voice', 'th-TH-Premwadee', 'format', 'mp3'), 'audio/mpeg', 'tts'
         FROM content_fragments f WHERE f.id <= {audio};
         INSERT INTO rankings (fragment_id, asset_id, rank_score, assessed_by)
         SELECT a.fragment_id, a.id, 3.50, 'nok' FROM fragment_assets a;"
    ));
}

fn push(agent: &Agent, anki: &RealAnki) -> (Value, f64) {
    let started = Instant::now();
    let out = agent
        .start(&["--json", "anki", "push", "--anki-url", &anki.url()])
        .finish(Duration::from_secs(600));
    let seconds = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "anki push failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        serde_json::from_str(&stdout).expect("the push's report"),
        seconds,
    )
}

#[test]
#[ignore = "needs the real Anki: set ANKI_RUN to its start script (cargo xtask test does)"]
fn a_learners_collection_from_the_first_push_to_a_restart() {
    let stack = Stack::start();
    // The size of a real learner's legacy file: 300 texts, 1,500
    // fragments, 1,257 sounds.
    seed(&stack, 300, 1257);
    let agent = Agent::new(&stack);
    pull_until(
        &agent,
        "SELECT (SELECT count(*) FROM content_fragments) = 1500
            AND (SELECT count(*) FROM rankings) = 1257",
    );
    let anki = RealAnki::start();

    // The first push.
    let (report, first) = push(&agent, &anki);
    assert_eq!(report["added"], 1800, "{report}");
    assert_eq!(report["failed"], json!([]), "{report}");
    assert_eq!(report["media_stored"], 1257, "{report}");
    // Anki runs on this computer: every sound was written into its media
    // folder (and the collection check below reads them through Anki).
    assert_eq!(report["media_into_folder"], 1257, "{report}");
    let media_mb = report["media_bytes"].as_f64().unwrap() / 1e6;
    println!(
        "first push: 1,800 notes and 1,257 sound files ({media_mb:.1} MB) in {first:.1}s; \
         {} cards moved into the deck",
        report["moved_to_deck"]
    );
    assert_collection_matches(&stack, &agent.mirror(), &anki);

    // Nothing new: nothing sent.
    let (report, unchanged) = push(&agent, &anki);
    assert_eq!(report["unchanged"], 1800, "{report}");
    assert_eq!(report["added"], 0, "{report}");
    assert_eq!(report["updated"], 0, "{report}");
    println!("unchanged push: {unchanged:.2}s");

    // Edits: updated in place, same note ids.
    let before = anki.notes(ALL_NOTES);
    stack.sql(
        "UPDATE content_fragments SET native_text = 'แก้แล้ว ' || id WHERE id IN (7, 8);
         UPDATE learning_content SET native_text = 'เรื่องใหม่' WHERE id = 2",
    );
    pull_until(
        &agent,
        "SELECT count(*) = 2 FROM content_fragments WHERE native_text LIKE 'แก้แล้ว %'",
    );
    let (report, _) = push(&agent, &anki);
    assert_eq!(report["updated"], 3, "{report}");
    assert_eq!(report["added"], 0, "{report}");
    let after = anki.notes(ALL_NOTES);
    for key in ["fragment:7", "fragment:8", "content:2"] {
        assert_eq!(
            after[key]["noteId"], before[key]["noteId"],
            "{key} in place"
        );
    }
    assert_eq!(
        after["fragment:7"]["fields"]["NativeText"]["value"],
        "แก้แล้ว 7"
    );

    // A better-ranked recording of fragment 9 replaces its sound.
    let better: Vec<u8> = (0..48_000u32).map(|i| (i * 131 % 251) as u8).collect();
    let asset = stack.upload(9, &better);
    stack.sql(&format!(
        "INSERT INTO rankings (fragment_id, asset_id, rank_score, assessed_by)
         VALUES (9, {asset}, 4.90, 'ploy')"
    ));
    pull_until(
        &agent,
        &format!("SELECT count(*) = 1 FROM rankings WHERE asset_id = {asset}"),
    );
    let (report, _) = push(&agent, &anki);
    assert_eq!(report["updated"], 1, "{report}");
    assert_eq!(report["media_stored"], 1, "{report}");
    let sha = hex::encode(Sha256::digest(&better));
    let name = format!("thai-content-{}.mp3", &sha[..16]);
    let f9 = &anki.notes("\"Key:fragment:9\"")["fragment:9"];
    assert_eq!(f9["fields"]["Audio"]["value"], format!("[sound:{name}]"));
    assert_eq!(anki.media_sha256(&name), Some(sha));

    // Deleted upstream: tagged, never deleted.
    let (status, _) = stack.call("DELETE", "/api/fragments/10", None);
    assert_eq!(status, 204);
    pull_until(
        &agent,
        "SELECT NOT EXISTS (SELECT 1 FROM content_fragments WHERE id = 10)",
    );
    let (report, _) = push(&agent, &anki);
    assert_eq!(report["tagged_deleted"], 1, "{report}");
    let f10 = &anki.notes("\"Key:fragment:10\"")["fragment:10"];
    assert!(
        f10["tags"]
            .as_array()
            .unwrap()
            .contains(&json!("thai-content::deleted")),
        "{f10}"
    );
    assert_collection_matches(&stack, &agent.mirror(), &anki);

    // Anki quits in the middle of a push of 600 new notes with sound.
    stack.sql(
        "INSERT INTO content_fragments (learning_content_id, native_text, body_text, fragment_type)
         SELECT 1 + g % 300, 'ประโยคใหม่ ' || g, 'new sentence ' || g, 'sentence'
         FROM generate_series(1, 600) g;
         INSERT INTO fragment_assets (fragment_id, asset_type, asset_data, content_type)
         SELECT f.id, 'audio', decode(repeat(md5(f.id::text), 2000), 'hex'), 'audio/mpeg'
         FROM content_fragments f WHERE f.native_text LIKE 'ประโยคใหม่ %'",
    );
    pull_until(&agent, "SELECT count(*) = 2099 FROM content_fragments");
    let count = || {
        anki.call("findNotes", json!({ "query": ALL_NOTES }))
            .as_array()
            .unwrap()
            .len()
    };
    let notes_before = count();
    assert_eq!(notes_before, 1800);
    let mut background = agent.start(&["anki", "push", "--anki-url", &anki.url()]);
    let deadline = Instant::now() + Duration::from_secs(300);
    while count() < notes_before + 100 {
        assert!(
            background.running(),
            "the push ended before Anki was stopped"
        );
        assert!(Instant::now() < deadline, "no new note in Anki");
        std::thread::sleep(Duration::from_millis(50));
    }
    anki.stop();
    let out = background.finish(Duration::from_secs(300));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("closed the connection before answering")
            || stderr.contains("closed its collection during the push")
            || stderr.contains("Anki is not running"),
        "{stderr}"
    );
    assert!(!stderr.contains("did not answer within"), "{stderr}");
    // Whatever the store recorded, the collection holds.
    anki.launch(false);
    let recorded: Vec<i64> = {
        let mirror = agent.mirror();
        let mut stmt = mirror
            .prepare("SELECT anki_note_id FROM anki_cards WHERE sync_status = 'synced'")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let infos = anki.call("notesInfo", json!({ "notes": recorded }));
    let missing = infos
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i.get("noteId").is_none())
        .count();
    assert_eq!(missing, 0, "every note recorded as synced exists in Anki");
    let recorded_new = agent
        .mirror()
        .query_row(
            "SELECT count(*) FROM anki_cards WHERE sync_status = 'synced' AND fragment_id > 1500",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap();
    println!("the stopped push had recorded {recorded_new} of the 600 new notes");
    let (report, resumed) = push(&agent, &anki);
    assert_eq!(report["failed"], json!([]), "{report}");
    println!(
        "after the restart: {} added, {} taken over, {} sound files already there, {resumed:.1}s",
        report["added"], report["adopted"], report["media_present"]
    );
    assert_eq!(
        report["added"].as_i64().unwrap() + report["adopted"].as_i64().unwrap(),
        600 - recorded_new,
        "{report}"
    );
    assert_collection_matches(&stack, &agent.mirror(), &anki);
}
