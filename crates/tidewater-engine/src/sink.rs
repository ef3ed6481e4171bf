//! The contract between the engine and a sink: a pipeline whose target stores each
//! partition's offset in its own transaction (pgvector, the lake), so several processes
//! can share the target and a partition can move between them.

use tidewater_log::Record;

use crate::{PipelineError, Prepared};

/// Where a batch sits in its partition, for [`Sink::commit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkPosition {
    /// The partition.
    pub partition: u32,
    /// The next offset the target must still hold for this partition (`None`: it never
    /// stored one). Anything else means another process moved the partition on.
    pub expected: Option<u64>,
    /// The next offset after this batch, stored with it.
    pub next: u64,
}

/// A consumer of one topic whose target commits the partition's next offset together
/// with the batch, in one transaction of its own, fenced by the offset it expects.
///
/// The engine calls `committed` when it takes a partition (that is where it resumes),
/// then `prepare` and `commit` for each batch. A commit refused because the stored
/// offset moved returns [`PipelineError::Fenced`]: the engine reads `committed` again and
/// goes on from there, so a batch lands exactly once however ownership moves. Events the
/// sink rejects in `prepare` go to the dead-letter topic before the batch commits (at
/// least once: a retried batch may publish a letter again, with the same source offset).
/// Workers of different partitions run concurrently.
pub trait Sink: Send + Sync + 'static {
    /// Work computed outside the transaction.
    type Batch: Send;

    /// Name; also the consumer group and the pipeline under which offsets are stored.
    fn name(&self) -> &str;

    /// The topic consumed.
    fn topic(&self) -> &str;

    /// The next offset stored with the partition's last committed batch.
    fn committed(&self, partition: u32) -> Result<Option<u64>, PipelineError>;

    /// Heavy, side-effect-free work (parsing, embedding) for a batch of one partition.
    /// An `Err` makes the engine retry the batch later.
    fn prepare(
        &self,
        partition: u32,
        records: &[Record],
    ) -> Result<Prepared<Self::Batch>, PipelineError>;

    /// Writes the batch and `position.next` in one transaction, only if the target still
    /// holds `position.expected` for the partition; [`PipelineError::Fenced`] otherwise,
    /// having written nothing.
    fn commit(&self, position: &SinkPosition, batch: Self::Batch) -> Result<(), PipelineError>;
}
