//! Spin component: rankings of assets: CRUD, per-asset summaries, best asset per fragment.
//! Everything but the route table lives in `api-core`.

api_core::component!(api_core::routes::rankings);
