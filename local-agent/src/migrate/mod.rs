//! `local-agent migrate`: a legacy SQLite file (the old Python
//! application's, see `local-agent/legacy/schema.sql`) into PostgreSQL through the
//! import endpoints, ids kept, bytes identical, nothing silently lost.
//!
//! [`read`] reads and converts (by the rules in [`convert`]) and decides the
//! rejects ([`report`]) before anything is sent; [`run`] drives the rest:
//! rows are sent in batches (`send`), assets one per request (`assets`),
//! what arrived is recorded in the store (`records`), a re-run after a
//! finished migration first checks that no new row takes a server's id
//! (`rerun`); [`verify`] reads the server back and compares row by row.
//! Nothing here prints: progress goes to a callback ([`Progress`]), the
//! outcome is a [`Summary`] or a [`MigrateError`].

mod assets;
pub mod convert;
mod error;
mod progress;
pub mod read;
mod records;
pub mod report;
mod rerun;
mod run;
mod send;
mod summary;
pub mod verify;
pub mod wording;

pub use convert::Repairs;
pub use error::MigrateError;
pub use progress::{Phase, Progress, Unit};
pub use read::LegacyFileError;
pub use rerun::IdsTaken;
pub use run::run;
pub use send::BATCH;
pub use summary::{ChangedSince, Finished, Options, Summary, TableRun};
