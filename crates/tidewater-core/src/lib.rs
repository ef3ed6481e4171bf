//! The vocabulary every Tidewater crate shares: the events that flow through the log
//! (documents, conversations and feedback), how errors are classified, and the
//! event-time policy every event-time pipeline applies.
#![warn(missing_docs)]

pub mod conversation;
pub mod document;
pub mod error;
pub mod event_time;
pub mod http_error;
pub mod redact;
pub mod time;

pub use conversation::{
    ChatMessage, Citation, ConversationEvent, ConversationStatus, FeedbackEvent, Latency, Rating,
    CONVERSATIONS_TOPIC, FEEDBACK_TOPIC,
};
pub use document::{content_hash, DocumentEvent, DocumentFormat, DocumentOp};
pub use error::{ErrorDomain, RetryHint};
pub use event_time::{EventTimeError, EventTimePolicy};
