//! Settings from three places, strongest first: command-line flags, the
//! environment (`THAI_AGENT_*`), the config file (TOML in the platform's
//! config directory), then built-in defaults.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::embed::HASHED_NGRAMS_MODEL;

pub const ENV_API_URL: &str = "THAI_AGENT_API_URL";
pub const ENV_TOKEN: &str = "THAI_AGENT_TOKEN";
pub const ENV_DB: &str = "THAI_AGENT_DB";
pub const ENV_CONFIG: &str = "THAI_AGENT_CONFIG";
pub const ENV_EMBED_URL: &str = "THAI_AGENT_EMBED_URL";
pub const ENV_EMBED_MODEL: &str = "THAI_AGENT_EMBED_MODEL";
pub const ENV_EMBED_API_KEY: &str = "THAI_AGENT_EMBED_API_KEY";
pub const ENV_API_TIMEOUT: &str = "THAI_AGENT_API_TIMEOUT";

/// Seconds the agent waits for the API to start answering a request.
pub const DEFAULT_API_TIMEOUT_SECS: u64 = 60;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read the config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the config file {} is not valid: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("cannot write the config file {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no home directory to keep the config and the store in; pass --config and --db \
         (or set {ENV_CONFIG} and {ENV_DB})"
    )]
    NoHome,
    #[error("{what} {value:?} is not an http:// or https:// URL")]
    BadUrl { what: &'static str, value: String },
    #[error(
        "the API timeout {value:?} is not a number of seconds from 1 to 3600 \
         (--api-timeout, {ENV_API_TIMEOUT} or api_timeout in the config file)"
    )]
    BadTimeout { value: String },
    #[error(
        "embedding model {model:?} needs an OpenAI-compatible endpoint: set embed.url in the \
         config file or {ENV_EMBED_URL} (e.g. http://localhost:11434/v1 for Ollama), or use \
         the built-in model {HASHED_NGRAMS_MODEL}"
    )]
    NoEmbedUrl { model: String },
}

/// The config file's contents. Unknown keys are refused so that a typo does
/// not silently fall back to a default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db: Option<PathBuf>,
    /// Seconds to wait for the API to start answering a request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_timeout: Option<u64>,
    #[serde(default, skip_serializing_if = "EmbedFileConfig::is_empty")]
    pub embed: EmbedFileConfig,
    /// The `[anki]` table: see [`crate::anki::AnkiFileConfig`].
    #[serde(default, skip_serializing_if = "crate::anki::AnkiFileConfig::is_empty")]
    pub anki: crate::anki::AnkiFileConfig,
}

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
    /// `[embed.endpoint_names]`: model (as vectors are filed, e.g. the
    /// legacy file's `all-MiniLM-L6-v2`) → the name the endpoint serves it
    /// by (Ollama's `all-minilm`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub endpoint_names: std::collections::BTreeMap<String, String>,
}

impl EmbedFileConfig {
    fn is_empty(&self) -> bool {
        self == &EmbedFileConfig::default()
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

/// Where a setting's value came from, for `config` and error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Flag,
    Env,
    File,
    Default,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sourced<T> {
    pub value: T,
    pub source: Source,
}

/// Values given on the command line.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub config: Option<PathBuf>,
    pub db: Option<PathBuf>,
    pub api_url: Option<String>,
    pub token: Option<String>,
    pub api_timeout: Option<u64>,
    pub embed_url: Option<String>,
    pub embed_model: Option<String>,
    pub embed_api_key: Option<String>,
}

/// The platform directories (XDG on Linux, ~/Library on macOS, AppData on
/// Windows).
#[derive(Debug, Clone)]
pub struct Dirs {
    pub config_file: PathBuf,
    pub db: PathBuf,
}

impl Dirs {
    pub fn platform() -> Option<Dirs> {
        let dirs = directories::ProjectDirs::from("dev", "thai-content", "local-agent")?;
        Some(Dirs {
            config_file: dirs.config_dir().join("config.toml"),
            db: dirs.data_dir().join("agent.db"),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Settings {
    pub config_file: Sourced<PathBuf>,
    pub db: Sourced<PathBuf>,
    pub api_url: Option<Sourced<String>>,
    #[serde(serialize_with = "redact")]
    pub token: Option<Sourced<String>>,
    /// Seconds to wait for the API to start answering a request.
    pub api_timeout: Sourced<u64>,
    pub embed: EmbedSettings,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EmbedSettings {
    pub model: Sourced<String>,
    pub url: Option<Sourced<String>>,
    #[serde(serialize_with = "redact")]
    pub api_key: Option<Sourced<String>>,
    pub dimensions: Option<usize>,
    /// The name the endpoint serves `model` by, when the config file gives
    /// another one (`[embed.endpoint_names]`).
    pub endpoint_name: Option<String>,
}

fn redact<S: serde::Serializer>(v: &Option<Sourced<String>>, s: S) -> Result<S::Ok, S::Error> {
    v.as_ref()
        .map(|v| Sourced {
            value: "<redacted>",
            source: v.source,
        })
        .serialize(s)
}

fn pick<T>(flag: Option<T>, env: Option<T>, file: Option<T>) -> Option<Sourced<T>> {
    flag.map(|value| Sourced {
        value,
        source: Source::Flag,
    })
    .or_else(|| {
        env.map(|value| Sourced {
            value,
            source: Source::Env,
        })
    })
    .or_else(|| {
        file.map(|value| Sourced {
            value,
            source: Source::File,
        })
    })
}

/// Where the config file is: the flag, the environment, or the platform's
/// config directory.
pub fn config_path(
    flags: &Flags,
    env: &dyn Fn(&str) -> Option<String>,
    dirs: Option<&Dirs>,
) -> Result<Sourced<PathBuf>, ConfigError> {
    pick(
        flags.config.clone(),
        env(ENV_CONFIG).map(PathBuf::from),
        None,
    )
    .or_else(|| {
        dirs.map(|d| Sourced {
            value: d.config_file.clone(),
            source: Source::Default,
        })
    })
    .ok_or(ConfigError::NoHome)
}

/// Merges flags, environment and file. `env` looks a variable up (empty
/// values count as unset, so `THAI_AGENT_TOKEN= cmd` clears nothing by
/// accident).
pub fn resolve(
    flags: &Flags,
    env: &dyn Fn(&str) -> Option<String>,
    config_file: Sourced<PathBuf>,
    file: &FileConfig,
    dirs: Option<&Dirs>,
) -> Result<Settings, ConfigError> {
    let env = |name: &str| env(name).filter(|v| !v.is_empty());
    let db = pick(
        flags.db.clone(),
        env(ENV_DB).map(PathBuf::from),
        file.db.clone(),
    )
    .or_else(|| {
        dirs.map(|d| Sourced {
            value: d.db.clone(),
            source: Source::Default,
        })
    })
    .ok_or(ConfigError::NoHome)?;
    let api_url = pick(
        flags.api_url.clone(),
        env(ENV_API_URL),
        file.api_url.clone(),
    );
    if let Some(url) = &api_url {
        check_url("the API URL", &url.value)?;
    }
    let token = pick(flags.token.clone(), env(ENV_TOKEN), file.token.clone());
    let env_timeout = env(ENV_API_TIMEOUT)
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| ConfigError::BadTimeout { value: v })
        })
        .transpose()?;
    let api_timeout = pick(flags.api_timeout, env_timeout, file.api_timeout).unwrap_or(Sourced {
        value: DEFAULT_API_TIMEOUT_SECS,
        source: Source::Default,
    });
    if !(1..=3600).contains(&api_timeout.value) {
        return Err(ConfigError::BadTimeout {
            value: api_timeout.value.to_string(),
        });
    }
    let model = pick(
        flags.embed_model.clone(),
        env(ENV_EMBED_MODEL),
        file.embed.model.clone(),
    )
    .unwrap_or(Sourced {
        value: HASHED_NGRAMS_MODEL.to_owned(),
        source: Source::Default,
    });
    let url = pick(
        flags.embed_url.clone(),
        env(ENV_EMBED_URL),
        file.embed.url.clone(),
    );
    if let Some(url) = &url {
        check_url("the embedding URL", &url.value)?;
    }
    let api_key = pick(
        flags.embed_api_key.clone(),
        env(ENV_EMBED_API_KEY),
        file.embed.api_key.clone(),
    );
    Ok(Settings {
        config_file,
        db,
        api_url,
        token,
        api_timeout,
        embed: EmbedSettings {
            endpoint_name: file.embed.endpoint_names.get(&model.value).cloned(),
            model,
            url,
            api_key,
            dimensions: file.embed.dimensions,
        },
    })
}

fn check_url(what: &'static str, value: &str) -> Result<(), ConfigError> {
    let lower = value.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => Ok(()),
        _ => Err(ConfigError::BadUrl {
            what,
            value: value.to_owned(),
        }),
    }
}

impl EmbedSettings {
    /// Whether the built-in embedder serves this model.
    pub fn is_builtin(&self) -> bool {
        self.model.value == HASHED_NGRAMS_MODEL
    }

    /// The endpoint URL a non-built-in model needs.
    pub fn endpoint(&self) -> Result<&str, ConfigError> {
        self.url
            .as_ref()
            .map(|u| u.value.as_str())
            .ok_or_else(|| ConfigError::NoEmbedUrl {
                model: self.model.value.clone(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn dirs() -> Dirs {
        Dirs {
            config_file: "/home/u/.config/local-agent/config.toml".into(),
            db: "/home/u/.local/share/local-agent/agent.db".into(),
        }
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn settings(flags: &Flags, env: &[(&str, &str)], file: &FileConfig) -> Settings {
        let env = env_of(env);
        let path = config_path(flags, &env, Some(&dirs())).unwrap();
        resolve(flags, &env, path, file, Some(&dirs())).unwrap()
    }

    #[test]
    fn the_api_timeout_comes_from_flag_env_file_or_default() {
        let file = FileConfig {
            api_timeout: Some(30),
            ..Default::default()
        };
        let s = settings(&Flags::default(), &[], &FileConfig::default());
        assert_eq!(s.api_timeout.value, DEFAULT_API_TIMEOUT_SECS);
        assert_eq!(s.api_timeout.source, Source::Default);
        let s = settings(&Flags::default(), &[], &file);
        assert_eq!(
            (s.api_timeout.value, s.api_timeout.source),
            (30, Source::File)
        );
        let s = settings(&Flags::default(), &[(ENV_API_TIMEOUT, "45")], &file);
        assert_eq!(
            (s.api_timeout.value, s.api_timeout.source),
            (45, Source::Env)
        );
        let flags = Flags {
            api_timeout: Some(5),
            ..Default::default()
        };
        let s = settings(&flags, &[(ENV_API_TIMEOUT, "45")], &file);
        assert_eq!(
            (s.api_timeout.value, s.api_timeout.source),
            (5, Source::Flag)
        );
        let env = env_of(&[(ENV_API_TIMEOUT, "soon")]);
        let path = config_path(&Flags::default(), &env, Some(&dirs())).unwrap();
        let err = resolve(&Flags::default(), &env, path, &file, Some(&dirs())).unwrap_err();
        assert!(err.to_string().contains(ENV_API_TIMEOUT), "{err}");
        let zero = Flags {
            api_timeout: Some(0),
            ..Default::default()
        };
        let path = config_path(&zero, &env_of(&[]), Some(&dirs())).unwrap();
        assert!(resolve(&zero, &env_of(&[]), path, &file, Some(&dirs())).is_err());
    }

    #[test]
    fn flags_beat_env_beat_file_beat_defaults() {
        let file = FileConfig {
            api_url: Some("http://file:1".into()),
            token: Some("file-token".into()),
            db: Some("/file.db".into()),
            api_timeout: Some(30),
            embed: EmbedFileConfig {
                model: Some("file-model".into()),
                url: Some("http://embed-file/v1".into()),
                ..Default::default()
            },
            anki: Default::default(),
        };
        let env = [
            (ENV_API_URL, "http://env:2"),
            (ENV_TOKEN, "env-token"),
            (ENV_EMBED_MODEL, "env-model"),
        ];
        let flags = Flags {
            api_url: Some("http://flag:3".into()),
            ..Default::default()
        };
        let s = settings(&flags, &env, &file);
        assert_eq!(s.api_url.clone().unwrap().value, "http://flag:3");
        assert_eq!(s.api_url.unwrap().source, Source::Flag);
        assert_eq!(
            s.token.unwrap(),
            Sourced {
                value: "env-token".into(),
                source: Source::Env
            }
        );
        assert_eq!(s.db.value, PathBuf::from("/file.db"));
        assert_eq!(s.db.source, Source::File);
        assert_eq!(s.embed.model.value, "env-model");
        assert_eq!(s.embed.url.unwrap().source, Source::File);

        let s = settings(&Flags::default(), &[], &FileConfig::default());
        assert!(s.api_url.is_none() && s.token.is_none());
        assert_eq!(s.db.source, Source::Default);
        assert_eq!(s.config_file.value, dirs().config_file);
        assert_eq!(s.embed.model.value, HASHED_NGRAMS_MODEL);
        assert!(s.embed.is_builtin());
    }

    #[test]
    fn empty_env_values_count_as_unset() {
        let file = FileConfig {
            token: Some("file-token".into()),
            ..Default::default()
        };
        let s = settings(&Flags::default(), &[(ENV_TOKEN, "")], &file);
        assert_eq!(s.token.unwrap().value, "file-token");
    }

    #[test]
    fn the_config_file_location_follows_flag_then_env() {
        let env = env_of(&[(ENV_CONFIG, "/env/config.toml")]);
        let flagged = Flags {
            config: Some("/flag/config.toml".into()),
            ..Default::default()
        };
        assert_eq!(
            config_path(&flagged, &env, Some(&dirs())).unwrap().value,
            PathBuf::from("/flag/config.toml")
        );
        assert_eq!(
            config_path(&Flags::default(), &env, Some(&dirs()))
                .unwrap()
                .value,
            PathBuf::from("/env/config.toml")
        );
        assert!(matches!(
            config_path(&Flags::default(), &env_of(&[]), None),
            Err(ConfigError::NoHome)
        ));
    }

    #[test]
    fn bad_urls_are_refused_with_the_value() {
        let flags = Flags {
            api_url: Some("localhost:3000".into()),
            ..Default::default()
        };
        let env = env_of(&[]);
        let path = config_path(&flags, &env, Some(&dirs())).unwrap();
        let err = resolve(&flags, &env, path, &FileConfig::default(), Some(&dirs())).unwrap_err();
        assert!(err.to_string().contains("localhost:3000"), "{err}");
    }

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

    #[test]
    fn settings_serialise_without_secrets() {
        let file = FileConfig {
            token: Some("very-secret".into()),
            ..Default::default()
        };
        let s = settings(&Flags::default(), &[], &file);
        let json = serde_json::to_string(&s).unwrap();
        assert!(!json.contains("very-secret"), "{json}");
        assert!(json.contains("<redacted>"));
    }
}
