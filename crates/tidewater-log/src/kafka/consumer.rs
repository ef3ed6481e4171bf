//! Reading from Kafka ([`KafkaConsumer`]: assigned partitions at the positions a pipeline
//! chose) and owning partitions ([`KafkaMembership`]: a consumer-group member that only
//! serves the group and tells its listener what it owns).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers as _};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Message as _, Offset, TopicPartitionList};
use tracing::{error, info, warn};

use super::{broker, KafkaLog, WithProperties as _};
use crate::{
    AssignmentListener, Consumer, Fetched, Header, LogError, Membership, Record, TopicPartition,
};

/// How often a partition's high watermark is asked of the broker while no records come.
const WATERMARK_REFRESH: Duration = Duration::from_millis(500);
/// How long leaving a group may take.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A record read from Kafka, as the log's record.
pub(crate) fn record_of(message: &BorrowedMessage<'_>) -> Record {
    let headers = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| Header {
                    name: h.key.to_owned(),
                    value: h.value.map(<[u8]>::to_vec),
                })
                .collect()
        })
        .unwrap_or_default();
    Record {
        partition: message.partition() as u32,
        offset: message.offset() as u64,
        timestamp_ms: message.timestamp().to_millis().unwrap_or(0),
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        headers,
    }
}

/// One assigned partition's reading state.
#[derive(Debug, Default)]
struct Assigned {
    /// The offset the next record handed out comes from.
    position: u64,
    /// Records fetched but not handed out yet (a poll hands out at most `max_records`).
    buffered: VecDeque<Record>,
    /// `(low, high)` watermarks and when they were asked.
    watermarks: Option<((u64, u64), Instant)>,
}

/// A [`Consumer`] of a Kafka log: reads assigned partitions from positions the caller
/// sets. It joins no group: a [`KafkaMembership`] decides which partitions a process owns.
pub struct KafkaConsumer {
    log: Arc<KafkaLog>,
    consumer: BaseConsumer,
    assigned: BTreeMap<TopicPartition, Assigned>,
}

impl KafkaConsumer {
    pub(crate) fn new(log: Arc<KafkaLog>) -> Result<Self, LogError> {
        let consumer = KafkaLog::assigned_consumer(&log.config, None)?;
        Ok(Self {
            log,
            consumer,
            assigned: BTreeMap::new(),
        })
    }

    /// Tells librdkafka to fetch every assigned partition from its position.
    fn reassign(&mut self) -> Result<(), LogError> {
        let mut list = TopicPartitionList::new();
        for (tp, assigned) in &mut self.assigned {
            assigned.buffered.clear();
            list.add_partition_offset(
                &tp.topic,
                tp.partition as i32,
                Offset::Offset(assigned.position as i64),
            )
            .map_err(broker)?;
        }
        self.consumer.assign(&list).map_err(broker)
    }

    /// Buffers what librdkafka has, waiting up to `timeout` for the first record.
    fn fetch(&mut self, max_records: usize, timeout: Duration) -> Result<(), LogError> {
        let mut wait = timeout;
        let mut taken = 0;
        while taken < max_records * self.assigned.len().max(1) {
            let Some(polled) = self.consumer.poll(wait) else {
                break;
            };
            wait = Duration::ZERO;
            let message = match polled {
                Ok(message) => message,
                Err(KafkaError::PartitionEOF(_)) => continue,
                Err(e) => return Err(broker(e)),
            };
            let record = record_of(&message);
            let tp = TopicPartition::new(message.topic(), record.partition);
            if let Some(assigned) = self.assigned.get_mut(&tp) {
                let expected = assigned
                    .buffered
                    .back()
                    .map_or(assigned.position, |last| last.offset + 1);
                // Stale records from before a seek are dropped.
                if record.offset >= expected {
                    assigned.buffered.push_back(record);
                    taken += 1;
                }
            }
        }
        Ok(())
    }

    fn watermarks(&mut self, tp: &TopicPartition) -> Result<(u64, u64), LogError> {
        let assigned = self.assigned.get(tp).ok_or_else(|| not_assigned(tp))?;
        if let Some((marks, asked)) = assigned.watermarks {
            if asked.elapsed() < WATERMARK_REFRESH {
                return Ok(marks);
            }
        }
        let marks = self.log.watermarks(&tp.topic, tp.partition)?;
        if let Some(assigned) = self.assigned.get_mut(tp) {
            assigned.watermarks = Some((marks, Instant::now()));
        }
        Ok(marks)
    }
}

fn not_assigned(tp: &TopicPartition) -> LogError {
    LogError::InvalidRecord(format!("{tp} is not assigned to this consumer"))
}

impl Consumer for KafkaConsumer {
    fn assign(&mut self, positions: Vec<(TopicPartition, u64)>) -> Result<(), LogError> {
        for (tp, _) in &positions {
            self.log.check_partition(&tp.topic, tp.partition)?;
        }
        self.assigned = positions
            .into_iter()
            .map(|(tp, position)| {
                let assigned = Assigned {
                    position,
                    ..Assigned::default()
                };
                (tp, assigned)
            })
            .collect();
        self.reassign()
    }

    fn assignment(&self) -> Vec<TopicPartition> {
        self.assigned.keys().cloned().collect()
    }

    fn seek(&mut self, partition: &TopicPartition, offset: u64) -> Result<(), LogError> {
        let assigned = self
            .assigned
            .get_mut(partition)
            .ok_or_else(|| not_assigned(partition))?;
        assigned.position = offset;
        self.reassign()
    }

    fn position(&self, partition: &TopicPartition) -> Option<u64> {
        self.assigned.get(partition).map(|a| a.position)
    }

    fn poll(&mut self, max_records: usize, timeout: Duration) -> Result<Vec<Fetched>, LogError> {
        if self.assigned.values().all(|a| a.buffered.is_empty()) {
            self.fetch(max_records, timeout)?;
        } else {
            self.fetch(max_records, Duration::ZERO)?;
        }
        let partitions: Vec<TopicPartition> = self.assigned.keys().cloned().collect();
        let mut out = Vec::with_capacity(partitions.len());
        let mut reposition = false;
        for tp in partitions {
            let (low, high) = self.watermarks(&tp)?;
            let Some(assigned) = self.assigned.get_mut(&tp) else {
                continue;
            };
            let take = assigned.buffered.len().min(max_records);
            let records: Vec<Record> = assigned.buffered.drain(..take).collect();
            let mut skipped = None;
            // Retention or a loss took records this consumer was positioned at; the
            // broker moved on to the partition's start.
            if assigned.position < low && records.first().is_none_or(|r| r.offset >= low) {
                skipped = Some((assigned.position, low));
                assigned.position = low;
                reposition = records.is_empty();
            }
            if let Some(last) = records.last() {
                assigned.position = last.offset + 1;
            }
            let high_watermark = high.max(assigned.position);
            out.push(Fetched {
                partition: tp,
                records,
                high_watermark,
                skipped,
            });
        }
        if reposition {
            self.reassign()?;
        }
        Ok(out)
    }
}

/// Callbacks of a group member's consumer: hands rebalances to the listener.
pub(crate) struct GroupContext {
    group: String,
    listener: Mutex<Box<dyn AssignmentListener>>,
    held: Mutex<BTreeSet<TopicPartition>>,
}

impl ClientContext for GroupContext {}

fn partitions_of(list: &TopicPartitionList) -> Vec<TopicPartition> {
    list.elements()
        .iter()
        .map(|e| TopicPartition::new(e.topic(), e.partition() as u32))
        .collect()
}

impl ConsumerContext for GroupContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        list: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let partitions = partitions_of(list);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let assigned = if cooperative {
                    consumer.incremental_assign(list)
                } else {
                    consumer.assign(list)
                };
                // The member only owns: its partitions are read by the pipelines'
                // own consumers, so this one fetches nothing.
                if let Err(e) = assigned.and_then(|()| consumer.pause(list)) {
                    error!(group = %self.group, error = %e, "cannot take assigned partitions");
                }
                info!(group = %self.group, partitions = ?partitions, "partitions assigned");
                self.held.lock().extend(partitions.iter().cloned());
                self.listener.lock().assigned(&partitions);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                info!(group = %self.group, partitions = ?partitions, "partitions revoked");
                self.listener.lock().revoked(&partitions);
                {
                    let mut held = self.held.lock();
                    for tp in &partitions {
                        held.remove(tp);
                    }
                }
                let result = if cooperative {
                    consumer.incremental_unassign(list)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = result {
                    warn!(group = %self.group, error = %e, "cannot give up revoked partitions");
                }
            }
            other => {
                // The group is in an unknown state: give everything up.
                error!(group = %self.group, error = ?other, "rebalance failed; giving up all partitions");
                let held: Vec<TopicPartition> =
                    std::mem::take(&mut *self.held.lock()).into_iter().collect();
                if !held.is_empty() {
                    self.listener.lock().revoked(&held);
                }
                if let Err(e) = consumer.unassign() {
                    warn!(group = %self.group, error = %e, "cannot give up partitions");
                }
            }
        }
    }
}

/// A member of a Kafka consumer group (cooperative-sticky assignment).
pub struct KafkaMembership {
    consumer: Arc<BaseConsumer<GroupContext>>,
    group: String,
}

impl KafkaMembership {
    pub(crate) fn join(
        log: Arc<KafkaLog>,
        group: &str,
        topics: &[String],
        listener: Box<dyn AssignmentListener>,
    ) -> Result<Self, LogError> {
        let kafka_group = log.kafka_group(group);
        let context = GroupContext {
            group: kafka_group.clone(),
            listener: Mutex::new(listener),
            held: Mutex::new(BTreeSet::new()),
        };
        let mut client = KafkaLog::client_config(&log.config);
        client
            .set("group.id", &kafka_group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .with(&log.config.properties);
        let consumer: BaseConsumer<GroupContext> =
            client.create_with_context(context).map_err(broker)?;
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(broker)?;
        let consumer = Arc::new(consumer);
        log.register_member(&kafka_group, &consumer);
        Ok(Self {
            consumer,
            group: kafka_group,
        })
    }
}

impl Membership for KafkaMembership {
    fn poll(&mut self, timeout: Duration) -> Result<(), LogError> {
        // Partitions are paused, so a poll only serves the group (and errors).
        match self.consumer.poll(timeout) {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(e)) => {
                warn!(group = %self.group, error = %e, "consumer group error");
                Ok(())
            }
        }
    }

    fn assignment(&self) -> Vec<TopicPartition> {
        self.consumer
            .context()
            .held
            .lock()
            .iter()
            .cloned()
            .collect()
    }

    fn leave(&mut self) -> Result<(), LogError> {
        self.consumer.unsubscribe();
        let deadline = Instant::now() + LEAVE_TIMEOUT;
        while !self.consumer.context().held.lock().is_empty() && Instant::now() < deadline {
            let _ = self.consumer.poll(Duration::from_millis(100));
        }
        let held: Vec<TopicPartition> = std::mem::take(&mut *self.consumer.context().held.lock())
            .into_iter()
            .collect();
        if !held.is_empty() {
            // The group did not answer in time: stop working on them anyway.
            self.consumer.context().listener.lock().revoked(&held);
        }
        Ok(())
    }
}

impl Drop for KafkaMembership {
    fn drop(&mut self) {
        let _ = self.leave();
    }
}
