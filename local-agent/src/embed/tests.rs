use super::ngrams::DIMENSIONS;
use super::*;

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn the_same_text_gives_the_same_unit_vector() {
    let e = HashedNgrams;
    let a = e.vector("ขอบคุณมากครับ");
    let b = e.vector("ขอบคุณมากครับ");
    assert_eq!(a, b);
    assert_eq!(a.len(), DIMENSIONS);
    let norm = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "{norm}");
    assert!(e.vector("").iter().all(|x| *x == 0.0));
}

#[test]
fn the_vector_is_stable_across_releases() {
    // Pinned values: if this fails, the algorithm changed and
    // HASHED_NGRAMS_MODEL must get a new name.
    let v = HashedNgrams.vector("สวัสดี");
    let nonzero = v.iter().filter(|x| **x != 0.0).count();
    let checksum: f64 = v
        .iter()
        .enumerate()
        .map(|(i, x)| (i as f64 + 1.0) * f64::from(*x))
        .sum();
    assert_eq!(nonzero, 20);
    assert!((checksum - -199.2333).abs() < 1e-3, "{checksum}");
}

#[test]
fn thai_without_spaces_is_split_into_character_ngrams() {
    let e = HashedNgrams;
    // Combining marks (the tone mark ่ and the vowel ี) are code points
    // of their own: a text that differs only by a tone mark is close
    // but not identical.
    let with_tone = e.vector("ไม่");
    let without = e.vector("ไม");
    assert_ne!(with_tone, without);
    assert!(cosine(&with_tone, &without) > 0.3);
    // Whitespace and case do not matter.
    assert_eq!(e.vector("Hello  World"), e.vector("hello world"));
}

/// Counts the texts it is asked to embed.
struct Counting(std::cell::Cell<usize>);

impl Embedder for Counting {
    fn model(&self) -> &str {
        HASHED_NGRAMS_MODEL
    }
    fn batch_size(&self) -> usize {
        2
    }
    fn embed(&self, texts: &[&str], purpose: Purpose) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.0.set(self.0.get() + texts.len());
        HashedNgrams.embed(texts, purpose)
    }
}

fn apply(store: &mut Store, from: Option<&str>, to: &str, changes: serde_json::Value) {
    let page: crate::feed::ChangePage = serde_json::from_value(serde_json::json!({
        "changes": changes, "next_cursor": to, "has_more": false,
        "phase": if from.is_none() { "snapshot" } else { "log" }}))
    .unwrap();
    store
        .apply_page(
            crate::store::PageBase {
                expected_cursor: from,
                new_snapshot: from.is_none(),
                source_url: "http://api",
            },
            &page,
        )
        .unwrap();
}

fn fragment(id: i64, native: &str) -> serde_json::Value {
    serde_json::json!({"table": "content_fragments", "op": "upsert", "id": id, "row": {
        "id": id, "learning_content_id": null, "native_text": native, "body_text": "",
        "ipa": null, "extra": null, "fragment_type": "word", "fragment_metadata": null,
        "created_at": null, "updated_at": null}})
}

#[test]
fn only_changed_texts_are_embedded_again() {
    let mut store = Store::open_in_memory().unwrap();
    apply(
        &mut store,
        None,
        "c1",
        serde_json::json!([
            fragment(1, "หนึ่ง"),
            fragment(2, "สอง"),
            fragment(3, "สาม"),
            fragment(4, " ")
        ]),
    );
    let counting = Counting(std::cell::Cell::new(0));
    let kinds = [SourceKind::Fragment];
    let mut calls = Vec::new();
    let first = embed_store(&mut store, &counting, &kinds, |done, total| {
        calls.push((done, total))
    })
    .unwrap();
    assert_eq!((first.embedded, first.unchanged, first.empty), (3, 0, 1));
    assert_eq!(calls, vec![(0, 3), (2, 3), (3, 3)]);
    assert_eq!(counting.0.get(), 3);

    let again = embed_store(&mut store, &counting, &kinds, |_, _| {}).unwrap();
    assert_eq!((again.embedded, again.unchanged), (0, 3));
    assert_eq!(counting.0.get(), 3, "nothing re-sent");

    // One text edited, one row deleted upstream.
    apply(
        &mut store,
        Some("c1"),
        "c2",
        serde_json::json!([fragment(2, "สองครั้ง"),
            {"table": "content_fragments", "op": "delete", "id": 3}]),
    );
    let after = embed_store(&mut store, &counting, &kinds, |_, _| {}).unwrap();
    assert_eq!((after.embedded, after.unchanged), (1, 1));
    assert_eq!(counting.0.get(), 4);
    let stored: String = store
        .conn()
        .query_row(
            "SELECT text_hash FROM vector_embeddings WHERE source_id = 2",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored, text_hash("สองครั้ง"));
    assert_eq!(store.counts().unwrap().vectors[0].count, 2);
}

#[test]
fn near_duplicates_are_closer_than_unrelated_texts() {
    let e = HashedNgrams;
    let query = e.vector("ขอบคุณมาก");
    let near = e.vector("ขอบคุณมากครับ");
    let unrelated = [
        "ห้องน้ำอยู่ที่ไหน",
        "วันนี้อากาศร้อนมาก",
        "ฉันชอบกินข้าวผัด",
        "where is the train station",
    ];
    let near_score = cosine(&query, &near);
    for text in unrelated {
        let score = cosine(&query, &e.vector(text));
        assert!(near_score > score + 0.2, "{text}: {score} vs {near_score}");
    }
}
