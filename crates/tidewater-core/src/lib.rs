//! The vocabulary every Tidewater crate shares: the events that flow through the log
//! (documents, conversations and feedback), how errors are classified, the event-time
//! policy every event-time pipeline applies, and the writer every source hands events to.
#![warn(missing_docs)]

pub mod conversation;
pub mod document;
pub mod error;
pub mod event_time;
pub mod http_error;
pub mod redact;
pub mod time;
pub mod writer;

pub use conversation::{
    ChatMessage, Citation, ConversationEvent, ConversationStatus, FeedbackEvent, Latency, Rating,
    CONVERSATIONS_TOPIC, FEEDBACK_TOPIC,
};
pub use document::{content_hash, DocumentEvent, DocumentFormat, DocumentOp};
pub use error::{ErrorDomain, RetryHint};
pub use event_time::{EventTimeError, EventTimePolicy};
pub use writer::{EventWriter, WriteError};
