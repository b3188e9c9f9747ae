//! The file's schema, one forward-only migration per version.

use rusqlite::TransactionBehavior;

use super::{Result, Store, StoreError};

/// The schema, one migration per version: `MIGRATIONS[n]` takes the file
/// from version `n` to `n + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: the mirror and the sync state.
    //
    // No foreign keys between mirror tables: the feed may deliver a child
    // before its parent (a concurrent change during a snapshot), and the
    // server's cascades arrive as tombstones of their own.
    //
    // `sync_gen` is the snapshot generation that last delivered the row; at
    // the end of a snapshot every row of an older generation is one the
    // server no longer has.
    r#"
    CREATE TABLE learning_content (
        id               INTEGER PRIMARY KEY,
        title            TEXT NOT NULL,
        content_type     TEXT NOT NULL,
        language         TEXT NOT NULL DEFAULT 'thai',
        native_text      TEXT NOT NULL,
        translation      TEXT NOT NULL,
        ipa              TEXT NOT NULL,
        difficulty_level INTEGER,
        tags             TEXT,
        content_metadata TEXT,
        created_at       TEXT,
        updated_at       TEXT,
        sync_gen         INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX idx_learning_content_type     ON learning_content (content_type);
    CREATE INDEX idx_learning_content_language ON learning_content (language);
    CREATE INDEX idx_learning_content_gen      ON learning_content (sync_gen);

    CREATE TABLE content_fragments (
        id                  INTEGER PRIMARY KEY,
        learning_content_id INTEGER,
        native_text         TEXT NOT NULL,
        body_text           TEXT NOT NULL,
        ipa                 TEXT,
        extra               TEXT,
        fragment_type       TEXT NOT NULL,
        fragment_metadata   TEXT,
        created_at          TEXT,
        updated_at          TEXT,
        sync_gen            INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX idx_fragment_content ON content_fragments (learning_content_id);
    CREATE INDEX idx_fragment_type    ON content_fragments (fragment_type);
    CREATE INDEX idx_fragment_gen     ON content_fragments (sync_gen);

    CREATE TABLE fragment_assets (
        id             INTEGER PRIMARY KEY,
        fragment_id    INTEGER,
        asset_type     TEXT NOT NULL,
        asset_metadata TEXT,
        content_type   TEXT,
        size           INTEGER NOT NULL,
        sha256         TEXT NOT NULL,
        created_at     TEXT,
        created_by     TEXT,
        sync_gen       INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX idx_fragment_asset_type ON fragment_assets (fragment_id, asset_type);
    CREATE INDEX idx_fragment_asset_gen  ON fragment_assets (sync_gen);

    -- rank_score is the server's exact decimal text; rank_hundredths the
    -- same value as an integer, for ordering without floats.
    CREATE TABLE rankings (
        id               INTEGER PRIMARY KEY,
        fragment_id      INTEGER,
        asset_id         INTEGER,
        rank_score       TEXT,
        rank_hundredths  INTEGER,
        assessed_by      TEXT NOT NULL,
        assessment_notes TEXT,
        created_at       TEXT,
        updated_at       TEXT,
        sync_gen         INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX idx_rankings_fragment ON rankings (fragment_id);
    CREATE INDEX idx_rankings_asset    ON rankings (asset_id);
    CREATE INDEX idx_rankings_gen      ON rankings (sync_gen);

    CREATE TABLE sync_state (
        singleton           INTEGER PRIMARY KEY CHECK (singleton = 1),
        source_url          TEXT,
        cursor              TEXT,
        phase               TEXT NOT NULL DEFAULT 'none' CHECK (phase IN ('none', 'snapshot', 'log')),
        snapshot_gen        INTEGER NOT NULL DEFAULT 0,
        snapshot_started_at TEXT,
        last_pull_at        TEXT,
        caught_up_at        TEXT
    );
    INSERT INTO sync_state (singleton) VALUES (1);
    "#,
    // 2: the Anki card map and the embeddings, exactly as the legacy file
    // declares them so that its rows can be copied over unchanged.
    //
    // The vec0 table adds two metadata columns to the legacy
    // `vec0(embedding float[384])`: a KNN query must only compare vectors of
    // one model (distances between models mean nothing) and of one kind,
    // and filtering after the KNN would starve k. A legacy vector is copied
    // with both taken from its vector_embeddings row.
    r#"
    CREATE TABLE anki_cards (
        id INTEGER NOT NULL,
        learning_content_id INTEGER,
        fragment_id INTEGER,
        anki_note_id INTEGER,
        deck_name VARCHAR(200) NOT NULL,
        note_type VARCHAR(100) NOT NULL,
        fields JSON NOT NULL,
        content_hash VARCHAR(64),
        sync_status VARCHAR(20) NOT NULL DEFAULT 'pending',
        last_synced_at DATETIME,
        created_at DATETIME,
        updated_at DATETIME,
        PRIMARY KEY (id),
        UNIQUE (anki_note_id)
    );
    CREATE INDEX idx_anki_cards_content ON anki_cards (learning_content_id);
    CREATE INDEX idx_anki_cards_fragment ON anki_cards (fragment_id);

    CREATE TABLE vector_embeddings (
        id INTEGER NOT NULL,
        source_type VARCHAR(50) NOT NULL,
        source_id INTEGER NOT NULL,
        model VARCHAR(100) NOT NULL,
        dimensions INTEGER NOT NULL,
        text_hash VARCHAR(64) NOT NULL,
        created_at DATETIME,
        PRIMARY KEY (id),
        UNIQUE (source_type, source_id, model)
    );

    CREATE VIRTUAL TABLE vec_embeddings USING vec0(
        embedding float[384],
        model text partition key,
        source_type text
    );

    -- A row that leaves the mirror (tombstone or snapshot sweep) takes its
    -- vectors with it, whoever deletes it.
    CREATE TRIGGER learning_content_drop_vectors AFTER DELETE ON learning_content BEGIN
        DELETE FROM vec_embeddings WHERE rowid IN (
            SELECT id FROM vector_embeddings
            WHERE source_type = 'learning_content' AND source_id = OLD.id);
        DELETE FROM vector_embeddings
            WHERE source_type = 'learning_content' AND source_id = OLD.id;
    END;
    CREATE TRIGGER content_fragments_drop_vectors AFTER DELETE ON content_fragments BEGIN
        DELETE FROM vec_embeddings WHERE rowid IN (
            SELECT id FROM vector_embeddings
            WHERE source_type = 'content_fragment' AND source_id = OLD.id);
        DELETE FROM vector_embeddings
            WHERE source_type = 'content_fragment' AND source_id = OLD.id;
    END;
    "#,
    // 3: asset bytes, cached by digest: two assets with the same bytes share
    // one entry, and a metadata update does not invalidate it.
    r#"
    CREATE TABLE asset_cache (
        sha256    TEXT PRIMARY KEY,
        data      BLOB NOT NULL,
        cached_at TEXT NOT NULL
    );
    "#,
    // 4: vec0 answers `rowid IN (subquery)` by scanning every vector, so
    // the version 2 triggers cost a full scan per deleted row (18 ms each
    // at 80k vectors: a pull of 2,000 tombstones took 35 s). A point delete
    // by rowid is a lookup: the vector now leaves with its metadata row,
    // whoever deletes that.
    r#"
    DROP TRIGGER learning_content_drop_vectors;
    DROP TRIGGER content_fragments_drop_vectors;
    CREATE TRIGGER vector_embeddings_drop_vector AFTER DELETE ON vector_embeddings BEGIN
        DELETE FROM vec_embeddings WHERE rowid = OLD.id;
    END;
    CREATE TRIGGER learning_content_drop_vectors AFTER DELETE ON learning_content BEGIN
        DELETE FROM vector_embeddings
            WHERE source_type = 'learning_content' AND source_id = OLD.id;
    END;
    CREATE TRIGGER content_fragments_drop_vectors AFTER DELETE ON content_fragments BEGIN
        DELETE FROM vector_embeddings
            WHERE source_type = 'content_fragment' AND source_id = OLD.id;
    END;
    "#,
    // 5: what `local-agent migrate` moved, per legacy file (`source`, its
    // canonical path). `migration_progress` holds each row that arrived,
    // with the checksum it left with; earlier agents created it on their
    // first migration with exactly this definition, hence IF NOT EXISTS.
    // `migration_finished` marks a migration whose verification passed: a
    // later run only checks and reports, and does not undo what the server
    // or the agent changed since. `fingerprint` is the sha256 of every
    // migrated row's table, id and checksum, so a re-run can tell whether
    // the legacy file changed since.
    r#"
    CREATE TABLE IF NOT EXISTS migration_progress (
        source     TEXT NOT NULL,
        table_name TEXT NOT NULL,
        id         INTEGER NOT NULL,
        checksum   TEXT NOT NULL,
        arrived_at TEXT NOT NULL,
        PRIMARY KEY (source, table_name, id)
    );
    CREATE TABLE migration_finished (
        source      TEXT PRIMARY KEY,
        finished_at TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        rows        INTEGER NOT NULL,
        api_url     TEXT NOT NULL,
        checked_at  TEXT
    );
    "#,
    // 6: vectors of any dimension. Each dimension gets its own pair of vec0
    // tables (floats, and the same vectors binary-quantised for the coarse
    // scan of large collections), listed in `vector_tables`; the 384-d
    // floats stay where they are (`vec_embeddings`, the legacy file's
    // vectors among them) and get their bit table, filled from them here.
    // Further dimensions are added by the store when a vector of that size
    // first arrives (store/vector_tables.rs). Both keys are partition keys
    // there: sqlite-vec 0.1.9 checks a metadata column row by row, which cost
    // the coarse scan of 100k vectors six times its time. The index serves the count
    // that picks exact or coarse search, and the status by model.
    r#"
    CREATE TABLE vector_tables (
        dimensions  INTEGER PRIMARY KEY,
        float_table TEXT NOT NULL UNIQUE,
        bit_table   TEXT UNIQUE
    );
    INSERT INTO vector_tables (dimensions, float_table, bit_table)
        VALUES (384, 'vec_embeddings', 'vec_bits_384');
    CREATE VIRTUAL TABLE vec_bits_384 USING vec0(
        embedding bit[384],
        model text partition key,
        source_type text partition key
    );
    INSERT INTO vec_bits_384 (rowid, embedding, model, source_type)
        SELECT rowid, vec_quantize_binary(embedding), model, source_type FROM vec_embeddings;
    DROP TRIGGER vector_embeddings_drop_vector;
    CREATE TRIGGER vector_embeddings_drop_vector_384 AFTER DELETE ON vector_embeddings BEGIN
        DELETE FROM vec_embeddings WHERE rowid = OLD.id;
        DELETE FROM vec_bits_384 WHERE rowid = OLD.id;
    END;
    CREATE INDEX idx_vector_embeddings_model
        ON vector_embeddings (model, dimensions, source_type);
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

impl Store {
    /// Brings the file's schema up to [`SCHEMA_VERSION`].
    pub(super) fn migrate(&mut self) -> Result<()> {
        let found = self.schema_version()?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                found,
                known: SCHEMA_VERSION,
            });
        }
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let version = index as i64 + 1;
            let wrap = |source| StoreError::Migrate { version, source };
            // Each step commits with its version number, so an interrupted
            // upgrade resumes at the step that did not finish.
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Exclusive)
                .map_err(wrap)?;
            // Re-checked under the lock: another process may have upgraded
            // the file since we looked.
            let current: i64 = tx
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(wrap)?;
            if current >= version {
                continue;
            }
            tx.execute_batch(sql).map_err(wrap)?;
            tx.pragma_update(None, "user_version", version)
                .map_err(wrap)?;
            tx.commit().map_err(wrap)?;
        }
        self.widen_mirror()
    }
}
