//! [`EmbeddedConsumer`]: the [`Consumer`] of the embedded log, reading partitions through
//! their published ends and waiting on the log-wide publication notice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::log::EmbeddedLog;
use crate::{Consumer, Fetched, Log, LogError, TopicPartition};

/// A consumer of an [`EmbeddedLog`]'s partitions.
#[derive(Debug)]
pub struct EmbeddedConsumer {
    log: Arc<EmbeddedLog>,
    positions: BTreeMap<TopicPartition, u64>,
}

impl EmbeddedConsumer {
    pub(crate) fn new(log: Arc<EmbeddedLog>) -> Self {
        Self {
            log,
            positions: BTreeMap::new(),
        }
    }

    /// Reads what one partition holds from `position`, moving past deleted records.
    fn fetch(
        &self,
        partition: &TopicPartition,
        position: u64,
        max_records: usize,
    ) -> Result<(Fetched, u64), LogError> {
        let range = self.log.range(&partition.topic, partition.partition)?;
        let (from, skipped) = if position < range.start {
            (range.start, Some((position, range.start)))
        } else {
            (position, None)
        };
        let records = if from >= range.end {
            // Caught up, or positioned past records a loss took: new ones come after.
            Vec::new()
        } else {
            self.log
                .read(&partition.topic, partition.partition, from, max_records)?
        };
        let next = records.last().map_or(from, |last| last.offset + 1);
        let fetched = Fetched {
            partition: partition.clone(),
            records,
            high_watermark: range.end,
            skipped,
        };
        Ok((fetched, next))
    }
}

impl Consumer for EmbeddedConsumer {
    fn assign(&mut self, positions: Vec<(TopicPartition, u64)>) -> Result<(), LogError> {
        for (partition, _) in &positions {
            // Fails for an unknown topic or partition.
            self.log.range(&partition.topic, partition.partition)?;
        }
        self.positions = positions.into_iter().collect();
        Ok(())
    }

    fn assignment(&self) -> Vec<TopicPartition> {
        self.positions.keys().cloned().collect()
    }

    fn seek(&mut self, partition: &TopicPartition, offset: u64) -> Result<(), LogError> {
        let position =
            self.positions
                .get_mut(partition)
                .ok_or_else(|| LogError::UnknownPartition {
                    topic: partition.topic.clone(),
                    partition: partition.partition,
                })?;
        *position = offset;
        Ok(())
    }

    fn position(&self, partition: &TopicPartition) -> Option<u64> {
        self.positions.get(partition).copied()
    }

    fn poll(&mut self, max_records: usize, timeout: Duration) -> Result<Vec<Fetched>, LogError> {
        let deadline = Instant::now() + timeout;
        loop {
            // Read the notice first: a publication after this point wakes the wait below.
            let epoch = self.log.appended().epoch();
            let mut polled = Vec::with_capacity(self.positions.len());
            for (partition, &position) in &self.positions {
                polled.push(self.fetch(partition, position, max_records)?);
            }
            let found = polled
                .iter()
                .any(|(fetched, _)| !fetched.records.is_empty() || fetched.skipped.is_some());
            if found || Instant::now() >= deadline {
                for (fetched, next) in &polled {
                    self.positions.insert(fetched.partition.clone(), *next);
                }
                return Ok(polled.into_iter().map(|(fetched, _)| fetched).collect());
            }
            self.log.appended().wait_past(epoch, deadline);
        }
    }
}
