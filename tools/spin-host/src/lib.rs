//! A small Wasmtime host that serves a Spin application from its `spin.toml`
//! the way `spin up` does, for machines where Spin cannot be installed.
//!
//! It provides what the project's components import: WASI 0.2 (through
//! `wasmtime-wasi` and `wasmtime-wasi-http`), `spin:postgres/postgres@4.0.0`
//! and `fermyon:spin/variables@2.0.0`. The modules follow Spin's split:
//! [`manifest`] reads the file, [`routing`] matches paths, [`variables`]
//! resolves application variables, [`outbound`] enforces
//! `allowed_outbound_hosts`, [`postgres`] serves the database interface,
//! [`runtime`] compiles and instantiates components and [`trigger`] is the
//! HTTP server.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use spin_host::{manifest::Manifest, runtime::Runtime, variables::Sources};
//! let runtime = Runtime::new()?;
//! let manifest = Manifest::from_file("spin.toml".as_ref())?;
//! let app = runtime.load(&manifest, &Sources::default())?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! spin_host::trigger::serve(listener, app.into(), std::future::pending()).await?;
//! # Ok(()) }
//! ```

pub mod manifest;
pub mod outbound;
pub mod postgres;
pub mod routing;
pub mod runtime;
pub mod trigger;
pub mod variables;

/// Host-side bindings for the Spin interfaces this host implements itself,
/// generated from `wit/`.
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "spin-imports",
        imports: { default: async },
        additional_derives: [PartialEq],
    });
}
