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

    // One model's vectors of one call share one dimension.
    let wrong = vec![0.5; 3];
    let err = store
        .put_vectors(
            "m",
            &[
                NewVector {
                    kind: SourceKind::Content,
                    id: 1,
                    text_hash: "x",
                    vector: &v1,
                },
                NewVector {
                    kind: SourceKind::Content,
                    id: 1,
                    text_hash: "x",
                    vector: &wrong,
                },
            ],
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Dimensions {
                got: 3,
                expected: 384
            }
        ),
        "{err}"
    );
    // sqlite-vec holds up to 8192 dimensions, and at least one.
    for size in [0, MAX_DIMENSIONS + 1] {
        let v = vec![0.5; size];
        let err = store
            .put_vectors(
                "m",
                &[NewVector {
                    kind: SourceKind::Content,
                    id: 1,
                    text_hash: "x",
                    vector: &v,
                }],
            )
            .unwrap_err();
        assert!(
            matches!(err, StoreError::DimensionsOutOfRange { got } if got == size),
            "{err}"
        );
    }
    let stored: i64 = store
        .conn()
        .query_row("SELECT count(*) FROM vector_embeddings", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, 1, "nothing stored");
}

/// A unit vector of `dims` dimensions pointing mostly along `hot`, with a
/// little of every other axis (so that its binary quantisation is not all
/// zeros).
fn unit_vector_of(dims: usize, hot: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..dims)
        .map(|i| {
            if (i * 7 + hot).is_multiple_of(3) {
                0.01
            } else {
                -0.01
            }
        })
        .collect();
    v[hot] = 1.0;
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / norm).collect()
}

#[test]
fn models_of_different_dimensions_live_side_by_side_and_each_searches_its_own() {
    let mut store = Store::open_in_memory().unwrap();
    let p = page(
        vec![
            content(1, "a"),
            fragment(1, 1),
            fragment(2, 1),
            fragment(3, 1),
        ],
        "c1",
        false,
        "snapshot",
    );
    apply(&mut store, None, true, &p).unwrap();
    let put = |store: &mut Store, model: &str, dims: usize| {
        let vectors: Vec<Vec<f32>> = (1..=3).map(|id| unit_vector_of(dims, id * 5)).collect();
        let rows: Vec<NewVector<'_>> = vectors
            .iter()
            .enumerate()
            .map(|(i, v)| NewVector {
                kind: SourceKind::Fragment,
                id: i as i64 + 1,
                text_hash: "h",
                vector: v,
            })
            .collect();
        store.put_vectors(model, &rows).unwrap()
    };
    assert_eq!(put(&mut store, "small-384", 384), 3);
    assert_eq!(put(&mut store, "wide-768", 768), 3);
    assert_eq!(put(&mut store, "odd-100", 100), 3);
    let tables: Vec<(usize, String, Option<String>)> = store
        .vector_tables()
        .unwrap()
        .into_iter()
        .map(|t| (t.dimensions, t.float_table, t.bit_table))
        .collect();
    assert_eq!(
        tables,
        [
            (100, "vec_embeddings_100".into(), None),
            (384, "vec_embeddings".into(), Some("vec_bits_384".into())),
            (
                768,
                "vec_embeddings_768".into(),
                Some("vec_bits_768".into())
            ),
        ]
    );
    let counts = store.counts().unwrap().vectors;
    let seen: Vec<(&str, i64, i64)> = counts
        .iter()
        .map(|v| (v.model.as_str(), v.dimensions, v.count))
        .collect();
    assert_eq!(
        seen,
        [
            ("odd-100", 100, 3),
            ("small-384", 384, 3),
            ("wide-768", 768, 3)
        ]
    );
    // Each model finds its own vector first, exactly and through the bits.
    for (model, dims) in [("small-384", 384), ("wide-768", 768), ("odd-100", 100)] {
        for plan in [
            SearchPlan::Exact,
            SearchPlan::Coarse { candidates: 3 },
            SearchPlan::Auto,
        ] {
            let q = unit_vector_of(dims, 10);
            let hits = store
                .nearest_with(model, &q, SourceKind::Fragment, 3, plan)
                .unwrap();
            let ids: Vec<i64> = hits.iter().flatten().map(|h| h.id).collect();
            assert_eq!(ids.len(), 3, "{model} {plan:?}");
            assert_eq!(ids[0], 2, "{model} {plan:?}: {hits:?}");
            assert!(hits[0].as_ref().unwrap().distance < 1e-3);
        }
        // The other model of the same dimension sees none of them.
        let q = unit_vector_of(dims, 10);
        assert!(
            store
                .nearest("other", &q, SourceKind::Fragment, 3)
                .unwrap()
                .is_empty()
        );
    }
    // A dimension nothing was stored with: nothing, not an error.
    assert!(
        store
            .nearest("wide-768", &[1.0; 1024], SourceKind::Fragment, 3)
            .unwrap()
            .is_empty()
    );

    // A model re-embedded at another size (e.g. its `dimensions` setting
    // changed) leaves its old table; the other models keep theirs.
    let v = unit_vector_of(512, 0);
    store
        .put_vectors(
            "wide-768",
            &[NewVector {
                kind: SourceKind::Fragment,
                id: 1,
                text_hash: "h2",
                vector: &v,
            }],
        )
        .unwrap();
    let count = |sql: &str| -> i64 { store.conn().query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(count("SELECT count(*) FROM vec_embeddings_768"), 2);
    assert_eq!(count("SELECT count(*) FROM vec_bits_768"), 2);
    assert_eq!(count("SELECT count(*) FROM vec_embeddings_512"), 1);
    assert_eq!(count("SELECT count(*) FROM vec_embeddings"), 3);

    // A tombstone takes the fragment's vectors of every model and size.
    let p = page(vec![delete("content_fragments", 1)], "c2", false, "log");
    apply(&mut store, Some("c1"), false, &p).unwrap();
    let count = |sql: &str| -> i64 { store.conn().query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(count("SELECT count(*) FROM vector_embeddings"), 6);
    for (table, left) in [
        ("vec_embeddings", 2),
        ("vec_bits_384", 2),
        ("vec_embeddings_768", 2),
        ("vec_bits_768", 2),
        ("vec_embeddings_512", 0),
        ("vec_bits_512", 0),
        ("vec_embeddings_100", 2),
    ] {
        assert_eq!(
            count(&format!("SELECT count(*) FROM {table}")),
            left,
            "{table}"
        );
    }
}

#[test]
fn the_coarse_search_finds_what_the_exact_one_does_on_clustered_vectors() {
    // 3,000 vectors in 60 clusters, as sentence embeddings of a few topics
    // are; queries near stored vectors. The coarse plan must agree with
    // the exact one on nearly all of the ten nearest.
    let mut store = Store::open_in_memory().unwrap();
    let n = 3000;
    let changes: Vec<serde_json::Value> = std::iter::once(content(1, "a"))
        .chain((1..=n).map(|i| fragment(i, 1)))
        .collect();
    apply(
        &mut store,
        None,
        true,
        &page(changes, "c1", false, "snapshot"),
    )
    .unwrap();
    let mut rng = fastrand::Rng::with_seed(7);
    let mut gauss = move || {
        // Box-Muller.
        let (u, v) = (rng.f32().max(1e-9), rng.f32());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    };
    let dims = 384;
    let centres: Vec<Vec<f32>> = (0..60)
        .map(|_| (0..dims).map(|_| gauss()).collect())
        .collect();
    let unit = |v: Vec<f32>| {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / norm).collect::<Vec<f32>>()
    };
    let vectors: Vec<Vec<f32>> = (0..n as usize)
        .map(|i| unit(centres[i % 60].iter().map(|c| c + 0.8 * gauss()).collect()))
        .collect();
    let rows: Vec<NewVector<'_>> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| NewVector {
            kind: SourceKind::Fragment,
            id: i as i64 + 1,
            text_hash: "h",
            vector: v,
        })
        .collect();
    store.put_vectors("m", &rows).unwrap();
    let mut agree = 0;
    let queries = 30;
    for q in 0..queries {
        let query = unit(vectors[q * 97].iter().map(|x| x + 0.05 * gauss()).collect());
        let ids = |plan| -> Vec<i64> {
            store
                .nearest_with("m", &query, SourceKind::Fragment, 10, plan)
                .unwrap()
                .into_iter()
                .flatten()
                .map(|h| h.id)
                .collect()
        };
        let exact = ids(SearchPlan::Exact);
        let coarse = ids(SearchPlan::Coarse {
            candidates: SearchPlan::candidates(10),
        });
        assert_eq!((exact.len(), coarse.len()), (10, 10));
        assert_eq!(exact[0], coarse[0], "the nearest is found");
        agree += coarse.iter().filter(|id| exact.contains(id)).count();
    }
    let recall = agree as f64 / (queries * 10) as f64;
    assert!(recall >= 0.95, "recall@10 {recall}");
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
