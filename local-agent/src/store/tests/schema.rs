use super::*;
use legacy_fixture::{LEGACY_VECTORS, legacy_schema};

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
fn a_version_5_file_keeps_its_384_d_vectors_and_gains_their_bits_and_any_dimension() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.db");
    {
        // A version 5 file holding the legacy file's vectors (copied by
        // `migrate`) and the built-in model's, in the one 384-d vec0 table.
        register_sqlite_vec();
        let conn = Connection::open(&path).unwrap();
        for step in &MIGRATIONS[..5] {
            conn.execute_batch(step).unwrap();
        }
        conn.pragma_update(None, "user_version", 5).unwrap();
        for id in 1..=4 {
            conn.execute(
                "INSERT INTO content_fragments (id, native_text, body_text, fragment_type)
                 VALUES (?1, 'น้ำ', 'water', 'word')",
                [id],
            )
            .unwrap();
        }
        for (id, model, source) in [
            (1, "all-MiniLM-L6-v2", 1),
            (2, "all-MiniLM-L6-v2", 2),
            (3, "hashed-ngrams-v1", 1),
            (4, "hashed-ngrams-v1", 2),
        ] {
            conn.execute(
                "INSERT INTO vector_embeddings VALUES (?1, 'content_fragment', ?2, ?3, 384, 'h', NULL)",
                rusqlite::params![id, source, model],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO vec_embeddings (rowid, embedding, model, source_type)
                 VALUES (?1, ?2, ?3, 'content_fragment')",
                rusqlite::params![id, vector_blob(&unit_vector(id as usize)), model],
            )
            .unwrap();
        }
    }
    let mut store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    let count = |store: &Store, sql: &str| -> i64 {
        store.conn().query_row(sql, [], |r| r.get(0)).unwrap()
    };
    assert_eq!(count(&store, "SELECT count(*) FROM vec_embeddings"), 4);
    assert_eq!(count(&store, "SELECT count(*) FROM vec_bits_384"), 4);
    let blob: Vec<u8> = store
        .conn()
        .query_row(
            "SELECT embedding FROM vec_embeddings WHERE rowid = 2",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        blob,
        vector_blob(&unit_vector(2)),
        "the float vector is untouched"
    );
    let bits: Vec<u8> = store
        .conn()
        .query_row(
            "SELECT embedding FROM vec_bits_384 WHERE rowid = 2",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(bits, quantize_binary(&unit_vector(2)));
    // Both plans find the legacy model's vector, and only that model's.
    for plan in [SearchPlan::Exact, SearchPlan::Coarse { candidates: 5 }] {
        let hits = store
            .nearest_with(
                "all-MiniLM-L6-v2",
                &unit_vector(2),
                SourceKind::Fragment,
                5,
                plan,
            )
            .unwrap();
        let ids: Vec<i64> = hits.iter().flatten().map(|h| h.id).collect();
        assert_eq!(ids, [2, 1], "{plan:?}");
    }
    // A 768-d model joins them; the old vectors stay.
    let wide = vec![0.5f32; 768];
    store
        .put_vectors(
            "wide-768",
            &[NewVector {
                kind: SourceKind::Fragment,
                id: 1,
                text_hash: "h",
                vector: &wide,
            }],
        )
        .unwrap();
    assert_eq!(count(&store, "SELECT count(*) FROM vec_embeddings"), 4);
    assert_eq!(count(&store, "SELECT count(*) FROM vec_embeddings_768"), 1);
    // Deleting a legacy vector's row still takes its float and its bits.
    store
        .conn()
        .execute("DELETE FROM vector_embeddings WHERE id = 1", [])
        .unwrap();
    assert_eq!(count(&store, "SELECT count(*) FROM vec_embeddings"), 3);
    assert_eq!(count(&store, "SELECT count(*) FROM vec_bits_384"), 3);
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
