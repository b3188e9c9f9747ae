//! Rows 7b–7c: the store's nearest-neighbour search over 384-dimensional
//! vectors, the binary-quantised coarse scan re-ranked with the float
//! vectors (what `search` does above `EXACT_SEARCH_LIMIT` vectors) next to
//! the exact scan of every float vector, in the same run on the same store,
//! with the recall@10 of the coarse plan against the exact one; and where
//! the two cost the same (the limit's measurement).

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use local_agent::embed::HashedNgrams;
use local_agent::store::{NewVector, SearchPlan, SourceKind, Store};

use crate::Sizes;
use crate::report::{Row, Target};
use crate::stats::{Figure, Latencies, median};

const DIMS: usize = 384;
const K: usize = 10;

/// Unit vectors in clusters, as sentence embeddings of many topics are:
/// `n` vectors around `n / 100` centres (seeded).
fn clustered(n: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut gauss = move || {
        // Box-Muller.
        let (u, v) = (rng.f32().max(1e-9), rng.f32());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    };
    let centres: Vec<Vec<f32>> = (0..(n / 100).max(1))
        .map(|_| (0..DIMS).map(|_| gauss()).collect())
        .collect();
    (0..n)
        .map(|i| {
            let c = &centres[i % centres.len()];
            unit(c.iter().map(|x| x + 0.8 * gauss()).collect())
        })
        .collect()
}

fn unit(v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

/// A store of `vectors` as fragments 1..=n of model `m`.
fn store_with(path: &Path, vectors: &[Vec<f32>]) -> Result<Store> {
    let mut store = Store::open(path)?;
    {
        let tx = store.conn().unchecked_transaction()?;
        let mut insert = tx.prepare(
            "INSERT INTO content_fragments (id, native_text, body_text, fragment_type)
             VALUES (?1, 'x', '', 'sentence')",
        )?;
        for i in 1..=vectors.len() {
            insert.execute([i as i64])?;
        }
        drop(insert);
        tx.commit()?;
    }
    for (start, chunk) in vectors.chunks(10_000).enumerate() {
        let rows: Vec<NewVector<'_>> = chunk
            .iter()
            .enumerate()
            .map(|(i, v)| NewVector {
                kind: SourceKind::Fragment,
                id: (start * 10_000 + i + 1) as i64,
                text_hash: "h",
                vector: v,
            })
            .collect();
        store.put_vectors("m", &rows)?;
    }
    Ok(store)
}

fn ids(store: &Store, query: &[f32], plan: SearchPlan) -> Result<Vec<i64>> {
    Ok(store
        .nearest_with("m", query, SourceKind::Fragment, K, plan)?
        .into_iter()
        .flatten()
        .map(|h| h.id)
        .collect())
}

/// Exact and coarse over one store: their latency figures and the coarse
/// plan's recall@10.
fn compare(
    store: &Store,
    queries: &[Vec<f32>],
    reps: usize,
    candidates: usize,
) -> Result<(Figure, Figure, f64)> {
    let coarse_plan = SearchPlan::Coarse { candidates };
    let mut coarse = Figure::named(format!(
        "bit[384] coarse scan, {candidates} candidates re-ranked by float distance"
    ));
    let mut exact = Figure::named("exact KNN over every float vector (vec0 float[384])");
    let (mut cl, mut el) = (Latencies::default(), Latencies::default());
    let (mut found, mut wanted) = (0usize, 0usize);
    for rep in 0..=reps {
        let (mut c_ms, mut e_ms) = (Vec::new(), Vec::new());
        // Interleaved, so that both see the same state of the caches.
        for q in queries {
            let t = Instant::now();
            let truth = ids(store, q, SearchPlan::Exact)?;
            e_ms.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            let got = ids(store, q, coarse_plan)?;
            c_ms.push(t.elapsed().as_secs_f64() * 1e3);
            anyhow::ensure!(truth.len() == K && got.len() == K, "fewer than {K} found");
            if rep == 0 {
                found += got.iter().filter(|id| truth.contains(id)).count();
                wanted += K;
            }
        }
        if rep > 0 {
            coarse.runs.push(median(&c_ms));
            cl.add(&c_ms);
            exact.runs.push(median(&e_ms));
            el.add(&e_ms);
        }
    }
    cl.fill(&mut coarse);
    el.fill(&mut exact);
    Ok((coarse, exact, found as f64 / wanted as f64))
}

/// Latency and recall of the coarse plan at other candidate counts than
/// the default, over the first 50 queries: sqlite-vec 0.1.9 selects a
/// KNN's k best of each chunk by k passes over it, so the coarse scan's
/// cost grows with the candidates re-ranked, and recall with it.
fn sweep(store: &Store, queries: &[Vec<f32>]) -> Result<String> {
    let queries = &queries[..queries.len().min(50)];
    let mut parts = Vec::new();
    for candidates in [20, 40, 60, 80, 100, 200] {
        let (coarse, _, recall) = compare(store, queries, 1, candidates)?;
        parts.push(format!(
            "{candidates}: {:.2} ms, recall {recall:.3}",
            coarse.median()
        ));
    }
    Ok(format!(
        "coarse p50 and recall@10 by candidates re-ranked: {}",
        parts.join("; ")
    ))
}

pub fn rows(work: &Path, sizes: &Sizes) -> Result<Vec<Row>> {
    let n = sizes.vectors;
    let candidates = SearchPlan::candidates(K);
    let mut rows = Vec::new();

    // 7b: clustered dense vectors, as a sentence-embedding model makes.
    let vectors = clustered(n, 11);
    let started = Instant::now();
    let store = store_with(&work.join("vector-search.db"), &vectors)?;
    let load_s = started.elapsed().as_secs_f64();
    // Queries near stored vectors (a text close to one stored).
    let mut rng = fastrand::Rng::with_seed(5);
    let queries: Vec<Vec<f32>> = (0..sizes.searches)
        .map(|_| {
            let base = &vectors[rng.usize(..n)];
            unit(base.iter().map(|x| x + 0.03 * (rng.f32() - 0.5)).collect())
        })
        .collect();
    let (coarse, exact, recall) = compare(&store, &queries, sizes.reps, candidates)?;
    rows.push(
        Row::new(
            "7b",
            format!(
                "Search: top-{K} over {n} clustered unit vectors of 384 dimensions, {} queries: \
                 binary coarse scan + re-rank vs exact",
                sizes.searches
            ),
            "ms",
            false,
            coarse,
            exact,
            Some(Target::MedianBelowMs(15.0)),
        )
        .note(format!(
            "recall@10 of the coarse plan against the exact one: {recall:.3} (target ≥ 0.95)"
        ))
        .note(format!(
            "stored {n} vectors with their bits in {load_s:.1} s"
        ))
        .note(sweep(&store, &queries)?),
    );
    drop(store);

    // 7c: the built-in n-gram embedder's vectors, sparse rather than dense.
    let texts: Vec<String> = (0..n).map(crate::agent::text).collect();
    let vectors: Vec<Vec<f32>> = texts.iter().map(|t| HashedNgrams.vector(t)).collect();
    let store = store_with(&work.join("vector-search-ngrams.db"), &vectors)?;
    let queries: Vec<Vec<f32>> = (0..sizes.searches)
        .map(|i| HashedNgrams.vector(&crate::agent::text(i * 7919 + 3)))
        .collect();
    let (coarse, exact, recall) = compare(&store, &queries, sizes.reps, candidates)?;
    rows.push(
        Row::new(
            "7c",
            format!(
                "Search: top-{K} over {n} vectors of the built-in n-gram embedder, {} queries: \
                 binary coarse scan + re-rank vs exact",
                sizes.searches
            ),
            "ms",
            false,
            coarse,
            exact,
            None,
        )
        .note(format!(
            "recall@10 of the coarse plan against the exact one: {recall:.3}"
        ))
        .note(sweep(&store, &queries)?),
    );
    drop(store);

    // 7d: where exact and coarse cost the same, for EXACT_SEARCH_LIMIT.
    let mut notes = Vec::new();
    for size in [2_000, 5_000, 10_000, 20_000, 50_000] {
        if size > n {
            break;
        }
        let vectors = clustered(size, 13);
        let path = work.join(format!("vector-search-{size}.db"));
        let store = store_with(&path, &vectors)?;
        let queries: Vec<Vec<f32>> = (0..50).map(|i| vectors[i * 37 % size].clone()).collect();
        let (coarse, exact, recall) = compare(&store, &queries, 1, candidates)?;
        notes.push(format!(
            "{size}: exact {:.2} ms, coarse {:.2} ms (recall {recall:.2})",
            exact.median(),
            coarse.median()
        ));
        drop(store);
        std::fs::remove_file(&path).ok();
    }
    if let Some(last) = rows.last_mut() {
        last.notes.push(format!(
            "exact vs coarse p50 by collection size: {}",
            notes.join("; ")
        ));
    }
    Ok(rows)
}
