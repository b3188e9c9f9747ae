//! Spin component: the assessment page at `/assess/`, a small file server
//! whose files are compiled in, so the page ships with the component and
//! cannot drift from the API it was built against.
//!
//! It keeps its own routing rather than the core's route table: it serves
//! files, not API operations, and the OpenAPI document describes `/api` only.
//!
//! `/assess/config.json` tells the page where the project's Supabase Auth
//! is (the `supabase_url` and `supabase_publishable_key` variables, both
//! public), so that one deployment signs people in with one project; the
//! page's Content-Security-Policy lets it reach that origin and no other.

use api_core::Problem;
use api_core::config::{misconfigured, optional};
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
    file!("auth.js", "text/javascript; charset=utf-8"),
    file!("icon.svg", "image/svg+xml"),
];

/// The route of the page's settings.
pub const CONFIG_PATH: &str = "/assess/config.json";

/// Everything the page loads comes from here, and audio plays from Blob
/// URLs made of bytes fetched with the token; nothing inline, nothing from
/// elsewhere, so an injected string cannot run or phone home. The one
/// other origin the page may talk to is the project's Auth, when set.
pub fn content_security_policy(auth_origin: Option<&str>) -> String {
    let connect = match auth_origin {
        Some(origin) => format!("'self' {origin}"),
        None => "'self'".to_owned(),
    };
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         media-src blob:; connect-src {connect}; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    )
}

/// Where the page signs people in: the project's Supabase Auth.
#[derive(Debug, PartialEq, Eq)]
pub struct Auth {
    /// The Auth API's base URL without a trailing slash, e.g.
    /// `https://<ref>.supabase.co/auth/v1`.
    pub url: String,
    /// Its origin, for the policy's `connect-src`.
    pub origin: String,
    /// The project's publishable (anon) key, sent as `apikey`.
    pub publishable_key: String,
}

impl Auth {
    /// The settings from the variables' values; `None` when no Auth URL is
    /// set (development: the page then takes a pasted token). A URL that
    /// is not plain http(s) is the operator's mistake, named.
    pub fn from_values(url: Option<&str>, key: Option<&str>) -> Result<Option<Auth>, String> {
        let Some(text) = url.map(str::trim).filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        let parsed = url::Url::parse(text)
            .map_err(|e| format!("supabase_url is {text:?}, not a URL ({e})"))?;
        if !matches!(parsed.scheme(), "http" | "https")
            || parsed.host_str().is_none()
            || parsed.query().is_some()
            || parsed.fragment().is_some()
            || !parsed.username().is_empty()
            || parsed.password().is_some()
        {
            return Err(format!(
                "supabase_url is {text:?}: give the Auth URL alone, e.g. \
                 https://<project-ref>.supabase.co/auth/v1"
            ));
        }
        Ok(Some(Auth {
            url: parsed.as_str().trim_end_matches('/').to_owned(),
            origin: parsed.origin().ascii_serialization(),
            publishable_key: key.map(str::trim).unwrap_or_default().to_owned(),
        }))
    }

    fn from_variables() -> Result<Option<Auth>, Problem> {
        Auth::from_values(
            optional("supabase_url").as_deref(),
            optional("supabase_publishable_key").as_deref(),
        )
        .map_err(|detail| misconfigured(&detail))
    }
}

/// The body of [`CONFIG_PATH`].
pub fn config_json(auth: Option<&Auth>) -> String {
    let auth = auth
        .map(|auth| serde_json::json!({"url": auth.url, "publishable_key": auth.publishable_key}));
    serde_json::json!({ "auth": auth }).to_string()
}

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
    let auth = match Auth::from_variables() {
        Ok(auth) => auth,
        Err(problem) => return problem.into_response(),
    };
    let policy = content_security_policy(auth.as_ref().map(|a| a.origin.as_str()));
    let config;
    let (bytes, content_type): (&[u8], &str) = if req.path() == CONFIG_PATH {
        config = config_json(auth.as_ref());
        (config.as_bytes(), "application/json")
    } else {
        let Some(file) = lookup(req.path()) else {
            return Problem::not_found(format!("the page has no file at {}", req.path()))
                .into_response();
        };
        (file.bytes, file.content_type)
    };
    let etag = etag(bytes);
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
        .header("content-security-policy", policy.as_str())
        .header("x-content-type-options", "nosniff")
        .header("referrer-policy", "no-referrer");
    if fresh {
        return builder.body(Vec::new()).build();
    }
    builder
        .header("content-type", content_type)
        .header("content-length", bytes.len().to_string());
    // HEAD: the headers of the GET, no body.
    let body = if head { Vec::new() } else { bytes.to_vec() };
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
        let policy = content_security_policy(None);
        assert!(!policy.contains("unsafe"));
        assert!(policy.starts_with("default-src 'none'"));
        assert!(policy.contains("connect-src 'self';"), "{policy}");
        let with_auth = content_security_policy(Some("https://abc.supabase.co"));
        assert!(
            with_auth.contains("connect-src 'self' https://abc.supabase.co;"),
            "{with_auth}"
        );
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

    #[test]
    fn the_auth_url_gives_the_pages_settings_and_its_origin() {
        assert_eq!(Auth::from_values(None, Some("k")), Ok(None));
        assert_eq!(Auth::from_values(Some("  "), None), Ok(None));
        let auth = Auth::from_values(
            Some("https://abc.supabase.co/auth/v1/"),
            Some("sb_publishable_x"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(auth.url, "https://abc.supabase.co/auth/v1");
        assert_eq!(auth.origin, "https://abc.supabase.co");
        let local = Auth::from_values(Some("http://127.0.0.1:9999"), None)
            .unwrap()
            .unwrap();
        assert_eq!(local.origin, "http://127.0.0.1:9999");
        assert_eq!(local.publishable_key, "");
        for bad in [
            "abc.supabase.co",
            "ftp://abc.supabase.co",
            "https://abc.supabase.co/auth/v1?x=1",
            "https://user:pw@abc.supabase.co",
        ] {
            let err = Auth::from_values(Some(bad), None).unwrap_err();
            assert!(err.contains("supabase_url"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_settings_are_json_the_page_can_read() {
        assert_eq!(config_json(None), r#"{"auth":null}"#);
        let auth = Auth::from_values(Some("http://127.0.0.1:9999"), Some("a\"b\\c"))
            .unwrap()
            .unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&config_json(Some(&auth))).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({"auth": {"url": "http://127.0.0.1:9999", "publishable_key": "a\"b\\c"}})
        );
    }
}
