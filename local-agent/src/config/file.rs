//! The config file: TOML, one table per section. Unknown keys are refused
//! so that a typo does not silently fall back to a default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::policy::{DeletedInAnki, DeletedUpstream, NotePolicy};

/// The config file's contents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db: Option<PathBuf>,
    /// Where sentence-embedding models are installed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models_dir: Option<PathBuf>,
    /// Seconds to wait for the API to start answering a request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_timeout: Option<u64>,
    #[serde(default, skip_serializing_if = "EmbedFileConfig::is_empty")]
    pub embed: EmbedFileConfig,
    #[serde(default, skip_serializing_if = "AnkiFileConfig::is_empty")]
    pub anki: AnkiFileConfig,
}

/// The `[embed]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedFileConfig {
    /// Base URL of an OpenAI-compatible API (`…/v1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Asked of models that can shorten their vectors (OpenAI v3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<usize>,
    /// Put before a search's text (e5: `"query: "`; `""` for none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_prefix: Option<String>,
    /// Put before each stored text embedded (e5: `"passage: "`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passage_prefix: Option<String>,
    /// `[embed.endpoint_names]`: model (as vectors are filed, e.g. the
    /// legacy file's `all-MiniLM-L6-v2`) → the name the endpoint serves it
    /// by (Ollama's `all-minilm`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub endpoint_names: BTreeMap<String, String>,
}

impl EmbedFileConfig {
    fn is_empty(&self) -> bool {
        self == &EmbedFileConfig::default()
    }
}

/// The `[anki]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnkiFileConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deck: Option<String>,
    /// Seconds to wait for Anki to answer one request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notes: Option<NotePolicy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_in_anki: Option<DeletedInAnki>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_upstream: Option<DeletedUpstream>,
}

impl AnkiFileConfig {
    pub fn is_empty(&self) -> bool {
        self == &AnkiFileConfig::default()
    }
}

impl FileConfig {
    /// Reads the file; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FileConfig::default()),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Writes the file readable by its owner only: it holds a token.
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let wrap = |source| ConfigError::Write {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(wrap)?;
        }
        let text = toml::to_string_pretty(self).map_err(|e| ConfigError::Write {
            path: path.to_owned(),
            source: std::io::Error::other(e),
        })?;
        // Written beside and renamed over, so that a crash never leaves half
        // a config; created 0600 so the token is never readable by others,
        // not even for a moment.
        let tmp = path.with_extension("toml.tmp");
        {
            use std::io::Write;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(&tmp).map_err(wrap)?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                file.set_permissions(std::fs::Permissions::from_mode(0o600))
                    .map_err(wrap)?;
            }
            file.write_all(text.as_bytes()).map_err(wrap)?;
            file.sync_all().map_err(wrap)?;
        }
        std::fs::rename(&tmp, path).map_err(wrap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_round_trips_private_and_refuses_typos() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config.toml");
        assert_eq!(FileConfig::load(&path).unwrap(), FileConfig::default());
        let config = FileConfig {
            api_url: Some("http://127.0.0.1:3000".into()),
            token: Some("secret".into()),
            ..Default::default()
        };
        config.save(&path).unwrap();
        assert_eq!(FileConfig::load(&path).unwrap(), config);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "api_ur = \"http://x\"\n").unwrap();
        let err = FileConfig::load(&path).unwrap_err();
        assert!(err.to_string().contains("api_ur"), "{err}");
    }
}
