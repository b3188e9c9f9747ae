//! Spin component: the OpenAPI 3.1 document of the API.
//! Everything but the route table lives in `api-core`.

api_core::component!(api_core::routes::openapi);
