//! The candle backend against sentence-transformers: vectors of the reference texts in
//! `fixtures/reference_vectors.json` (made by `bench/reference/make_reference.py` from the
//! same model files) must match, whatever the batching.
//!
//! Needs the model in `default_model_dir()`; without it the tests fail and say to run
//! `scripts/fetch-model.sh` — a silent skip would hide a parity regression.
#![cfg(feature = "candle")]

use std::sync::OnceLock;

use serde::Deserialize;
use tidewater_embed::{default_model_dir, CandleEmbedder, Embedder, LocalModelConfig};

/// The least cosine similarity accepted between a vector and its reference.
const MIN_COSINE: f32 = 0.999;

#[derive(Deserialize)]
struct Reference {
    model: String,
    max_seq_length: usize,
    texts: Vec<String>,
    token_counts: Vec<usize>,
    vectors: Vec<Vec<f32>>,
}

fn reference() -> &'static Reference {
    static REFERENCE: OnceLock<Reference> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let json = include_str!("fixtures/reference_vectors.json");
        serde_json::from_str(json).expect("fixtures/reference_vectors.json parses")
    })
}

/// Loads the model of `default_model_dir()`, failing the test when it is absent.
fn load(cfg: &LocalModelConfig) -> CandleEmbedder {
    CandleEmbedder::load(cfg).unwrap_or_else(|e| {
        panic!(
            "cannot load the model (default dir {}): {e}",
            default_model_dir().display()
        )
    })
}

/// The model, loaded once for all tests of this binary.
fn model() -> &'static CandleEmbedder {
    static MODEL: OnceLock<CandleEmbedder> = OnceLock::new();
    MODEL.get_or_init(|| load(&LocalModelConfig::default()))
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

fn texts() -> Vec<&'static str> {
    reference().texts.iter().map(String::as_str).collect()
}

#[test]
fn vectors_match_sentence_transformers() {
    let reference = reference();
    let model = model();
    assert_eq!(model.model_id(), reference.model);
    assert_eq!(model.max_tokens(), reference.max_seq_length);
    assert_eq!(model.dimension(), reference.vectors[0].len());

    let started = std::time::Instant::now();
    let vectors = model.embed(&texts()).unwrap();
    let elapsed = started.elapsed();
    assert_eq!(vectors.len(), reference.texts.len());

    let mut worst = (f32::INFINITY, 0);
    for (i, (got, want)) in vectors.iter().zip(&reference.vectors).enumerate() {
        assert_eq!(got.len(), want.len());
        let norm = got.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "vector {i} has norm {norm}");
        let c = cosine(got, want);
        if c < worst.0 {
            worst = (c, i);
        }
        assert!(
            c >= MIN_COSINE,
            "text {i} ({:?}…): cosine {c} < {MIN_COSINE}",
            reference.texts[i].chars().take(40).collect::<String>()
        );
    }
    println!(
        "min cosine vs sentence-transformers: {:.7} (text {}); {} texts embedded in {elapsed:?}",
        worst.0,
        worst.1,
        vectors.len()
    );
}

#[test]
fn batching_and_order_do_not_change_vectors() {
    let model = model();
    let texts = texts();
    let one_by_one: Vec<Vec<f32>> = texts
        .iter()
        .map(|t| model.embed(&[t]).unwrap().remove(0))
        .collect();

    // Reversed, with duplicates: the length-sorted batches mix short and long inputs
    // differently, and the results must still come back in input order.
    let mut mixed: Vec<&str> = texts.iter().rev().copied().collect();
    mixed.extend(texts.iter().step_by(3));
    let batched = model.embed(&mixed).unwrap();
    assert_eq!(batched.len(), mixed.len());
    let expected = texts.iter().rev().chain(texts.iter().step_by(3));
    for (got, text) in batched.iter().zip(expected) {
        let i = texts.iter().position(|t| t == text).unwrap();
        let c = cosine(got, &one_by_one[i]);
        assert!(c >= 0.9999, "{text:?}: batched vs alone cosine {c}");
    }
}

#[test]
fn small_batches_and_a_thread_pool_give_the_same_vectors() {
    let cfg = LocalModelConfig {
        batch_size: 3,
        threads: Some(1),
        ..LocalModelConfig::default()
    };
    let small = load(&cfg);
    let texts = texts();
    let a = small.embed(&texts).unwrap();
    let b = model().embed(&texts).unwrap();
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let c = cosine(x, y);
        assert!(c >= 0.9999, "text {i}: cosine {c}");
    }
}

#[test]
fn token_counts_match_the_reference_tokenizer() {
    let reference = reference();
    let model = model();
    for (text, &want) in reference.texts.iter().zip(&reference.token_counts) {
        assert_eq!(model.count_tokens(text), want, "{text:?}");
    }
    // Counting does not truncate: the long texts report more than the model takes.
    assert!(reference
        .token_counts
        .iter()
        .any(|&n| n > model.max_tokens()));
}

#[test]
fn no_texts_give_no_vectors() {
    assert!(model().embed(&[]).unwrap().is_empty());
}
