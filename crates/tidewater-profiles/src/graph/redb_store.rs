//! The identity graph in redb: [`RedbStore`] writes inside a caller's
//! [`redb::WriteTransaction`], so graph updates commit atomically with whatever else the
//! transaction holds (a pipeline's offsets); [`RedbReader`] reads a committed snapshot.
//!
//! # Tables
//!
//! | table | key | value |
//! |---|---|---|
//! | `profiles_graph_records` | `(source, key)` | JSON of [`RecordEntry`] |
//! | `profiles_graph_holders` (multimap) | identifier as `namespace:value` | `(source, key)` |
//! | `profiles_graph_customer_of` | `(source, key)` | customer number |
//! | `profiles_graph_customers` | customer number | JSON of [`CustomerInfo`] |
//! | `profiles_graph_members` (multimap) | customer number | `(source, key)` |
//! | `profiles_graph_aliases` | retired customer number | live customer number |
//! | `profiles_graph_counters` | [`Counter::name`] | value |

use redb::{
    MultimapTable, MultimapTableDefinition, ReadOnlyMultimapTable, ReadOnlyTable, ReadTransaction,
    ReadableMultimapTable, ReadableTable, Table, TableDefinition, TableError, WriteTransaction,
};

use super::ids::{CustomerId, RecordId};
use super::store::{Counter, CustomerInfo, GraphStore, RecordEntry};
use crate::identifier::Identifier;

type RecordKey<'a> = (&'a str, &'a str);

const RECORDS: TableDefinition<RecordKey, &[u8]> = TableDefinition::new("profiles_graph_records");
const HOLDERS: MultimapTableDefinition<&str, RecordKey> =
    MultimapTableDefinition::new("profiles_graph_holders");
const CUSTOMER_OF: TableDefinition<RecordKey, u64> =
    TableDefinition::new("profiles_graph_customer_of");
const CUSTOMERS: TableDefinition<u64, &[u8]> = TableDefinition::new("profiles_graph_customers");
const MEMBERS: MultimapTableDefinition<u64, RecordKey> =
    MultimapTableDefinition::new("profiles_graph_members");
const ALIASES: TableDefinition<u64, u64> = TableDefinition::new("profiles_graph_aliases");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("profiles_graph_counters");

/// A failure of the redb graph store. Internal: the state store failed or holds data this
/// version cannot read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedbStoreError {
    /// A table could not be opened.
    #[error("cannot open graph table: {0}")]
    Table(#[from] TableError),
    /// Reading or writing failed.
    #[error("graph storage: {0}")]
    Storage(#[from] redb::StorageError),
    /// A stored value is not valid JSON of its type.
    #[error("corrupt value in graph table {table}: {source}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// A write was attempted through a [`RedbReader`].
    #[error("the graph was opened read-only")]
    ReadOnly,
}

fn key(record: &RecordId) -> RecordKey<'_> {
    (record.source.as_str(), record.key.as_str())
}

fn decode<T: serde::de::DeserializeOwned>(
    table: &'static str,
    bytes: &[u8],
) -> Result<T, RedbStoreError> {
    serde_json::from_slice(bytes).map_err(|source| RedbStoreError::Corrupt { table, source })
}

fn encode<T: serde::Serialize>(table: &'static str, value: &T) -> Result<Vec<u8>, RedbStoreError> {
    serde_json::to_vec(value).map_err(|source| RedbStoreError::Corrupt { table, source })
}

fn record_ids<'a>(
    values: impl Iterator<Item = Result<redb::AccessGuard<'a, RecordKey<'static>>, redb::StorageError>>,
) -> Result<Vec<RecordId>, RedbStoreError> {
    values
        .map(|guard| {
            let guard = guard?;
            let (source, key) = guard.value();
            Ok(RecordId::new(source, key))
        })
        .collect()
}

/// Creates the graph's tables if they do not exist, so that readers can open them.
pub fn create_graph_tables(txn: &WriteTransaction) -> Result<(), RedbStoreError> {
    drop(RedbStore::open(txn)?);
    Ok(())
}

/// The read half of [`GraphStore`], the same for both stores: their fields have the same
/// names and differ only in being writable.
macro_rules! read_half {
    () => {
        fn record(&self, record: &RecordId) -> Result<Option<RecordEntry>, RedbStoreError> {
            match self.records.get(key(record))? {
                Some(bytes) => decode("records", bytes.value()).map(Some),
                None => Ok(None),
            }
        }

        fn holders(&self, identifier: &Identifier) -> Result<Vec<RecordId>, RedbStoreError> {
            record_ids(self.holders.get(identifier.to_string().as_str())?)
        }

        fn customer_of(&self, record: &RecordId) -> Result<Option<CustomerId>, RedbStoreError> {
            Ok(self
                .customer_of
                .get(key(record))?
                .map(|v| CustomerId::new(v.value())))
        }

        fn customer(&self, customer: CustomerId) -> Result<Option<CustomerInfo>, RedbStoreError> {
            match self.customers.get(customer.get())? {
                Some(bytes) => decode("customers", bytes.value()).map(Some),
                None => Ok(None),
            }
        }

        fn members(&self, customer: CustomerId) -> Result<Vec<RecordId>, RedbStoreError> {
            record_ids(self.members.get(customer.get())?)
        }

        fn alias(&self, alias: CustomerId) -> Result<Option<CustomerId>, RedbStoreError> {
            Ok(self
                .aliases
                .get(alias.get())?
                .map(|v| CustomerId::new(v.value())))
        }

        fn counter(&self, counter: Counter) -> Result<u64, RedbStoreError> {
            Ok(self
                .counters
                .get(counter.name())?
                .map(|v| v.value())
                .unwrap_or(0))
        }
    };
}

/// The graph's tables opened in a write transaction. Dropping it releases the tables;
/// the caller commits the transaction.
pub struct RedbStore<'txn> {
    records: Table<'txn, RecordKey<'static>, &'static [u8]>,
    holders: MultimapTable<'txn, &'static str, RecordKey<'static>>,
    customer_of: Table<'txn, RecordKey<'static>, u64>,
    customers: Table<'txn, u64, &'static [u8]>,
    members: MultimapTable<'txn, u64, RecordKey<'static>>,
    aliases: Table<'txn, u64, u64>,
    counters: Table<'txn, &'static str, u64>,
}

impl<'txn> RedbStore<'txn> {
    /// Opens (creating if needed) the graph's tables in `txn`. Fails if one of them is
    /// already open in the transaction.
    pub fn open(txn: &'txn WriteTransaction) -> Result<Self, RedbStoreError> {
        Ok(Self {
            records: txn.open_table(RECORDS)?,
            holders: txn.open_multimap_table(HOLDERS)?,
            customer_of: txn.open_table(CUSTOMER_OF)?,
            customers: txn.open_table(CUSTOMERS)?,
            members: txn.open_multimap_table(MEMBERS)?,
            aliases: txn.open_table(ALIASES)?,
            counters: txn.open_table(COUNTERS)?,
        })
    }
}

impl GraphStore for RedbStore<'_> {
    type Error = RedbStoreError;

    read_half!();

    fn put_record(&mut self, record: &RecordId, entry: &RecordEntry) -> Result<(), RedbStoreError> {
        let bytes = encode("records", entry)?;
        self.records.insert(key(record), bytes.as_slice())?;
        Ok(())
    }

    fn delete_record(&mut self, record: &RecordId) -> Result<(), RedbStoreError> {
        self.records.remove(key(record))?;
        Ok(())
    }

    fn add_holder(
        &mut self,
        identifier: &Identifier,
        record: &RecordId,
    ) -> Result<(), RedbStoreError> {
        self.holders
            .insert(identifier.to_string().as_str(), key(record))?;
        Ok(())
    }

    fn remove_holder(
        &mut self,
        identifier: &Identifier,
        record: &RecordId,
    ) -> Result<(), RedbStoreError> {
        self.holders
            .remove(identifier.to_string().as_str(), key(record))?;
        Ok(())
    }

    fn set_customer_of(
        &mut self,
        record: &RecordId,
        customer: CustomerId,
    ) -> Result<(), RedbStoreError> {
        self.customer_of.insert(key(record), customer.get())?;
        Ok(())
    }

    fn clear_customer_of(&mut self, record: &RecordId) -> Result<(), RedbStoreError> {
        self.customer_of.remove(key(record))?;
        Ok(())
    }

    fn put_customer(
        &mut self,
        customer: CustomerId,
        info: &CustomerInfo,
    ) -> Result<(), RedbStoreError> {
        let bytes = encode("customers", info)?;
        self.customers.insert(customer.get(), bytes.as_slice())?;
        Ok(())
    }

    fn delete_customer(&mut self, customer: CustomerId) -> Result<(), RedbStoreError> {
        self.customers.remove(customer.get())?;
        Ok(())
    }

    fn add_member(
        &mut self,
        customer: CustomerId,
        record: &RecordId,
    ) -> Result<(), RedbStoreError> {
        self.members.insert(customer.get(), key(record))?;
        Ok(())
    }

    fn remove_member(
        &mut self,
        customer: CustomerId,
        record: &RecordId,
    ) -> Result<(), RedbStoreError> {
        self.members.remove(customer.get(), key(record))?;
        Ok(())
    }

    fn put_alias(&mut self, alias: CustomerId, target: CustomerId) -> Result<(), RedbStoreError> {
        self.aliases.insert(alias.get(), target.get())?;
        Ok(())
    }

    fn put_counter(&mut self, counter: Counter, value: u64) -> Result<(), RedbStoreError> {
        self.counters.insert(counter.name(), value)?;
        Ok(())
    }
}

/// The graph's tables opened in a read transaction: a consistent committed snapshot for
/// queries ([`crate::IdentityGraph::resolve`], `members`, …). Writes fail with
/// [`RedbStoreError::ReadOnly`].
pub struct RedbReader {
    records: ReadOnlyTable<RecordKey<'static>, &'static [u8]>,
    holders: ReadOnlyMultimapTable<&'static str, RecordKey<'static>>,
    customer_of: ReadOnlyTable<RecordKey<'static>, u64>,
    customers: ReadOnlyTable<u64, &'static [u8]>,
    members: ReadOnlyMultimapTable<u64, RecordKey<'static>>,
    aliases: ReadOnlyTable<u64, u64>,
    counters: ReadOnlyTable<&'static str, u64>,
}

impl RedbReader {
    /// Opens the graph's tables in `txn`; `Ok(None)` when they were never created (no
    /// graph has been written yet).
    pub fn open(txn: &ReadTransaction) -> Result<Option<Self>, RedbStoreError> {
        match Self::open_tables(txn) {
            Ok(reader) => Ok(Some(reader)),
            Err(RedbStoreError::Table(TableError::TableDoesNotExist(_))) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn open_tables(txn: &ReadTransaction) -> Result<Self, RedbStoreError> {
        Ok(Self {
            records: txn.open_table(RECORDS)?,
            holders: txn.open_multimap_table(HOLDERS)?,
            customer_of: txn.open_table(CUSTOMER_OF)?,
            customers: txn.open_table(CUSTOMERS)?,
            members: txn.open_multimap_table(MEMBERS)?,
            aliases: txn.open_table(ALIASES)?,
            counters: txn.open_table(COUNTERS)?,
        })
    }
}

impl GraphStore for RedbReader {
    type Error = RedbStoreError;

    read_half!();

    fn put_record(&mut self, _: &RecordId, _: &RecordEntry) -> Result<(), RedbStoreError> {
        Err(RedbStoreError::ReadOnly)
    }
    fn delete_record(&mut self, _: &RecordId) -> Result<(), RedbStoreError> {
        Err(RedbStoreError::ReadOnly)
    }
    fn add_holder(&mut self, _: &Identifier, _: &RecordId) -> Result<(), RedbStoreError> {
        Err(RedbStoreError::ReadOnly)
    }
    fn remove_holder(&mut self, _: &Identifier, _: &RecordId) -> Result<(), RedbStoreError> {
        Err(RedbStoreError::ReadOnly)
    }
    fn set_customer_of(&mut self, _: &RecordId, _: CustomerId) -> Result<(), RedbStoreError> {
        Err(RedbStoreError::ReadOnly)
    }
    fn clear_customer_of(&mut self, _: &RecordId) -> Result<(), RedbStoreError> {
        Err(RedbStoreError::ReadOnly)
    }
    fn put_customer(&mut self, _: CustomerId, _: &CustomerInfo) -> Result<(), RedbStoreError> {
        Err(RedbStoreError::ReadOnly)
    }
    fn delete_customer(&mut self, _: CustomerId) -> Result<(), RedbStoreError> {
        Err(RedbStoreError::ReadOnly)
    }
    fn add_member(&mut self, _: CustomerId, _: &RecordId) -> Result<(), RedbStoreError> {
        Err(RedbStoreError::ReadOnly)
    }
    fn remove_member(&mut self, _: CustomerId, _: &RecordId) -> Result<(), RedbStoreError> {
        Err(RedbStoreError::ReadOnly)
    }
    fn put_alias(&mut self, _: CustomerId, _: CustomerId) -> Result<(), RedbStoreError> {
        Err(RedbStoreError::ReadOnly)
    }
    fn put_counter(&mut self, _: Counter, _: u64) -> Result<(), RedbStoreError> {
        Err(RedbStoreError::ReadOnly)
    }
}
