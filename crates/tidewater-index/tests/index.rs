//! Both indexes against the same expectations, and the HNSW index against the exact one.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tidewater_index::{
    ExactIndex, Hit, IndexConfig, IndexError, Metric, UsearchIndex, VectorIndex,
};

fn random_vector(rng: &mut StdRng, dimension: usize) -> Vec<f32> {
    (0..dimension)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect()
}

fn normalised(mut vector: Vec<f32>) -> Vec<f32> {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    for x in &mut vector {
        *x /= norm;
    }
    vector
}

fn random_unit(rng: &mut StdRng, dimension: usize) -> Vec<f32> {
    normalised(random_vector(rng, dimension))
}

fn usearch(dimension: usize, metric: Metric) -> UsearchIndex {
    let config = IndexConfig {
        metric,
        ..IndexConfig::default()
    };
    UsearchIndex::new(dimension, &config).expect("new usearch index")
}

/// Both implementations, for tests that must hold for either.
fn both(dimension: usize, metric: Metric) -> Vec<(&'static str, Box<dyn VectorIndex>)> {
    vec![
        ("usearch", Box::new(usearch(dimension, metric))),
        (
            "exact",
            Box::new(ExactIndex::new(dimension, metric).expect("new exact index")),
        ),
    ]
}

fn keys(hits: &[Hit]) -> Vec<u64> {
    hits.iter().map(|h| h.key).collect()
}

#[test]
fn upsert_search_remove() {
    for (name, index) in both(3, Metric::Cosine) {
        assert!(index.is_empty());
        index.upsert(1, &[1.0, 0.0, 0.0]).unwrap();
        index.upsert(2, &[0.0, 1.0, 0.0]).unwrap();
        index.upsert(3, &[0.7, 0.7, 0.0]).unwrap();
        assert_eq!(index.len(), 3, "{name}");
        assert!(index.contains(2) && !index.contains(4), "{name}");

        let hits = index.search(&[1.0, 0.1, 0.0], 2, None).unwrap();
        assert_eq!(keys(&hits), vec![1, 3], "{name}");
        assert!(hits[0].score > hits[1].score, "{name}");
        assert!((hits[0].score - 0.995).abs() < 1e-3, "{name}: {hits:?}");

        assert!(index.remove(1).unwrap(), "{name}");
        assert!(!index.remove(1).unwrap(), "{name}");
        assert_eq!(index.len(), 2, "{name}");
        assert!(!index.contains(1), "{name}");
        let hits = index.search(&[1.0, 0.1, 0.0], 5, None).unwrap();
        assert_eq!(keys(&hits), vec![3, 2], "{name}");
        assert!(index.search(&[1.0, 0.0, 0.0], 0, None).unwrap().is_empty());
    }
}

#[test]
fn upsert_of_an_existing_key_replaces_the_vector() {
    for (name, index) in both(2, Metric::Cosine) {
        index.upsert(7, &[1.0, 0.0]).unwrap();
        index.upsert(8, &[0.6, 0.8]).unwrap();
        index.upsert(7, &[0.0, 1.0]).unwrap();
        assert_eq!(index.len(), 2, "{name}");
        let hits = index.search(&[0.0, 1.0], 2, None).unwrap();
        assert_eq!(keys(&hits), vec![7, 8], "{name}");
        assert!((hits[0].score - 1.0).abs() < 1e-5, "{name}: {hits:?}");
    }
}

#[test]
fn search_on_an_empty_index_is_empty() {
    for (name, index) in both(4, Metric::Cosine) {
        assert!(
            index
                .search(&[1.0, 0.0, 0.0, 0.0], 10, None)
                .unwrap()
                .is_empty(),
            "{name}"
        );
    }
}

#[test]
fn wrong_dimension_and_bad_values_are_rejected() {
    for (name, index) in both(3, Metric::Cosine) {
        let err = index.upsert(1, &[1.0, 2.0]).unwrap_err();
        assert!(
            matches!(
                err,
                IndexError::DimensionMismatch {
                    expected: 3,
                    actual: 2
                }
            ),
            "{name}: {err}"
        );
        assert!(err.is_user_error());
        let err = index.search(&[1.0; 4], 1, None).unwrap_err();
        assert!(
            matches!(err, IndexError::DimensionMismatch { .. }),
            "{name}: {err}"
        );
        let err = index.upsert(1, &[1.0, f32::NAN, 0.0]).unwrap_err();
        assert!(
            matches!(err, IndexError::NonFiniteValue { .. }),
            "{name}: {err}"
        );
        assert!(index.is_empty(), "{name}");
    }
    let err = usearch(3, Metric::Cosine)
        .upsert(u64::MAX, &[1.0; 3])
        .unwrap_err();
    assert!(matches!(err, IndexError::ReservedKey { .. }), "{err}");
    assert!(UsearchIndex::new(0, &IndexConfig::default()).is_err());
}

#[test]
fn filter_restricts_results() {
    let mut rng = StdRng::seed_from_u64(7);
    for (name, index) in both(16, Metric::Cosine) {
        for key in 0..500 {
            index.upsert(key, &random_unit(&mut rng, 16)).unwrap();
        }
        let query = random_unit(&mut rng, 16);
        let even = |key: u64| key & 1 == 0;
        let hits = index.search(&query, 10, Some(&even)).unwrap();
        assert_eq!(hits.len(), 10, "{name}");
        assert!(hits.iter().all(|h| h.key & 1 == 0), "{name}: {hits:?}");
        // A filter that matches a single key still finds it.
        let only = |key: u64| key == 123;
        let hits = index.search(&query, 10, Some(&only)).unwrap();
        assert_eq!(keys(&hits), vec![123], "{name}");
        let none = |_: u64| false;
        assert!(
            index.search(&query, 10, Some(&none)).unwrap().is_empty(),
            "{name}"
        );
    }
}

#[test]
fn save_and_load_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(11);
    let vectors: Vec<Vec<f32>> = (0..300).map(|_| random_unit(&mut rng, 32)).collect();
    let queries: Vec<Vec<f32>> = (0..20).map(|_| random_unit(&mut rng, 32)).collect();
    let config = IndexConfig::default();

    let hnsw = UsearchIndex::new(32, &config).unwrap();
    let exact = ExactIndex::new(32, Metric::Cosine).unwrap();
    for (key, vector) in vectors.iter().enumerate() {
        hnsw.upsert(key as u64, vector).unwrap();
        exact.upsert(key as u64, vector).unwrap();
    }
    // Removed keys must stay removed after loading.
    for key in 0..10 {
        hnsw.remove(key).unwrap();
        exact.remove(key).unwrap();
    }
    let hnsw_path = dir.path().join("index.usearch");
    let exact_path = dir.path().join("index.exact");
    hnsw.save(&hnsw_path).unwrap();
    exact.save(&exact_path).unwrap();
    // Saving again replaces the file.
    hnsw.save(&hnsw_path).unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 2, "temporary files left: {leftovers:?}");

    let hnsw_loaded = UsearchIndex::load(&hnsw_path, 32, &config).unwrap();
    let exact_loaded = ExactIndex::load(&exact_path, 32, Metric::Cosine).unwrap();
    assert_eq!(hnsw_loaded.len(), 290);
    assert_eq!(exact_loaded.len(), 290);
    assert!(!hnsw_loaded.contains(3) && hnsw_loaded.contains(30));
    for query in &queries {
        assert_eq!(
            hnsw.search(query, 10, None).unwrap(),
            hnsw_loaded.search(query, 10, None).unwrap()
        );
        assert_eq!(
            exact.search(query, 10, None).unwrap(),
            exact_loaded.search(query, 10, None).unwrap()
        );
    }
    // A loaded index keeps accepting writes.
    hnsw_loaded.upsert(5000, &queries[0]).unwrap();
    assert_eq!(
        hnsw_loaded.search(&queries[0], 1, None).unwrap()[0].key,
        5000
    );
}

#[test]
fn load_rejects_mismatched_or_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.usearch");
    let index = usearch(8, Metric::Cosine);
    index.upsert(1, &[1.0; 8]).unwrap();
    index.save(&path).unwrap();

    let err = UsearchIndex::load(&path, 16, &IndexConfig::default()).unwrap_err();
    assert!(matches!(err, IndexError::IncompatibleFile { .. }), "{err}");
    assert!(err.to_string().contains("8-dimensional"), "{err}");
    let l2 = IndexConfig {
        metric: Metric::L2,
        ..IndexConfig::default()
    };
    let err = UsearchIndex::load(&path, 8, &l2).unwrap_err();
    assert!(matches!(err, IndexError::IncompatibleFile { .. }), "{err}");

    let missing = dir.path().join("missing.usearch");
    match UsearchIndex::load(&missing, 8, &IndexConfig::default()).unwrap_err() {
        IndexError::Io(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
        other => panic!("{other}"),
    }

    let garbage = dir.path().join("garbage.usearch");
    std::fs::write(&garbage, b"not an index at all, just some bytes").unwrap();
    let err = UsearchIndex::load(&garbage, 8, &IndexConfig::default()).unwrap_err();
    assert!(!err.is_user_error(), "{err}");

    let exact_path = dir.path().join("index.exact");
    let exact = ExactIndex::new(8, Metric::Cosine).unwrap();
    exact.upsert(1, &[1.0; 8]).unwrap();
    exact.save(&exact_path).unwrap();
    let err = ExactIndex::load(&exact_path, 8, Metric::L2).unwrap_err();
    assert!(matches!(err, IndexError::IncompatibleFile { .. }), "{err}");
    let bytes = std::fs::read(&exact_path).unwrap();
    std::fs::write(&exact_path, &bytes[..bytes.len() - 3]).unwrap();
    let err = ExactIndex::load(&exact_path, 8, Metric::Cosine).unwrap_err();
    assert!(matches!(err, IndexError::Corrupt { .. }), "{err}");
}

/// The exact index's file format, byte for byte, so that a change to it is noticed.
#[test]
fn exact_index_file_format() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.exact");
    let index = ExactIndex::new(2, Metric::InnerProduct).unwrap();
    index.upsert(9, &[1.0, -2.0]).unwrap();
    index.upsert(3, &[0.5, 0.0]).unwrap();
    index.save(&path).unwrap();
    let mut expected = b"TWEXACT1".to_vec();
    expected.extend(2u32.to_le_bytes());
    expected.push(2);
    expected.extend(2u64.to_le_bytes());
    for (key, vector) in [(3u64, [0.5f32, 0.0]), (9, [1.0, -2.0])] {
        expected.extend(key.to_le_bytes());
        for value in vector {
            expected.extend(value.to_le_bytes());
        }
    }
    assert_eq!(std::fs::read(&path).unwrap(), expected);
}

/// Top-10 recall of the HNSW index against exact search, default settings.
#[test]
fn recall_against_exact_search() {
    const DIMENSION: usize = 64;
    let mut rng = StdRng::seed_from_u64(42);
    let hnsw = usearch(DIMENSION, Metric::Cosine);
    let exact = ExactIndex::new(DIMENSION, Metric::Cosine).unwrap();
    for key in 0..5_000u64 {
        let vector = random_unit(&mut rng, DIMENSION);
        hnsw.upsert(key, &vector).unwrap();
        exact.upsert(key, &vector).unwrap();
    }
    let mut found = 0;
    let queries = 100;
    for _ in 0..queries {
        let query = random_unit(&mut rng, DIMENSION);
        let truth: HashSet<u64> = keys(&exact.search(&query, 10, None).unwrap())
            .into_iter()
            .collect();
        let approximate = hnsw.search(&query, 10, None).unwrap();
        found += approximate
            .iter()
            .filter(|h| truth.contains(&h.key))
            .count();
    }
    let recall = found as f64 / (queries * 10) as f64;
    eprintln!("top-10 recall over {queries} queries: {recall:.3}");
    assert!(recall >= 0.95, "recall {recall}");
}

/// Scores and order agree with the exact index for every metric, on vectors that are not
/// normalised (where the metrics disagree with each other).
#[test]
fn metrics_agree_with_exact_search() {
    const DIMENSION: usize = 8;
    for metric in [Metric::Cosine, Metric::L2, Metric::InnerProduct] {
        let mut rng = StdRng::seed_from_u64(3);
        let hnsw = usearch(DIMENSION, metric);
        let exact = ExactIndex::new(DIMENSION, metric).unwrap();
        for key in 0..200u64 {
            let scale = rng.random_range(0.1f32..3.0);
            let vector: Vec<f32> = random_vector(&mut rng, DIMENSION)
                .into_iter()
                .map(|x| x * scale)
                .collect();
            hnsw.upsert(key, &vector).unwrap();
            exact.upsert(key, &vector).unwrap();
        }
        for _ in 0..20 {
            let query = random_vector(&mut rng, DIMENSION);
            let expected = exact.search(&query, 5, None).unwrap();
            let actual = hnsw.search(&query, 5, None).unwrap();
            assert_eq!(keys(&actual), keys(&expected), "{metric:?}");
            for (a, e) in actual.iter().zip(&expected) {
                let tolerance = 1e-4 * e.score.abs().max(1.0);
                assert!(
                    (a.score - e.score).abs() <= tolerance,
                    "{metric:?}: {a:?} {e:?}"
                );
            }
        }
    }
}

/// Removing and re-adding many keys reuses slots without losing count or results.
#[test]
fn churn_keeps_len_and_results_right() {
    const DIMENSION: usize = 16;
    let mut rng = StdRng::seed_from_u64(5);
    let hnsw = usearch(DIMENSION, Metric::Cosine);
    let exact = ExactIndex::new(DIMENSION, Metric::Cosine).unwrap();
    for key in 0..2_000u64 {
        let vector = random_unit(&mut rng, DIMENSION);
        hnsw.upsert(key, &vector).unwrap();
        exact.upsert(key, &vector).unwrap();
    }
    for round in 0..5u64 {
        // Remove a fifth of the keys, re-add half of them with new vectors, replace others.
        for key in (round..2_000).step_by(5) {
            assert!(hnsw.remove(key).unwrap());
            exact.remove(key).unwrap();
        }
        for key in (round..2_000).step_by(10) {
            let vector = random_unit(&mut rng, DIMENSION);
            hnsw.upsert(key, &vector).unwrap();
            exact.upsert(key, &vector).unwrap();
        }
        for key in (round + 1..2_000).step_by(7) {
            if exact.contains(key) {
                let vector = random_unit(&mut rng, DIMENSION);
                hnsw.upsert(key, &vector).unwrap();
                exact.upsert(key, &vector).unwrap();
            }
        }
        assert_eq!(hnsw.len(), exact.len(), "round {round}");
        for key in 0..2_000 {
            assert_eq!(hnsw.contains(key), exact.contains(key), "key {key}");
        }
    }
    // Removed keys never come back, and the nearest neighbour is found.
    let mut found = 0;
    for _ in 0..50 {
        let query = random_unit(&mut rng, DIMENSION);
        let hits = hnsw.search(&query, 10, None).unwrap();
        assert!(hits.iter().all(|h| exact.contains(h.key)), "{hits:?}");
        let best = exact.search(&query, 1, None).unwrap()[0].key;
        found += usize::from(hits.iter().any(|h| h.key == best));
    }
    assert!(
        found >= 48,
        "nearest neighbour found for {found} of 50 queries"
    );
    // Slots of removed vectors are reused: capacity did not grow past the initial size.
    assert!(hnsw.capacity() <= 4_096, "{}", hnsw.capacity());
}

#[test]
fn capacity_grows_on_demand() {
    let mut rng = StdRng::seed_from_u64(9);
    let index = usearch(4, Metric::L2);
    let initial = index.capacity();
    for key in 0..(initial as u64 * 3) {
        index.upsert(key, &random_vector(&mut rng, 4)).unwrap();
    }
    assert_eq!(index.len(), initial * 3);
    assert!(index.capacity() >= initial * 3);
}

/// Searches from several threads while another thread upserts and removes: no crash, no
/// error, and every hit is a key that was stored at some point.
#[test]
fn concurrent_searches_during_writes() {
    const DIMENSION: usize = 32;
    let index = Arc::new(usearch(DIMENSION, Metric::Cosine));
    let mut rng = StdRng::seed_from_u64(13);
    for key in 0..500u64 {
        index
            .upsert(key, &random_unit(&mut rng, DIMENSION))
            .unwrap();
    }
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let index = Arc::clone(&index);
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut rng = StdRng::seed_from_u64(17);
            // Enough inserts to cross several capacity doublings while searches run.
            for key in 500..5_000u64 {
                index
                    .upsert(key, &random_unit(&mut rng, DIMENSION))
                    .unwrap();
                if key % 3 == 0 {
                    index.remove(key - 250).unwrap();
                }
                if key % 5 == 0 {
                    index
                        .upsert(key / 2, &random_unit(&mut rng, DIMENSION))
                        .unwrap();
                }
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    // More searchers than usearch has scratch contexts on a small machine.
    let searchers: Vec<_> = (0..12)
        .map(|seed| {
            let index = Arc::clone(&index);
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(100 + seed);
                let mut searches = 0;
                while !done.load(Ordering::SeqCst) || searches < 10 {
                    let query = random_unit(&mut rng, DIMENSION);
                    let odd = |key: u64| key % 2 == 1;
                    let filter: Option<&(dyn Fn(u64) -> bool + Sync)> =
                        if searches % 2 == 0 { None } else { Some(&odd) };
                    let hits = index.search(&query, 10, filter).unwrap();
                    assert!(hits.iter().all(|h| h.key < 5_000), "{hits:?}");
                    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
                    searches += 1;
                }
                searches
            })
        })
        .collect();
    writer.join().unwrap();
    let searches: usize = searchers.into_iter().map(|s| s.join().unwrap()).sum();
    assert!(searches >= 120);
    assert!(index.len() > 3_000);
}

/// `upsert_many` (parallel inside the HNSW index) gives the same index as one-by-one
/// upserts: every key present once, replaced vectors replaced, removed slots reused, and
/// recall against exact search as high.
#[test]
fn upsert_many_matches_one_by_one_upserts() {
    const DIMENSION: usize = 64;
    let mut rng = StdRng::seed_from_u64(23);
    for (name, index) in both(DIMENSION, Metric::Cosine) {
        let exact = ExactIndex::new(DIMENSION, Metric::Cosine).unwrap();
        // Batches larger than one lock hold, over a growing index, with replacements of
        // keys from earlier batches and removals whose slots the next batch reuses.
        for batch in 0..6u64 {
            let items: Vec<(u64, Vec<f32>)> = (0..1_000u64)
                .map(|i| (batch * 700 + i, random_unit(&mut rng, DIMENSION)))
                .collect();
            index.upsert_many(&items).unwrap();
            exact.upsert_many(&items).unwrap();
            for key in (batch * 700..batch * 700 + 1_000).step_by(7) {
                assert_eq!(
                    index.remove(key).unwrap(),
                    exact.remove(key).unwrap(),
                    "{name}"
                );
            }
        }
        assert_eq!(index.len(), exact.len(), "{name}");
        let mut found = 0;
        for _ in 0..100 {
            let query = random_unit(&mut rng, DIMENSION);
            let truth: HashSet<u64> = keys(&exact.search(&query, 10, None).unwrap())
                .into_iter()
                .collect();
            let hits = index.search(&query, 10, None).unwrap();
            found += hits.iter().filter(|h| truth.contains(&h.key)).count();
        }
        let recall = found as f64 / 1000.0;
        assert!(recall >= 0.95, "{name}: recall {recall}");
        // A replaced vector is found as itself, with score 1.
        let (key, vector) = (4_200u64, random_unit(&mut rng, DIMENSION));
        index.upsert_many(&[(key, vector.clone())]).unwrap();
        let best = index.search(&vector, 1, None).unwrap()[0];
        assert_eq!(best.key, key, "{name}");
        assert!((best.score - 1.0).abs() < 1e-4, "{name}: {best:?}");
    }
}

#[test]
fn upsert_many_refuses_a_key_twice_and_bad_vectors() {
    let index = usearch(4, Metric::Cosine);
    let err = index
        .upsert_many(&[(1, vec![1.0, 0.0, 0.0, 0.0]), (1, vec![0.0, 1.0, 0.0, 0.0])])
        .unwrap_err();
    assert!(matches!(err, IndexError::DuplicateKey { key: 1 }), "{err}");
    let err = index
        .upsert_many(&[(2, vec![1.0, 0.0, 0.0, 0.0]), (3, vec![1.0, 0.0])])
        .unwrap_err();
    assert!(matches!(err, IndexError::DimensionMismatch { .. }), "{err}");
    // Checked before anything is stored.
    assert!(index.is_empty());
}
