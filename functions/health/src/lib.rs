//! `GET /api/health`: whether the database answers and holds the schema the
//! functions need (see [`api_core::health`]).

use api_core::Problem;
use spin_sdk::http::{Method, Request, Response};

// The SDK's export glue is `unsafe` FFI; the exception to the workspace's
// `unsafe_code = "deny"` stays inside this module.
#[allow(unsafe_code)]
mod export {
    #[spin_sdk::http_component]
    fn handle(req: spin_sdk::http::Request) -> spin_sdk::http::Response {
        super::handle(req)
    }
}

fn handle(req: Request) -> Response {
    if !matches!(req.method(), Method::Get | Method::Head) {
        return Problem::method_not_allowed(&["GET", "HEAD"]).into_response();
    }
    let Ok(url) = spin_sdk::variables::get("db_url") else {
        return Problem::new(500)
            .detail("the db_url variable is not available to this component")
            .into_response();
    };
    match api_core::health::check(&url) {
        Ok(body) => Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .header("cache-control", "no-store")
            .body(body.to_string())
            .build(),
        Err(problem) => problem.into_response(),
    }
}
