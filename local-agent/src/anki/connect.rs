//! A typed client for AnkiConnect's API version 6: every request carries
//! `"version": 6` (and the key when one is configured), every reply is the
//! envelope `{"result": …, "error": null | "<text>"}`, and the add-on's
//! error strings are mapped to [`AnkiError`] variants so that callers
//! branch on meaning, not on text.

use std::time::Duration;

use serde_json::{Value, json};

/// The API version this client speaks.
pub const API_VERSION: u64 = 6;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AnkiError {
    #[error(
        "Anki is not running (nothing answers at {url}: {reason}): start Anki with the \
         AnkiConnect add-on, then run `local-agent anki push` again"
    )]
    NotRunning { url: String, reason: String },
    #[error(
        "Anki at {url} took the request but did not answer within {secs} s (Anki answers on \
         its main thread; a large media file or a busy window holds it up): wait for Anki, \
         then run the command again, or allow more time with [anki] timeout in the config \
         file or THAI_AGENT_ANKI_TIMEOUT"
    )]
    NoAnswer { url: String, secs: u64 },
    #[error(
        "Anki at {url} closed the connection before answering ({reason}): Anki quit or crashed \
         during the request. Start Anki, then run `local-agent anki push` again (what Anki did \
         not confirm was not recorded, and is sent again)"
    )]
    Dropped { url: String, reason: String },
    #[error(
        "AnkiConnect at {url} answered without the version-6 envelope: update the AnkiConnect \
         add-on (Tools > Add-ons > Check for updates) and restart Anki"
    )]
    TooOld { url: String },
    #[error(
        "AnkiConnect refused the API key: set [anki] api_key in the config file or \
         THAI_AGENT_ANKI_KEY to the key of AnkiConnect's config"
    )]
    BadKey,
    #[error(
        "Anki closed its collection during the push (Anki is quitting, or another profile is \
         being opened): open Anki on your profile, then run `local-agent anki push` again (what \
         Anki did not confirm was not recorded, and is sent again)"
    )]
    CollectionClosed,
    #[error("cannot create note because it is a duplicate")]
    Duplicate,
    #[error("cannot create note because it is empty")]
    Empty,
    #[error("model was not found: {0}")]
    ModelNotFound(String),
    #[error("deck was not found: {0}")]
    DeckNotFound(String),
    #[error("Note was not found: {0}")]
    NoteNotFound(String),
    #[error("AnkiConnect does not support the action {0}: update the add-on")]
    Unsupported(String),
    #[error("Model name already exists")]
    ModelExists,
    /// Any other error text, verbatim.
    #[error("AnkiConnect: {0}")]
    Other(String),
    #[error("AnkiConnect sent a reply this agent cannot read: {0}")]
    Protocol(String),
}

impl AnkiError {
    /// Maps one of AnkiConnect's error strings to its meaning.
    pub fn from_text(text: &str, action: &str) -> AnkiError {
        let text = text.trim();
        // addNotes reports its per-note errors as a Python list's repr.
        let inner = text
            .strip_prefix("['")
            .and_then(|t| t.strip_suffix("']"))
            .unwrap_or(text);
        if inner == "cannot create note because it is a duplicate" {
            return AnkiError::Duplicate;
        }
        if inner == "cannot create note because it is empty" {
            return AnkiError::Empty;
        }
        if let Some(name) = text.strip_prefix("model was not found: ") {
            return AnkiError::ModelNotFound(name.to_owned());
        }
        if let Some(name) = text.strip_prefix("deck was not found: ") {
            return AnkiError::DeckNotFound(name.to_owned());
        }
        if let Some(id) = text.strip_prefix("Note was not found: ") {
            return AnkiError::NoteNotFound(id.to_owned());
        }
        match text {
            // The add-on's answer while Anki has no collection open: for
            // every action, not for this one.
            "collection is not available"
            | "decks are not available"
            | "database is not available"
            | "media is not available" => AnkiError::CollectionClosed,
            "unsupported action" => AnkiError::Unsupported(action.to_owned()),
            "Model name already exists" => AnkiError::ModelExists,
            "valid api key must be provided" => AnkiError::BadKey,
            _ => AnkiError::Other(text.to_owned()),
        }
    }
}

/// One action of a [`AnkiConnect::multi`] batch.
#[derive(Debug, Clone)]
pub struct Action {
    pub action: &'static str,
    pub params: Value,
}

impl Action {
    pub fn new(action: &'static str, params: Value) -> Action {
        Action { action, params }
    }
}

/// The most bytes one request should carry. AnkiConnect reads a request on
/// Anki's main thread 1 KiB at a time and parses the whole buffer again
/// after each read, so a request's cost grows with the square of its size,
/// Anki frozen meanwhile. Measured with Anki 26.9.3 (one `storeMediaFile`):
/// up to 512 KiB about 25 ms (the add-on's poll interval), 1 MiB 0.1 s,
/// 2 MiB 0.6 s, 4 MiB 2.6 s, 8 MiB 10.6 s; 64 files of 48 KiB went at
/// 1.9 MiB/s one per request, 7.4 at 256 KiB, 7.6 at 512 KiB, 5.9 at 1 MiB.
pub const REQUEST_BYTES: usize = 512 * 1024;
/// The most actions one `multi` carries, whatever their size: Anki answers
/// nothing until all are done.
pub const REQUEST_ACTIONS: usize = 250;

/// Packs actions into `multi` requests within [`REQUEST_BYTES`] and
/// [`REQUEST_ACTIONS`]; an action larger than the limit goes alone. Each
/// action carries what the caller needs to read its answer.
#[derive(Debug)]
pub struct Batcher<T> {
    batch: Vec<(Action, T)>,
    bytes: usize,
}

impl<T> Default for Batcher<T> {
    fn default() -> Self {
        Batcher {
            batch: Vec::new(),
            bytes: 0,
        }
    }
}

impl<T> Batcher<T> {
    /// Adds an action; answers the batch to send first when it would not
    /// fit beside the ones already there.
    pub fn push(&mut self, action: Action, tag: T) -> Option<Vec<(Action, T)>> {
        // The envelope around params adds a few dozen bytes.
        let size = action.params.to_string().len() + action.action.len() + 64;
        let full = !self.batch.is_empty()
            && (self.bytes + size > REQUEST_BYTES || self.batch.len() >= REQUEST_ACTIONS);
        let ready = full.then(|| std::mem::take(&mut self.batch));
        if full {
            self.bytes = 0;
        }
        self.bytes += size;
        self.batch.push((action, tag));
        ready
    }

    /// What is left.
    pub fn finish(self) -> Option<Vec<(Action, T)>> {
        (!self.batch.is_empty()).then_some(self.batch)
    }

    /// Every action, packed.
    pub fn pack(items: impl IntoIterator<Item = (Action, T)>) -> Vec<Vec<(Action, T)>> {
        let mut batcher = Batcher::default();
        let mut out = Vec::new();
        for (action, tag) in items {
            out.extend(batcher.push(action, tag));
        }
        out.extend(batcher.finish());
        out
    }
}

/// Whether Anki closed its collection during a request.
#[derive(Debug, Clone, Copy)]
#[must_use = "the push must stop when Anki closed its collection"]
pub struct Closed(bool);

impl Closed {
    pub fn check(self) -> Result<(), AnkiError> {
        if self.0 {
            Err(AnkiError::CollectionClosed)
        } else {
            Ok(())
        }
    }
}

/// One action's answer beside the caller's tag.
pub type Answered<T> = (Result<Value, AnkiError>, T);

pub struct AnkiConnect {
    agent: ureq::Agent,
    timeout: Duration,
    url: String,
    key: Option<String>,
}

impl std::fmt::Debug for AnkiConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnkiConnect")
            .field("url", &self.url)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl AnkiConnect {
    /// A client that waits `timeout` for Anki to answer a request (a
    /// connection must be made within 5 s: Anki runs on this machine).
    pub fn new(url: &str, key: Option<String>, timeout: Duration) -> AnkiConnect {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_global(Some(timeout))
            .build()
            .into();
        AnkiConnect {
            agent,
            timeout,
            url: url.to_owned(),
            key,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// One action; its envelope's error becomes an [`AnkiError`].
    pub fn invoke(&self, action: &'static str, params: Value) -> Result<Value, AnkiError> {
        let mut body = json!({"action": action, "version": API_VERSION, "params": params});
        if let Some(key) = &self.key {
            body["key"] = json!(key);
        }
        let reply = self.post(&body)?;
        self.open_envelope(reply, action)
    }

    /// Several actions in one request; one failing does not stop the
    /// others, and each answer is its own `Result`, in order.
    pub fn multi(&self, actions: &[Action]) -> Result<Vec<Result<Value, AnkiError>>, AnkiError> {
        if actions.is_empty() {
            return Ok(Vec::new());
        }
        let inner: Vec<Value> = actions
            .iter()
            .map(|a| json!({"action": a.action, "version": API_VERSION, "params": a.params}))
            .collect();
        let replies = self.invoke("multi", json!({"actions": inner}))?;
        let Value::Array(replies) = replies else {
            return Err(AnkiError::Protocol("multi did not answer a list".into()));
        };
        if replies.len() != actions.len() {
            return Err(AnkiError::Protocol(format!(
                "multi answered {} results for {} actions",
                replies.len(),
                actions.len()
            )));
        }
        replies
            .into_iter()
            .zip(actions)
            .map(|(reply, a)| Ok(self.open_envelope(reply, a.action)))
            .collect()
    }

    /// [`multi`](Self::multi) of a packed batch: each answer beside its tag.
    ///
    /// Anki closing its collection half-way through is not an answer for
    /// the actions it hit: their outcome is unknown. They are left out, and
    /// [`Closed::check`] stops the caller once it has recorded the others.
    pub fn multi_tagged<T>(
        &self,
        batch: Vec<(Action, T)>,
    ) -> Result<(Vec<Answered<T>>, Closed), AnkiError> {
        let (actions, tags): (Vec<Action>, Vec<T>) = batch.into_iter().unzip();
        let mut closed = false;
        let answered = self
            .multi(&actions)?
            .into_iter()
            .zip(tags)
            .filter(|(answer, _)| {
                let gone = matches!(answer, Err(AnkiError::CollectionClosed));
                closed |= gone;
                !gone
            })
            .collect();
        Ok((answered, Closed(closed)))
    }

    /// The add-on's API version; also the check that Anki runs.
    pub fn version(&self) -> Result<u64, AnkiError> {
        let v = self.invoke("version", json!({}))?;
        v.as_u64()
            .ok_or_else(|| AnkiError::Protocol(format!("version answered {v}")))
    }

    fn post(&self, body: &Value) -> Result<Value, AnkiError> {
        // Writes are not retried here: Anki may have done what a request
        // asked before its answer was lost, so the user decides.
        let mut response = self
            .agent
            .post(&self.url)
            // AnkiConnect closes every connection after its answer without
            // saying so; a pooled connection would fail the next request.
            .header("Connection", "close")
            .send_json(body)
            .map_err(|e| self.transport_error(e))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(256 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| self.transport_error(e))?;
        if status == 403 {
            return Err(AnkiError::BadKey);
        }
        if !(200..300).contains(&status) {
            return Err(AnkiError::Protocol(format!(
                "HTTP {status}: {}",
                text.chars().take(200).collect::<String>()
            )));
        }
        serde_json::from_str(&text).map_err(|e| AnkiError::Protocol(e.to_string()))
    }

    /// What a failed exchange means for the user: nothing listens (Anki is
    /// not running), Anki took the request but is slow, or Anki went away
    /// in the middle of it.
    fn transport_error(&self, e: ureq::Error) -> AnkiError {
        use std::io::ErrorKind;
        let url = self.url.clone();
        match e {
            ureq::Error::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve)
            | ureq::Error::ConnectionFailed
            | ureq::Error::HostNotFound => AnkiError::NotRunning {
                url,
                reason: e.to_string(),
            },
            ureq::Error::Io(io)
                if matches!(
                    io.kind(),
                    ErrorKind::ConnectionRefused | ErrorKind::AddrNotAvailable
                ) =>
            {
                AnkiError::NotRunning {
                    url,
                    reason: io.to_string(),
                }
            }
            ureq::Error::Timeout(_) => AnkiError::NoAnswer {
                url,
                secs: self.timeout.as_secs(),
            },
            e => AnkiError::Dropped {
                url,
                reason: e.to_string(),
            },
        }
    }

    fn open_envelope(&self, reply: Value, action: &str) -> Result<Value, AnkiError> {
        match reply {
            Value::Object(mut map) if map.contains_key("result") && map.contains_key("error") => {
                match map.remove("error") {
                    Some(Value::Null) | None => Ok(map.remove("result").unwrap_or(Value::Null)),
                    Some(Value::String(text)) => Err(AnkiError::from_text(&text, action)),
                    Some(other) => Err(AnkiError::Other(other.to_string())),
                }
            }
            // A version-4 reply: the bare result, no envelope.
            _ => Err(AnkiError::TooOld {
                url: self.url.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_stay_within_the_limits_and_a_large_action_goes_alone() {
        let action =
            |bytes: usize| Action::new("storeMediaFile", json!({"data": "a".repeat(bytes)}));
        let sizes = [100_000, 100_000, 300_000, 1_000_000, 10, 10];
        let batches = Batcher::pack(sizes.iter().enumerate().map(|(i, &n)| (action(n), i)));
        let tags: Vec<Vec<usize>> = batches
            .iter()
            .map(|b| b.iter().map(|(_, t)| *t).collect())
            .collect();
        assert_eq!(tags, vec![vec![0, 1, 2], vec![3], vec![4, 5]]);
        let many = Batcher::pack((0..600).map(|i| (action(1), i)));
        assert_eq!(
            many.iter().map(Vec::len).collect::<Vec<_>>(),
            [REQUEST_ACTIONS, REQUEST_ACTIONS, 100]
        );
    }

    #[test]
    fn error_strings_map_to_meanings() {
        let e = |t| AnkiError::from_text(t, "addNote");
        assert_eq!(
            e("cannot create note because it is a duplicate"),
            AnkiError::Duplicate
        );
        assert_eq!(
            e("['cannot create note because it is a duplicate']"),
            AnkiError::Duplicate
        );
        assert_eq!(
            e("cannot create note because it is empty"),
            AnkiError::Empty
        );
        assert_eq!(
            e("model was not found: Thai"),
            AnkiError::ModelNotFound("Thai".into())
        );
        assert_eq!(
            e("deck was not found: Thai::A"),
            AnkiError::DeckNotFound("Thai::A".into())
        );
        assert_eq!(
            e("Note was not found: 17"),
            AnkiError::NoteNotFound("17".into())
        );
        assert_eq!(
            e("unsupported action"),
            AnkiError::Unsupported("addNote".into())
        );
        assert_eq!(e("Model name already exists"), AnkiError::ModelExists);
        assert_eq!(
            e("collection is not available"),
            AnkiError::CollectionClosed
        );
        assert_eq!(
            e("something else"),
            AnkiError::Other("something else".into())
        );
    }
}
