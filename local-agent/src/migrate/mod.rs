//! `local-agent migrate`: a legacy SQLite file (the old Python
//! application's, see `local-agent/legacy/schema.sql`) into PostgreSQL through the
//! import endpoints, ids kept, bytes identical, nothing silently lost.
//!
//! [`read`] reads and converts (by the rules in [`convert`]) and decides the
//! rejects ([`report`]) before anything is sent; [`run`] sends, resumes and
//! copies the Anki cards and vectors into the store; [`verify`] reads the
//! server back and compares row by row.

pub mod convert;
pub mod read;
pub mod report;
pub mod run;
pub mod verify;

pub use convert::Repairs;
pub use run::{Options, Summary, run};
