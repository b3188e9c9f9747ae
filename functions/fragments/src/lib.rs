//! Spin component: content fragments: list, create, read, update, delete.
//! Everything but the route table lives in `api-core`.

api_core::component!(api_core::routes::fragments);
