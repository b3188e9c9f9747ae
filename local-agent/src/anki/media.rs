//! Sound files into Anki's media folder, in requests small enough that
//! Anki stays responsive ([`REQUEST_BYTES`](super::connect::REQUEST_BYTES)).
//!
//! A file's name is made of its bytes' digest ([`notes::media_file_name`]),
//! so a name Anki already has holds these bytes: such files are not sent
//! again (a push that stopped half-way resumes where it was).

use std::collections::{HashMap, HashSet};

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
    let mut flush = |batch: Vec<(Action, (String, u64))>, sent: &mut Sent| {
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
            files += 1;
            bytes += size;
            report(files, bytes);
        }
        closed.check()
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
        let action = Action::new(
            "storeMediaFile",
            json!({"filename": audio.file_name, "data": base64(&data)}),
        );
        let tag = (audio.file_name.clone(), data.len() as u64);
        if let Some(batch) = batcher.push(action, tag) {
            flush(batch, &mut sent)?;
        }
    }
    if let Some(batch) = batcher.finish() {
        flush(batch, &mut sent)?;
    }
    Ok(sent)
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
