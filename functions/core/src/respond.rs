//! Building successful responses.

use serde_json::Value;
use spin_sdk::http::Response;

/// 200 (or `status`) with a JSON body.
pub fn json(status: u16, body: &Value) -> Response {
    json_text(
        status,
        serde_json::to_string(body).expect("JSON values serialise"),
    )
}

/// 200 (or `status`) with a body that is JSON text already.
pub fn json_text(status: u16, body: String) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.into_bytes())
        .build()
}

/// One row with its strong ETag.
pub fn row(status: u16, body: &Value, etag: &str, location: Option<&str>) -> Response {
    let mut builder = Response::builder();
    builder
        .status(status)
        .header("content-type", "application/json")
        .header("etag", quote(etag));
    if let Some(location) = location {
        builder.header("location", location);
    }
    builder
        .body(serde_json::to_vec(body).expect("JSON values serialise"))
        .build()
}

pub fn no_content() -> Response {
    Response::builder().status(204).body(Vec::new()).build()
}

/// An entity tag as it travels in headers.
pub fn quote(etag: &str) -> String {
    format!("\"{etag}\"")
}
