//! Shared by the host tests: building the components once, one Wasmtime
//! runtime (so each component compiles once per test binary), serving an
//! app on a loopback port, and a minimal HTTP client.

#![allow(dead_code)] // each test binary uses its own subset

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use spin_host::manifest::Manifest;
use spin_host::runtime::{HostError, Runtime};
use spin_host::variables::Sources;

/// The component packages the tests run.
pub const COMPONENTS: [&str; 9] = [
    "api-assess",
    "api-health",
    "api-content",
    "api-fragments",
    "api-assets",
    "api-rankings",
    "api-changes",
    "api-openapi",
    "test-probe",
];

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => repo_root().join("target"),
    }
}

/// Builds the components (release, wasm32-wasip2) once per test binary and
/// returns the directory holding the `.wasm` files. The nested cargo takes
/// the release and wasm32 locks, which the outer `cargo test` (debug
/// profile, host target) does not hold; when CI has built them already this
/// is a no-op check.
pub fn wasm_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut command = std::process::Command::new(cargo);
        command.current_dir(repo_root()).args([
            "build",
            "--target",
            "wasm32-wasip2",
            "--release",
            "--quiet",
        ]);
        for package in COMPONENTS {
            command.args(["-p", package]);
        }
        let status = command
            .status()
            .expect("running cargo to build the components");
        assert!(status.success(), "building the components failed");
        target_dir().join("wasm32-wasip2/release")
    })
}

/// The `.wasm` file of a component package.
pub fn wasm(package: &str) -> PathBuf {
    wasm_dir().join(format!("{}.wasm", package.replace('-', "_")))
}

/// One runtime per test binary: its cache compiles each component once.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| Runtime::new().expect("creating the Wasm runtime"))
}

/// Sources with explicit values and an empty environment, so that the
/// machine's own SPIN_VARIABLE_* cannot leak into a test.
pub fn sources(values: &[(&str, &str)]) -> Sources {
    Sources {
        explicit: values
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        env: Some(Box::new(|_| None)),
    }
}

/// Parses manifest text in which `{probe}` stands for the probe's `.wasm`.
pub fn manifest(text: &str) -> Manifest {
    let text = text.replace("{probe}", &wasm("test-probe").display().to_string());
    Manifest::parse(&text, Path::new("test.toml"), &repo_root()).expect("test manifest")
}

/// The repository's own spin.toml, with sources pointed at the wasm files
/// this test run built (they differ when CARGO_TARGET_DIR is set).
pub fn project_manifest() -> Manifest {
    let mut m = Manifest::from_file(&repo_root().join("spin.toml")).expect("spin.toml");
    for c in m.components.values_mut() {
        let file = c.source.file_name().expect("a file name").to_owned();
        c.source = wasm_dir().join(file);
    }
    m
}

/// An app served on a loopback port until dropped.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    pub async fn start(manifest: &Manifest, sources: &Sources) -> Result<Self, HostError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a loopback port");
        Self::start_on(listener, manifest, sources).await
    }

    /// Serves on `listener`: a test that stops a server and starts another
    /// on the same address (the browser keeps its URL) binds it itself.
    pub async fn start_on(
        listener: tokio::net::TcpListener,
        manifest: &Manifest,
        sources: &Sources,
    ) -> Result<Self, HostError> {
        let app = runtime().load(manifest, sources)?;
        let addr = listener.local_addr().expect("local address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(spin_host::trigger::serve(listener, Arc::new(app), async {
            let _ = stopped.await;
        }));
        Ok(Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Stops accepting, waits for requests in flight, and reports how the
    /// server ended.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        let _ = self.stop.take().expect("running").send(());
        self.task
            .take()
            .expect("running")
            .await
            .expect("server task")
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(http::Method::GET, path, &[], Bytes::new()).await
    }

    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> Reply {
        self.send(
            http::Method::POST,
            path,
            &[("content-type", "application/json")],
            Bytes::from(body.to_string()),
        )
        .await
    }

    pub async fn send(
        &self,
        method: http::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Reply {
        send_to(self.addr, method, path, headers, body).await
    }
}

/// One request on a connection of its own to a server at `addr`, its
/// answer read whole.
pub async fn send_to(
    addr: SocketAddr,
    method: http::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Reply {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connecting to the host");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("HTTP handshake");
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = sender
        .send_request(req.body(Full::new(body)).expect("request"))
        .await
        .expect("sending the request");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res
        .into_body()
        .collect()
        .await
        .expect("reading the body")
        .to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}
