//! Reading requests: query parameters, JSON bodies, conditional headers.

use serde_json::{Map, Value};
use spin_sdk::http::Request;

use crate::problem::Problem;
use crate::router::Ctx;

/// The query string, decoded, with every name checked against what the
/// endpoint understands: a misspelt filter must not silently list everything.
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(req: &Request, known: &[&str]) -> Result<Self, Problem> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (name, value) in form_urlencoded::parse(req.query().as_bytes()) {
            if !known.contains(&name.as_ref()) {
                return Err(Problem::bad_request(
                    name.as_ref(),
                    format!(
                        "is not a parameter of this endpoint (known: {})",
                        known.join(", ")
                    ),
                ));
            }
            if pairs.iter().any(|(n, _)| *n == name) {
                return Err(Problem::bad_request(
                    name.as_ref(),
                    "is given more than once",
                ));
            }
            pairs.push((name.into_owned(), value.into_owned()));
        }
        Ok(Query { pairs })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A text parameter of at most `max_chars` characters, without NUL.
    pub fn text(&self, name: &str, max_chars: usize) -> Result<Option<&str>, Problem> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        if value.chars().count() > max_chars {
            return Err(Problem::bad_request(
                name,
                format!("is longer than {max_chars} characters"),
            ));
        }
        if value.contains('\0') {
            return Err(Problem::bad_request(name, "contains a NUL character"));
        }
        Ok(Some(value))
    }

    /// An integer parameter within `min..=max`.
    pub fn int(&self, name: &str, min: i64, max: i64) -> Result<Option<i64>, Problem> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        value
            .parse::<i64>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .map(Some)
            .ok_or_else(|| {
                Problem::bad_request(name, format!("must be an integer from {min} to {max}"))
            })
    }

    /// The page size: `default` when absent, at most `max`.
    pub fn limit(&self, default: i64, max: i64) -> Result<i64, Problem> {
        Ok(self.int("limit", 1, max)?.unwrap_or(default))
    }
}

/// The body as a JSON object, refusing what is not one with the reason.
pub fn json_object(ctx: &Ctx) -> Result<Map<String, Value>, Problem> {
    match json_value(ctx)? {
        Value::Object(map) => Ok(map),
        _ => Err(Problem::invalid("body", "must be a JSON object")),
    }
}

/// The body as JSON: `Content-Type: application/json`, UTF-8, nested at
/// most 128 deep (serde_json's limit). Its size, at most [`MAX_JSON_BYTES`](crate::router::MAX_JSON_BYTES),
/// was enforced while it was read.
pub fn json_value(ctx: &Ctx) -> Result<Value, Problem> {
    let content_type = ctx
        .req
        .header("content-type")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(Problem::new(415)
            .detail("send the body as application/json")
            .field("Content-Type", "must be application/json")
            .header("accept", "application/json"));
    }
    let body = ctx.body();
    if body.is_empty() {
        return Err(Problem::bad_request("body", "is empty; send a JSON object"));
    }
    let text = std::str::from_utf8(&body)
        .map_err(|_| Problem::bad_request("body", "is not valid UTF-8"))?;
    serde_json::from_str(text).map_err(|err| {
        Problem::bad_request(
            "body",
            format!(
                "is not valid JSON: {} at line {} column {}",
                category(&err),
                err.line(),
                err.column()
            ),
        )
    })
}

fn category(err: &serde_json::Error) -> &'static str {
    if err.to_string().contains("recursion limit") {
        return "nested too deeply";
    }
    match err.classify() {
        serde_json::error::Category::Eof => "it ends too early",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data | serde_json::error::Category::Io => "unexpected content",
    }
}

/// An entity tag from a conditional header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityTag {
    pub weak: bool,
    /// The opaque tag without quotes; `*` for the wildcard.
    pub tag: String,
}

/// The entity tags of a conditional header (`If-Match`, `If-None-Match`);
/// `None` when absent.
pub fn etags(req: &Request, header: &str) -> Option<Vec<EntityTag>> {
    let value = req.header(header)?.as_str()?;
    Some(
        value
            .split(',')
            .map(str::trim)
            .filter(|tag| !tag.is_empty())
            .map(|tag| {
                let (weak, tag) = match tag.strip_prefix("W/") {
                    Some(rest) => (true, rest),
                    None => (false, tag),
                };
                EntityTag {
                    weak,
                    tag: tag.trim_matches('"').to_owned(),
                }
            })
            .collect(),
    )
}

/// `If-Match` (RFC 9110 §13.1.1): strong comparison, so a weak tag never
/// matches; `*` matches any existing representation.
pub fn if_match(tags: &[EntityTag], current: &str) -> bool {
    tags.iter()
        .any(|t| t.tag == "*" || (!t.weak && t.tag == current))
}

/// `If-None-Match` (RFC 9110 §13.1.2): weak comparison.
pub fn if_none_match(tags: &[EntityTag], current: &str) -> bool {
    tags.iter().any(|t| t.tag == "*" || t.tag == current)
}
