//! [`ProfilesPipeline`]: applies row changes to the stored rows, the identity graph and
//! the profiles, all in the engine's transaction.
//!
//! A change after which a customer's profile would not be valid — larger than
//! `max_profile_bytes`, or with a sum that overflows — is not applied: it is dead-lettered
//! with the reason and the profile keeps its previous state. The common batch is checked
//! once, at its end; only a batch that would leave an invalid profile is undone and
//! applied again change by change, to find the changes to refuse. (Undoing restores every
//! row; the identity graph is brought back by the inverse upserts and deletes, so a
//! customer merged and split again in that batch may get a new id.)

use std::collections::{BTreeMap, BTreeSet};

use std::sync::Arc;

use redb::{
    Database, MultimapTable, ReadableMultimapTable, ReadableTable, Table, WriteTransaction,
};
use serde_json::Map;
use tidewater_core::RetryHint;
use tidewater_engine::{DeadLetter, Handover, Lease, Outbox, Pipeline, PipelineError, Prepared};
use tidewater_log::{Log, Record};
use tidewater_metrics::Metrics;
use tracing::warn;

use super::decode::{decode_record, Decoded, RowChange, RowChangeKind};
use super::state::{create_profile_tables, decode, encode, CHILD_LINKS, PROFILES, ROWS};
use crate::error::ProfilesError;
use crate::graph::{CustomerId, GraphChange, GuardrailReport, IdentityGraph, RecordId, RedbStore};
use crate::identifier::Identifier;
use crate::profile::{
    child_link, merge_profile, non_numeric_value, row_identifiers, try_merge_profile,
    ProfileDefect, ProfileInput, ProfilesConfig, StoredRow,
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
    /// Changes not applied because a profile would not be valid after them, with the
    /// reason; they are dead-lettered.
    pub rejected: Vec<DeadLetter>,
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
        let name = name.into();
        Ok(Self {
            name,
            topic: topic.into(),
            config,
            output: None,
        })
    }

    /// Publishes every profile change (the new profile, or a removal marker) to
    /// `topic`, keyed by customer id. With a `publisher` lease (a replica), only while
    /// holding it: [`Self::republish_all`] then starts each holding.
    pub fn with_output(
        mut self,
        log: Arc<dyn Log>,
        topic: impl Into<String>,
        metrics: Arc<Metrics>,
        publisher: Option<Arc<Lease>>,
    ) -> Self {
        let mut outbox = Outbox::new("profiles", topic).watched(&metrics.watchdog);
        if let Some(lease) = publisher {
            outbox = outbox.leased(lease, Handover::Discard);
        }
        self.output = Some(Output {
            log,
            outbox,
            metrics,
        });
        self
    }

    /// Records every current profile for the output topic and publishes them: what a
    /// replica does when it becomes the publisher. Returns how many were published.
    pub fn republish_all(&self, db: &Database) -> Result<usize, ProfilesError> {
        let Some(output) = &self.output else {
            return Ok(0);
        };
        let txn = db.begin_write()?;
        let entries = super::outbox::all_entries(&txn)?;
        let recorded = output.outbox.record(&txn, entries)?;
        txn.commit()?;
        tracing::info!(pipeline = %self.name, profiles = recorded, "republishing every profile");
        self.publish_pending(db)
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
    /// that callers without an engine (tests, replays) can drive the pipeline. Changes
    /// after which a profile would not be valid are left out and listed in
    /// [`Applied::rejected`].
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
            dirty: Dirty::default(),
        };
        let mut undo = Vec::with_capacity(changes.len());
        for change in &changes {
            undo.push(state.apply(change)?);
        }
        let dirty = std::mem::take(&mut state.dirty);
        let mut built = BTreeMap::new();
        for customer in state.affected(&dirty)? {
            match state.build(customer)? {
                Built::Invalid(..) => return state.refuse_invalid(&changes, undo, dirty),
                built_profile => built.insert(customer, built_profile),
            };
        }
        state.write_profiles(dirty.change.guardrails, built, Vec::new())
    }
}

/// What a batch (or one change) touched: the customers whose profiles may have changed
/// are found from it.
#[derive(Debug, Default)]
struct Dirty {
    /// What the graph did.
    change: GraphChange,
    /// Identity records whose row changed (their customer's attributes may have).
    records: BTreeSet<RecordId>,
    /// Link identifiers of child rows that changed (their customer's aggregates may have).
    links: BTreeSet<Identifier>,
}

impl Dirty {
    fn extend(&mut self, later: Dirty) {
        self.change.extend(later.change);
        self.records.extend(later.records);
        self.links.extend(later.links);
    }
}

/// A customer's profile as the current rows make it.
enum Built {
    /// The customer is gone.
    Gone,
    /// Its profile's JSON.
    Valid(Vec<u8>),
    /// Not valid; the profile's JSON as it is, and why.
    Invalid(Vec<u8>, ProfileDefect),
}

/// The rows one change wrote, with their images before it, in write order.
type Undo = Vec<(RecordId, Option<StoredRow>)>;

/// The tables and the bookkeeping of one batch.
struct BatchState<'a, 'txn> {
    config: &'a ProfilesConfig,
    graph: IdentityGraph<RedbStore<'txn>>,
    rows: Table<'txn, (&'static str, &'static str), &'static [u8]>,
    links: MultimapTable<'txn, &'static str, (&'static str, &'static str)>,
    profiles: Table<'txn, u64, &'static [u8]>,
    /// What the changes applied since it was last taken touched.
    dirty: Dirty,
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

    /// Applies one change; returns what undoes it.
    fn apply(&mut self, change: &RowChange) -> Result<Undo, ProfilesError> {
        let mut undo = Vec::new();
        let RowChange { record, kind, .. } = change;
        match kind {
            RowChangeKind::Upsert {
                after,
                patch,
                removed_fields,
                event_time_ms,
            } => {
                let after = match after {
                    Some(after) => after.clone(),
                    None => {
                        let mut row = self.row(record)?.map(|r| r.after).unwrap_or_default();
                        row.extend(patch.clone().unwrap_or_default());
                        for field in removed_fields {
                            row.remove(field);
                        }
                        row
                    }
                };
                let row = StoredRow {
                    after,
                    event_time_ms: *event_time_ms,
                };
                self.write_row(record, Some(row), &mut undo)?;
            }
            RowChangeKind::Delete => self.write_row(record, None, &mut undo)?,
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
                    self.write_row(&key, None, &mut undo)?;
                }
            }
        }
        Ok(undo)
    }

    /// Undoes one change.
    fn undo(&mut self, undo: Undo) -> Result<(), ProfilesError> {
        let mut ignored = Vec::new();
        for (record, before) in undo.into_iter().rev() {
            self.write_row(&record, before, &mut ignored)?;
        }
        Ok(())
    }

    /// Stores a row's new image (`None`: deleted), noting its old one in `undo`, and
    /// updates the graph or the child links.
    fn write_row(
        &mut self,
        record: &RecordId,
        new: Option<StoredRow>,
        undo: &mut Undo,
    ) -> Result<(), ProfilesError> {
        let old = self.row(record)?;
        match &new {
            Some(row) => {
                self.rows
                    .insert(row_key(record), encode("rows", row)?.as_slice())?;
            }
            None if old.is_some() => {
                self.rows.remove(row_key(record))?;
            }
            None => {}
        }
        undo.push((record.clone(), old.clone()));
        self.row_changed(record, old.map(|r| r.after), new.as_ref().map(|r| &r.after))
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
                self.dirty.change.extend(change);
                self.dirty.records.insert(record.clone());
            }
            Some(child) => {
                let old_link = old.and_then(|row| child_link(&table.table, child, &row));
                let new_link = new.and_then(|row| child_link(&table.table, child, row));
                if let Some(link) = &old_link {
                    self.links
                        .remove(link.to_string().as_str(), row_key(record))?;
                    self.dirty.links.insert(link.clone());
                }
                if let Some(link) = &new_link {
                    self.links
                        .insert(link.to_string().as_str(), row_key(record))?;
                    self.dirty.links.insert(link.clone());
                }
            }
        }
        Ok(())
    }

    /// Every customer whose profile what `dirty` records may have changed.
    fn affected(&self, dirty: &Dirty) -> Result<BTreeSet<CustomerId>, ProfilesError> {
        let change = &dirty.change;
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
        for record in &dirty.records {
            affected.extend(self.graph.customer_of(record)?);
        }
        for link in &dirty.links {
            affected.extend(self.graph.resolve(link)?);
        }
        Ok(affected)
    }

    /// A customer's profile as the rows now make it.
    fn build(&self, customer: CustomerId) -> Result<Built, ProfilesError> {
        if crate::graph::GraphStore::customer(self.graph.store(), customer)?.is_none() {
            return Ok(Built::Gone);
        }
        let input = self.input(customer)?;
        let (profile, defect) = match try_merge_profile(self.config, customer, &input) {
            Ok(profile) => (profile, None),
            Err(defect) => (merge_profile(self.config, customer, &input), Some(defect)),
        };
        let json = encode("profiles", &profile)?;
        let max = self.config.max_profile_bytes;
        let defect = defect.or_else(|| {
            (json.len() as u64 > max).then_some(ProfileDefect::TooLarge {
                bytes: json.len(),
                max,
            })
        });
        Ok(match defect {
            None => Built::Valid(json),
            Some(defect) => Built::Invalid(json, defect),
        })
    }

    /// The first invalid profile among the customers `dirty` affected.
    fn first_invalid(
        &self,
        dirty: &Dirty,
    ) -> Result<Option<(CustomerId, ProfileDefect)>, ProfilesError> {
        for customer in self.affected(dirty)? {
            if let Built::Invalid(_, defect) = self.build(customer)? {
                return Ok(Some((customer, defect)));
            }
        }
        Ok(None)
    }

    /// The batch left an invalid profile: undoes it, then applies its changes one at a
    /// time, undoing and refusing each after which a profile it affects is not valid.
    fn refuse_invalid(
        mut self,
        changes: &[RowChange],
        undo: Vec<Undo>,
        mut dirty: Dirty,
    ) -> Result<Applied, ProfilesError> {
        for change in undo.into_iter().rev() {
            self.undo(change)?;
        }
        dirty.extend(std::mem::take(&mut self.dirty));
        let mut rejected = Vec::new();
        for change in changes {
            let undo = self.apply(change)?;
            let touched = std::mem::take(&mut self.dirty);
            let invalid = self.first_invalid(&touched)?;
            dirty.extend(touched);
            if let Some((customer, defect)) = invalid {
                self.undo(undo)?;
                dirty.extend(std::mem::take(&mut self.dirty));
                rejected.push(DeadLetter {
                    offset: change.offset,
                    reason: format!(
                        "change not applied: with it, the profile of customer {customer} \
                         would not be valid: {defect}"
                    ),
                });
            }
        }
        let mut built = BTreeMap::new();
        for customer in self.affected(&dirty)? {
            let profile = self.build(customer)?;
            // A customer whose changes were all refused is back as it was: nothing to
            // write or publish.
            let unchanged = match &profile {
                Built::Valid(json) | Built::Invalid(json, _) => self
                    .profiles
                    .get(customer.get())?
                    .is_some_and(|stored| stored.value() == json.as_slice()),
                Built::Gone => false,
            };
            if !unchanged {
                built.insert(customer, profile);
            }
        }
        self.write_profiles(dirty.change.guardrails, built, rejected)
    }

    /// Stores the profiles built for the affected customers; deletes the profiles of
    /// customers that are gone.
    fn write_profiles(
        mut self,
        guardrails: Vec<GuardrailReport>,
        built: BTreeMap<CustomerId, Built>,
        rejected: Vec<DeadLetter>,
    ) -> Result<Applied, ProfilesError> {
        let mut applied = Applied {
            guardrails,
            rejected,
            ..Applied::default()
        };
        for (customer, profile) in built {
            let json = match profile {
                Built::Valid(json) => json,
                Built::Invalid(json, defect) => {
                    // Only a profile no change of this batch touched for good can still be
                    // invalid: it was so before (a lower limit, an older version).
                    warn!(customer = %customer, reason = %defect,
                        "profile is not valid; it is kept as the rows make it");
                    json
                }
                Built::Gone => {
                    if self.profiles.remove(customer.get())?.is_some() {
                        applied.removed.push(customer);
                    }
                    continue;
                }
            };
            self.profiles.insert(customer.get(), json.as_slice())?;
            applied.updated.push(customer);
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
        // Storage that may come back (I/O, the log): the engine retries the batch.
        other if other.retry_hint() == RetryHint::Retry => {
            PipelineError::external("the profile store", other)
        }
        // Corrupt data or a broken invariant: the engine stops the partition loudly.
        other => PipelineError::Internal(other.to_string()),
    }
}

impl Pipeline for ProfilesPipeline {
    /// The changes, and the records they came from (for the dead letters of changes
    /// refused while applying).
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
        let mut changes = Vec::new();
        let mut dead_letters = Vec::new();
        for record in records {
            match decode_record(&self.config, record) {
                Decoded::Change(change) => match self.unusable_value(&change) {
                    Some(defect) => dead_letters.push(DeadLetter {
                        offset: record.offset,
                        reason: defect.to_string(),
                    }),
                    None => changes.push(change),
                },
                Decoded::Skip => {}
                Decoded::Reject(reason) => dead_letters.push(DeadLetter {
                    offset: record.offset,
                    reason,
                }),
            }
        }
        Ok(Prepared {
            batch: changes,
            dead_letters,
        })
    }

    fn apply(
        &self,
        txn: &WriteTransaction,
        changes: Self::Batch,
    ) -> Result<Self::Effects, PipelineError> {
        let applied = self
            .apply_changes(txn, changes)
            .map_err(to_pipeline_error)?;
        if let Some(output) = &self.output {
            let entries = super::outbox::entries(txn, &applied.updated, &applied.removed)
                .map_err(to_pipeline_error)?;
            output.outbox.record(txn, entries)?;
        }
        Ok(applied)
    }

    fn rejected_on_apply<'a>(&self, effects: &'a Self::Effects) -> &'a [DeadLetter] {
        &effects.rejected
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

impl ProfilesPipeline {
    /// A value of the change's row that a numeric aggregate of its table cannot count.
    fn unusable_value(&self, change: &RowChange) -> Option<ProfileDefect> {
        let RowChangeKind::Upsert { after, patch, .. } = &change.kind else {
            return None;
        };
        let table = self.config.table(&change.record.source)?;
        [after, patch]
            .into_iter()
            .flatten()
            .find_map(|row| non_numeric_value(table, row))
    }
}
