//! candle's BERT as a local engine: the CUDA path of the local backend, and on the CPU a
//! point of comparison for Tidewater's own encoder. Mean-pooled and L2-normalised like
//! sentence-transformers.

mod batching;
mod embedder;

#[cfg(feature = "cuda")]
pub(crate) use embedder::cuda_available;
pub use embedder::CandleEmbedder;
