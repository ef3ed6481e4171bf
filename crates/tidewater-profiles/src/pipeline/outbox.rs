//! The profile-change outbox: every profile a batch rewrites or removes is recorded in
//! the batch's own transaction, then published to the output topic after the commit and
//! marked published only once the log acknowledged it. A crash between the two publishes
//! it again on the next start (at least once): consumers see the latest profile per key
//! (the customer id), so a repeat changes nothing for them.

use std::sync::Arc;

use parking_lot::Mutex;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde_json::json;
use tidewater_log::{Log, NewRecord};

use super::state::PROFILES;
use crate::error::ProfilesError;
use crate::graph::CustomerId;

/// Sequence → (customer id, profile JSON or a removal marker).
const OUTBOX: TableDefinition<u64, (&str, &[u8])> = TableDefinition::new("profiles_outbox");
/// `next`: the next sequence; `published`: every sequence below it is on the topic.
const OUTBOX_META: TableDefinition<&str, u64> = TableDefinition::new("profiles_outbox_meta");

/// Records the current profile of each customer in `updated`, and a removal for each in
/// `removed`, inside the batch's transaction.
pub(crate) fn record(
    txn: &WriteTransaction,
    updated: &[CustomerId],
    removed: &[CustomerId],
) -> Result<(), ProfilesError> {
    if updated.is_empty() && removed.is_empty() {
        return Ok(());
    }
    let profiles = txn.open_table(PROFILES)?;
    let mut outbox = txn.open_table(OUTBOX)?;
    let mut meta = txn.open_table(OUTBOX_META)?;
    let mut next = meta.get("next")?.map(|v| v.value()).unwrap_or(0);
    for customer in updated {
        if let Some(profile) = profiles.get(customer.get())? {
            outbox.insert(next, (customer.to_string().as_str(), profile.value()))?;
            next += 1;
        }
    }
    for customer in removed {
        let marker = json!({"customer_id": customer.to_string(), "removed": true}).to_string();
        outbox.insert(next, (customer.to_string().as_str(), marker.as_bytes()))?;
        next += 1;
    }
    meta.insert("next", next)?;
    Ok(())
}

/// Publishes recorded profile changes to a topic.
pub(crate) struct Publisher {
    pub(crate) log: Arc<dyn Log>,
    pub(crate) topic: String,
    /// Serialises publication so changes go out in sequence order.
    pub(crate) lock: Mutex<()>,
}

impl Publisher {
    /// Appends every recorded change not yet published, then marks them published.
    pub(crate) fn publish(&self, db: &Database) -> Result<usize, ProfilesError> {
        let _guard = self.lock.lock();
        let (published, pending) = {
            let txn = db.begin_read()?;
            let published = match txn.open_table(OUTBOX_META) {
                Ok(meta) => meta.get("published")?.map(|v| v.value()).unwrap_or(0),
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
                Err(e) => return Err(e.into()),
            };
            let outbox = txn.open_table(OUTBOX)?;
            let mut pending = Vec::new();
            for entry in outbox.range(published..)? {
                let (seq, value) = entry?;
                let (customer, body) = value.value();
                pending.push((seq.value(), customer.to_owned(), body.to_vec()));
            }
            (published, pending)
        };
        let Some(last) = pending.last().map(|(seq, _, _)| *seq) else {
            return Ok(0);
        };
        let now = tidewater_core::time::now_ms();
        let records = pending
            .iter()
            .map(|(_, customer, body)| NewRecord {
                key: Some(customer.clone().into_bytes()),
                value: body.clone(),
                timestamp_ms: now,
            })
            .collect();
        self.log.append(&self.topic, records)?;
        let txn = db.begin_write()?;
        {
            let mut meta = txn.open_table(OUTBOX_META)?;
            meta.insert("published", last.max(published) + 1)?;
            // Published entries are no longer needed.
            let mut outbox = txn.open_table(OUTBOX)?;
            outbox.retain_in(..=last, |_, _| false)?;
        }
        txn.commit()?;
        Ok(pending.len())
    }
}
