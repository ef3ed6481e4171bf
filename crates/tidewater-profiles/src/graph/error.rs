//! Errors of graph operations.

use tidewater_core::{ErrorDomain, RetryHint};

use super::ids::{CustomerId, RecordId};

/// A graph operation that failed. Either the store failed or the stored graph broke an
/// invariant; bad input never reaches the graph (identifiers are validated on creation).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GraphError {
    /// The store failed.
    #[error("graph store failed to {operation}: {source}")]
    Store {
        /// What the graph was doing, e.g. "read record".
        operation: &'static str,
        /// The store's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A stored record has no customer.
    #[error("record {record} has no customer")]
    RecordWithoutCustomer {
        /// The record.
        record: RecordId,
    },
    /// A customer referenced by a record or an alias is not stored.
    #[error("customer {customer} is referenced but not stored")]
    MissingCustomer {
        /// The customer.
        customer: CustomerId,
    },
    /// Another broken invariant of the stored graph.
    #[error("inconsistent identity graph: {0}")]
    Inconsistent(String),
}

impl GraphError {
    /// Who is at fault: always Tidewater or its state store.
    pub fn domain(&self) -> ErrorDomain {
        ErrorDomain::Internal
    }

    /// Whether retrying may help: a store failure may be transient (the batch is retried),
    /// an inconsistent graph is not.
    pub fn retry_hint(&self) -> RetryHint {
        match self {
            Self::Store { .. } => RetryHint::Retry,
            Self::RecordWithoutCustomer { .. }
            | Self::MissingCustomer { .. }
            | Self::Inconsistent(_) => RetryHint::Fatal,
        }
    }
}

/// Attaches the operation name to a store error.
pub(crate) trait StoreResult<T> {
    fn during(self, operation: &'static str) -> Result<T, GraphError>;
}

impl<T, E: std::error::Error + Send + Sync + 'static> StoreResult<T> for Result<T, E> {
    fn during(self, operation: &'static str) -> Result<T, GraphError> {
        self.map_err(|e| GraphError::Store {
            operation,
            source: Box::new(e),
        })
    }
}
