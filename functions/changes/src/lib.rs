//! Spin component: the change feed and the bulk import.
//! Everything but the route table lives in `api-core`.

api_core::component!(api_core::routes::changes);
