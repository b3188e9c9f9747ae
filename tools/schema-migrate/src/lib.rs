//! Applies the project's `migrations/` directory to a PostgreSQL database.
//!
//! Files are named `<YYYYMMDDHHMMSS>_<name>.sql`, the Supabase CLI's
//! convention, so `supabase db push` can apply the same directory. Each
//! pending file runs in its own transaction together with its row in the
//! ledger table `applied_migrations` (version, name, sha256 checksum), so a
//! file is either applied and recorded or not at all. A second run is a
//! no-op; a run refuses to go on when an applied file was edited, removed,
//! or when a new file sorts before one already applied.
//!
//! ```no_run
//! # async fn demo() -> Result<(), schema_migrate::Error> {
//! let migrations = schema_migrate::Migrations::from_dir("migrations")?;
//! let mut client = schema_migrate::connect("postgres://localhost/app").await?;
//! let report = schema_migrate::apply(&mut client, &migrations).await?;
//! println!("{} applied", report.applied.len());
//! # Ok(()) }
//! ```

mod connect;
mod migrations;

pub use connect::connect;
pub use migrations::{Migration, Migrations};

use std::time::Instant;

use tokio_postgres::Client;

/// The ledger of applied files.
pub const LEDGER: &str = "applied_migrations";

/// Serialises concurrent runs against one database (an arbitrary constant
/// key for `pg_advisory_lock`).
const LOCK_KEY: i64 = 0x7363_6865_6d61; // "schema"

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{file}: a migration file must be named <YYYYMMDDHHMMSS>_<name>.sql \
         (14 digits, an underscore, lowercase letters, digits or underscores)"
    )]
    BadFileName { file: String },
    #[error("{first} and {second} have the same version; give one of them a new timestamp")]
    DuplicateVersion { first: String, second: String },
    #[error(
        "{file} was changed after it was applied (checksum {applied} in the database, {current} on disk); \
         applied migrations are never edited: restore the file and put the change in a new one"
    )]
    ChecksumChanged {
        file: String,
        applied: String,
        current: String,
    },
    #[error(
        "migration {version}_{name} is applied in the database but its file is missing; \
         this database is ahead of this checkout"
    )]
    MissingFile { version: String, name: String },
    #[error(
        "{file} is not applied but sorts before {latest}, which is; \
         rename it with a timestamp later than {latest}"
    )]
    OutOfOrder { file: String, latest: String },
    #[error("{file} failed and was rolled back: {reason}")]
    Failed { file: String, reason: String },
    #[error("invalid database URL: {0}")]
    BadUrl(String),
    #[error("cannot set up TLS: {0}")]
    Tls(String),
    #[error("database error: {0}")]
    Database(#[from] tokio_postgres::Error),
}

/// What one run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// File names applied by this run, in order.
    pub applied: Vec<String>,
    /// How many files were already applied before this run.
    pub already_applied: usize,
}

/// A row of the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub version: String,
    pub name: String,
    pub checksum: String,
}

/// Applies every pending migration, each in its own transaction.
pub async fn apply(client: &mut Client, migrations: &Migrations) -> Result<Report, Error> {
    // A session-level lock, so that two deploys cannot interleave files.
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await?;
    let result = apply_locked(client, migrations).await;
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    let report = result?;
    unlock?;
    Ok(report)
}

/// The files that [`apply`] would run, after the same consistency checks.
pub async fn pending<'m>(
    client: &Client,
    migrations: &'m Migrations,
) -> Result<Vec<&'m Migration>, Error> {
    let applied = if ledger_exists(client).await? {
        read_ledger(client).await?
    } else {
        Vec::new()
    };
    check(migrations, &applied)
}

async fn apply_locked(client: &mut Client, migrations: &Migrations) -> Result<Report, Error> {
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {LEDGER} (
                version      text PRIMARY KEY,
                name         text NOT NULL,
                checksum     text NOT NULL,
                applied_at   timestamptz NOT NULL DEFAULT now(),
                execution_ms integer
            );
            COMMENT ON TABLE {LEDGER} IS
                'Migration files applied by schema-migrate, with their sha256; never edit an applied file.';
            -- The ledger is no business of Supabase''s Data API roles.
            ALTER TABLE {LEDGER} ENABLE ROW LEVEL SECURITY;"
        ))
        .await?;
    let applied = read_ledger(client).await?;
    let todo = check(migrations, &applied)?;
    let mut report = Report {
        applied: Vec::with_capacity(todo.len()),
        already_applied: applied.len(),
    };
    for migration in todo {
        let started = Instant::now();
        let transaction = client.transaction().await?;
        transaction
            .batch_execute(&migration.sql)
            .await
            .map_err(|err| Error::Failed {
                file: migration.file_name(),
                reason: describe(&err),
            })?;
        let elapsed = i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX);
        transaction
            .execute(
                &format!(
                    "INSERT INTO {LEDGER} (version, name, checksum, execution_ms) VALUES ($1, $2, $3, $4)"
                ),
                &[
                    &migration.version,
                    &migration.name,
                    &migration.checksum,
                    &elapsed,
                ],
            )
            .await?;
        transaction.commit().await?;
        report.applied.push(migration.file_name());
    }
    Ok(report)
}

async fn ledger_exists(client: &Client) -> Result<bool, Error> {
    let row = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&LEDGER])
        .await?;
    Ok(row.get(0))
}

async fn read_ledger(client: &Client) -> Result<Vec<Applied>, Error> {
    let rows = client
        .query(
            &format!("SELECT version, name, checksum FROM {LEDGER} ORDER BY version"),
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| Applied {
            version: row.get(0),
            name: row.get(1),
            checksum: row.get(2),
        })
        .collect())
}

/// Compares the directory with the ledger and returns what is pending.
fn check<'m>(migrations: &'m Migrations, applied: &[Applied]) -> Result<Vec<&'m Migration>, Error> {
    for row in applied {
        match migrations.get(&row.version) {
            None => {
                return Err(Error::MissingFile {
                    version: row.version.clone(),
                    name: row.name.clone(),
                });
            }
            Some(file) if file.checksum != row.checksum => {
                return Err(Error::ChecksumChanged {
                    file: file.file_name(),
                    applied: row.checksum.clone(),
                    current: file.checksum.clone(),
                });
            }
            Some(_) => {}
        }
    }
    let latest = applied.iter().map(|row| &row.version).max();
    let pending: Vec<&Migration> = migrations
        .iter()
        .filter(|m| !applied.iter().any(|row| row.version == m.version))
        .collect();
    if let (Some(latest), Some(first)) = (latest, pending.first())
        && first.version < *latest
    {
        let latest = migrations
            .get(latest)
            .map(Migration::file_name)
            .unwrap_or_else(|| latest.clone());
        return Err(Error::OutOfOrder {
            file: first.file_name(),
            latest,
        });
    }
    Ok(pending)
}

/// The server's message with its detail, hint and position: what a person
/// needs to fix a broken migration file.
fn describe(err: &tokio_postgres::Error) -> String {
    let Some(db) = err.as_db_error() else {
        return err.to_string();
    };
    let mut text = format!("{} ({})", db.message(), db.code().code());
    if let Some(detail) = db.detail() {
        text.push_str(&format!("; detail: {detail}"));
    }
    if let Some(hint) = db.hint() {
        text.push_str(&format!("; hint: {hint}"));
    }
    if let Some(tokio_postgres::error::ErrorPosition::Original(position)) = db.position() {
        text.push_str(&format!("; at character {position}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(files: &[(&str, &str)]) -> (tempfile::TempDir, Migrations) {
        let dir = tempfile::tempdir().unwrap();
        for (name, sql) in files {
            std::fs::write(dir.path().join(name), sql).unwrap();
        }
        let migrations = Migrations::from_dir(dir.path()).unwrap();
        (dir, migrations)
    }

    fn applied(m: &Migration) -> Applied {
        Applied {
            version: m.version.clone(),
            name: m.name.clone(),
            checksum: m.checksum.clone(),
        }
    }

    #[test]
    fn nothing_pending_when_all_applied() {
        let (_dir, set) = set(&[("20250101000000_a.sql", "SELECT 1;")]);
        let ledger: Vec<_> = set.iter().map(applied).collect();
        assert!(check(&set, &ledger).unwrap().is_empty());
    }

    #[test]
    fn edited_file_is_named() {
        let (_dir, set) = set(&[("20250101000000_a.sql", "SELECT 1;")]);
        let mut row = applied(set.iter().next().unwrap());
        row.checksum = "0".repeat(64);
        match check(&set, &[row]) {
            Err(Error::ChecksumChanged { file, .. }) => assert_eq!(file, "20250101000000_a.sql"),
            other => panic!("expected ChecksumChanged, got {other:?}"),
        }
    }

    #[test]
    fn missing_file_is_refused() {
        let (_dir, set) = set(&[("20250101000000_a.sql", "SELECT 1;")]);
        let row = Applied {
            version: "20240101000000".into(),
            name: "gone".into(),
            checksum: "x".into(),
        };
        assert!(matches!(
            check(&set, &[row]),
            Err(Error::MissingFile { .. })
        ));
    }

    #[test]
    fn a_file_older_than_the_latest_applied_is_refused() {
        let (_dir, set) = set(&[
            ("20250101000000_a.sql", "SELECT 1;"),
            ("20250201000000_b.sql", "SELECT 2;"),
        ]);
        let b = set.get("20250201000000").unwrap();
        match check(&set, &[applied(b)]) {
            Err(Error::OutOfOrder { file, latest }) => {
                assert_eq!(file, "20250101000000_a.sql");
                assert_eq!(latest, "20250201000000_b.sql");
            }
            other => panic!("expected OutOfOrder, got {other:?}"),
        }
    }
}
