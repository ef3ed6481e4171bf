//! `tidewater bench analytics`: how fast conversations and feedback become KPIs and lake
//! rows. A backlog of events is appended at once and timed until analytics has counted
//! all of them and the lake holds them; then single feedback events are sent at a steady
//! rate and each is timed from its append to its window's KPIs showing it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use serde_json::{json, Value};
use tidewater_core::{FeedbackEvent, Rating};

use super::shared::{quantile, write_json};
use tidewater_runtime::App;

/// Options of `bench analytics`.
#[derive(clap::Args)]
pub struct Args {
    /// Conversations in the backlog (each with one feedback event, so twice as many events).
    #[arg(long, default_value_t = 20_000)]
    conversations: usize,
    /// Feedback events timed one by one for the latency measurement.
    #[arg(long, default_value_t = 200)]
    samples: usize,
    /// Rate of those feedback events (per second).
    #[arg(long, default_value_t = 20)]
    rate: u64,
    /// Window size (`analytics.window.size`).
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    window: Duration,
    /// Window slide (`analytics.window.slide`); the window size when absent (tumbling).
    #[arg(long, value_parser = humantime::parse_duration)]
    slide: Option<Duration>,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Feedback counted so far over every window, open and closed (with hopping windows an
/// event counts once in each window covering it).
fn feedback_counted(app: &App) -> Result<u64> {
    let report = app.analytics.kpis(None, None)?;
    Ok(report
        .windows
        .iter()
        .map(|w| w.result.overall.feedback)
        .sum())
}

/// Events the analytics pipeline has committed (counted in the operator's windows).
fn analysed(app: &App) -> u64 {
    ["conversations", "feedback"]
        .iter()
        .map(|t| app.metrics.pipeline_records.with(&["analytics", t]).get())
        .sum()
}

fn lake_rows(app: &App) -> u64 {
    ["conversations", "feedback"]
        .iter()
        .map(|t| app.metrics.lake_rows.with(&[t]).get())
        .sum()
}

/// The backlog: conversations over the last few minutes, each with one rating.
fn backlog(n: usize, now_ms: u64) -> (Vec<Value>, Vec<Value>) {
    let span = 5 * 60_000u64;
    let start = now_ms - span;
    let conversations = (0..n)
        .map(|i| {
            let t = start + (i as u64 * span) / n as u64;
            json!({"conversation_id": format!("b{i}"), "event_time_ms": t, "question": format!("question {}", i % 97),
                   "answer": "an answer", "model": format!("m{}", i % 3),
                   "latency": {"retrieval_ms": 4, "model_ms": 300 + i % 700, "total_ms": 305 + i % 700},
                   "citations": [{"chunk_id": "d#1", "doc_id": "d", "score": 0.7}]})
        })
        .collect();
    let feedback = (0..n)
        .map(|i| {
            let t = start + (i as u64 * span) / n as u64 + 500;
            json!({"conversation_id": format!("b{i}"), "event_time_ms": t,
                   "rating": if i % 4 == 0 { json!("down") } else { json!("up") },
                   "comment": if i % 2 == 0 { "clear and helpful" } else { "wrong and slow" }})
        })
        .collect();
    (conversations, feedback)
}

/// Runs the benchmark.
pub fn run(args: Args) -> Result<()> {
    let temp = tempfile::tempdir()?;
    let mut config = tidewater_config::Config {
        data_dir: temp.path().join("data"),
        ..Default::default()
    };
    config.reconcile.on_start = false;
    config.lake.flush_interval = Duration::from_millis(500);
    config.analytics.window.size = args.window;
    config.analytics.window.slide = args.slide;
    config.validate()?;
    let app = App::start(config)?;
    let now_ms = u64::try_from(tidewater_core::time::now_ms())?;

    // Backlog throughput.
    let n = args.conversations;
    let (conversations, feedback) = backlog(n, now_ms);
    let started = Instant::now();
    // In event-time order, chunk by chunk, so no event is late.
    for (c, f) in conversations.chunks(500).zip(feedback.chunks(500)) {
        app.analytics.ingest("conversations", c.to_vec())?;
        app.analytics.ingest("feedback", f.to_vec())?;
    }
    let appended = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut analytics_done = None;
    let mut lake_done = None;
    while analytics_done.is_none() || lake_done.is_none() {
        ensure!(
            Instant::now() < deadline,
            "the backlog was not processed within 10 minutes"
        );
        let late = app.analytics.kpis(Some(u64::MAX), None)?.late_events;
        ensure!(
            late == 0,
            "{late} backlog events arrived late; the benchmark's input is wrong"
        );
        if analytics_done.is_none() && analysed(&app) == 2 * n as u64 {
            analytics_done = Some(started.elapsed());
        }
        if lake_done.is_none() && lake_rows(&app) == 2 * n as u64 {
            lake_done = Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let (analytics_done, lake_done) = (
        analytics_done.unwrap_or_default(),
        lake_done.unwrap_or_default(),
    );
    let events = 2 * n;
    let per_second = |d: Duration| events as f64 / d.as_secs_f64();

    // Feedback → visible in its window's KPIs, one at a time at a steady rate.
    let mut latencies = Vec::new();
    let interval = Duration::from_secs_f64(1.0 / args.rate.max(1) as f64);
    for i in 0..args.samples {
        let tick = Instant::now();
        let event = FeedbackEvent {
            conversation_id: format!("b{}", i % n.max(1)),
            rating: Rating::Stars(4),
            comment: None,
            event_time_ms: u64::try_from(tidewater_core::time::now_ms()).ok(),
        };
        let before = feedback_counted(&app)?;
        let sent = Instant::now();
        app.analytics.record_feedback(&event)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while feedback_counted(&app)? <= before {
            ensure!(
                Instant::now() < deadline,
                "feedback {i} not counted within 30 s"
            );
            std::thread::sleep(Duration::from_micros(500));
        }
        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
        if let Some(rest) = interval.checked_sub(tick.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    let (p50, p95, p99) = (
        quantile(&latencies, 0.50),
        quantile(&latencies, 0.95),
        quantile(&latencies, 0.99),
    );
    println!(
        "analytics backlog: {events} events (conversations + feedback), {} windows every {}",
        humantime::format_duration(args.window),
        humantime::format_duration(args.slide.unwrap_or(args.window))
    );
    println!(
        "  appended in            {:>8.0} ms",
        appended.as_secs_f64() * 1000.0
    );
    println!(
        "  all counted in KPIs    {:>8.0} ms  ({:.0} events/s)",
        analytics_done.as_secs_f64() * 1000.0,
        per_second(analytics_done)
    );
    println!(
        "  all in the lake        {:>8.0} ms  ({:.0} rows/s)",
        lake_done.as_secs_f64() * 1000.0,
        per_second(lake_done)
    );
    println!(
        "feedback -> KPI visible ({} events at {}/s): p50 {p50:.1} ms, p95 {p95:.1} ms, p99 {p99:.1} ms",
        args.samples, args.rate
    );
    write_json(
        args.json.as_ref(),
        &json!({
            "events": events,
            "window_ms": args.window.as_millis() as u64,
            "slide_ms": args.slide.unwrap_or(args.window).as_millis() as u64,
            "appended_ms": appended.as_secs_f64() * 1000.0,
            "analytics_ms": analytics_done.as_secs_f64() * 1000.0,
            "analytics_events_per_s": per_second(analytics_done),
            "lake_ms": lake_done.as_secs_f64() * 1000.0,
            "lake_rows_per_s": per_second(lake_done),
            "feedback_to_kpi_ms": {"p50": p50, "p95": p95, "p99": p99, "samples": args.samples, "rate": args.rate},
        }),
    )?;
    app.shutdown();
    Ok(())
}
