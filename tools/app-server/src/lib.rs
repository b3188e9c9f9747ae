//! The project's application, `spin.toml`, served on a loopback port over a
//! database the caller names: by the bundled Wasmtime host (in process), or
//! by a real Spin when `SPIN_BIN` names one. Every suite that serves the
//! app goes through here, so that the same tests run under both.
//!
//! - [`components`]: the `.wasm` files spin.toml names, built once per process.
//! - [`Host`]: which host serves, from the environment.
//! - [`AppServer`]: one served app, stopped when dropped.

pub mod components;
mod spin;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use spin_host::manifest::Manifest;
use spin_host::postgres::EmptyResults;
use spin_host::runtime::{App, Runtime};
use spin_host::variables::Sources;

/// The environment variable that names a real Spin binary to serve with.
pub const SPIN_BIN: &str = "SPIN_BIN";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("building the components: {0}")]
    Build(String),
    #[error("the bundled host cannot serve spin.toml: {0}")]
    Host(#[from] spin_host::runtime::HostError),
    #[error("{action}: {source}")]
    Io {
        action: String,
        source: std::io::Error,
    },
    /// Another process took the address before Spin could bind it.
    #[error("Spin ({bin}) could not listen on {addr}: the address is in use")]
    PortTaken { bin: PathBuf, addr: SocketAddr },
    #[error("Spin ({bin}) did not start serving: {reason}\n{output}")]
    SpinStart {
        bin: PathBuf,
        reason: String,
        output: String,
    },
}

impl Error {
    fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let action = action.into();
        move |source| Error::Io { action, source }
    }
}

/// The repository's root (where spin.toml is).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Which host serves the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// The bundled Wasmtime host, in this process.
    Bundled,
    /// A real `spin` binary, as a child process running `spin up`.
    Spin(PathBuf),
}

impl Host {
    /// `SPIN_BIN` when it is set and not empty, else the bundled host.
    pub fn from_env() -> Host {
        match std::env::var_os(SPIN_BIN) {
            Some(bin) if !bin.is_empty() => Host::Spin(PathBuf::from(bin)),
            _ => Host::Bundled,
        }
    }

    /// A name for reports: `bundled host` or `Spin (<path>)`.
    pub fn describe(&self) -> String {
        match self {
            Host::Bundled => "bundled host".to_owned(),
            Host::Spin(bin) => format!("Spin ({})", bin.display()),
        }
    }
}

/// The bundled host's runtime, shared by every app of this process so that
/// each component compiles once. It refuses a query that matches no row,
/// where Spin 4.0.0 to 4.0.2 would hang (see [`EmptyResults`]): a suite
/// run on the bundled host catches a component that issues one.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        Runtime::new()
            .expect("creating the Wasm runtime")
            .with_empty_results(EmptyResults::Refuse)
    })
}

/// Only the values given: the machine's own SPIN_VARIABLE_* must not leak in.
fn explicit(variables: &BTreeMap<String, String>) -> Sources {
    Sources {
        explicit: variables.clone().into_iter().collect(),
        env: Some(Box::new(|_| None)),
    }
}

/// One served app; dropping it stops it.
pub struct AppServer {
    pub addr: SocketAddr,
    serving: Serving,
}

enum Serving {
    Bundled {
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    },
    Spin(spin::SpinProcess),
}

impl AppServer {
    /// Serves spin.toml with `variables` (by name, as in `[variables]`) on
    /// a free loopback port, with the host [`Host::from_env`] chooses.
    ///
    /// A real Spin binds the port itself, seconds after it was found free
    /// (it loads the app first); when another process took it meanwhile
    /// (an outgoing connection gets its port from the same range), Spin is
    /// started again on another.
    pub async fn start(variables: &[(&str, &str)]) -> Result<AppServer, Error> {
        let mut tries = 0;
        loop {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(Error::io("binding a loopback port"))?;
            match Self::start_on(listener, variables).await {
                Err(Error::PortTaken { .. }) if tries < 4 => tries += 1,
                served => return served,
            }
        }
    }

    /// The same on `listener`'s address: a test that stops a server and
    /// starts another where the first was binds it itself.
    pub async fn start_on(
        listener: tokio::net::TcpListener,
        variables: &[(&str, &str)],
    ) -> Result<AppServer, Error> {
        let variables: BTreeMap<String, String> = variables
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Self::project(&Host::from_env(), listener, &variables).await
    }

    /// Serves spin.toml with `host`, whatever the environment says: for a
    /// caller that runs the same app under both hosts in one process.
    pub async fn project(
        host: &Host,
        listener: tokio::net::TcpListener,
        variables: &BTreeMap<String, String>,
    ) -> Result<AppServer, Error> {
        match host {
            Host::Bundled => {
                let manifest = components::project_manifest()?;
                let app = runtime().load(&manifest, &explicit(variables))?;
                Self::in_process(Arc::new(app), listener)
            }
            Host::Spin(bin) => {
                let manifest = components::project_manifest_text()?;
                Self::spin(bin, listener, &manifest, variables, None).await
            }
        }
    }

    /// Serves `manifest` (text whose sources are absolute paths) with
    /// `host`; the bundled host loads it on `runtime`, and a real Spin is
    /// given the runtime's cap on instance memory, if it has one.
    pub async fn manifest(
        host: &Host,
        runtime: &Runtime,
        listener: tokio::net::TcpListener,
        manifest: &str,
        variables: &BTreeMap<String, String>,
    ) -> Result<AppServer, Error> {
        match host {
            Host::Bundled => {
                let manifest = Manifest::parse(manifest, Path::new("spin.toml"), &repo_root())
                    .map_err(|e| Error::Build(format!("the manifest: {e}")))?;
                let app = runtime.load(&manifest, &explicit(variables))?;
                Self::in_process(Arc::new(app), listener)
            }
            Host::Spin(bin) => {
                let cap = runtime.max_instance_memory();
                Self::spin(bin, listener, manifest, variables, cap).await
            }
        }
    }

    /// Serves an app the bundled host has loaded, on the caller's tokio
    /// runtime.
    pub fn in_process(
        app: Arc<App>,
        listener: tokio::net::TcpListener,
    ) -> Result<AppServer, Error> {
        let addr = listener
            .local_addr()
            .map_err(Error::io("reading the listener's address"))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(spin_host::trigger::serve(listener, app, async {
            let _ = stopped.await;
        }));
        Ok(AppServer {
            addr,
            serving: Serving::Bundled {
                stop: Some(stop),
                task: Some(task),
            },
        })
    }

    /// `spin up` of `bin` on any manifest (its sources absolute paths), on
    /// `listener`'s address: for tests that hold the bundled host and a
    /// real Spin to the same behaviour with manifests of their own.
    pub async fn spin(
        bin: &Path,
        listener: tokio::net::TcpListener,
        manifest: &str,
        variables: &BTreeMap<String, String>,
        max_instance_memory: Option<usize>,
    ) -> Result<AppServer, Error> {
        let addr = listener
            .local_addr()
            .map_err(Error::io("reading the listener's address"))?;
        // Spin binds the address itself.
        drop(listener);
        let process =
            spin::SpinProcess::start(bin, addr, manifest, variables, max_instance_memory).await?;
        Ok(AppServer {
            addr,
            serving: Serving::Spin(process),
        })
    }

    /// The app's base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What the host and the components wrote so far, for a real Spin (its
    /// own output and the components' log files); `None` for the bundled
    /// host, whose output is this process's.
    pub fn output(&self) -> Option<String> {
        match &self.serving {
            Serving::Bundled { .. } => None,
            Serving::Spin(spin) => Some(spin.output()),
        }
    }

    /// Stops accepting, lets requests in flight finish, and reports how the
    /// server ended.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        match &mut self.serving {
            Serving::Bundled { stop, task } => {
                if let Some(stop) = stop.take() {
                    let _ = stop.send(());
                }
                match task.take() {
                    Some(task) => task.await.map_err(std::io::Error::other)?,
                    None => Ok(()),
                }
            }
            Serving::Spin(spin) => spin.shutdown().await,
        }
    }
}

impl Drop for AppServer {
    fn drop(&mut self) {
        match &mut self.serving {
            Serving::Bundled { stop, .. } => {
                if let Some(stop) = stop.take() {
                    let _ = stop.send(());
                }
            }
            Serving::Spin(spin) => spin.kill(),
        }
    }
}
