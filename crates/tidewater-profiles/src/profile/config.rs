//! The profiles section of the configuration: which tables feed profiles, and how.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::graph::GraphConfig;
use crate::identifier::Normaliser;

/// How profiles are built.
///
/// ```toml
/// [[tables]]
/// table = "crm.public.customers"
/// attributes = ["name", "city"]
/// priority = 10
/// identifiers = [
///   { column = "email", namespace = "email", normaliser = "email" },
///   { column = "phone", namespace = "phone", normaliser = { phone = { default_region = "US" } } },
/// ]
///
/// [[tables]]
/// table = "shop.public.bookings"
/// child = { link = { column = "customer_email", namespace = "email", normaliser = "email" },
///           aggregates = [{ name = "bookings", kind = "count" },
///                         { name = "total", kind = { sum = { column = "amount" } } }] }
///
/// [policies]
/// tier = "source_priority"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfilesConfig {
    /// The topic change events are written to (`POST /v1/events/{topic}`, CDC sources)
    /// and consumed from.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// How that topic is created (partitions, retention).
    #[serde(default)]
    pub topic_config: tidewater_log::TopicConfig,
    /// The topic every profile change is published to (the new profile, or a removal
    /// marker), keyed by customer id.
    #[serde(default = "default_output_topic")]
    pub output_topic: String,
    /// The source tables. Events of other tables are skipped.
    pub tables: Vec<TableConfig>,
    /// The identity graph's guardrails.
    #[serde(default)]
    pub graph: GraphConfig,
    /// Merge policy per attribute name; attributes not listed use
    /// [`MergePolicy::LatestEventTime`].
    #[serde(default)]
    pub policies: BTreeMap<String, MergePolicy>,
    /// The largest profile, in bytes of its JSON. A change that would make a profile
    /// larger is dead-lettered and the profile keeps its previous state, so every profile
    /// fits one record of the output topic (at most `log.max_record_bytes`).
    #[serde(default = "default_max_profile_bytes")]
    pub max_profile_bytes: u64,
}

/// One source table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// The table as [`tidewater_cdc::ChangeEvent::table_id`] names it:
    /// `database.schema.table`, e.g. `crm.public.customers`.
    pub table: String,
    /// Columns whose values identify the customer a row belongs to. Rows of this table
    /// are records of the identity graph. Empty for child tables.
    #[serde(default)]
    pub identifiers: Vec<IdentifierColumn>,
    /// Columns copied into the profile, under the column's name. A missing or null value
    /// contributes nothing.
    #[serde(default)]
    pub attributes: Vec<String>,
    /// The table's priority (higher wins) for [`MergePolicy::SourcePriority`] and for
    /// ties under [`MergePolicy::LatestEventTime`]. Default 0.
    #[serde(default)]
    pub priority: i32,
    /// Set for child tables (bookings, orders): their rows are not identity records but
    /// are aggregated into the profile of the customer they name.
    #[serde(default)]
    pub child: Option<ChildConfig>,
}

/// A column holding an identifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentifierColumn {
    /// The column.
    pub column: String,
    /// The identifier's namespace, e.g. `email`.
    pub namespace: String,
    /// How the column's value is normalised.
    pub normaliser: Normaliser,
}

/// How a child table's rows attach to a customer and what is computed over them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChildConfig {
    /// The column naming the customer by one of their identifiers (e.g.
    /// `customer_email`). A row whose value does not normalise, or names no customer,
    /// counts for nobody.
    pub link: IdentifierColumn,
    /// Aggregates over the customer's child rows, stored in the profile by name.
    #[serde(default)]
    pub aggregates: Vec<Aggregate>,
}

/// One aggregate over a customer's child rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Aggregate {
    /// The name under which it appears in [`crate::Profile::aggregates`].
    pub name: String,
    /// What is computed.
    pub kind: AggregateKind,
}

/// What an aggregate computes. Numeric aggregates read JSON numbers and numeric strings
/// (as Debezium writes decimals); a null or missing value counts for nothing, and a change
/// whose row holds anything else there is dead-lettered, as is one that would make a sum
/// overflow a 64-bit float.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AggregateKind {
    /// The number of rows.
    Count,
    /// The sum of a column: an integer while every value is one, else a float; 0 with no
    /// rows.
    Sum {
        /// The column.
        column: String,
    },
    /// The largest value of a column; null with no values.
    Max {
        /// The column.
        column: String,
    },
    /// The smallest value of a column; null with no values.
    Min {
        /// The column.
        column: String,
    },
}

/// How one attribute's value is chosen among the customer's records that have it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MergePolicy {
    /// The value with the latest event time; ties go to the higher table priority, then
    /// to the smaller record id (table, then key).
    #[default]
    LatestEventTime,
    /// The value from the table with the highest priority; ties go to the later event
    /// time, then to the smaller record id.
    SourcePriority,
    /// Every value, as a JSON array ordered by record id (table, then key).
    CollectList,
}

/// A configuration that cannot work. User input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProfilesConfigError {
    /// Two entries name the same table.
    #[error("table {table:?} is configured twice")]
    DuplicateTable {
        /// The table.
        table: String,
    },
    /// A child table also declares identifiers.
    #[error("child table {table:?} must not declare identifiers (it links through `child.link`)")]
    ChildWithIdentifiers {
        /// The table.
        table: String,
    },
    /// Two aggregates share a name.
    #[error("aggregate {name:?} is defined twice")]
    DuplicateAggregate {
        /// The name.
        name: String,
    },
    /// `max_profile_bytes` is 0: no profile could be stored.
    #[error("max_profile_bytes must be at least 1")]
    ZeroMaxProfileBytes,
    /// A normaliser setting is invalid.
    #[error("table {table:?}, column {column:?}: {source}")]
    Normaliser {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// What is wrong.
        #[source]
        source: crate::identifier::NormaliseError,
    },
}

fn default_topic() -> String {
    "changes".to_owned()
}

fn default_output_topic() -> String {
    "profiles".to_owned()
}

fn default_max_profile_bytes() -> u64 {
    1024 * 1024
}

impl Default for ProfilesConfig {
    fn default() -> Self {
        Self {
            topic: default_topic(),
            topic_config: tidewater_log::TopicConfig::default(),
            output_topic: default_output_topic(),
            tables: Vec::new(),
            graph: GraphConfig::default(),
            policies: BTreeMap::new(),
            max_profile_bytes: default_max_profile_bytes(),
        }
    }
}

impl ProfilesConfig {
    /// Checks what serde cannot: unique tables and aggregate names, child tables without
    /// identifiers, valid normalisers, a maximum profile size above 0.
    pub fn validate(&self) -> Result<(), ProfilesConfigError> {
        if self.max_profile_bytes == 0 {
            return Err(ProfilesConfigError::ZeroMaxProfileBytes);
        }
        let mut tables = BTreeSet::new();
        let mut aggregates = BTreeSet::new();
        for t in &self.tables {
            if !tables.insert(t.table.as_str()) {
                return Err(ProfilesConfigError::DuplicateTable {
                    table: t.table.clone(),
                });
            }
            let mut columns: Vec<&IdentifierColumn> = t.identifiers.iter().collect();
            if let Some(child) = &t.child {
                if !t.identifiers.is_empty() {
                    return Err(ProfilesConfigError::ChildWithIdentifiers {
                        table: t.table.clone(),
                    });
                }
                columns.push(&child.link);
                for a in &child.aggregates {
                    if !aggregates.insert(a.name.as_str()) {
                        return Err(ProfilesConfigError::DuplicateAggregate {
                            name: a.name.clone(),
                        });
                    }
                }
            }
            for c in columns {
                c.normaliser
                    .validate()
                    .map_err(|source| ProfilesConfigError::Normaliser {
                        table: t.table.clone(),
                        column: c.column.clone(),
                        source,
                    })?;
            }
        }
        Ok(())
    }

    /// The configuration of `table`, if it is a source.
    pub fn table(&self, table: &str) -> Option<&TableConfig> {
        self.tables.iter().find(|t| t.table == table)
    }

    /// The policy of an attribute.
    pub fn policy(&self, attribute: &str) -> MergePolicy {
        self.policies.get(attribute).copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_from_json_and_validates() {
        let config: ProfilesConfig = serde_json::from_str(
            r#"{
              "tables": [
                { "table": "crm.public.customers", "attributes": ["name"], "priority": 2,
                  "identifiers": [{ "column": "email", "namespace": "email", "normaliser": "email" }] },
                { "table": "shop.public.bookings",
                  "child": { "link": { "column": "customer_email", "namespace": "email", "normaliser": "email" },
                             "aggregates": [{ "name": "n", "kind": "count" },
                                            { "name": "total", "kind": { "sum": { "column": "amount" } } }] } }
              ],
              "policies": { "name": "source_priority" }
            }"#,
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(config.policy("name"), MergePolicy::SourcePriority);
        assert_eq!(config.policy("other"), MergePolicy::LatestEventTime);
        assert!(serde_json::from_str::<ProfilesConfig>(r#"{ "tables": [], "typo": 1 }"#).is_err());

        let mut twice = config.clone();
        twice.tables.push(config.tables[0].clone());
        assert!(matches!(
            twice.validate(),
            Err(ProfilesConfigError::DuplicateTable { .. })
        ));
    }
}
