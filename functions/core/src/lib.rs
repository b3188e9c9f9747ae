//! What the API's Spin components share.
//!
//! - [`problem`]: RFC 9457 `application/problem+json` responses.
//! - [`db`]: the one mapping from a database error to an HTTP problem.

pub mod db;
pub mod problem;

pub use problem::Problem;
