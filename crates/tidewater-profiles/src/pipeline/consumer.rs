//! [`ProfilesPipeline`]: applies row changes to the stored rows, the identity graph and
//! the profiles, all in the engine's transaction.

use std::collections::BTreeSet;

use std::sync::Arc;

use redb::{
    Database, MultimapTable, ReadableMultimapTable, ReadableTable, Table, WriteTransaction,
};
use serde_json::Map;
use tidewater_engine::{DeadLetter, Outbox, Pipeline, PipelineError, Prepared};
use tidewater_log::{Log, Record};
use tidewater_metrics::Metrics;
use tracing::warn;

use super::decode::{decode_record, Decoded, RowChange, RowChangeKind};
use super::state::{create_profile_tables, decode, encode, CHILD_LINKS, PROFILES, ROWS};
use crate::error::ProfilesError;
use crate::graph::{CustomerId, GraphChange, GuardrailReport, IdentityGraph, RecordId, RedbStore};
use crate::identifier::Identifier;
use crate::profile::{
    child_link, merge_profile, row_identifiers, ProfileInput, ProfilesConfig, StoredRow,
};

/// Consumes a topic of raw Debezium records (key and value as the connector wrote them)
/// and maintains one merged profile per customer.
pub struct ProfilesPipeline {
    name: String,
    topic: String,
    config: ProfilesConfig,
    /// Where profile changes are published, when set.
    output: Option<Output>,
}

/// Where profile changes are published, and what counts them.
struct Output {
    log: Arc<dyn Log>,
    outbox: Outbox,
    metrics: Arc<Metrics>,
}

/// What a committed batch changed, for `after_commit`.
#[derive(Debug, Default)]
pub struct Applied {
    /// Customers whose profile was written.
    pub updated: Vec<CustomerId>,
    /// Customers whose profile was deleted (merged away or without records).
    pub removed: Vec<CustomerId>,
    /// Links the graph's guardrails refused.
    pub guardrails: Vec<GuardrailReport>,
}

impl ProfilesPipeline {
    /// A pipeline named `name` consuming `topic`. Creates its tables in `db`, so queries
    /// work before the first event.
    pub fn new(
        name: impl Into<String>,
        topic: impl Into<String>,
        config: ProfilesConfig,
        db: &Database,
    ) -> Result<Self, ProfilesError> {
        create_profile_tables(db)?;
        Ok(Self {
            name: name.into(),
            topic: topic.into(),
            config,
            output: None,
        })
    }

    /// Publishes every profile change (the new profile, or a removal marker) to
    /// `topic`, keyed by customer id.
    pub fn with_output(
        mut self,
        log: Arc<dyn Log>,
        topic: impl Into<String>,
        metrics: Arc<Metrics>,
    ) -> Self {
        self.output = Some(Output {
            log,
            outbox: Outbox::new("profiles", topic),
            metrics,
        });
        self
    }

    /// Publishes profile changes recorded but not yet on the output topic (after a
    /// restart); returns how many.
    pub fn publish_pending(&self, db: &Database) -> Result<usize, ProfilesError> {
        match &self.output {
            Some(output) => Ok(output
                .outbox
                .publish(db, output.log.as_ref(), &output.metrics)?),
            None => Ok(0),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ProfilesConfig {
        &self.config
    }

    /// Applies decoded changes inside `txn` (what [`Pipeline::apply`] does); public so
    /// that callers without an engine (tests, replays) can drive the pipeline.
    pub fn apply_changes(
        &self,
        txn: &WriteTransaction,
        changes: Vec<RowChange>,
    ) -> Result<Applied, ProfilesError> {
        let mut state = BatchState {
            config: &self.config,
            graph: IdentityGraph::new(RedbStore::open(txn)?, self.config.graph.clone()),
            rows: txn.open_table(ROWS)?,
            links: txn.open_multimap_table(CHILD_LINKS)?,
            profiles: txn.open_table(PROFILES)?,
            change: GraphChange::default(),
            dirty_records: BTreeSet::new(),
            dirty_links: BTreeSet::new(),
        };
        for change in changes {
            state.apply(change)?;
        }
        state.write_profiles()
    }
}

/// The tables and the bookkeeping of one batch.
struct BatchState<'a, 'txn> {
    config: &'a ProfilesConfig,
    graph: IdentityGraph<RedbStore<'txn>>,
    rows: Table<'txn, (&'static str, &'static str), &'static [u8]>,
    links: MultimapTable<'txn, &'static str, (&'static str, &'static str)>,
    profiles: Table<'txn, u64, &'static [u8]>,
    /// What the graph did in this batch.
    change: GraphChange,
    /// Identity records whose row changed (their customer's attributes may have).
    dirty_records: BTreeSet<RecordId>,
    /// Link identifiers of child rows that changed (their customer's aggregates may have).
    dirty_links: BTreeSet<Identifier>,
}

fn row_key(record: &RecordId) -> (&str, &str) {
    (record.source.as_str(), record.key.as_str())
}

impl BatchState<'_, '_> {
    fn row(&self, record: &RecordId) -> Result<Option<StoredRow>, ProfilesError> {
        match self.rows.get(row_key(record))? {
            Some(bytes) => decode("rows", bytes.value()).map(Some),
            None => Ok(None),
        }
    }

    fn apply(&mut self, change: RowChange) -> Result<(), ProfilesError> {
        let RowChange { record, kind, .. } = change;
        match kind {
            RowChangeKind::Upsert {
                after,
                patch,
                removed_fields,
                event_time_ms,
            } => {
                let old = self.row(&record)?;
                let after = match after {
                    Some(after) => after,
                    None => {
                        let mut row = old.as_ref().map(|r| r.after.clone()).unwrap_or_default();
                        row.extend(patch.unwrap_or_default());
                        for field in &removed_fields {
                            row.remove(field);
                        }
                        row
                    }
                };
                let row = StoredRow {
                    after,
                    event_time_ms,
                };
                self.rows
                    .insert(row_key(&record), encode("rows", &row)?.as_slice())?;
                self.row_changed(&record, old.map(|r| r.after), Some(&row.after))
            }
            RowChangeKind::Delete => {
                let old = self.row(&record)?;
                if old.is_some() {
                    self.rows.remove(row_key(&record))?;
                }
                self.row_changed(&record, old.map(|r| r.after), None)
            }
            RowChangeKind::Truncate => {
                let table = record.source.clone();
                let mut keys = Vec::new();
                for entry in self.rows.range((table.as_str(), "")..)? {
                    let (key, _) = entry?;
                    let (source, key) = key.value();
                    if source != table {
                        break;
                    }
                    keys.push(RecordId::new(source, key));
                }
                for key in keys {
                    self.apply(RowChange {
                        offset: change.offset,
                        record: key,
                        kind: RowChangeKind::Delete,
                    })?;
                }
                Ok(())
            }
        }
    }

    /// Updates the graph or the child links for a row's new image (`None`: deleted).
    fn row_changed(
        &mut self,
        record: &RecordId,
        old: Option<Map<String, serde_json::Value>>,
        new: Option<&Map<String, serde_json::Value>>,
    ) -> Result<(), ProfilesError> {
        let Some(table) = self.config.table(&record.source) else {
            return Ok(());
        };
        match &table.child {
            None => {
                let change = match new {
                    Some(row) => self
                        .graph
                        .upsert_record(record.clone(), row_identifiers(table, row))?,
                    None => self.graph.delete_record(record)?,
                };
                self.change.extend(change);
                self.dirty_records.insert(record.clone());
            }
            Some(child) => {
                let old_link = old.and_then(|row| child_link(&table.table, child, &row));
                let new_link = new.and_then(|row| child_link(&table.table, child, row));
                if let Some(link) = &old_link {
                    self.links
                        .remove(link.to_string().as_str(), row_key(record))?;
                    self.dirty_links.insert(link.clone());
                }
                if let Some(link) = &new_link {
                    self.links
                        .insert(link.to_string().as_str(), row_key(record))?;
                    self.dirty_links.insert(link.clone());
                }
            }
        }
        Ok(())
    }

    /// Recomputes the profile of every customer the batch may have changed; deletes the
    /// profiles of customers that are gone.
    fn write_profiles(mut self) -> Result<Applied, ProfilesError> {
        let change = std::mem::take(&mut self.change);
        let mut affected: BTreeSet<CustomerId> = change.touched.iter().copied().collect();
        affected.extend(change.created.iter().copied());
        affected.extend(change.removed.iter().copied());
        for (absorbed, survivor) in &change.merged {
            affected.extend([*absorbed, *survivor]);
        }
        for (kept, new) in &change.split {
            affected.insert(*kept);
            affected.extend(new.iter().copied());
        }
        for record in &self.dirty_records {
            affected.extend(self.graph.customer_of(record)?);
        }
        for link in &self.dirty_links {
            affected.extend(self.graph.resolve(link)?);
        }
        let mut applied = Applied {
            guardrails: change.guardrails,
            ..Applied::default()
        };
        for customer in affected {
            let live = crate::graph::GraphStore::customer(self.graph.store(), customer)?;
            if live.is_some() {
                let profile = merge_profile(self.config, customer, &self.input(customer)?);
                self.profiles
                    .insert(customer.get(), encode("profiles", &profile)?.as_slice())?;
                applied.updated.push(customer);
            } else if self.profiles.remove(customer.get())?.is_some() {
                applied.removed.push(customer);
            }
        }
        Ok(applied)
    }

    /// A live customer's rows, identifiers and child rows.
    fn input(&self, customer: CustomerId) -> Result<ProfileInput, ProfilesError> {
        let mut input = ProfileInput::default();
        let mut linked = BTreeSet::new();
        for record in self.graph.members(customer)? {
            if let Some(entry) = self.graph.record(&record)? {
                input.identifiers.extend(entry.identifiers);
                linked.extend(entry.linked);
            }
            if let Some(row) = self.row(&record)? {
                input.members.push((record, row));
            }
        }
        for link in linked {
            for value in self.links.get(link.to_string().as_str())? {
                let value = value?;
                let (source, key) = value.value();
                let child = RecordId::new(source, key);
                if let Some(row) = self.row(&child)? {
                    input.children.push((child, row));
                }
            }
        }
        Ok(input)
    }
}

fn to_pipeline_error(e: ProfilesError) -> PipelineError {
    match e {
        ProfilesError::State(e) => PipelineError::State(e),
        other => PipelineError::Internal(other.to_string()),
    }
}

impl Pipeline for ProfilesPipeline {
    type Batch = Vec<RowChange>;
    type Effects = Applied;

    fn name(&self) -> &str {
        &self.name
    }

    fn topic(&self) -> &str {
        &self.topic
    }

    fn prepare(
        &self,
        _db: &Database,
        records: &[Record],
    ) -> Result<Prepared<Self::Batch>, PipelineError> {
        let mut batch = Vec::new();
        let mut dead_letters = Vec::new();
        for record in records {
            match decode_record(&self.config, record) {
                Decoded::Change(change) => batch.push(change),
                Decoded::Skip => {}
                Decoded::Reject(reason) => dead_letters.push(DeadLetter {
                    offset: record.offset,
                    reason,
                }),
            }
        }
        Ok(Prepared {
            batch,
            dead_letters,
        })
    }

    fn apply(
        &self,
        txn: &WriteTransaction,
        batch: Self::Batch,
    ) -> Result<Self::Effects, PipelineError> {
        let applied = self.apply_changes(txn, batch).map_err(to_pipeline_error)?;
        if let Some(output) = &self.output {
            let entries = super::outbox::entries(txn, &applied.updated, &applied.removed)
                .map_err(to_pipeline_error)?;
            output.outbox.record(txn, entries)?;
        }
        Ok(applied)
    }

    fn after_commit(&self, db: &Database, effects: Self::Effects) {
        if let Err(e) = self.publish_pending(db) {
            // They stay in the outbox and go out with the next batch or at the next start.
            warn!(pipeline = %self.name, error = %e, "cannot publish profile changes yet");
        }
        for report in effects.guardrails {
            warn!(
                pipeline = %self.name, record = %report.record, identifier = %report.identifier,
                would_be_size = report.would_be_size, limit = report.limit,
                "link refused: the customer would exceed the maximum cluster size"
            );
        }
    }
}
