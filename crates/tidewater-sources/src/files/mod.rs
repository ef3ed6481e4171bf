//! The file source: turns a folder into document events.
//!
//! A [`FileSource`] first lists everything under its root ([`FileSource::scan`]), then
//! watches the tree for creations, edits, renames and deletions ([`FileSource::run`]),
//! re-listing every `relist_interval` as a safety net against missed notifications. What
//! it last delivered per document (content hash, size, mtime) is persisted in a state
//! file after the sink acknowledges, so a restart emits only what changed while it was
//! down — deletions included.

mod config;
mod error;
mod filter;
mod source;
mod state;
mod walk;
mod watch;

pub use config::FilesConfig;
pub use error::SourceError;
pub use filter::relative_doc_id;
pub use source::{FileSource, ScanReport};
