//! Test fixtures: a deterministic bag-of-words embedder and a knowledge pipeline over an
//! embedded log in a temporary directory.
#![allow(dead_code)]

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tidewater_core::{content_hash, DocumentEvent, DocumentFormat, DocumentOp};
use tidewater_embed::{EmbedError, Embedder};
use tidewater_engine::EngineConfig;
use tidewater_knowledge::{Knowledge, KnowledgeConfig};
use tidewater_log::{EmbeddedLog, Log};
use tidewater_metrics::Metrics;

/// Words hashed into 64 dimensions, L2-normalised: texts sharing words are close.
pub struct WordHashEmbedder;

impl Embedder for WordHashEmbedder {
    fn model_id(&self) -> &str {
        "word-hash-64"
    }
    fn dimension(&self) -> usize {
        64
    }
    fn max_tokens(&self) -> usize {
        512
    }
    fn count_tokens(&self, text: &str) -> usize {
        text.split_whitespace().count() + 2
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(texts.iter().map(|t| word_hash_vector(t)).collect())
    }
}

pub fn word_hash_vector(text: &str) -> Vec<f32> {
    let mut v = vec![0f32; 64];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let h = blake3::hash(word.to_lowercase().as_bytes());
        v[h.as_bytes()[0] as usize % 64] += 1.0;
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
    v.iter().map(|x| x / norm).collect()
}

pub struct Fixture {
    pub log: Arc<dyn Log>,
    pub knowledge: Arc<Knowledge>,
}

/// Wraps an embedder and counts the texts it embeds; an optional hook runs before each
/// call (to hold it, say).
pub struct CountingEmbedder<E> {
    pub inner: E,
    pub texts: AtomicUsize,
    before_embed: Option<Box<dyn Fn() + Send + Sync>>,
}

impl<E> CountingEmbedder<E> {
    pub fn new(inner: E) -> Self {
        Self {
            inner,
            texts: AtomicUsize::new(0),
            before_embed: None,
        }
    }

    pub fn with_hook(inner: E, hook: impl Fn() + Send + Sync + 'static) -> Self {
        Self {
            before_embed: Some(Box::new(hook)),
            ..Self::new(inner)
        }
    }

    pub fn count(&self) -> usize {
        self.texts.load(Ordering::SeqCst)
    }
}

impl<E: Embedder> Embedder for CountingEmbedder<E> {
    fn model_id(&self) -> &str {
        self.inner.model_id()
    }
    fn dimension(&self) -> usize {
        self.inner.dimension()
    }
    fn max_tokens(&self) -> usize {
        self.inner.max_tokens()
    }
    fn count_tokens(&self, text: &str) -> usize {
        self.inner.count_tokens(text)
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if let Some(hook) = &self.before_embed {
            hook();
        }
        self.texts.fetch_add(texts.len(), Ordering::SeqCst);
        self.inner.embed(texts)
    }
}

pub fn start(dir: &Path, embedder: Arc<dyn Embedder>) -> Fixture {
    let log: Arc<dyn Log> = EmbeddedLog::open(dir.join("log"), Default::default()).unwrap();
    start_with(dir, Arc::clone(&log), KnowledgeConfig::default(), embedder)
}

/// A knowledge pipeline with its data under `dir/knowledge`, on `log`, started.
pub fn start_with(
    dir: &Path,
    log: Arc<dyn Log>,
    config: KnowledgeConfig,
    embedder: Arc<dyn Embedder>,
) -> Fixture {
    let knowledge = Knowledge::open(
        &dir.join("knowledge"),
        config,
        embedder,
        Arc::clone(&log),
        Arc::new(Metrics::default()),
    )
    .unwrap();
    knowledge.start(fast_retries()).unwrap();
    Fixture { log, knowledge }
}

/// The engine's defaults with short back-offs, so tests do not wait on retries.
pub fn fast_retries() -> EngineConfig {
    EngineConfig {
        retry_backoff_initial: Duration::from_millis(50),
        retry_backoff_max: Duration::from_millis(500),
        ..EngineConfig::default()
    }
}

pub fn upsert(doc_id: &str, text: &str) -> DocumentEvent {
    upsert_bytes(doc_id, text.as_bytes(), DocumentFormat::Text)
}

pub fn upsert_bytes(doc_id: &str, body: &[u8], format: DocumentFormat) -> DocumentEvent {
    DocumentEvent {
        op: DocumentOp::Upsert,
        doc_id: doc_id.into(),
        source: "api".into(),
        format,
        metadata: Default::default(),
        content_hash: Some(content_hash(body)),
        observed_at_ms: tidewater_core::time::now_ms(),
        body: body.to_vec(),
    }
}

pub fn delete(doc_id: &str) -> DocumentEvent {
    DocumentEvent {
        op: DocumentOp::Delete,
        body: Vec::new(),
        content_hash: None,
        ..upsert(doc_id, "")
    }
}

impl Fixture {
    pub fn write(&self, events: &[DocumentEvent]) {
        self.knowledge.writer().write(events).unwrap();
    }
    pub fn settle(&self) {
        assert!(
            self.knowledge
                .wait_caught_up(Duration::from_secs(120))
                .unwrap(),
            "pipeline did not catch up"
        );
    }
}

/// A long document of distinct paragraphs (deterministic).
pub fn long_document(paragraphs: usize) -> Vec<String> {
    const WORDS: &[&str] = &[
        "river", "harbour", "tide", "lantern", "granite", "orchard", "compass", "meadow", "signal",
        "copper", "violet", "archive", "ledger", "beacon", "glacier", "thunder", "saffron",
        "quarry", "falcon", "mosaic",
    ];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..paragraphs)
        .map(|p| {
            let sentences = 3 + (next() % 5) as usize;
            let mut text = String::new();
            for s in 0..sentences {
                let words = 8 + (next() % 10) as usize;
                let sentence: Vec<&str> = (0..words)
                    .map(|_| WORDS[(next() % WORDS.len() as u64) as usize])
                    .collect();
                text.push_str(&format!(
                    "Paragraph {p} sentence {s} {}. ",
                    sentence.join(" ")
                ));
            }
            text.trim_end().to_owned()
        })
        .collect()
}
