//! `local-agent anki push` and `sync` end to end: the real API over a
//! throwaway PostgreSQL for the content, the binary as the user runs it,
//! and a double of AnkiConnect speaking its wire protocol over HTTP.

mod anki_double;
mod support;

use std::time::Instant;

use anki_double::AnkiDouble;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{Agent, Stack, pull_until, seed};

const MODEL: &str = "Thai Content (local-agent)";

fn push(agent: &Agent, anki: &AnkiDouble) -> Value {
    agent.run_json(&["anki", "push", "--anki-url", &anki.url])
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn cards(agent: &Agent, sql_where: &str) -> Vec<(Option<i64>, String, Option<i64>)> {
    let conn = agent.mirror();
    let mut stmt = conn
        .prepare(&format!(
            "SELECT fragment_id, sync_status, anki_note_id FROM anki_cards WHERE {sql_where} ORDER BY id"
        ))
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// A fragment's native text and body text in the mirror.
fn fragment_text(agent: &Agent, id: i64) -> (String, String) {
    agent
        .mirror()
        .query_row(
            "SELECT native_text, body_text FROM content_fragments WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
}

/// Two contents, six fragments, audio on fragments 2, 4 and 6; fragment 2
/// gets a second, better-ranked asset.
fn setup() -> (Stack, Agent, AnkiDouble, Vec<u8>) {
    let stack = Stack::start();
    seed(&stack, 2);
    let better = b"better audio of fragment 2".to_vec();
    let asset = stack.upload(2, &better);
    stack.sql(&format!(
        "INSERT INTO rankings (fragment_id, asset_id, rank_score, assessed_by)
         VALUES (2, {asset}, 4.50, 'nok'), (2, {asset}, 4.00, 'ploy')"
    ));
    let agent = Agent::new(&stack);
    pull_until(
        &agent,
        &format!("SELECT count(*) = 2 FROM rankings WHERE asset_id = {asset}"),
    );
    (stack, agent, AnkiDouble::start(), better)
}

#[test]
fn first_push_creates_the_notes_and_a_second_push_sends_nothing() {
    let (_stack, agent, anki, better) = setup();
    let report = push(&agent, &anki);
    assert_eq!(report["added"], 8, "{report}"); // 2 contents + 6 fragments
    assert_eq!(report["failed"], json!([]));
    {
        let s = anki.state();
        assert!(s.decks.contains_key("Thai"));
        assert_eq!(
            s.models[MODEL],
            ["Key", "NativeText", "Translation", "IPA", "Audio", "Extra"]
        );
        let templates = s.templates[MODEL]["cardTemplates"].to_string();
        assert!(templates.contains("{{Audio}}") && templates.contains("class=\\\"thai\\\""));
        assert_eq!(s.notes.len(), 8);
    }
    let f2 = anki.note("fragment:2").expect("fragment 2's note");
    assert_eq!(f2.model, MODEL);
    assert_eq!(f2.deck, "Thai");
    let (native, body) = fragment_text(&agent, 2);
    assert!(native.starts_with("ประโยค "));
    assert_eq!(f2.field("NativeText"), native);
    assert_eq!(f2.field("Translation"), body);
    assert!(
        f2.tags.contains(&"thai-content".to_owned()),
        "{:?}",
        f2.tags
    );
    // The best-ranked asset's bytes, under a name made of their digest.
    let name = format!("thai-content-{}.mp3", &sha(&better)[..16]);
    assert_eq!(f2.field("Audio"), format!("[sound:{name}]"));
    assert_eq!(anki.state().media_files()[&name], better);
    let f4 = anki.note("fragment:4").unwrap();
    let name4 = f4
        .field("Audio")
        .trim_start_matches("[sound:")
        .trim_end_matches(']');
    assert_eq!(anki.state().media_files()[name4], b"audio bytes of 4");
    assert_eq!(anki.note("fragment:1").unwrap().field("Audio"), "");
    let c1 = anki.note("content:1").unwrap();
    assert_eq!(c1.field("Translation"), "hello 1");
    assert_eq!(c1.field("Extra"), "บทที่ 1");
    // Recorded: note id, deck, note type, fields, their hash, synced.
    let conn = agent.mirror();
    let (note_id, deck, note_type, fields, hash, status): (
        i64,
        String,
        String,
        String,
        String,
        String,
    ) = conn
        .query_row(
            "SELECT anki_note_id, deck_name, note_type, fields, content_hash, sync_status
             FROM anki_cards WHERE fragment_id = 2",
            [],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            },
        )
        .unwrap();
    assert_eq!(note_id, f2.id);
    assert_eq!(
        (deck.as_str(), note_type.as_str(), status.as_str()),
        ("Thai", MODEL, "synced")
    );
    assert_eq!(hash, sha(fields.as_bytes()));
    println!("rendered note fragment:2: {fields}");

    let before = anki.requests();
    let again = push(&agent, &anki);
    assert_eq!(again["unchanged"], 8, "{again}");
    assert_eq!(again["added"], 0);
    assert_eq!(anki.requests(), before, "an unchanged push sends nothing");
}

#[test]
fn edits_and_better_audio_update_exactly_their_notes_in_place() {
    let (stack, agent, anki, _) = setup();
    push(&agent, &anki);
    let f1 = anki.note("fragment:1").unwrap();
    let f4 = anki.note("fragment:4").unwrap();
    let notes_before = anki.state().notes.len();

    stack.sql("UPDATE content_fragments SET body_text = 'thank you very much' WHERE id = 1");
    let best = b"a much better voice for fragment 4".to_vec();
    let asset = stack.upload(4, &best);
    stack.sql(&format!(
        "INSERT INTO rankings (fragment_id, asset_id, rank_score, assessed_by)
         VALUES (4, {asset}, 5.00, 'nok')"
    ));
    pull_until(
        &agent,
        &format!(
            "SELECT EXISTS (SELECT 1 FROM rankings WHERE asset_id = {asset})
                AND EXISTS (SELECT 1 FROM content_fragments WHERE id = 1 AND body_text = 'thank you very much')"
        ),
    );
    let updates = anki.count("updateNoteFields");
    let report = push(&agent, &anki);
    assert_eq!(report["updated"], 2, "{report}");
    assert_eq!(report["added"], 0);
    assert_eq!(report["unchanged"], 6);
    assert_eq!(anki.count("updateNoteFields") - updates, 2);
    assert_eq!(anki.state().notes.len(), notes_before, "no duplicate");
    let f1_after = anki.note("fragment:1").unwrap();
    assert_eq!(f1_after.id, f1.id);
    assert_eq!(f1_after.field("Translation"), "thank you very much");
    let f4_after = anki.note("fragment:4").unwrap();
    assert_eq!(f4_after.id, f4.id);
    let name = format!("thai-content-{}.mp3", &sha(&best)[..16]);
    assert_eq!(f4_after.field("Audio"), format!("[sound:{name}]"));
    assert_eq!(anki.state().media_files()[&name], best);
}

#[test]
fn notes_deleted_in_anki_follow_the_rule_and_upstream_deletions_are_tagged() {
    let (stack, agent, anki, _) = setup();
    push(&agent, &anki);
    // The user deletes fragment 1's note; then its text changes upstream.
    let f1 = anki.note("fragment:1").unwrap();
    anki.delete(f1.id);
    stack.sql("UPDATE content_fragments SET body_text = 'edited' WHERE id = 1");
    pull_until(
        &agent,
        "SELECT EXISTS (SELECT 1 FROM content_fragments WHERE id = 1 AND body_text = 'edited')",
    );
    let report = push(&agent, &anki);
    assert_eq!(report["deleted_in_anki"], 1, "{report}");
    assert_eq!(report["added"], 0);
    assert!(anki.note("fragment:1").is_none(), "left alone by default");
    assert_eq!(cards(&agent, "fragment_id = 1")[0].1, "deleted_in_anki");
    let again = push(&agent, &anki);
    assert_eq!(again["added"], 0, "{again}");

    // With the rule set to re-create, it comes back (a new note).
    std::fs::write(
        agent.dir.path().join("config.toml"),
        "[anki]\ndeleted_in_anki = \"recreate\"\n",
    )
    .unwrap();
    let report = push(&agent, &anki);
    assert_eq!(report["recreated"], 1, "{report}");
    let back = anki.note("fragment:1").unwrap();
    assert_eq!(back.field("Translation"), "edited");
    assert_eq!(
        cards(&agent, "fragment_id = 1"),
        vec![(Some(1), "synced".into(), Some(back.id))]
    );

    // Content 2 is deleted upstream: its notes are tagged, not deleted.
    let notes = anki.state().notes.len();
    let (status, _) = stack.call("DELETE", "/api/content/2", None);
    assert_eq!(status, 204);
    pull_until(
        &agent,
        "SELECT NOT EXISTS (SELECT 1 FROM content_fragments WHERE learning_content_id = 2)
            AND NOT EXISTS (SELECT 1 FROM learning_content WHERE id = 2)",
    );
    let report = push(&agent, &anki);
    assert_eq!(report["tagged_deleted"], 4, "{report}"); // the content and 3 fragments
    assert_eq!(anki.state().notes.len(), notes);
    let c2 = anki.note("content:2").unwrap();
    assert!(c2.tags.contains(&"thai-content::deleted".to_owned()));
    assert!(
        !anki
            .note("content:1")
            .unwrap()
            .tags
            .contains(&"thai-content::deleted".to_owned())
    );
    let before = anki.requests();
    push(&agent, &anki);
    assert_eq!(anki.requests(), before, "tagged once");
}

#[test]
fn a_legacy_card_is_updated_not_duplicated() {
    let (_stack, agent, anki, _) = setup();
    // The old application's note, of its own note type, and its row as
    // the migration copied it.
    let legacy = anki.add_by_hand(
        "Thai Basic",
        "Thai::Words",
        &[
            ("Thai", "old text"),
            ("English", "old meaning"),
            ("Card", "x"),
        ],
    );
    agent
        .mirror()
        .execute(
            "INSERT INTO anki_cards (id, learning_content_id, fragment_id, anki_note_id, deck_name,
                 note_type, fields, content_hash, sync_status, last_synced_at, created_at)
             VALUES (1, 1, 3, ?1, 'Thai::Words', 'Thai Basic',
                     '{\"Thai\": \"old text\", \"English\": \"old meaning\", \"Card\": \"x\"}',
                     'aaaa', 'synced', '2025-03-01 12:34:56', '2025-03-01 12:34:56')",
            [legacy],
        )
        .unwrap();
    let report = push(&agent, &anki);
    assert_eq!(report["updated"], 1, "{report}");
    assert_eq!(report["added"], 7);
    assert!(anki.note("fragment:3").is_none(), "not duplicated");
    let note = anki.state().notes[&legacy].clone();
    let (native, body) = fragment_text(&agent, 3);
    assert_eq!(note.field("Thai"), native);
    assert_eq!(note.field("English"), body);
    assert_eq!(note.field("Card"), "x", "fields we do not know stay");
    assert_eq!(
        cards(&agent, "fragment_id = 3"),
        vec![(Some(3), "synced".into(), Some(legacy))]
    );
    let before = anki.requests();
    push(&agent, &anki);
    assert_eq!(anki.requests(), before);
}

#[test]
fn anki_down_is_a_clear_error_and_nothing_is_recorded() {
    let (_stack, agent, _anki, _) = setup();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let out = agent.run(&["anki", "push", "--anki-url", &closed]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Anki is not running")
            && stderr.contains("start Anki with the AnkiConnect add-on"),
        "{stderr}"
    );
    assert!(cards(&agent, "1 = 1").is_empty());
    // sync fails the same way, after pulling and embedding.
    let out = agent.run(&["sync", "--anki-url", &closed]);
    assert_eq!(out.status.code(), Some(1));
    assert!(cards(&agent, "1 = 1").is_empty());
}

#[test]
fn an_anki_that_never_answers_times_out_and_names_the_setting() {
    let (_stack, agent, _anki, _) = setup();
    let url = format!("http://{}", support::silent_server());
    let out = agent
        .command(&["anki", "push", "--anki-url", &url])
        .env("THAI_AGENT_ANKI_TIMEOUT", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&url), "names Anki's address: {stderr}");
    assert!(stderr.contains("did not answer within 1 s"), "{stderr}");
    assert!(
        stderr.contains("THAI_AGENT_ANKI_TIMEOUT"),
        "names the setting: {stderr}"
    );
    assert!(cards(&agent, "1 = 1").is_empty(), "nothing is recorded");
}

#[test]
fn the_double_answers_both_wire_versions_and_an_old_addon_is_refused() {
    let anki = AnkiDouble::start();
    let post = |body: Value| -> Value {
        let mut response = ureq::post(&anki.url).send_json(&body).unwrap();
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap()
    };
    assert_eq!(post(json!({"action": "version"})), json!(6));
    assert_eq!(
        post(json!({"action": "version", "version": 6})),
        json!({"result": 6, "error": null})
    );
    assert_eq!(
        post(json!({"action": "nope", "version": 6})),
        json!({"result": null, "error": "unsupported action"})
    );
    assert_eq!(
        post(json!({"action": "notesInfo", "version": 6, "params": {"notes": [42]}})),
        json!({"result": [{}], "error": null})
    );
    assert_eq!(
        post(json!({"action": "storeMediaFile", "version": 6, "params": {"filename": "a.mp3"}})),
        json!({"result": null, "error": "You must provide a \"data\", \"path\", or \"url\" field."})
    );

    let (_stack, agent, _, _) = setup();
    anki.state().old_addon = true;
    let out = agent.run(&["anki", "push", "--anki-url", &anki.url]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("without the version-6 envelope"),
        "{stderr}"
    );
    assert!(cards(&agent, "1 = 1").is_empty());
}

#[test]
fn one_refused_note_is_reported_and_the_others_sync_then_it_is_retried() {
    let (_stack, agent, anki, _) = setup();
    let agent_push = || agent.run(&["--json", "anki", "push", "--anki-url", &anki.url]);
    // Create the note type the way the agent would, then the clash: two
    // notes of our type with fragment 5's key (made by hand), so that
    // Anki refuses ours and none of them can be taken over.
    let first = agent_push();
    assert!(first.status.success());
    let f5 = anki.note("fragment:5").unwrap();
    anki.delete(f5.id);
    agent
        .mirror()
        .execute("DELETE FROM anki_cards WHERE fragment_id = 5", [])
        .unwrap();
    let clash = [("Key", "fragment:5"), ("NativeText", "mine")];
    let one = anki.add_by_hand(MODEL, "Thai", &clash);
    let other = anki.add_by_hand(MODEL, "Thai", &clash);

    let out = agent_push();
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["failed"][0]["key"], "fragment:5", "{report}");
    let error = report["failed"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("cannot create note because it is a duplicate")
            && error.contains("Anki has 2 notes")
            && error.contains("keep one"),
        "{error}"
    );
    assert_eq!(cards(&agent, "fragment_id = 5")[0].1, "error");
    assert_eq!(anki.state().notes[&one].field("NativeText"), "mine");

    // The user removes one: the next push takes the other over.
    anki.delete(other);
    let report = push(&agent, &anki);
    assert_eq!(report["adopted"], 1, "{report}");
    assert_eq!(report["added"], 0, "{report}");
    assert_eq!(
        cards(&agent, "fragment_id = 5"),
        vec![(Some(5), "synced".into(), Some(one))]
    );
    let (native, _) = fragment_text(&agent, 5);
    assert_eq!(anki.state().notes[&one].field("NativeText"), native);
}

#[test]
fn a_note_added_before_its_answer_was_lost_is_taken_over_not_duplicated() {
    let (_stack, agent, anki, _) = setup();
    push(&agent, &anki);
    let f4 = anki.note("fragment:4").unwrap();
    // As after a push whose addNote Anki carried out but whose answer never
    // came: the note is in Anki, the store knows nothing of it.
    agent
        .mirror()
        .execute("DELETE FROM anki_cards WHERE fragment_id = 4", [])
        .unwrap();
    let report = push(&agent, &anki);
    assert_eq!(report["adopted"], 1, "{report}");
    assert_eq!(report["added"], 0, "{report}");
    assert_eq!(report["failed"], json!([]));
    assert_eq!(anki.state().notes.len(), 8, "no second note");
    assert_eq!(
        cards(&agent, "fragment_id = 4"),
        vec![(Some(4), "synced".into(), Some(f4.id))]
    );
}

#[test]
fn cards_anki_puts_in_another_deck_are_moved_into_the_one_asked_for() {
    let (_stack, agent, anki, _) = setup();
    // The add-on on Anki 26 puts every added card in Default.
    anki.state().ignore_deck = true;
    let report = push(&agent, &anki);
    assert_eq!(report["added"], 8, "{report}");
    assert_eq!(report["moved_to_deck"], 16, "two cards a note: {report}");
    let s = anki.state();
    let decks: Vec<&str> = s.notes.values().map(|n| n.deck.as_str()).collect();
    assert!(decks.iter().all(|d| *d == "Thai"), "{decks:?}");
    assert_eq!(s.actions.iter().filter(|a| *a == "changeDeck").count(), 1);
    drop(s);
    // A note the learner moves afterwards stays where they put it.
    anki.state().ignore_deck = false;
    let f2 = anki.note("fragment:2").unwrap();
    anki.state().notes.get_mut(&f2.id).unwrap().deck = "Mine".into();
    agent
        .mirror()
        .execute(
            "UPDATE anki_cards SET content_hash = 'changed' WHERE fragment_id = 2",
            [],
        )
        .unwrap();
    let report = push(&agent, &anki);
    assert_eq!(report["updated"], 1, "{report}");
    assert_eq!(report["moved_to_deck"], 0, "{report}");
    assert_eq!(anki.note("fragment:2").unwrap().deck, "Mine");
}

#[test]
fn legacy_cards_of_another_profile_are_created_anew_and_deleted_ones_follow_the_rule() {
    let (_stack, agent, anki, _) = setup();
    // Two legacy rows: fragment 3's note type does not exist in this
    // profile (the learner's new computer); fragment 4's type exists but
    // its note was deleted here.
    anki.add_by_hand(
        "Thai Basic",
        "Thai::Words",
        &[("Thai", "kept"), ("English", "x")],
    );
    agent
        .mirror()
        .execute_batch(
            "INSERT INTO anki_cards (id, learning_content_id, fragment_id, anki_note_id, deck_name,
                 note_type, fields, content_hash, sync_status)
             VALUES (1, 1, 3, 1500000000001, 'Thai::Words', 'Thai Vocabulary (old app)',
                     '{\"Front\": \"a\", \"Back\": \"b\"}', 'aaaa', 'synced'),
                    (2, 1, 4, 1500000000002, 'Thai::Words', 'Thai Basic',
                     '{\"Thai\": \"a\", \"English\": \"b\"}', 'bbbb', 'synced')",
        )
        .unwrap();
    let out = agent.run(&["anki", "push", "--anki-url", &anki.url]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(
            "1 card(s) of the old application point at notes of type Thai Vocabulary (old app) \
             that this Anki profile does not have"
        ) && stdout.contains("they were created anew in Thai"),
        "{stdout}"
    );
    assert!(
        stdout.contains("1 note(s) were deleted in Anki"),
        "{stdout}"
    );
    let f3 = anki.note("fragment:3").expect("fragment 3 created anew");
    assert_eq!(f3.model, MODEL);
    assert_eq!(f3.deck, "Thai");
    let (native, _) = fragment_text(&agent, 3);
    assert_eq!(f3.field("NativeText"), native);
    assert_eq!(
        cards(&agent, "id IN (1, 2)"),
        vec![
            (Some(3), "synced".into(), Some(f3.id)),
            (Some(4), "deleted_in_anki".into(), Some(1500000000002)),
        ]
    );
    assert!(
        anki.note("fragment:4").is_none(),
        "the rule leaves it deleted"
    );
    let report = push(&agent, &anki);
    assert_eq!(report["legacy_recreated"], 0, "{report}");
    assert_eq!(report["added"], 0, "{report}");
}

/// Thirteen sounds on fragments of their own besides setup()'s three:
/// twelve of 200 KB and one of 1.5 MB.
fn thirteen_sounds(stack: &Stack, agent: &Agent) {
    let mut sizes = vec![200_000usize; 12];
    sizes.push(1_500_000);
    for (i, size) in sizes.iter().enumerate() {
        let bytes: Vec<u8> = (0..*size).map(|b| (b * 31 + i * 7) as u8).collect();
        // Each on a fragment of its own, so that every one is played.
        let id = 100 + i as i64;
        stack.sql(&format!(
            "INSERT INTO content_fragments (id, learning_content_id, native_text, body_text, fragment_type)
             VALUES ({id}, 1, 'extra {i}', 'extra', 'sentence')"
        ));
        stack.upload(id, &bytes);
    }
    pull_until(
        agent,
        "SELECT count(*) = 13 FROM fragment_assets WHERE fragment_id >= 100",
    );
}

/// Anki's media as the test sees it: every sound's exact bytes, each under
/// the name made of the digest the server gave its asset.
fn assert_named_by_digest(media: &std::collections::BTreeMap<String, Vec<u8>>) {
    for (name, bytes) in media {
        let digest = sha(bytes);
        assert!(
            name.starts_with(&format!("thai-content-{}.", &digest[..16])),
            "{name} holds bytes of digest {digest}"
        );
    }
}

#[test]
fn an_anki_on_this_computer_gets_the_sound_files_written_into_its_media_folder() {
    let (stack, agent, anki, _) = setup();
    thirteen_sounds(&stack, &agent);
    let report = push(&agent, &anki);
    assert_eq!(report["failed"], json!([]), "{report}");
    assert_eq!(report["media_stored"], 16, "{report}"); // 3 of setup() + 13
    assert_eq!(report["media_into_folder"], 16, "{report}");
    assert_eq!(anki.count("storeMediaFile"), 0);
    // Requests carry no bytes: even the 1.5 MB file's travel none.
    let sizes = anki.state().request_bytes.clone();
    assert!(sizes.iter().all(|b| *b < 64 * 1024), "{sizes:?}");
    // The folder holds the 16 files, whole, and nothing else (no
    // temporary file left behind).
    let dir = anki.state().media_dir.clone().unwrap();
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 16, "{names:?}");
    let media = anki.state().media_files();
    assert_eq!(media.len(), 16);
    assert_named_by_digest(&media);
    // A second push finds them there and sends nothing.
    agent
        .mirror()
        .execute("UPDATE anki_cards SET content_hash = 'changed'", [])
        .unwrap();
    let report = push(&agent, &anki);
    assert_eq!(report["media_stored"], 0, "{report}");
    assert_eq!(report["media_present"], 16, "{report}");
}

#[test]
fn a_folder_anki_names_but_does_not_list_gets_one_file_taken_back_and_the_rest_go_as_data() {
    // Anki on another computer behind a tunnel to localhost names its own
    // folder; this computer happens to have one under the same path.
    let (stack, agent, anki, _) = setup();
    let lookalike = tempfile::tempdir().unwrap();
    anki.state().claimed_media_dir = Some(lookalike.path().to_owned());
    thirteen_sounds(&stack, &agent);
    let report = push(&agent, &anki);
    assert_eq!(report["failed"], json!([]), "{report}");
    assert_eq!(report["media_stored"], 16, "{report}");
    assert_eq!(report["media_into_folder"], 0, "{report}");
    assert_eq!(anki.state().media_carriers, vec!["data"; 16]);
    // The file written to find out was taken back.
    assert_eq!(std::fs::read_dir(lookalike.path()).unwrap().count(), 0);
    let media = anki.state().media_files();
    assert_eq!(media.len(), 16);
    assert_named_by_digest(&media);
}

#[test]
fn sound_files_go_as_data_in_small_requests_and_only_once_when_anki_names_no_folder_here() {
    let (stack, agent, anki, _) = setup();
    anki.state().claimed_media_dir = Some("/nonexistent/Anki2/User 1/collection.media".into());
    thirteen_sounds(&stack, &agent);
    let report = push(&agent, &anki);
    assert_eq!(report["failed"], json!([]), "{report}");
    assert_eq!(report["media_stored"], 16, "{report}"); // 3 of setup() + 13
    assert_eq!(report["media_into_folder"], 0, "{report}");
    let limit = 512 * 1024;
    let sizes = anki.state().request_bytes.clone();
    let over: Vec<usize> = sizes.iter().copied().filter(|b| *b > limit).collect();
    // Only the 1.5 MB file (2 MB as base64) travels alone above the limit.
    assert_eq!(over.len(), 1, "{sizes:?}");
    assert!(over[0] > 2_000_000 && over[0] < 2_100_000, "{over:?}");
    assert_eq!(anki.state().media_carriers, vec!["data"; 16]);
    // Media Anki has already is not sent again, even for changed notes.
    agent
        .mirror()
        .execute("UPDATE anki_cards SET content_hash = 'changed'", [])
        .unwrap();
    let report = push(&agent, &anki);
    assert_eq!(report["media_stored"], 0, "{report}");
    assert_eq!(report["media_present"], 16, "{report}");
    assert_eq!(anki.count("storeMediaFile"), 16);
}

#[test]
fn an_anki_that_closes_the_connection_mid_request_is_named_and_nothing_is_recorded() {
    let (_stack, agent, _anki, _) = setup();
    // Reads each request, then closes without answering: Anki quitting.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut buf = [0u8; 4096];
            let _ = std::io::Read::read(&mut stream, &mut buf);
            drop(stream);
        }
    });
    let out = agent.run(&["anki", "push", "--anki-url", &url]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("closed the connection before answering") && stderr.contains("Start Anki"),
        "{stderr}"
    );
    assert!(!stderr.contains("not running"), "{stderr}");
    assert!(cards(&agent, "1 = 1").is_empty(), "nothing is recorded");
}

#[test]
fn sync_pulls_embeds_and_pushes() {
    let stack = Stack::start();
    seed(&stack, 1);
    let agent = Agent::new(&stack);
    let anki = AnkiDouble::start();
    let report = agent.run_json(&["sync", "--anki-url", &anki.url]);
    assert!(report["pull"]["upserts"].as_i64().unwrap() > 0, "{report}");
    assert_eq!(report["embed"]["embedded"], 4);
    assert_eq!(report["anki"]["added"], 4);
}

#[test]
fn pushing_a_thousand_notes() {
    let stack = Stack::start();
    seed(&stack, 250); // 250 contents + 750 fragments, 375 with audio
    let agent = Agent::new(&stack);
    pull_until(
        &agent,
        "SELECT (SELECT count(*) FROM learning_content) + (SELECT count(*) FROM content_fragments)
                + (SELECT count(*) FROM rankings) = 1375",
    );
    let anki = AnkiDouble::start();
    let started = Instant::now();
    let report = push(&agent, &anki);
    let first = started.elapsed();
    assert_eq!(report["added"], 1000, "{report}");
    let started = Instant::now();
    let again = push(&agent, &anki);
    let second = started.elapsed();
    assert_eq!(again["unchanged"], 1000);
    println!(
        "1,000 notes to the double: first push {:.2}s ({} requests), unchanged push {:.3}s",
        first.as_secs_f64(),
        anki.requests(),
        second.as_secs_f64()
    );
}
