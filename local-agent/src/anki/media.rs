//! Sound files into Anki's media folder, in requests small enough that
//! Anki stays responsive ([`REQUEST_BYTES`](super::connect::REQUEST_BYTES)).
//!
//! A file's name is made of its bytes' digest ([`notes::media_file_name`]),
//! so a name Anki already has holds these bytes: such files are not sent
//! again (a push that stopped half-way resumes where it was). An Anki on
//! this computer reads each file from disk ([`send`]).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::PathBuf;

use serde_json::json;

use super::connect::{Action, AnkiConnect, AnkiError, Batcher};
use super::notes::{self, Audio};
use super::{Progress, base64};
use crate::api::ApiClient;
use crate::store::Store;

#[derive(Debug, Default)]
pub struct Sent {
    /// Files stored by this push.
    pub stored: usize,
    /// Files Anki had already.
    pub present: usize,
    /// Bytes stored.
    pub bytes: u64,
    /// Files Anki read from a path on this computer rather than from the
    /// request.
    pub by_path: usize,
    /// File name → why it could not be stored.
    pub failed: HashMap<String, String>,
}

/// The agent's media files Anki has; an add-on without
/// `getMediaFilesNames` is treated as having none.
fn present(anki: &AnkiConnect) -> Result<HashSet<String>, AnkiError> {
    match anki.invoke(
        "getMediaFilesNames",
        json!({"pattern": format!("{}*", notes::MEDIA_PREFIX)}),
    ) {
        Ok(names) => Ok(names
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_str().map(str::to_owned))
            .collect()),
        Err(AnkiError::Unsupported(_)) => Ok(HashSet::new()),
        Err(e) => Err(e),
    }
}

/// Stores every file of `wanted` that Anki lacks. Transport failures stop
/// the push (Anki is gone); a file refused or unreadable is reported by
/// name, and the notes that play it are not sent.
///
/// When Anki runs on this computer the bytes go as files: each sound is
/// written once into a folder beside the store and Anki is handed its
/// `path`, so a request carries a file name instead of megabytes of base64
/// that AnkiConnect would parse on Anki's main thread. A file Anki cannot
/// read (another machine, or a sandboxed Anki that cannot see the folder)
/// is sent again as `data`.
pub fn send(
    store: &mut Store,
    anki: &AnkiConnect,
    api: Option<&ApiClient>,
    wanted: &[&Audio],
    progress: &mut dyn FnMut(Progress),
) -> Result<Sent, AnkiError> {
    let mut sent = Sent::default();
    if wanted.is_empty() {
        return Ok(sent);
    }
    let have = present(anki)?;
    let missing: Vec<&Audio> = wanted
        .iter()
        .copied()
        .filter(|a| !have.contains(&a.file_name))
        .collect();
    sent.present = wanted.len() - missing.len();
    let files_total = missing.len();
    let bytes_total: u64 = missing.iter().map(|a| a.size).sum();
    let mut files = 0;
    let mut bytes = 0;
    let mut report = |files: usize, bytes: u64| {
        progress(Progress::Media {
            files,
            files_total,
            bytes,
            bytes_total,
        })
    };
    report(0, 0);
    let staging = Staging::for_push(store, anki);
    let mut by_path = staging.is_some();
    // Files Anki could not read from their path, to send again as data.
    let mut by_data: Vec<(String, Vec<u8>)> = Vec::new();
    // Answers one batch; says whether Anki read none of the paths it was
    // handed (then it cannot see this computer's files: the rest go as data).
    let mut flush = |batch: Vec<(Action, Staged)>,
                     sent: &mut Sent,
                     retry: &mut Vec<(String, Vec<u8>)>|
     -> Result<bool, AnkiError> {
        let (answered, closed) = anki.multi_tagged(batch)?;
        let (mut read, mut unread) = (0, 0);
        for (answer, staged) in answered {
            let size = staged.size;
            match (answer, staged.path) {
                (Ok(_), path) => {
                    sent.stored += 1;
                    sent.bytes += size;
                    if let Some(path) = path {
                        read += 1;
                        sent.by_path += 1;
                        // Anki has its own copy now.
                        let _ = fs::remove_file(path);
                    }
                }
                (Err(_), Some(path)) => {
                    unread += 1;
                    match fs::read(&path) {
                        Ok(data) => {
                            let _ = fs::remove_file(path);
                            retry.push((staged.name, data));
                            continue;
                        }
                        Err(e) => {
                            let name = staged.name;
                            sent.failed
                                .insert(name.clone(), format!("reading {name}: {e}"));
                        }
                    }
                }
                (Err(e), None) => {
                    let name = staged.name;
                    sent.failed
                        .insert(name.clone(), format!("storing {name}: {e}"));
                }
            }
            files += 1;
            bytes += size;
            report(files, bytes);
        }
        closed.check()?;
        Ok(unread > 0 && read == 0)
    };
    let mut batcher = Batcher::default();
    for audio in missing {
        let data = match audio_bytes(store, api, audio) {
            Ok(data) => data,
            Err(e) => {
                sent.failed.insert(audio.file_name.clone(), e);
                continue;
            }
        };
        let staged_path = staging
            .as_ref()
            .filter(|_| by_path)
            .and_then(|s| s.put(&audio.file_name, &data));
        let (action, staged) = match staged_path {
            Some(path) => (
                Action::new(
                    "storeMediaFile",
                    json!({"filename": audio.file_name, "path": path}),
                ),
                Staged::at(&audio.file_name, data.len(), path),
            ),
            None => (
                data_action(&audio.file_name, &data),
                Staged::inline(&audio.file_name, data.len()),
            ),
        };
        if let Some(batch) = batcher.push(action, staged) {
            by_path &= !flush(batch, &mut sent, &mut by_data)?;
        }
    }
    if let Some(batch) = batcher.finish() {
        flush(batch, &mut sent, &mut by_data)?;
    }
    let retries = std::mem::take(&mut by_data);
    let batches = Batcher::pack(
        retries
            .iter()
            .map(|(name, data)| (data_action(name, data), Staged::inline(name, data.len()))),
    );
    for batch in batches {
        flush(batch, &mut sent, &mut by_data)?;
    }
    drop(staging);
    Ok(sent)
}

fn data_action(name: &str, data: &[u8]) -> Action {
    Action::new(
        "storeMediaFile",
        json!({"filename": name, "data": base64(data)}),
    )
}

/// A file of a `storeMediaFile` request, for reading its answer.
struct Staged {
    name: String,
    size: u64,
    /// Where the file was written, when Anki was handed its path.
    path: Option<PathBuf>,
}

impl Staged {
    fn at(name: &str, size: usize, path: PathBuf) -> Staged {
        Staged {
            name: name.to_owned(),
            size: size as u64,
            path: Some(path),
        }
    }

    fn inline(name: &str, size: usize) -> Staged {
        Staged {
            name: name.to_owned(),
            size: size as u64,
            path: None,
        }
    }
}

/// The folder a push writes sounds into for Anki to read: beside the
/// store (`<store file>.anki-media`), in the learner's own data folder,
/// where an Anki of the same user can read. Files are named by their
/// digest, written under a temporary name and renamed, so a file under its
/// final name is always whole; the folder is removed when the push ends.
struct Staging {
    dir: PathBuf,
}

impl Staging {
    /// `None` when Anki is not on this computer, or the store has no
    /// folder (in memory), or the folder cannot be made: then every file
    /// goes as data.
    fn for_push(store: &Store, anki: &AnkiConnect) -> Option<Staging> {
        if !is_loopback(anki.url()) {
            return None;
        }
        let file = store.path()?;
        let mut name = file.file_name()?.to_owned();
        name.push(".anki-media");
        let dir = std::path::absolute(file.with_file_name(name)).ok()?;
        fs::create_dir_all(&dir).ok()?;
        Some(Staging { dir })
    }

    /// Writes `data` as `name`; `None` when it cannot (a full disk, say),
    /// and the file then goes as data.
    fn put(&self, name: &str, data: &[u8]) -> Option<PathBuf> {
        let path = self.dir.join(name);
        let mut partial = tempfile::NamedTempFile::new_in(&self.dir).ok()?;
        partial.write_all(data).ok()?;
        partial.persist(&path).ok()?;
        Some(path)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // What a killed push left is removed by the next one's end.
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Whether an AnkiConnect URL names this computer.
fn is_loopback(url: &str) -> bool {
    let Ok(uri) = url.parse::<ureq::http::Uri>() else {
        return false;
    };
    let Some(host) = uri.host() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The bytes of a sound: from the store's cache, else from the API (and
/// then cached).
fn audio_bytes(
    store: &mut Store,
    api: Option<&ApiClient>,
    audio: &Audio,
) -> Result<Vec<u8>, String> {
    if let Some(bytes) = store
        .cached_asset(&audio.sha256)
        .map_err(|e| e.to_string())?
    {
        return Ok(bytes);
    }
    let Some(api) = api else {
        return Err(format!(
            "the bytes of asset {} are not cached and no API is configured",
            audio.asset_id
        ));
    };
    let bytes = api
        .asset_data(audio.asset_id)
        .map_err(|e| format!("downloading asset {}: {e}", audio.asset_id))?;
    store
        .put_cached_asset(&audio.sha256, &bytes)
        .map_err(|e| format!("asset {}: {e}", audio.asset_id))?;
    Ok(bytes)
}
