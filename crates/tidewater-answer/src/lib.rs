//! Answers to questions about the indexed documents: the prompt template filled with the
//! retrieved chunks and the customer's profile ([`build_prompt`]), a client of
//! OpenAI-compatible chat-completion endpoints, whole or streamed ([`ChatClient`]), and
//! extractive answers for when no language model is configured ([`extractive_answer`]).
//!
//! Retrieval, profiles and HTTP serving belong to the crates that call this one.
#![warn(missing_docs)]

pub mod client;
pub mod config;
pub mod error;
pub mod extractive;
pub mod prompt;
mod retry;
mod sse;
mod wire;

pub use client::{ChatClient, TokenStream};
pub use config::{AnswerConfig, LlmConfig, PromptTemplate};
pub use error::{Awaited, LlmError, Oversized};
pub use extractive::{extractive_answer, Extractive, NO_ANSWER};
pub use prompt::{build_prompt, ContextChunk, Prompt};
