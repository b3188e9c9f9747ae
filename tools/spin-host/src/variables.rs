//! Application variables, resolved the way Spin resolves them.
//!
//! A manifest declares application variables (`[variables]`, each with a
//! `default` or `required = true`) and gives each component its own variables
//! as templates over them (`db_url = "{{ db_url }}"`). Values come from, in
//! order: values given to the host explicitly (like `spin up --variable`),
//! the environment (`SPIN_VARIABLE_<NAME>`, upper-cased), then the default.
//! A required variable that nothing provides stops the app before it serves,
//! as under `spin up`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// The environment prefix Spin's environment provider uses.
pub const ENV_PREFIX: &str = "SPIN_VARIABLE_";

/// Errors in variable names, templates or resolution.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VariablesError {
    #[error("invalid variable name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("invalid template {template:?}: {reason}")]
    InvalidTemplate { template: String, reason: String },
    #[error(
        "required variable {name:?} has no value: set the environment variable {env} \
         (or pass it to the host explicitly)"
    )]
    MissingRequired { name: String, env: String },
    #[error("no variable {key:?} for component {component:?}")]
    Undefined { component: String, key: String },
}

/// Checks a variable name against Spin's rules: lower-case ASCII letters,
/// digits and single underscores, starting with a letter and ending with a
/// letter or digit.
pub fn validate_name(name: &str) -> Result<(), VariablesError> {
    let reason = if name.is_empty() {
        Some("must not be empty")
    } else if name
        .chars()
        .any(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
    {
        Some("only lower-case letters, digits and underscores are allowed")
    } else if !name.as_bytes()[0].is_ascii_lowercase() {
        Some("must start with a lower-case letter")
    } else if !name.as_bytes()[name.len() - 1].is_ascii_alphanumeric() {
        Some("must end with a letter or digit")
    } else if name.contains("__") {
        Some("must not contain consecutive underscores")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(VariablesError::InvalidName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// The environment variable that overrides an application variable.
pub fn env_name(variable: &str) -> String {
    format!("{ENV_PREFIX}{}", variable.to_ascii_uppercase())
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Variable(String),
}

/// A string with `{{ name }}` references to application variables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

impl Template {
    /// Parses a template. Text outside `{{ }}` is literal; inside, one
    /// variable name with optional surrounding spaces.
    pub fn parse(source: &str) -> Result<Self, VariablesError> {
        let mut parts = Vec::new();
        let mut rest = source;
        while !rest.is_empty() {
            match rest.find("{{") {
                Some(0) => {
                    let after = &rest[2..];
                    let end = after
                        .find("}}")
                        .ok_or_else(|| VariablesError::InvalidTemplate {
                            template: source.to_owned(),
                            reason: "'{{' without a matching '}}'".to_owned(),
                        })?;
                    parts.push(Part::Variable(after[..end].trim().to_owned()));
                    rest = &after[end + 2..];
                }
                Some(start) => {
                    parts.push(Part::Literal(rest[..start].to_owned()));
                    rest = &rest[start..];
                }
                None => {
                    parts.push(Part::Literal(rest.to_owned()));
                    rest = "";
                }
            }
        }
        Ok(Self {
            source: source.to_owned(),
            parts,
        })
    }

    /// True when the template references no variable.
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    /// The variable names the template references.
    pub fn references(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Variable(name) => Some(name.as_str()),
            Part::Literal(_) => None,
        })
    }

    /// Substitutes resolved application variables.
    ///
    /// # Panics
    /// Never for templates whose references were checked against the
    /// declared variables, which the manifest loader does.
    pub fn render(&self, values: &HashMap<String, String>) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Literal(s) => s.as_str(),
                Part::Variable(name) => values
                    .get(name)
                    .map(String::as_str)
                    .expect("template references were validated against declared variables"),
            })
            .collect()
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// A declared application variable.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Declaration {
    pub default: Option<String>,
    pub required: bool,
    pub secret: bool,
}

/// Looks up an environment variable by name.
pub type EnvLookup = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Where values come from, besides defaults.
#[derive(Default)]
pub struct Sources {
    /// Explicit values; they win over everything (like `spin up --variable`).
    pub explicit: HashMap<String, String>,
    /// Looks up an environment variable; `None` means the real process
    /// environment. Tests pass their own so they do not touch global state.
    pub env: Option<EnvLookup>,
}

impl Sources {
    fn env(&self, key: &str) -> Option<String> {
        match &self.env {
            Some(lookup) => lookup(key),
            None => std::env::var(key).ok(),
        }
    }
}

/// Every application variable resolved, and each component's variables
/// rendered from them.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    app: HashMap<String, String>,
    components: HashMap<String, HashMap<String, String>>,
}

impl Resolved {
    /// Resolves all application variables; fails on the first required one
    /// (in name order) that nothing provides.
    pub fn resolve(
        declarations: &BTreeMap<String, Declaration>,
        sources: &Sources,
    ) -> Result<Self, VariablesError> {
        let mut app = HashMap::new();
        for (name, decl) in declarations {
            let value = sources
                .explicit
                .get(name)
                .cloned()
                .or_else(|| sources.env(&env_name(name)))
                .or_else(|| decl.default.clone());
            match value {
                Some(v) => {
                    app.insert(name.clone(), v);
                }
                None => {
                    return Err(VariablesError::MissingRequired {
                        name: name.clone(),
                        env: env_name(name),
                    });
                }
            }
        }
        Ok(Self {
            app,
            components: HashMap::new(),
        })
    }

    /// Renders a component's variable templates.
    pub fn add_component<'a>(
        &mut self,
        component: &str,
        templates: impl IntoIterator<Item = (&'a String, &'a Template)>,
    ) {
        let rendered = templates
            .into_iter()
            .map(|(k, t)| (k.clone(), t.render(&self.app)))
            .collect();
        self.components.insert(component.to_owned(), rendered);
    }

    /// Renders a template over the application variables (used for
    /// `allowed_outbound_hosts`, which Spin resolves at application level).
    pub fn render(&self, template: &Template) -> String {
        template.render(&self.app)
    }

    /// The value of an application variable.
    pub fn app_value(&self, name: &str) -> Option<&str> {
        self.app.get(name).map(String::as_str)
    }

    /// What `variables.get(key)` answers to a component.
    pub fn component_value(&self, component: &str, key: &str) -> Result<String, VariablesError> {
        validate_name(key)?;
        self.components
            .get(component)
            .and_then(|vars| vars.get(key))
            .cloned()
            .ok_or_else(|| VariablesError::Undefined {
                component: component.to_owned(),
                key: key.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_spin_rules() {
        for ok in ["db_url", "a", "a1", "max_asset_bytes"] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "DB", "1a", "_a", "a_", "a__b", "a-b"] {
            assert!(validate_name(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn templates_split_literals_and_references() {
        let t = Template::parse("postgres://{{ db_host }}:{{port}}").unwrap();
        assert_eq!(t.references().collect::<Vec<_>>(), ["db_host", "port"]);
        let values = HashMap::from([
            ("db_host".to_owned(), "h".to_owned()),
            ("port".to_owned(), "1".to_owned()),
        ]);
        assert_eq!(t.render(&values), "postgres://h:1");
        assert!(Template::parse("plain").unwrap().is_literal());
        assert!(Template::parse("{{ open").is_err());
    }

    #[test]
    fn explicit_beats_env_beats_default() {
        let decls = BTreeMap::from([
            (
                "a".to_owned(),
                Declaration {
                    default: Some("da".into()),
                    ..Default::default()
                },
            ),
            (
                "b".to_owned(),
                Declaration {
                    default: Some("db".into()),
                    ..Default::default()
                },
            ),
            (
                "c".to_owned(),
                Declaration {
                    default: Some("dc".into()),
                    ..Default::default()
                },
            ),
        ]);
        let sources = Sources {
            explicit: HashMap::from([("a".to_owned(), "xa".to_owned())]),
            env: Some(Box::new(|k| {
                ["SPIN_VARIABLE_A", "SPIN_VARIABLE_B"]
                    .contains(&k)
                    .then(|| format!("env:{k}"))
            })),
        };
        let r = Resolved::resolve(&decls, &sources).unwrap();
        assert_eq!(r.app_value("a"), Some("xa"));
        assert_eq!(r.app_value("b"), Some("env:SPIN_VARIABLE_B"));
        assert_eq!(r.app_value("c"), Some("dc"));
    }

    #[test]
    fn missing_required_names_the_variable_and_its_env() {
        let decls = BTreeMap::from([(
            "jwt_secret".to_owned(),
            Declaration {
                required: true,
                secret: true,
                ..Default::default()
            },
        )]);
        let sources = Sources {
            env: Some(Box::new(|_| None)),
            ..Default::default()
        };
        let err = Resolved::resolve(&decls, &sources).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("\"jwt_secret\""), "{text}");
        assert!(text.contains("SPIN_VARIABLE_JWT_SECRET"), "{text}");
    }

    #[test]
    fn component_lookup_validates_and_scopes() {
        let decls = BTreeMap::from([(
            "x".to_owned(),
            Declaration {
                default: Some("1".into()),
                ..Default::default()
            },
        )]);
        let mut r = Resolved::resolve(
            &decls,
            &Sources {
                env: Some(Box::new(|_| None)),
                ..Default::default()
            },
        )
        .unwrap();
        let t = Template::parse("v={{ x }}").unwrap();
        r.add_component("one", [(&"y".to_owned(), &t)]);
        assert_eq!(r.component_value("one", "y").unwrap(), "v=1");
        assert!(matches!(
            r.component_value("one", "x"),
            Err(VariablesError::Undefined { .. })
        ));
        assert!(matches!(
            r.component_value("two", "y"),
            Err(VariablesError::Undefined { .. })
        ));
        assert!(matches!(
            r.component_value("one", "Bad"),
            Err(VariablesError::InvalidName { .. })
        ));
    }
}
