//! [`KafkaLog`]: the log on a Kafka-protocol broker, through librdkafka (the `rdkafka`
//! crate with its bundled library). Several Tidewater processes share its topics; the
//! broker's consumer groups decide which process owns which partition.
//!
//! What the backend guarantees, in the [`Log`] trait's terms:
//! - an append returns once the broker acknowledged every record with `acks=all`; the
//!   producer is idempotent, so its retries never write a record twice;
//! - keys are routed with Kafka's default partitioner (murmur2), so records keyed by
//!   Debezium or Kafka Connect land where Kafka's own clients put them;
//! - offsets increase but are not dense (transaction markers, compaction);
//! - retention is the broker's (`retention.ms`/`retention.bytes` set when a topic is
//!   created); the broker does not hold records back for lagging groups;
//! - a group name `g` is the Kafka group `<[log.kafka] group>.g`, so several deployments
//!   can share a broker. Committed group offsets are a copy for standard tools (lag);
//!   each pipeline's state store is where it resumes.

mod consumer;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header as KafkaHeader, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, warn};

use crate::{
    AssignmentListener, Consumer, KafkaConfig, Log, LogError, Membership, NewRecord,
    PartitionRange, Position, Record, TopicConfig, TopicPartition,
};

pub use consumer::{KafkaConsumer, KafkaMembership};

/// How long a metadata, watermark or admin request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the producer keeps retrying a record before its append fails.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// Room for the record's framing beyond its key, value and headers.
const RECORD_OVERHEAD: usize = 64 * 1024;

/// The log on a Kafka-protocol broker.
pub struct KafkaLog {
    config: KafkaConfig,
    max_record_bytes: usize,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    /// Random access (`read`, `range`): one assigned consumer, reassigned per call.
    reader: Mutex<BaseConsumer>,
    /// Partition counts of topics seen.
    partitions: Mutex<HashMap<String, u32>>,
    /// The live memberships' consumers by group, which commit the group's offsets (a
    /// broker refuses commits for a group with members from anyone else).
    members: Mutex<HashMap<String, Weak<BaseConsumer<consumer::GroupContext>>>>,
    /// Consumers that read and commit offsets for groups this process is not a member of.
    committers: Mutex<HashMap<String, BaseConsumer>>,
}

impl std::fmt::Debug for KafkaLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaLog")
            .field("brokers", &self.config.brokers)
            .field("group", &self.config.group)
            .finish_non_exhaustive()
    }
}

/// Sets several properties at once.
trait WithProperties {
    /// The user's `[log.kafka] properties`, set last so they override the defaults.
    fn with(&mut self, properties: &BTreeMap<String, String>) -> &mut Self;
}

impl WithProperties for ClientConfig {
    fn with(&mut self, properties: &BTreeMap<String, String>) -> &mut Self {
        for (key, value) in properties {
            self.set(key, value);
        }
        self
    }
}

/// A librdkafka error as the log's error.
pub(crate) fn broker(error: KafkaError) -> LogError {
    LogError::Broker(error.to_string())
}

impl KafkaLog {
    /// Connects to the brokers in `config`. Records larger than `max_record_bytes` are
    /// refused before anything is sent.
    pub fn connect(config: &KafkaConfig, max_record_bytes: usize) -> Result<Arc<Self>, LogError> {
        let producer: FutureProducer = Self::client_config(config)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "5")
            .set(
                "message.timeout.ms",
                DELIVERY_TIMEOUT.as_millis().to_string(),
            )
            .set(
                "message.max.bytes",
                (max_record_bytes + RECORD_OVERHEAD).to_string(),
            )
            .with(&config.properties)
            .create()
            .map_err(broker)?;
        let admin = Self::client_config(config)
            .with(&config.properties)
            .create()
            .map_err(broker)?;
        let log = Arc::new(Self {
            config: config.clone(),
            max_record_bytes,
            producer,
            admin,
            reader: Mutex::new(Self::assigned_consumer(config, None)?),
            partitions: Mutex::new(HashMap::new()),
            members: Mutex::new(HashMap::new()),
            committers: Mutex::new(HashMap::new()),
        });
        // Fail at start, not at the first append, when no broker answers.
        log.producer
            .client()
            .fetch_metadata(None, REQUEST_TIMEOUT)
            .map_err(|e| {
                LogError::Broker(format!(
                    // The bootstrap list holds no secrets: those go in `properties`.
                    "no broker answered at {}: {e}",
                    config.brokers
                ))
            })?;
        Ok(log)
    }

    /// The Kafka group behind the log's group name `group`.
    pub fn kafka_group(&self, group: &str) -> String {
        format!("{}.{group}", self.config.group)
    }

    fn client_config(config: &KafkaConfig) -> ClientConfig {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.brokers)
            .set(
                "client.id",
                config.client_id.as_deref().unwrap_or(&config.group),
            )
            .set("log_level", "4");
        client
    }

    /// A consumer that reads assigned partitions (and commits for `group`, if given).
    pub(crate) fn assigned_consumer(
        config: &KafkaConfig,
        group: Option<&str>,
    ) -> Result<BaseConsumer, LogError> {
        let mut client = Self::client_config(config);
        client
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false");
        // librdkafka wants a group id even for assigned reading (which joins no group and
        // commits nothing); the reader's own name keeps it apart from real groups.
        let reader_group = format!("{}.reader", config.group);
        client.set("group.id", group.unwrap_or(&reader_group));
        client.with(&config.properties).create().map_err(broker)
    }

    fn topic_partitions(&self, topic: &str) -> Result<u32, LogError> {
        if let Some(&count) = self.partitions.lock().get(topic) {
            return Ok(count);
        }
        let metadata = self
            .producer
            .client()
            .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
            .map_err(broker)?;
        let count = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map(|t| t.partitions().len() as u32)
            .filter(|&count| count > 0)
            .ok_or_else(|| LogError::UnknownTopic {
                topic: topic.to_owned(),
            })?;
        self.partitions.lock().insert(topic.to_owned(), count);
        Ok(count)
    }

    fn check_partition(&self, topic: &str, partition: u32) -> Result<(), LogError> {
        if partition >= self.topic_partitions(topic)? {
            return Err(LogError::UnknownPartition {
                topic: topic.to_owned(),
                partition,
            });
        }
        Ok(())
    }

    /// The partition's `(low, high)` watermarks, from the broker.
    pub(crate) fn watermarks(&self, topic: &str, partition: u32) -> Result<(u64, u64), LogError> {
        self.check_partition(topic, partition)?;
        let (low, high) = self
            .producer
            .client()
            .fetch_watermarks(topic, partition as i32, REQUEST_TIMEOUT)
            .map_err(broker)?;
        Ok((low.max(0) as u64, high.max(0) as u64))
    }

    fn check_record(&self, record: &NewRecord) -> Result<(), LogError> {
        let size = record.value.len()
            + record.key.as_ref().map_or(0, Vec::len)
            + record
                .headers
                .iter()
                .map(|h| h.name.len() + h.value.as_ref().map_or(0, Vec::len))
                .sum::<usize>();
        if size > self.max_record_bytes {
            return Err(LogError::RecordTooLarge {
                size,
                max: self.max_record_bytes,
            });
        }
        Ok(())
    }

    /// Registers the consumer of a live membership, which commits for its group.
    pub(crate) fn register_member(
        &self,
        group: &str,
        consumer: &Arc<BaseConsumer<consumer::GroupContext>>,
    ) {
        self.members
            .lock()
            .insert(group.to_owned(), Arc::downgrade(consumer));
    }

    /// Runs `f` with this process's (cached) consumer of `kafka_group`, which reads and
    /// writes the group's offsets without joining it.
    fn with_committer<R>(
        &self,
        kafka_group: &str,
        f: impl FnOnce(&BaseConsumer) -> R,
    ) -> Result<R, LogError> {
        let mut committers = self.committers.lock();
        let committer = match committers.entry(kafka_group.to_owned()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(Self::assigned_consumer(&self.config, Some(kafka_group))?)
            }
        };
        Ok(f(committer))
    }

    fn commit_list(offsets: &[(TopicPartition, u64)]) -> Result<TopicPartitionList, LogError> {
        let mut list = TopicPartitionList::new();
        for (tp, next) in offsets {
            list.add_partition_offset(&tp.topic, tp.partition as i32, Offset::Offset(*next as i64))
                .map_err(broker)?;
        }
        Ok(list)
    }
}

impl Log for KafkaLog {
    fn consumer(self: Arc<Self>) -> Result<Box<dyn Consumer>, LogError> {
        Ok(Box::new(KafkaConsumer::new(self)?))
    }

    fn join_group(
        self: Arc<Self>,
        group: &str,
        topics: &[String],
        listener: Box<dyn AssignmentListener>,
    ) -> Result<Box<dyn Membership>, LogError> {
        for topic in topics {
            self.topic_partitions(topic)?;
        }
        Ok(Box::new(KafkaMembership::join(
            self, group, topics, listener,
        )?))
    }

    fn ensure_topic(&self, topic: &str, config: &TopicConfig) -> Result<(), LogError> {
        crate::embedded::validate_topic_name(topic)?;
        config.check(topic)?;
        if self.topic_partitions(topic).is_ok() {
            return Ok(());
        }
        let retention_ms = config
            .retention_age
            .map_or("-1".to_owned(), |age| age.as_millis().to_string());
        let retention_bytes = config
            .retention_bytes
            .map_or("-1".to_owned(), |bytes| bytes.to_string());
        let max_message_bytes = (self.max_record_bytes + RECORD_OVERHEAD).to_string();
        let new_topic = NewTopic::new(
            topic,
            config.partitions as i32,
            // The broker's default.replication.factor.
            TopicReplication::Fixed(-1),
        )
        .set("retention.ms", &retention_ms)
        .set("retention.bytes", &retention_bytes)
        .set("max.message.bytes", &max_message_bytes);
        let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
        let results = futures_executor::block_on(self.admin.create_topics([&new_topic], &options))
            .map_err(broker)?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(LogError::Broker(format!(
                        "cannot create topic '{name}': {code}"
                    )))
                }
            }
        }
        // Metadata reaches every broker a little after creation.
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            match self.topic_partitions(topic) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn partitions(&self, topic: &str) -> Result<u32, LogError> {
        self.topic_partitions(topic)
    }

    fn append(&self, topic: &str, records: Vec<NewRecord>) -> Result<Vec<Position>, LogError> {
        self.topic_partitions(topic)?;
        // Check every record first: a refused append sends none of them.
        for record in &records {
            self.check_record(record)?;
        }
        let mut deliveries = Vec::with_capacity(records.len());
        for record in &records {
            let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
            for header in &record.headers {
                headers = headers.insert(KafkaHeader {
                    key: &header.name,
                    value: header.value.as_deref(),
                });
            }
            let mut message = FutureRecord::to(topic)
                .payload(&record.value)
                .timestamp(record.timestamp_ms)
                .headers(headers);
            if let Some(key) = &record.key {
                message = message.key(key);
            }
            loop {
                match self.producer.send_result(message) {
                    Ok(delivery) => {
                        deliveries.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        // The producer's queue is full: let deliveries drain.
                        self.producer.poll(Duration::from_millis(10));
                        message = back;
                    }
                    Err((e, _)) => return Err(broker(e)),
                }
            }
        }
        let mut positions = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            match futures_executor::block_on(delivery) {
                Ok(Ok(delivered)) => positions.push(Position {
                    partition: delivered.partition as u32,
                    offset: delivered.offset as u64,
                }),
                Ok(Err((e, _))) => return Err(broker(e)),
                Err(_) => return Err(LogError::Closed),
            }
        }
        Ok(positions)
    }

    fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max_records: usize,
    ) -> Result<Vec<Record>, LogError> {
        let (low, high) = self.watermarks(topic, partition)?;
        if from < low || from > high {
            return Err(LogError::OffsetOutOfRange {
                topic: topic.to_owned(),
                partition,
                offset: from,
                start: low,
                end: high,
            });
        }
        let mut records = Vec::new();
        if from == high || max_records == 0 {
            return Ok(records);
        }
        let reader = self.reader.lock();
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(topic, partition as i32, Offset::Offset(from as i64))
            .map_err(broker)?;
        reader.assign(&list).map_err(broker)?;
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let mut next = from;
        while records.len() < max_records && next < high {
            let Some(polled) = reader.poll(Duration::from_millis(100)) else {
                // What remains below the high watermark may be only transaction markers.
                if !records.is_empty() {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(LogError::Broker(format!(
                        "timed out reading {topic}/{partition} at offset {next}"
                    )));
                }
                continue;
            };
            let message = polled.map_err(broker)?;
            let record = consumer::record_of(&message);
            if record.offset >= from {
                next = record.offset + 1;
                records.push(record);
            }
        }
        reader.unassign().map_err(broker)?;
        Ok(records)
    }

    fn wait_for(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        timeout: Duration,
    ) -> Result<bool, LogError> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.watermarks(topic, partition)?.1 > offset {
                return Ok(true);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }

    fn range(&self, topic: &str, partition: u32) -> Result<PartitionRange, LogError> {
        let (start, end) = self.watermarks(topic, partition)?;
        Ok(PartitionRange { start, end })
    }

    fn commit_offsets(
        &self,
        group: &str,
        offsets: &[(TopicPartition, u64)],
    ) -> Result<(), LogError> {
        crate::embedded::validate_group_name(group)?;
        if offsets.is_empty() {
            return Ok(());
        }
        let list = Self::commit_list(offsets)?;
        let kafka_group = self.kafka_group(group);
        let member = self
            .members
            .lock()
            .get(&kafka_group)
            .and_then(Weak::upgrade);
        let result = match member {
            Some(member) => member.commit(&list, CommitMode::Async),
            None => self.with_committer(&kafka_group, |committer| {
                committer.commit(&list, CommitMode::Sync)
            })?,
        };
        match result {
            Ok(()) => Ok(()),
            // Another member owns the group and commits its own copy; ours is only a
            // copy for tools, never where a pipeline resumes.
            Err(KafkaError::ConsumerCommit(
                RDKafkaErrorCode::UnknownMemberId | RDKafkaErrorCode::IllegalGeneration,
            )) => {
                debug!(group = %kafka_group, "group offsets not copied: the group has other members");
                Ok(())
            }
            Err(e) => {
                warn!(group = %kafka_group, error = %e, "cannot copy group offsets to the broker");
                Err(broker(e))
            }
        }
    }

    fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<u64>, LogError> {
        crate::embedded::validate_group_name(group)?;
        let kafka_group = self.kafka_group(group);
        let mut list = TopicPartitionList::new();
        list.add_partition(topic, partition as i32);
        let committed = self
            .with_committer(&kafka_group, |consumer| {
                consumer.committed_offsets(list, REQUEST_TIMEOUT)
            })?
            .map_err(broker)?;
        let offset = committed
            .find_partition(topic, partition as i32)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) if o >= 0 => Some(o as u64),
                _ => None,
            });
        Ok(offset)
    }

    fn topics(&self) -> Result<Vec<String>, LogError> {
        let metadata = self
            .producer
            .client()
            .fetch_metadata(None, REQUEST_TIMEOUT)
            .map_err(broker)?;
        let mut names: Vec<String> = metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none() && !t.name().starts_with("__"))
            .map(|t| t.name().to_owned())
            .collect();
        names.sort();
        Ok(names)
    }

    fn close(&self) -> Result<(), LogError> {
        self.producer.flush(REQUEST_TIMEOUT).map_err(broker)
    }
}
