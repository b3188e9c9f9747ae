//! Brings the mirror up to date with the change feed, one page per
//! transaction: the page's rows and the cursor after it commit together, so
//! a pull killed at any moment resumes from the last committed page and
//! re-applying a page is harmless (upserts and deletes are idempotent).

use std::time::Instant;

use serde::Serialize;

use crate::api::{ApiClient, ApiError};
use crate::feed::{ChangePage, Phase};
use crate::store::{PageBase, Store, StoreError};

/// A cursor can expire again while a slow snapshot runs; past this many
/// restarts something else is wrong.
const MAX_RESNAPSHOTS: u32 = 3;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PullError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the change feed answered has_more with the cursor it was given; the server is \
         misbehaving, report it (nothing was lost)"
    )]
    Stuck,
    #[error("the server expired the cursor {0} times in a row during one pull; try again later")]
    KeepsExpiring(u32),
}

#[derive(Debug, Clone, Copy)]
pub struct PullOptions {
    /// Start a full snapshot even if a cursor is stored.
    pub full: bool,
    /// The feed's `limit` per page (1..=`FEED_PAGE_MAX`).
    pub page_size: u32,
}

/// Rows per feed page unless asked otherwise: the most the server gives,
/// since every page costs a request (its byte budget keeps a page of
/// long rows small).
pub const DEFAULT_PAGE_SIZE: u32 = content_model::limits::FEED_PAGE_MAX;

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            full: false,
            page_size: DEFAULT_PAGE_SIZE,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PullReport {
    pub pages: usize,
    pub upserts: usize,
    /// Of the upserts, contents and fragments (whose texts `embed` indexes).
    pub text_upserts: usize,
    pub deletes: usize,
    /// Rows removed because a snapshot no longer delivered them.
    pub swept: usize,
    /// Changes to tables this agent does not mirror.
    pub skipped: usize,
    /// Whether this pull ran (or finished) a full snapshot.
    pub snapshot: bool,
    /// Snapshots restarted because the server had pruned past the cursor.
    pub cursor_expired: u32,
    pub cursor: Option<String>,
    /// Time spent waiting for the server (requests, retries included).
    pub fetch_seconds: f64,
    /// Time spent applying pages to the store.
    pub apply_seconds: f64,
}

/// Progress after each applied page.
#[derive(Debug, Clone, Copy)]
pub struct PullProgress {
    pub pages: usize,
    pub changes: usize,
    pub phase: Phase,
}

/// Pulls until the feed says it is caught up.
pub fn pull(
    store: &mut Store,
    client: &ApiClient,
    options: PullOptions,
    mut on_page: impl FnMut(&PullProgress),
) -> Result<PullReport, PullError> {
    let state = store.sync_state()?;
    let source = client.base_url();
    // What the store holds now: every apply checks it is still there.
    let mut expected = state.cursor.clone();
    // A cursor only means something to the server that issued it.
    let same_source = state.source_url.as_deref() == Some(source);
    let request = if options.full || !same_source {
        None
    } else {
        state.cursor.clone()
    };
    let mut report = PullReport::default();
    let page_size = options
        .page_size
        .clamp(1, content_model::limits::FEED_PAGE_MAX);
    // The next page is fetched while this one is applied: the server and
    // SQLite work at the same time. One page ahead is enough to keep both
    // busy; a page fetched but never applied (a kill, an error) is simply
    // asked for again by the next pull, from the cursor the store holds.
    let (pages, received) = std::sync::mpsc::sync_channel::<Fetched>(1);
    let fetched = std::thread::scope(|scope| -> Result<Fetch, PullError> {
        let fetcher = scope.spawn(move || fetch_pages(client, request, page_size, pages));
        for Fetched { new_snapshot, page } in received {
            let applying = Instant::now();
            let applied = store.apply_page(
                PageBase {
                    expected_cursor: expected.as_deref(),
                    new_snapshot,
                    source_url: source,
                },
                &page,
            )?;
            report.apply_seconds += applying.elapsed().as_secs_f64();
            report.pages += 1;
            report.upserts += applied.upserts;
            report.text_upserts += applied.text_upserts;
            report.deletes += applied.deletes;
            report.swept += applied.swept;
            report.skipped += applied.skipped;
            report.snapshot |= new_snapshot || applied.snapshot_completed;
            on_page(&PullProgress {
                pages: report.pages,
                changes: report.upserts + report.deletes + report.skipped,
                phase: page.phase,
            });
            expected = Some(page.next_cursor);
        }
        Ok(fetcher.join().expect("the page fetcher does not panic"))
    })?;
    report.fetch_seconds = fetched.seconds;
    report.cursor_expired = fetched.cursor_expired;
    if let Some(e) = fetched.error {
        return Err(e);
    }
    report.cursor = expected;
    Ok(report)
}

/// A page and whether it starts a snapshot.
struct Fetched {
    new_snapshot: bool,
    page: ChangePage,
}

/// What the fetcher did besides sending pages.
struct Fetch {
    seconds: f64,
    cursor_expired: u32,
    /// Why it stopped before the feed was caught up.
    error: Option<PullError>,
}

/// Fetches pages from `request` on, following each page's cursor, and
/// sends them in order until the feed is caught up, the receiver is gone
/// (the applier failed) or a request fails.
fn fetch_pages(
    client: &ApiClient,
    mut request: Option<String>,
    page_size: u32,
    pages: std::sync::mpsc::SyncSender<Fetched>,
) -> Fetch {
    let mut fetch = Fetch {
        seconds: 0.0,
        cursor_expired: 0,
        error: None,
    };
    loop {
        let new_snapshot = request.is_none();
        let fetching = Instant::now();
        let fetched = client.changes(request.as_deref(), page_size);
        fetch.seconds += fetching.elapsed().as_secs_f64();
        let page = match fetched {
            Ok(page) => page,
            Err(ApiError::CursorExpired) if request.is_some() => {
                fetch.cursor_expired += 1;
                if fetch.cursor_expired > MAX_RESNAPSHOTS {
                    fetch.error = Some(PullError::KeepsExpiring(fetch.cursor_expired));
                    return fetch;
                }
                // Rows the new snapshot does not deliver are swept at its
                // end; until then the mirror keeps serving the old ones.
                request = None;
                continue;
            }
            Err(e) => {
                fetch.error = Some(e.into());
                return fetch;
            }
        };
        if page.has_more && request.as_deref() == Some(page.next_cursor.as_str()) {
            fetch.error = Some(PullError::Stuck);
            return fetch;
        }
        let has_more = page.has_more;
        request = Some(page.next_cursor.clone());
        if pages.send(Fetched { new_snapshot, page }).is_err() || !has_more {
            return fetch;
        }
    }
}
