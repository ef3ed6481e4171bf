//! The identity graph's operations: upserting and deleting records, and the merges and
//! splits of customers they cause. The id rules are described in the crate docs.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::change::{GraphChange, GuardrailReport};
use super::config::GraphConfig;
use super::error::{GraphError, StoreResult};
use super::ids::{CustomerId, RecordId};
use super::store::{Counter, CustomerInfo, GraphStore, RecordEntry};
use crate::identifier::Identifier;

/// Longest alias chain followed before the graph is declared inconsistent. Chains are
/// flattened on every merge, so in a consistent graph they have length one.
const MAX_ALIAS_HOPS: usize = 16;

/// The identity graph over a [`GraphStore`].
///
/// Invariant kept by every operation: each customer's members are exactly one connected
/// component of the records linked through their `linked` identifiers; so all records
/// linking through one identifier belong to the same customer.
#[derive(Debug)]
pub struct IdentityGraph<S> {
    store: S,
    config: GraphConfig,
}

impl<S: GraphStore> IdentityGraph<S> {
    /// A graph over `store` (empty or holding a graph written by this type).
    pub fn new(store: S, config: GraphConfig) -> Self {
        Self { store, config }
    }

    /// The guardrails in force.
    pub fn config(&self) -> &GraphConfig {
        &self.config
    }

    /// The underlying store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Gives the store back.
    pub fn into_store(self) -> S {
        self.store
    }

    /// Inserts a record, or replaces an existing record's identifiers.
    ///
    /// Applied in two steps: first the links through identifiers the record no longer
    /// holds are removed (which may split its customer), then links through its new
    /// identifiers are added in identifier order (which may merge customers), each subject
    /// to the guardrails.
    pub fn upsert_record(
        &mut self,
        record: RecordId,
        identifiers: BTreeSet<Identifier>,
    ) -> Result<GraphChange, GraphError> {
        let mut change = GraphChange::default();
        let old = self.store.record(&record).during("read record")?;

        // Step 1: drop links; the record stays in (a part of) its customer.
        let (seq, mut linked, current) = match old {
            Some(entry) => {
                let customer = self.customer_of_required(&record)?;
                let keep: BTreeSet<Identifier> = entry
                    .linked
                    .iter()
                    .filter(|i| identifiers.contains(*i) && !self.config.is_blocked(i))
                    .cloned()
                    .collect();
                let dropped: Vec<Identifier> = entry.linked.difference(&keep).cloned().collect();
                for identifier in &dropped {
                    self.store
                        .remove_holder(identifier, &record)
                        .during("remove holder")?;
                }
                // An interim entry for the connectivity check; step 2 writes the final one.
                let entry = RecordEntry {
                    seq: entry.seq,
                    identifiers: BTreeSet::new(),
                    linked: keep,
                };
                self.store
                    .put_record(&record, &entry)
                    .during("write record")?;
                if !dropped.is_empty() {
                    self.split_if_disconnected(customer, &mut change)?;
                }
                let current = self.customer_of_required(&record)?;
                (entry.seq, entry.linked, Some(current))
            }
            None => (self.next(Counter::RecordSeq)?, BTreeSet::new(), None),
        };

        // Step 2: add links, refusing those the guardrails forbid.
        let limit = self.config.max_cluster_size;
        let mut size = match current {
            Some(customer) => self.info_required(customer)?.size,
            None => 1,
        };
        let mut joining: BTreeSet<CustomerId> = BTreeSet::new();
        let mut accepted = Vec::new();
        for identifier in &identifiers {
            if linked.contains(identifier) || self.config.is_blocked(identifier) {
                continue;
            }
            // All holders of an identifier belong to one customer, so the first tells it.
            let holders = self.store.holders(identifier).during("read holders")?;
            let other = match holders.first() {
                Some(holder) => Some(self.customer_of_required(holder)?),
                None => None,
            }
            .filter(|c| Some(*c) != current && !joining.contains(c));
            if let Some(other) = other {
                let would_be_size = size + self.info_required(other)?.size;
                if would_be_size > limit {
                    change.guardrails.push(GuardrailReport {
                        record: record.clone(),
                        identifier: identifier.clone(),
                        would_be_size,
                        limit,
                    });
                    continue;
                }
                size = would_be_size;
                joining.insert(other);
            }
            accepted.push(identifier.clone());
        }
        for identifier in accepted {
            self.store
                .add_holder(&identifier, &record)
                .during("add holder")?;
            linked.insert(identifier);
        }
        let entry = RecordEntry {
            seq,
            identifiers,
            linked,
        };
        self.store
            .put_record(&record, &entry)
            .during("write record")?;

        // Membership: a new record joins the oldest customer it links to, or a new one.
        let mut involved = joining;
        if let Some(customer) = current {
            involved.insert(customer);
        }
        let survivor = match involved.first() {
            Some(oldest) => *oldest,
            None => {
                let id = CustomerId::new(self.next(Counter::CustomerId)?);
                change.created.push(id);
                id
            }
        };
        if current.is_none() {
            let mut info = self
                .store
                .customer(survivor)
                .during("read customer")?
                .unwrap_or_default();
            info.size += 1;
            self.store
                .put_customer(survivor, &info)
                .during("write customer")?;
            self.store
                .add_member(survivor, &record)
                .during("add member")?;
            self.store
                .set_customer_of(&record, survivor)
                .during("write record customer")?;
            change.touched.insert(survivor);
        }
        for absorbed in involved.into_iter().skip(1) {
            self.merge(absorbed, survivor, &mut change)?;
        }
        Ok(change)
    }

    /// Deletes a record; its customer may split, or be removed with its last record.
    /// Deleting an unknown record does nothing.
    pub fn delete_record(&mut self, record: &RecordId) -> Result<GraphChange, GraphError> {
        let mut change = GraphChange::default();
        let Some(entry) = self.store.record(record).during("read record")? else {
            return Ok(change);
        };
        let customer = self.customer_of_required(record)?;
        for identifier in &entry.linked {
            self.store
                .remove_holder(identifier, record)
                .during("remove holder")?;
        }
        self.store.delete_record(record).during("delete record")?;
        self.store
            .remove_member(customer, record)
            .during("remove member")?;
        self.store
            .clear_customer_of(record)
            .during("clear record customer")?;
        let mut info = self.info_required(customer)?;
        info.size = info.size.checked_sub(1).ok_or_else(|| {
            GraphError::Inconsistent(format!("customer {customer} has size 0 but a member"))
        })?;
        if info.size == 0 {
            self.store
                .delete_customer(customer)
                .during("delete customer")?;
            change.removed.push(customer);
        } else {
            self.store
                .put_customer(customer, &info)
                .during("write customer")?;
            change.touched.insert(customer);
            if !entry.linked.is_empty() {
                self.split_if_disconnected(customer, &mut change)?;
            }
        }
        Ok(change)
    }

    /// The customer a record belongs to.
    pub fn customer_of(&self, record: &RecordId) -> Result<Option<CustomerId>, GraphError> {
        self.store
            .customer_of(record)
            .during("read record customer")
    }

    /// The customer of the records linking through `identifier`. `None` when no record
    /// links through it: unknown, blocklisted, or held only by records whose link the
    /// size guardrail refused.
    pub fn resolve(&self, identifier: &Identifier) -> Result<Option<CustomerId>, GraphError> {
        let holders = self.store.holders(identifier).during("read holders")?;
        match holders.first() {
            Some(holder) => self.customer_of_required(holder).map(Some),
            None => Ok(None),
        }
    }

    /// The live customer behind an id: the id itself while it is live, the customer that
    /// absorbed it after a merge, `None` for ids never issued or whose customer was
    /// removed.
    pub fn resolve_customer(&self, id: CustomerId) -> Result<Option<CustomerId>, GraphError> {
        let mut current = id;
        for _ in 0..MAX_ALIAS_HOPS {
            if self
                .store
                .customer(current)
                .during("read customer")?
                .is_some()
            {
                return Ok(Some(current));
            }
            match self.store.alias(current).during("read alias")? {
                Some(target) => current = target,
                None => return Ok(None),
            }
        }
        Err(GraphError::Inconsistent(format!(
            "alias chain from {id} longer than {MAX_ALIAS_HOPS}"
        )))
    }

    /// A customer's records, in record-id order (empty for an id that is not live).
    pub fn members(&self, customer: CustomerId) -> Result<Vec<RecordId>, GraphError> {
        let mut members = self.store.members(customer).during("read members")?;
        members.sort();
        Ok(members)
    }

    /// What the graph stores about a record.
    pub fn record(&self, record: &RecordId) -> Result<Option<RecordEntry>, GraphError> {
        self.store.record(record).during("read record")
    }

    /// Recomputes the connectivity of `customer` (a breadth-first search over its members
    /// only) and gives each part but the one holding the oldest record a new id.
    fn split_if_disconnected(
        &mut self,
        customer: CustomerId,
        change: &mut GraphChange,
    ) -> Result<(), GraphError> {
        let mut entries: BTreeMap<RecordId, RecordEntry> = BTreeMap::new();
        for member in self.store.members(customer).during("read members")? {
            let entry = self
                .store
                .record(&member)
                .during("read record")?
                .ok_or_else(|| {
                    GraphError::Inconsistent(format!(
                        "member {member} of {customer} has no record entry"
                    ))
                })?;
            entries.insert(member, entry);
        }

        // Parts as (oldest sequence, members).
        let mut parts: Vec<(u64, Vec<RecordId>)> = Vec::new();
        let mut seen_records: BTreeSet<&RecordId> = BTreeSet::new();
        let mut seen_identifiers: BTreeSet<&Identifier> = BTreeSet::new();
        for (start, _) in entries.iter() {
            if !seen_records.insert(start) {
                continue;
            }
            let mut part = Vec::new();
            let mut oldest = u64::MAX;
            let mut queue = VecDeque::from([start]);
            while let Some(record) = queue.pop_front() {
                part.push(record.clone());
                let entry = &entries[record];
                oldest = oldest.min(entry.seq);
                for identifier in &entry.linked {
                    if !seen_identifiers.insert(identifier) {
                        continue;
                    }
                    for holder in self.store.holders(identifier).during("read holders")? {
                        let Some((holder, _)) = entries.get_key_value(&holder) else {
                            return Err(GraphError::Inconsistent(format!(
                                "{holder} links through {identifier} but is not in {customer}"
                            )));
                        };
                        if seen_records.insert(holder) {
                            queue.push_back(holder);
                        }
                    }
                }
            }
            parts.push((oldest, part));
        }
        if parts.len() <= 1 {
            return Ok(());
        }

        parts.sort_by_key(|(oldest, _)| *oldest);
        let mut new_ids = Vec::new();
        for (_, part) in &parts[1..] {
            let id = CustomerId::new(self.next(Counter::CustomerId)?);
            for member in part {
                self.store
                    .remove_member(customer, member)
                    .during("remove member")?;
                self.store.add_member(id, member).during("add member")?;
                self.store
                    .set_customer_of(member, id)
                    .during("write record customer")?;
            }
            let info = CustomerInfo {
                size: part.len(),
                aliases: BTreeSet::new(),
            };
            self.store
                .put_customer(id, &info)
                .during("write customer")?;
            change.created.push(id);
            change.touched.insert(id);
            new_ids.push(id);
        }
        let mut info = self.info_required(customer)?;
        info.size = parts[0].1.len();
        self.store
            .put_customer(customer, &info)
            .during("write customer")?;
        change.touched.insert(customer);
        change.split.push((customer, new_ids));
        Ok(())
    }

    /// Moves every member of `absorbed` into `survivor` and makes `absorbed` (and the ids
    /// it had absorbed) aliases of `survivor`.
    fn merge(
        &mut self,
        absorbed: CustomerId,
        survivor: CustomerId,
        change: &mut GraphChange,
    ) -> Result<(), GraphError> {
        let from = self.info_required(absorbed)?;
        let mut into = self.info_required(survivor)?;
        for member in self.store.members(absorbed).during("read members")? {
            self.store
                .remove_member(absorbed, &member)
                .during("remove member")?;
            self.store
                .add_member(survivor, &member)
                .during("add member")?;
            self.store
                .set_customer_of(&member, survivor)
                .during("write record customer")?;
        }
        into.size += from.size;
        for alias in from.aliases.into_iter().chain([absorbed]) {
            self.store
                .put_alias(alias, survivor)
                .during("write alias")?;
            into.aliases.insert(alias);
        }
        self.store
            .put_customer(survivor, &into)
            .during("write customer")?;
        self.store
            .delete_customer(absorbed)
            .during("delete customer")?;
        change.merged.push((absorbed, survivor));
        change.touched.remove(&absorbed);
        change.touched.insert(survivor);
        Ok(())
    }

    fn next(&mut self, counter: Counter) -> Result<u64, GraphError> {
        let value = self.store.counter(counter).during("read counter")? + 1;
        self.store
            .put_counter(counter, value)
            .during("write counter")?;
        Ok(value)
    }

    fn customer_of_required(&self, record: &RecordId) -> Result<CustomerId, GraphError> {
        self.customer_of(record)?
            .ok_or_else(|| GraphError::RecordWithoutCustomer {
                record: record.clone(),
            })
    }

    fn info_required(&self, customer: CustomerId) -> Result<CustomerInfo, GraphError> {
        self.store
            .customer(customer)
            .during("read customer")?
            .ok_or(GraphError::MissingCustomer { customer })
    }
}
