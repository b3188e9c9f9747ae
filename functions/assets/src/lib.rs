//! Spin component: fragment assets: byte upload and ranged download, metadata CRUD.
//! Everything but the route table lives in `api-core`.

api_core::component!(api_core::routes::assets);
