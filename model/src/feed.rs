//! The wire format of `GET /api/changes`: pages of upserts and tombstones
//! over the content tables.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One page of the change feed.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ChangePage {
    pub changes: Vec<Change>,
    /// Opaque; a client only sends it back.
    pub next_cursor: String,
    pub has_more: bool,
    pub phase: Phase,
}

/// Whether a page belongs to the initial full snapshot or to the log that
/// follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Snapshot,
    Log,
}

/// One row upserted or deleted.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Change {
    /// The table's name; a client skips tables it does not know, so that
    /// a table added to the server later does not stop an older client.
    pub table: String,
    pub op: Op,
    pub id: i64,
    /// The row as the API's GET returns it; absent on deletes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Upsert,
    Delete,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_parses_with_unknown_tables_kept_by_name() {
        let page: ChangePage = serde_json::from_value(serde_json::json!({
            "changes": [
                {"table": "rankings", "op": "upsert", "id": 3, "row": {"id": 3}},
                {"table": "content_fragments", "op": "delete", "id": 7},
                {"table": "decks", "op": "upsert", "id": 1, "row": {}}
            ],
            "next_cursor": "abc", "has_more": true, "phase": "snapshot"
        }))
        .unwrap();
        assert_eq!(page.changes.len(), 3);
        assert_eq!(page.changes[1].op, Op::Delete);
        assert!(page.changes[1].row.is_none());
        assert_eq!(page.changes[2].table, "decks");
        assert_eq!(page.phase, Phase::Snapshot);
    }
}
