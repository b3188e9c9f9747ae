//! Reading a Spin application manifest (`spin.toml`, manifest version 2).
//!
//! Only what this host serves is kept: components with a local `source`,
//! their variables, environment and `allowed_outbound_hosts`, the HTTP
//! triggers, and the application variables. The rest of the format (build
//! settings, `[application]` metadata, tool sections) is accepted and
//! ignored so that one file serves both `spin up` and this host. Anything
//! this host cannot honour (a remote source, another trigger type, a Wagi
//! executor) is an error rather than a silent difference.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::routing::RouteSpec;
use crate::variables::{self, Declaration, Template, VariablesError};

/// Why a manifest cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid Spin manifest: {source}")]
    Syntax {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("{path}: only spin_manifest_version = 2 is supported")]
    Version { path: PathBuf },
    #[error("variable {name:?}: {reason}")]
    Variable { name: String, reason: String },
    #[error("component {component:?}: {reason}")]
    Component { component: String, reason: String },
    #[error("trigger {index} of [[trigger.http]]: {reason}")]
    Trigger { index: usize, reason: String },
    #[error("trigger type {0:?} is not supported by this host (only http)")]
    TriggerType(String),
    #[error(transparent)]
    Variables(#[from] VariablesError),
}

/// A parsed manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The directory the manifest is in; sources are relative to it.
    pub dir: PathBuf,
    pub name: String,
    pub variables: BTreeMap<String, Declaration>,
    pub components: BTreeMap<String, Component>,
    /// HTTP triggers in manifest order.
    pub http_triggers: Vec<HttpTrigger>,
}

/// A component of the application.
#[derive(Debug, Clone)]
pub struct Component {
    pub id: String,
    /// Absolute path of the `.wasm` file.
    pub source: PathBuf,
    pub variables: BTreeMap<String, Template>,
    pub environment: BTreeMap<String, String>,
    /// Entries as written; templates are rendered after variable resolution.
    pub allowed_outbound_hosts: Vec<Template>,
}

/// What an HTTP trigger answers with.
#[derive(Debug, Clone)]
pub enum Handler {
    Component(String),
    Static(StaticResponse),
}

/// `static_response = { status_code, headers, body }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticResponse {
    #[serde(default = "default_status")]
    pub status_code: u16,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: Option<String>,
}

fn default_status() -> u16 {
    200
}

/// One `[[trigger.http]]`.
#[derive(Debug, Clone)]
pub struct HttpTrigger {
    pub route: RouteSpec,
    pub handler: Handler,
}

impl HttpTrigger {
    /// The lookup key the router uses for this trigger.
    pub fn key(&self, index: usize) -> String {
        match &self.handler {
            Handler::Component(id) => id.clone(),
            Handler::Static(_) => format!("static-response#{index}"),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    spin_manifest_version: u32,
    application: RawApplication,
    #[serde(default)]
    variables: BTreeMap<String, RawVariable>,
    #[serde(default)]
    trigger: BTreeMap<String, Vec<toml::Table>>,
    #[serde(default)]
    component: BTreeMap<String, RawComponent>,
}

#[derive(Deserialize)]
struct RawApplication {
    name: String,
    // version, description, authors, targets, trigger, tool: metadata that
    // does not change how requests are served.
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVariable {
    #[serde(default)]
    default: Option<String>,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    secret: bool,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
}

#[derive(Deserialize)]
struct RawComponent {
    source: toml::Value,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    allowed_http_hosts: Vec<String>,
    #[serde(default)]
    files: Vec<toml::Value>,
    #[serde(default)]
    key_value_stores: Vec<String>,
    #[serde(default)]
    sqlite_databases: Vec<String>,
    #[serde(default)]
    ai_models: Vec<String>,
    // description, build, tool, exclude_files, targets, dependencies: build
    // time or metadata only.
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawRoute {
    Pattern(String),
    Private { private: bool },
}

impl Manifest {
    /// Reads and validates a manifest file.
    pub fn from_file(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_owned(),
            source,
        })?;
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        Self::parse(&text, path, &dir)
    }

    /// Parses manifest text; `dir` anchors relative sources.
    pub fn parse(text: &str, path: &Path, dir: &Path) -> Result<Self, ManifestError> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| ManifestError::Syntax {
            path: path.to_owned(),
            source: Box::new(e),
        })?;
        if raw.spin_manifest_version != 2 {
            return Err(ManifestError::Version {
                path: path.to_owned(),
            });
        }

        let mut variables = BTreeMap::new();
        for (name, v) in raw.variables {
            variables::validate_name(&name)?;
            let reason = match (v.required, &v.default) {
                (true, Some(_)) => Some("cannot be required and have a default"),
                (false, None) => Some("needs a default or required = true"),
                _ => None,
            };
            if let Some(reason) = reason {
                return Err(ManifestError::Variable {
                    name,
                    reason: reason.to_owned(),
                });
            }
            variables.insert(
                name,
                Declaration {
                    default: v.default,
                    required: v.required,
                    secret: v.secret,
                },
            );
        }

        let check_refs = |component: &str, t: &Template| -> Result<(), ManifestError> {
            for name in t.references() {
                if !variables.contains_key(name) {
                    return Err(ManifestError::Component {
                        component: component.to_owned(),
                        reason: format!("template {t} uses undeclared variable {name:?}"),
                    });
                }
            }
            Ok(())
        };

        let mut components = BTreeMap::new();
        for (id, c) in raw.component {
            let fail = |reason: String| ManifestError::Component {
                component: id.clone(),
                reason,
            };
            validate_component_id(&id).map_err(|r| fail(r.to_owned()))?;
            let source = match &c.source {
                toml::Value::String(s) => dir.join(s),
                _ => {
                    return Err(fail(
                        "only a local file path is supported as `source` by this host".into(),
                    ));
                }
            };
            if !c.allowed_http_hosts.is_empty() {
                return Err(fail(
                    "`allowed_http_hosts` is no longer supported by Spin; use \
                     `allowed_outbound_hosts`"
                        .into(),
                ));
            }
            let unsupported = [
                ("files", c.files.is_empty()),
                ("key_value_stores", c.key_value_stores.is_empty()),
                ("sqlite_databases", c.sqlite_databases.is_empty()),
                ("ai_models", c.ai_models.is_empty()),
            ];
            if let Some((name, _)) = unsupported.iter().find(|(_, empty)| !empty) {
                return Err(fail(format!("`{name}` is not supported by this host")));
            }
            let mut vars = BTreeMap::new();
            for (key, value) in c.variables {
                variables::validate_name(&key)?;
                let t = Template::parse(&value)?;
                check_refs(&id, &t)?;
                vars.insert(key, t);
            }
            let mut allowed = Vec::new();
            for entry in c.allowed_outbound_hosts {
                let t = Template::parse(&entry)?;
                check_refs(&id, &t)?;
                if t.is_literal() {
                    crate::outbound::AllowedHost::parse(&entry).map_err(|e| fail(e.to_string()))?;
                }
                allowed.push(t);
            }
            components.insert(
                id.clone(),
                Component {
                    id,
                    source,
                    variables: vars,
                    environment: c.environment,
                    allowed_outbound_hosts: allowed,
                },
            );
        }

        let mut http_triggers = Vec::new();
        for (kind, triggers) in raw.trigger {
            if kind != "http" {
                return Err(ManifestError::TriggerType(kind));
            }
            for (index, table) in triggers.into_iter().enumerate() {
                http_triggers.push(parse_http_trigger(index, table, &components)?);
            }
        }

        Ok(Self {
            dir: dir.to_owned(),
            name: raw.application.name,
            variables,
            components,
            http_triggers,
        })
    }
}

fn parse_http_trigger(
    index: usize,
    mut table: toml::Table,
    components: &BTreeMap<String, Component>,
) -> Result<HttpTrigger, ManifestError> {
    let fail = |reason: String| ManifestError::Trigger { index, reason };
    let route = table
        .remove("route")
        .ok_or_else(|| fail("missing `route`".into()))?;
    let route = match route
        .try_into::<RawRoute>()
        .map_err(|e| fail(e.to_string()))?
    {
        RawRoute::Pattern(p) => RouteSpec::Pattern(p),
        RawRoute::Private { private: true } => RouteSpec::Private,
        RawRoute::Private { private: false } => {
            return Err(fail(
                "route must be a string pattern or `{ private = true }`".into(),
            ));
        }
    };
    let component = table.remove("component");
    let static_response = table.remove("static_response");
    let handler = match (component, static_response) {
        (Some(toml::Value::String(id)), None) => {
            if !components.contains_key(&id) {
                return Err(fail(format!("unknown component {id:?}")));
            }
            Handler::Component(id)
        }
        (Some(_), None) => {
            return Err(fail(
                "inline components are not supported by this host; name a [component.*]".into(),
            ));
        }
        (None, Some(sr)) => Handler::Static(sr.try_into().map_err(|e| fail(e.to_string()))?),
        (None, None) => {
            return Err(fail("needs either `component` or `static_response`".into()));
        }
        (Some(_), Some(_)) => {
            return Err(fail(
                "cannot have both `component` and `static_response`".into(),
            ));
        }
    };
    if let Some(executor) = table.remove("executor") {
        let is_default = executor
            .get("type")
            .and_then(toml::Value::as_str)
            .is_some_and(|t| t == "spin" || t == "http");
        if !is_default {
            return Err(fail(
                "only the default executor is supported by this host".into(),
            ));
        }
    }
    // `id` and unknown keys are trigger metadata Spin also tolerates.
    Ok(HttpTrigger { route, handler })
}

/// Component ids are kebab-case: lower-case words of letters and digits,
/// each starting with a letter, joined by single hyphens.
fn validate_component_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        return Err("the id must not be empty");
    }
    for word in id.split('-') {
        let Some(first) = word.chars().next() else {
            return Err("the id must not have empty words (leading, trailing or double '-')");
        };
        if !first.is_ascii_lowercase() {
            return Err("each word of the id must start with a lower-case letter");
        }
        if !word
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            return Err("the id may contain only lower-case letters, digits and '-'");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(text, Path::new("spin.toml"), Path::new("/app"))
    }

    const GOOD: &str = r#"
spin_manifest_version = 2
[application]
name = "demo"
version = "0.1.0"

[variables]
db_url = { required = true, secret = true }
db_host = { default = "localhost" }

[[trigger.http]]
route = "/api/health"
component = "health"

[[trigger.http]]
route = { private = true }
component = "health"

[component.health]
source = "target/x.wasm"
allowed_outbound_hosts = ["postgres://{{ db_host }}"]
[component.health.variables]
db_url = "{{ db_url }}"
[component.health.build]
command = "cargo build"
"#;

    #[test]
    fn reads_components_triggers_and_variables() {
        let m = parse(GOOD).unwrap();
        assert_eq!(m.name, "demo");
        assert!(m.variables["db_url"].required && m.variables["db_url"].secret);
        let c = &m.components["health"];
        assert_eq!(c.source, Path::new("/app/target/x.wasm"));
        assert_eq!(c.variables["db_url"].to_string(), "{{ db_url }}");
        assert_eq!(m.http_triggers.len(), 2);
        assert_eq!(m.http_triggers[1].route, RouteSpec::Private);
    }

    #[test]
    fn refuses_what_spin_refuses() {
        let cases = [
            (GOOD.replace("{{ db_url }}\"", "{{ nope }}\""), "undeclared"),
            (
                GOOD.replace(
                    "{ default = \"localhost\" }",
                    "{ default = \"x\", required = true }",
                ),
                "cannot be required",
            ),
            (
                GOOD.replace("{ default = \"localhost\" }", "{ }"),
                "needs a default",
            ),
            (
                GOOD.replace("component = \"health\"\n\n[[", "component = \"nope\"\n\n[["),
                "unknown component",
            ),
            (
                GOOD.replace("component.health", "component.Health")
                    .replace("component = \"health\"", "component = \"Health\""),
                "lower-case",
            ),
            (
                GOOD.replace("{ private = true }", "{ private = false }"),
                "private = true",
            ),
            (GOOD.replace("version = 2", "version = 1"), "version"),
        ];
        for (text, expected) in cases {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(expected), "expected {expected:?} in {err:?}");
        }
    }
}
