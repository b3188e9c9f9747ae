//! The HTTP trigger: a hyper server that routes each request to a fresh
//! component instance, with the request headers Spin adds.
//!
//! Like Spin, it answers `/.well-known/spin/health` and
//! `/.well-known/spin/info` itself, returns an empty 404 when no route
//! matches (private routes never match), and an empty 500 when a component
//! fails without responding. Shutdown stops accepting at once and lets
//! requests in flight finish (up to [`SHUTDOWN_GRACE`]).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HOST, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::routing::RouteMatch;
use crate::runtime::{App, Target};

/// The body type of every response this server sends.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// How long requests in flight may take to finish after shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

const WELL_KNOWN_PREFIX: &str = "/.well-known/spin/";

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

fn empty() -> Body {
    Empty::new()
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

fn status(code: StatusCode) -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = code;
    r
}

/// Serves `app` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Running out of file descriptors and the like: wait,
                    // do not spin, do not die.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |req| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(handle(&app, req, client).await) }
        });
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        let io = TokioIo::new(Lingering(Some(stream)));
        let conn = builder.serve_connection_with_upgrades(io, service);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("connection from {client} ended: {e}");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after {SHUTDOWN_GRACE:?}; stopping anyway");
    }
    Ok(())
}

/// How long a closed connection keeps swallowing what its client still
/// sends (see [`Lingering`]). Bounded by time, not bytes, as nginx's
/// `lingering_time`: a client that writes its whole body before it reads
/// (most do) must get to the answer.
const LINGER_TIME: Duration = Duration::from_secs(5);

/// A client connection that lingers when it is closed, as nginx's
/// `lingering_close` does. A component may answer (say, 413) without reading
/// the request body; closing a socket with unread bytes makes the kernel
/// send a reset, which destroys the answer in the client's receive buffer
/// before the client reads it. So the write side is shut first and what
/// still arrives is read and dropped, for at most [`LINGER_TIME`], before
/// the socket is closed.
struct Lingering(Option<tokio::net::TcpStream>);

impl Lingering {
    fn stream(self: std::pin::Pin<&mut Self>) -> std::pin::Pin<&mut tokio::net::TcpStream> {
        std::pin::Pin::new(self.get_mut().0.as_mut().expect("open until dropped"))
    }
}

impl tokio::io::AsyncRead for Lingering {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.stream().poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Lingering {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.stream().poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.stream().poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.stream().poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.stream().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.as_ref().is_some_and(|s| s.is_write_vectored())
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let (Some(mut stream), Ok(runtime)) =
            (self.0.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        runtime.spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = stream.shutdown().await;
            let deadline = tokio::time::Instant::now() + LINGER_TIME;
            let mut buf = vec![0; 64 << 10];
            while let Ok(Ok(1..)) = tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            }
        });
    }
}

/// Handles one request and writes one log line for it.
pub async fn handle(app: &App, req: Request<Incoming>, client: SocketAddr) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let (response, component) = route(app, req, client).await;
    tracing::info!(
        target: "spin_host::request",
        "{method} {path} {} {} {:.1}ms",
        response.status().as_u16(),
        component.as_deref().unwrap_or("-"),
        started.elapsed().as_secs_f64() * 1000.0,
    );
    response
}

async fn route(
    app: &App,
    mut req: Request<Incoming>,
    client: SocketAddr,
) -> (Response<Body>, Option<String>) {
    let path = req.uri().path().to_owned();
    if let Some(which) = path.strip_prefix(WELL_KNOWN_PREFIX) {
        let response = match which {
            "health" => Response::new(full("OK")),
            "info" => {
                let body = serde_json::json!({ "name": app.name }).to_string();
                let mut r = Response::new(full(body));
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                r
            }
            _ => status(StatusCode::NOT_FOUND),
        };
        return (response, None);
    }
    let Some(matched) = app.router.route(&path) else {
        return (status(StatusCode::NOT_FOUND), None);
    };
    match app.target(&matched.component) {
        Some(Target::Static(sr)) => {
            let mut r = Response::new(sr.body.clone().map(full).unwrap_or_else(empty));
            *r.status_mut() =
                StatusCode::from_u16(sr.status_code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            for (k, v) in &sr.headers {
                if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
                    r.headers_mut().append(k, v);
                }
            }
            (r, None)
        }
        Some(Target::Component(component)) => {
            let id = component.id.to_string();
            if let Err(e) = prepare(&mut req, &matched, client) {
                tracing::error!("cannot prepare request for {id:?}: {e}");
                return (status(StatusCode::INTERNAL_SERVER_ERROR), Some(id));
            }
            match component.handle(req).await {
                Ok(response) => {
                    let response = response.map(|b| {
                        b.map_err(|e| std::io::Error::other(format!("{e:?}")))
                            .boxed_unsync()
                    });
                    (response, Some(id))
                }
                Err(e) => {
                    tracing::error!("{e}");
                    (status(StatusCode::INTERNAL_SERVER_ERROR), Some(id))
                }
            }
        }
        None => (status(StatusCode::INTERNAL_SERVER_ERROR), None),
    }
}

/// Why a request cannot be handed to a component.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("no Host header and no authority in the request URI")]
    NoAuthority,
    #[error("the Host header does not match the authority in the request URI")]
    AuthorityMismatch,
    #[error("invalid Host header")]
    InvalidHost,
    #[error("a header is not valid UTF-8")]
    NonUtf8Header,
    #[error("cannot build the request URI: {0}")]
    Uri(#[from] http::Error),
}

/// Makes the URI absolute and adds Spin's headers, as Spin's WASI HTTP
/// executor does: the client's headers first, then `spin-*` ones (appended,
/// so a client's own `spin-*` header is not removed).
pub fn prepare<B>(
    req: &mut Request<B>,
    matched: &RouteMatch,
    client: SocketAddr,
) -> Result<(), PrepareError> {
    let host = req
        .headers()
        .get(HOST)
        .map(|h| h.to_str().map_err(|_| PrepareError::InvalidHost))
        .transpose()?
        .map(str::to_owned);
    let header_authority = host
        .as_deref()
        .map(|h| {
            h.parse::<Authority>()
                .map_err(|_| PrepareError::InvalidHost)
        })
        .transpose()?;
    let authority = match (header_authority, req.uri().authority().cloned()) {
        (None, None) => return Err(PrepareError::NoAuthority),
        (Some(a), None) | (None, Some(a)) => a,
        (Some(a), Some(b)) if a != b => return Err(PrepareError::AuthorityMismatch),
        (Some(a), Some(_)) => a,
    };
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    let scheme = req.uri().scheme().cloned().unwrap_or(Scheme::HTTP);
    let full_url = format!(
        "{scheme}://{}{path_and_query}",
        host.as_deref().unwrap_or("localhost")
    );
    *req.uri_mut() = Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(path_and_query)
        .build()?;

    let mut spin_headers = vec![
        ("spin-path-info".to_owned(), matched.path_info.clone()),
        ("spin-full-url".to_owned(), full_url),
        ("spin-matched-route".to_owned(), matched.raw_route.clone()),
        ("spin-base-path".to_owned(), "/".to_owned()),
        (
            "spin-raw-component-route".to_owned(),
            matched.raw_route.clone(),
        ),
        (
            "spin-component-route".to_owned(),
            matched.route_or_prefix().to_owned(),
        ),
        ("spin-client-addr".to_owned(), client.to_string()),
    ];
    for (name, value) in &matched.params {
        spin_headers.push((
            format!(
                "spin-path-match-{}",
                name.to_ascii_lowercase().replace('_', "-")
            ),
            value.clone(),
        ));
    }
    if req
        .headers()
        .values()
        .any(|v| std::str::from_utf8(v.as_bytes()).is_err())
    {
        return Err(PrepareError::NonUtf8Header);
    }
    let headers = req.headers_mut();
    for (name, value) in spin_headers {
        // A value that is not a valid header (a path with control bytes) is
        // skipped, as Spin skips it.
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            headers.append(name, value);
        }
    }
    Ok(())
}
