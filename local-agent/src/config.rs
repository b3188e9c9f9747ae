//! Settings from three places, strongest first: command-line flags, the
//! environment (`THAI_AGENT_*`), the config file (TOML in the platform's
//! config directory), then built-in defaults.
//!
//! Every section (the API here, the [`embed`]der, [`anki`]) resolves its
//! values through [`Layers`], so each value carries where it came from, and
//! lists them for `local-agent config` ([`Settings::sections`], which the
//! JSON form is made of too).

mod anki;
mod embed;
mod file;
mod policy;

use std::path::PathBuf;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

pub use anki::{
    AnkiSettings, DEFAULT_ANKI_TIMEOUT_SECS, DEFAULT_ANKI_URL, DEFAULT_DECK, ENV_ANKI_DECK,
    ENV_ANKI_KEY, ENV_ANKI_TIMEOUT, ENV_ANKI_URL,
};
pub use embed::{
    ENV_EMBED_API_KEY, ENV_EMBED_MODEL, ENV_EMBED_PASSAGE_PREFIX, ENV_EMBED_QUERY_PREFIX,
    ENV_EMBED_URL, EmbedSettings,
};
pub use file::{AnkiFileConfig, EmbedFileConfig, FileConfig};
pub use policy::{DeletedInAnki, DeletedUpstream, NotePolicy};

use crate::embed::HASHED_NGRAMS_MODEL;

pub const ENV_API_URL: &str = "THAI_AGENT_API_URL";
pub const ENV_TOKEN: &str = "THAI_AGENT_TOKEN";
pub const ENV_DB: &str = "THAI_AGENT_DB";
pub const ENV_CONFIG: &str = "THAI_AGENT_CONFIG";
pub const ENV_API_TIMEOUT: &str = "THAI_AGENT_API_TIMEOUT";
pub const ENV_MODELS_DIR: &str = "THAI_AGENT_MODELS_DIR";

/// Seconds the agent waits for the API to start answering a request.
pub const DEFAULT_API_TIMEOUT_SECS: u64 = 60;
/// The longest timeout accepted: a longer wait is a hang, not patience.
pub const MAX_TIMEOUT_SECS: u64 = 3600;

const CONFIG: Key = Key {
    what: "the config file",
    flag: Some("--config"),
    env: ENV_CONFIG,
    file: "",
};
const DB: Key = Key {
    what: "the store",
    flag: Some("--db"),
    env: ENV_DB,
    file: "db",
};
const MODELS_DIR: Key = Key {
    what: "the models folder",
    flag: Some("--models-dir"),
    env: ENV_MODELS_DIR,
    file: "models_dir",
};
const API_URL: Key = Key {
    what: "the API URL",
    flag: Some("--api-url"),
    env: ENV_API_URL,
    file: "api_url",
};
const TOKEN: Key = Key {
    what: "the token",
    flag: Some("--token"),
    env: ENV_TOKEN,
    file: "token",
};
const API_TIMEOUT: Key = Key {
    what: "the API timeout",
    flag: Some("--api-timeout"),
    env: ENV_API_TIMEOUT,
    file: "api_timeout",
};

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
    #[error("{what} {value:?} is not a number of seconds from 1 to {MAX_TIMEOUT_SECS} ({places})")]
    BadTimeout {
        what: &'static str,
        value: String,
        /// Where the setting is given.
        places: String,
    },
    #[error(
        "embedding model {model:?} needs an OpenAI-compatible endpoint: set embed.url in the \
         config file or {ENV_EMBED_URL} (e.g. http://localhost:11434/v1 for Ollama), or use \
         the built-in model {HASHED_NGRAMS_MODEL}"
    )]
    NoEmbedUrl { model: String },
}

/// Where a setting's value came from, for `config` and error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Flag,
    Env,
    File,
    Default,
    /// The active model of the models folder (`local-agent model`).
    Installed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sourced<T> {
    pub value: T,
    pub source: Source,
}

impl<T> Sourced<T> {
    /// A built-in default.
    pub fn built_in(value: T) -> Sourced<T> {
        Sourced {
            value,
            source: Source::Default,
        }
    }

    pub fn map<U>(&self, f: impl FnOnce(&T) -> U) -> Sourced<U> {
        Sourced {
            value: f(&self.value),
            source: self.source,
        }
    }
}

impl<T: Default> Default for Sourced<T> {
    fn default() -> Self {
        Sourced::built_in(T::default())
    }
}

/// Values given on the command line.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub config: Option<PathBuf>,
    pub db: Option<PathBuf>,
    pub api_url: Option<String>,
    pub token: Option<String>,
    pub api_timeout: Option<u64>,
    pub models_dir: Option<PathBuf>,
    /// `embed --model`, `search --model`.
    pub embed_model: Option<String>,
    /// `anki push --anki-url`, `sync --anki-url`.
    pub anki_url: Option<String>,
    /// `anki push --deck`, `sync --deck`.
    pub anki_deck: Option<String>,
}

/// The platform directories (XDG on Linux, ~/Library on macOS, AppData on
/// Windows).
#[derive(Debug, Clone)]
pub struct Dirs {
    pub config_file: PathBuf,
    pub db: PathBuf,
    /// Where sentence-embedding models are installed.
    pub models: PathBuf,
}

impl Dirs {
    pub fn platform() -> Option<Dirs> {
        let dirs = directories::ProjectDirs::from("dev", "thai-content", "local-agent")?;
        Some(Dirs {
            config_file: dirs.config_dir().join("config.toml"),
            db: dirs.data_dir().join("agent.db"),
            models: dirs.data_dir().join("models"),
        })
    }
}

/// One setting's names in the three places, for messages that say where
/// to change it.
#[derive(Debug, Clone, Copy)]
struct Key {
    what: &'static str,
    flag: Option<&'static str>,
    env: &'static str,
    file: &'static str,
}

impl Key {
    fn places(&self) -> String {
        let mut places: Vec<String> = self.flag.iter().map(|f| (*f).to_owned()).collect();
        places.push(self.env.to_owned());
        if !self.file.is_empty() {
            places.push(format!("{} in the config file", self.file));
        }
        match places.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        }
    }
}

/// The flags and the environment a value is looked up in before the
/// config file; the one precedence every section uses.
struct Layers<'a> {
    flags: &'a Flags,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Layers<'_> {
    /// A variable's value, trimmed; blank counts as unset, so that
    /// `THAI_AGENT_TOKEN= cmd` clears nothing by accident.
    fn env(&self, name: &str) -> Option<String> {
        (self.env)(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// A variable's value as given (a prefix may end with a space); blank
    /// still counts as unset.
    fn env_untrimmed(&self, name: &str) -> Option<String> {
        (self.env)(name).filter(|v| !v.trim().is_empty())
    }

    fn value<T: From<String> + Clone>(
        &self,
        key: &Key,
        flag: Option<&T>,
        file: Option<&T>,
    ) -> Option<Sourced<T>> {
        pick(flag.cloned(), self.env(key.env).map(T::from), file.cloned())
    }

    fn url(
        &self,
        key: &Key,
        flag: Option<&String>,
        file: Option<&String>,
    ) -> Result<Option<Sourced<String>>, ConfigError> {
        let url = self.value(key, flag, file);
        if let Some(url) = &url {
            check_url(key.what, &url.value)?;
        }
        Ok(url)
    }

    /// A timeout: never zero (no timeout at all) nor absurdly long.
    fn seconds(
        &self,
        key: &Key,
        flag: Option<u64>,
        file: Option<u64>,
        default: u64,
    ) -> Result<Sourced<u64>, ConfigError> {
        let bad = |value: String| ConfigError::BadTimeout {
            what: key.what,
            value,
            places: key.places(),
        };
        let env = self
            .env(key.env)
            .map(|v| v.parse::<u64>().map_err(|_| bad(v)))
            .transpose()?;
        let secs = pick(flag, env, file).unwrap_or(Sourced::built_in(default));
        if !(1..=MAX_TIMEOUT_SECS).contains(&secs.value) {
            return Err(bad(secs.value.to_string()));
        }
        Ok(secs)
    }
}

fn pick<T>(flag: Option<T>, env: Option<T>, file: Option<T>) -> Option<Sourced<T>> {
    let sourced = |source| move |value| Sourced { value, source };
    flag.map(sourced(Source::Flag))
        .or_else(|| env.map(sourced(Source::Env)))
        .or_else(|| file.map(sourced(Source::File)))
}

/// A setting only the config file gives.
fn from_file<T>(value: Option<T>) -> Option<Sourced<T>> {
    pick(None, None, value)
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

/// One line of `local-agent config`: a setting under its config-file key,
/// and its value (unset: `None`).
#[derive(Debug, Clone, PartialEq)]
pub struct Shown {
    pub key: &'static str,
    pub value: Option<Sourced<serde_json::Value>>,
}

fn show<T: Serialize>(key: &'static str, value: Option<&Sourced<T>>) -> Shown {
    Shown {
        key,
        value: value.map(|v| {
            // Strings, numbers and unit enums: nothing here can fail.
            v.map(|v| serde_json::to_value(v).unwrap_or(serde_json::Value::Null))
        }),
    }
}

/// A secret: whether it is set and where, never its value.
fn redacted(key: &'static str, value: Option<&Sourced<String>>) -> Shown {
    show(key, value.map(|v| v.map(|_| "<redacted>")).as_ref())
}

/// The settings in effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub config_file: Sourced<PathBuf>,
    pub db: Sourced<PathBuf>,
    pub models_dir: Sourced<PathBuf>,
    pub api: ApiSettings,
    pub embed: EmbedSettings,
    pub anki: AnkiSettings,
}

/// The content API (the config file's top-level keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiSettings {
    pub url: Option<Sourced<String>>,
    pub token: Option<Sourced<String>>,
    /// Seconds to wait for the API to start answering a request.
    pub timeout: Sourced<u64>,
}

impl ApiSettings {
    fn resolve(l: &Layers<'_>, file: &FileConfig) -> Result<Self, ConfigError> {
        Ok(ApiSettings {
            url: l.url(&API_URL, l.flags.api_url.as_ref(), file.api_url.as_ref())?,
            token: l.value(&TOKEN, l.flags.token.as_ref(), file.token.as_ref()),
            timeout: l.seconds(
                &API_TIMEOUT,
                l.flags.api_timeout,
                file.api_timeout,
                DEFAULT_API_TIMEOUT_SECS,
            )?,
        })
    }

    fn shown(&self) -> Vec<Shown> {
        vec![
            show("api_url", self.url.as_ref()),
            redacted("token", self.token.as_ref()),
            show("api_timeout", Some(&self.timeout)),
        ]
    }
}

impl Settings {
    /// Every setting, by section: `None` for the config file's top-level
    /// keys, else the table's name.
    pub fn sections(&self) -> Vec<(Option<&'static str>, Vec<Shown>)> {
        let path = |p: &PathBuf| p.display().to_string();
        let mut top = vec![
            show("config_file", Some(&self.config_file.map(path))),
            show("db", Some(&self.db.map(path))),
            show("models_dir", Some(&self.models_dir.map(path))),
        ];
        top.extend(self.api.shown());
        vec![
            (None, top),
            (Some("embed"), self.embed.shown()),
            (Some("anki"), self.anki.shown()),
        ]
    }
}

/// The same keys and sections as the human form: a setting is
/// `{"value", "source"}` (`null` when unset), a section an object.
impl Serialize for Settings {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Table(Vec<Shown>);
        impl Serialize for Table {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_map(self.0.iter().map(|s| (s.key, &s.value)))
            }
        }
        let mut map = serializer.serialize_map(None)?;
        for (name, shown) in self.sections() {
            match name {
                None => {
                    for s in &shown {
                        map.serialize_entry(s.key, &s.value)?;
                    }
                }
                Some(name) => map.serialize_entry(name, &Table(shown))?,
            }
        }
        map.end()
    }
}

/// Where the config file is: the flag, the environment, or the platform's
/// config directory.
pub fn config_path(
    flags: &Flags,
    env: &dyn Fn(&str) -> Option<String>,
    dirs: Option<&Dirs>,
) -> Result<Sourced<PathBuf>, ConfigError> {
    Layers { flags, env }
        .value(&CONFIG, flags.config.as_ref(), None)
        .or_else(|| dirs.map(|d| Sourced::built_in(d.config_file.clone())))
        .ok_or(ConfigError::NoHome)
}

/// Merges flags, environment and file, section by section. `env` looks a
/// variable up.
pub fn resolve(
    flags: &Flags,
    env: &dyn Fn(&str) -> Option<String>,
    config_file: Sourced<PathBuf>,
    file: &FileConfig,
    dirs: Option<&Dirs>,
) -> Result<Settings, ConfigError> {
    let layers = Layers { flags, env };
    let db = layers
        .value(&DB, flags.db.as_ref(), file.db.as_ref())
        .or_else(|| dirs.map(|d| Sourced::built_in(d.db.clone())))
        .ok_or(ConfigError::NoHome)?;
    let models_dir = layers
        .value(
            &MODELS_DIR,
            flags.models_dir.as_ref(),
            file.models_dir.as_ref(),
        )
        .or_else(|| dirs.map(|d| Sourced::built_in(d.models.clone())))
        .ok_or(ConfigError::NoHome)?;
    Ok(Settings {
        config_file,
        db,
        models_dir,
        api: ApiSettings::resolve(&layers, file)?,
        embed: EmbedSettings::resolve(&layers, &file.embed)?,
        anki: AnkiSettings::resolve(&layers, &file.anki)?,
    })
}

#[cfg(test)]
mod tests;
