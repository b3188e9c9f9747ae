//! Nearest neighbours of a text among the mirrored contents or fragments,
//! through sqlite-vec's KNN over the `vec_embeddings` table.

use crate::embed::{EmbedError, Embedder, Purpose};
use crate::store::{SourceKind, Store, StoreError};

/// sqlite-vec refuses a larger `k` in one KNN query.
const MAX_K: usize = 4096;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SearchError {
    #[error("k must be between 1 and {MAX_K}")]
    BadK,
    #[error("there is nothing to search for: the text is empty")]
    EmptyQuery,
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What to look for and where.
#[derive(Debug, Clone)]
pub struct Query<'a> {
    pub text: &'a str,
    pub k: usize,
    pub kind: SourceKind,
    /// Only contents (or fragments of contents) of this content type.
    pub content_type: Option<&'a str>,
    /// Only contents (or fragments of contents) in this language.
    pub language: Option<&'a str>,
}

/// A row near the query.
pub use crate::store::Neighbour as Hit;

/// The `k` nearest rows to `query.text` among the vectors of `embedder`'s
/// model, closest first.
pub fn search(
    store: &Store,
    embedder: &dyn Embedder,
    query: &Query<'_>,
) -> Result<Vec<Hit>, SearchError> {
    if query.k == 0 || query.k > MAX_K {
        return Err(SearchError::BadK);
    }
    if query.text.trim().is_empty() {
        return Err(SearchError::EmptyQuery);
    }
    let vector = embedder
        .embed(&[query.text], Purpose::Query)?
        .pop()
        .ok_or(EmbedError::EmptyText)?;
    search_vector(store, embedder.model(), &vector, query)
}

/// Like [`search`] with a vector already computed.
pub fn search_vector(
    store: &Store,
    model: &str,
    vector: &[f32],
    query: &Query<'_>,
) -> Result<Vec<Hit>, SearchError> {
    let filtered = query.content_type.is_some() || query.language.is_some();
    // The filters live in the mirror, not in the vec0 table, so they apply
    // after the KNN: ask for more neighbours until k survive the filter or
    // every vector of the kind was seen.
    let mut fetch = if filtered {
        (query.k * 4).min(MAX_K)
    } else {
        query.k
    };
    loop {
        let hits = store.nearest(model, vector, query.kind, fetch)?;
        let seen = hits.len();
        let mut kept: Vec<Hit> = hits
            .into_iter()
            .flatten()
            .filter(|h| {
                query
                    .content_type
                    .is_none_or(|t| h.content_type.as_deref() == Some(t))
                    && query
                        .language
                        .is_none_or(|l| h.language.as_deref() == Some(l))
            })
            .collect();
        if kept.len() >= query.k || seen < fetch || fetch == MAX_K {
            kept.truncate(query.k);
            return Ok(kept);
        }
        fetch = (fetch * 4).min(MAX_K);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::{HashedNgrams, embed_store};
    use crate::feed::ChangePage;
    use crate::store::PageBase;
    use serde_json::json;

    fn content(
        id: i64,
        native: &str,
        translation: &str,
        content_type: &str,
        language: &str,
    ) -> serde_json::Value {
        json!({"table": "learning_content", "op": "upsert", "id": id, "row": {
            "id": id, "title": format!("t{id}"), "content_type": content_type, "language": language,
            "native_text": native, "translation": translation, "ipa": "", "difficulty_level": null,
            "tags": null, "content_metadata": null, "created_at": null, "updated_at": null}})
    }

    fn fragment(id: i64, content_id: i64, native: &str, body: &str) -> serde_json::Value {
        json!({"table": "content_fragments", "op": "upsert", "id": id, "row": {
            "id": id, "learning_content_id": content_id, "native_text": native, "body_text": body,
            "ipa": null, "extra": null, "fragment_type": "sentence", "fragment_metadata": null,
            "created_at": null, "updated_at": null}})
    }

    fn store_with(changes: Vec<serde_json::Value>) -> Store {
        let mut store = Store::open_in_memory().unwrap();
        let page: ChangePage = serde_json::from_value(json!({
            "changes": changes, "next_cursor": "c", "has_more": false, "phase": "snapshot"}))
        .unwrap();
        store
            .apply_page(
                PageBase {
                    expected_cursor: None,
                    new_snapshot: true,
                    source_url: "http://api",
                },
                &page,
            )
            .unwrap();
        embed_store(
            &mut store,
            &HashedNgrams,
            &[SourceKind::Content, SourceKind::Fragment],
            |_, _| {},
        )
        .unwrap();
        store
    }

    fn query(text: &str, k: usize, kind: SourceKind) -> Query<'_> {
        Query {
            text,
            k,
            kind,
            content_type: None,
            language: None,
        }
    }

    #[test]
    fn a_near_duplicate_thai_phrase_ranks_first() {
        let store = store_with(vec![
            content(1, "ห้องน้ำอยู่ที่ไหน", "where is the toilet", "phrase", "thai"),
            fragment(10, 1, "วันนี้อากาศร้อนมาก", "it is very hot today"),
            fragment(11, 1, "ขอบคุณมากครับ", "thank you very much"),
            fragment(12, 1, "ฉันชอบกินข้าวผัด", "I like fried rice"),
            fragment(13, 1, "สถานีรถไฟอยู่ที่ไหน", "where is the train station"),
        ]);
        let hits = search(
            &store,
            &HashedNgrams,
            &query("ขอบคุณมาก", 3, SourceKind::Fragment),
        )
        .unwrap();
        assert_eq!(hits.len(), 3);
        assert_eq!(hits[0].id, 11, "{hits:#?}");
        assert_eq!(hits[0].native_text, "ขอบคุณมากครับ");
        assert_eq!(hits[0].learning_content_id, Some(1));
        assert!(hits.windows(2).all(|w| w[0].distance <= w[1].distance));
        // Fragments only: the content with a similar text is not among them.
        assert!(hits.iter().all(|h| h.kind == SourceKind::Fragment));
        let contents = search(
            &store,
            &HashedNgrams,
            &query("ห้องน้ำที่ไหน", 5, SourceKind::Content),
        )
        .unwrap();
        assert_eq!(contents.iter().map(|h| h.id).collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn filters_keep_k_results_when_enough_match() {
        let mut changes = Vec::new();
        for i in 0..40 {
            let (ty, lang) = if i % 10 == 0 {
                ("story", "lao")
            } else {
                ("phrase", "thai")
            };
            changes.push(content(i, &format!("ข้อความที่ {i} สวัสดี"), "text", ty, lang));
        }
        let store = store_with(changes);
        let mut q = query("สวัสดี", 3, SourceKind::Content);
        q.content_type = Some("story");
        let hits = search(&store, &HashedNgrams, &q).unwrap();
        assert_eq!(hits.len(), 3);
        assert!(
            hits.iter()
                .all(|h| h.content_type.as_deref() == Some("story"))
        );
        q.content_type = None;
        q.language = Some("lao");
        q.k = 10;
        let hits = search(&store, &HashedNgrams, &q).unwrap();
        assert_eq!(hits.len(), 4, "only four are in Lao");
    }

    #[test]
    fn vectors_of_another_model_are_never_compared() {
        let store = store_with(vec![fragment(1, 1, "สวัสดี", "hello")]);
        let v = HashedNgrams.vector("สวัสดี");
        let hits = search_vector(
            &store,
            "other-model",
            &v,
            &query("x", 5, SourceKind::Fragment),
        )
        .unwrap();
        assert!(hits.is_empty());
    }

    #[test]
    fn bad_queries_are_refused() {
        let store = Store::open_in_memory().unwrap();
        assert!(matches!(
            search(&store, &HashedNgrams, &query("  ", 5, SourceKind::Fragment)),
            Err(SearchError::EmptyQuery)
        ));
        assert!(matches!(
            search(&store, &HashedNgrams, &query("a", 0, SourceKind::Fragment)),
            Err(SearchError::BadK)
        ));
    }
}
