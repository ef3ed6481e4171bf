//! Differential test: the windowed KPI operator against a brute-force oracle on random
//! out-of-order event streams over several partitions, with late events, for tumbling and
//! hopping windows.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use proptest::prelude::*;
use tidewater_analytics::{
    AnalyticsEvent, Kpis, LexiconScorer, OperatorState, Outcome, PaneEvent, Rating,
    SentimentScorer, WindowConfig, WindowResult, WindowedKpis,
};

const SIZE: u64 = 1_000;
const LATENESS: u64 = 500;
const IDLE: u64 = 300;

#[derive(Debug, Clone)]
enum Step {
    Deliver {
        partition: u32,
        event: AnalyticsEvent,
        now: u64,
    },
    Advance {
        now: u64,
    },
}

fn rating() -> impl Strategy<Value = Rating> {
    prop_oneof![
        Just(Rating::Up),
        Just(Rating::Down),
        (1u8..=5).prop_map(Rating::Stars)
    ]
}

fn comment() -> impl Strategy<Value = Option<String>> {
    let words = prop::sample::select(vec![
        "good", "bad", "not", "no", "never", "helpful", "wrong", "slow", "the", "answer", "great",
    ]);
    prop::option::of(prop::collection::vec(words, 0..6).prop_map(|w| w.join(" ")))
}

fn event() -> impl Strategy<Value = AnalyticsEvent> {
    let conv = (
        0u32..12,
        0u64..8_000,
        0usize..3,
        0u64..2_000,
        0u32..3,
        0u32..5,
    )
        .prop_map(
            |(id, t, m, latency_ms, retrieved_chunks, q)| AnalyticsEvent::Conversation {
                conversation_id: format!("c{id}"),
                event_time_ms: t,
                model: ["m1", "m2", "m3"][m].to_owned(),
                latency_ms,
                retrieved_chunks,
                question: format!("question {q}"),
            },
        );
    let feedback =
        (0u32..14, 0u64..8_000, rating(), comment()).prop_map(|(id, t, rating, comment)| {
            AnalyticsEvent::Feedback {
                conversation_id: format!("c{id}"),
                event_time_ms: t,
                rating,
                comment,
                model: None,
                question: None,
            }
        });
    prop_oneof![conv, feedback]
}

/// Events delivered in order of event time plus a random delay, processing time moving
/// forward by random steps, with random `advance` calls in between.
fn stream() -> impl Strategy<Value = Vec<Step>> {
    (1u32..=3)
        .prop_flat_map(|parts| {
            prop::collection::vec(
                (0..parts, event(), 0u64..3_000, 0u64..250, any::<bool>()),
                0..80,
            )
        })
        .prop_map(|mut raw| {
            raw.sort_by_key(|(_, e, delay, _, _)| e.event_time_ms() + delay);
            let mut now = 0;
            let mut steps = Vec::new();
            for (partition, event, _, step, advance) in raw {
                now += step;
                steps.push(Step::Deliver {
                    partition,
                    event,
                    now,
                });
                if advance {
                    steps.push(Step::Advance { now });
                }
            }
            steps
        })
}

fn time_of(e: &AnalyticsEvent) -> u64 {
    match e {
        AnalyticsEvent::Conversation { event_time_ms, .. } => *event_time_ms,
        AnalyticsEvent::Feedback { event_time_ms, .. } => *event_time_ms,
    }
}

/// The watermark rule, from the full history of (partition, event time, processing time).
fn oracle_candidate(history: &[(u32, u64, u64)], now: u64) -> Option<u64> {
    let mut parts: Vec<u32> = history.iter().map(|h| h.0).collect();
    parts.sort();
    parts.dedup();
    let mut active_min: Option<u64> = None;
    let mut overall_max: Option<u64> = None;
    for p in parts {
        let max_t = history
            .iter()
            .filter(|h| h.0 == p)
            .map(|h| h.1)
            .max()
            .unwrap();
        let last = history
            .iter()
            .filter(|h| h.0 == p)
            .map(|h| h.2)
            .max()
            .unwrap();
        overall_max = Some(overall_max.map_or(max_t, |m| m.max(max_t)));
        if now - last.min(now) < IDLE {
            active_min = Some(active_min.map_or(max_t, |m| m.min(max_t)));
        }
    }
    active_min.or(overall_max)
}

/// Starts of the windows holding `t`, by brute force: every multiple of `slide` whose
/// window `[start, start + SIZE)` contains `t`.
fn oracle_windows_of(t: u64, slide: u64) -> Vec<u64> {
    (0..=t / slide)
        .map(|k| k * slide)
        .filter(|&start| start <= t && t < start + SIZE)
        .collect()
}

struct OracleRun {
    /// Events too late for some window, with the windows they missed.
    late: Vec<(AnalyticsEvent, Vec<u64>)>,
    /// (window start, event) for every window that counts the event.
    on_time: Vec<(u64, AnalyticsEvent)>,
    /// Watermark after each step.
    watermarks: Vec<Option<u64>>,
}

fn oracle_replay(steps: &[Step], slide: u64) -> OracleRun {
    let mut history = Vec::new();
    let mut wm: Option<u64> = None;
    let bump = |wm: &mut Option<u64>, c: Option<u64>| {
        if let Some(c) = c {
            *wm = Some(wm.map_or(c, |w| w.max(c)));
        }
    };
    let mut run = OracleRun {
        late: vec![],
        on_time: vec![],
        watermarks: vec![],
    };
    for step in steps {
        match step {
            Step::Deliver {
                partition,
                event,
                now,
            } => {
                bump(&mut wm, oracle_candidate(&history, *now));
                let t = time_of(event);
                let mut missed = Vec::new();
                for start in oracle_windows_of(t, slide) {
                    if matches!(wm, Some(w) if start + SIZE + LATENESS <= w) {
                        missed.push(start);
                    } else {
                        run.on_time.push((start, event.clone()));
                    }
                }
                history.push((*partition, t, *now));
                bump(&mut wm, oracle_candidate(&history, *now));
                if !missed.is_empty() {
                    run.late.push((event.clone(), missed));
                }
            }
            Step::Advance { now } => bump(&mut wm, oracle_candidate(&history, *now)),
        }
        run.watermarks.push(wm);
    }
    run
}

fn oracle_kpis(events: &[&AnalyticsEvent], convs: &HashMap<String, (String, String)>) -> Kpis {
    let mut latencies: Vec<u64> = Vec::new();
    let mut no_ctx = 0u64;
    let mut ratings: Vec<Rating> = Vec::new();
    let mut sentiments: Vec<f64> = Vec::new();
    let mut down: HashMap<String, u64> = HashMap::new();
    for e in events {
        match e {
            AnalyticsEvent::Conversation {
                latency_ms,
                retrieved_chunks,
                ..
            } => {
                latencies.push(*latency_ms);
                if *retrieved_chunks == 0 {
                    no_ctx += 1;
                }
            }
            AnalyticsEvent::Feedback {
                conversation_id,
                rating,
                comment,
                ..
            } => {
                ratings.push(*rating);
                if let Some(c) = comment {
                    sentiments.push(LexiconScorer.score(c));
                }
                let is_down =
                    matches!(rating, Rating::Down) || matches!(rating, Rating::Stars(n) if *n <= 2);
                if is_down {
                    if let Some((_, q)) = convs.get(conversation_id) {
                        *down.entry(q.clone()).or_insert(0) += 1;
                    }
                }
            }
        }
    }
    latencies.sort();
    let pct = |p: usize| -> Option<u64> {
        if latencies.is_empty() {
            return None;
        }
        // nearest rank: the smallest value with at least p% of values at or below it
        let n = latencies.len();
        latencies
            .iter()
            .copied()
            .find(|v| latencies.iter().filter(|x| *x <= v).count() * 100 >= p * n)
    };
    let value = |r: &Rating| match r {
        Rating::Up => 5.0,
        Rating::Down => 1.0,
        Rating::Stars(n) => f64::from(*n),
    };
    let positive = ratings
        .iter()
        .filter(|r| matches!(r, Rating::Up) || matches!(r, Rating::Stars(n) if *n >= 4))
        .count();
    let mut top: Vec<(String, u64)> = down.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    top.truncate(5);
    let nf = ratings.len() as f64;
    Kpis {
        conversations: latencies.len() as u64,
        feedback: ratings.len() as u64,
        latency_p50_ms: pct(50),
        latency_p95_ms: pct(95),
        latency_p99_ms: pct(99),
        positive_share: (!ratings.is_empty()).then(|| positive as f64 / nf),
        mean_rating: (!ratings.is_empty()).then(|| ratings.iter().map(value).sum::<f64>() / nf),
        no_context_share: (!latencies.is_empty()).then(|| no_ctx as f64 / latencies.len() as f64),
        mean_sentiment: (!sentiments.is_empty())
            .then(|| sentiments.iter().sum::<f64>() / sentiments.len() as f64),
        top_downvoted: top
            .into_iter()
            .map(
                |(question, downvotes)| tidewater_analytics::DownvotedQuestion {
                    question,
                    downvotes,
                },
            )
            .collect(),
    }
}

fn oracle_windows(on_time: &[(u64, AnalyticsEvent)]) -> Vec<WindowResult> {
    let mut windows: BTreeMap<u64, Vec<&AnalyticsEvent>> = BTreeMap::new();
    for (start, e) in on_time {
        windows.entry(*start).or_default().push(e);
    }
    windows
        .into_iter()
        .map(|(start, events)| {
            let mut convs: HashMap<String, (String, String)> = HashMap::new();
            for e in &events {
                if let AnalyticsEvent::Conversation {
                    conversation_id,
                    model,
                    question,
                    ..
                } = e
                {
                    if !convs.contains_key(conversation_id) {
                        convs.insert(conversation_id.clone(), (model.clone(), question.clone()));
                    }
                }
            }
            let model_of = |e: &AnalyticsEvent| match e {
                AnalyticsEvent::Conversation { model, .. } => model.clone(),
                AnalyticsEvent::Feedback {
                    conversation_id, ..
                } => convs
                    .get(conversation_id)
                    .map_or("unknown".to_owned(), |c| c.0.clone()),
            };
            let mut models: Vec<String> = events.iter().map(|e| model_of(e)).collect();
            models.sort();
            models.dedup();
            let per_model = models
                .into_iter()
                .map(|m| {
                    let evs: Vec<&AnalyticsEvent> = events
                        .iter()
                        .copied()
                        .filter(|e| model_of(e) == m)
                        .collect();
                    let k = oracle_kpis(&evs, &convs);
                    (m, k)
                })
                .collect();
            WindowResult {
                window_start_ms: start,
                window_end_ms: start + SIZE,
                overall: oracle_kpis(&events, &convs),
                per_model,
            }
        })
        .collect()
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => (x - y).abs() < 1e-9,
        _ => false,
    }
}

fn same_kpis(a: &Kpis, b: &Kpis) -> bool {
    a.conversations == b.conversations
        && a.feedback == b.feedback
        && a.latency_p50_ms == b.latency_p50_ms
        && a.latency_p95_ms == b.latency_p95_ms
        && a.latency_p99_ms == b.latency_p99_ms
        && close(a.positive_share, b.positive_share)
        && close(a.mean_rating, b.mean_rating)
        && close(a.no_context_share, b.no_context_share)
        && close(a.mean_sentiment, b.mean_sentiment)
        && a.top_downvoted == b.top_downvoted
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn windowed_kpis_match_the_oracle(
        steps in stream(),
        // Tumbling, and hopping with a slide that divides the size and one that does not.
        slide in prop::sample::select(vec![SIZE, 500, 400, 250]),
    ) {
        let config = WindowConfig {
            size: Duration::from_millis(SIZE),
            slide: Some(Duration::from_millis(slide)),
            allowed_lateness: Duration::from_millis(LATENESS),
            idle_timeout: Duration::from_millis(IDLE),
        };
        let oracle = oracle_replay(&steps, slide);
        let mut op = WindowedKpis::new(&config).unwrap();
        let mut results: Vec<WindowResult> = Vec::new();
        let mut late = Vec::new();
        let mut last_now = 0;
        for (i, step) in steps.iter().enumerate() {
            match step {
                Step::Deliver { partition, event, now } => {
                    last_now = *now;
                    if let Outcome::Late { event, missed } =
                        op.observe(*partition, event.clone(), *now)
                    {
                        late.push((event, missed));
                    }
                }
                Step::Advance { now } => {
                    for r in op.advance(*now) {
                        // Only windows the watermark has closed are emitted early.
                        let wm = oracle.watermarks[i];
                        prop_assert!(matches!(wm, Some(w) if r.window_end_ms + LATENESS <= w));
                        results.push(r);
                    }
                }
            }
            prop_assert_eq!(op.watermark(), oracle.watermarks[i]);
        }
        // Everything goes idle, then the end of input closes the rest.
        results.extend(op.advance(last_now + 10 * IDLE));
        results.extend(op.finish());

        // Each too-late event reported once, in delivery order, with the windows it missed;
        // counted in none of those.
        prop_assert_eq!(&late, &oracle.late);
        prop_assert_eq!(op.late_events(), oracle.late.len() as u64);

        // Each window once, in window order.
        for pair in results.windows(2) {
            prop_assert!(pair[0].window_start_ms < pair[1].window_start_ms);
        }
        // Every on-time event counted exactly once in each window that counts it.
        let counted: u64 = results.iter().map(|r| r.overall.conversations + r.overall.feedback).sum();
        prop_assert_eq!(counted, oracle.on_time.len() as u64);

        let expected = oracle_windows(&oracle.on_time);
        prop_assert_eq!(results.len(), expected.len());
        for (got, want) in results.iter().zip(&expected) {
            prop_assert_eq!(got.window_start_ms, want.window_start_ms);
            prop_assert_eq!(got.window_end_ms, want.window_end_ms);
            prop_assert!(same_kpis(&got.overall, &want.overall), "overall {:?} != {:?}", got, want);
            prop_assert_eq!(
                got.per_model.keys().collect::<Vec<_>>(),
                want.per_model.keys().collect::<Vec<_>>()
            );
            for (m, k) in &got.per_model {
                prop_assert!(same_kpis(k, &want.per_model[m]), "model {}: {:?} != {:?}", m, k, want);
            }
        }
    }
}

/// What a store holds when it applies [`WindowedKpis::take_changes`] as the pipeline does.
#[derive(Default)]
struct Store {
    panes: BTreeMap<(u64, u64), PaneEvent>,
    progress: String,
}

impl Store {
    fn apply(&mut self, op: &mut WindowedKpis) {
        let changes = op.take_changes();
        let state = op.state();
        for (pane, seq) in changes.added {
            if let Some(held) = state.held(pane, seq) {
                self.panes.insert((pane, seq), held.clone());
            }
        }
        for pane in changes.dropped {
            self.panes.retain(|&(p, _), _| p != pane);
        }
        self.progress = serde_json::to_string(&state.progress).unwrap();
    }

    fn state(&self) -> OperatorState {
        let mut state = OperatorState {
            progress: serde_json::from_str(&self.progress).unwrap(),
            ..OperatorState::default()
        };
        for (&(pane, _), held) in &self.panes {
            state.panes.entry(pane).or_default().push(held.clone());
        }
        state
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Stored change by change, the state equals the operator's after every commit, and an
    /// operator restored from the store at any commit and given the rest of the stream
    /// emits exactly what the original emitted after that commit.
    #[test]
    fn incremental_state_matches_and_restores(
        steps in stream(),
        slide in prop::sample::select(vec![SIZE, 500, 400]),
        commit_every in 1usize..6,
    ) {
        let config = WindowConfig {
            size: Duration::from_millis(SIZE),
            slide: Some(Duration::from_millis(slide)),
            allowed_lateness: Duration::from_millis(LATENESS),
            idle_timeout: Duration::from_millis(IDLE),
        };
        let mut op = WindowedKpis::new(&config).unwrap();
        let mut store = Store::default();
        let run = |op: &mut WindowedKpis, steps: &[Step], emitted: &mut Vec<WindowResult>| {
            for step in steps {
                match step {
                    Step::Deliver { partition, event, now } => {
                        op.observe(*partition, event.clone(), *now);
                    }
                    Step::Advance { now } => emitted.extend(op.advance(*now)),
                }
            }
        };
        let mut emitted = Vec::new();
        let mut checkpoints = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            run(&mut op, std::slice::from_ref(step), &mut emitted);
            if i % commit_every == 0 {
                store.apply(&mut op);
                prop_assert_eq!(&store.state(), op.state());
                checkpoints.push((store.state(), i + 1, emitted.len()));
            }
        }
        emitted.extend(op.finish());
        store.apply(&mut op);
        prop_assert!(store.panes.is_empty(), "finish drops every pane");
        for (state, next_step, already) in checkpoints {
            let mut restored = WindowedKpis::restore(&config, LexiconScorer, state).unwrap();
            let mut after = Vec::new();
            run(&mut restored, &steps[next_step..], &mut after);
            after.extend(restored.finish());
            prop_assert_eq!(&after, &emitted[already..].to_vec());
        }
    }
}
