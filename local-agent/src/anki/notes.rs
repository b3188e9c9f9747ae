//! What a note looks like: the agent's note type, the notes rendered from
//! the mirror's rows (one per content and/or per fragment, a fragment's
//! with its best audio), and legacy notes' own field names.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::NotePolicy;
use crate::store::{AudioAsset, NoteContent, NoteFragment, Store, StoreError};

pub use crate::store::{NoteOf, Subject, content_hash};

/// The agent's own note type. Its first field, `Key`, is `content:<id>` or
/// `fragment:<id>`: AnkiConnect refuses a note whose first field is
/// already in use for the note type, so a note can never be added twice.
pub const MODEL_NAME: &str = "Thai Content (local-agent)";
pub const FIELDS: [&str; 6] = ["Key", "NativeText", "Translation", "IPA", "Audio", "Extra"];

/// The tag put on every note the agent creates.
pub const TAG: &str = "thai-content";
/// The tag put on a note whose content or fragment was deleted upstream.
pub const DELETED_TAG: &str = "thai-content::deleted";

const CSS: &str = ".card { font-family: system-ui, sans-serif; font-size: 20px; \
text-align: center; color: #222; background: #fff; }
.thai { font-family: 'Noto Sans Thai', 'Noto Serif Thai', 'Sarabun', 'Leelawadee UI', \
'Thonburi', 'Tahoma', sans-serif; font-size: 48px; line-height: 1.6; }
.ipa { font-family: 'Charis SIL', 'Doulos SIL', 'Noto Sans', serif; color: #555; }
.extra { font-size: 16px; color: #666; }
.nightMode .card, .card.nightMode { color: #eee; background: #222; }";

/// The createModel parameters of [`MODEL_NAME`]: a recognition card (Thai
/// with its audio → meaning) and a recall card (meaning → Thai).
pub fn model_params() -> Value {
    json!({
        "modelName": MODEL_NAME,
        "inOrderFields": FIELDS,
        "css": CSS,
        "isCloze": false,
        "cardTemplates": [
            {
                "Name": "Thai → meaning",
                "Front": "<div class=\"thai\">{{NativeText}}</div>\n{{Audio}}",
                "Back": "{{FrontSide}}\n<hr id=\"answer\">\n<div>{{Translation}}</div>\n\
                         <div class=\"ipa\">{{IPA}}</div>\n<div class=\"extra\">{{Extra}}</div>"
            },
            {
                "Name": "Meaning → Thai",
                "Front": "<div>{{Translation}}</div>",
                "Back": "{{FrontSide}}\n<hr id=\"answer\">\n<div class=\"thai\">{{NativeText}}</div>\n\
                         {{Audio}}\n<div class=\"ipa\">{{IPA}}</div>\n<div class=\"extra\">{{Extra}}</div>"
            }
        ]
    })
}

/// The audio a note plays: an asset of the mirror and the media file name
/// it is stored under in Anki.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audio {
    pub asset_id: i64,
    pub sha256: String,
    pub file_name: String,
    /// Bytes, as the mirror lists them.
    pub size: u64,
}

/// A note as the mirror says it should be.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub subject: Subject,
    /// Field name → value (HTML), in [`FIELDS`].
    pub fields: BTreeMap<String, String>,
    pub tags: Vec<String>,
    pub audio: Option<Audio>,
}

/// Text as an Anki field holds it: HTML, so `<`, `>` and `&` are escaped
/// and line breaks become `<br>`.
pub fn html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace("\r\n", "\n")
        .replace('\n', "<br>")
}

/// How the agent's media files' names begin.
pub const MEDIA_PREFIX: &str = "thai-content-";

/// The media file name of an asset: deterministic, so that storing it again
/// overwrites the same file instead of piling up copies.
pub fn media_file_name(sha256: &str, content_type: Option<&str>) -> String {
    let ext = match content_type
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
    {
        "audio/mpeg" | "audio/mp3" => "mp3",
        "audio/ogg" | "audio/opus" => "ogg",
        "audio/wav" | "audio/x-wav" | "audio/wave" => "wav",
        "audio/mp4" | "audio/x-m4a" | "audio/aac" => "m4a",
        "audio/webm" => "webm",
        "audio/flac" | "audio/x-flac" => "flac",
        _ => "mp3",
    };
    let prefix: String = sha256.to_ascii_lowercase().chars().take(16).collect();
    format!("{MEDIA_PREFIX}{prefix}.{ext}")
}

/// The audio of an asset, under its media file name.
pub fn audio(asset: AudioAsset) -> Audio {
    Audio {
        asset_id: asset.id,
        file_name: media_file_name(&asset.sha256, asset.content_type.as_deref()),
        sha256: asset.sha256.to_ascii_lowercase(),
        size: asset.size.try_into().unwrap_or_default(),
    }
}

/// An Anki tag from free text: no spaces (Anki splits tags on them).
fn tag(text: &str) -> Option<String> {
    let t: String = text
        .trim()
        .chars()
        .map(|c| if c.is_whitespace() { '_' } else { c })
        .collect();
    (!t.is_empty()).then_some(t)
}

fn content_tags(tags_json: Option<&str>) -> Vec<String> {
    let Some(value) = tags_json.and_then(|t| serde_json::from_str::<Value>(t).ok()) else {
        return Vec::new();
    };
    match value {
        Value::Array(items) => items
            .iter()
            .filter_map(|v| v.as_str())
            .filter_map(tag)
            .collect(),
        Value::String(s) => tag(&s).into_iter().collect(),
        _ => Vec::new(),
    }
}

/// The tags of a note of `kind` (`content` or `fragment`), with its
/// content's type and own tags.
fn tags(kind: &str, content: Option<&NoteContent>) -> Vec<String> {
    let mut tags = vec![TAG.to_owned(), format!("{TAG}::{kind}")];
    if let Some(c) = content {
        tags.extend(tag(&format!("{TAG}::type::{}", c.content_type)));
        tags.extend(content_tags(c.tags.as_deref()));
    }
    tags.sort();
    tags.dedup();
    tags
}

fn fields(
    native: &str,
    translation: &str,
    ipa: &str,
    audio: &str,
    extra: &str,
    key: &str,
) -> BTreeMap<String, String> {
    [
        ("Key", key.to_owned()),
        ("NativeText", html(native)),
        ("Translation", html(translation)),
        ("IPA", html(ipa)),
        ("Audio", audio.to_owned()),
        ("Extra", html(extra)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Every note the mirror asks for under `policy`, ordered by key.
pub fn render_all(store: &Store, policy: NotePolicy) -> Result<Vec<Rendered>, StoreError> {
    let contents: BTreeMap<i64, NoteContent> = store
        .note_contents()?
        .into_iter()
        .map(|c| (c.id, c))
        .collect();
    let mut notes = Vec::new();
    if policy.contents() {
        notes.extend(contents.values().map(content_note));
    }
    if policy.fragments() {
        for f in store.note_fragments()? {
            let sound = store.best_audio(f.id)?.map(audio);
            let content = f.content_id.and_then(|c| contents.get(&c));
            notes.push(fragment_note(&f, content, sound));
        }
    }
    notes.sort_by_key(|n| n.subject.key());
    Ok(notes)
}

fn content_note(c: &NoteContent) -> Rendered {
    let subject = Subject::Content(c.id);
    Rendered {
        subject,
        fields: fields(
            &c.native_text,
            &c.translation,
            &c.ipa,
            "",
            &c.title,
            &subject.key(),
        ),
        tags: tags("content", Some(c)),
        audio: None,
    }
}

fn fragment_note(
    f: &NoteFragment,
    content: Option<&NoteContent>,
    audio: Option<Audio>,
) -> Rendered {
    let subject = Subject::Fragment {
        id: f.id,
        content: f.content_id,
    };
    let sound = audio
        .as_ref()
        .map(|a| format!("[sound:{}]", a.file_name))
        .unwrap_or_default();
    Rendered {
        subject,
        fields: fields(
            &f.native_text,
            &f.body_text,
            f.ipa.as_deref().unwrap_or_default(),
            &sound,
            f.extra.as_deref().unwrap_or_default(),
            &subject.key(),
        ),
        tags: tags("fragment", content),
        audio,
    }
}

/// The fields to send to a note of another note type (a legacy note): each
/// of ours under the name the legacy note uses for it; fields it does not
/// have are left out, and its other fields are left alone.
pub fn map_to_legacy(
    ours: &BTreeMap<String, String>,
    legacy_fields: &[String],
) -> BTreeMap<String, String> {
    const SYNONYMS: &[(&str, &[&str])] = &[
        (
            "NativeText",
            &[
                "nativetext",
                "native",
                "thai",
                "front",
                "text",
                "native_text",
            ],
        ),
        (
            "Translation",
            &["translation", "english", "meaning", "back", "body_text"],
        ),
        ("IPA", &["ipa", "pronunciation", "romanization"]),
        ("Audio", &["audio", "sound"]),
        ("Extra", &["extra", "notes", "note"]),
    ];
    let mut out = BTreeMap::new();
    for name in legacy_fields {
        let lower = name.to_lowercase();
        if let Some((ours_name, _)) = SYNONYMS
            .iter()
            .find(|(_, names)| names.contains(&lower.as_str()))
            && let Some(value) = ours.get(*ours_name)
        {
            out.insert(name.clone(), value.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_depends_on_every_field_and_not_on_order() {
        let a = fields("ก", "a", "", "", "", "content:1");
        let mut b = a.clone();
        assert_eq!(content_hash(&a), content_hash(&b));
        b.insert("Translation".into(), "b".into());
        assert_ne!(content_hash(&a), content_hash(&b));
    }

    #[test]
    fn text_becomes_html_and_file_names_are_deterministic() {
        assert_eq!(html("a < b & c\nd"), "a &lt; b &amp; c<br>d");
        assert_eq!(
            media_file_name("ABCDEF0123456789ffff", Some("audio/ogg")),
            "thai-content-abcdef0123456789.ogg"
        );
        assert_eq!(
            media_file_name("00112233445566778899", None),
            "thai-content-0011223344556677.mp3"
        );
    }

    #[test]
    fn legacy_fields_are_matched_by_name() {
        let ours = fields("ก", "chicken", "kài", "[sound:x.mp3]", "", "fragment:1");
        let mapped = map_to_legacy(&ours, &["Thai".into(), "English".into(), "Card".into()]);
        assert_eq!(mapped.len(), 2);
        assert_eq!(mapped["Thai"], "ก");
        assert_eq!(mapped["English"], "chicken");
    }
}
