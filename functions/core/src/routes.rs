//! Each component's route table, in one place so that the components stay
//! shells and the OpenAPI document can list exactly what is served.

use spin_sdk::http::Method;

use crate::auth::Role;
use crate::router::{Op, Route};
use crate::schema::{ASSETS, CONTENT, FRAGMENTS, RANKINGS};
use crate::{assets, crud, expand, feed, import, openapi, rankings};

pub fn content() -> Vec<Route> {
    crud::routes(&CONTENT, Op::GetExpandable, expand::get_content)
}

pub fn fragments() -> Vec<Route> {
    crud::routes(&FRAGMENTS, Op::Get, crud::get)
}

pub fn assets() -> Vec<Route> {
    let mut routes = vec![
        Route::new(
            Op::Upload,
            Method::Post,
            "/api/assets",
            Some(Role::Authenticated),
            assets::upload,
        )
        .on(&ASSETS),
        Route::new(
            Op::Data,
            Method::Get,
            "/api/assets/:id/data",
            Some(Role::Anon),
            assets::data,
        )
        .on(&ASSETS),
    ];
    routes.extend(crud::routes(&ASSETS, Op::Get, crud::get));
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
        )
        .on(&RANKINGS),
        Route::new(
            Op::Best,
            Method::Get,
            "/api/rankings/best",
            Some(Role::Anon),
            rankings::best,
        )
        .on(&RANKINGS),
        Route::new(
            Op::Mine,
            Method::Get,
            "/api/rankings/mine",
            Some(Role::Authenticated),
            rankings::mine,
        )
        .on(&RANKINGS),
        Route::new(
            Op::PutMine,
            Method::Put,
            "/api/rankings/mine",
            Some(Role::Authenticated),
            rankings::put_mine,
        )
        .on(&RANKINGS),
    ];
    routes.extend(crud::routes(&RANKINGS, Op::Get, crud::get));
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
        ),
        Route::new(
            Op::ImportRows,
            Method::Post,
            "/api/import/content",
            service,
            import::content,
        )
        .on(&CONTENT),
        Route::new(
            Op::ImportRows,
            Method::Post,
            "/api/import/fragments",
            service,
            import::fragments,
        )
        .on(&FRAGMENTS),
        Route::new(
            Op::ImportRows,
            Method::Post,
            "/api/import/rankings",
            service,
            import::rankings,
        )
        .on(&RANKINGS),
        Route::new(
            Op::ImportAsset,
            Method::Put,
            "/api/import/assets/:id",
            service,
            assets::import,
        )
        .on(&ASSETS),
        Route::new(
            Op::ImportFinish,
            Method::Post,
            "/api/import/finish",
            service,
            import::finish,
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
    )]
}

/// `GET /api/openapi.json`: the document of every route of [`all`].
fn serve_openapi(ctx: &crate::router::Ctx) -> crate::router::Handled {
    crate::request::Query::parse(ctx.req, &[])?;
    Ok(crate::respond::json(200, &openapi::document(&all())))
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
