//! The merged profile document and the stored source rows it is computed from.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::graph::CustomerId;

/// The latest state of one source row: its `after` image and when that change happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredRow {
    /// The row's columns after its latest change.
    pub after: Map<String, Value>,
    /// When the latest change happened at the source, in milliseconds since the epoch.
    pub event_time_ms: i64,
}

/// One customer's merged view across all source tables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The customer.
    pub customer_id: CustomerId,
    /// Attribute name → the value chosen by the attribute's merge policy.
    pub attributes: BTreeMap<String, Value>,
    /// Attribute name → where the chosen value came from (for a collected list, the
    /// contributor with the latest change).
    pub provenance: BTreeMap<String, Provenance>,
    /// The customer's identity records (rows of non-child tables), sorted.
    pub records: Vec<RecordRef>,
    /// Aggregate name → value, over the child rows that name the customer.
    pub aggregates: BTreeMap<String, Value>,
    /// Every identifier the customer's records hold, as `namespace:value`, sorted.
    pub identifiers: Vec<String>,
    /// The latest event time among the customer's records and child rows.
    pub updated_at_ms: i64,
}

/// Where an attribute's value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// The source table.
    pub table: String,
    /// The row's key (canonical JSON of its primary-key columns).
    pub key: String,
    /// When the row last changed.
    pub event_time_ms: i64,
}

/// A source row, by table and key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordRef {
    /// The source table.
    pub table: String,
    /// The row's key (canonical JSON of its primary-key columns).
    pub key: String,
}
