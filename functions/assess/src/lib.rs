//! Spin component: the assessment page at `/assess/`, a small file server
//! whose files are compiled in, so the page ships with the component and
//! cannot drift from the API it was built against.
//!
//! It keeps its own routing rather than the core's route table: it serves
//! files, not API operations, and the OpenAPI document describes `/api` only.

use api_core::Problem;
use sha2::{Digest, Sha256};
use spin_sdk::http::{Method, Request, Response};

// The SDK's export glue is `unsafe` FFI; the exception to the workspace's
// `unsafe_code = "deny"` stays inside this module.
#[allow(unsafe_code)]
mod export {
    #[spin_sdk::http_component]
    fn handle(req: spin_sdk::http::Request) -> spin_sdk::http::Response {
        super::handle(&req)
    }
}

/// One file of the page.
pub struct File {
    /// The name under `/assess/`.
    pub name: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

macro_rules! file {
    ($name:literal, $type:literal) => {
        File {
            name: $name,
            content_type: $type,
            bytes: include_bytes!(concat!("../static/", $name)),
        }
    };
}

pub static FILES: &[File] = &[
    file!("index.html", "text/html; charset=utf-8"),
    file!("assess.css", "text/css; charset=utf-8"),
    file!("assess.js", "text/javascript; charset=utf-8"),
    file!("api.js", "text/javascript; charset=utf-8"),
    file!("pending.js", "text/javascript; charset=utf-8"),
    file!("icon.svg", "image/svg+xml"),
];

/// Everything the page loads comes from here, and audio plays from Blob
/// URLs made of bytes fetched with the token; nothing inline, nothing from
/// elsewhere, so an injected string cannot run or phone home.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self'; media-src blob:; connect-src 'self'; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The file a request path names: `/assess` and `/assess/` are the page.
pub fn lookup(path: &str) -> Option<&'static File> {
    let name = match path {
        "/assess" | "/assess/" => "index.html",
        _ => path.strip_prefix("/assess/")?,
    };
    FILES.iter().find(|f| f.name == name)
}

/// A strong validator for the bytes: the first 128 bits of their SHA-256.
pub fn etag(bytes: &[u8]) -> String {
    format!("\"{}\"", hex::encode(&Sha256::digest(bytes)[..16]))
}

fn handle(req: &Request) -> Response {
    let head = matches!(req.method(), Method::Head);
    if !head && !matches!(req.method(), Method::Get) {
        return Problem::method_not_allowed(&["GET", "HEAD"]).into_response();
    }
    let Some(file) = lookup(req.path()) else {
        return Problem::not_found(format!("the page has no file at {}", req.path()))
            .into_response();
    };
    let etag = etag(file.bytes);
    let fresh = req
        .header("if-none-match")
        .and_then(|v| v.as_str())
        .is_some_and(|tags| {
            tags.split(',')
                .map(|t| t.trim().trim_start_matches("W/"))
                .any(|t| t == "*" || t == etag)
        });
    let mut builder = Response::builder();
    builder
        .status(if fresh { 304 } else { 200 })
        .header("etag", etag.as_str())
        // Revalidate every time: a new deployment shows at once, and the
        // ETag makes the check a 304 without a body.
        .header("cache-control", "no-cache")
        .header("content-security-policy", CONTENT_SECURITY_POLICY)
        .header("x-content-type-options", "nosniff")
        .header("referrer-policy", "no-referrer");
    if fresh {
        return builder.body(Vec::new()).build();
    }
    builder
        .header("content-type", file.content_type)
        .header("content-length", file.bytes.len().to_string());
    // HEAD: the headers of the GET, no body.
    let body = if head {
        Vec::new()
    } else {
        file.bytes.to_vec()
    };
    builder.body(body).build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_at_both_spellings_and_nothing_escapes_the_folder() {
        assert_eq!(lookup("/assess").unwrap().name, "index.html");
        assert_eq!(lookup("/assess/").unwrap().name, "index.html");
        assert_eq!(lookup("/assess/api.js").unwrap().name, "api.js");
        for missing in ["/assess/../Cargo.toml", "/assess/nope.js", "/assessx", "/"] {
            assert!(lookup(missing).is_none(), "{missing}");
        }
    }

    /// Every local URL the page refers to (`src`, `href`, module imports)
    /// is a file the component serves: a file added to static/ but not to
    /// FILES would otherwise only show as a broken page.
    #[test]
    fn every_file_the_page_refers_to_is_served() {
        for file in FILES {
            let text = String::from_utf8_lossy(file.bytes);
            for marker in ["src=\"", "href=\"", "from \"./", "from './", "import(\"./"] {
                for (index, _) in text.match_indices(marker) {
                    let rest = &text[index + marker.len()..];
                    let end = rest.find(['"', '\'']).unwrap_or(rest.len());
                    let target = &rest[..end];
                    if target.starts_with('#') || target.starts_with("http") {
                        continue;
                    }
                    let path = if target.starts_with('/') {
                        target.to_owned()
                    } else {
                        format!("/assess/{target}")
                    };
                    assert!(
                        lookup(&path).is_some(),
                        "{} refers to {target}, which is not served",
                        file.name
                    );
                }
            }
        }
    }

    #[test]
    fn the_policy_forbids_inline_code_and_other_origins() {
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
        assert!(CONTENT_SECURITY_POLICY.starts_with("default-src 'none'"));
        let html = String::from_utf8_lossy(lookup("/assess").unwrap().bytes);
        assert!(
            !html.contains("<script>"),
            "inline scripts would be blocked"
        );
        assert!(
            !html.contains(" style=\""),
            "inline styles would be blocked"
        );
    }
}
