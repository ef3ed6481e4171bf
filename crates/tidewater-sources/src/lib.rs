//! Sources turn the outside world into document events and hand them to a
//! writer (`tidewater_core::EventWriter`; in a running engine: an append to the durable log).
//!
//! - [`sink`]: the seam between a source and whatever makes its events durable.
//! - [`files`]: the file source — a full listing of a folder, then a watcher for
//!   creations, edits, renames and deletions, with a periodic re-listing as a safety net.
//! - [`kafka`]: Kafka topics as sources — their settings and what one record becomes
//!   (the runtime reads the topics).
#![warn(missing_docs)]
#![deny(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod files;
pub mod kafka;

pub use files::{relative_doc_id, FileSource, FilesConfig, ScanReport, SourceError};
pub use kafka::KafkaSourceConfig;
