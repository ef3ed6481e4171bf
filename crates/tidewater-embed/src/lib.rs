//! Sentence embeddings: the [`Embedder`] trait, the local backend (all-MiniLM-L6-v2,
//! all-mpnet-base-v2 and other BERT-family sentence models on Tidewater's own CPU encoder,
//! f32 or int8; candle on a CUDA device) and an OpenAI-compatible `/v1/embeddings` backend
//! with bounded concurrency, timeouts and retries.
//!
//! [`build_embedder`] turns an [`EmbedderConfig`] into a shared `Arc<dyn Embedder>`.
#![warn(missing_docs)]

#[cfg(feature = "candle")]
pub mod candle;
pub mod config;
#[cfg(feature = "local")]
mod encoder;
pub mod error;
#[cfg(feature = "local")]
mod local;
pub mod model_dir;
pub mod openai;
#[cfg(feature = "local")]
mod tokenize;

#[cfg(feature = "candle")]
pub use candle::CandleEmbedder;
pub use config::{build_embedder, EmbedderConfig, LocalModelConfig, OpenAiConfig, Precision};
pub use error::EmbedError;
#[cfg(feature = "local")]
pub use local::LocalEmbedder;
pub use model_dir::{cache_dir, default_model_dir};
pub use openai::OpenAiEmbedder;

/// Turns texts into vectors.
///
/// Blocking; callable from many threads. Vectors are returned in input order, each of
/// [`Embedder::dimension`] floats.
pub trait Embedder: Send + Sync {
    /// A stable name of the model (part of the embedding cache key).
    fn model_id(&self) -> &str;
    /// Length of every vector.
    fn dimension(&self) -> usize;
    /// Most tokens one input may have, special tokens included; longer inputs are truncated
    /// by the model, so callers split text to fit.
    fn max_tokens(&self) -> usize;
    /// Tokens `text` has for this model, special tokens included.
    fn count_tokens(&self, text: &str) -> usize;
    /// Embeds `texts`.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError>;
}
