//! The agent's one SQLite file: a read mirror of the four content tables,
//! the sync state of the change feed, the Anki card map, the embeddings and
//! their sqlite-vec index.
//!
//! The schema is versioned with `PRAGMA user_version` and upgraded in place
//! by forward-only migrations ([`MIGRATIONS`]); an applied migration is never
//! edited, a change is a new entry.
//!
//! ```
//! let store = local_agent::store::Store::open_in_memory().unwrap();
//! assert_eq!(store.schema_version().unwrap(), local_agent::store::SCHEMA_VERSION);
//! ```

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::feed::{
    AssetRow, Change, ChangePage, ContentRow, FragmentRow, Op, Phase, RankingRow, Table, json_text,
};

/// Dimensions of every vector in `vec_embeddings` (the legacy table's size).
pub const DIMENSIONS: usize = 384;

/// How long a writer waits for another one (a concurrent `pull` or `embed`)
/// before giving up with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

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
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("cannot open the store {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot create the directory {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the store has schema version {found}, newer than this local-agent knows ({known}); \
         upgrade local-agent or point --db at another file"
    )]
    TooNew { found: i64, known: i64 },
    #[error("upgrading the store to schema version {version}: {source}")]
    Migrate {
        version: i64,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "another pull moved the cursor while this one ran; nothing was lost, \
         run `local-agent pull` again"
    )]
    CursorMoved,
    #[error(
        "the server sent a {table} row (id {id}) this agent cannot read: {reason}; \
         upgrade local-agent if the API changed"
    )]
    BadRow {
        table: &'static str,
        id: i64,
        reason: String,
    },
    #[error("the cached bytes do not have the sha256 {expected} they claim")]
    DigestMismatch { expected: String },
    #[error("a vector has {got} dimensions; the store holds {expected}-dimensional vectors")]
    Dimensions { got: usize, expected: usize },
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Where the mirror stands in the change feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncPhase {
    /// Never pulled.
    None,
    /// Inside a full snapshot: rows not delivered yet may be stale.
    Snapshot,
    /// Following the log: the mirror equals the server as of the cursor.
    Log,
}

impl SyncPhase {
    fn as_str(self) -> &'static str {
        match self {
            SyncPhase::None => "none",
            SyncPhase::Snapshot => "snapshot",
            SyncPhase::Log => "log",
        }
    }

    fn parse(s: &str) -> SyncPhase {
        match s {
            "snapshot" => SyncPhase::Snapshot,
            "log" => SyncPhase::Log,
            _ => SyncPhase::None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncState {
    /// The API the mirror follows; a cursor means nothing to another one.
    pub source_url: Option<String>,
    pub cursor: Option<String>,
    pub phase: SyncPhase,
    pub snapshot_gen: i64,
    pub snapshot_started_at: Option<String>,
    pub last_pull_at: Option<String>,
    pub caught_up_at: Option<String>,
}

/// What the page being applied continues from.
#[derive(Debug, Clone, Copy)]
pub struct PageBase<'a> {
    /// The cursor this pull read from the store before fetching the page;
    /// applying fails if another pull moved it meanwhile.
    pub expected_cursor: Option<&'a str>,
    /// The page was fetched without a cursor: it opens a new snapshot.
    pub new_snapshot: bool,
    pub source_url: &'a str,
}

/// What applying one page did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Applied {
    pub upserts: usize,
    /// Of the upserts, contents and fragments: rows whose text may need a
    /// new vector.
    pub text_upserts: usize,
    pub deletes: usize,
    /// Rows removed at the end of a snapshot because it did not deliver them.
    pub swept: usize,
    /// Changes for tables this agent does not mirror.
    pub skipped: usize,
    pub snapshot_completed: bool,
}

/// Which mirror table a vector belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Content,
    Fragment,
}

impl SourceKind {
    /// The `vector_embeddings.source_type` value, as the legacy file writes it.
    pub fn source_type(self) -> &'static str {
        match self {
            SourceKind::Content => "learning_content",
            SourceKind::Fragment => "content_fragment",
        }
    }
}

/// A row whose text may need a (new) vector.
#[derive(Debug, Clone)]
pub struct EmbedSource {
    pub kind: SourceKind,
    pub id: i64,
    pub text: String,
    /// sha256 of the text the stored vector of this model was made from.
    pub stored_hash: Option<String>,
}

/// A computed vector ready to be stored.
#[derive(Debug, Clone)]
pub struct NewVector<'a> {
    pub kind: SourceKind,
    pub id: i64,
    pub text_hash: &'a str,
    pub vector: &'a [f32],
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub learning_content: i64,
    pub content_fragments: i64,
    pub fragment_assets: i64,
    pub rankings: i64,
    pub cached_assets: i64,
    pub anki_cards: i64,
    pub vectors: Vec<VectorCount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VectorCount {
    pub model: String,
    pub source_type: String,
    pub count: i64,
}

/// The sha256 of a text, as lowercase hex (the `text_hash` column).
pub fn text_hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Little-endian f32s, the blob layout sqlite-vec reads for `float[N]`.
pub fn vector_blob(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Environment variable naming a fault to inject, `<point>:<n>`: the
/// process aborts (as abruptly as a SIGKILL: no destructor, no rollback) the
/// n-th time it reaches `<point>`. The crash tests use it to stop the agent
/// at the one moment that matters, with a page written but not committed,
/// which a kill from outside only hits by luck.
pub const FAILPOINT_ENV: &str = "LOCAL_AGENT_FAILPOINT";

pub(crate) fn failpoint(point: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static ARMED: std::sync::OnceLock<Option<(String, u64)>> = std::sync::OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);
    let armed = ARMED.get_or_init(|| {
        let spec = std::env::var(FAILPOINT_ENV).ok()?;
        let (name, n) = spec.split_once(':')?;
        Some((name.to_owned(), n.parse().ok()?))
    });
    if let Some((name, n)) = armed
        && name == point
        && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *n
    {
        std::process::abort();
    }
}

/// Makes sqlite-vec part of every connection this process opens.
#[allow(unsafe_code)] // FFI registration of the statically linked extension
fn register_sqlite_vec() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // SAFETY: sqlite3_vec_init is the extension's C entry point with the
        // signature sqlite3_auto_extension expects (db, pzErrMsg, pApi); the
        // crate declares it without arguments only to avoid a libsqlite3-sys
        // dependency. It is linked statically and lives as long as the process.
        let rc = unsafe {
            rusqlite::ffi::sqlite3_auto_extension(Some(std::mem::transmute::<
                *const (),
                unsafe extern "C" fn(
                    *mut rusqlite::ffi::sqlite3,
                    *mut *mut std::ffi::c_char,
                    *const rusqlite::ffi::sqlite3_api_routines,
                ) -> std::ffi::c_int,
            >(
                sqlite_vec::sqlite3_vec_init as *const ()
            )))
        };
        assert_eq!(rc, rusqlite::ffi::SQLITE_OK, "registering sqlite-vec");
    });
}

/// An open store.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating if needed) the store at `path` and brings its schema
    /// up to date.
    pub fn open(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        register_sqlite_vec();
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        Self::setup(conn, true)
    }

    /// A store that lives in memory, for tests and dry runs.
    pub fn open_in_memory() -> Result<Store> {
        register_sqlite_vec();
        Self::setup(Connection::open_in_memory()?, false)
    }

    fn setup(conn: Connection, wal: bool) -> Result<Store> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        if wal {
            // WAL lets `status` and `search` read while a pull writes, and
            // a commit is one append: a kill never leaves a torn page.
            let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
            debug_assert_eq!(mode.to_lowercase(), "wal");
            // NORMAL in WAL mode is durable against a process kill (the
            // case that matters for an agent) and skips an fsync per commit.
            conn.pragma_update(None, "synchronous", "NORMAL")?;
        }
        conn.pragma_update(None, "foreign_keys", true)?;
        // A KNN query reads every vector of its model (150 MB at 100k):
        // through the default 2 MB page cache that is a copy and a read
        // call per page, through a memory map it is neither (search about twice as
        // fast). Reads only; writes still go through the WAL.
        conn.pragma_update(None, "mmap_size", 1i64 << 30)?;
        let mut store = Store { conn };
        store.migrate()?;
        Ok(store)
    }

    /// The raw connection, for the modules that query the store.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// The file's `user_version`.
    pub fn schema_version(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    fn migrate(&mut self) -> Result<()> {
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
        Ok(())
    }

    pub fn sync_state(&self) -> Result<SyncState> {
        read_sync_state(&self.conn)
    }

    /// Applies one feed page and moves the cursor past it, atomically: after
    /// a crash the store holds either the page and its cursor or neither.
    pub fn apply_page(&mut self, base: PageBase<'_>, page: &ChangePage) -> Result<Applied> {
        // IMMEDIATE takes the write lock before reading the cursor, so two
        // pulls cannot both read it and then both apply.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let state = read_sync_state(&tx)?;
        if state.cursor.as_deref() != base.expected_cursor {
            return Err(StoreError::CursorMoved);
        }
        let mut generation = state.snapshot_gen;
        let mut phase = state.phase;
        let mut snapshot_started_at = state.snapshot_started_at;
        if base.new_snapshot {
            generation += 1;
            phase = SyncPhase::Snapshot;
            snapshot_started_at = Some(now());
        }

        let mut applied = Applied::default();
        // The snapshot is complete once the feed moves to the log or runs
        // out: whatever it did not deliver is gone on the server. Sweeping
        // before applying the page is safe because the page's own upserts
        // carry the current generation either way.
        if phase == SyncPhase::Snapshot && (page.phase == Phase::Log || !page.has_more) {
            for table in Table::ALL {
                applied.swept += tx.execute(
                    &format!("DELETE FROM {} WHERE sync_gen < ?1", table.name()),
                    [generation],
                )?;
            }
            phase = SyncPhase::Log;
            applied.snapshot_completed = true;
        }

        for change in &page.changes {
            match (change.table, change.op) {
                (Table::Other, _) => applied.skipped += 1,
                (table, Op::Delete) => {
                    tx.prepare_cached(&format!("DELETE FROM {} WHERE id = ?1", table.name()))?
                        .execute([change.id])?;
                    applied.deletes += 1;
                }
                (table, Op::Upsert) => {
                    upsert(&tx, table, change, generation)?;
                    applied.upserts += 1;
                    if matches!(table, Table::LearningContent | Table::ContentFragments) {
                        applied.text_upserts += 1;
                    }
                }
            }
        }

        let stamp = now();
        tx.execute(
            "UPDATE sync_state SET source_url = ?1, cursor = ?2, phase = ?3, snapshot_gen = ?4,
                    snapshot_started_at = ?5, last_pull_at = ?6,
                    caught_up_at = CASE WHEN ?7 THEN ?6 ELSE caught_up_at END",
            params![
                base.source_url,
                page.next_cursor,
                phase.as_str(),
                generation,
                snapshot_started_at,
                stamp,
                !page.has_more,
            ],
        )?;
        failpoint("apply-page");
        tx.commit()?;
        Ok(applied)
    }

    /// Forgets the cursor so that the next pull starts a full snapshot; the
    /// mirrored rows stay until that snapshot sweeps what is gone.
    pub fn reset_cursor(&mut self) -> Result<()> {
        self.conn
            .execute("UPDATE sync_state SET cursor = NULL", [])?;
        Ok(())
    }

    pub fn counts(&self) -> Result<Counts> {
        let count = |table: &str| -> Result<i64> {
            Ok(self
                .conn
                .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?)
        };
        let mut stmt = self.conn.prepare(
            "SELECT model, source_type, count(*) FROM vector_embeddings
             GROUP BY model, source_type ORDER BY model, source_type",
        )?;
        let vectors = stmt
            .query_map([], |r| {
                Ok(VectorCount {
                    model: r.get(0)?,
                    source_type: r.get(1)?,
                    count: r.get(2)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Counts {
            learning_content: count("learning_content")?,
            content_fragments: count("content_fragments")?,
            fragment_assets: count("fragment_assets")?,
            rankings: count("rankings")?,
            cached_assets: count("asset_cache")?,
            anki_cards: count("anki_cards")?,
            vectors,
        })
    }

    /// Every row of `kind` with the text an embedding is made from and the
    /// hash of the text its current `model` vector (if any) was made from.
    pub fn embed_sources(&self, kind: SourceKind, model: &str) -> Result<Vec<EmbedSource>> {
        let sql = match kind {
            SourceKind::Content => {
                "SELECT c.id, c.title, c.native_text, c.translation, e.text_hash
                 FROM learning_content c
                 LEFT JOIN vector_embeddings e
                   ON e.source_type = 'learning_content' AND e.source_id = c.id AND e.model = ?1
                 ORDER BY c.id"
            }
            SourceKind::Fragment => {
                "SELECT f.id, f.native_text, f.body_text, NULL, e.text_hash
                 FROM content_fragments f
                 LEFT JOIN vector_embeddings e
                   ON e.source_type = 'content_fragment' AND e.source_id = f.id AND e.model = ?1
                 ORDER BY f.id"
            }
        };
        let mut stmt = self.conn.prepare(sql)?;
        let rows = stmt.query_map([model], |r| {
            let parts: [Option<String>; 3] = [r.get(1)?, r.get(2)?, r.get(3)?];
            Ok(EmbedSource {
                kind,
                id: r.get(0)?,
                text: source_text(parts.iter().flatten().map(String::as_str)),
                stored_hash: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Stores vectors of `model` in one transaction, replacing older vectors
    /// of the same row and model. Rows deleted from the mirror since their
    /// text was read are skipped. Returns how many were stored.
    pub fn put_vectors(&mut self, model: &str, vectors: &[NewVector<'_>]) -> Result<usize> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut stored = 0;
        let stamp = now();
        for v in vectors {
            if v.vector.len() != DIMENSIONS {
                return Err(StoreError::Dimensions {
                    got: v.vector.len(),
                    expected: DIMENSIONS,
                });
            }
            let table = match v.kind {
                SourceKind::Content => "learning_content",
                SourceKind::Fragment => "content_fragments",
            };
            let exists: bool = tx
                .prepare_cached(&format!(
                    "SELECT EXISTS (SELECT 1 FROM {table} WHERE id = ?1)"
                ))?
                .query_row([v.id], |r| r.get(0))?;
            if !exists {
                continue;
            }
            let existing: Option<i64> = tx
                .prepare_cached(
                    "SELECT id FROM vector_embeddings
                     WHERE source_type = ?1 AND source_id = ?2 AND model = ?3",
                )?
                .query_row(params![v.kind.source_type(), v.id, model], |r| r.get(0))
                .optional()?;
            let rowid = match existing {
                Some(rowid) => {
                    tx.prepare_cached(
                        "UPDATE vector_embeddings
                         SET dimensions = ?2, text_hash = ?3, created_at = ?4 WHERE id = ?1",
                    )?
                    .execute(params![
                        rowid,
                        DIMENSIONS as i64,
                        v.text_hash,
                        stamp
                    ])?;
                    tx.prepare_cached("DELETE FROM vec_embeddings WHERE rowid = ?1")?
                        .execute([rowid])?;
                    rowid
                }
                None => {
                    tx.prepare_cached(
                        "INSERT INTO vector_embeddings
                           (source_type, source_id, model, dimensions, text_hash, created_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )?
                    .execute(params![
                        v.kind.source_type(),
                        v.id,
                        model,
                        DIMENSIONS as i64,
                        v.text_hash,
                        stamp
                    ])?;
                    tx.last_insert_rowid()
                }
            };
            tx.prepare_cached(
                "INSERT INTO vec_embeddings (rowid, embedding, model, source_type)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                rowid,
                vector_blob(v.vector),
                model,
                v.kind.source_type()
            ])?;
            stored += 1;
        }
        tx.commit()?;
        Ok(stored)
    }

    /// Removes vectors whose row is no longer mirrored (the delete triggers
    /// cover deletes made through this store; this also covers vectors that
    /// arrived without their rows, e.g. copied from a legacy file) and index
    /// entries without metadata. Returns how many metadata rows went.
    pub fn prune_orphan_vectors(&mut self) -> Result<usize> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let orphans = "SELECT e.id FROM vector_embeddings e
             WHERE (e.source_type = 'learning_content'
                    AND NOT EXISTS (SELECT 1 FROM learning_content c WHERE c.id = e.source_id))
                OR (e.source_type = 'content_fragment'
                    AND NOT EXISTS (SELECT 1 FROM content_fragments f WHERE f.id = e.source_id))";
        // The delete trigger takes each one's vector along.
        let removed = tx.execute(
            &format!("DELETE FROM vector_embeddings WHERE id IN ({orphans})"),
            [],
        )?;
        tx.execute(
            "DELETE FROM vec_embeddings WHERE rowid NOT IN (SELECT id FROM vector_embeddings)",
            [],
        )?;
        tx.commit()?;
        Ok(removed)
    }

    /// Keeps the bytes of an asset, checked against the digest they are
    /// filed under.
    pub fn put_cached_asset(&mut self, sha256: &str, data: &[u8]) -> Result<()> {
        let actual = hex::encode(Sha256::digest(data));
        if !actual.eq_ignore_ascii_case(sha256) {
            return Err(StoreError::DigestMismatch {
                expected: sha256.to_owned(),
            });
        }
        self.conn.execute(
            "INSERT INTO asset_cache (sha256, data, cached_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (sha256) DO NOTHING",
            params![actual, data, now()],
        )?;
        Ok(())
    }

    pub fn cached_asset(&self, sha256: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn
            .query_row(
                "SELECT data FROM asset_cache WHERE sha256 = ?1",
                [sha256.to_ascii_lowercase()],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Drops cached bytes no mirrored asset refers to any more.
    pub fn prune_asset_cache(&mut self) -> Result<usize> {
        Ok(self.conn.execute(
            "DELETE FROM asset_cache WHERE sha256 NOT IN (SELECT lower(sha256) FROM fragment_assets)",
            [],
        )?)
    }
}

/// The text embedded for a row: its fields joined by newlines. Kept in one
/// place because the text hash that decides re-embedding depends on it.
pub fn source_text<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    parts
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

fn read_sync_state(conn: &Connection) -> Result<SyncState> {
    Ok(conn.query_row(
        "SELECT source_url, cursor, phase, snapshot_gen, snapshot_started_at, last_pull_at, caught_up_at
         FROM sync_state WHERE singleton = 1",
        [],
        |r| {
            Ok(SyncState {
                source_url: r.get(0)?,
                cursor: r.get(1)?,
                phase: SyncPhase::parse(&r.get::<_, String>(2)?),
                snapshot_gen: r.get(3)?,
                snapshot_started_at: r.get(4)?,
                last_pull_at: r.get(5)?,
                caught_up_at: r.get(6)?,
            })
        },
    )?)
}

fn parse_row<T: serde::de::DeserializeOwned>(table: Table, change: &Change) -> Result<T> {
    let bad = |reason: String| StoreError::BadRow {
        table: table.name(),
        id: change.id,
        reason,
    };
    let row = change
        .row
        .clone()
        .ok_or_else(|| bad("an upsert without a row".into()))?;
    serde_json::from_value(row).map_err(|e| bad(e.to_string()))
}

fn upsert(conn: &Connection, table: Table, change: &Change, generation: i64) -> Result<()> {
    match table {
        Table::LearningContent => {
            let r: ContentRow = parse_row(table, change)?;
            conn.prepare_cached(
                "INSERT INTO learning_content (id, title, content_type, language, native_text,
                    translation, ipa, difficulty_level, tags, content_metadata, created_at,
                    updated_at, sync_gen)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                 ON CONFLICT (id) DO UPDATE SET title = excluded.title,
                    content_type = excluded.content_type, language = excluded.language,
                    native_text = excluded.native_text, translation = excluded.translation,
                    ipa = excluded.ipa, difficulty_level = excluded.difficulty_level,
                    tags = excluded.tags, content_metadata = excluded.content_metadata,
                    created_at = excluded.created_at, updated_at = excluded.updated_at,
                    sync_gen = excluded.sync_gen",
            )?
            .execute(params![
                change.id,
                r.title,
                r.content_type,
                r.language,
                r.native_text,
                r.translation,
                r.ipa,
                r.difficulty_level,
                json_text(&r.tags),
                json_text(&r.content_metadata),
                r.created_at,
                r.updated_at,
                generation
            ])?;
        }
        Table::ContentFragments => {
            let r: FragmentRow = parse_row(table, change)?;
            conn.prepare_cached(
                "INSERT INTO content_fragments (id, learning_content_id, native_text, body_text,
                    ipa, extra, fragment_type, fragment_metadata, created_at, updated_at, sync_gen)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (id) DO UPDATE SET learning_content_id = excluded.learning_content_id,
                    native_text = excluded.native_text, body_text = excluded.body_text,
                    ipa = excluded.ipa, extra = excluded.extra,
                    fragment_type = excluded.fragment_type,
                    fragment_metadata = excluded.fragment_metadata,
                    created_at = excluded.created_at, updated_at = excluded.updated_at,
                    sync_gen = excluded.sync_gen",
            )?
            .execute(params![
                change.id,
                r.learning_content_id,
                r.native_text,
                r.body_text,
                r.ipa,
                r.extra,
                r.fragment_type,
                json_text(&r.fragment_metadata),
                r.created_at,
                r.updated_at,
                generation
            ])?;
        }
        Table::FragmentAssets => {
            let r: AssetRow = parse_row(table, change)?;
            conn.prepare_cached(
                "INSERT INTO fragment_assets (id, fragment_id, asset_type, asset_metadata,
                    content_type, size, sha256, created_at, created_by, sync_gen)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (id) DO UPDATE SET fragment_id = excluded.fragment_id,
                    asset_type = excluded.asset_type, asset_metadata = excluded.asset_metadata,
                    content_type = excluded.content_type, size = excluded.size,
                    sha256 = excluded.sha256, created_at = excluded.created_at,
                    created_by = excluded.created_by, sync_gen = excluded.sync_gen",
            )?
            .execute(params![
                change.id,
                r.fragment_id,
                r.asset_type,
                json_text(&r.asset_metadata),
                r.content_type,
                r.size,
                r.sha256,
                r.created_at,
                r.created_by,
                generation
            ])?;
        }
        Table::Rankings => {
            let r: RankingRow = parse_row(table, change)?;
            let (score, hundredths) = match r.rank_score {
                Some(s) => (Some(s.text), Some(s.hundredths)),
                None => (None, None),
            };
            conn.prepare_cached(
                "INSERT INTO rankings (id, fragment_id, asset_id, rank_score, rank_hundredths,
                    assessed_by, assessment_notes, created_at, updated_at, sync_gen)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (id) DO UPDATE SET fragment_id = excluded.fragment_id,
                    asset_id = excluded.asset_id, rank_score = excluded.rank_score,
                    rank_hundredths = excluded.rank_hundredths,
                    assessed_by = excluded.assessed_by,
                    assessment_notes = excluded.assessment_notes,
                    created_at = excluded.created_at, updated_at = excluded.updated_at,
                    sync_gen = excluded.sync_gen",
            )?
            .execute(params![
                change.id,
                r.fragment_id,
                r.asset_id,
                score,
                hundredths,
                r.assessed_by,
                r.assessment_notes,
                r.created_at,
                r.updated_at,
                generation
            ])?;
        }
        Table::Other => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
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

    fn page(
        changes: Vec<serde_json::Value>,
        cursor: &str,
        has_more: bool,
        phase: &str,
    ) -> ChangePage {
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
}
