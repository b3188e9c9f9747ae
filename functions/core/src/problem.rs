//! RFC 9457 problem details: every error response of the API.

use serde::Serialize;
use spin_sdk::http::Response;

/// The media type of problem responses.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// Where this API's problem type URIs start. They name the kind of problem
/// for programs; `title` and `detail` are for people.
pub const TYPE_BASE: &str = "https://thai-content.dev/problems/";

/// One field at fault in a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The field: a JSON member (`title`), a query parameter (`limit`), a
    /// header (`If-Match`), or `body` for the body as a whole.
    pub field: String,
    pub message: String,
}

/// A problem details object, plus the headers that go with it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    /// A URI reference for the problem type; `about:blank` means "see the
    /// status code", and then `title` is the status phrase.
    #[serde(rename = "type")]
    pub type_: String,
    pub title: &'static str,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The fields at fault, for requests that failed validation.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    #[serde(skip)]
    pub headers: Vec<(String, String)>,
}

impl Problem {
    /// A problem of type `about:blank` with the status phrase as title.
    pub fn new(status: u16) -> Self {
        Self {
            type_: "about:blank".to_owned(),
            title: reason_phrase(status),
            status,
            detail: None,
            errors: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// Sets a problem type URI of this API (see [`TYPE_BASE`]).
    pub fn kind(mut self, name: &str) -> Self {
        self.type_ = format!("{TYPE_BASE}{name}");
        self
    }

    /// 422 naming the field at fault.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = message.into();
        Self::new(422)
            .kind("validation")
            .detail(format!("{field}: {message}"))
            .field(field, message)
    }

    /// 400 for a malformed request (the field names the part at fault:
    /// a query parameter, a header, `body`).
    pub fn bad_request(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = message.into();
        Self::new(400)
            .detail(format!("{field}: {message}"))
            .field(field, message)
    }

    /// 404 for a resource that does not exist.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(404).detail(what)
    }

    /// Adds a field error.
    pub fn field(mut self, field: impl Into<String>, message: impl Into<String>) -> Self {
        self.errors.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
        self
    }

    /// Adds the human-readable explanation of this occurrence.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Adds a response header.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// 405 with the `Allow` header listing the methods that are.
    pub fn method_not_allowed(allowed: &[&str]) -> Self {
        let allow = allowed.join(", ");
        Self::new(405)
            .detail(format!("this resource supports {allow}"))
            .header("allow", allow)
    }

    /// 503 with `Retry-After`: the database (or another dependency) is not
    /// answering; the client may try again after `retry_after_secs`.
    pub fn unavailable(detail: impl Into<String>, retry_after_secs: u32) -> Self {
        Self::new(503)
            .detail(detail)
            .header("retry-after", retry_after_secs.to_string())
    }

    /// The JSON body.
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a problem always serialises")
    }

    /// The HTTP response.
    pub fn into_response(self) -> Response {
        let mut builder = Response::builder();
        builder.status(self.status);
        builder.header("content-type", CONTENT_TYPE);
        for (name, value) in &self.headers {
            builder.header(name.as_str(), value.as_str());
        }
        builder.body(self.body()).build()
    }
}

impl From<Problem> for Response {
    fn from(p: Problem) -> Self {
        p.into_response()
    }
}

/// The standard phrase for the statuses the API uses.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        412 => "Precondition Failed",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        422 => "Unprocessable Content",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        507 => "Insufficient Storage",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_rfc9457_members() {
        let p = Problem::unavailable("db down", 5);
        let v: serde_json::Value = serde_json::from_slice(&p.body()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "type": "about:blank",
                "title": "Service Unavailable",
                "status": 503,
                "detail": "db down"
            })
        );
        assert_eq!(p.headers, [("retry-after".to_owned(), "5".to_owned())]);
    }

    #[test]
    fn method_not_allowed_lists_methods() {
        let p = Problem::method_not_allowed(&["GET", "HEAD"]);
        assert_eq!(p.status, 405);
        assert_eq!(p.headers, [("allow".to_owned(), "GET, HEAD".to_owned())]);
    }
}
