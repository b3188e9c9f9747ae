//! Spin component: learning content: list, create, read (optionally with its fragments, assets and ranking summaries), update, delete.
//! Everything but the route table lives in `api-core`.

api_core::component!(api_core::routes::content);
