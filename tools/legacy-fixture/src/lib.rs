//! Legacy SQLite files as the old Python/SQLAlchemy application wrote them,
//! for migration tests and benchmarks.
//!
//! The DDL is the legacy application's own; the data has what real legacy
//! files have and their DDL does not admit, at a chosen rate: titles past
//! VARCHAR(200), orphans (foreign keys were never enforced), JSON columns
//! holding NULL, '', 'null' or text that is not JSON, datetimes in every
//! format SQLAlchemy and its predecessors wrote, scores stored as REAL or
//! TEXT and now and then outside 0..5, empty blobs. Every file is a pure
//! function of its [`Spec`]; [`Summary`] counts each planted defect so tests
//! can expect exact reject reports.

use std::path::Path;

use anyhow::{Context, Result};
use rusqlite::{Connection, params};

/// The legacy file's DDL as SQLAlchemy emitted it for SQLite: the project's
/// document of it, which is what users' files hold.
const LEGACY_DOCUMENT: &str = include_str!("../../../local-agent/legacy/schema.sql");

/// The legacy DDL without its vec0 table ([`LEGACY_VECTORS`]), which needs
/// the sqlite-vec extension registered first.
pub fn legacy_schema() -> String {
    let vectors = format!("{LEGACY_VECTORS};");
    assert!(
        LEGACY_DOCUMENT.contains(&vectors),
        "local-agent/legacy/schema.sql lost its statement {vectors}"
    );
    LEGACY_DOCUMENT.replace(&vectors, "")
}

/// The vec0 table; needs the sqlite-vec extension registered.
pub const LEGACY_VECTORS: &str =
    "CREATE VIRTUAL TABLE vec_embeddings USING vec0(embedding float[384])";

/// What to generate.
#[derive(Debug, Clone)]
pub struct Spec {
    pub contents: usize,
    pub fragments_per_content: usize,
    /// Audio assets per fragment, for the first `assets` fragments.
    pub assets: usize,
    pub asset_bytes: usize,
    pub rankings: usize,
    /// One row in `defect_every` carries a planted defect (0: none).
    pub defect_every: usize,
    /// Whether `vec_embeddings` (sqlite-vec) and its rows are written.
    pub vectors: bool,
    pub seed: u64,
}

impl Spec {
    /// A small file with every kind of defect, for tests.
    pub fn small(seed: u64) -> Self {
        Spec {
            contents: 40,
            fragments_per_content: 3,
            assets: 60,
            asset_bytes: 4096,
            rankings: 150,
            defect_every: 10,
            vectors: true,
            seed,
        }
    }
}

/// What was written, and how many of each planted defect.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub contents: usize,
    pub fragments: usize,
    pub assets: usize,
    pub rankings: usize,
    pub anki_cards: usize,
    pub vectors: usize,
    pub overlong_titles: usize,
    pub orphan_fragments: usize,
    pub orphan_assets: usize,
    pub orphan_rankings: usize,
    pub invalid_json: usize,
    pub scores_out_of_range: usize,
    pub scores_not_numbers: usize,
    pub empty_blobs: usize,
    pub bytes: u64,
}

const THAI: &[(&str, &str, &str)] = &[
    ("สวัสดีครับ", "hello (male speaker)", "sa.wàt.diː kʰráp"),
    ("ขอบคุณค่ะ", "thank you (female speaker)", "kʰɔ̀ːp.kʰun kʰâ"),
    (
        "ผู้หญิงคนนั้นน่ารัก",
        "that woman is lovely",
        "pʰûː.jǐŋ kʰon nán nâː.rák",
    ),
    (
        "ไปตลาดน้ำกันไหม",
        "shall we go to the floating market?",
        "paj ta.làːt náːm kan máj",
    ),
    ("เผ็ดไม่เป็น", "I can't eat spicy food", "pʰèt mâj pen"),
    ("กี่โมงแล้ว", "what time is it?", "kìː moːŋ lɛ́ːw"),
];

const DATETIMES: &[&str] = &[
    "2025-03-01 12:34:56.123456",
    "2025-03-01 12:34:56",
    "2024-11-30T23:59:59Z",
    "2024-07-04T08:15:00+07:00",
];

/// Writes a legacy file at `path` (which must not exist).
pub fn generate(path: &Path, spec: &Spec) -> Result<Summary> {
    write(path, spec, true)
}

/// Like [`generate`], but every JSON column holds JSON or NULL: none of the
/// `''` and `'null'` texts real files have, which tools that load SQLite
/// into typed columns (pgloader) refuse. With `defect_every: 0` the file
/// is then one any loader can take whole, for benchmarks against them.
/// The same seed gives the same rows otherwise.
pub fn generate_clean(path: &Path, spec: &Spec) -> Result<Summary> {
    write(path, spec, false)
}

fn write(path: &Path, spec: &Spec, json_quirks: bool) -> Result<Summary> {
    anyhow::ensure!(!path.exists(), "{} exists already", path.display());
    let mut db = Connection::open(path).with_context(|| format!("creating {}", path.display()))?;
    // As in the Python application (SQLite's default): foreign keys not
    // enforced, which is how orphans got into real files. rusqlite's bundled
    // SQLite turns them on by default.
    db.execute_batch("PRAGMA foreign_keys = OFF")?;
    db.execute_batch(&legacy_schema())?;
    if spec.vectors {
        db.execute_batch(LEGACY_VECTORS)
            .context("creating vec_embeddings: register sqlite-vec before generating")?;
    }
    let mut rng = fastrand::Rng::with_seed(spec.seed);
    let mut sum = Summary::default();
    let defect =
        |rng: &mut fastrand::Rng| spec.defect_every > 0 && rng.usize(..spec.defect_every) == 0;
    let tx = db.transaction()?;
    let when = |rng: &mut fastrand::Rng| -> Option<&'static str> {
        match rng.usize(..10) {
            0 => None,
            n => Some(DATETIMES[n % DATETIMES.len()]),
        }
    };

    let mut content_ids = Vec::new();
    for id in 1..=spec.contents as i64 {
        let (native, translation, ipa) = THAI[rng.usize(..THAI.len())];
        let mut title = format!("{native} #{id}");
        if defect(&mut rng) {
            title = "ยาว".repeat(70 + rng.usize(..20));
            sum.overlong_titles += 1;
        }
        let broken = defect(&mut rng);
        let tags = json_column(
            &mut rng,
            json_quirks,
            broken,
            &mut sum,
            r#"["greeting","daily"]"#,
        );
        let metadata = json_column(
            &mut rng,
            json_quirks,
            false,
            &mut sum,
            r#"{"source": "tts-batch", "level": 2}"#,
        );
        tx.execute(
            "INSERT INTO learning_content (id, title, content_type, language, native_text, translation, ipa,
                 difficulty_level, tags, content_metadata, created_at, updated_at)
             VALUES (?1, ?2, ?3, 'thai', ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![id, title, ["phrase", "dialogue", "word"][rng.usize(..3)], native, translation, ipa,
                    rng.i64(1..=5), tags, metadata, when(&mut rng), when(&mut rng)],
        )?;
        content_ids.push(id);
        sum.contents += 1;
    }

    let mut fragment_ids = Vec::new();
    let mut next_fragment = 1_i64;
    for &content in &content_ids {
        for _ in 0..spec.fragments_per_content {
            let (native, body, ipa) = THAI[rng.usize(..THAI.len())];
            // An orphan points at a content that was deleted long ago.
            let parent = if defect(&mut rng) {
                sum.orphan_fragments += 1;
                content + 1_000_000
            } else {
                content
            };
            let broken = defect(&mut rng);
            let metadata = json_column(
                &mut rng,
                json_quirks,
                broken,
                &mut sum,
                r#"{"position": 1}"#,
            );
            tx.execute(
                "INSERT INTO content_fragments (id, native_text, body_text, ipa, extra, fragment_type,
                     fragment_metadata, created_at, updated_at, learning_content_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'word', ?6, ?7, ?8, ?9)",
                params![next_fragment, native, body, ipa, Option::<&str>::None, metadata, when(&mut rng), when(&mut rng), parent],
            )?;
            fragment_ids.push(next_fragment);
            next_fragment += 1;
            sum.fragments += 1;
        }
    }

    let mut asset_ids = Vec::new();
    for id in 1..=spec.assets as i64 {
        let fragment = if defect(&mut rng) {
            sum.orphan_assets += 1;
            2_000_000 + id
        } else {
            fragment_ids[rng.usize(..fragment_ids.len().max(1))]
        };
        let mut bytes = vec![0u8; spec.asset_bytes];
        rng.fill(&mut bytes);
        if defect(&mut rng) {
            bytes.clear();
            sum.empty_blobs += 1;
        }
        sum.bytes += bytes.len() as u64;
        let metadata = json_column(
            &mut rng,
            json_quirks,
            false,
            &mut sum,
            r#"{"voice": "th-TH-Premwadee", "format": "mp3"}"#,
        );
        tx.execute(
            "INSERT INTO fragment_assets (id, fragment_id, asset_type, asset_data, asset_metadata, created_at, created_by)
             VALUES (?1, ?2, 'audio', ?3, ?4, ?5, 'tts')",
            params![id, fragment, bytes, metadata, when(&mut rng)],
        )?;
        asset_ids.push((id, fragment));
        sum.assets += 1;
    }

    for id in 1..=spec.rankings as i64 {
        let Some(&(asset, fragment)) = asset_ids.get(rng.usize(..asset_ids.len().max(1))) else {
            break;
        };
        let asset = if defect(&mut rng) {
            sum.orphan_rankings += 1;
            asset + 3_000_000
        } else {
            asset
        };
        // NUMERIC affinity stores well-formed numbers as REAL or INTEGER
        // (5.00 becomes 5); only text that is not a number stays TEXT.
        let score: rusqlite::types::Value = if defect(&mut rng) {
            if rng.bool() {
                sum.scores_out_of_range += 1;
                rusqlite::types::Value::Real([7.5, -1.0, 5.01][rng.usize(..3)])
            } else {
                sum.scores_not_numbers += 1;
                rusqlite::types::Value::Text(["4,5", "n/a"][rng.usize(..2)].to_owned())
            }
        } else {
            rusqlite::types::Value::Text(format!("{}.{:02}", rng.u32(0..5), rng.u32(0..100)))
        };
        tx.execute(
            "INSERT INTO rankings (id, fragment_id, asset_id, rank_score, assessed_by, assessment_notes, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![id, fragment, asset, score, ["nok", "somchai", "ploy"][rng.usize(..3)], "ชัดเจน", when(&mut rng), when(&mut rng)],
        )?;
        sum.rankings += 1;
    }

    // Anki cards and vectors refer to the ids the migration must keep.
    for (n, &fragment) in fragment_ids.iter().enumerate().take(spec.contents) {
        let content = content_ids[n % content_ids.len()];
        tx.execute(
            "INSERT INTO anki_cards (id, learning_content_id, fragment_id, anki_note_id, deck_name, note_type, fields,
                 content_hash, sync_status, last_synced_at, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, 'Thai::Legacy', 'Basic', ?5, ?6, 'synced', ?7, ?7, ?7)",
            params![n as i64 + 1, content, fragment, 1_700_000_000_000_i64 + n as i64,
                    r#"{"Front": "สวัสดี", "Back": "hello"}"#, format!("{:064x}", n), DATETIMES[0]],
        )?;
        sum.anki_cards += 1;
    }
    if spec.vectors {
        for (n, &fragment) in fragment_ids.iter().enumerate() {
            let id = n as i64 + 1;
            tx.execute(
                "INSERT INTO vector_embeddings (id, source_type, source_id, model, dimensions, text_hash, created_at)
                 VALUES (?1, 'content_fragment', ?2, 'all-MiniLM-L6-v2', 384, ?3, ?4)",
                params![id, fragment, format!("{:064x}", fragment), DATETIMES[1]],
            )?;
            let vector: Vec<f32> = (0..384).map(|_| rng.f32() - 0.5).collect();
            let blob: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
            tx.execute(
                "INSERT INTO vec_embeddings (rowid, embedding) VALUES (?1, ?2)",
                params![id, blob],
            )?;
            sum.vectors += 1;
        }
    }
    tx.commit()?;
    Ok(sum)
}

/// A JSON column's text: valid JSON mostly; NULL, '', 'null' now and then
/// (all three occur in real files); text that is not JSON when `broken`.
fn json_column(
    rng: &mut fastrand::Rng,
    quirks: bool,
    broken: bool,
    sum: &mut Summary,
    valid: &str,
) -> Option<String> {
    if broken {
        sum.invalid_json += 1;
        return Some("{'not': json,".to_owned());
    }
    match rng.usize(..8) {
        0 => None,
        1 if quirks => Some(String::new()),
        2 if quirks => Some("null".to_owned()),
        _ => Some(valid.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(db: &Connection, sql: &str) -> usize {
        db.query_row(sql, [], |row| row.get::<_, i64>(0)).unwrap() as usize
    }

    #[test]
    fn the_file_holds_what_the_summary_says() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("legacy.db");
        let spec = Spec {
            vectors: false,
            ..Spec::small(7)
        };
        let sum = generate(&path, &spec).unwrap();
        let db = Connection::open(&path).unwrap();
        assert_eq!(
            count(&db, "SELECT count(*) FROM learning_content"),
            sum.contents
        );
        assert_eq!(
            count(&db, "SELECT count(*) FROM content_fragments"),
            sum.fragments
        );
        assert_eq!(
            count(&db, "SELECT count(*) FROM fragment_assets"),
            sum.assets
        );
        assert_eq!(count(&db, "SELECT count(*) FROM rankings"), sum.rankings);
        assert_eq!(
            count(
                &db,
                "SELECT count(*) FROM learning_content WHERE length(title) > 200"
            ),
            sum.overlong_titles
        );
        assert_eq!(
            count(
                &db,
                "SELECT count(*) FROM content_fragments f WHERE NOT EXISTS (SELECT 1 FROM learning_content c WHERE c.id = f.learning_content_id)"
            ),
            sum.orphan_fragments
        );
        assert_eq!(
            count(
                &db,
                "SELECT count(*) FROM fragment_assets WHERE length(asset_data) = 0"
            ),
            sum.empty_blobs
        );
        assert_eq!(
            count(
                &db,
                "SELECT count(*) FROM rankings WHERE typeof(rank_score) <> 'text' AND (rank_score < 0 OR rank_score > 5)"
            ),
            sum.scores_out_of_range
        );
        assert!(
            count(
                &db,
                "SELECT count(*) FROM rankings WHERE typeof(rank_score) = 'text'"
            ) > 0
        );
        // Every kind of defect is planted at this size.
        for (what, n) in [
            ("titles", sum.overlong_titles),
            ("orphan fragments", sum.orphan_fragments),
            ("orphan assets", sum.orphan_assets),
            ("orphan rankings", sum.orphan_rankings),
            ("invalid JSON", sum.invalid_json),
            ("scores", sum.scores_out_of_range),
            ("text scores", sum.scores_not_numbers),
            ("empty blobs", sum.empty_blobs),
        ] {
            assert!(n > 0, "no {what} planted");
        }
        // Same seed, same file.
        let again = dir.path().join("again.db");
        assert_eq!(generate(&again, &spec).unwrap(), sum);
    }

    #[test]
    fn a_clean_file_has_only_json_or_null_in_json_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clean.db");
        let spec = Spec {
            defect_every: 0,
            vectors: false,
            ..Spec::small(7)
        };
        let sum = generate_clean(&path, &spec).unwrap();
        assert_eq!(sum.invalid_json, 0);
        let db = Connection::open(&path).unwrap();
        for (table, column) in [
            ("learning_content", "tags"),
            ("learning_content", "content_metadata"),
            ("content_fragments", "fragment_metadata"),
            ("fragment_assets", "asset_metadata"),
        ] {
            let texts: Vec<String> = db
                .prepare(&format!(
                    "SELECT {column} FROM {table} WHERE {column} IS NOT NULL"
                ))
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            assert!(!texts.is_empty(), "{table}.{column}");
            for text in texts {
                let value: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert!(!value.is_null(), "{table}.{column}: {text:?}");
            }
        }
    }
}

#[cfg(test)]
mod schema_tests {
    /// The document splits into the plain tables and the vec0 statement.
    #[test]
    fn the_legacy_document_creates_its_tables() {
        let db = rusqlite::Connection::open_in_memory().unwrap();
        db.execute_batch(&super::legacy_schema()).unwrap();
        let tables: i64 = db
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 6);
    }
}
