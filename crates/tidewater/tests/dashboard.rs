//! The dashboard at `/`, rendered by headless Chromium against a running Tidewater: the
//! page polls `/v1/stats` and `/v1/kpis` and shows the figures and KPI charts live.
//!
//! Needs Chromium: `$CHROMIUM`, else `chromium` on PATH (`scripts/chromium.sh install`).
//! Leaves a screenshot at `$TIDEWATER_ARTEFACTS/dashboard.png` (default
//! `<workspace>/artefacts/dashboard.png`).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use support::*;

/// How long the pipelines get to turn posted events into figures.
const WAIT: Duration = Duration::from_secs(60);

/// The Chromium binary: `$CHROMIUM`, else `chromium` on PATH. Missing Chromium fails the
/// test: a skipped dashboard test would pass without checking anything.
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("chromium"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no Chromium for the dashboard test: run `scripts/chromium.sh install` \
                 (or set CHROMIUM to a Chromium binary)"
            )
        })
}

/// Runs headless Chromium on the dashboard with `args` (after the common flags) and
/// returns its stdout. Virtual time lets the page run 8 s of polls (4 of them) without
/// the test waiting that long in real time; network fetches pause virtual time.
fn headless(tw: &Tidewater, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=8000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(format!("http://{}/", tw.addr))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromium().display()));
    // Read both pipes on threads so a chatty Chromium never blocks on a full pipe.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).map(|_| s)
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).map(|_| s)
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("headless Chromium did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = out.join().unwrap().unwrap_or_default();
    let err = err.join().unwrap().unwrap_or_default();
    assert!(
        status.success(),
        "headless Chromium exited with {status}:\n{err}"
    );
    out
}

/// The DOM after the page ran for 8 s of virtual time.
fn dump_dom(tw: &Tidewater) -> Dom {
    let html = headless(tw, &["--dump-dom"]);
    assert!(
        html.contains("<h1>Tidewater</h1>"),
        "the dashboard did not render:\n{html}"
    );
    Dom(html)
}

/// A serialised DOM, searched by element id. Enough for the dashboard's markup, which
/// holds its figures as the text of leaf elements.
struct Dom(String);

impl Dom {
    /// The start tag and content of the element `id="..."` (up to the end of the DOM).
    fn element(&self, id: &str) -> &str {
        let needle = format!("id=\"{id}\"");
        let at = self
            .0
            .find(&needle)
            .unwrap_or_else(|| panic!("no element #{id} in the DOM:\n{}", self.0));
        let open = self.0[..at].rfind('<').unwrap();
        &self.0[open..]
    }

    /// The text of leaf element `#id`.
    fn text(&self, id: &str) -> String {
        let from = self.element(id);
        let start = from.find('>').unwrap() + 1;
        let end = start + from[start..].find('<').unwrap();
        from[start..end].trim().to_owned()
    }

    /// The markup inside `#id`, up to the first `</tag>` closing its tag name (the
    /// dashboard does not nest its charts or tables).
    fn inner(&self, id: &str, tag: &str) -> &str {
        let from = self.element(id);
        let end = from
            .find(&format!("</{tag}>"))
            .unwrap_or_else(|| panic!("#{id} is not closed by </{tag}>"));
        &from[..end]
    }

    /// The `data-value`s of the data points of chart `#id`.
    fn points(&self, id: &str) -> Vec<String> {
        self.inner(id, "svg")
            .split("data-value=\"")
            .skip(1)
            .map(|rest| rest[..rest.find('"').unwrap()].to_owned())
            .collect()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn post(tw: &Tidewater, path: &str, event: Value) {
    let (status, body) = tw.request("POST", path, Some(&event.to_string()));
    assert!(
        (200..300).contains(&status),
        "POST {path} answered {status}: {body}\n(the KPI part of this test needs the \
         conversation and feedback events endpoints and the analytics pipeline)"
    );
}

fn conversation(id: &str, question: &str, total_ms: u64, t: u64) -> Value {
    json!({
        "conversation_id": id, "question": question, "answer": "an answer", "model": "test-model",
        "latency": {"retrieval_ms": 5, "model_ms": total_ms - 10, "total_ms": total_ms},
        "event_time_ms": t,
    })
}

fn feedback(id: &str, rating: &str, t: u64) -> Value {
    json!({"conversation_id": id, "rating": rating, "comment": "thanks", "event_time_ms": t})
}

/// The overall KPIs of the latest window from `/v1/kpis`, once there is one.
fn latest_kpis(tw: &Tidewater) -> Option<Value> {
    let (status, kpis) = tw.json("GET", "/v1/kpis", None);
    if status != 200 {
        return None;
    }
    kpis["windows"]
        .as_array()?
        .last()
        .map(|w| w["overall"].clone())
}

fn wait_for_kpis(tw: &Tidewater, conversations: u64, feedback: u64) {
    eventually(
        WAIT,
        &format!("/v1/kpis shows {conversations} conversations and {feedback} feedback"),
        || {
            latest_kpis(tw)
                .is_some_and(|k| k["conversations"] == conversations && k["feedback"] == feedback)
        },
    );
}

fn artefacts_dir() -> PathBuf {
    std::env::var_os("TIDEWATER_ARTEFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../artefacts"))
}

#[test]
fn dashboard_shows_stats_and_kpis_live() {
    chromium(); // Fails before anything starts when there is none.
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let mut tw = Tidewater::start(&docs, &dir.path().join("data"), &[]);
    tw.wait_ready(Duration::from_secs(120));

    // /v1/stats itself: the documented shape, an empty index, no freshness observation yet.
    let (status, stats) = tw.json("GET", "/v1/stats", None);
    assert_eq!(status, 200, "{stats}");
    for key in [
        "now_ms",
        "ready",
        "topics",
        "pipelines",
        "freshness_ms",
        "index",
        "lake",
        "answers",
        "late_events",
    ] {
        assert!(stats.get(key).is_some(), "/v1/stats lacks {key}: {stats}");
    }
    assert_eq!(stats["ready"], true, "{stats}");
    assert_eq!(stats["index"], json!({"documents": 0, "vectors": 0}));
    assert_eq!(
        stats["freshness_ms"],
        json!({"p50": null, "p95": null, "p99": null, "count": 0})
    );
    assert!(
        stats["now_ms"].as_u64().unwrap() > 1_700_000_000_000,
        "{stats}"
    );

    // The page renders the stats; nulls show as a dash.
    let dom = dump_dom(&tw);
    assert_eq!(dom.text("status"), "live", "#status");
    assert_eq!(dom.text("stat-ready"), "ready");
    assert_eq!(dom.text("stat-documents"), "0");
    assert_eq!(dom.text("stat-vectors"), "0");
    assert_eq!(dom.text("stat-freshness-p50"), "\u{2014}");
    // Four polls ran, so the ingest rate is a number (from successive counters).
    assert_ne!(
        dom.text("stat-ingest-rate"),
        "\u{2014}",
        "no ingest rate computed"
    );
    for pipeline in stats["pipelines"].as_array().unwrap() {
        let row = format!(
            "data-pipeline=\"{}\" data-topic=\"{}\"",
            pipeline["pipeline"].as_str().unwrap(),
            pipeline["topic"].as_str().unwrap()
        );
        assert!(dom.0.contains(&row), "no pipeline row {row}");
    }

    // One conversation with a thumbs up. Every event carries the same event time, so all
    // of them fall into one window, whatever the wall clock does between the posts; with
    // nothing later in event time, the watermark keeps that window open (provisional).
    let t0 = now_ms();
    post(
        &tw,
        "/v1/events/conversations",
        conversation("c1", "How do I reset my password?", 110, t0),
    );
    post(&tw, "/v1/events/feedback", feedback("c1", "up", t0));
    wait_for_kpis(&tw, 1, 1);

    let dom = dump_dom(&tw);
    assert_eq!(dom.text("status"), "live", "#status");
    assert_eq!(dom.text("kpi-conversations"), "1");
    assert_eq!(dom.text("kpi-feedback"), "1");
    assert_eq!(dom.text("kpi-positive-share"), "100%");
    assert_eq!(dom.text("kpi-mean-rating"), "5.00");
    assert_eq!(dom.points("chart-conversations"), ["1"]);
    assert!(
        !dom.points("chart-latency").is_empty(),
        "no latency data point"
    );
    // The ingest table lists the topics the events went to.
    for topic in ["conversations", "feedback"] {
        assert!(
            dom.inner("topics", "table")
                .contains(&format!("data-topic=\"{topic}\"")),
            "no ingest row for {topic}"
        );
    }

    // A second conversation, voted down: the page follows.
    post(
        &tw,
        "/v1/events/conversations",
        conversation("c2", "Why was I charged twice?", 300, t0),
    );
    post(&tw, "/v1/events/feedback", feedback("c2", "down", t0));
    wait_for_kpis(&tw, 2, 2);

    let dom = dump_dom(&tw);
    assert_eq!(dom.text("status"), "live", "#status");
    assert_eq!(dom.text("kpi-conversations"), "2");
    assert_eq!(dom.text("kpi-positive-share"), "50%");
    assert_eq!(dom.text("kpi-mean-rating"), "3.00");
    assert_eq!(dom.points("chart-conversations"), ["2"]);
    assert!(
        dom.inner("top-downvoted", "ol")
            .contains("Why was I charged twice?"),
        "the down-voted question is not listed"
    );

    // The screenshot, kept as an artefact of the run.
    let artefacts = artefacts_dir();
    std::fs::create_dir_all(&artefacts).unwrap();
    let png = artefacts.join("dashboard.png");
    let _ = std::fs::remove_file(&png);
    headless(
        &tw,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,1800",
            "--hide-scrollbars",
        ],
    );
    let bytes =
        std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", png.display()));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        png.display()
    );
    assert!(
        bytes.len() > 40_000,
        "{} is only {} bytes: a blank page?",
        png.display(),
        bytes.len()
    );
}
