//! The local backend: a BERT-family sentence model (all-MiniLM-L6-v2 by default) run
//! in-process by candle, mean-pooled and L2-normalised like sentence-transformers.

mod batching;
mod embedder;

pub use embedder::CandleEmbedder;
