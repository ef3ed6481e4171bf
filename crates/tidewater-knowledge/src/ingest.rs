//! Writing document events to the log: the sink of the file source and the document API.

use std::sync::Arc;

use tidewater_core::DocumentEvent;
use tidewater_core::{EventWriter, WriteError};
use tidewater_log::{Log, NewRecord, Position};
use tidewater_metrics::Metrics;

/// Appends document events to the documents topic, keyed by document id so that the
/// changes of one document stay in order.
pub struct DocumentWriter {
    log: Arc<dyn Log>,
    topic: String,
    metrics: Arc<Metrics>,
}

impl DocumentWriter {
    /// A writer to `topic`.
    pub fn new(log: Arc<dyn Log>, topic: impl Into<String>, metrics: Arc<Metrics>) -> Self {
        Self {
            log,
            topic: topic.into(),
            metrics,
        }
    }

    /// Appends the events; returns once they are durable, with their positions.
    pub fn write(
        &self,
        events: &[DocumentEvent],
    ) -> Result<Vec<Position>, tidewater_log::LogError> {
        let records = events
            .iter()
            .map(|e| NewRecord {
                key: Some(e.doc_id.as_bytes().to_vec()),
                value: e.encode(),
                timestamp_ms: e.observed_at_ms,
                headers: Vec::new(),
            })
            .collect();
        let positions = self.log.append(&self.topic, records)?;
        self.metrics
            .log_appended_records
            .with(&[&self.topic])
            .add(positions.len() as u64);
        Ok(positions)
    }

    /// The topic written to.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

impl EventWriter<DocumentEvent> for DocumentWriter {
    fn write(&self, events: Vec<DocumentEvent>) -> Result<(), WriteError> {
        self.write(&events)
            .map(|_| ())
            .map_err(|e| WriteError::new(format!("cannot append to topic {}", self.topic), e))
    }
}
