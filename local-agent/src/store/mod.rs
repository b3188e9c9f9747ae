//! The agent's one SQLite file: a read mirror of the four content tables,
//! the sync state of the change feed, the Anki card map, the embeddings and
//! their sqlite-vec index, and what `migrate` records of a legacy file.
//!
//! The schema is versioned with `PRAGMA user_version` and upgraded in place
//! by forward-only migrations ([`MIGRATIONS`]); an applied migration is never
//! edited, a change is a new entry.
//!
//! ```
//! let store = local_agent::store::Store::open_in_memory().unwrap();
//! assert_eq!(store.schema_version().unwrap(), local_agent::store::SCHEMA_VERSION);
//! ```

mod cache;
mod cards;
mod migration;
mod mirror;
mod schema;
#[cfg(test)]
mod tests;
mod vector_tables;
mod vectors;

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

use rusqlite::Connection;
use serde::Serialize;

pub use cards::{
    AudioAsset, Card, CardEntry, CardOutcome, CardStatus, NoteContent, NoteFragment, NoteOf,
    Subject, content_hash,
};
pub use migration::{ArrivedRow, FinishedMigration, LegacyCopy, LegacyTables};
pub use mirror::{Applied, PageBase, SyncPhase, SyncState};
pub use schema::{MIGRATIONS, SCHEMA_VERSION};
pub use vector_tables::{MAX_DIMENSIONS, VectorTables, quantize_binary};
pub use vectors::{
    EXACT_SEARCH_LIMIT, EmbedSource, LEGACY_DIMENSIONS, Neighbour, NewVector, SearchPlan,
    SourceKind, source_text, text_hash, vector_blob,
};

/// How long a writer waits for another one (a concurrent `pull` or `embed`)
/// before giving up with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

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
    #[error(
        "vectors of {got} and {expected} dimensions in one batch of one model; a model's \
         vectors all have one dimension"
    )]
    Dimensions { got: usize, expected: usize },
    #[error("a vector has {got} dimensions; the store holds vectors of 1 to {MAX_DIMENSIONS}")]
    DimensionsOutOfRange { got: usize },
    #[error("the path {} is not UTF-8, which SQLite cannot attach", path.display())]
    NotUtf8 { path: PathBuf },
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

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
    pub dimensions: i64,
    pub source_type: String,
    pub count: i64,
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

    pub fn counts(&self) -> Result<Counts> {
        let count = |table: &str| -> Result<i64> {
            Ok(self
                .conn
                .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?)
        };
        let mut stmt = self.conn.prepare(
            "SELECT model, dimensions, source_type, count(*) FROM vector_embeddings
             GROUP BY model, dimensions, source_type ORDER BY model, dimensions, source_type",
        )?;
        let vectors = stmt
            .query_map([], |r| {
                Ok(VectorCount {
                    model: r.get(0)?,
                    dimensions: r.get(1)?,
                    source_type: r.get(2)?,
                    count: r.get(3)?,
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
}
