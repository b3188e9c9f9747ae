//! `GET /api/health`: whether the database answers, and the schema version
//! applied to it (the highest version in `public.applied_migrations`).

use api_core::{Problem, db};
use spin_sdk::http::{Method, Request, Response};
use spin_sdk::pg4::{Connection, DbValue, PgError};

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
    match schema_version(&url) {
        Ok(Some(version)) => {
            let body = serde_json::json!({
                "status": "ok",
                "database": "ok",
                "schema_version": version,
            });
            Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .header("cache-control", "no-store")
                .body(body.to_string())
                .build()
        }
        Ok(None) => Problem::unavailable(
            "the database answers but no migration has been applied",
            db::RETRY_AFTER_SECS,
        )
        .into_response(),
        Err(e) => db::problem(&e).into_response(),
    }
}

// PgError is the SDK's own error type, large by design (spin-sdk allows the
// same lint in its pg4 module); it is mapped to a problem right away.
#[allow(clippy::result_large_err)]
fn schema_version(url: &str) -> Result<Option<String>, PgError> {
    let conn = Connection::open(url)?;
    let rows = match conn.query(
        "SELECT max(version) AS version FROM public.applied_migrations",
        &[],
    ) {
        Ok(rows) => rows,
        // No ledger table yet: the database answers but was never migrated.
        Err(e) if db::sqlstate(&e).as_deref() == Some("42P01") => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(match rows.rows.first().and_then(|r| r.first()) {
        Some(DbValue::Str(v)) => Some(v.clone()),
        _ => None,
    })
}
