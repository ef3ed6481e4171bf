//! The analytics pipeline on a real embedded log: KPIs per closed window on the `kpis`
//! topic and in queries, late events on the `late` topic, bad events dead-lettered, and a
//! restart that neither repeats nor loses a window; hopping windows through the same path.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tidewater_analytics::{Analytics, AnalyticsConfig, KpiReport, WindowConfig};
use tidewater_core::EventTimePolicy;
use tidewater_engine::EngineConfig;
use tidewater_log::{EmbeddedLog, Log, NewRecord};
use tidewater_metrics::Metrics;

fn config() -> AnalyticsConfig {
    AnalyticsConfig {
        window: WindowConfig {
            size: Duration::from_secs(10),
            slide: None,
            allowed_lateness: Duration::from_secs(1),
            idle_timeout: Duration::from_millis(100),
        },
        ..AnalyticsConfig::default()
    }
}

fn engine() -> EngineConfig {
    EngineConfig {
        poll_interval: Duration::from_millis(20),
        ..EngineConfig::default()
    }
}

fn conversation(id: &str, t: u64, model: &str, latency: u64, question: &str) -> Value {
    json!({"conversation_id": id, "event_time_ms": t, "question": question, "answer": "a",
           "model": model, "latency": {"retrieval_ms": 1, "model_ms": latency - 1, "total_ms": latency},
           "citations": [{"chunk_id": "d#1", "doc_id": "d", "score": 0.5}]})
}

fn feedback(id: &str, t: u64, rating: Value, comment: Option<&str>) -> Value {
    let mut f = json!({"conversation_id": id, "event_time_ms": t, "rating": rating});
    if let Some(c) = comment {
        f["comment"] = json!(c);
    }
    f
}

fn topic_values(log: &dyn Log, topic: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for p in 0..log.partitions(topic).unwrap() {
        for r in log.read(topic, p, 0, 100_000).unwrap() {
            out.push(serde_json::from_slice(&r.value).unwrap());
        }
    }
    out
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn final_windows(report: &KpiReport) -> Vec<u64> {
    report
        .windows
        .iter()
        .filter(|w| w.is_final)
        .map(|w| w.result.window_start_ms)
        .collect()
}

/// A log and a running analytics pipeline under `dir`.
fn start(dir: &Path, config: AnalyticsConfig) -> (Arc<dyn Log>, Arc<Metrics>, Arc<Analytics>) {
    let log: Arc<dyn Log> = EmbeddedLog::open(dir.join("log"), Default::default()).unwrap();
    let metrics = Arc::new(Metrics::default());
    let analytics = Analytics::open(
        dir,
        config,
        EventTimePolicy::default(),
        Arc::clone(&log),
        Arc::clone(&metrics),
    )
    .unwrap();
    analytics.start(engine(), None).unwrap();
    (log, metrics, analytics)
}

#[test]
fn windows_close_once_late_events_go_aside_and_restart_continues() {
    let dir = tempfile::tempdir().unwrap();
    let (log, metrics, analytics) = start(dir.path(), config());

    // Window [0, 10 s): two conversations, feedback joined in the same window.
    analytics
        .ingest(
            "conversations",
            vec![
                conversation("c1", 1_000, "m1", 100, "Where is my booking?"),
                conversation("c2", 2_000, "m2", 300, "How do I cancel?"),
            ],
        )
        .unwrap();
    analytics
        .ingest(
            "feedback",
            vec![
                feedback("c1", 3_000, json!("up"), Some("great, thanks")),
                feedback("c2", 4_000, json!("down"), Some("useless and wrong")),
            ],
        )
        .unwrap();
    wait_for("the open window", || {
        let report = analytics.kpis(None, None).unwrap();
        report.windows.len() == 1 && report.windows[0].result.overall.feedback == 2
    });
    let open = analytics.kpis(None, None).unwrap();
    assert!(!open.windows[0].is_final);
    assert_eq!(open.windows[0].result.overall.conversations, 2);

    // Feedback for c2 in a later window keeps c2's model and question (joined upstream);
    // the watermark passes 11 s, closing the first window.
    analytics
        .ingest("feedback", vec![feedback("c2", 12_000, json!(1), None)])
        .unwrap();
    wait_for("the first window to close and be published", || {
        final_windows(&analytics.kpis(None, None).unwrap()) == [0]
            && !topic_values(log.as_ref(), "kpis").is_empty()
    });
    let report = analytics.kpis(None, None).unwrap();
    let first = &report.windows[0].result;
    assert_eq!(first.overall.conversations, 2);
    assert_eq!(first.overall.positive_share, Some(0.5));
    assert_eq!(first.overall.latency_p50_ms, Some(100));
    assert!(first.overall.mean_sentiment.is_some());
    let second = &report.windows[1];
    assert!(!second.is_final);
    assert_eq!(second.result.per_model["m2"].feedback, 1);
    assert_eq!(
        second.result.overall.top_downvoted[0].question,
        "How do I cancel?"
    );

    // Too late for window 0 (the watermark is 12 s, window 0 closed at 11 s).
    analytics
        .ingest(
            "conversations",
            vec![conversation("c3", 500, "m1", 50, "late?")],
        )
        .unwrap();
    // Not a feedback event: rejected at the door, and (appended raw) dead-lettered.
    assert!(analytics
        .ingest(
            "feedback",
            vec![json!({"conversation_id": "c1", "rating": 9})]
        )
        .is_err());
    log.append(
        "feedback",
        vec![NewRecord {
            key: None,
            value: b"{not json".to_vec(),
            timestamp_ms: tidewater_core::time::now_ms(),
            headers: Vec::new(),
        }],
    )
    .unwrap();
    wait_for("the late event and the dead letter", || {
        topic_values(log.as_ref(), "late").len() == 1
            && topic_values(log.as_ref(), "analytics.dead-letters").len() == 1
    });
    let late = &topic_values(log.as_ref(), "late")[0];
    assert_eq!(late["event"]["conversation_id"], "c3");
    assert_eq!(late["watermark_ms"], 12_000);
    assert_eq!(late["missed_window_starts_ms"], json!([0]));
    assert_eq!(analytics.kpis(None, None).unwrap().late_events, 1);
    assert_eq!(metrics.late_events.with(&["conversations"]).get(), 1);

    let kpis = topic_values(log.as_ref(), "kpis");
    assert_eq!(kpis.len(), 1);
    assert_eq!(kpis[0]["window_start_ms"], 0);
    assert_eq!(kpis[0]["overall"]["conversations"], 2);
    assert!(metrics
        .render()
        .contains("tidewater_kpi{kpi=\"positive_share\",model=\"all\"} 0.5"));

    // Restart: the open window survives, nothing is repeated.
    analytics.stop();
    drop(analytics);
    let analytics = Analytics::open(
        dir.path(),
        config(),
        EventTimePolicy::default(),
        Arc::clone(&log),
        Arc::clone(&metrics),
    )
    .unwrap();
    let before = analytics.kpis(None, None).unwrap();
    assert_eq!(before.windows.len(), 2, "{before:?}");
    analytics.start(engine(), None).unwrap();
    analytics
        .ingest(
            "conversations",
            vec![conversation("c4", 25_000, "m1", 70, "next")],
        )
        .unwrap();
    wait_for("the second window to close and be published", || {
        final_windows(&analytics.kpis(None, None).unwrap()) == [0, 10_000]
            && topic_values(log.as_ref(), "kpis").len() >= 2
    });
    let kpis = topic_values(log.as_ref(), "kpis");
    let starts: Vec<u64> = kpis
        .iter()
        .map(|k| k["window_start_ms"].as_u64().unwrap())
        .collect();
    assert_eq!(starts, [0, 10_000]);
    assert_eq!(metrics.log_appended_records.with(&["kpis"]).get(), 2);
    assert_eq!(topic_values(log.as_ref(), "late").len(), 1);
    let range = analytics.kpis(Some(10_000), Some(20_000)).unwrap();
    assert_eq!(range.windows.len(), 1);
    assert_eq!(range.windows[0].result.overall.feedback, 1);
    analytics.stop();
}

#[test]
fn hopping_windows_overlap_and_an_event_late_for_one_still_counts_in_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let mut hopping = config();
    hopping.window.slide = Some(Duration::from_secs(5));
    let (log, _metrics, analytics) = start(dir.path(), hopping);

    // 7 s lies in [0, 10 s) and [5 s, 15 s); 14 s in [5 s, 15 s) and [10 s, 20 s).
    analytics
        .ingest(
            "conversations",
            vec![
                conversation("a", 7_000, "m1", 100, "q"),
                conversation("b", 14_000, "m1", 200, "q"),
            ],
        )
        .unwrap();
    // The watermark (14 s) has closed [0, 10 s) at 11 s; [5 s, 15 s) closes at 16 s.
    wait_for("the first hopping window to close", || {
        final_windows(&analytics.kpis(None, None).unwrap()) == [0]
    });
    let report = analytics.kpis(None, None).unwrap();
    assert_eq!((report.window_ms, report.slide_ms), (10_000, 5_000));
    let counts: Vec<(u64, u64, bool)> = report
        .windows
        .iter()
        .map(|w| {
            let r = &w.result;
            assert_eq!(r.window_end_ms, r.window_start_ms + 10_000);
            (r.window_start_ms, r.overall.conversations, w.is_final)
        })
        .collect();
    assert_eq!(
        counts,
        [(0, 1, true), (5_000, 2, false), (10_000, 1, false)]
    );

    // 9 s is too late for [0, 10 s) but on time for [5 s, 15 s).
    analytics
        .ingest(
            "conversations",
            vec![conversation("c", 9_000, "m1", 300, "q")],
        )
        .unwrap();
    wait_for("the partly late event", || {
        topic_values(log.as_ref(), "late").len() == 1
    });
    let late = &topic_values(log.as_ref(), "late")[0];
    assert_eq!(late["missed_window_starts_ms"], json!([0]));
    let report = analytics.kpis(None, None).unwrap();
    assert_eq!(report.late_events, 1);
    let second = &report.windows[1].result;
    assert_eq!(second.window_start_ms, 5_000);
    assert_eq!(second.overall.conversations, 3);
    assert_eq!(second.overall.latency_p99_ms, Some(300));
    assert_eq!(
        report.windows[0].result.overall.conversations, 1,
        "a closed window does not change"
    );
    analytics.stop();
}

/// H02: one conversation stamped far in the future (2^63 ms) used to move the watermark
/// there, so every later conversation was late and no window for the present was ever
/// computed. The event-time policy refuses it at the door and, appended to the log by any
/// other way, dead-letters it (judged against its log time) without moving the watermark;
/// an event within the skew is accepted.
#[test]
fn h02_a_far_future_event_is_dead_lettered_and_later_events_count_in_their_window() {
    let dir = tempfile::tempdir().unwrap();
    let (log, metrics, analytics) = start(dir.path(), config());
    let now = tidewater_core::time::now_ms();
    let far = 1u64 << 63;

    // At the door: refused, nothing appended.
    let refused = analytics
        .ingest(
            "conversations",
            vec![conversation("door", far, "m1", 10, "q")],
        )
        .unwrap_err();
    assert!(refused.to_string().contains("max_future_skew"), "{refused}");
    assert_eq!(topic_values(log.as_ref(), "conversations").len(), 0);

    // In the log (as a replay or another writer puts it there): dead-lettered.
    log.append(
        "conversations",
        vec![NewRecord {
            key: Some(b"future".to_vec()),
            value: conversation("future", far, "m1", 10, "q")
                .to_string()
                .into_bytes(),
            timestamp_ms: now,
            headers: Vec::new(),
        }],
    )
    .unwrap();
    wait_for("the far-future event's dead letter", || {
        topic_values(log.as_ref(), "analytics.dead-letters").len() == 1
    });
    let letter = &topic_values(log.as_ref(), "analytics.dead-letters")[0];
    assert_eq!(letter["topic"], "conversations");
    let reason = letter["reason"].as_str().unwrap();
    assert!(
        reason.contains("max_future_skew") && reason.contains(&far.to_string()),
        "{reason}"
    );
    assert_eq!(
        metrics
            .dead_letters
            .with(&["analytics", "conversations"])
            .get(),
        1
    );
    // Well past the idle timeout, the partition is idle: the watermark would now be the
    // largest event time seen, had the far-future event counted.
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(analytics.kpis(None, None).unwrap().watermark_ms, None);

    // Conversations of the present count in their window; none is late.
    let t = u64::try_from(now).unwrap();
    analytics
        .ingest(
            "conversations",
            vec![
                conversation("c1", t, "m1", 100, "q"),
                conversation("c2", t + 1, "m1", 100, "q"),
            ],
        )
        .unwrap();
    let window_of = |t: u64| t - t % 10_000;
    wait_for("the present's window", || {
        let report = analytics.kpis(None, None).unwrap();
        report.windows.iter().any(|w| {
            w.result.window_start_ms == window_of(t + 1) && w.result.overall.conversations >= 1
        })
    });
    // Within the skew (4 min ahead of its log time): accepted.
    let ahead = t + 4 * 60_000;
    analytics
        .ingest(
            "conversations",
            vec![conversation("soon", ahead, "m1", 100, "q")],
        )
        .unwrap();
    wait_for("the event within the skew", || {
        let report = analytics.kpis(None, None).unwrap();
        report
            .windows
            .iter()
            .any(|w| w.result.window_start_ms == window_of(ahead))
    });
    let report = analytics.kpis(None, None).unwrap();
    assert_eq!(report.late_events, 0, "{report:?}");
    let counted: u64 = report
        .windows
        .iter()
        .map(|w| w.result.overall.conversations)
        .sum();
    assert_eq!(counted, 3, "{report:?}");
    assert!(report.watermark_ms.unwrap() <= ahead, "{report:?}");
    assert_eq!(
        topic_values(log.as_ref(), "analytics.dead-letters").len(),
        1
    );
    analytics.stop();
}
