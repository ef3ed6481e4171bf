//! The local encoder against sentence-transformers: vectors of the reference texts in
//! `fixtures/reference_vectors*.json` (made by `bench/reference/make_reference.py` from the
//! same model files) must match for each shipped model, whatever the batching, and the
//! int8 encoder must stay close to them.
//!
//! Needs the models (`scripts/fetch-model.sh` and `scripts/fetch-model.sh
//! all-mpnet-base-v2`); without them the tests fail and say so — a silent skip would hide
//! a parity regression.
#![cfg(feature = "local")]

use std::path::PathBuf;
use std::sync::OnceLock;

use serde::Deserialize;
use tidewater_embed::{default_model_dir, Embedder, LocalEmbedder, LocalModelConfig, Precision};

/// The least cosine similarity accepted between an f32 vector and its reference.
const MIN_COSINE: f32 = 0.999;
/// The least cosine similarity accepted between an int8 vector and its reference.
const MIN_COSINE_INT8: f32 = 0.99;

#[derive(Deserialize)]
struct Reference {
    model: String,
    max_seq_length: usize,
    texts: Vec<String>,
    token_counts: Vec<usize>,
    vectors: Vec<Vec<f32>>,
}

fn minilm_reference() -> &'static Reference {
    static REFERENCE: OnceLock<Reference> = OnceLock::new();
    REFERENCE.get_or_init(|| parse(include_str!("fixtures/reference_vectors.json")))
}

fn mpnet_reference() -> &'static Reference {
    static REFERENCE: OnceLock<Reference> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        parse(include_str!(
            "fixtures/reference_vectors-all-mpnet-base-v2.json"
        ))
    })
}

fn parse(json: &str) -> Reference {
    serde_json::from_str(json).expect("the reference fixture parses")
}

/// Where `scripts/fetch-model.sh all-mpnet-base-v2` puts MPNet: beside the default model.
fn mpnet_dir() -> PathBuf {
    default_model_dir().with_file_name("all-mpnet-base-v2")
}

/// Loads a model, failing the test when it is absent.
fn load(cfg: &LocalModelConfig) -> LocalEmbedder {
    LocalEmbedder::load(cfg)
        .unwrap_or_else(|e| panic!("cannot load the model: {e} (run scripts/fetch-model.sh)"))
}

/// MiniLM in f32, loaded once for all tests of this binary.
fn minilm() -> &'static LocalEmbedder {
    static MODEL: OnceLock<LocalEmbedder> = OnceLock::new();
    MODEL.get_or_init(|| load(&LocalModelConfig::default()))
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

fn texts(reference: &Reference) -> Vec<&str> {
    reference.texts.iter().map(String::as_str).collect()
}

/// Embeds the reference texts and checks every vector against its reference.
fn check_against(model: &LocalEmbedder, reference: &Reference, min_cosine: f32) {
    assert_eq!(model.max_tokens(), reference.max_seq_length);
    assert_eq!(model.dimension(), reference.vectors[0].len());
    let started = std::time::Instant::now();
    let vectors = model.embed(&texts(reference)).unwrap();
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
            c >= min_cosine,
            "{}: text {i} ({:?}…): cosine {c} < {min_cosine}",
            model.model_id(),
            reference.texts[i].chars().take(40).collect::<String>()
        );
    }
    println!(
        "{}: min cosine vs sentence-transformers {:.7} (text {}); {} texts in {elapsed:?}",
        model.model_id(),
        worst.0,
        worst.1,
        vectors.len()
    );
}

#[test]
fn minilm_vectors_match_sentence_transformers() {
    assert_eq!(minilm().model_id(), minilm_reference().model);
    check_against(minilm(), minilm_reference(), MIN_COSINE);
}

#[test]
fn mpnet_vectors_match_sentence_transformers() {
    let model = load(&LocalModelConfig {
        model_dir: Some(mpnet_dir()),
        ..LocalModelConfig::default()
    });
    assert_eq!(model.model_id(), mpnet_reference().model);
    check_against(&model, mpnet_reference(), MIN_COSINE);
    // MPNet's tokenizer counts like sentence-transformers' too.
    for (text, &want) in mpnet_reference()
        .texts
        .iter()
        .zip(&mpnet_reference().token_counts)
    {
        assert_eq!(model.count_tokens(text), want, "{text:?}");
    }
}

#[test]
fn int8_vectors_stay_close_to_sentence_transformers() {
    let model = load(&LocalModelConfig {
        precision: Precision::Int8,
        ..LocalModelConfig::default()
    });
    assert_eq!(
        model.model_id(),
        format!("{}-int8", minilm_reference().model)
    );
    check_against(&model, minilm_reference(), MIN_COSINE_INT8);
}

#[test]
fn batching_and_order_do_not_change_vectors() {
    // Two threads, so that a large call runs passes side by side on any machine, while a
    // single text runs one pass across both.
    let model = &load(&LocalModelConfig {
        threads: Some(2),
        ..LocalModelConfig::default()
    });
    let texts = texts(minilm_reference());
    let one_by_one: Vec<Vec<f32>> = texts
        .iter()
        .map(|t| model.embed(&[t]).unwrap().remove(0))
        .collect();

    // Reversed, with duplicates, and enough copies (about 8,800 tokens) to need several
    // passes: the results must come back in input order, equal to each text alone.
    let mut mixed: Vec<&str> = texts.iter().rev().copied().collect();
    mixed.extend(texts.iter().step_by(3));
    let expected: Vec<&str> = mixed
        .iter()
        .cycle()
        .take(mixed.len() * 5)
        .copied()
        .collect();
    let batched = model.embed(&expected).unwrap();
    assert_eq!(batched.len(), expected.len());
    for (got, text) in batched.iter().zip(&expected) {
        let i = texts.iter().position(|t| t == text).unwrap();
        let c = cosine(got, &one_by_one[i]);
        assert!(c >= 0.9999, "{text:?}: batched vs alone cosine {c}");
    }
}

#[test]
fn one_thread_gives_the_same_vectors() {
    let cfg = LocalModelConfig {
        threads: Some(1),
        ..LocalModelConfig::default()
    };
    let single = load(&cfg);
    let texts = texts(minilm_reference());
    let a = single.embed(&texts).unwrap();
    let b = minilm().embed(&texts).unwrap();
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let c = cosine(x, y);
        assert!(c >= 0.9999, "text {i}: cosine {c}");
    }
}

#[test]
fn token_counts_match_the_reference_tokenizer() {
    let reference = minilm_reference();
    let model = minilm();
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
    assert!(minilm().embed(&[]).unwrap().is_empty());
}

#[test]
fn a_model_of_an_unknown_architecture_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    for file in ["tokenizer.json", "model.safetensors"] {
        std::fs::copy(default_model_dir().join(file), tmp.path().join(file)).unwrap();
    }
    std::fs::write(
        tmp.path().join("config.json"),
        r#"{"model_type": "llama", "hidden_size": 384, "num_attention_heads": 12,
            "num_hidden_layers": 6, "intermediate_size": 1536, "vocab_size": 30522,
            "max_position_embeddings": 512}"#,
    )
    .unwrap();
    let err = LocalEmbedder::load(&LocalModelConfig {
        model_dir: Some(tmp.path().to_path_buf()),
        ..LocalModelConfig::default()
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("llama") && err.contains("config.json"),
        "{err}"
    );
}
