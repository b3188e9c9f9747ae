//! The HTTP client for the content API: bearer auth, problem+json errors,
//! and retries with backoff for the failures that pass.

use std::time::Duration;

use serde::Deserialize;

use crate::backoff::{Backoff, Exhausted, Transient, is_transient, parse_retry_after};
pub use crate::backoff::{RetryHook, RetryNotice};
use crate::config::{DEFAULT_API_TIMEOUT_SECS, ENV_API_TIMEOUT};
use crate::feed::ChangePage;

/// The problem type the feed answers with (410) when a cursor is older than
/// what the server's log still holds.
pub const CURSOR_EXPIRED: &str = "https://thai-content.dev/problems/cursor-expired";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    #[error(
        "cannot reach the API at {url} ({reason}), {attempts} attempt(s); check that it runs \
         and that --api-url (or THAI_AGENT_API_URL, or `local-agent init`) points at it"
    )]
    Unreachable {
        url: String,
        attempts: u32,
        reason: String,
    },
    #[error(
        "the API refused the credential ({status}: {detail}); get a valid one (a user's \
         token, or the project's publishable key sb_publishable_…) and run \
         `local-agent init --token <TOKEN>` or set THAI_AGENT_TOKEN"
    )]
    Unauthorized { status: u16, detail: String },
    #[error("the cursor is older than what the server's change log still holds")]
    CursorExpired,
    // No advice here: each command says what a re-run does for it.
    #[error("the API kept failing ({status}: {detail}) over {attempts} attempt(s)")]
    Unavailable {
        status: u16,
        detail: String,
        attempts: u32,
    },
    #[error("the API refused the request ({status}: {detail})")]
    Rejected { status: u16, detail: String },
    #[error("the API at {url} sent a response this agent cannot read: {reason}")]
    Protocol { url: String, reason: String },
}

/// An RFC 9457 problem document, as far as the agent reads it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub title: Option<String>,
    pub status: Option<u16>,
    pub detail: Option<String>,
}

impl Problem {
    fn describe(&self, fallback: &str) -> String {
        match (&self.title, &self.detail) {
            (Some(t), Some(d)) => format!("{t}: {d}"),
            (Some(t), None) => t.clone(),
            (None, Some(d)) => d.clone(),
            (None, None) => fallback.to_owned(),
        }
    }
}

pub struct ApiClient {
    agent: ureq::Agent,
    timeout: Duration,
    base: String,
    token: Option<String>,
    backoff: Backoff,
    on_retry: Option<RetryHook>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("backoff", &self.backoff)
            .finish()
    }
}

/// One HTTP exchange's outcome, before retry policy.
enum Attempt<T> {
    Done(T),
    /// Worth another try: (status or 0 for a transport error, reason, Retry-After).
    Retry(u16, String, Option<Duration>),
    Fail(ApiError),
}

impl ApiClient {
    /// A client that waits [`DEFAULT_API_TIMEOUT_SECS`] for an answer.
    pub fn new(base: &str, token: Option<String>, backoff: Backoff) -> ApiClient {
        let timeout = Duration::from_secs(DEFAULT_API_TIMEOUT_SECS);
        ApiClient {
            agent: agent(timeout),
            timeout,
            base: base.trim_end_matches('/').to_owned(),
            token,
            backoff,
            on_retry: None,
        }
    }

    /// Waits `timeout` for a server to start answering: a server that
    /// accepts a request and never answers turns into a failed try (and is
    /// retried) rather than a wait without end.
    pub fn with_timeout(mut self, timeout: Duration) -> ApiClient {
        self.agent = agent(timeout);
        self.timeout = timeout;
        self
    }

    /// What a failed exchange says, naming the setting when it timed out.
    fn transport(&self, e: ureq::Error) -> String {
        match e {
            ureq::Error::Timeout(_) => format!(
                "no answer within {} s; if the server is only slow, wait longer with \
                 --api-timeout (or {ENV_API_TIMEOUT}, or api_timeout in the config file)",
                self.timeout.as_secs()
            ),
            e => e.to_string(),
        }
    }

    pub fn with_retry_hook(mut self, hook: RetryHook) -> ApiClient {
        self.on_retry = Some(hook);
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// One page of `GET /api/changes`; `cursor` None starts a snapshot.
    pub fn changes(&self, cursor: Option<&str>, limit: u32) -> Result<ChangePage, ApiError> {
        let url = format!("{}/api/changes", self.base);
        self.with_retries(&url, self.backoff, || {
            let mut req = self.agent.get(&url).query("limit", limit.to_string());
            if let Some(cursor) = cursor {
                req = req.query("cursor", cursor);
            }
            self.exchange(&url, self.authorize(req).call())
        })
    }

    /// The bytes of an asset (`GET /api/assets/{id}/data`), retried like
    /// the feed.
    pub fn asset_data(&self, id: i64) -> Result<Vec<u8>, ApiError> {
        let url = format!("{}/api/assets/{id}/data", self.base);
        self.with_retries(&url, self.backoff, || {
            let req = self.agent.get(&url);
            match self.authorize(req).call() {
                Ok(mut response) if response.status().is_success() => {
                    match response
                        .body_mut()
                        .with_config()
                        .limit(512 * 1024 * 1024)
                        .read_to_vec()
                    {
                        Ok(bytes) => Attempt::Done(bytes),
                        Err(e) => Attempt::Retry(0, self.transport(e), None),
                    }
                }
                other => match self.exchange::<serde_json::Value>(&url, other) {
                    Attempt::Done(_) => Attempt::Fail(ApiError::Protocol {
                        url: url.clone(),
                        reason: "no asset bytes".into(),
                    }),
                    Attempt::Retry(s, r, w) => Attempt::Retry(s, r, w),
                    Attempt::Fail(e) => Attempt::Fail(e),
                },
            }
        })
    }

    /// `GET /api/health`, tried once: status wants an answer now, not later.
    pub fn health(&self) -> Result<serde_json::Value, ApiError> {
        let url = format!("{}/api/health", self.base);
        let once = Backoff {
            attempts: 1,
            ..self.backoff
        };
        self.with_retries(&url, once, || {
            let req = self
                .agent
                .get(&url)
                .config()
                .timeout_global(Some(Duration::from_secs(5)))
                .build();
            self.exchange(&url, self.authorize(req).call())
        })
    }

    /// The credential on a request: a Supabase API key (`sb_secret_…`,
    /// `sb_publishable_…`) in the `apikey` header, where Supabase takes
    /// it; a JWT as the Bearer token.
    fn authorize<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(key) if key.starts_with("sb_") => req.header("apikey", key),
            Some(token) => req.header("Authorization", format!("Bearer {token}")),
            None => req,
        }
    }

    fn exchange<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Attempt<T> {
        let mut response = match result {
            Ok(r) => r,
            Err(e) => return Attempt::Retry(0, self.transport(e), None),
        };
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            // Read whole, then parsed from the slice: serde_json reading
            // from a stream goes byte by byte, which made parsing most of
            // an initial pull's time on this side.
            let body = match response
                .body_mut()
                .with_config()
                .limit(64 * 1024 * 1024)
                .read_to_vec()
            {
                Ok(body) => body,
                // A body cut off mid-way is a transport failure, not a bad
                // server: worth another try.
                Err(e @ (ureq::Error::Io(_) | ureq::Error::Timeout(_))) => {
                    return Attempt::Retry(status, self.transport(e), None);
                }
                Err(e) => {
                    return Attempt::Fail(ApiError::Protocol {
                        url: url.to_owned(),
                        reason: e.to_string(),
                    });
                }
            };
            return match serde_json::from_slice::<T>(&body) {
                Ok(v) => Attempt::Done(v),
                Err(e) => Attempt::Fail(ApiError::Protocol {
                    url: url.to_owned(),
                    reason: e.to_string(),
                }),
            };
        }
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let problem: Problem = serde_json::from_str(&text).unwrap_or_default();
        let fallback = text.chars().take(200).collect::<String>();
        let detail = problem.describe(&fallback);
        match status {
            401 | 403 => Attempt::Fail(ApiError::Unauthorized { status, detail }),
            410 if problem.kind.as_deref() == Some(CURSOR_EXPIRED) => {
                Attempt::Fail(ApiError::CursorExpired)
            }
            s if is_transient(s) => Attempt::Retry(status, detail, retry_after),
            _ => Attempt::Fail(ApiError::Rejected { status, detail }),
        }
    }

    fn with_retries<T>(
        &self,
        url: &str,
        backoff: Backoff,
        mut call: impl FnMut() -> Attempt<T>,
    ) -> Result<T, ApiError> {
        let answer = backoff.retry(self.on_retry.as_ref(), || match call() {
            Attempt::Done(v) => Ok(Ok(v)),
            Attempt::Fail(e) => Ok(Err(e)),
            Attempt::Retry(status, reason, after) => Err(Transient {
                status,
                reason,
                after,
            }),
        });
        match answer {
            Ok(answer) => answer,
            Err(Exhausted { last, attempts }) if last.status == 0 => Err(ApiError::Unreachable {
                url: url.to_owned(),
                attempts,
                reason: last.reason,
            }),
            Err(Exhausted { last, attempts }) => Err(ApiError::Unavailable {
                status: last.status,
                detail: last.reason,
                attempts,
            }),
        }
    }
}

/// The HTTP agent: `timeout` for the answer to start, a connection within
/// 10 s, and a bound on a whole body (a 128 MiB asset over a slow link).
fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        // Statuses are read and mapped here, not turned into errors.
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_recv_response(Some(timeout))
        .timeout_recv_body(Some(Duration::from_secs(600)))
        .user_agent(concat!("local-agent/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// Generic calls for the migration: import batches, asset uploads and
/// read-back lists. Every one of them is idempotent (imports are upserts by
/// id), so retrying after a lost answer is safe.
impl ApiClient {
    /// `GET {path}` with query parameters; the JSON answer.
    pub fn get_json(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<serde_json::Value, ApiError> {
        let url = format!("{}{path}", self.base);
        self.with_retries(&url, self.backoff, || {
            let mut req = self.agent.get(&url);
            for (k, v) in query {
                req = req.query(*k, v);
            }
            self.exchange(&url, self.authorize(req).call())
        })
    }

    /// `POST {path}` with a JSON body; the JSON answer.
    pub fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, ApiError> {
        let url = format!("{}{path}", self.base);
        self.with_retries(&url, self.backoff, || {
            let req = self.agent.post(&url);
            self.exchange(&url, self.authorize(req).send_json(body))
        })
    }

    /// `PUT {path}` with raw bytes and their Content-Type; the JSON answer.
    pub fn put_bytes(
        &self,
        path: &str,
        query: &[(&str, String)],
        content_type: &str,
        bytes: &[u8],
    ) -> Result<serde_json::Value, ApiError> {
        let url = format!("{}{path}", self.base);
        self.with_retries(&url, self.backoff, || {
            let mut req = self.agent.put(&url).header("Content-Type", content_type);
            for (k, v) in query {
                req = req.query(*k, v);
            }
            self.exchange(&url, self.authorize(req).send(bytes))
        })
    }
}
