//! Row 8: what the host adds to a request, in one process on loopback:
//! a fresh instance of a trivial component per request (the test probe's
//! `/ping`), called directly and over HTTP, next to a hyper server that
//! answers `pong` itself.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use spin_host::manifest::Manifest;
use spin_host::runtime::Runtime;
use spin_host::variables::Sources;

use crate::Sizes;
use crate::load::drive;
use crate::report::{Row, Target};
use crate::stats::{Figure, median, quantile};

/// Sequential GETs of `/ping` over one keep-alive connection; latencies in ms.
async fn ping_latencies(addr: SocketAddr, n: usize) -> Result<Vec<f64>> {
    let run = drive(
        addr,
        "-",
        1,
        n,
        Duration::from_secs(120),
        async |conn, _| {
            let body = conn.get("/ping").await?;
            ensure!(&body[..] == b"pong", "not pong");
            Ok(0)
        },
    )
    .await?;
    Ok(run.latencies_ms)
}

async fn native_server() -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let service = hyper::service::service_fn(|_req| async {
                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"pong"))))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    Ok(addr)
}

pub async fn overhead(probe: &Path, sizes: &Sizes) -> Result<Row> {
    let manifest_text = format!(
        "spin_manifest_version = 2\n[application]\nname = \"bench\"\n\
         [[trigger.http]]\nroute = \"/...\"\ncomponent = \"probe\"\n\
         [component.probe]\nsource = \"{}\"\n",
        probe.display()
    );
    let manifest = Manifest::parse(&manifest_text, Path::new("bench.toml"), Path::new("/"))?;
    let sources = Sources {
        env: Some(Box::new(|_| None)),
        ..Default::default()
    };
    let app = Arc::new(Runtime::new()?.load(&manifest, &sources)?);
    let component = app
        .component("probe")
        .ok_or_else(|| anyhow::anyhow!("no probe component"))?
        .clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let host_addr = listener.local_addr()?;
    tokio::spawn(spin_host::trigger::serve(
        listener,
        app.clone(),
        std::future::pending(),
    ));
    let native_addr = native_server().await?;

    let n = sizes.overhead_samples;
    let mut ours = Figure::named("instantiate + call of a trivial component (no HTTP)");
    let mut base = Figure::named("a native hyper server answering itself, over HTTP");
    let (mut over_http, mut native_p50) = (Vec::new(), Vec::new());
    for rep in 0..=sizes.reps {
        let mut call = Vec::with_capacity(n);
        for _ in 0..n {
            let req = http::Request::get("http://localhost/ping").body(Empty::<Bytes>::new())?;
            let started = Instant::now();
            let res = component.handle(req).await?;
            let body = res.into_body().collect().await?.to_bytes();
            call.push(started.elapsed().as_secs_f64() * 1e3);
            ensure!(&body[..] == b"pong", "not pong");
        }
        let host = ping_latencies(host_addr, n).await?;
        let native = ping_latencies(native_addr, n).await?;
        if rep > 0 {
            ours.runs.push(median(&call));
            base.runs.push(median(&native));
            over_http.push(median(&host));
            native_p50.push(quantile(&native, 0.5));
        }
    }
    let host_p50 = median(&over_http);
    let native = median(&native_p50);
    Ok(Row::new(
        "8",
        format!("Host overhead per request, p50 of {n} sequential requests"),
        "ms",
        false,
        ours,
        base,
        Some(Target::MedianBelowMs(1.0)),
    )
    .note(format!(
        "the same trivial component through the host over HTTP: p50 {:.3} ms, {:.1}× the native server ({:.3} ms added per request)",
        host_p50,
        host_p50 / native,
        host_p50 - native
    )))
}
