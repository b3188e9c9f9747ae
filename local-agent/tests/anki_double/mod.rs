//! A double of AnkiConnect (API version 6) over real HTTP, keeping decks,
//! note types, notes and media in memory. It answers as the add-on does
//! (FACTS.md): the `{result, error}` envelope for version-6 requests and
//! the bare result without `version`; the verbatim error strings; the
//! duplicate check on the first field within a note type; `addNotes` all
//! or nothing; `notesInfo` answering `{}` for an unknown id; `multi` with
//! one envelope per action. Each note has one card per template (card id
//! = note id × 10 + template), all in the note's deck; `ignore_deck`
//! answers `addNote` as the add-on does on Anki 26, putting the cards in
//! `Default` whatever deck was asked for.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct Note {
    pub id: i64,
    pub model: String,
    pub deck: String,
    /// In the note type's field order.
    pub fields: Vec<(String, String)>,
    pub tags: Vec<String>,
}

impl Note {
    pub fn field(&self, name: &str) -> &str {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("note {} has no field {name}", self.id))
    }
}

#[derive(Debug, Default)]
pub struct State {
    pub decks: BTreeMap<String, i64>,
    /// Note type → its field names in order.
    pub models: BTreeMap<String, Vec<String>>,
    pub templates: BTreeMap<String, Value>,
    pub notes: BTreeMap<i64, Note>,
    pub media: BTreeMap<String, Vec<u8>>,
    next_id: i64,
    /// Every HTTP request's top-level action.
    pub requests: Vec<String>,
    /// Every action, those inside `multi` included.
    pub actions: Vec<String>,
    /// Answer like an add-on that predates version 6: bare results always.
    pub old_addon: bool,
    /// Put added notes in `Default`, as the add-on does on Anki 26.
    pub ignore_deck: bool,
    /// Bytes of every HTTP request body.
    pub request_bytes: Vec<usize>,
    /// How each `storeMediaFile` carried its bytes: `"path"` or `"data"`.
    pub media_carriers: Vec<&'static str>,
    /// Anki's media folder, which `getMediaDirPath` names: the files in it
    /// are Anki's media as much as those stored through the API.
    pub media_dir: Option<PathBuf>,
    /// What `getMediaDirPath` names instead of `media_dir`, as an Anki on
    /// another computer (behind a tunnel) names a folder of its own.
    pub claimed_media_dir: Option<PathBuf>,
}

impl State {
    /// Every media file Anki has, by name: stored through the API or
    /// found in its folder.
    pub fn media_files(&self) -> BTreeMap<String, Vec<u8>> {
        let mut all = self.media.clone();
        if let Some(dir) = &self.media_dir {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if entry.path().is_file() {
                    all.insert(name, std::fs::read(entry.path()).unwrap_or_default());
                }
            }
        }
        all
    }
}

pub struct AnkiDouble {
    pub url: String,
    pub state: Arc<Mutex<State>>,
    /// Holds `State::media_dir`.
    _media_dir: tempfile::TempDir,
}

impl AnkiDouble {
    pub fn start() -> AnkiDouble {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the double");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let media_dir = tempfile::tempdir().expect("the double's media folder");
        let state = Arc::new(Mutex::new(State {
            next_id: 1_700_000_000_000,
            media_dir: Some(media_dir.path().to_owned()),
            ..State::default()
        }));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = shared.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &state);
                });
            }
        });
        AnkiDouble {
            url,
            state,
            _media_dir: media_dir,
        }
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    pub fn requests(&self) -> usize {
        self.state().requests.len()
    }

    pub fn count(&self, action: &str) -> usize {
        self.state().actions.iter().filter(|a| *a == action).count()
    }

    /// The note whose first field is `key`.
    pub fn note(&self, key: &str) -> Option<Note> {
        self.state()
            .notes
            .values()
            .find(|n| n.fields.first().map(|f| f.1.as_str()) == Some(key))
            .cloned()
    }

    /// A note made by hand in Anki (a note type is created if needed).
    pub fn add_by_hand(&self, model: &str, deck: &str, fields: &[(&str, &str)]) -> i64 {
        let mut s = self.state();
        let names = s
            .models
            .entry(model.to_owned())
            .or_insert_with(|| fields.iter().map(|(n, _)| (*n).to_owned()).collect())
            .clone();
        let next = s.next_id + 1;
        s.decks.entry(deck.to_owned()).or_insert(next);
        s.next_id += 2;
        let id = s.next_id;
        s.notes.insert(
            id,
            Note {
                id,
                model: model.to_owned(),
                deck: deck.to_owned(),
                // Every field of the note type, as in Anki.
                fields: names
                    .iter()
                    .map(|name| {
                        let value = fields.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
                        (name.clone(), value.unwrap_or_default().to_owned())
                    })
                    .collect(),
                tags: Vec::new(),
            },
        );
        id
    }

    /// The user deletes a note in Anki.
    pub fn delete(&self, id: i64) {
        self.state().notes.remove(&id);
    }
}

fn serve(stream: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut length = 0;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((name, value)) = l.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let reply = {
        let mut s = state.lock().unwrap();
        s.request_bytes.push(body.len());
        let action = request["action"].as_str().unwrap_or_default().to_owned();
        s.requests.push(action);
        handle(&mut s, &request)
    };
    let text = reply.to_string();
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{text}",
        text.len()
    )?;
    stream.flush()
}

/// One request (or one action of `multi`), answered in its version's shape.
fn handle(s: &mut State, request: &Value) -> Value {
    let action = request["action"].as_str().unwrap_or_default();
    s.actions.push(action.to_owned());
    let versioned =
        !s.old_addon && request.get("version").and_then(Value::as_u64).unwrap_or(4) >= 5;
    let outcome = run(s, action, &request["params"]);
    match (versioned, outcome) {
        (true, Ok(result)) => json!({"result": result, "error": null}),
        (true, Err(e)) => json!({"result": null, "error": e}),
        (false, Ok(result)) => result,
        (false, Err(e)) => json!({"result": null, "error": e}),
    }
}

fn run(s: &mut State, action: &str, p: &Value) -> Result<Value, String> {
    match action {
        "version" => Ok(json!(6)),
        "multi" => {
            let actions = p["actions"].as_array().cloned().unwrap_or_default();
            Ok(Value::Array(
                actions.iter().map(|a| handle(s, a)).collect::<Vec<_>>(),
            ))
        }
        "deckNames" => Ok(json!(s.decks.keys().collect::<Vec<_>>())),
        "createDeck" => {
            let name = p["deck"].as_str().unwrap_or_default().to_owned();
            if let Some(id) = s.decks.get(&name) {
                return Ok(json!(id));
            }
            s.next_id += 1;
            let id = s.next_id;
            s.decks.insert(name, id);
            Ok(json!(id))
        }
        "modelNames" => Ok(json!(s.models.keys().collect::<Vec<_>>())),
        "createModel" => {
            let name = p["modelName"].as_str().unwrap_or_default().to_owned();
            if s.models.contains_key(&name) {
                return Err("Model name already exists".into());
            }
            let fields: Vec<String> = p["inOrderFields"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect();
            s.models.insert(name.clone(), fields);
            s.templates.insert(name.clone(), p.clone());
            s.next_id += 1;
            Ok(json!({"id": s.next_id, "name": name}))
        }
        "storeMediaFile" => {
            let name = p["filename"].as_str().unwrap_or_default().to_owned();
            // The add-on reads `data`, else the file at `path`, as Python
            // opens it (a missing file fails the action with its errno text).
            let bytes = if let Some(data) = p["data"].as_str() {
                s.media_carriers.push("data");
                unbase64(data)
            } else if let Some(path) = p["path"].as_str() {
                s.media_carriers.push("path");
                let missing = format!("[Errno 2] No such file or directory: '{path}'");
                std::fs::read(path).map_err(|_| missing)?
            } else {
                return Err("You must provide a \"data\", \"path\", or \"url\" field.".into());
            };
            let name = if p["deleteExisting"] == json!(false) && s.media.contains_key(&name) {
                format!("{name}-1")
            } else {
                name
            };
            s.media.insert(name.clone(), bytes);
            Ok(json!(name))
        }
        "addNote" => add_note(s, &p["note"]).map(|id| json!(id)),
        "canAddNotes" => Ok(Value::Array(
            p["notes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|n| json!(check_note(s, n).is_ok()))
                .collect(),
        )),
        "addNotes" => {
            let notes = p["notes"].as_array().cloned().unwrap_or_default();
            let errors: Vec<String> = notes
                .iter()
                .filter_map(|n| check_note(s, n).err())
                .collect();
            if !errors.is_empty() {
                let list: Vec<String> = errors.iter().map(|e| format!("'{e}'")).collect();
                return Err(format!("[{}]", list.join(", ")));
            }
            Ok(Value::Array(
                notes.iter().map(|n| json!(add_note(s, n).ok())).collect(),
            ))
        }
        "notesInfo" => Ok(Value::Array(
            p["notes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|id| match id.as_i64().and_then(|id| s.notes.get(&id)) {
                    None => json!({}),
                    Some(n) => json!({
                        "noteId": n.id,
                        "modelName": n.model,
                        "tags": n.tags,
                        "fields": n.fields.iter().enumerate()
                            .map(|(i, (k, v))| (k.clone(), json!({"value": v, "order": i})))
                            .collect::<serde_json::Map<_, _>>(),
                        "cards": cards_of(s, n),
                    }),
                })
                .collect(),
        )),
        "updateNoteFields" => {
            let id = p["note"]["id"].as_i64().unwrap_or_default();
            let Some(note) = s.notes.get_mut(&id) else {
                return Err(format!("Note was not found: {id}"));
            };
            let fields = p["note"]["fields"].as_object().cloned().unwrap_or_default();
            for (name, value) in &fields {
                let Some(slot) = note.fields.iter_mut().find(|(n, _)| n == name) else {
                    return Err(format!("'{name}'"));
                };
                slot.1 = value.as_str().unwrap_or_default().to_owned();
            }
            Ok(Value::Null)
        }
        "addTags" => {
            let tags: Vec<String> = p["tags"]
                .as_str()
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            for id in p["notes"].as_array().into_iter().flatten() {
                if let Some(note) = id.as_i64().and_then(|id| s.notes.get_mut(&id)) {
                    for t in &tags {
                        if !note.tags.contains(t) {
                            note.tags.push(t.clone());
                        }
                    }
                }
            }
            Ok(Value::Null)
        }
        "findNotes" => {
            // The one query the agent sends: `"note:<type>" "Key:<key>"`.
            let query = p["query"].as_str().unwrap_or_default();
            let part = |prefix: &str| {
                query
                    .split('"')
                    .find_map(|q| q.strip_prefix(prefix))
                    .map(str::to_owned)
            };
            let (Some(model), Some(key)) = (part("note:"), part("Key:")) else {
                return Err(format!("the double cannot search {query}"));
            };
            Ok(json!(
                s.notes
                    .values()
                    .filter(|n| n.model == model && n.fields.first().map(|f| &f.1) == Some(&key))
                    .map(|n| n.id)
                    .collect::<Vec<_>>()
            ))
        }
        "findCards" => {
            let query = p["query"].as_str().unwrap_or_default();
            let Some(ids) = query.strip_prefix("nid:") else {
                return Err(format!("the double cannot search {query}"));
            };
            let mut cards = Vec::new();
            for id in ids.split(',').filter_map(|i| i.parse::<i64>().ok()) {
                if let Some(n) = s.notes.get(&id) {
                    cards.extend(cards_of(s, n));
                }
            }
            Ok(json!(cards))
        }
        "getDecks" => {
            let mut decks: BTreeMap<String, Vec<i64>> = BTreeMap::new();
            for card in p["cards"].as_array().into_iter().flatten() {
                let card = card.as_i64().unwrap_or_default();
                let Some(note) = s.notes.get(&(card / 10)) else {
                    return Err("'NoneType' object is not subscriptable".into());
                };
                decks.entry(note.deck.clone()).or_default().push(card);
            }
            Ok(json!(decks))
        }
        "changeDeck" => {
            let deck = p["deck"].as_str().unwrap_or_default().to_owned();
            if !s.decks.contains_key(&deck) {
                s.next_id += 1;
                let id = s.next_id;
                s.decks.insert(deck.clone(), id);
            }
            for card in p["cards"].as_array().into_iter().flatten() {
                if let Some(note) = s.notes.get_mut(&(card.as_i64().unwrap_or_default() / 10)) {
                    note.deck = deck.clone();
                }
            }
            Ok(Value::Null)
        }
        "getMediaFilesNames" => {
            // Globs as the add-on's glob.glob does, for the two shapes the
            // agent sends: a prefix with `*`, or a whole name.
            let pattern = p["pattern"].as_str().unwrap_or("*");
            let (prefix, whole) = match pattern.strip_suffix('*') {
                Some(prefix) => (prefix, false),
                None => (pattern, true),
            };
            Ok(json!(
                s.media_files()
                    .into_keys()
                    .filter(|n| if whole {
                        n == prefix
                    } else {
                        n.starts_with(prefix)
                    })
                    .collect::<Vec<_>>()
            ))
        }
        "getMediaDirPath" => Ok(json!(
            s.claimed_media_dir
                .as_ref()
                .or(s.media_dir.as_ref())
                .map(|d| d.display().to_string())
        )),
        _ => Err("unsupported action".into()),
    }
}

/// A note's cards: one per template of its note type (one for a type
/// made by hand).
fn cards_of(s: &State, n: &Note) -> Vec<i64> {
    let templates = s
        .templates
        .get(&n.model)
        .map_or(1, |t| t["cardTemplates"].as_array().map_or(1, Vec::len));
    (0..templates as i64).map(|t| n.id * 10 + t).collect()
}

fn check_note(s: &State, n: &Value) -> Result<(), String> {
    let model = n["modelName"].as_str().unwrap_or_default();
    let deck = n["deckName"].as_str().unwrap_or_default();
    let Some(names) = s.models.get(model) else {
        return Err(format!("model was not found: {model}"));
    };
    if !s.decks.contains_key(deck) {
        return Err(format!("deck was not found: {deck}"));
    }
    let first = n["fields"][&names[0]].as_str().unwrap_or_default();
    if first.trim().is_empty() {
        return Err("cannot create note because it is empty".into());
    }
    let allow = n["options"]["allowDuplicate"].as_bool().unwrap_or(false);
    if !allow
        && s.notes
            .values()
            .any(|o| o.model == model && o.fields.first().map(|f| f.1.as_str()) == Some(first))
    {
        return Err("cannot create note because it is a duplicate".into());
    }
    Ok(())
}

fn add_note(s: &mut State, n: &Value) -> Result<i64, String> {
    check_note(s, n)?;
    let model = n["modelName"].as_str().unwrap_or_default().to_owned();
    let names = s.models[&model].clone();
    s.next_id += 1;
    let id = s.next_id;
    let deck = if s.ignore_deck {
        s.decks.entry("Default".to_owned()).or_insert(1);
        "Default".to_owned()
    } else {
        n["deckName"].as_str().unwrap_or_default().to_owned()
    };
    s.notes.insert(
        id,
        Note {
            id,
            deck,
            fields: names
                .iter()
                .map(|name| {
                    (
                        name.clone(),
                        n["fields"][name].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect(),
            model,
            tags: n["tags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect(),
        },
    );
    Ok(id)
}

fn unbase64(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => 0,
        }
    };
    let bytes: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let mut out = Vec::new();
    for chunk in bytes.chunks(4) {
        let pad = chunk.iter().filter(|&&b| b == b'=').count();
        let n = chunk.iter().fold(0u32, |acc, &b| {
            (acc << 6) | if b == b'=' { 0 } else { value(b) }
        }) << (6 * (4 - chunk.len()));
        let three = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&three[..3 - pad.min(2)]);
    }
    out
}
