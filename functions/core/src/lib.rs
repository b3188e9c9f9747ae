//! What the API's Spin components share: each component is a routing shell
//! that hands its requests to [`serve`] with its own route table.
//!
//! - [`problem`]: RFC 9457 `application/problem+json` responses.
//! - [`db`]: the database handle and the one mapping from a database error to HTTP.
//! - [`auth`]: Supabase JWTs and roles (ES256 verified by `es256`).
//! - [`request`], [`respond`]: parsing requests and building responses;
//!   [`send`] hands them to the host, whole or streamed.
//! - [`schema`]: the four resources, declared once; [`crud`] serves them.
//! - [`assets`], [`rankings`], [`expand`], [`feed`], [`import`]: the endpoints
//!   beyond plain CRUD. [`openapi`] describes them all.

pub mod assets;
pub mod auth;
pub mod config;
pub mod crud;
pub mod cursor;
pub mod db;
pub mod doc;
mod es256;
pub mod expand;
pub mod feed;
pub mod health;
pub mod import;
pub mod openapi;
pub mod problem;
pub mod rankings;
pub mod request;
pub mod respond;
pub mod router;
pub mod routes;
pub mod schema;
pub mod send;
pub mod value;

pub use auth::Role;
pub use problem::Problem;
pub use router::{Ctx, Route, serve};

/// Exports a Spin HTTP component that serves the route table `routes`
/// (a function of [`routes`] returning `Vec<Route>`). The crate using it
/// must depend on `spin-sdk`, whose export glue the macro expands to.
#[macro_export]
macro_rules! component {
    ($routes:path) => {
        // The SDK's export glue is `unsafe` FFI; the exception to the
        // workspace's `unsafe_code = "deny"` stays inside this module.
        #[allow(unsafe_code)]
        mod export {
            #[spin_sdk::http_component]
            async fn handle(
                req: spin_sdk::http::IncomingRequest,
                out: spin_sdk::http::ResponseOutparam,
            ) {
                $crate::serve(req, out, &$routes()).await
            }
        }
    };
}
