//! Profile changes for the output topic: every profile a batch rewrites or removes
//! becomes an entry of the pipeline's [`tidewater_engine::Outbox`], recorded in the
//! batch's own transaction and published exactly once, keyed by customer id.

use redb::{ReadableTable, WriteTransaction};
use serde_json::json;
use tidewater_engine::OutboxEntry;

use super::state::PROFILES;
use crate::error::ProfilesError;
use crate::graph::CustomerId;

/// The current profile of every customer, as read inside `txn`.
pub(crate) fn all_entries(txn: &WriteTransaction) -> Result<Vec<OutboxEntry>, ProfilesError> {
    let now = tidewater_core::time::now_ms();
    let profiles = txn.open_table(PROFILES)?;
    let mut out = Vec::new();
    for row in profiles.iter()? {
        let (customer, profile) = row?;
        out.push(OutboxEntry {
            key: Some(CustomerId::new(customer.value()).to_string().into_bytes()),
            value: profile.value().to_vec(),
            timestamp_ms: now,
        });
    }
    Ok(out)
}

/// The current profile of each customer in `updated`, and a removal marker for each in
/// `removed`, as read inside the batch's transaction.
pub(crate) fn entries(
    txn: &WriteTransaction,
    updated: &[CustomerId],
    removed: &[CustomerId],
) -> Result<Vec<OutboxEntry>, ProfilesError> {
    let now = tidewater_core::time::now_ms();
    let entry = |customer: &CustomerId, value: Vec<u8>| OutboxEntry {
        key: Some(customer.to_string().into_bytes()),
        value,
        timestamp_ms: now,
    };
    let mut out = Vec::with_capacity(updated.len() + removed.len());
    if !updated.is_empty() {
        let profiles = txn.open_table(PROFILES)?;
        for customer in updated {
            if let Some(profile) = profiles.get(customer.get())? {
                out.push(entry(customer, profile.value().to_vec()));
            }
        }
    }
    for customer in removed {
        let marker = json!({"customer_id": customer.to_string(), "removed": true});
        out.push(entry(customer, marker.to_string().into_bytes()));
    }
    Ok(out)
}
