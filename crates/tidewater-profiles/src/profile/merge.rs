//! Merging: a customer's rows in, one profile out. Pure and deterministic, so the
//! incrementally maintained profiles can be checked against (and rebuilt by) a
//! from-scratch computation.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Number, Value};
use tracing::debug;

use super::config::{AggregateKind, ChildConfig, MergePolicy, ProfilesConfig, TableConfig};
use super::model::{Profile, Provenance, RecordRef, StoredRow};
use crate::graph::{CustomerId, GraphError, IdentityGraph, MemoryStore, RecordId};
use crate::identifier::Identifier;

/// The text of a column value usable as an identifier: strings as they are, numbers in
/// their JSON form; anything else (null, booleans, objects) is no identifier.
fn identifier_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The identifiers of a row of an identity table. Values that do not normalise are left
/// out (and logged): they link nothing.
pub fn row_identifiers(table: &TableConfig, row: &Map<String, Value>) -> BTreeSet<Identifier> {
    let mut out = BTreeSet::new();
    for column in &table.identifiers {
        let Some(text) = row.get(&column.column).and_then(identifier_text) else {
            continue;
        };
        match Identifier::new(&column.namespace, &text, &column.normaliser) {
            Ok(identifier) => {
                out.insert(identifier);
            }
            Err(error) => debug!(
                table = %table.table, column = %column.column, %error,
                "identifier value ignored"
            ),
        }
    }
    out
}

/// The identifier by which a child row names its customer, if it has a usable one.
pub fn child_link(
    table: &str,
    child: &ChildConfig,
    row: &Map<String, Value>,
) -> Option<Identifier> {
    let column = &child.link;
    let text = row.get(&column.column).and_then(identifier_text)?;
    match Identifier::new(&column.namespace, &text, &column.normaliser) {
        Ok(identifier) => Some(identifier),
        Err(error) => {
            debug!(%table, column = %column.column, %error, "child link value ignored");
            None
        }
    }
}

/// Everything a customer's profile is computed from.
#[derive(Debug, Clone, Default)]
pub struct ProfileInput {
    /// The identity records and their rows.
    pub members: Vec<(RecordId, StoredRow)>,
    /// Every identifier the records hold.
    pub identifiers: BTreeSet<Identifier>,
    /// The child rows naming the customer.
    pub children: Vec<(RecordId, StoredRow)>,
}

/// A candidate value of one attribute.
struct Candidate<'a> {
    record: &'a RecordId,
    priority: i32,
    event_time_ms: i64,
    value: &'a Value,
}

/// Why a customer's rows make no valid profile, or why a row cannot count in one. The
/// change that would lead there is dead-lettered (with this as its reason) and the
/// profile keeps its previous state: a profile never holds a sum that silently lost a
/// value or overflowed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileDefect {
    /// A sum over the customer's child rows does not fit a 64-bit float.
    #[error(
        "aggregate {aggregate:?} (the sum of column {column:?}) would not be finite: \
         its values overflow a 64-bit float"
    )]
    NotFinite {
        /// The aggregate.
        aggregate: String,
        /// The summed column.
        column: String,
    },
    /// A child row's value that a numeric aggregate reads is not a number.
    #[error(
        "column {column:?} holds {value}, which is not a finite number \
         (aggregate {aggregate:?} reads it)"
    )]
    NotNumeric {
        /// The aggregate reading the column.
        aggregate: String,
        /// The column.
        column: String,
        /// The value, as JSON (shortened).
        value: String,
    },
    /// The profile's JSON is larger than `profiles.max_profile_bytes`.
    #[error("the profile would be {bytes} bytes, more than profiles.max_profile_bytes ({max})")]
    TooLarge {
        /// The profile's size.
        bytes: usize,
        /// The configured maximum.
        max: u64,
    },
}

/// Merges a customer's rows into its profile. A sum that is not finite (which
/// [`try_merge_profile`] refuses) is null.
pub fn merge_profile(
    config: &ProfilesConfig,
    customer_id: CustomerId,
    input: &ProfileInput,
) -> Profile {
    merge(config, customer_id, input).0
}

/// Merges a customer's rows into its profile, refusing a sum that is not finite.
pub fn try_merge_profile(
    config: &ProfilesConfig,
    customer_id: CustomerId,
    input: &ProfileInput,
) -> Result<Profile, ProfileDefect> {
    match merge(config, customer_id, input) {
        (profile, None) => Ok(profile),
        (_, Some(defect)) => Err(defect),
    }
}

/// The profile, and its first defect.
fn merge(
    config: &ProfilesConfig,
    customer_id: CustomerId,
    input: &ProfileInput,
) -> (Profile, Option<ProfileDefect>) {
    let mut candidates: BTreeMap<&str, Vec<Candidate<'_>>> = BTreeMap::new();
    for (record, row) in &input.members {
        let Some(table) = config.table(&record.source) else {
            continue;
        };
        for attribute in &table.attributes {
            match row.after.get(attribute) {
                None | Some(Value::Null) => {}
                Some(value) => candidates.entry(attribute).or_default().push(Candidate {
                    record,
                    priority: table.priority,
                    event_time_ms: row.event_time_ms,
                    value,
                }),
            }
        }
    }

    let mut attributes = BTreeMap::new();
    let mut provenance = BTreeMap::new();
    for (attribute, mut list) in candidates {
        // Best first: later, then higher priority, then smaller record id.
        let by_time = |a: &Candidate<'_>, b: &Candidate<'_>| {
            (b.event_time_ms, b.priority)
                .cmp(&(a.event_time_ms, a.priority))
                .then_with(|| a.record.cmp(b.record))
        };
        let by_priority = |a: &Candidate<'_>, b: &Candidate<'_>| {
            (b.priority, b.event_time_ms)
                .cmp(&(a.priority, a.event_time_ms))
                .then_with(|| a.record.cmp(b.record))
        };
        let policy = config.policy(attribute);
        let value = match policy {
            MergePolicy::LatestEventTime => {
                list.sort_by(by_time);
                list[0].value.clone()
            }
            MergePolicy::SourcePriority => {
                list.sort_by(by_priority);
                list[0].value.clone()
            }
            MergePolicy::CollectList => {
                list.sort_by(|a, b| a.record.cmp(b.record));
                let values = list.iter().map(|c| c.value.clone()).collect();
                list.sort_by(by_time);
                Value::Array(values)
            }
        };
        let winner = &list[0];
        provenance.insert(
            attribute.to_owned(),
            Provenance {
                table: winner.record.source.clone(),
                key: winner.record.key.clone(),
                event_time_ms: winner.event_time_ms,
            },
        );
        attributes.insert(attribute.to_owned(), value);
    }

    let mut records: Vec<RecordRef> = input
        .members
        .iter()
        .map(|(r, _)| RecordRef {
            table: r.source.clone(),
            key: r.key.clone(),
        })
        .collect();
    records.sort();
    records.dedup();

    let updated_at_ms = input
        .members
        .iter()
        .chain(&input.children)
        .map(|(_, row)| row.event_time_ms)
        .max()
        .unwrap_or(0);

    let (aggregates, defect) = aggregates(config, &input.children);
    let profile = Profile {
        customer_id,
        attributes,
        provenance,
        records,
        aggregates,
        identifiers: input.identifiers.iter().map(ToString::to_string).collect(),
        updated_at_ms,
    };
    (profile, defect)
}

/// The first value of a child row that one of its table's numeric aggregates reads but
/// cannot count: present, not null, and neither a finite JSON number nor a string holding
/// one. Such a row is dead-lettered rather than counted as nothing.
pub fn non_numeric_value(table: &TableConfig, row: &Map<String, Value>) -> Option<ProfileDefect> {
    let child = table.child.as_ref()?;
    child.aggregates.iter().find_map(|aggregate| {
        let column = match &aggregate.kind {
            AggregateKind::Count => return None,
            AggregateKind::Sum { column }
            | AggregateKind::Max { column }
            | AggregateKind::Min { column } => column,
        };
        let value = row.get(column)?;
        if value.is_null() || numeric(value).is_some() {
            return None;
        }
        let mut shown = value.to_string();
        if shown.len() > 80 {
            let mut end = 77;
            while !shown.is_char_boundary(end) {
                end -= 1;
            }
            shown.truncate(end);
            shown.push_str("...");
        }
        Some(ProfileDefect::NotNumeric {
            aggregate: aggregate.name.clone(),
            column: column.clone(),
            value: shown,
        })
    })
}

/// A number from a JSON number or a numeric string.
fn numeric(value: &Value) -> Option<Number> {
    match value {
        Value::Number(n) => Some(n.clone()),
        Value::String(s) => {
            let s = s.trim();
            if let Ok(i) = s.parse::<i64>() {
                Some(Number::from(i))
            } else {
                s.parse::<f64>().ok().and_then(Number::from_f64)
            }
        }
        _ => None,
    }
}

fn as_f64(n: &Number) -> f64 {
    n.as_f64().unwrap_or(0.0)
}

/// Every configured aggregate over the given child rows (each aggregate sees only rows
/// of its own table), and the first sum that is not finite (null in the map).
fn aggregates(
    config: &ProfilesConfig,
    children: &[(RecordId, StoredRow)],
) -> (BTreeMap<String, Value>, Option<ProfileDefect>) {
    let mut out = BTreeMap::new();
    let mut defect = None;
    for table in &config.tables {
        let Some(child) = &table.child else { continue };
        let rows: Vec<&StoredRow> = children
            .iter()
            .filter(|(r, _)| r.source == table.table)
            .map(|(_, row)| row)
            .collect();
        for aggregate in &child.aggregates {
            let column_values = |column: &str| -> Vec<Number> {
                rows.iter()
                    .filter_map(|row| row.after.get(column).and_then(numeric))
                    .collect()
            };
            let value = match &aggregate.kind {
                AggregateKind::Count => Value::from(rows.len()),
                AggregateKind::Sum { column } => sum(&column_values(column)).unwrap_or_else(|| {
                    defect.get_or_insert(ProfileDefect::NotFinite {
                        aggregate: aggregate.name.clone(),
                        column: column.clone(),
                    });
                    Value::Null
                }),
                AggregateKind::Max { column } => extreme(&column_values(column), true),
                AggregateKind::Min { column } => extreme(&column_values(column), false),
            };
            out.insert(aggregate.name.clone(), value);
        }
    }
    (out, defect)
}

/// The sum: an integer while every value is one and the total fits, else a float; `None`
/// when the float is not finite.
fn sum(values: &[Number]) -> Option<Value> {
    let ints: Option<Vec<i64>> = values.iter().map(Number::as_i64).collect();
    if let Some(total) = ints.and_then(|ints| ints.iter().try_fold(0i64, |a, b| a.checked_add(*b)))
    {
        return Some(Value::from(total));
    }
    // Summed in a fixed order so the result does not depend on row order.
    let mut floats: Vec<f64> = values.iter().map(as_f64).collect();
    floats.sort_by(f64::total_cmp);
    Number::from_f64(floats.iter().sum()).map(Value::Number)
}

fn extreme(values: &[Number], max: bool) -> Value {
    let best = values.iter().reduce(|a, b| {
        let ordering = as_f64(a).total_cmp(&as_f64(b));
        let a_wins = if max {
            ordering.is_ge()
        } else {
            ordering.is_le()
        };
        if a_wins {
            a
        } else {
            b
        }
    });
    best.map(|n| Value::Number(n.clone()))
        .unwrap_or(Value::Null)
}

/// Computes every profile from scratch: a fresh identity graph over the identity rows
/// (upserted in record-id order), child rows attached through their link identifiers.
/// The customer ids are those of the fresh graph, so they may differ from incrementally
/// maintained ones; the partition and the profile contents may not.
pub fn compute_profiles(
    config: &ProfilesConfig,
    rows: &BTreeMap<RecordId, StoredRow>,
) -> Result<Vec<Profile>, GraphError> {
    let mut graph = IdentityGraph::new(MemoryStore::new(), config.graph.clone());
    let mut children = Vec::new();
    for (record, row) in rows {
        let Some(table) = config.table(&record.source) else {
            continue;
        };
        match &table.child {
            Some(child) => {
                children.push((record, row, child_link(&table.table, child, &row.after)))
            }
            None => {
                graph.upsert_record(record.clone(), row_identifiers(table, &row.after))?;
            }
        }
    }
    let mut inputs: BTreeMap<CustomerId, ProfileInput> = BTreeMap::new();
    for (record, row) in rows {
        if let Some(customer) = graph.customer_of(record)? {
            let input = inputs.entry(customer).or_default();
            input.members.push((record.clone(), row.clone()));
            if let Some(entry) = graph.record(record)? {
                input.identifiers.extend(entry.identifiers);
            }
        }
    }
    for (record, row, link) in children {
        let Some(link) = link else { continue };
        if let Some(customer) = graph.resolve(&link)? {
            if let Some(input) = inputs.get_mut(&customer) {
                input.children.push((record.clone(), row.clone()));
            }
        }
    }
    Ok(inputs
        .iter()
        .map(|(customer, input)| merge_profile(config, *customer, input))
        .collect())
}
