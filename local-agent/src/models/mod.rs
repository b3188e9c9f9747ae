//! The sentence-embedding models installed in the agent's models folder:
//! one folder per model, named as its vectors are filed (`all-MiniLM-L6-v2`,
//! `multilingual-e5-small`), and a file naming the active one.
//!
//! A model arrives whole or not at all: it is assembled in a staging folder
//! (`.partial/<name>`, where a broken download also waits to be resumed),
//! checked, and renamed into place; removing one deletes its folder.

pub mod hub;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::embed::{BertEmbedder, ModelError, REQUIRED_FILES};

/// The file that names the active model.
const ACTIVE_FILE: &str = "active";
/// Where models are assembled before they are installed.
const STAGING: &str = ".partial";
/// What an installed model's folder says about where it came from.
const SOURCE_FILE: &str = "source.json";

/// Models known by a short name, with the hub repository each comes from.
/// Every one is a BERT-family model this agent runs.
pub const KNOWN_MODELS: [(&str, &str); 4] = [
    ("multilingual-e5-small", "intfloat/multilingual-e5-small"),
    (
        "paraphrase-multilingual-MiniLM-L12-v2",
        "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2",
    ),
    ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"),
    (
        "all-MiniLM-L12-v2",
        "sentence-transformers/all-MiniLM-L12-v2",
    ),
];

/// The model `model fetch` suggests: small, and good at Thai and English.
pub const SUGGESTED_MODEL: &str = "multilingual-e5-small";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelsError {
    #[error(
        "{name:?} is not a model name: use letters, digits, '.', '-' and '_' (e.g. \
         multilingual-e5-small), or pass --name"
    )]
    BadName { name: String },
    #[error(
        "no model {name} is installed; `local-agent model list` shows the installed ones, \
         `local-agent model fetch {name}` installs it"
    )]
    NotInstalled { name: String },
    #[error(
        "a model {name} is installed already ({}); remove it first with `local-agent model \
         remove {name}`, or pass --name to install this one under another name",
         path.display()
    )]
    Exists { name: String, path: PathBuf },
    #[error("{} cannot be installed: {source}", path.display())]
    Unusable {
        path: PathBuf,
        #[source]
        source: ModelError,
    },
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Hub(#[from] hub::HubError),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ModelsError {
    let path = path.to_owned();
    move |source| ModelsError::Io { what, path, source }
}

/// Where an installed model came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Origin {
    /// Downloaded from a model hub.
    Hub {
        repo: String,
        revision: String,
        /// The commit the revision pointed at, when the hub said.
        #[serde(skip_serializing_if = "Option::is_none")]
        commit: Option<String>,
    },
    /// Copied from a folder.
    Folder { path: PathBuf },
}

/// One installed model, as `model list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Installed {
    pub name: String,
    pub folder: PathBuf,
    /// The length of its vectors (`hidden_size`), when config.json says.
    pub dimension: Option<usize>,
    /// Bytes on disk.
    pub size: u64,
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

/// The models folder.
#[derive(Debug, Clone)]
pub struct Models {
    dir: PathBuf,
}

/// The repository a name stands for: a known short name's, or the name
/// itself when it is `owner/repo`.
pub fn repo_for(name: &str) -> Option<String> {
    if let Some((_, repo)) = KNOWN_MODELS
        .iter()
        .find(|(short, _)| short.eq_ignore_ascii_case(name))
    {
        return Some((*repo).to_owned());
    }
    let mut parts = name.split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(owner), Some(repo), None) if valid_name(owner) && valid_name(repo) => {
            Some(name.to_owned())
        }
        _ => None,
    }
}

/// The name a repository's model is installed and filed under: its last
/// part (`intfloat/multilingual-e5-small` → `multilingual-e5-small`).
pub fn name_for_repo(repo: &str) -> &str {
    repo.rsplit('/').next().unwrap_or(repo)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 96
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// A name a model may be installed under (it becomes a folder's name).
pub fn check_name(name: &str) -> Result<(), ModelsError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(ModelsError::BadName {
            name: name.to_owned(),
        })
    }
}

impl Models {
    pub fn new(dir: impl Into<PathBuf>) -> Models {
        Models { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The folder model `name` is (or would be) installed in.
    pub fn folder(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Whether a model of that name is installed.
    pub fn is_installed(&self, name: &str) -> bool {
        valid_name(name) && self.folder(name).join(REQUIRED_FILES[0]).is_file()
    }

    /// The active model: the one `active` names if it is still installed.
    pub fn active(&self) -> Option<String> {
        let name = std::fs::read_to_string(self.dir.join(ACTIVE_FILE)).ok()?;
        let name = name.trim();
        self.is_installed(name).then(|| name.to_owned())
    }

    /// Makes `name` the model `embed` and `search` use by default.
    pub fn set_active(&self, name: &str) -> Result<(), ModelsError> {
        if !self.is_installed(name) {
            return Err(ModelsError::NotInstalled {
                name: name.to_owned(),
            });
        }
        let path = self.dir.join(ACTIVE_FILE);
        let tmp = self.dir.join(format!("{ACTIVE_FILE}.tmp"));
        std::fs::write(&tmp, format!("{name}\n")).map_err(io("write", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("write", &path))
    }

    /// Loads an installed model.
    pub fn load(&self, name: &str) -> Result<BertEmbedder, ModelsError> {
        if !self.is_installed(name) {
            return Err(ModelsError::NotInstalled {
                name: name.to_owned(),
            });
        }
        let folder = self.folder(name);
        BertEmbedder::load(&folder, name).map_err(|source| ModelsError::Unusable {
            path: folder,
            source,
        })
    }

    /// Every installed model, by name.
    pub fn list(&self) -> Result<Vec<Installed>, ModelsError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("read", &self.dir)(e)),
        };
        let active = self.active();
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io("read", &self.dir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !self.is_installed(&name) {
                continue;
            }
            let folder = entry.path();
            out.push(Installed {
                dimension: dimension_of(&folder),
                size: size_of(&folder),
                active: active.as_deref() == Some(name.as_str()),
                origin: std::fs::read(folder.join(SOURCE_FILE))
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok()),
                name,
                folder,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Deletes an installed model; the active one leaves no active model
    /// behind.
    pub fn remove(&self, name: &str) -> Result<Installed, ModelsError> {
        let installed = self
            .list()?
            .into_iter()
            .find(|m| m.name == name)
            .ok_or_else(|| ModelsError::NotInstalled {
                name: name.to_owned(),
            })?;
        if installed.active {
            let path = self.dir.join(ACTIVE_FILE);
            std::fs::remove_file(&path).map_err(io("remove", &path))?;
        }
        std::fs::remove_dir_all(&installed.folder).map_err(io("remove", &installed.folder))?;
        Ok(installed)
    }

    /// The folder a model is assembled in before it is installed; kept
    /// between runs so that a download resumes.
    pub fn staging(&self, name: &str) -> PathBuf {
        self.dir.join(STAGING).join(name)
    }

    /// Copies the model files of `from` and installs them as `name`.
    pub fn add_folder(&self, from: &Path, name: &str) -> Result<Installed, ModelsError> {
        check_name(name)?;
        self.refuse_existing(name)?;
        let staging = self.staging(name);
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(io("clear", &staging))?;
        }
        for file in REQUIRED_FILES.iter().chain(hub::OPTIONAL_FILES.iter()) {
            let src = from.join(file);
            if !src.is_file() {
                continue;
            }
            let dst = staging.join(file);
            if let Some(parent) = dst.parent() {
                std::fs::create_dir_all(parent).map_err(io("create", parent))?;
            }
            std::fs::copy(&src, &dst).map_err(io("copy", &src))?;
        }
        let origin = Origin::Folder {
            path: std::path::absolute(from).unwrap_or_else(|_| from.to_owned()),
        };
        self.install(name, &origin)
    }

    pub(crate) fn refuse_existing(&self, name: &str) -> Result<(), ModelsError> {
        let folder = self.folder(name);
        if folder.exists() {
            return Err(ModelsError::Exists {
                name: name.to_owned(),
                path: folder,
            });
        }
        Ok(())
    }

    /// Checks that the staged model loads, then moves it into place and
    /// makes it the active one (a model just installed is the one wanted).
    pub(crate) fn install(&self, name: &str, origin: &Origin) -> Result<Installed, ModelsError> {
        let staging = self.staging(name);
        let source = staging.join(SOURCE_FILE);
        let json = serde_json::to_vec_pretty(origin).unwrap_or_default();
        std::fs::write(&source, json).map_err(io("write", &source))?;
        // A model that cannot load is refused before it is installed:
        // better now than at the next `embed`.
        let embedder =
            BertEmbedder::load(&staging, name).map_err(|source| ModelsError::Unusable {
                path: staging.clone(),
                source,
            })?;
        drop(embedder);
        self.refuse_existing(name)?;
        let folder = self.folder(name);
        std::fs::rename(&staging, &folder).map_err(io("install", &folder))?;
        self.set_active(name)?;
        self.list()?
            .into_iter()
            .find(|m| m.name == name)
            .ok_or_else(|| ModelsError::NotInstalled {
                name: name.to_owned(),
            })
    }
}

/// `hidden_size` from config.json.
fn dimension_of(folder: &Path) -> Option<usize> {
    #[derive(Deserialize)]
    struct Hidden {
        hidden_size: usize,
    }
    let bytes = std::fs::read(folder.join("config.json")).ok()?;
    serde_json::from_slice::<Hidden>(&bytes)
        .ok()
        .map(|h| h.hidden_size)
}

fn size_of(path: &Path) -> u64 {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::read_dir(path)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| size_of(&e.path()))
                    .sum()
            })
            .unwrap_or(0),
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}
