//! Limits of the API that its clients plan around.

/// Rows in one `POST /api/import/{table}` request.
pub const IMPORT_BATCH_ROWS: usize = 500;

/// Entries in a page of `GET /api/changes` when `limit` is not given.
pub const FEED_PAGE_DEFAULT: u32 = 500;

/// The largest `limit` `GET /api/changes` accepts.
pub const FEED_PAGE_MAX: u32 = 1000;

/// The most a page of rows carries, in bytes of row data, besides its first
/// row: the host refuses a query result over 128 MiB, and a page is cut
/// short at this budget instead.
pub const PAGE_BYTES: usize = 32 << 20;

/// The largest JSON request body.
pub const MAX_JSON_BYTES: usize = 8 << 20;
