//! Change data capture: the change-event model, the Debezium JSON parser and the
//! PostgreSQL logical-decoding source ([`postgres`]).
//!
//! [`ChangeEvent`] is the one shape every database change takes inside Tidewater, whether
//! it arrived as a Debezium record (through [`parse_debezium`] or
//! [`parse_debezium_value`]) or from a native source such as PostgreSQL logical decoding.
//! Events serialise to JSON with serde so they can be stored in the log as they are.
#![warn(missing_docs)]

mod debezium;
mod encode;
mod error;
mod event;
mod json;
pub mod postgres;
mod source;

pub use debezium::{parse_debezium, parse_debezium_value};
pub use encode::to_debezium;
pub use error::CdcError;
pub use event::{
    ChangeEvent, Connector, Op, Parsed, SourceInfo, SourcePosition, TransactionMarker,
    TransactionStatus,
};
pub use json::canonical_json;
pub use postgres::{PostgresConfig, PostgresSource};
