//! PostgreSQL change data capture through logical decoding with the `wal2json` output
//! plugin (format version 2), read with the SQL functions `pg_logical_slot_peek_changes`
//! and `pg_replication_slot_advance` rather than the replication protocol.
//!
//! A [`PostgresSource`] takes a consistent snapshot of the configured tables, then streams
//! every change committed after it, hands the events to a writer (`tidewater_core::EventWriter`) in commit order,
//! and only then moves the replication slot forward. How the snapshot and the stream meet
//! without losing or doubling a change is explained in `source.rs`; the progress file's
//! format in `state.rs`.

mod config;
mod error;
mod setup;
mod snapshot;
mod source;
mod state;
mod wal2json;

pub use config::PostgresConfig;
pub use error::PostgresError;
pub use source::PostgresSource;
pub use state::{Lsn, TxidSnapshot};
