//! The store's tests: helpers that build feed pages, and one module per
//! concern.

mod mirror;
mod schema;
mod vectors;

use super::*;
use crate::feed::ChangePage;
use rusqlite::Connection;
use serde_json::json;

fn content(id: i64, title: &str) -> serde_json::Value {
    json!({"table": "learning_content", "op": "upsert", "id": id, "row": {
        "id": id, "title": title, "content_type": "phrase", "language": "thai",
        "native_text": "สวัสดีครับ", "translation": "hello", "ipa": "sà.wàt.diː kʰráp",
        "difficulty_level": 1, "tags": ["greeting"], "content_metadata": {"b": 1.5, "a": null},
        "created_at": "2026-11-25T16:07:19.123456Z", "updated_at": "2026-11-25T16:07:19.123456Z"}})
}

fn fragment(id: i64, content_id: i64) -> serde_json::Value {
    json!({"table": "content_fragments", "op": "upsert", "id": id, "row": {
        "id": id, "learning_content_id": content_id, "native_text": "สวัสดี",
        "body_text": "hello", "ipa": null, "extra": null, "fragment_type": "word",
        "fragment_metadata": null, "created_at": null, "updated_at": null}})
}

fn ranking(id: i64, score: &str) -> serde_json::Value {
    json!({"table": "rankings", "op": "upsert", "id": id, "row": {
        "id": id, "fragment_id": 1, "asset_id": 1, "rank_score": score,
        "assessed_by": "nok", "assessment_notes": "clear",
        "created_at": null, "updated_at": null}})
}

fn asset(id: i64) -> serde_json::Value {
    json!({"table": "fragment_assets", "op": "upsert", "id": id, "row": {
        "id": id, "fragment_id": 1, "asset_type": "audio", "asset_metadata": {"voice": "th-TH"},
        "content_type": "audio/mpeg", "size": 3, "sha256": text_hash("abc"),
        "created_at": "2026-11-25T16:07:19Z", "created_by": "tts"}})
}

fn delete(table: &str, id: i64) -> serde_json::Value {
    json!({"table": table, "op": "delete", "id": id})
}

fn page(changes: Vec<serde_json::Value>, cursor: &str, has_more: bool, phase: &str) -> ChangePage {
    serde_json::from_value(json!({
        "changes": changes, "next_cursor": cursor, "has_more": has_more, "phase": phase}))
    .unwrap()
}

fn apply(
    store: &mut Store,
    from: Option<&str>,
    new_snapshot: bool,
    page: &ChangePage,
) -> Result<Applied> {
    store.apply_page(
        PageBase {
            expected_cursor: from,
            new_snapshot,
            source_url: "http://api",
        },
        page,
    )
}

fn ids(store: &Store, table: &str) -> Vec<i64> {
    let mut stmt = store
        .conn()
        .prepare(&format!("SELECT id FROM {table} ORDER BY id"))
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

fn unit_vector(hot: usize) -> Vec<f32> {
    let mut v = vec![0.0; LEGACY_DIMENSIONS];
    v[hot] = 1.0;
    v
}
