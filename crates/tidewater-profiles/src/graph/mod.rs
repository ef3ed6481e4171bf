//! The identity graph: source records linked by shared identifiers into customers, kept
//! up to date record by record over a [`GraphStore`].

mod change;
mod config;
mod error;
mod identity;
mod ids;
mod redb_store;
mod store;

#[cfg(test)]
mod tests;

pub use change::{GraphChange, GuardrailReport};
pub use config::GraphConfig;
pub use error::GraphError;
pub use identity::IdentityGraph;
pub use ids::{CustomerId, ParseCustomerIdError, RecordId};
pub use redb_store::{create_graph_tables, RedbReader, RedbStore, RedbStoreError};
pub use store::{Counter, CustomerInfo, GraphStore, MemoryStore, RecordEntry};
