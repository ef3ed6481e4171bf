//! The vocabulary every Tidewater crate shares: the events that flow through the log
//! (documents now; change events later) and how errors are classified.
#![warn(missing_docs)]

pub mod document;
pub mod error;
pub mod time;

pub use document::{content_hash, DocumentEvent, DocumentFormat, DocumentOp};
pub use error::{ErrorDomain, RetryHint};
