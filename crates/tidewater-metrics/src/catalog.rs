//! Every metric Tidewater exports, defined in this one place.

use crate::{Counter, Family, FloatGauge, Gauge, HealthConfig, Histogram, Watchdog};

/// Latency buckets in seconds, from 1 ms to 60 s.
pub(crate) static LATENCY_BOUNDS: [f64; 20] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5,
    2.5, 5.0, 10.0, 60.0,
];

/// All of Tidewater's metrics. One instance is shared by every component of a process.
pub struct Metrics {
    /// Records appended to the log, by topic.
    pub log_appended_records: Family<Counter>,
    /// Records the log should hold but found missing (damaged or deleted files, a power
    /// loss), by topic and partition.
    pub log_lost_records: Family<Counter>,
    /// Bytes retention would delete but keeps because a consumer group has not committed
    /// them yet, by topic and partition.
    pub log_retention_held_bytes: Family<Gauge>,
    /// Records a pipeline consumed and committed, by pipeline and topic.
    pub pipeline_records: Family<Counter>,
    /// Batches a pipeline committed, by pipeline.
    pub pipeline_batches: Family<Counter>,
    /// Batches a pipeline had to retry after an external failure, by pipeline.
    pub pipeline_retries: Family<Counter>,
    /// Records not yet consumed, by pipeline, topic and partition.
    pub pipeline_lag: Family<Gauge>,
    /// 1 for a partition whose worker stopped on an error retrying cannot fix (a broken
    /// invariant, a corrupt state store), by pipeline, topic and partition.
    pub pipeline_stopped: Family<Gauge>,
    /// Events sent to the dead-letter topic, by pipeline and source topic.
    pub dead_letters: Family<Counter>,
    /// Outbox entries the log refused for good (larger than a record may be), left out of
    /// their output topic so that the entries after them are published, by topic.
    pub outbox_refused: Family<Counter>,
    /// Chunks sent to the embedding model (cache misses).
    pub embedded_chunks: Counter,
    /// Chunks whose embedding was reused from the cache (unchanged text).
    pub reused_chunks: Counter,
    /// Documents currently indexed.
    pub documents: Gauge,
    /// Vectors currently in the index.
    pub index_vectors: Gauge,
    /// Documents whose indexed state differed from their source at the last reconcile.
    pub drift_documents: Gauge,
    /// Reconcile passes run.
    pub reconcile_runs: Counter,
    /// Seconds from a change being observed by its source to it being searchable.
    pub freshness_seconds: Histogram,
    /// Search requests served.
    pub search_requests: Counter,
    /// Seconds spent answering a search request.
    pub search_seconds: Histogram,
    /// HTTP requests answered, by status class (2xx, 4xx, 5xx).
    pub http_responses: Family<Counter>,
    /// WAL a CDC replication slot still holds (bytes behind the server's current
    /// position), by slot.
    pub cdc_slot_lag_bytes: Family<Gauge>,
    /// Analytics events that arrived after their window closed, by topic (sent to the
    /// late side topic, never counted).
    pub late_events: Family<Counter>,
    /// KPI windows closed and published.
    pub kpi_windows: Counter,
    /// KPIs of the most recently closed window, by KPI name and model (`all` overall).
    pub kpi: Family<FloatGauge>,
    /// End (ms since the Unix epoch) of the most recently closed KPI window.
    pub kpi_window_end_ms: Gauge,
    /// Parquet files written to the lake, by topic.
    pub lake_files: Family<Counter>,
    /// Rows written to the lake, by topic.
    pub lake_rows: Family<Counter>,
    /// Answers served by `/v1/ask`, by model and outcome (`ok`, `failed`).
    pub answers: Family<Counter>,
    /// Progress of every source and pipeline; rendered as `tidewater_component_stalled`.
    pub watchdog: Watchdog,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(&HealthConfig::default())
    }
}

impl Metrics {
    /// An empty catalogue whose watchdog reports stalls after `health.stall_after`.
    pub fn new(health: &HealthConfig) -> Self {
        Self {
            log_appended_records: Family::new(&["topic"], Counter::default),
            log_lost_records: Family::new(&["topic", "partition"], Counter::default),
            log_retention_held_bytes: Family::new(&["topic", "partition"], Gauge::default),
            pipeline_records: Family::new(&["pipeline", "topic"], Counter::default),
            pipeline_batches: Family::new(&["pipeline"], Counter::default),
            pipeline_retries: Family::new(&["pipeline"], Counter::default),
            pipeline_lag: Family::new(&["pipeline", "topic", "partition"], Gauge::default),
            pipeline_stopped: Family::new(&["pipeline", "topic", "partition"], Gauge::default),
            dead_letters: Family::new(&["pipeline", "topic"], Counter::default),
            outbox_refused: Family::new(&["topic"], Counter::default),
            embedded_chunks: Counter::default(),
            reused_chunks: Counter::default(),
            documents: Gauge::default(),
            index_vectors: Gauge::default(),
            drift_documents: Gauge::default(),
            reconcile_runs: Counter::default(),
            freshness_seconds: Histogram::new(&LATENCY_BOUNDS),
            search_requests: Counter::default(),
            search_seconds: Histogram::new(&LATENCY_BOUNDS),
            http_responses: Family::new(&["class"], Counter::default),
            cdc_slot_lag_bytes: Family::new(&["slot"], Gauge::default),
            late_events: Family::new(&["topic"], Counter::default),
            kpi_windows: Counter::default(),
            kpi: Family::new(&["kpi", "model"], FloatGauge::default),
            kpi_window_end_ms: Gauge::default(),
            lake_files: Family::new(&["topic"], Counter::default),
            lake_rows: Family::new(&["topic"], Counter::default),
            answers: Family::new(&["model", "outcome"], Counter::default),
            watchdog: Watchdog::new(health),
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        use crate::render::Writer;
        let mut w = Writer::default();
        w.counter_family(
            "tidewater_log_appended_records_total",
            "Records appended to the log.",
            &self.log_appended_records,
        );
        w.counter_family(
            "tidewater_log_lost_records_total",
            "Records the log should hold but found missing (damage, deleted files, power loss).",
            &self.log_lost_records,
        );
        w.gauge_family(
            "tidewater_log_retention_held_bytes",
            "Bytes retention keeps beyond its limit because a consumer has not committed them.",
            &self.log_retention_held_bytes,
        );
        w.counter_family(
            "tidewater_pipeline_records_total",
            "Records consumed and committed by a pipeline.",
            &self.pipeline_records,
        );
        w.counter_family(
            "tidewater_pipeline_batches_total",
            "Batches committed by a pipeline.",
            &self.pipeline_batches,
        );
        w.counter_family(
            "tidewater_pipeline_retries_total",
            "Batches retried after an external failure.",
            &self.pipeline_retries,
        );
        w.gauge_family(
            "tidewater_pipeline_lag_records",
            "Records appended but not yet committed by a pipeline.",
            &self.pipeline_lag,
        );
        w.gauge_family(
            "tidewater_pipeline_stopped",
            "1 for a partition stopped on an error that retrying cannot fix (until restart).",
            &self.pipeline_stopped,
        );
        w.counter_family(
            "tidewater_dead_letters_total",
            "Events sent to the dead-letter topic.",
            &self.dead_letters,
        );
        w.counter_family(
            "tidewater_outbox_refused_total",
            "Outbox entries the log refused for good, left out of their output topic.",
            &self.outbox_refused,
        );
        w.counter(
            "tidewater_embedded_chunks_total",
            "Chunks sent to the embedding model.",
            &self.embedded_chunks,
        );
        w.counter(
            "tidewater_reused_chunks_total",
            "Chunks whose embedding was reused because their text was unchanged.",
            &self.reused_chunks,
        );
        w.gauge("tidewater_documents", "Documents indexed.", &self.documents);
        w.gauge(
            "tidewater_index_vectors",
            "Vectors in the index.",
            &self.index_vectors,
        );
        w.gauge(
            "tidewater_drift_documents",
            "Documents out of step with their source at the last reconcile.",
            &self.drift_documents,
        );
        w.counter(
            "tidewater_reconcile_runs_total",
            "Reconcile passes run.",
            &self.reconcile_runs,
        );
        w.histogram(
            "tidewater_freshness_seconds",
            "Seconds from a change observed to searchable.",
            &self.freshness_seconds,
        );
        w.counter(
            "tidewater_search_requests_total",
            "Search requests served.",
            &self.search_requests,
        );
        w.histogram(
            "tidewater_search_seconds",
            "Seconds to answer a search request.",
            &self.search_seconds,
        );
        w.counter_family(
            "tidewater_http_responses_total",
            "HTTP responses by status class.",
            &self.http_responses,
        );
        w.gauge_family(
            "tidewater_cdc_slot_lag_bytes",
            "WAL bytes a CDC replication slot holds behind the server's current position.",
            &self.cdc_slot_lag_bytes,
        );
        w.counter_family(
            "tidewater_late_events_total",
            "Analytics events that arrived after their window closed (sent to the late topic).",
            &self.late_events,
        );
        w.counter(
            "tidewater_kpi_windows_total",
            "KPI windows closed and published.",
            &self.kpi_windows,
        );
        w.float_gauge_family(
            "tidewater_kpi",
            "KPIs of the most recently closed window, by KPI and model (all: overall).",
            &self.kpi,
        );
        w.gauge(
            "tidewater_kpi_window_end_ms",
            "End of the most recently closed KPI window, ms since the Unix epoch.",
            &self.kpi_window_end_ms,
        );
        w.counter_family(
            "tidewater_lake_files_total",
            "Parquet files written to the lake.",
            &self.lake_files,
        );
        w.counter_family(
            "tidewater_lake_rows_total",
            "Rows written to the lake.",
            &self.lake_rows,
        );
        w.counter_family(
            "tidewater_answers_total",
            "Answers served by /v1/ask, by model and outcome.",
            &self.answers,
        );
        w.watchdog(
            "tidewater_component_stalled",
            "1 while a source or pipeline has work and makes no progress, or has failed.",
            &self.watchdog,
        );
        w.finish()
    }
}
