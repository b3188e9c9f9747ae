//! Downloading a model's files from the Hugging Face hub (or a mirror of it
//! that speaks the same protocol, `HF_ENDPOINT`).
//!
//! For each file, a `HEAD` of `{endpoint}/{repo}/resolve/{revision}/{file}`
//! without following redirects says what to expect: files kept in Git LFS
//! (the weights) answer with a redirect to their storage and carry
//! `X-Linked-Size` and `X-Linked-Etag` (the file's sha256); other files
//! answer with their `Content-Length` and an `ETag` that is Git's object id
//! (sha1 of `blob {size}\0` and the bytes). The `GET` follows the redirect
//! and asks for the rest of a partial file with `Range`. Every file is
//! checked against its size and hash before the model is installed; one
//! that does not match is deleted and nothing is installed.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Installed, Models, ModelsError, Origin};
use crate::embed::REQUIRED_FILES;

/// The hub the hub's own tools use unless `HF_ENDPOINT` names another.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// The variable the hub's own tools read for a mirror's address.
pub const ENV_ENDPOINT: &str = "HF_ENDPOINT";
/// The variable the hub's own tools read for an access token (gated or
/// private models).
pub const ENV_TOKEN: &str = "HF_TOKEN";

/// Files a model may have besides the required ones: how long its inputs
/// may be, how it pools, its modules.
pub const OPTIONAL_FILES: [&str; 3] = [
    "sentence_bert_config.json",
    "1_Pooling/config.json",
    "modules.json",
];

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    #[error(
        "cannot reach the model hub at {url} ({reason}); check the connection, or set \
         {ENV_ENDPOINT} to a mirror; a partial download is kept and resumes next time"
    )]
    Unreachable { url: String, reason: String },
    #[error(
        "the model hub has no {file} in {repo} at revision {revision}: is the name right, and \
         is it a sentence-transformers model with safetensors weights?"
    )]
    Missing {
        repo: String,
        revision: String,
        file: String,
    },
    #[error(
        "the model hub refused access to {repo} ({status}); for a gated or private model set \
         {ENV_TOKEN} to an access token"
    )]
    Refused { repo: String, status: u16 },
    #[error("the model hub answered {status} for {url}")]
    Status { url: String, status: u16 },
    #[error("the model hub sent no size for {file} ({url})")]
    NoSize { file: String, url: String },
    #[error(
        "{file} arrived with {what} {got}, but the hub said {expected}; the download was \
         deleted and nothing was installed (try again; if it persists, the hub or a proxy is \
         serving a broken file)"
    )]
    Mismatch {
        file: String,
        what: &'static str,
        expected: String,
        got: String,
    },
    #[error("cannot write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What one file should be, from its `HEAD`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Remote {
    /// Where its bytes are (the storage a redirect points at).
    url: String,
    size: u64,
    check: Check,
    commit: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Check {
    /// An LFS file's sha256, hex.
    Sha256(String),
    /// Git's object id of a small file, hex.
    GitSha1(String),
    /// The hub sent nothing to check but the size.
    SizeOnly,
}

impl Check {
    fn tag(&self) -> String {
        match self {
            Check::Sha256(h) => format!("sha256:{h}"),
            Check::GitSha1(h) => format!("git:{h}"),
            Check::SizeOnly => String::new(),
        }
    }
}

/// What a download reports as it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress<'a> {
    /// A file starts: its size, and how much of it an earlier try left.
    Start {
        file: &'a str,
        size: u64,
        resumed_at: u64,
    },
    /// Bytes of the current file so far.
    Bytes { done: u64 },
    /// A try broke off and is retried from where it stopped.
    Retry { file: &'a str, reason: &'a str },
}

/// A client of the hub.
pub struct Hub {
    /// `HEAD`s, which must see the redirect rather than follow it.
    head: ureq::Agent,
    get: ureq::Agent,
    endpoint: String,
    token: Option<String>,
    /// Tries per file, each resuming where the last stopped.
    pub tries: u32,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Hub {
    pub fn new(endpoint: &str, token: Option<String>) -> Hub {
        let agent = |redirects: u32| -> ureq::Agent {
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(redirects)
                .timeout_connect(Some(Duration::from_secs(30)))
                .timeout_recv_response(Some(Duration::from_secs(60)))
                // A stalled transfer is a broken one: retried, resumed.
                .timeout_per_read(Some(Duration::from_secs(60)))
                .build()
                .into()
        };
        Hub {
            head: agent(0),
            get: agent(10),
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            token: token.filter(|t| !t.trim().is_empty()),
            tries: 5,
        }
    }

    /// The hub `HF_ENDPOINT` names, else the public one, with `HF_TOKEN`.
    pub fn from_env() -> Hub {
        let var = |name| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Hub::new(
            var(ENV_ENDPOINT).as_deref().unwrap_or(DEFAULT_ENDPOINT),
            var(ENV_TOKEN),
        )
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn file_url(&self, repo: &str, revision: &str, file: &str) -> String {
        format!("{}/{repo}/resolve/{revision}/{file}", self.endpoint)
    }

    fn authorise<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        let req = req.header("Accept-Encoding", "identity");
        match &self.token {
            Some(t) => req.header("Authorization", format!("Bearer {t}")),
            None => req,
        }
    }

    /// What `file` should be, or `None` when the repository has no such
    /// file.
    fn remote(&self, repo: &str, revision: &str, file: &str) -> Result<Option<Remote>, HubError> {
        let mut url = self.file_url(repo, revision, file);
        // Relative redirects are the hub's own (a renamed repository) and
        // are followed; one to another host is where an LFS file's bytes
        // are, which the GET follows.
        for _ in 0..5 {
            let response =
                self.authorise(self.head.head(&url))
                    .call()
                    .map_err(|e| HubError::Unreachable {
                        url: url.clone(),
                        reason: e.to_string(),
                    })?;
            let status = response.status().as_u16();
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let linked_etag = header("x-linked-etag").map(|e| normalise_etag(&e));
            let location = header("location");
            if (300..400).contains(&status)
                && linked_etag.is_none()
                && let Some(loc) = location.as_deref().filter(|l| l.starts_with('/'))
            {
                url = format!("{}{loc}", origin_of(&url));
                continue;
            }
            match status {
                200..=399 => {}
                404 => return Ok(None),
                401 | 403 => {
                    return Err(HubError::Refused {
                        repo: repo.to_owned(),
                        status,
                    });
                }
                _ => return Err(HubError::Status { url, status }),
            }
            let size = header("x-linked-size")
                .or_else(|| header("content-length"))
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| HubError::NoSize {
                    file: file.to_owned(),
                    url: url.clone(),
                })?;
            let check = match (linked_etag, header("etag").map(|e| normalise_etag(&e))) {
                (Some(sha), _) if is_hex(&sha, 64) => Check::Sha256(sha),
                (_, Some(oid)) if is_hex(&oid, 40) => Check::GitSha1(oid),
                (_, Some(sha)) if is_hex(&sha, 64) => Check::Sha256(sha),
                _ => Check::SizeOnly,
            };
            let url = match location {
                Some(loc) if (300..400).contains(&status) => resolve_location(&url, &loc),
                _ => url,
            };
            return Ok(Some(Remote {
                url,
                size,
                check,
                commit: header("x-repo-commit"),
            }));
        }
        Err(HubError::Status { url, status: 310 })
    }

    /// Downloads `remote` into `part` (resuming what is there), with up to
    /// `tries` tries; checks its size and hash.
    fn download(
        &self,
        file: &str,
        remote: &Remote,
        part: &Path,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<(), HubError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| HubError::Io { path, source }
        };
        // A partial file is only resumed if it is of the same remote file.
        let tag_path = with_suffix(part, ".tag");
        let tag = remote.check.tag();
        let same = std::fs::read_to_string(&tag_path).is_ok_and(|t| t == tag && !tag.is_empty());
        let mut have = match std::fs::metadata(part) {
            Ok(m) if same && m.len() <= remote.size => m.len(),
            _ => 0,
        };
        if have == 0 {
            File::create(part).map_err(io(part))?;
            std::fs::write(&tag_path, &tag).map_err(io(&tag_path))?;
        }
        progress(Progress::Start {
            file,
            size: remote.size,
            resumed_at: have,
        });
        let mut attempt = 0;
        while have < remote.size {
            attempt += 1;
            match self.fetch_from(remote, part, have, progress) {
                Ok(now) => have = now,
                Err(Broken::Fatal(e)) => return Err(e),
                Err(Broken::Retry(reason, now)) => {
                    have = now;
                    if attempt >= self.tries {
                        return Err(HubError::Unreachable {
                            url: remote.url.clone(),
                            reason,
                        });
                    }
                    progress(Progress::Retry {
                        file,
                        reason: &reason,
                    });
                    std::thread::sleep(Duration::from_millis(250 * u64::from(attempt)));
                }
            }
        }
        let got = std::fs::metadata(part).map_err(io(part))?.len();
        let mismatch = |what, expected: String, got: String| {
            let _ = std::fs::remove_file(part);
            let _ = std::fs::remove_file(&tag_path);
            HubError::Mismatch {
                file: file.to_owned(),
                what,
                expected,
                got,
            }
        };
        if got != remote.size {
            return Err(mismatch("size", remote.size.to_string(), got.to_string()));
        }
        match &remote.check {
            Check::Sha256(expected) => {
                let got = hash_file::<sha2::Sha256>(part, None).map_err(io(part))?;
                if &got != expected {
                    return Err(mismatch("sha256", expected.clone(), got));
                }
            }
            Check::GitSha1(expected) => {
                let header = format!("blob {}\0", remote.size);
                let got =
                    hash_file::<sha1::Sha1>(part, Some(header.as_bytes())).map_err(io(part))?;
                if &got != expected {
                    return Err(mismatch("git object id", expected.clone(), got));
                }
            }
            Check::SizeOnly => {}
        }
        let _ = std::fs::remove_file(&tag_path);
        Ok(())
    }

    /// One GET from `have` on; how far the file got.
    fn fetch_from(
        &self,
        remote: &Remote,
        part: &Path,
        have: u64,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<u64, Broken> {
        let fatal = |path: &Path| {
            let path = path.to_owned();
            move |source| Broken::Fatal(HubError::Io { path, source })
        };
        let mut req = self.authorise(self.get.get(&remote.url));
        if have > 0 {
            req = req.header("Range", format!("bytes={have}-"));
        }
        let mut response = req.call().map_err(|e| Broken::Retry(e.to_string(), have))?;
        let status = response.status().as_u16();
        let mut file = OpenOptions::new()
            .append(true)
            .open(part)
            .map_err(fatal(part))?;
        let mut done = match status {
            206 if have > 0 => have,
            200 => {
                // The server sent the whole file: start over.
                file.set_len(0).map_err(fatal(part))?;
                0
            }
            416 => {
                // What is there cannot be resumed: start over next try.
                file.set_len(0).map_err(fatal(part))?;
                return Err(Broken::Retry("the server refused the range".into(), 0));
            }
            500..=599 | 429 => {
                return Err(Broken::Retry(format!("the server answered {status}"), have));
            }
            _ => {
                return Err(Broken::Fatal(HubError::Status {
                    url: remote.url.clone(),
                    status,
                }));
            }
        };
        let mut reader = response.body_mut().with_config().reader();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    file.flush().map_err(fatal(part))?;
                    return Err(Broken::Retry(e.to_string(), done));
                }
            };
            // Never more than the hub announced: a longer body fails the
            // size check rather than filling the disk.
            let n = n.min((remote.size - done) as usize);
            file.write_all(&buf[..n]).map_err(fatal(part))?;
            done += n as u64;
            progress(Progress::Bytes { done });
            if done == remote.size {
                break;
            }
        }
        file.sync_all().map_err(fatal(part))?;
        if done < remote.size {
            return Err(Broken::Retry(
                format!("the connection closed at {done} of {} bytes", remote.size),
                done,
            ));
        }
        Ok(done)
    }
}

enum Broken {
    /// Worth another try from the offset given.
    Retry(String, u64),
    Fatal(HubError),
}

impl Models {
    /// Downloads `repo` at `revision` and installs it as `name`: the
    /// required files and whichever optional ones the repository has, each
    /// checked; installed only when all are there. A download broken off
    /// resumes on the next call.
    pub fn fetch(
        &self,
        hub: &Hub,
        repo: &str,
        revision: &str,
        name: &str,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<Installed, ModelsError> {
        super::check_name(name)?;
        self.refuse_existing(name)?;
        let staging = self.staging(name);
        let mut commit = None;
        for (file, required) in REQUIRED_FILES
            .iter()
            .map(|f| (*f, true))
            .chain(OPTIONAL_FILES.iter().map(|f| (*f, false)))
        {
            let Some(remote) = hub.remote(repo, revision, file)? else {
                if required {
                    return Err(HubError::Missing {
                        repo: repo.to_owned(),
                        revision: revision.to_owned(),
                        file: file.to_owned(),
                    }
                    .into());
                }
                continue;
            };
            commit = commit.or_else(|| remote.commit.clone());
            let dst = staging.join(file);
            let parent = dst.parent().unwrap_or(&staging);
            std::fs::create_dir_all(parent).map_err(|source| HubError::Io {
                path: parent.to_owned(),
                source,
            })?;
            let part = with_suffix(&dst, ".part");
            hub.download(file, &remote, &part, progress)?;
            std::fs::rename(&part, &dst).map_err(|source| HubError::Io {
                path: dst.clone(),
                source,
            })?;
        }
        self.install(
            name,
            &Origin::Hub {
                repo: repo.to_owned(),
                revision: revision.to_owned(),
                commit,
            },
        )
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// An ETag without its weak marker and quotes.
fn normalise_etag(etag: &str) -> String {
    etag.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_ascii_lowercase()
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

/// A `Location` made absolute against the URL it answered.
fn resolve_location(url: &str, location: &str) -> String {
    if location.contains("://") {
        location.to_owned()
    } else if location.starts_with('/') {
        format!("{}{location}", origin_of(url))
    } else {
        let base = url.rsplit_once('/').map_or(url, |(b, _)| b);
        format!("{base}/{location}")
    }
}

fn hash_file<H: sha2::Digest>(path: &Path, prefix: Option<&[u8]>) -> std::io::Result<String> {
    let mut hasher = H::new();
    if let Some(p) = prefix {
        hasher.update(p);
    }
    let mut file = File::open(path)?;
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_lose_weak_markers_and_quotes() {
        assert_eq!(normalise_etag("W/\"AbC\""), "abc");
        assert_eq!(normalise_etag("\"abc\""), "abc");
    }

    #[test]
    fn locations_resolve_against_the_url_they_answered() {
        let url = "http://h:1/o/r/resolve/main/model.safetensors";
        assert_eq!(resolve_location(url, "https://cdn/x"), "https://cdn/x");
        assert_eq!(resolve_location(url, "/lfs/abc"), "http://h:1/lfs/abc");
        assert_eq!(
            resolve_location(url, "other"),
            "http://h:1/o/r/resolve/main/other"
        );
    }

    #[test]
    fn git_object_ids_are_sha1_of_a_blob_header_and_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello\n").unwrap();
        // `printf 'hello\n' | git hash-object --stdin`
        assert_eq!(
            hash_file::<sha1::Sha1>(&path, Some(b"blob 6\0")).unwrap(),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
    }
}
