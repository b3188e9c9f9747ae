//! The local agent: a SQLite mirror of the content API beside Anki, with
//! embeddings and similarity search.
//!
//! [`store`] owns the file, [`feed`] is the change feed's wire format,
//! [`api`] talks HTTP to the functions, [`pull`] brings the mirror up to
//! date, [`embed`] turns text into vectors and [`search`] finds neighbours.

pub mod anki;
pub mod api;
pub mod backoff;
pub mod config;
pub mod embed;
pub mod feed;
pub mod migrate;
pub mod models;
pub mod pull;
pub mod search;
pub mod store;
