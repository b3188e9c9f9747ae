//! Limits of the API that its clients plan around.

/// Rows in one `POST /api/import/{table}` request.
pub const IMPORT_BATCH_ROWS: usize = 500;

/// Entries in a page of `GET /api/changes` when `limit` is not given.
pub const FEED_PAGE_DEFAULT: u32 = 500;

/// The largest `limit` `GET /api/changes` accepts. A request costs about
/// 5 ms besides its rows, so a pull pays it per page: pages of 5000 rows
/// pulled 1.3–1.6× faster than pages of 500. [`PAGE_BYTES`] still bounds
/// a page of long rows.
pub const FEED_PAGE_MAX: u32 = 5000;

/// The most a page of rows carries, in bytes of row data, besides its first
/// row: the host refuses a query result over 128 MiB, and a page is cut
/// short at this budget instead.
pub const PAGE_BYTES: usize = 32 << 20;

/// The largest JSON request body.
pub const MAX_JSON_BYTES: usize = 8 << 20;
