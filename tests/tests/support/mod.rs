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

pub fn repo_root() -> PathBuf {
    app_server::repo_root()
}

/// Builds the probe component (release, wasm32-wasip2) once per test
/// binary and returns the directory holding the `.wasm` files.
pub fn wasm_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        app_server::components::build(&["test-probe".to_owned()]).expect("building the probe")
    })
}

/// The `.wasm` file of a component package.
pub fn wasm(package: &str) -> PathBuf {
    wasm_dir().join(format!("{}.wasm", package.replace('-', "_")))
}

/// The runtime of the host tests' own manifests: its cache compiles each
/// component once. It answers empty results (the probe asks for some on
/// purpose); the project's app is served by [`app_server`], which refuses
/// them.
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
    app_server::components::project_manifest().expect("spin.toml and its components")
}

/// Owned variables as [`Server::project`] takes them.
pub fn borrowed<'a>(variables: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    variables.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// An app served on a loopback port until dropped: a test manifest, or
/// the project's spin.toml.
pub struct Server {
    pub addr: SocketAddr,
    app: Option<app_server::AppServer>,
}

impl Server {
    /// Serves a test manifest with the bundled host.
    pub async fn start(manifest: &Manifest, sources: &Sources) -> Result<Self, HostError> {
        Self::start_on_runtime(runtime(), manifest, sources).await
    }

    /// The same with a runtime of the caller's.
    pub async fn start_on_runtime(
        runtime: &Runtime,
        manifest: &Manifest,
        sources: &Sources,
    ) -> Result<Self, HostError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a loopback port");
        let app = runtime.load(manifest, sources)?;
        let app = app_server::AppServer::in_process(Arc::new(app), listener)
            .expect("serving the loaded app");
        Ok(Self::from_app(app))
    }

    /// Serves a test manifest (text in which `{probe}` stands for the
    /// probe's `.wasm`) with the host the environment chooses: the bundled
    /// one, or a real Spin when `SPIN_BIN` names one, so that a host test
    /// holds both to the same behaviour.
    pub async fn start_text(text: &str, values: &[(&str, &str)]) -> Self {
        let text = text.replace("{probe}", &wasm("test-probe").display().to_string());
        Self::start_text_on(runtime(), &text, values).await
    }

    /// The same with the host settings of `runtime` (see
    /// [`app_server::AppServer::manifest`]).
    pub async fn start_text_on(runtime: &Runtime, text: &str, values: &[(&str, &str)]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a loopback port");
        let values = values
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let host = app_server::Host::from_env();
        let app = app_server::AppServer::manifest(&host, runtime, listener, text, &values)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "serving the test manifest with the {}: {e}",
                    host.describe()
                )
            });
        Self::from_app(app)
    }

    /// Serves the project's spin.toml with `variables`.
    pub async fn project(variables: &[(&str, &str)]) -> Result<Self, app_server::Error> {
        let app = app_server::AppServer::start(variables).await?;
        Ok(Self::from_app(app))
    }

    /// The same on `listener`'s address: a test that stops a server and
    /// starts another on the same address (the browser keeps its URL)
    /// binds it itself.
    pub async fn project_on(
        listener: tokio::net::TcpListener,
        variables: &[(&str, &str)],
    ) -> Result<Self, app_server::Error> {
        let app = app_server::AppServer::start_on(listener, variables).await?;
        Ok(Self::from_app(app))
    }

    fn from_app(app: app_server::AppServer) -> Self {
        Self {
            addr: app.addr,
            app: Some(app),
        }
    }

    /// What a real Spin and the components wrote so far; `None` when the
    /// app runs in this process.
    pub fn output(&self) -> Option<String> {
        self.app.as_ref().and_then(app_server::AppServer::output)
    }

    /// Stops accepting, waits for requests in flight, and reports how the
    /// server ended.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        self.app.take().expect("running").shutdown().await
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

/// Bodies from this size on are sent as curl sends them, announced with
/// `Expect: 100-continue` and written only once the server asks for them.
pub const EXPECT_CONTINUE_FROM: usize = 1 << 20;

/// One request on a connection of its own to a server at `addr`, its
/// answer read whole. A large body waits for `100 Continue` (see
/// [`send_expecting_continue`]); others go through hyper.
pub async fn send_to(
    addr: SocketAddr,
    method: http::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Reply {
    if body.len() >= EXPECT_CONTINUE_FROM {
        return send_expecting_continue(addr, method, path, headers, body).await;
    }
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

/// A request whose body is announced with `Expect: 100-continue`, as curl
/// does for large uploads (RFC 9110 §10.1.1): the body is written only
/// after `100 Continue`, so a server that refuses it from the head (a 413
/// on the declared length, a 401) answers a client that never sent it.
/// A server that closes with a body half-read resets the connection and
/// the client may lose the answer; Spin does not linger on close.
pub async fn send_expecting_continue(
    addr: SocketAddr,
    method: http::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Reply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connecting to the host");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\nexpect: 100-continue\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head += &format!("{k}: {v}\r\n");
    }
    head += "\r\n";
    stream
        .write_all(head.as_bytes())
        .await
        .expect("writing the head");
    let mut received = Vec::new();
    let mut body_sent = false;
    loop {
        if let Some(reply) = parse_reply(&received) {
            if reply.status != 100 {
                return reply;
            }
            // Interim answer: drop it and send the body.
            let end = received
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .expect("a head")
                + 4;
            received.drain(..end);
            if !body_sent {
                stream.write_all(&body).await.expect("writing the body");
                body_sent = true;
            }
            continue;
        }
        received.reserve(64 << 10);
        let n = stream
            .read_buf(&mut received)
            .await
            .expect("reading the answer");
        assert!(n > 0, "the server closed before answering");
    }
}

/// A whole HTTP/1.1 answer in `bytes`, or `None` while part of it is still
/// to come. An interim (1xx) answer comes back alone.
pub fn parse_reply(bytes: &[u8]) -> Option<Reply> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&bytes[..end]).expect("an ASCII head");
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let mut headers = http::HeaderMap::new();
    let mut length = 0;
    let mut chunked = false;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            match name.as_str() {
                "content-length" => length = value.parse().ok()?,
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                _ => {}
            }
            headers.append(
                http::HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
                http::HeaderValue::from_str(value).expect("a header value"),
            );
        }
    }
    let body = if status < 200 {
        Vec::new()
    } else if chunked {
        dechunk(&bytes[end..])?
    } else {
        bytes.get(end..end + length)?.to_vec()
    };
    Some(Reply {
        status,
        headers,
        body: Bytes::from(body),
    })
}

/// A chunked body up to its last chunk; `None` until that has arrived.
fn dechunk(mut bytes: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = bytes.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&bytes[..line]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(bytes.get(line + 2..line + 2 + size)?);
        bytes = bytes.get(line + 2 + size + 2..)?;
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

/// An app served by a child process: this test binary again, running one
/// ignored test that calls [`serve_until_stdin_closes`]. A test needs one
/// for what it cannot set in its own process: the environment of the host
/// (`SSL_CERT_FILE`, `RUST_LOG`) and everything the host writes.
pub struct ChildServer {
    pub addr: SocketAddr,
    child: std::process::Child,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    stderr: std::thread::JoinHandle<String>,
}

impl ChildServer {
    /// Starts `test` (its full name) with `env` and waits until it serves.
    pub fn spawn(test: &str, env: &[(&str, &str)]) -> ChildServer {
        use std::io::{BufRead, Read};
        let mut command = std::process::Command::new(std::env::current_exe().unwrap());
        command
            .args([test, "--exact", "--ignored", "--nocapture"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("starting the child server");
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            std::io::BufReader::new(stderr)
                .read_to_string(&mut text)
                .unwrap();
            text
        });
        let mut early = String::new();
        let addr = loop {
            let mut line = String::new();
            assert!(
                stdout.read_line(&mut line).unwrap() > 0,
                "the child ended: {early}"
            );
            if let Some(addr) = line.trim().strip_prefix("listening ") {
                break addr.parse().unwrap();
            }
            early += &line;
        };
        ChildServer {
            addr,
            child,
            stdout,
            stderr,
        }
    }

    /// Closes the child's stdin, which ends it, and returns everything it
    /// and its host wrote.
    pub fn finish(mut self) -> String {
        use std::io::Read;
        drop(self.child.stdin.take());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while self.child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.child.kill();
        self.child.wait().unwrap();
        let mut log = self.stderr.join().unwrap();
        self.stdout.read_to_string(&mut log).unwrap();
        log
    }
}

/// The child half of a [`ChildServer`]: serves spin.toml with `variables`,
/// says where on stdout, serves until stdin closes, then writes what a
/// real Spin and the components logged (the bundled host's log is this
/// process's own stderr).
pub fn serve_until_stdin_closes(variables: &[(&str, &str)]) {
    use std::io::Read;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let server = Server::project(variables).await.expect("serving spin.toml");
        println!("listening {}", server.addr);
        tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new()))
            .await
            .unwrap()
            .unwrap();
        if let Some(output) = server.output() {
            eprintln!("{output}");
        }
    });
}
