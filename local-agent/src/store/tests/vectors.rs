use super::*;

#[test]
fn vectors_are_replaced_in_place_and_leave_with_their_rows() {
    let mut store = Store::open_in_memory().unwrap();
    let p = page(
        vec![content(1, "a"), fragment(1, 1), fragment(2, 1)],
        "c1",
        false,
        "snapshot",
    );
    apply(&mut store, None, true, &p).unwrap();
    let (v1, v2) = (unit_vector(1), unit_vector(2));
    let stored = store
        .put_vectors(
            "m",
            &[
                NewVector {
                    kind: SourceKind::Fragment,
                    id: 1,
                    text_hash: "h1",
                    vector: &v1,
                },
                NewVector {
                    kind: SourceKind::Fragment,
                    id: 2,
                    text_hash: "h2",
                    vector: &v2,
                },
                // Its row is not mirrored: skipped, not orphaned.
                NewVector {
                    kind: SourceKind::Fragment,
                    id: 99,
                    text_hash: "h",
                    vector: &v2,
                },
            ],
        )
        .unwrap();
    assert_eq!(stored, 2);
    let id_before: i64 = store
        .conn()
        .query_row(
            "SELECT id FROM vector_embeddings WHERE source_id = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    store
        .put_vectors(
            "m",
            &[NewVector {
                kind: SourceKind::Fragment,
                id: 1,
                text_hash: "h1b",
                vector: &v2,
            }],
        )
        .unwrap();
    let (id_after, hash): (i64, String) = store
        .conn()
        .query_row(
            "SELECT id, text_hash FROM vector_embeddings WHERE source_id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((id_after, hash.as_str()), (id_before, "h1b"));
    let blob: Vec<u8> = store
        .conn()
        .query_row(
            "SELECT embedding FROM vec_embeddings WHERE rowid = ?1",
            [id_after],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(blob, vector_blob(&v2));

    // A tombstone takes the fragment's vector (and its index entry) along.
    let p = page(vec![delete("content_fragments", 2)], "c2", false, "log");
    apply(&mut store, Some("c1"), false, &p).unwrap();
    let count = |sql: &str| -> i64 { store.conn().query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(count("SELECT count(*) FROM vector_embeddings"), 1);
    assert_eq!(count("SELECT count(*) FROM vec_embeddings"), 1);

    let wrong = vec![0.5; 3];
    let err = store
        .put_vectors(
            "m",
            &[NewVector {
                kind: SourceKind::Content,
                id: 1,
                text_hash: "x",
                vector: &wrong,
            }],
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::Dimensions { got: 3, .. }));
}

#[test]
fn orphan_vectors_are_pruned() {
    let mut store = Store::open_in_memory().unwrap();
    store
        .conn()
        .execute(
            "INSERT INTO vector_embeddings VALUES (7, 'learning_content', 70, 'm', 384, 'h', NULL)",
            [],
        )
        .unwrap();
    store
        .conn()
        .execute(
            "INSERT INTO vec_embeddings (rowid, embedding, model, source_type)
             VALUES (7, ?1, 'm', 'learning_content'), (8, ?1, 'm', 'learning_content')",
            [vector_blob(&unit_vector(0))],
        )
        .unwrap();
    assert_eq!(store.prune_orphan_vectors().unwrap(), 1);
    let left: i64 = store
        .conn()
        .query_row("SELECT count(*) FROM vec_embeddings", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0);
}

#[test]
fn cached_asset_bytes_are_checked_against_their_digest() {
    let mut store = Store::open_in_memory().unwrap();
    let err = store
        .put_cached_asset(&text_hash("abc"), b"abd")
        .unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { .. }));
    store.put_cached_asset(&text_hash("abc"), b"abc").unwrap();
    assert_eq!(
        store.cached_asset(&text_hash("abc")).unwrap().as_deref(),
        Some(&b"abc"[..])
    );
    // No mirrored asset refers to it: pruned.
    assert_eq!(store.prune_asset_cache().unwrap(), 1);
}
