//! Route matching for the HTTP trigger, with Spin's rules.
//!
//! Spin hands its routes to the `routefinder` crate, whose ordering is what
//! "the most specific route wins" means in practice (exact segments beat
//! `:name` segments, which beat a trailing wildcard, compared segment by
//! segment). This module uses the same crate so that overlaps resolve exactly
//! as they do under `spin up`; what it adds is Spin's manifest conventions:
//! a trailing `/...` is the wildcard, one trailing slash is ignored, private
//! routes are never routable, and of two identical routes the later one wins.

use std::borrow::Cow;
use std::collections::HashMap;

/// How a trigger exposes its component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteSpec {
    /// A pattern such as `/api/content/:id` or `/static/...`.
    Pattern(String),
    /// `route = { private = true }`: reachable only through service chaining,
    /// which this host does not offer, so never from outside.
    Private,
}

/// An error in a route pattern.
#[derive(Debug, thiserror::Error)]
#[error("invalid route {route:?} for component {component:?}: {reason}")]
pub struct RouteError {
    pub route: String,
    pub component: String,
    pub reason: String,
}

#[derive(Clone, Debug)]
struct Entry {
    component: String,
    /// The route as written in the manifest.
    raw: String,
}

/// Maps request paths to components.
#[derive(Debug)]
pub struct Router {
    inner: routefinder::Router<Entry>,
    /// Routes that were shadowed by a later identical one: (route, lost, won).
    shadowed: Vec<(String, String, String)>,
}

/// The outcome of matching a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    /// The component that handles the request.
    pub component: String,
    /// The route as written in the manifest (e.g. `/users/:id/...`).
    pub raw_route: String,
    /// The named `:name` captures, in route order.
    pub params: Vec<(String, String)>,
    /// The part of the path under a trailing wildcard, with Spin's slash
    /// conventions; empty for exact routes.
    pub path_info: String,
}

impl RouteMatch {
    /// The route without its trailing wildcard marker (`spin-component-route`).
    pub fn route_or_prefix(&self) -> &str {
        self.raw_route
            .strip_suffix("/...")
            .unwrap_or(&self.raw_route)
    }
}

impl Router {
    /// Builds a router from `(component, route)` pairs in manifest order.
    pub fn build<'a>(
        routes: impl IntoIterator<Item = (&'a str, &'a RouteSpec)>,
    ) -> Result<Self, RouteError> {
        // Keep manifest order but let a later identical route replace an
        // earlier one, as Spin does (it warns; we record it).
        let mut ordered: Vec<(String, Entry)> = Vec::new();
        let mut shadowed = Vec::new();
        for (component, spec) in routes {
            let RouteSpec::Pattern(raw) = spec else {
                continue;
            };
            let normalized = normalize(raw);
            let entry = Entry {
                component: component.to_owned(),
                raw: raw.clone(),
            };
            if let Some(existing) = ordered.iter_mut().find(|(r, _)| *r == *raw) {
                shadowed.push((
                    normalized,
                    existing.1.component.clone(),
                    component.to_owned(),
                ));
                existing.1 = entry;
            } else {
                ordered.push((raw.clone(), entry));
            }
        }

        let mut inner = routefinder::Router::new();
        for (raw, entry) in ordered {
            let normalized = normalize(&raw);
            let pattern = match normalized.strip_suffix("/...") {
                Some(prefix) => format!("{prefix}/*"),
                None => normalized,
            };
            inner
                .add(pattern.as_str(), entry.clone())
                .map_err(|reason| RouteError {
                    route: raw.clone(),
                    component: entry.component.clone(),
                    reason,
                })?;
        }
        Ok(Self { inner, shadowed })
    }

    /// Routes that a later identical route made unreachable:
    /// `(route, component that lost, component that won)`.
    pub fn shadowed(&self) -> &[(String, String, String)] {
        &self.shadowed
    }

    /// The routable patterns and their components, in precedence order.
    pub fn routes(&self) -> impl Iterator<Item = (&str, &str)> {
        self.inner
            .iter()
            .map(|(_, e)| (e.raw.as_str(), e.component.as_str()))
    }

    /// Finds the component for a request path (the path only, no query).
    pub fn route(&self, path: &str) -> Option<RouteMatch> {
        let m = self.inner.best_match(path)?;
        let entry = m.handler();
        let captures = m.captures();
        let params = captures
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let path_info = match captures.wildcard() {
            None => String::new(),
            Some(rest) => path_info(rest, path.ends_with('/')).into_owned(),
        };
        Some(RouteMatch {
            component: entry.component.clone(),
            raw_route: entry.raw.clone(),
            params,
            path_info,
        })
    }

    /// The named captures of a match as a map, for convenience.
    pub fn params_map(m: &RouteMatch) -> HashMap<&str, &str> {
        m.params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }
}

/// Makes a route absolute and drops one trailing slash, as Spin does.
fn normalize(route: &str) -> String {
    let absolute = if route.starts_with('/') {
        route.to_owned()
    } else {
        format!("/{route}")
    };
    match absolute.strip_suffix('/') {
        Some(stripped) => stripped.to_owned(),
        None => absolute,
    }
}

/// Spin reports the wildcard remainder with a leading slash and keeps a
/// trailing slash from the request, although the matcher drops both.
fn path_info(rest: &str, trailing_slash: bool) -> Cow<'_, str> {
    match (rest.is_empty(), trailing_slash) {
        (true, false) => Cow::Borrowed(""),
        (true, true) => Cow::Borrowed("/"),
        (false, false) => Cow::Owned(format!("/{rest}")),
        (false, true) => Cow::Owned(format!("/{rest}/")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[(&str, &str)]) -> Router {
        let specs: Vec<(String, RouteSpec)> = routes
            .iter()
            .map(|(c, r)| (c.to_string(), RouteSpec::Pattern(r.to_string())))
            .collect();
        Router::build(specs.iter().map(|(c, s)| (c.as_str(), s))).unwrap()
    }

    #[test]
    fn trailing_slash_in_route_is_ignored() {
        let r = router(&[("a", "/foo/")]);
        assert_eq!(r.route("/foo").unwrap().component, "a");
    }

    #[test]
    fn later_duplicate_wins_and_is_reported() {
        let r = router(&[("first", "/foo"), ("second", "/foo")]);
        assert_eq!(r.route("/foo").unwrap().component, "second");
        assert_eq!(
            r.shadowed(),
            &[("/foo".to_owned(), "first".to_owned(), "second".to_owned())]
        );
    }

    #[test]
    fn private_routes_are_not_routable() {
        let private = RouteSpec::Private;
        let all = RouteSpec::Pattern("/...".into());
        let r = Router::build([("internal", &private), ("shop", &all)]).unwrap();
        assert_eq!(r.route("/internal").unwrap().component, "shop");
        let only_private = Router::build([("internal", &private)]).unwrap();
        assert!(only_private.route("/").is_none());
    }

    #[test]
    fn path_info_keeps_spin_slash_conventions() {
        let r = router(&[("w", "/foo/...")]);
        assert_eq!(r.route("/foo").unwrap().path_info, "");
        assert_eq!(r.route("/foo/").unwrap().path_info, "/");
        assert_eq!(r.route("/foo/bar").unwrap().path_info, "/bar");
        assert_eq!(r.route("/foo/bar/").unwrap().path_info, "/bar/");
    }
}
