//! Sound files into Anki's media folder.
//!
//! A file's name is made of its bytes' digest ([`notes::media_file_name`]),
//! so a name Anki already has holds these bytes: such files are not sent
//! again (a push that stopped half-way resumes where it was).
//!
//! When Anki runs on this computer the files are written straight into
//! the media folder Anki names (`getMediaDirPath`), as Anki allows for
//! files added by hand: it registers them when it next syncs or checks
//! media. Through AnkiConnect every new file costs about 20 ms of Anki's
//! main thread whatever its size (`storeMediaFile` with `data` or `path`
//! alike, measured with Anki 26.9.3), a written file about 1 ms. Otherwise
//! the bytes go as base64 `data` in requests small enough that Anki stays
//! responsive ([`REQUEST_BYTES`](super::connect::REQUEST_BYTES)).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

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
    /// Files written straight into Anki's media folder on this computer
    /// rather than sent in a request.
    pub into_folder: usize,
    /// File name → why it could not be stored.
    pub failed: HashMap<String, String>,
}

/// The agent's media files Anki has (`pattern` is a glob over names); an
/// add-on without `getMediaFilesNames` is treated as having none.
fn present(anki: &AnkiConnect, pattern: &str) -> Result<HashSet<String>, AnkiError> {
    match anki.invoke("getMediaFilesNames", json!({ "pattern": pattern })) {
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
    let have = present(anki, &format!("{}*", notes::MEDIA_PREFIX))?;
    let missing: Vec<&Audio> = wanted
        .iter()
        .copied()
        .filter(|a| !have.contains(&a.file_name))
        .collect();
    sent.present = wanted.len() - missing.len();
    let files_total = missing.len();
    let bytes_total: u64 = missing.iter().map(|a| a.size).sum();
    progress(Progress::Media {
        files: 0,
        files_total,
        bytes: 0,
        bytes_total,
    });
    let (mut files, mut bytes) = (0, 0);
    let mut report = |size: u64| {
        files += 1;
        bytes += size;
        progress(Progress::Media {
            files,
            files_total,
            bytes,
            bytes_total,
        })
    };
    let mut folder = if missing.is_empty() {
        None
    } else {
        AnkiFolder::find(anki)?
    };
    let mut batcher = Batcher::default();
    let flush = |batch: Vec<(Action, (String, u64))>,
                 sent: &mut Sent,
                 report: &mut dyn FnMut(u64)|
     -> Result<(), AnkiError> {
        let (answered, closed) = anki.multi_tagged(batch)?;
        for (answer, (name, size)) in answered {
            match answer {
                Ok(_) => {
                    sent.stored += 1;
                    sent.bytes += size;
                }
                Err(e) => {
                    sent.failed
                        .insert(name.clone(), format!("storing {name}: {e}"));
                }
            }
            report(size);
        }
        closed.check()
    };
    let fetched = ahead(&missing)
        .into_iter()
        .flat_map(|chunk| chunk.iter().copied().zip(audio_bytes(store, api, chunk)));
    for (audio, data) in fetched {
        let data = match data {
            Ok(data) => data,
            Err(e) => {
                sent.failed.insert(audio.file_name.clone(), e);
                continue;
            }
        };
        let size = data.len() as u64;
        if let Some(dir) = &mut folder {
            match dir.put(anki, &audio.file_name, &data)? {
                Written::Yes => {
                    sent.stored += 1;
                    sent.bytes += size;
                    sent.into_folder += 1;
                    report(size);
                    continue;
                }
                // This file goes as data; so do the rest when the folder
                // turned out not to be Anki's.
                Written::No => {}
                Written::NotAnkis => folder = None,
            }
        }
        let action = Action::new(
            "storeMediaFile",
            json!({"filename": audio.file_name, "data": base64(&data)}),
        );
        if let Some(batch) = batcher.push(action, (audio.file_name.clone(), size)) {
            flush(batch, &mut sent, &mut report)?;
        }
    }
    if let Some(batch) = batcher.finish() {
        flush(batch, &mut sent, &mut report)?;
    }
    Ok(sent)
}

/// What became of a file written into the media folder.
enum Written {
    Yes,
    /// It could not be written (a full disk, say).
    No,
    /// It was written, but Anki does not list it: the folder Anki named
    /// is not the one this computer has under that path (Anki behind a
    /// tunnel on another machine).
    NotAnkis,
}

/// Anki's media folder, when Anki runs on this computer.
struct AnkiFolder {
    dir: PathBuf,
    /// Whether Anki listed a file written here.
    confirmed: bool,
}

impl AnkiFolder {
    /// The folder Anki names, if it names one (add-ons older than
    /// `getMediaDirPath` do not) and it exists on this computer.
    fn find(anki: &AnkiConnect) -> Result<Option<AnkiFolder>, AnkiError> {
        if !is_loopback(anki.url()) {
            return Ok(None);
        }
        let dir = match anki.invoke("getMediaDirPath", json!({})) {
            Ok(Value::String(dir)) => PathBuf::from(dir),
            Ok(_) | Err(AnkiError::Unsupported(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(dir.is_dir().then_some(AnkiFolder {
            dir,
            confirmed: false,
        }))
    }

    /// Writes `data` as `name`: under a temporary name first, renamed when
    /// whole, so that Anki never registers half a file. The first file is
    /// confirmed with Anki before any other is written.
    fn put(&mut self, anki: &AnkiConnect, name: &str, data: &[u8]) -> Result<Written, AnkiError> {
        let path = self.dir.join(name);
        let written = tempfile::Builder::new()
            .prefix(".thai-content-")
            .tempfile_in(&self.dir)
            .and_then(|mut partial| {
                partial.write_all(data)?;
                partial.persist(&path).map_err(|e| e.error)
            });
        if written.is_err() {
            return Ok(Written::No);
        }
        if !self.confirmed {
            // The name is unique to these bytes: listed means Anki sees it.
            if !present(anki, name)?.contains(name) {
                let _ = fs::remove_file(&path);
                return Ok(Written::NotAnkis);
            }
            self.confirmed = true;
        }
        Ok(Written::Yes)
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

/// Sound files downloaded at once when the store's cache lacks them. A
/// learner's first push waits on the API, not on Anki: 1,257 files one
/// at a time took 9.9 s against an API on this computer.
const DOWNLOADS_IN_FLIGHT: usize = 4;
/// How far ahead of Anki the files are fetched, in files and in bytes
/// (the memory a push holds).
const AHEAD_FILES: usize = 64;
const AHEAD_BYTES: u64 = 32 * 1024 * 1024;

/// `missing` in runs of at most [`AHEAD_FILES`] files and [`AHEAD_BYTES`]
/// bytes (a larger file alone).
fn ahead<'a, 'b>(missing: &'b [&'a Audio]) -> Vec<&'b [&'a Audio]> {
    let mut runs = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, audio) in missing.iter().enumerate() {
        if i > start && (i - start >= AHEAD_FILES || bytes + audio.size > AHEAD_BYTES) {
            runs.push(&missing[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += audio.size;
    }
    if start < missing.len() {
        runs.push(&missing[start..]);
    }
    runs
}

/// The bytes of each of `audios`, in order: from the store's cache, else
/// downloaded from the API ([`DOWNLOADS_IN_FLIGHT`] at once) and cached.
fn audio_bytes(
    store: &mut Store,
    api: Option<&ApiClient>,
    audios: &[&Audio],
) -> Vec<Result<Vec<u8>, String>> {
    let mut out: Vec<Option<Result<Vec<u8>, String>>> = audios
        .iter()
        .map(|a| {
            store
                .cached_asset(&a.sha256)
                .map_err(|e| e.to_string())
                .transpose()
        })
        .collect();
    let wanted: Vec<usize> = (0..audios.len()).filter(|i| out[*i].is_none()).collect();
    let downloaded = match api {
        Some(api) => download(api, audios, &wanted),
        None => wanted
            .iter()
            .map(|&i| {
                let why = format!(
                    "the bytes of asset {} are not cached and no API is configured",
                    audios[i].asset_id
                );
                (i, Err(why))
            })
            .collect(),
    };
    for (i, bytes) in downloaded {
        let audio = audios[i];
        out[i] = Some(bytes.and_then(|bytes| {
            store
                .put_cached_asset(&audio.sha256, &bytes)
                .map_err(|e| format!("asset {}: {e}", audio.asset_id))?;
            Ok(bytes)
        }));
    }
    out.into_iter()
        .map(|bytes| bytes.expect("every file was read or downloaded"))
        .collect()
}

/// Downloads `audios[i]` for each `i` of `wanted` on
/// [`DOWNLOADS_IN_FLIGHT`] threads, each taking the next file when done.
fn download(
    api: &ApiClient,
    audios: &[&Audio],
    wanted: &[usize],
) -> Vec<(usize, Result<Vec<u8>, String>)> {
    let next = AtomicUsize::new(0);
    let fetch = || {
        let mut got = Vec::new();
        while let Some(&i) = wanted.get(next.fetch_add(1, Ordering::Relaxed)) {
            let id = audios[i].asset_id;
            let bytes = api
                .asset_data(id)
                .map_err(|e| format!("downloading asset {id}: {e}"));
            got.push((i, bytes));
        }
        got
    };
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..DOWNLOADS_IN_FLIGHT.min(wanted.len()))
            .map(|_| scope.spawn(fetch))
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}
