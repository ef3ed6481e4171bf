//! The remote backend: an OpenAI-compatible `/v1/embeddings` endpoint (TEI, vLLM, Ollama,
//! llama.cpp, OpenAI), called with bounded concurrency, per-request timeouts and retries
//! with jittered exponential back-off.

mod embedder;
mod retry;
mod wire;

pub use embedder::OpenAiEmbedder;
