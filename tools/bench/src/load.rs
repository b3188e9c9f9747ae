//! A closed-loop HTTP load generator: a fixed number of keep-alive HTTP/1.1
//! connections on loopback, each sending its next job as soon as the last
//! one answered, until a fixed job count is reached. Jobs are numbered, so
//! a run is the same sequence every time; a run that outlives its deadline
//! fails instead of hanging.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// One client connection.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    host: String,
    auth: String,
}

impl Conn {
    pub async fn open(addr: SocketAddr, token: &str) -> Result<Conn> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Conn {
            sender,
            host: addr.to_string(),
            auth: format!("Bearer {token}"),
        })
    }

    /// Sends one request and reads the whole answer, which must have the
    /// status `expect`; returns the body.
    pub async fn send(
        &mut self,
        method: http::Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
        expect: u16,
    ) -> Result<Bytes> {
        let mut req = http::Request::builder()
            .method(method.clone())
            .uri(path)
            .header("host", &self.host)
            .header("authorization", &self.auth);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let req = req.body(Full::new(body))?;
        self.sender.ready().await?;
        let res = self.sender.send_request(req).await?;
        let status = res.status().as_u16();
        let body = res.into_body().collect().await?.to_bytes();
        if status != expect {
            bail!(
                "{method} {path}: {status} (expected {expect}): {}",
                String::from_utf8_lossy(&body[..body.len().min(500)])
            );
        }
        Ok(body)
    }

    pub async fn get(&mut self, path: &str) -> Result<Bytes> {
        self.send(http::Method::GET, path, None, Bytes::new(), 200)
            .await
    }

    pub async fn post_json(&mut self, path: &str, body: &serde_json::Value) -> Result<Bytes> {
        self.send(
            http::Method::POST,
            path,
            Some("application/json"),
            Bytes::from(serde_json::to_vec(body)?),
            201,
        )
        .await
    }
}

/// What one run measured.
pub struct Run {
    pub jobs: usize,
    pub seconds: f64,
    /// Latency of each job, in milliseconds.
    pub latencies_ms: Vec<f64>,
    /// Bytes the jobs reported moving (request or response bodies).
    pub bytes: u64,
}

impl Run {
    pub fn per_second(&self) -> f64 {
        self.jobs as f64 / self.seconds
    }

    pub fn mb_per_second(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.seconds
    }
}

/// Runs jobs `0..jobs` over `connections` connections; `job` returns the
/// bytes it moved. Connections are opened before the clock starts.
pub async fn drive(
    addr: SocketAddr,
    token: &str,
    connections: usize,
    jobs: usize,
    deadline: Duration,
    job: impl AsyncFn(&mut Conn, usize) -> Result<u64>,
) -> Result<Run> {
    ensure!(connections > 0 && jobs > 0, "nothing to run");
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        conns.push(Conn::open(addr, token).await?);
    }
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let loops = conns.into_iter().map(|mut conn| {
        let (next, job) = (&next, &job);
        async move {
            let mut latencies = Vec::new();
            let mut bytes = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= jobs {
                    return Ok::<_, anyhow::Error>((latencies, bytes));
                }
                let t = Instant::now();
                bytes += job(&mut conn, i)
                    .await
                    .with_context(|| format!("job {i}"))?;
                latencies.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
    });
    let results = tokio::time::timeout(deadline, futures::future::join_all(loops))
        .await
        .with_context(|| format!("the run did not finish within {deadline:?}"))?;
    let seconds = started.elapsed().as_secs_f64();
    let mut run = Run {
        jobs,
        seconds,
        latencies_ms: Vec::with_capacity(jobs),
        bytes: 0,
    };
    for result in results {
        let (latencies, bytes) = result?;
        run.latencies_ms.extend(latencies);
        run.bytes += bytes;
    }
    Ok(run)
}
