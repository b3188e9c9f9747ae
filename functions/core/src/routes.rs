//! Each component's route table, in one place so that the components stay
//! shells and the OpenAPI document can list exactly what is served.

use serde_json::json;
use spin_sdk::http::Method;

use crate::auth::Role;
use crate::doc::Doc;
use crate::router::{Op, Route};
use crate::schema::{ASSETS, CONTENT, FRAGMENTS, RANKINGS, Resource};
use crate::{assets, crud, expand, feed, import, openapi, rankings};

pub fn content() -> Vec<Route> {
    crud::routes(
        &CONTENT,
        Op::GetExpandable,
        expand::get_content,
        expand::get_content_doc,
    )
}

pub fn fragments() -> Vec<Route> {
    crud::routes(&FRAGMENTS, Op::Get, crud::get, crud::get_doc)
}

pub fn assets() -> Vec<Route> {
    let mut routes = vec![
        Route::new(
            Op::Upload,
            Method::Post,
            "/api/assets",
            Some(Role::Authenticated),
            assets::upload,
            assets::upload_doc,
        )
        .on(&ASSETS),
        Route::streaming(
            Op::Data,
            Method::Get,
            "/api/assets/:id/data",
            Some(Role::Anon),
            assets::data,
            assets::data_doc,
        )
        .on(&ASSETS),
    ];
    routes.extend(crud::routes(&ASSETS, Op::Get, crud::get, crud::get_doc));
    routes
}

pub fn rankings() -> Vec<Route> {
    // Before the generic routes: `/api/rankings/summary` (or `mine`) is not a row id.
    let mut routes = vec![
        Route::new(
            Op::Summary,
            Method::Get,
            "/api/rankings/summary",
            Some(Role::Anon),
            rankings::summary,
            rankings::summary_doc,
        )
        .on(&RANKINGS),
        Route::new(
            Op::Best,
            Method::Get,
            "/api/rankings/best",
            Some(Role::Anon),
            rankings::best,
            rankings::best_doc,
        )
        .on(&RANKINGS),
        Route::new(
            Op::Mine,
            Method::Get,
            "/api/rankings/mine",
            Some(Role::Authenticated),
            rankings::mine,
            rankings::mine_doc,
        )
        .on(&RANKINGS),
        Route::new(
            Op::PutMine,
            Method::Put,
            "/api/rankings/mine",
            Some(Role::Authenticated),
            rankings::put_mine,
            rankings::put_mine_doc,
        )
        .on(&RANKINGS),
    ];
    routes.extend(crud::routes(&RANKINGS, Op::Get, crud::get, crud::get_doc));
    routes
}

pub fn changes() -> Vec<Route> {
    let service = Some(Role::ServiceRole);
    vec![
        Route::new(
            Op::Changes,
            Method::Get,
            "/api/changes",
            Some(Role::Anon),
            feed::changes,
            feed::changes_doc,
        ),
        Route::new(
            Op::ImportRows,
            Method::Post,
            "/api/import/content",
            service,
            import::content,
            import::rows_doc,
        )
        .on(&CONTENT),
        Route::new(
            Op::ImportRows,
            Method::Post,
            "/api/import/fragments",
            service,
            import::fragments,
            import::rows_doc,
        )
        .on(&FRAGMENTS),
        Route::new(
            Op::ImportRows,
            Method::Post,
            "/api/import/rankings",
            service,
            import::rankings,
            import::rows_doc,
        )
        .on(&RANKINGS),
        Route::new(
            Op::ImportAsset,
            Method::Put,
            "/api/import/assets/:id",
            service,
            assets::import,
            assets::import_doc,
        )
        .on(&ASSETS),
        Route::new(
            Op::ImportFinish,
            Method::Post,
            "/api/import/finish",
            service,
            import::finish,
            import::finish_doc,
        ),
    ]
}

pub fn openapi() -> Vec<Route> {
    vec![Route::new(
        Op::OpenApi,
        Method::Get,
        "/api/openapi.json",
        None,
        serve_openapi,
        openapi_doc,
    )]
}

/// `GET /api/openapi.json`: the document of every route of [`all`].
fn serve_openapi(ctx: &crate::router::Ctx) -> crate::router::Handled {
    crate::request::Query::parse(ctx.req, &[])?;
    Ok(crate::respond::json(200, &openapi::document(&all())))
}

fn openapi_doc(_: Option<&'static Resource>) -> Doc {
    Doc::new().json("200", "This document.", json!({"type": "object"}))
}

/// The health component's route (served by `functions/health`), listed for the document.
pub fn health() -> Vec<Route> {
    fn served_elsewhere(_: &crate::router::Ctx) -> crate::router::Handled {
        Err(crate::Problem::not_found("served by the health component"))
    }
    vec![Route::new(
        Op::Health,
        Method::Get,
        "/api/health",
        None,
        served_elsewhere,
        crate::health::doc,
    )]
}

/// Every route of the application, by component name as in spin.toml.
pub fn all() -> Vec<(&'static str, Vec<Route>)> {
    vec![
        ("health", health()),
        ("content", content()),
        ("fragments", fragments()),
        ("assets", assets()),
        ("rankings", rankings()),
        ("changes", changes()),
        ("openapi", openapi()),
    ]
}
