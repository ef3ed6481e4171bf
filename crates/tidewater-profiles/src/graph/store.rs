//! Where the graph lives: a key-value storage trait and an in-memory implementation.
//!
//! The trait is deliberately plain — get, put and delete on a handful of maps plus two
//! counters — so that a store backed by the pipeline's own write transaction can implement
//! it, making graph updates commit atomically with the offsets they reflect. The graph
//! keeps all invariants; a store only stores.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;

use serde::{Deserialize, Serialize};

use super::ids::{CustomerId, RecordId};
use crate::identifier::Identifier;

/// What the graph knows about one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordEntry {
    /// First-seen sequence number: the order in which records were inserted (a deleted and
    /// re-inserted record gets a new one). Decides which part of a split keeps the id.
    pub seq: u64,
    /// All identifiers the record holds, as last upserted.
    pub identifiers: BTreeSet<Identifier>,
    /// The subset that links: not blocklisted and not refused by the size guardrail.
    /// Exactly these are indexed under [`GraphStore::holders`].
    pub linked: BTreeSet<Identifier>,
}

/// What the graph knows about one live customer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerInfo {
    /// Number of member records.
    pub size: usize,
    /// Retired ids that now resolve to this customer (each stored alias points here
    /// directly, so alias chains have length one).
    pub aliases: BTreeSet<CustomerId>,
}

/// The graph's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Counter {
    /// The last first-seen sequence number given to a record.
    RecordSeq,
    /// The last customer id allocated.
    CustomerId,
}

impl Counter {
    /// A stable name for the counter, for stores that keep counters under string keys.
    pub fn name(self) -> &'static str {
        match self {
            Self::RecordSeq => "record_seq",
            Self::CustomerId => "customer_id",
        }
    }
}

/// Storage of the identity graph. Reads take `&self`, writes `&mut self`; an
/// implementation inside a transaction sees its own writes. Set-valued maps (`holders`,
/// `members`) are written one element at a time, so a multimap table fits them.
pub trait GraphStore {
    /// The store's error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Record → entry.
    fn record(&self, record: &RecordId) -> Result<Option<RecordEntry>, Self::Error>;
    /// Stores a record's entry.
    fn put_record(&mut self, record: &RecordId, entry: &RecordEntry) -> Result<(), Self::Error>;
    /// Forgets a record's entry.
    fn delete_record(&mut self, record: &RecordId) -> Result<(), Self::Error>;

    /// Identifier → the records linking through it, in any order.
    fn holders(&self, identifier: &Identifier) -> Result<Vec<RecordId>, Self::Error>;
    /// Adds a holder of `identifier`.
    fn add_holder(&mut self, identifier: &Identifier, record: &RecordId)
        -> Result<(), Self::Error>;
    /// Removes a holder of `identifier` (no-op if absent).
    fn remove_holder(
        &mut self,
        identifier: &Identifier,
        record: &RecordId,
    ) -> Result<(), Self::Error>;

    /// Record → its customer.
    fn customer_of(&self, record: &RecordId) -> Result<Option<CustomerId>, Self::Error>;
    /// Sets a record's customer.
    fn set_customer_of(
        &mut self,
        record: &RecordId,
        customer: CustomerId,
    ) -> Result<(), Self::Error>;
    /// Clears a record's customer.
    fn clear_customer_of(&mut self, record: &RecordId) -> Result<(), Self::Error>;

    /// Customer → info, for live customers.
    fn customer(&self, customer: CustomerId) -> Result<Option<CustomerInfo>, Self::Error>;
    /// Stores a customer's info.
    fn put_customer(
        &mut self,
        customer: CustomerId,
        info: &CustomerInfo,
    ) -> Result<(), Self::Error>;
    /// Forgets a customer's info.
    fn delete_customer(&mut self, customer: CustomerId) -> Result<(), Self::Error>;

    /// Customer → its member records, in any order.
    fn members(&self, customer: CustomerId) -> Result<Vec<RecordId>, Self::Error>;
    /// Adds a member.
    fn add_member(&mut self, customer: CustomerId, record: &RecordId) -> Result<(), Self::Error>;
    /// Removes a member (no-op if absent).
    fn remove_member(&mut self, customer: CustomerId, record: &RecordId)
        -> Result<(), Self::Error>;

    /// Retired id → the customer that absorbed it.
    fn alias(&self, alias: CustomerId) -> Result<Option<CustomerId>, Self::Error>;
    /// Points a retired id at a customer.
    fn put_alias(&mut self, alias: CustomerId, target: CustomerId) -> Result<(), Self::Error>;

    /// A counter's value (0 before its first use).
    fn counter(&self, counter: Counter) -> Result<u64, Self::Error>;
    /// Sets a counter.
    fn put_counter(&mut self, counter: Counter, value: u64) -> Result<(), Self::Error>;
}

/// A [`GraphStore`] in memory: for tests, and for graphs rebuilt at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryStore {
    records: BTreeMap<RecordId, RecordEntry>,
    holders: BTreeMap<Identifier, BTreeSet<RecordId>>,
    customer_of: BTreeMap<RecordId, CustomerId>,
    customers: BTreeMap<CustomerId, CustomerInfo>,
    members: BTreeMap<CustomerId, BTreeSet<RecordId>>,
    aliases: BTreeMap<CustomerId, CustomerId>,
    counters: BTreeMap<Counter, u64>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl GraphStore for MemoryStore {
    type Error = Infallible;

    fn record(&self, record: &RecordId) -> Result<Option<RecordEntry>, Infallible> {
        Ok(self.records.get(record).cloned())
    }

    fn put_record(&mut self, record: &RecordId, entry: &RecordEntry) -> Result<(), Infallible> {
        self.records.insert(record.clone(), entry.clone());
        Ok(())
    }

    fn delete_record(&mut self, record: &RecordId) -> Result<(), Infallible> {
        self.records.remove(record);
        Ok(())
    }

    fn holders(&self, identifier: &Identifier) -> Result<Vec<RecordId>, Infallible> {
        Ok(self
            .holders
            .get(identifier)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default())
    }

    fn add_holder(&mut self, identifier: &Identifier, record: &RecordId) -> Result<(), Infallible> {
        self.holders
            .entry(identifier.clone())
            .or_default()
            .insert(record.clone());
        Ok(())
    }

    fn remove_holder(
        &mut self,
        identifier: &Identifier,
        record: &RecordId,
    ) -> Result<(), Infallible> {
        if let Some(set) = self.holders.get_mut(identifier) {
            set.remove(record);
            if set.is_empty() {
                self.holders.remove(identifier);
            }
        }
        Ok(())
    }

    fn customer_of(&self, record: &RecordId) -> Result<Option<CustomerId>, Infallible> {
        Ok(self.customer_of.get(record).copied())
    }

    fn set_customer_of(
        &mut self,
        record: &RecordId,
        customer: CustomerId,
    ) -> Result<(), Infallible> {
        self.customer_of.insert(record.clone(), customer);
        Ok(())
    }

    fn clear_customer_of(&mut self, record: &RecordId) -> Result<(), Infallible> {
        self.customer_of.remove(record);
        Ok(())
    }

    fn customer(&self, customer: CustomerId) -> Result<Option<CustomerInfo>, Infallible> {
        Ok(self.customers.get(&customer).cloned())
    }

    fn put_customer(
        &mut self,
        customer: CustomerId,
        info: &CustomerInfo,
    ) -> Result<(), Infallible> {
        self.customers.insert(customer, info.clone());
        Ok(())
    }

    fn delete_customer(&mut self, customer: CustomerId) -> Result<(), Infallible> {
        self.customers.remove(&customer);
        Ok(())
    }

    fn members(&self, customer: CustomerId) -> Result<Vec<RecordId>, Infallible> {
        Ok(self
            .members
            .get(&customer)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default())
    }

    fn add_member(&mut self, customer: CustomerId, record: &RecordId) -> Result<(), Infallible> {
        self.members
            .entry(customer)
            .or_default()
            .insert(record.clone());
        Ok(())
    }

    fn remove_member(&mut self, customer: CustomerId, record: &RecordId) -> Result<(), Infallible> {
        if let Some(set) = self.members.get_mut(&customer) {
            set.remove(record);
            if set.is_empty() {
                self.members.remove(&customer);
            }
        }
        Ok(())
    }

    fn alias(&self, alias: CustomerId) -> Result<Option<CustomerId>, Infallible> {
        Ok(self.aliases.get(&alias).copied())
    }

    fn put_alias(&mut self, alias: CustomerId, target: CustomerId) -> Result<(), Infallible> {
        self.aliases.insert(alias, target);
        Ok(())
    }

    fn counter(&self, counter: Counter) -> Result<u64, Infallible> {
        Ok(self.counters.get(&counter).copied().unwrap_or(0))
    }

    fn put_counter(&mut self, counter: Counter, value: u64) -> Result<(), Infallible> {
        self.counters.insert(counter, value);
        Ok(())
    }
}

/// A graph can run over a borrowed store (e.g. one wrapping a transaction the caller
/// commits afterwards).
impl<S: GraphStore + ?Sized> GraphStore for &mut S {
    type Error = S::Error;

    fn record(&self, record: &RecordId) -> Result<Option<RecordEntry>, S::Error> {
        (**self).record(record)
    }
    fn put_record(&mut self, record: &RecordId, entry: &RecordEntry) -> Result<(), S::Error> {
        (**self).put_record(record, entry)
    }
    fn delete_record(&mut self, record: &RecordId) -> Result<(), S::Error> {
        (**self).delete_record(record)
    }
    fn holders(&self, identifier: &Identifier) -> Result<Vec<RecordId>, S::Error> {
        (**self).holders(identifier)
    }
    fn add_holder(&mut self, identifier: &Identifier, record: &RecordId) -> Result<(), S::Error> {
        (**self).add_holder(identifier, record)
    }
    fn remove_holder(
        &mut self,
        identifier: &Identifier,
        record: &RecordId,
    ) -> Result<(), S::Error> {
        (**self).remove_holder(identifier, record)
    }
    fn customer_of(&self, record: &RecordId) -> Result<Option<CustomerId>, S::Error> {
        (**self).customer_of(record)
    }
    fn set_customer_of(&mut self, record: &RecordId, customer: CustomerId) -> Result<(), S::Error> {
        (**self).set_customer_of(record, customer)
    }
    fn clear_customer_of(&mut self, record: &RecordId) -> Result<(), S::Error> {
        (**self).clear_customer_of(record)
    }
    fn customer(&self, customer: CustomerId) -> Result<Option<CustomerInfo>, S::Error> {
        (**self).customer(customer)
    }
    fn put_customer(&mut self, customer: CustomerId, info: &CustomerInfo) -> Result<(), S::Error> {
        (**self).put_customer(customer, info)
    }
    fn delete_customer(&mut self, customer: CustomerId) -> Result<(), S::Error> {
        (**self).delete_customer(customer)
    }
    fn members(&self, customer: CustomerId) -> Result<Vec<RecordId>, S::Error> {
        (**self).members(customer)
    }
    fn add_member(&mut self, customer: CustomerId, record: &RecordId) -> Result<(), S::Error> {
        (**self).add_member(customer, record)
    }
    fn remove_member(&mut self, customer: CustomerId, record: &RecordId) -> Result<(), S::Error> {
        (**self).remove_member(customer, record)
    }
    fn alias(&self, alias: CustomerId) -> Result<Option<CustomerId>, S::Error> {
        (**self).alias(alias)
    }
    fn put_alias(&mut self, alias: CustomerId, target: CustomerId) -> Result<(), S::Error> {
        (**self).put_alias(alias, target)
    }
    fn counter(&self, counter: Counter) -> Result<u64, S::Error> {
        (**self).counter(counter)
    }
    fn put_counter(&mut self, counter: Counter, value: u64) -> Result<(), S::Error> {
        (**self).put_counter(counter, value)
    }
}
