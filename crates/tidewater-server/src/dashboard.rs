//! The live dashboard: the page at `/` with its script and style (served from here, no
//! external resources, no inline code, so its Content-Security-Policy allows nothing
//! else) and `/v1/stats`, the JSON snapshot of the process metrics it polls beside
//! `/v1/kpis`.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::Json;
use serde::Serialize;
use tidewater_metrics::{ComponentStatus, Counter, Family, Metrics};

use crate::AppState;

/// The page's script.
pub(crate) const SCRIPT_PATH: &str = "/dashboard.js";
/// The page's style sheet.
pub(crate) const STYLE_PATH: &str = "/dashboard.css";

/// The page may run its own script and style and fetch the API, nothing else; no page
/// may frame it.
const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// `GET /`: the dashboard page.
pub(crate) async fn page() -> impl IntoResponse {
    (
        [(header::CONTENT_SECURITY_POLICY, PAGE_CSP)],
        Html(include_str!("../assets/dashboard.html")),
    )
}

/// `GET /dashboard.js`.
pub(crate) async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../assets/dashboard.js"),
    )
}

/// `GET /dashboard.css`.
pub(crate) async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../assets/dashboard.css"),
    )
}

/// `GET /v1/stats`: ingest, lag, freshness, index, lake, dead-letter and answer figures,
/// read from the process metrics at one instant. The shape is stable (the dashboard and
/// scripts read it); every list is sorted by its labels and lists only label
/// combinations that have been seen:
///
/// ```json
/// {
///   "now_ms": 1795300000000,
///   "ready": true,
///   "topics": [{"topic": "documents", "appended_total": 120}],
///   "pipelines": [{"pipeline": "knowledge", "topic": "documents",
///                  "records_total": 118, "lag": 2, "dead_letters": 0}],
///   "freshness_ms": {"p50": 41.5, "p95": 180.0, "p99": 240.0, "count": 118},
///   "index": {"documents": 117, "vectors": 950},
///   "lake": [{"topic": "conversations", "files": 3, "rows": 1200}],
///   "answers": [{"model": "m", "outcome": "ok", "count": 12}],
///   "late_events": [{"topic": "feedback", "count": 1}],
///   "components": [{"component": "pipeline knowledge/0", "condition": "working",
///                   "since_progress_ms": 120}]
/// }
/// ```
///
/// `now_ms` is the server's clock (ms since the Unix epoch), so a client can turn
/// successive `appended_total`s into rates without trusting its own clock. `lag` sums
/// the pipeline's lag over the topic's partitions. `freshness_ms` is the source-to-
/// searchable latency estimated from the histogram; its quantiles are `null` while
/// `count` is 0. `components` is every source and pipeline the watchdog knows, in
/// registration order: `condition` is `idle`, `working`, `stalled` or `failed`, with a
/// `reason` for the last two.
pub(crate) async fn stats(State(state): State<AppState>) -> Json<Stats> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Json(Stats::read(
        &state.metrics,
        state.ready.load(Ordering::SeqCst),
        now_ms,
    ))
}

/// The body of `GET /v1/stats` (see [`stats`] for the JSON).
#[derive(Debug, Serialize)]
pub(crate) struct Stats {
    now_ms: u64,
    ready: bool,
    topics: Vec<TopicStats>,
    pipelines: Vec<PipelineStats>,
    freshness_ms: Freshness,
    index: IndexStats,
    lake: Vec<LakeStats>,
    answers: Vec<AnswerStats>,
    late_events: Vec<TopicCount>,
    components: Vec<ComponentStatus>,
}

#[derive(Debug, Serialize)]
struct TopicStats {
    topic: String,
    appended_total: u64,
}

#[derive(Debug, Default, Serialize)]
struct PipelineStats {
    pipeline: String,
    topic: String,
    records_total: u64,
    lag: i64,
    dead_letters: u64,
}

#[derive(Debug, Serialize)]
struct Freshness {
    p50: Option<f64>,
    p95: Option<f64>,
    p99: Option<f64>,
    count: u64,
}

#[derive(Debug, Serialize)]
struct IndexStats {
    documents: i64,
    vectors: i64,
}

#[derive(Debug, Default, Serialize)]
struct LakeStats {
    topic: String,
    files: u64,
    rows: u64,
}

#[derive(Debug, Serialize)]
struct AnswerStats {
    model: String,
    outcome: String,
    count: u64,
}

#[derive(Debug, Serialize)]
struct TopicCount {
    topic: String,
    count: u64,
}

impl Stats {
    /// Reads every figure from `metrics`.
    fn read(metrics: &Metrics, ready: bool, now_ms: u64) -> Self {
        Self {
            now_ms,
            ready,
            topics: counts(&metrics.log_appended_records)
                .map(|(mut labels, appended_total)| TopicStats {
                    topic: labels.swap_remove(0),
                    appended_total,
                })
                .collect(),
            pipelines: pipelines(metrics),
            freshness_ms: freshness(metrics),
            index: IndexStats {
                documents: metrics.documents.get(),
                vectors: metrics.index_vectors.get(),
            },
            lake: lake(metrics),
            answers: counts(&metrics.answers)
                .map(|(labels, count)| {
                    let [model, outcome] = two(labels);
                    AnswerStats {
                        model,
                        outcome,
                        count,
                    }
                })
                .collect(),
            late_events: counts(&metrics.late_events)
                .map(|(mut labels, count)| TopicCount {
                    topic: labels.swap_remove(0),
                    count,
                })
                .collect(),
            components: metrics.watchdog.statuses(),
        }
    }
}

/// Each member of a counter family with its label values, in label order.
fn counts(family: &Family<Counter>) -> impl Iterator<Item = (Vec<String>, u64)> {
    family
        .members()
        .into_iter()
        .map(|(labels, counter)| (labels, counter.get()))
}

/// The first two label values of a member (families with two labels).
fn two(labels: Vec<String>) -> [String; 2] {
    let mut labels = labels.into_iter();
    [
        labels.next().unwrap_or_default(),
        labels.next().unwrap_or_default(),
    ]
}

/// One row per (pipeline, topic) seen by any of the three pipeline families, the lag
/// summed over partitions.
fn pipelines(metrics: &Metrics) -> Vec<PipelineStats> {
    fn row(
        rows: &mut BTreeMap<[String; 2], PipelineStats>,
        key: [String; 2],
    ) -> &mut PipelineStats {
        rows.entry(key.clone()).or_insert_with(|| {
            let [pipeline, topic] = key;
            PipelineStats {
                pipeline,
                topic,
                ..PipelineStats::default()
            }
        })
    }
    let mut rows = BTreeMap::new();
    for (labels, n) in counts(&metrics.pipeline_records) {
        row(&mut rows, two(labels)).records_total += n;
    }
    for (labels, lag) in metrics.pipeline_lag.members() {
        // Labels: pipeline, topic, partition.
        row(&mut rows, two(labels)).lag += lag.get();
    }
    for (labels, n) in counts(&metrics.dead_letters) {
        row(&mut rows, two(labels)).dead_letters += n;
    }
    rows.into_values().collect()
}

/// Freshness quantiles in milliseconds (the histogram is in seconds).
fn freshness(metrics: &Metrics) -> Freshness {
    let snapshot = metrics.freshness_seconds.snapshot();
    // Interpolated quantiles carry meaningless digits: a tenth of a millisecond is plenty.
    let ms = |q: f64| snapshot.quantile(q).map(|s| (s * 10_000.0).round() / 10.0);
    Freshness {
        p50: ms(0.5),
        p95: ms(0.95),
        p99: ms(0.99),
        count: snapshot.count,
    }
}

/// Lake files and rows per topic (the two families are labelled alike but are separate
/// counters, so a topic may have appeared in only one of them so far).
fn lake(metrics: &Metrics) -> Vec<LakeStats> {
    fn row(rows: &mut BTreeMap<String, LakeStats>, topic: String) -> &mut LakeStats {
        rows.entry(topic.clone()).or_insert_with(|| LakeStats {
            topic,
            ..LakeStats::default()
        })
    }
    let mut rows = BTreeMap::new();
    for (mut labels, n) in counts(&metrics.lake_files) {
        row(&mut rows, labels.swap_remove(0)).files += n;
    }
    for (mut labels, n) in counts(&metrics.lake_rows) {
        row(&mut rows, labels.swap_remove(0)).rows += n;
    }
    rows.into_values().collect()
}
