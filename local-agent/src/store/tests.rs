use super::*;
use crate::feed::ChangePage;
use rusqlite::Connection;
use serde_json::json;

use legacy_fixture::{LEGACY_VECTORS, legacy_schema};

fn content(id: i64, title: &str) -> serde_json::Value {
    json!({"table": "learning_content", "op": "upsert", "id": id, "row": {
        "id": id, "title": title, "content_type": "phrase", "language": "thai",
        "native_text": "สวัสดีครับ", "translation": "hello", "ipa": "sà.wàt.diː kʰráp",
        "difficulty_level": 1, "tags": ["greeting"], "content_metadata": {"b": 1.5, "a": null},
        "created_at": "2026-11-25T16:07:19.123456Z", "updated_at": "2026-11-25T16:07:19.123456Z"}})
}

fn fragment(id: i64, content_id: i64) -> serde_json::Value {
    json!({"table": "content_fragments", "op": "upsert", "id": id, "row": {
        "id": id, "learning_content_id": content_id, "native_text": "สวัสดี",
        "body_text": "hello", "ipa": null, "extra": null, "fragment_type": "word",
        "fragment_metadata": null, "created_at": null, "updated_at": null}})
}

fn ranking(id: i64, score: &str) -> serde_json::Value {
    json!({"table": "rankings", "op": "upsert", "id": id, "row": {
        "id": id, "fragment_id": 1, "asset_id": 1, "rank_score": score,
        "assessed_by": "nok", "assessment_notes": "clear",
        "created_at": null, "updated_at": null}})
}

fn asset(id: i64) -> serde_json::Value {
    json!({"table": "fragment_assets", "op": "upsert", "id": id, "row": {
        "id": id, "fragment_id": 1, "asset_type": "audio", "asset_metadata": {"voice": "th-TH"},
        "content_type": "audio/mpeg", "size": 3, "sha256": text_hash("abc"),
        "created_at": "2026-11-25T16:07:19Z", "created_by": "tts"}})
}

fn delete(table: &str, id: i64) -> serde_json::Value {
    json!({"table": table, "op": "delete", "id": id})
}

fn page(changes: Vec<serde_json::Value>, cursor: &str, has_more: bool, phase: &str) -> ChangePage {
    serde_json::from_value(json!({
        "changes": changes, "next_cursor": cursor, "has_more": has_more, "phase": phase}))
    .unwrap()
}

fn apply(
    store: &mut Store,
    from: Option<&str>,
    new_snapshot: bool,
    page: &ChangePage,
) -> Result<Applied> {
    store.apply_page(
        PageBase {
            expected_cursor: from,
            new_snapshot,
            source_url: "http://api",
        },
        page,
    )
}

fn ids(store: &Store, table: &str) -> Vec<i64> {
    let mut stmt = store
        .conn()
        .prepare(&format!("SELECT id FROM {table} ORDER BY id"))
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

fn unit_vector(hot: usize) -> Vec<f32> {
    let mut v = vec![0.0; DIMENSIONS];
    v[hot] = 1.0;
    v
}

#[test]
fn a_new_file_gets_the_whole_schema_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/agent.db");
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    let mode: String = store
        .conn()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let fk: bool = store
        .conn()
        .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
        .unwrap();
    assert!(fk);
    let version: String = store
        .conn()
        .query_row("SELECT vec_version()", [], |r| r.get(0))
        .unwrap();
    assert!(version.starts_with('v'), "{version}");
    assert_eq!(store.sync_state().unwrap().phase, SyncPhase::None);
    // Reopening an up-to-date file changes nothing.
    drop(store);
    assert_eq!(
        Store::open(&path).unwrap().schema_version().unwrap(),
        SCHEMA_VERSION
    );
}

#[test]
fn an_older_file_is_upgraded_in_place_keeping_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.db");
    {
        // A file as the first release wrote it.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO learning_content (id, title, content_type, native_text, translation, ipa)
             VALUES (5, 'old', 'phrase', 'น้ำ', 'water', 'náːm')",
            [],
        )
        .unwrap();
        conn.execute("UPDATE sync_state SET cursor = 'c-old', phase = 'log'", [])
            .unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(ids(&store, "learning_content"), vec![5]);
    assert_eq!(store.sync_state().unwrap().cursor.as_deref(), Some("c-old"));
    assert_eq!(store.counts().unwrap().anki_cards, 0);
    assert_eq!(store.counts().unwrap().cached_assets, 0);
}

#[test]
fn a_store_that_migrated_a_legacy_file_before_version_5_keeps_its_progress() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.db");
    {
        // A version 4 file on which an earlier agent ran `migrate`: it
        // created migration_progress itself, outside the versioned steps.
        register_sqlite_vec();
        let conn = Connection::open(&path).unwrap();
        for step in &MIGRATIONS[..4] {
            conn.execute_batch(step).unwrap();
        }
        conn.pragma_update(None, "user_version", 4).unwrap();
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS migration_progress (
                source     TEXT NOT NULL,
                table_name TEXT NOT NULL,
                id         INTEGER NOT NULL,
                checksum   TEXT NOT NULL,
                arrived_at TEXT NOT NULL,
                PRIMARY KEY (source, table_name, id)
            );
            INSERT INTO migration_progress
                VALUES ('/data/anki_vector_db.db', 'learning_content', 2, 'c2', '2026-01-05T10:00:00Z');",
        )
        .unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    let kept: (String, i64, String) = store
        .conn()
        .query_row(
            "SELECT table_name, id, checksum FROM migration_progress WHERE source = ?1",
            ["/data/anki_vector_db.db"],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(kept, ("learning_content".to_owned(), 2, "c2".to_owned()));
    let finished: i64 = store
        .conn()
        .query_row("SELECT count(*) FROM migration_finished", [], |r| r.get(0))
        .unwrap();
    assert_eq!(finished, 0, "an earlier migration is not taken as finished");
    // A fresh file gets both tables from the same step.
    let fresh = Store::open_in_memory().unwrap();
    for table in ["migration_progress", "migration_finished"] {
        let exists: bool = fresh
            .conn()
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
                [table],
                |r| r.get(0),
            )
            .unwrap();
        assert!(exists, "{table}");
    }
}

#[test]
fn a_file_from_a_newer_agent_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.db");
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::TooNew { .. }), "{err}");
    assert!(err.to_string().contains("upgrade local-agent"));
}

#[test]
fn legacy_anki_cards_and_vectors_copy_over_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let legacy_path = dir.path().join("anki_vector_db.db");
    register_sqlite_vec();
    let legacy = Connection::open(&legacy_path).unwrap();
    legacy.execute_batch(&legacy_schema()).unwrap();
    legacy.execute_batch(LEGACY_VECTORS).unwrap();
    // Rows as the Python application wrote them: naive datetimes, JSON
    // as text, a NULL note id and a card for a fragment.
    legacy
        .execute_batch(
            r#"
            INSERT INTO anki_cards VALUES (1, 10, NULL, 1700000000001, 'Thai::Phrases', 'Thai Basic',
                '{"Front": "สวัสดี", "Back": "hello"}', 'ab12', 'synced',
                '2025-03-01 12:34:56.123456', '2025-03-01 12:34:56', '2025-03-01T12:34:56Z');
            INSERT INTO anki_cards VALUES (2, 10, 7, NULL, 'Thai::Words', 'Thai Basic', '{}', NULL,
                'pending', NULL, NULL, NULL);
            INSERT INTO vector_embeddings VALUES (3, 'content_fragment', 7, 'all-MiniLM-L6-v2', 384,
                'deadbeef', '2025-03-01 12:34:56.123456');
            "#,
        )
        .unwrap();
    legacy
        .execute(
            "INSERT INTO vec_embeddings (rowid, embedding) VALUES (3, ?1)",
            [vector_blob(&unit_vector(9))],
        )
        .unwrap();
    drop(legacy);

    let store = Store::open(&dir.path().join("agent.db")).unwrap();
    store
        .conn()
        .execute(
            "ATTACH DATABASE ?1 AS legacy",
            [legacy_path.to_str().unwrap()],
        )
        .unwrap();
    store
        .conn()
        .execute_batch(
            "INSERT INTO anki_cards SELECT * FROM legacy.anki_cards;
             INSERT INTO vector_embeddings SELECT * FROM legacy.vector_embeddings;
             INSERT INTO vec_embeddings (rowid, embedding, model, source_type)
               SELECT v.rowid, v.embedding, e.model, e.source_type
               FROM legacy.vec_embeddings v JOIN legacy.vector_embeddings e ON e.id = v.rowid;",
        )
        .unwrap();
    let same = |table: &str| -> bool {
        store
            .conn()
            .query_row(
                &format!(
                    "SELECT NOT EXISTS (SELECT * FROM legacy.{table} EXCEPT SELECT * FROM main.{table})
                        AND NOT EXISTS (SELECT * FROM main.{table} EXCEPT SELECT * FROM legacy.{table})"
                ),
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    assert!(same("anki_cards"));
    assert!(same("vector_embeddings"));
    let blob: Vec<u8> = store
        .conn()
        .query_row(
            "SELECT embedding FROM vec_embeddings WHERE rowid = 3",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(blob, vector_blob(&unit_vector(9)));
}

#[test]
fn a_snapshot_then_log_pages_mirror_upserts_and_tombstones() {
    let mut store = Store::open_in_memory().unwrap();
    let p1 = page(
        vec![content(1, "a"), content(2, "b")],
        "c1",
        true,
        "snapshot",
    );
    let p2 = page(
        vec![fragment(1, 1), asset(1), ranking(1, "4.50")],
        "c2",
        false,
        "snapshot",
    );
    let a1 = apply(&mut store, None, true, &p1).unwrap();
    assert_eq!(a1.upserts, 2);
    assert!(!a1.snapshot_completed);
    assert_eq!(store.sync_state().unwrap().phase, SyncPhase::Snapshot);
    let a2 = apply(&mut store, Some("c1"), false, &p2).unwrap();
    assert!(a2.snapshot_completed);
    let state = store.sync_state().unwrap();
    assert_eq!(state.phase, SyncPhase::Log);
    assert_eq!(state.cursor.as_deref(), Some("c2"));
    assert!(state.caught_up_at.is_some());

    let (tags, meta, score, hundredths): (String, String, String, i64) = store
        .conn()
        .query_row(
            "SELECT c.tags, c.content_metadata, r.rank_score, r.rank_hundredths
             FROM learning_content c, rankings r WHERE c.id = 1 AND r.id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(tags, r#"["greeting"]"#);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&meta).unwrap(),
        json!({"a": null, "b": 1.5})
    );
    assert_eq!((score.as_str(), hundredths), ("4.50", 450));

    let p3 = page(
        vec![
            content(2, "b2"),
            delete("learning_content", 1),
            ranking(1, "3"),
        ],
        "c3",
        false,
        "log",
    );
    let a3 = apply(&mut store, Some("c2"), false, &p3).unwrap();
    assert_eq!((a3.upserts, a3.deletes, a3.swept), (2, 1, 0));
    // The content counts as a text to embed, the ranking does not.
    assert_eq!(a3.text_upserts, 1);
    assert_eq!(ids(&store, "learning_content"), vec![2]);
    let title: String = store
        .conn()
        .query_row("SELECT title FROM learning_content WHERE id = 2", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(title, "b2");
}

#[test]
fn a_new_snapshot_sweeps_rows_it_did_not_deliver() {
    let mut store = Store::open_in_memory().unwrap();
    let first = page(
        vec![
            content(1, "a"),
            content(2, "b"),
            fragment(1, 1),
            fragment(2, 2),
        ],
        "c1",
        false,
        "snapshot",
    );
    apply(&mut store, None, true, &first).unwrap();
    // A re-snapshot (after a 410) in which content 2 and fragment 2 are
    // gone; it ends with a log page.
    let again = page(
        vec![content(1, "a"), fragment(1, 1)],
        "s1",
        true,
        "snapshot",
    );
    let a = apply(&mut store, Some("c1"), true, &again).unwrap();
    assert_eq!(a.swept, 0);
    // Still in the snapshot: nothing is swept yet.
    assert_eq!(ids(&store, "learning_content"), vec![1, 2]);
    let end = page(vec![], "l1", false, "log");
    let a = apply(&mut store, Some("s1"), false, &end).unwrap();
    assert_eq!(a.swept, 2);
    assert!(a.snapshot_completed);
    assert_eq!(ids(&store, "learning_content"), vec![1]);
    assert_eq!(ids(&store, "content_fragments"), vec![1]);
    assert_eq!(store.sync_state().unwrap().snapshot_gen, 2);
}

#[test]
fn a_page_is_all_or_nothing() {
    let mut store = Store::open_in_memory().unwrap();
    apply(
        &mut store,
        None,
        true,
        &page(vec![content(1, "a")], "c1", false, "snapshot"),
    )
    .unwrap();
    let mut broken = fragment(9, 1);
    broken["row"]["native_text"] = json!(42);
    let bad = page(vec![content(2, "b"), broken], "c2", false, "log");
    let err = apply(&mut store, Some("c1"), false, &bad).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::BadRow {
                table: "content_fragments",
                id: 9,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(ids(&store, "learning_content"), vec![1]);
    assert_eq!(store.sync_state().unwrap().cursor.as_deref(), Some("c1"));
}

#[test]
fn a_page_from_a_stale_cursor_is_refused() {
    let mut store = Store::open_in_memory().unwrap();
    let p = page(vec![content(1, "a")], "c1", false, "snapshot");
    apply(&mut store, None, true, &p).unwrap();
    let err = apply(&mut store, None, false, &p).unwrap_err();
    assert!(matches!(err, StoreError::CursorMoved), "{err}");
}

#[test]
fn unknown_tables_are_skipped_not_fatal() {
    let mut store = Store::open_in_memory().unwrap();
    let p = page(
        vec![
            json!({"table": "decks", "op": "upsert", "id": 1, "row": {}}),
            content(1, "a"),
        ],
        "c1",
        false,
        "snapshot",
    );
    let a = apply(&mut store, None, true, &p).unwrap();
    assert_eq!((a.upserts, a.skipped), (1, 1));
}

#[test]
fn vectors_are_replaced_in_place_and_leave_with_their_rows() {
    let mut store = Store::open_in_memory().unwrap();
    let p = page(
        vec![content(1, "a"), fragment(1, 1), fragment(2, 1)],
        "c1",
        false,
        "snapshot",
    );
    apply(&mut store, None, true, &p).unwrap();
    let (v1, v2) = (unit_vector(1), unit_vector(2));
    let stored = store
        .put_vectors(
            "m",
            &[
                NewVector {
                    kind: SourceKind::Fragment,
                    id: 1,
                    text_hash: "h1",
                    vector: &v1,
                },
                NewVector {
                    kind: SourceKind::Fragment,
                    id: 2,
                    text_hash: "h2",
                    vector: &v2,
                },
                // Its row is not mirrored: skipped, not orphaned.
                NewVector {
                    kind: SourceKind::Fragment,
                    id: 99,
                    text_hash: "h",
                    vector: &v2,
                },
            ],
        )
        .unwrap();
    assert_eq!(stored, 2);
    let id_before: i64 = store
        .conn()
        .query_row(
            "SELECT id FROM vector_embeddings WHERE source_id = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    store
        .put_vectors(
            "m",
            &[NewVector {
                kind: SourceKind::Fragment,
                id: 1,
                text_hash: "h1b",
                vector: &v2,
            }],
        )
        .unwrap();
    let (id_after, hash): (i64, String) = store
        .conn()
        .query_row(
            "SELECT id, text_hash FROM vector_embeddings WHERE source_id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((id_after, hash.as_str()), (id_before, "h1b"));
    let blob: Vec<u8> = store
        .conn()
        .query_row(
            "SELECT embedding FROM vec_embeddings WHERE rowid = ?1",
            [id_after],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(blob, vector_blob(&v2));

    // A tombstone takes the fragment's vector (and its index entry) along.
    let p = page(vec![delete("content_fragments", 2)], "c2", false, "log");
    apply(&mut store, Some("c1"), false, &p).unwrap();
    let count = |sql: &str| -> i64 { store.conn().query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(count("SELECT count(*) FROM vector_embeddings"), 1);
    assert_eq!(count("SELECT count(*) FROM vec_embeddings"), 1);

    let wrong = vec![0.5; 3];
    let err = store
        .put_vectors(
            "m",
            &[NewVector {
                kind: SourceKind::Content,
                id: 1,
                text_hash: "x",
                vector: &wrong,
            }],
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::Dimensions { got: 3, .. }));
}

#[test]
fn orphan_vectors_are_pruned() {
    let mut store = Store::open_in_memory().unwrap();
    store
        .conn()
        .execute(
            "INSERT INTO vector_embeddings VALUES (7, 'learning_content', 70, 'm', 384, 'h', NULL)",
            [],
        )
        .unwrap();
    store
        .conn()
        .execute(
            "INSERT INTO vec_embeddings (rowid, embedding, model, source_type)
             VALUES (7, ?1, 'm', 'learning_content'), (8, ?1, 'm', 'learning_content')",
            [vector_blob(&unit_vector(0))],
        )
        .unwrap();
    assert_eq!(store.prune_orphan_vectors().unwrap(), 1);
    let left: i64 = store
        .conn()
        .query_row("SELECT count(*) FROM vec_embeddings", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0);
}

#[test]
fn cached_asset_bytes_are_checked_against_their_digest() {
    let mut store = Store::open_in_memory().unwrap();
    let err = store
        .put_cached_asset(&text_hash("abc"), b"abd")
        .unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { .. }));
    store.put_cached_asset(&text_hash("abc"), b"abc").unwrap();
    assert_eq!(
        store.cached_asset(&text_hash("abc")).unwrap().as_deref(),
        Some(&b"abc"[..])
    );
    // No mirrored asset refers to it: pruned.
    assert_eq!(store.prune_asset_cache().unwrap(), 1);
}

#[test]
fn a_column_the_model_gained_is_added_and_the_next_pull_reads_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.db");
    {
        let mut store = Store::open(&path).unwrap();
        let p = page(vec![fragment(1, 1)], "c1", false, "log");
        apply(&mut store, None, true, &p).unwrap();
        // A file written before `extra` was part of the model.
        store
            .conn()
            .execute_batch("ALTER TABLE content_fragments DROP COLUMN extra")
            .unwrap();
    }
    let mut store = Store::open(&path).unwrap();
    let columns: Vec<String> = store
        .conn()
        .prepare("SELECT name FROM pragma_table_info('content_fragments')")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert!(columns.contains(&"extra".to_owned()), "{columns:?}");
    assert_eq!(ids(&store, "content_fragments"), vec![1]);
    let state = store.sync_state().unwrap();
    assert_eq!(
        state.cursor, None,
        "the mirror must be read again to fill the column"
    );

    let mut with_extra = fragment(1, 1);
    with_extra["row"]["extra"] = json!("a note");
    let p = page(vec![with_extra], "c2", false, "log");
    apply(&mut store, None, true, &p).unwrap();
    let extra: String = store
        .conn()
        .query_row(
            "SELECT extra FROM content_fragments WHERE id = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(extra, "a note");

    // Opening an up-to-date file again changes nothing.
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.sync_state().unwrap().cursor.as_deref(), Some("c2"));
}

#[test]
fn rows_are_checked_against_the_model() {
    let mut store = Store::open_in_memory().unwrap();
    let mut missing = content(1, "a");
    missing["row"].as_object_mut().unwrap().remove("ipa");
    let mut null = content(2, "b");
    null["row"]["title"] = json!(null);
    let mut score = ranking(3, "4.5");
    score["row"]["rank_score"] = json!("four");
    for (change, field) in [(missing, "ipa"), (null, "title"), (score, "rank_score")] {
        let err = apply(
            &mut store,
            None,
            true,
            &page(vec![change], "c1", false, "snapshot"),
        )
        .unwrap_err();
        match err {
            StoreError::BadRow { reason, .. } => assert!(reason.contains(field), "{reason}"),
            other => panic!("{other}"),
        }
    }
    // A member the model does not know (a newer server) is ignored; a
    // nullable member may be absent.
    let mut newer = content(4, "d");
    newer["row"]["audio_voice"] = json!("th-TH-Premwadee");
    newer["row"].as_object_mut().unwrap().remove("tags");
    let a = apply(
        &mut store,
        None,
        true,
        &page(vec![newer, ranking(5, "4.35")], "c1", false, "snapshot"),
    )
    .unwrap();
    assert_eq!(a.upserts, 2);
    let (text, hundredths): (String, i64) = store
        .conn()
        .query_row(
            "SELECT rank_score, rank_hundredths FROM rankings WHERE id = 5",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((text.as_str(), hundredths), ("4.35", 435));
}
