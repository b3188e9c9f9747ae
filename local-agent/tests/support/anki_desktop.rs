//! The real Anki desktop with the real AnkiConnect add-on, started by the
//! script `ANKI_RUN` names (the interface of the team's `run-anki.sh`:
//! AnkiConnect on `ANKICONNECT_PORT`, the profile under `ANKI_BASE`,
//! `ANKI_FRESH=1` for an empty one, Anki's pid on stdout, `stop-anki.sh`
//! beside it), and the checks that read the collection itself.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Stack, rt};

/// The variable naming the script that starts Anki.
pub const ANKI_RUN: &str = "ANKI_RUN";

pub const MODEL: &str = "Thai Content (local-agent)";
pub const ALL_NOTES: &str = "\"note:Thai Content (local-agent)\"";

/// A real Anki with its own profile, stopped on drop.
pub struct RealAnki {
    dir: tempfile::TempDir,
    script: PathBuf,
    port: u16,
}

impl RealAnki {
    pub fn start() -> RealAnki {
        let script = std::env::var_os(ANKI_RUN).map(PathBuf::from).expect(
            "ANKI_RUN must name the script that starts Anki with AnkiConnect (run-anki.sh); \
             `cargo xtask test` sets it when it finds one",
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let anki = RealAnki {
            dir: tempfile::tempdir().expect("a directory for Anki"),
            script,
            port,
        };
        anki.launch(true);
        anki
    }

    fn script(&self, name: &str) -> Command {
        let path = if name == "run" {
            self.script.clone()
        } else {
            self.script.with_file_name("stop-anki.sh")
        };
        let mut command = Command::new("bash");
        command
            .arg(path)
            .env("ANKI_PROBE_DIR", self.dir.path())
            .env("ANKI_BASE", self.dir.path().join("base"))
            .env("ANKI_STATE_DIR", self.dir.path().join("state"))
            .env("ANKICONNECT_PORT", self.port.to_string());
        // The Python environment with Anki is kept between runs: creating
        // it downloads Qt.
        let venv = std::env::var_os("ANKI_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("thai-agent-anki-venv"));
        command.env("ANKI_VENV", venv);
        // The wheels (Qt WebEngine among them) go into the venv once; a
        // second copy in pip's cache would only take disk.
        command.env("PIP_NO_CACHE_DIR", "1");
        command
    }

    pub fn launch(&self, fresh: bool) {
        let started = Instant::now();
        let out = self
            .script("run")
            .env("ANKI_FRESH", if fresh { "1" } else { "0" })
            .output()
            .expect("running the Anki start script");
        assert!(
            out.status.success(),
            "Anki did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        println!(
            "Anki started in {:.1}s (pid {})",
            started.elapsed().as_secs_f64(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }

    /// Closes Anki as the user would (the collection is saved).
    pub fn stop(&self) {
        let out = self.script("stop").output().expect("running stop-anki.sh");
        assert!(
            out.status.success(),
            "Anki did not stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn call(&self, action: &str, params: Value) -> Value {
        let mut response = ureq::post(&self.url())
            .send_json(json!({"action": action, "version": 6, "params": params}))
            .unwrap_or_else(|e| panic!("AnkiConnect {action}: {e}"));
        let reply: Value =
            serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
        assert_eq!(reply["error"], Value::Null, "{action}: {reply}");
        reply["result"].clone()
    }

    /// The notes the search finds, by their Key field.
    pub fn notes(&self, query: &str) -> BTreeMap<String, Value> {
        let ids = self.call("findNotes", json!({ "query": query }));
        let infos = self.call("notesInfo", json!({ "notes": ids }));
        let mut notes = BTreeMap::new();
        for info in infos.as_array().unwrap() {
            let key = info["fields"]["Key"]["value"].as_str().unwrap().to_owned();
            assert!(
                notes.insert(key.clone(), info.clone()).is_none(),
                "two notes with Key {key}"
            );
        }
        notes
    }

    /// The decks the cards of the search are in, with their card counts.
    pub fn decks(&self, query: &str) -> BTreeMap<String, usize> {
        let cards = self.call("findCards", json!({ "query": query }));
        let decks = self.call("getDecks", json!({ "cards": cards }));
        decks
            .as_object()
            .unwrap()
            .iter()
            .map(|(deck, cards)| (deck.clone(), cards.as_array().unwrap().len()))
            .collect()
    }

    /// sha256 of a media file's bytes, None when Anki lacks it.
    pub fn media_sha256(&self, name: &str) -> Option<String> {
        use base64::Engine;
        let data = self.call("retrieveMediaFile", json!({ "filename": name }));
        let data = data.as_str()?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap();
        Some(hex::encode(Sha256::digest(bytes)))
    }
}

impl Drop for RealAnki {
    fn drop(&mut self) {
        let _ = self.script("stop").output();
    }
}

/// Every note of the mirror is in Anki once, with the mirror's text and the
/// best audio's bytes, and every card of the agent's notes is in `Thai`.
pub fn assert_collection_matches(stack: &Stack, mirror: &rusqlite::Connection, anki: &RealAnki) {
    let notes = anki.notes(ALL_NOTES);
    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    let mut stmt = mirror
        .prepare(
            "SELECT 'content:' || id, native_text FROM learning_content
             UNION ALL SELECT 'fragment:' || id, native_text FROM content_fragments",
        )
        .unwrap();
    for row in stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .unwrap()
    {
        let (key, native) = row.unwrap();
        expected.insert(key, native);
    }
    let live: BTreeSet<&String> = notes
        .iter()
        .filter(|(_, n)| {
            !n["tags"]
                .as_array()
                .unwrap()
                .contains(&json!("thai-content::deleted"))
        })
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        live,
        expected.keys().collect::<BTreeSet<_>>(),
        "one live note per content and fragment"
    );
    for (key, native) in &expected {
        assert_eq!(
            notes[key]["fields"]["NativeText"]["value"], *native,
            "{key}'s text"
        );
        assert_eq!(notes[key]["modelName"], MODEL);
    }
    assert_eq!(
        anki.decks(ALL_NOTES).keys().collect::<Vec<_>>(),
        ["Thai"],
        "every card in the deck asked for"
    );
    // Each fragment's best audio (highest mean ranking, then lowest id),
    // by the bytes Anki holds.
    let best = rt()
        .block_on(stack.pg.query(
            "SELECT DISTINCT ON (a.fragment_id) a.fragment_id, a.asset_sha256
             FROM fragment_assets a LEFT JOIN rankings r ON r.asset_id = a.id
             WHERE a.asset_type = 'audio'
             GROUP BY a.id
             ORDER BY a.fragment_id, avg(r.rank_score) DESC NULLS LAST, count(r.id) DESC, a.id",
            &[],
        ))
        .expect("the best audio of each fragment");
    let mut checked = 0;
    for row in best {
        let (fragment, sha): (i32, String) = (row.get(0), row.get(1));
        let key = format!("fragment:{fragment}");
        let Some(note) = notes.get(&key) else {
            continue;
        };
        let name = format!("thai-content-{}.mp3", &sha[..16]);
        assert_eq!(
            note["fields"]["Audio"]["value"],
            format!("[sound:{name}]"),
            "{key} plays its best audio"
        );
        assert_eq!(anki.media_sha256(&name), Some(sha), "the bytes of {name}");
        checked += 1;
    }
    assert!(checked > 0);
}
