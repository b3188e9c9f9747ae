//! What a note looks like: the agent's note type, the notes rendered from
//! the mirror (one per content and/or per fragment), the best audio of a
//! fragment, and the content hash that decides whether a note changed.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::NotePolicy;

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

/// What a note is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subject {
    Content(i64),
    Fragment { id: i64, content: Option<i64> },
}

impl Subject {
    /// The value of the `Key` field.
    pub fn key(self) -> String {
        self.note_of().key()
    }

    pub fn note_of(self) -> NoteOf {
        match self {
            Subject::Content(id) => NoteOf::Content(id),
            Subject::Fragment { id, .. } => NoteOf::Fragment(id),
        }
    }

    pub fn content_id(self) -> Option<i64> {
        match self {
            Subject::Content(id) => Some(id),
            Subject::Fragment { content, .. } => content,
        }
    }

    pub fn fragment_id(self) -> Option<i64> {
        match self {
            Subject::Content(_) => None,
            Subject::Fragment { id, .. } => Some(id),
        }
    }
}

/// The row a note stands for: what identifies a note and its card record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NoteOf {
    Content(i64),
    Fragment(i64),
}

impl NoteOf {
    /// The value of the `Key` field.
    pub fn key(self) -> String {
        match self {
            NoteOf::Content(id) => format!("content:{id}"),
            NoteOf::Fragment(id) => format!("fragment:{id}"),
        }
    }

    /// Whether the mirror still holds the row.
    pub fn in_mirror(self, conn: &Connection) -> rusqlite::Result<bool> {
        let (sql, id) = match self {
            NoteOf::Content(id) => (
                "SELECT EXISTS (SELECT 1 FROM learning_content WHERE id = ?1)",
                id,
            ),
            NoteOf::Fragment(id) => (
                "SELECT EXISTS (SELECT 1 FROM content_fragments WHERE id = ?1)",
                id,
            ),
        };
        conn.prepare_cached(sql)?.query_row([id], |r| r.get(0))
    }
}

impl From<NoteOf> for Subject {
    /// The subject of a card whose row may have left the mirror: a
    /// fragment's content is not known then.
    fn from(of: NoteOf) -> Subject {
        match of {
            NoteOf::Content(id) => Subject::Content(id),
            NoteOf::Fragment(id) => Subject::Fragment { id, content: None },
        }
    }
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

/// sha256 hex of the fields as canonical JSON (keys sorted): the
/// `anki_cards.content_hash` of a note.
pub fn content_hash(fields: &BTreeMap<String, String>) -> String {
    let text = serde_json::to_string(fields).expect("strings serialise");
    hex::encode(Sha256::digest(text.as_bytes()))
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

/// The best audio asset of a fragment, by the API's rule for
/// `/api/rankings/best`: the highest mean ranking, then the most rankings,
/// then the lowest id; unranked assets after all ranked ones.
pub fn best_audio(conn: &Connection, fragment_id: i64) -> rusqlite::Result<Option<Audio>> {
    conn.query_row(
        "SELECT a.id, a.sha256, a.content_type, a.size
         FROM fragment_assets a
         LEFT JOIN (SELECT asset_id, avg(rank_hundredths) AS mean, count(*) AS n
                    FROM rankings WHERE rank_hundredths IS NOT NULL GROUP BY asset_id) r
                ON r.asset_id = a.id
         WHERE a.fragment_id = ?1 AND a.asset_type = 'audio' AND a.size > 0
         ORDER BY r.mean IS NULL, r.mean DESC, r.n DESC, a.id
         LIMIT 1",
        [fragment_id],
        |r| {
            let sha256: String = r.get(1)?;
            let content_type: Option<String> = r.get(2)?;
            Ok(Audio {
                asset_id: r.get(0)?,
                file_name: media_file_name(&sha256, content_type.as_deref()),
                sha256: sha256.to_ascii_lowercase(),
                size: r.get::<_, i64>(3)?.try_into().unwrap_or_default(),
            })
        },
    )
    .optional()
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

struct ContentInfo {
    title: String,
    content_type: String,
    native_text: String,
    translation: String,
    ipa: String,
    tags: Vec<String>,
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
pub fn render_all(conn: &Connection, policy: NotePolicy) -> rusqlite::Result<Vec<Rendered>> {
    let mut contents: BTreeMap<i64, ContentInfo> = BTreeMap::new();
    {
        let mut stmt = conn.prepare(
            "SELECT id, title, content_type, native_text, translation, ipa, tags
             FROM learning_content ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                ContentInfo {
                    title: r.get(1)?,
                    content_type: r.get(2)?,
                    native_text: r.get(3)?,
                    translation: r.get(4)?,
                    ipa: r.get(5)?,
                    tags: content_tags(r.get::<_, Option<String>>(6)?.as_deref()),
                },
            ))
        })?;
        for row in rows {
            let (id, info) = row?;
            contents.insert(id, info);
        }
    }
    let base_tags = |kind: &str, c: Option<&ContentInfo>| {
        let mut tags = vec![TAG.to_owned(), format!("{TAG}::{kind}")];
        if let Some(c) = c {
            tags.extend(tag(&format!("{TAG}::type::{}", c.content_type)));
            tags.extend(c.tags.iter().cloned());
        }
        tags.sort();
        tags.dedup();
        tags
    };
    let mut notes = Vec::new();
    if policy.contents() {
        for (&id, c) in &contents {
            let subject = Subject::Content(id);
            notes.push(Rendered {
                subject,
                fields: fields(
                    &c.native_text,
                    &c.translation,
                    &c.ipa,
                    "",
                    &c.title,
                    &subject.key(),
                ),
                tags: base_tags("content", Some(c)),
                audio: None,
            });
        }
    }
    if policy.fragments() {
        let mut stmt = conn.prepare(
            "SELECT id, learning_content_id, native_text, body_text, ipa, extra
             FROM content_fragments ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<String>>(5)?,
            ))
        })?;
        for row in rows {
            let (id, content, native, body, ipa, extra) = row?;
            let subject = Subject::Fragment { id, content };
            let audio = best_audio(conn, id)?;
            let sound = audio
                .as_ref()
                .map(|a| format!("[sound:{}]", a.file_name))
                .unwrap_or_default();
            let c = content.and_then(|c| contents.get(&c));
            notes.push(Rendered {
                subject,
                fields: fields(
                    &native,
                    &body,
                    ipa.as_deref().unwrap_or_default(),
                    &sound,
                    extra.as_deref().unwrap_or_default(),
                    &subject.key(),
                ),
                tags: base_tags("fragment", c),
                audio,
            });
        }
    }
    notes.sort_by_key(|n| n.subject.key());
    Ok(notes)
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
