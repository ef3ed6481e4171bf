//! Tidewater's lake: selected topics written exactly once as date-partitioned Parquet
//! files (zstd), and the fine-tuning export built from them.
//!
//! ```text
//! <lake>/<topic>/date=YYYY-MM-DD/part-p<partition>-<first:020>-<last:020>.parquet
//! ```
//!
//! [`Lake`] runs one thread per topic. A partition's pending records become a batch when
//! `max_rows_per_file` are pending or the oldest has waited `flush_interval`; a batch
//! writes one file per UTC date of its rows. Exactly once, even across `kill -9`: the
//! batch's offset range is committed as an intent before its files are written (hidden
//! temporary name, fsync, rename, fsync the directory), and the offset advances and the
//! intent disappears in one transaction after. A start redoes any intent from the log;
//! the files are a pure function of the records, so the redo lands on the same names with
//! the same bytes. Rows are never dropped: a record that does not parse for its topic is
//! kept with its typed columns null and its value in `_raw`.
//!
//! The layout, the schemas and the protocol are described in `docs/lake-format.md`.
#![warn(missing_docs)]
#![deny(clippy::unwrap_used)]

mod batching;
mod config;
mod error;
mod export;
mod files;
mod lake;
mod schema;
mod state;
mod tables;
mod writer;

pub use config::LakeConfig;
pub use error::LakeError;
pub use export::{export_finetune, ExportReport};
pub use lake::Lake;
pub use schema::{KPIS_TOPIC, PROFILES_TOPIC};
#[doc(hidden)]
pub use writer::CrashPoint;
