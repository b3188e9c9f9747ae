//! The content model, declared once.
//!
//! The server's resources (`api-core`), the agent's read mirror and the
//! legacy reader of `local-agent migrate` all derive what they do with a
//! column from the [`Table`]s here: adding a column means a migration in
//! `migrations/` and a [`Field`] here, and nothing else.
//!
//! The crate has no host-specific dependency: it is compiled into the wasm
//! components and into the native agent alike.

pub mod feed;
mod field;
pub mod limits;
mod tables;

pub use field::{Access, Field, Kind};
pub use tables::{
    ALL, ASSET_TYPES, CONTENT_FRAGMENTS, FRAGMENT_ASSETS, LEARNING_CONTENT, RANKINGS, Table,
};
