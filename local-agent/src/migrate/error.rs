//! Why a migration stopped, and what to do about it.

use std::path::{Path, PathBuf};

use super::read::LegacyFileError;
use super::rerun::IdsTaken;
use crate::api::ApiError;
use crate::pull::PullError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// The file is not a legacy file, or reading it failed; the message
    /// says what to check.
    #[error(transparent)]
    LegacyFile(#[from] LegacyFileError),
    #[error("writing {}", path.display())]
    RejectReport {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Running it again would not help: the message says what does.
    #[error(transparent)]
    IdsTaken(#[from] IdsTaken),
    #[error("importing {table}")]
    Import {
        table: &'static str,
        #[source]
        source: ApiError,
    },
    #[error("importing {table} {id}")]
    ImportRow {
        table: &'static str,
        id: i64,
        #[source]
        source: ApiError,
    },
    #[error("importing asset {id}")]
    ImportAsset {
        id: i64,
        #[source]
        source: ApiError,
    },
    #[error("the asset uploads stopped")]
    UploadsStopped,
    #[error("moving the sequences past the imported ids")]
    MoveSequences(#[source] ApiError),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("pulling into the store")]
    Pull(#[source] PullError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A migration under way stopped; what arrived is recorded.
    #[error(
        "the migration stopped before it finished; run the same command again to resume \
         (what arrived is recorded and is not sent twice)"
    )]
    Stopped(#[source] Box<MigrateError>),
}

impl MigrateError {
    /// The API's answer that stopped the run, if an import or a listing
    /// did (a refused credential, an outage that outlasted the retries).
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            MigrateError::Import { source, .. }
            | MigrateError::ImportRow { source, .. }
            | MigrateError::ImportAsset { source, .. }
            | MigrateError::MoveSequences(source)
            | MigrateError::Api(source) => Some(source),
            MigrateError::Stopped(inner) => inner.api(),
            _ => None,
        }
    }

    /// A failed read of the legacy file at `path`.
    pub(super) fn reading(path: &Path) -> impl FnOnce(rusqlite::Error) -> MigrateError + '_ {
        move |source| {
            LegacyFileError::Sqlite {
                path: path.to_owned(),
                source,
            }
            .into()
        }
    }

    pub(super) fn writing(path: &Path) -> impl FnOnce(std::io::Error) -> MigrateError + '_ {
        move |source| MigrateError::RejectReport {
            path: path.to_owned(),
            source,
        }
    }
}
