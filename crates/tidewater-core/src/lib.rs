//! The vocabulary every Tidewater crate shares: the events that flow through the log
//! (documents, conversations and feedback) and how errors are classified.
#![warn(missing_docs)]

pub mod conversation;
pub mod document;
pub mod error;
pub mod http_error;
pub mod time;

pub use conversation::{
    ChatMessage, Citation, ConversationEvent, ConversationStatus, FeedbackEvent, Latency, Rating,
    CONVERSATIONS_TOPIC, FEEDBACK_TOPIC,
};
pub use document::{content_hash, DocumentEvent, DocumentFormat, DocumentOp};
pub use error::{ErrorDomain, RetryHint};
