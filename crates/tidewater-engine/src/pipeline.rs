//! The contract between the engine and a pipeline.

use tidewater_log::Record;

use crate::{DeadLetter, PipelineError};

/// The outcome of [`Pipeline::prepare`]: the work to apply, and the events rejected.
pub struct Prepared<B> {
    /// Work to apply inside the state transaction.
    pub batch: B,
    /// Events that cannot be processed, with the reason. They are recorded in the same
    /// transaction as the batch and published to the dead-letter topic.
    pub dead_letters: Vec<DeadLetter>,
}

/// A stateful consumer of one topic.
///
/// The engine calls `prepare` then `apply` for each batch of one partition, and
/// `after_commit` once the transaction is durable. Workers of different partitions run
/// concurrently, so all three must be safe to call from several threads; records with the
/// same key always arrive at the same worker, in order.
pub trait Pipeline: Send + Sync + 'static {
    /// Work computed outside the transaction.
    type Batch: Send;
    /// What `apply` hands to `after_commit`.
    type Effects: Send;

    /// Name; also the consumer identity under which offsets are stored.
    fn name(&self) -> &str;

    /// The topic consumed.
    fn topic(&self) -> &str;

    /// Heavy, side-effect-free work (parsing, embedding) for a batch of one partition.
    /// May read committed state. An `Err` makes the engine retry the same batch later.
    fn prepare(
        &self,
        db: &redb::Database,
        records: &[Record],
    ) -> Result<Prepared<Self::Batch>, PipelineError>;

    /// Applies the batch inside the transaction that also stores the partition's offset.
    fn apply(
        &self,
        txn: &redb::WriteTransaction,
        batch: Self::Batch,
    ) -> Result<Self::Effects, PipelineError>;

    /// Events `apply` found it cannot process (only known once applied against the state,
    /// e.g. a change that would make a profile too large), with the reason. The engine
    /// records them in the same transaction as those from `prepare`, and publishes them.
    fn rejected_on_apply<'a>(&self, _effects: &'a Self::Effects) -> &'a [DeadLetter] {
        &[]
    }

    /// Runs after the transaction committed: update derived stores and metrics. Must be
    /// idempotent with respect to the committed state (it may be skipped by a crash and is
    /// then recovered from that state on start).
    fn after_commit(&self, db: &redb::Database, effects: Self::Effects);
}
