//! The pipeline's own tables (source rows, child links, profiles) and the queries that
//! read committed profiles.
//!
//! | table | key | value |
//! |---|---|---|
//! | `profiles_rows` | `(table, key)` | JSON of [`StoredRow`] |
//! | `profiles_child_links` (multimap) | identifier as `namespace:value` | child `(table, key)` |
//! | `profiles_profiles` | customer number | JSON of [`Profile`] |

use redb::{
    Database, MultimapTableDefinition, ReadableDatabase, ReadableTable, TableDefinition,
    TableError, WriteTransaction,
};

use crate::error::ProfilesError;
use crate::graph::{create_graph_tables, CustomerId, IdentityGraph, RedbReader};
use crate::identifier::Identifier;
use crate::profile::{Profile, StoredRow};

type RowKey<'a> = (&'a str, &'a str);

/// Source rows by (table, key).
pub(crate) const ROWS: TableDefinition<RowKey, &[u8]> = TableDefinition::new("profiles_rows");
/// Link identifier → the child rows naming it.
pub(crate) const CHILD_LINKS: MultimapTableDefinition<&str, RowKey> =
    MultimapTableDefinition::new("profiles_child_links");
/// Live customer → profile.
pub(crate) const PROFILES: TableDefinition<u64, &[u8]> = TableDefinition::new("profiles_profiles");

pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    table: &'static str,
    bytes: &[u8],
) -> Result<T, ProfilesError> {
    serde_json::from_slice(bytes).map_err(|source| ProfilesError::Corrupt { table, source })
}

pub(crate) fn encode<T: serde::Serialize>(
    table: &'static str,
    value: &T,
) -> Result<Vec<u8>, ProfilesError> {
    serde_json::to_vec(value).map_err(|source| ProfilesError::Corrupt { table, source })
}

/// Creates every table of the profiles pipeline (and of its graph), so that queries work
/// before the first event.
pub fn create_profile_tables(db: &Database) -> Result<(), ProfilesError> {
    let txn = db.begin_write()?;
    create_in(&txn)?;
    txn.commit()?;
    Ok(())
}

fn create_in(txn: &WriteTransaction) -> Result<(), ProfilesError> {
    txn.open_table(ROWS)?;
    txn.open_multimap_table(CHILD_LINKS)?;
    txn.open_table(PROFILES)?;
    create_graph_tables(txn)?;
    Ok(())
}

/// A missing table means nothing was written yet.
fn absent_is_none<T>(result: Result<T, TableError>) -> Result<Option<T>, ProfilesError> {
    match result {
        Ok(t) => Ok(Some(t)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The profile of a customer, following aliases (a merged-away id answers with the
/// surviving customer's profile). `None` for an unknown or removed customer.
pub fn profile(db: &Database, customer: CustomerId) -> Result<Option<Profile>, ProfilesError> {
    let txn = db.begin_read()?;
    let Some(reader) = RedbReader::open(&txn)? else {
        return Ok(None);
    };
    // Guardrail settings do not matter for reads.
    let graph = IdentityGraph::new(reader, crate::graph::GraphConfig::default());
    let Some(live) = graph.resolve_customer(customer)? else {
        return Ok(None);
    };
    read_profile(&txn, live)
}

/// The profile of the customer holding `identifier` (as a linking identifier).
pub fn profile_by_identifier(
    db: &Database,
    identifier: &Identifier,
) -> Result<Option<Profile>, ProfilesError> {
    let txn = db.begin_read()?;
    let Some(reader) = RedbReader::open(&txn)? else {
        return Ok(None);
    };
    let graph = IdentityGraph::new(reader, crate::graph::GraphConfig::default());
    let Some(customer) = graph.resolve(identifier)? else {
        return Ok(None);
    };
    read_profile(&txn, customer)
}

fn read_profile(
    txn: &redb::ReadTransaction,
    customer: CustomerId,
) -> Result<Option<Profile>, ProfilesError> {
    let Some(table) = absent_is_none(txn.open_table(PROFILES))? else {
        return Ok(None);
    };
    match table.get(customer.get())? {
        Some(bytes) => decode("profiles", bytes.value()).map(Some),
        None => Ok(None),
    }
}

/// Every stored profile, by customer id.
pub fn all_profiles(db: &Database) -> Result<Vec<Profile>, ProfilesError> {
    let txn = db.begin_read()?;
    let Some(table) = absent_is_none(txn.open_table(PROFILES))? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for entry in table.iter()? {
        let (_, bytes) = entry?;
        out.push(decode("profiles", bytes.value())?);
    }
    Ok(out)
}

/// Every stored source row (identity and child tables), by table and key.
pub fn all_rows(
    db: &Database,
) -> Result<std::collections::BTreeMap<crate::graph::RecordId, StoredRow>, ProfilesError> {
    let txn = db.begin_read()?;
    let mut out = std::collections::BTreeMap::new();
    let Some(table) = absent_is_none(txn.open_table(ROWS))? else {
        return Ok(out);
    };
    for entry in table.iter()? {
        let (key, bytes) = entry?;
        let (source, key) = key.value();
        out.insert(
            crate::graph::RecordId::new(source, key),
            decode("rows", bytes.value())?,
        );
    }
    Ok(out)
}
