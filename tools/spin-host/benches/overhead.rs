//! Per-request overhead of the host: `cargo bench -p spin-host`.
//!
//! Measures, in one process and on loopback:
//! - `native`: a hyper server answering `pong` itself (the baseline);
//! - `host`: the same request through `spin_host::trigger::serve` to a fresh
//!   instance of a trivial component (the test probe's `/ping`);
//! - `instantiate+call`: the component alone, without HTTP: instantiate,
//!   call the handler, read the body.
//!
//! Prints the median (p50) and p90 of each and the ratio host / native.
//! It needs the probe built: `cargo build --target wasm32-wasip2 --release
//! -p test-probe` (it runs that itself when the file is missing).

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use spin_host::manifest::Manifest;
use spin_host::runtime::Runtime;
use spin_host::variables::Sources;

const WARMUP: usize = 300;
const SAMPLES: usize = 3000;

fn probe_wasm() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let wasm = target.join("wasm32-wasip2/release/test_probe.wasm");
    if !wasm.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .current_dir(&root)
            .args([
                "build",
                "--target",
                "wasm32-wasip2",
                "--release",
                "-p",
                "test-probe",
            ])
            .status()
            .expect("running cargo");
        assert!(status.success(), "building the probe failed");
    }
    wasm
}

struct Stats {
    p50: Duration,
    p90: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    Stats {
        p50: samples[samples.len() / 2],
        p90: samples[samples.len() * 9 / 10],
    }
}

/// Sequential GETs over one keep-alive connection.
async fn measure_http(addr: std::net::SocketAddr, path: &str) -> Stats {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut samples = Vec::with_capacity(SAMPLES);
    for i in 0..WARMUP + SAMPLES {
        let req = http::Request::get(path)
            .header("host", addr.to_string())
            .body(Empty::<Bytes>::new())
            .unwrap();
        sender.ready().await.unwrap();
        let started = Instant::now();
        let res = sender.send_request(req).await.unwrap();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let elapsed = started.elapsed();
        assert_eq!(&body[..], b"pong");
        if i >= WARMUP {
            samples.push(elapsed);
        }
    }
    stats(samples)
}

async fn native_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            let service = hyper::service::service_fn(|_req| async {
                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"pong"))))
            });
            tokio::spawn(
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned(),
            );
        }
    });
    addr
}

fn main() {
    let wasm = probe_wasm();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let manifest_text = format!(
            r#"
spin_manifest_version = 2
[application]
name = "bench"
[[trigger.http]]
route = "/..."
component = "probe"
[component.probe]
source = "{}"
"#,
            wasm.display()
        );
        let manifest =
            Manifest::parse(&manifest_text, Path::new("bench.toml"), Path::new("/")).unwrap();
        let runtime = Runtime::new().unwrap();
        let sources = Sources {
            env: Some(Box::new(|_| None)),
            ..Default::default()
        };
        let app = Arc::new(runtime.load(&manifest, &sources).unwrap());

        // The component alone.
        let component = app.component("probe").unwrap().clone();
        let mut samples = Vec::with_capacity(SAMPLES);
        for i in 0..WARMUP + SAMPLES {
            let req = http::Request::get("http://localhost/ping")
                .body(Empty::<Bytes>::new())
                .unwrap();
            let started = Instant::now();
            let res = component.handle(req).await.unwrap();
            let body = res.into_body().collect().await.unwrap().to_bytes();
            let elapsed = started.elapsed();
            assert_eq!(&body[..], b"pong");
            if i >= WARMUP {
                samples.push(elapsed);
            }
        }
        let call = stats(samples);

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host_addr = listener.local_addr().unwrap();
        tokio::spawn(spin_host::trigger::serve(
            listener,
            app.clone(),
            std::future::pending(),
        ));
        let host = measure_http(host_addr, "/ping").await;
        let native = measure_http(native_server().await, "/ping").await;

        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!("per-request latency, {SAMPLES} sequential requests after {WARMUP} warm-up");
        println!("{:<34} {:>10} {:>10}", "", "p50 (µs)", "p90 (µs)");
        for (name, s) in [
            ("native hyper (baseline)", &native),
            ("spin-host, trivial component", &host),
            ("instantiate + call (no HTTP)", &call),
        ] {
            println!("{name:<34} {:>10.1} {:>10.1}", us(s.p50), us(s.p90));
        }
        println!(
            "host / native at p50: {:.1}x (host adds {:.1} µs per request)",
            us(host.p50) / us(native.p50),
            us(host.p50) - us(native.p50)
        );
    });
}
