//! The windowed KPI operator.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::config::{millis, WindowConfig};
use crate::error::Error;
use crate::event::AnalyticsEvent;
use crate::kpis::{compute_window, WindowResult};
use crate::sentiment::{LexiconScorer, SentimentScorer};
use crate::watermark::Watermarks;

/// What [`WindowedKpis::observe`] did with an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Counted in every window it belongs to.
    Accepted,
    /// Too late for some or all of its windows: their end plus the allowed lateness is at
    /// or before the watermark. Not counted in those; with hopping windows, still counted
    /// in its later windows that are open. The caller sends it to the late side topic.
    Late {
        /// The event.
        event: AnalyticsEvent,
        /// Starts of the windows that did not count it, oldest first (a tumbling window
        /// has one; hopping windows miss a prefix of theirs).
        missed: Vec<u64>,
    },
}

/// An event held for the open windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaneEvent {
    /// Arrival number: windows see their events in arrival order.
    pub seq: u64,
    /// Start of the oldest window that counts it; the windows before were closed when it
    /// arrived (hopping windows miss a prefix of theirs, never a window in the middle).
    pub first_window_ms: u64,
    /// The event.
    pub event: AnalyticsEvent,
}

/// The small part of the operator's state: watermarks, counters and open windows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OperatorProgress {
    /// Watermark tracking.
    pub watermarks: Watermarks,
    /// Starts of the windows that have counted an event and are not yet emitted.
    pub open_windows: BTreeSet<u64>,
    /// Number of events reported late so far.
    pub late_events: u64,
    /// Arrival number of the next event.
    pub next_seq: u64,
}

/// The state of a [`WindowedKpis`] operator.
///
/// Events are kept once each, in panes: slices of event time `gcd(size, slide)` long that
/// tile every window (a tumbling window is one pane). A window is the union of its panes,
/// less the events that arrived after it had closed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OperatorState {
    /// Watermarks, counters and open windows.
    pub progress: OperatorProgress,
    /// Events by pane start, each pane in arrival order.
    pub panes: BTreeMap<u64, Vec<PaneEvent>>,
}

impl OperatorState {
    /// The event with arrival number `seq` in the pane starting at `pane`, if still held.
    pub fn held(&self, pane: u64, seq: u64) -> Option<&PaneEvent> {
        let events = self.panes.get(&pane)?;
        events
            .binary_search_by_key(&seq, |e| e.seq)
            .ok()
            .map(|i| &events[i])
    }
}

/// How the state changed since the last [`WindowedKpis::take_changes`], for storing it
/// incrementally. A store that held the state before stores the `added` events that
/// [`OperatorState::held`] still finds, removes the panes in `dropped`, and writes
/// `progress` whole.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StateChanges {
    /// Events added: (pane start, arrival number).
    pub added: Vec<(u64, u64)>,
    /// Panes no open window needs any more.
    pub dropped: Vec<u64>,
}

/// Event-time windows over conversations and feedback, emitting [`WindowResult`]s.
///
/// Windows are `[k * slide, k * slide + size)`: tumbling when `slide == size`, hopping
/// (overlapping, an event in each window that covers it) when `slide < size`. A window
/// closes when its end plus the allowed lateness is at or before the watermark; an event
/// is late for each of its windows that has closed. [`WindowedKpis::advance`] emits a
/// window (once, in window order) as soon as it closes, and drops the panes no open window
/// needs. Within a window, feedback is joined to the first-arrived conversation with its id.
pub struct WindowedKpis<S = LexiconScorer> {
    size_ms: u64,
    slide_ms: u64,
    pane_ms: u64,
    lateness_ms: u64,
    idle_timeout_ms: u64,
    scorer: S,
    state: OperatorState,
    changes: StateChanges,
}

impl WindowedKpis<LexiconScorer> {
    /// An operator with the built-in lexicon sentiment scorer.
    pub fn new(config: &WindowConfig) -> Result<Self, Error> {
        Self::with_scorer(config, LexiconScorer)
    }
}

impl<S: SentimentScorer> WindowedKpis<S> {
    /// An operator with a custom sentiment scorer.
    pub fn with_scorer(config: &WindowConfig, scorer: S) -> Result<Self, Error> {
        Self::restore(config, scorer, OperatorState::default())
    }

    /// Rebuilds an operator from a state saved with [`WindowedKpis::state`] (or stored
    /// through [`WindowedKpis::take_changes`]).
    pub fn restore(config: &WindowConfig, scorer: S, state: OperatorState) -> Result<Self, Error> {
        config.validate().map_err(Error::InvalidWindow)?;
        let (size_ms, slide_ms) = (millis(config.size), millis(config.slide()));
        Ok(Self {
            size_ms,
            slide_ms,
            pane_ms: config.pane_ms(),
            lateness_ms: millis(config.allowed_lateness),
            idle_timeout_ms: millis(config.idle_timeout),
            scorer,
            state,
            changes: StateChanges::default(),
        })
    }

    /// The operator's state, to be stored and later passed to [`WindowedKpis::restore`].
    pub fn state(&self) -> &OperatorState {
        &self.state
    }

    /// The changes to the state since the last call (or since it was created or restored).
    pub fn take_changes(&mut self) -> StateChanges {
        std::mem::take(&mut self.changes)
    }

    /// Marks every held event as added, so the next [`WindowedKpis::take_changes`] stores
    /// the whole state.
    pub(crate) fn mark_all_added(&mut self) {
        self.changes.added = (self.state.panes.iter())
            .flat_map(|(&pane, events)| events.iter().map(move |e| (pane, e.seq)))
            .collect();
    }

    /// The current watermark, if any event has been seen.
    pub fn watermark(&self) -> Option<u64> {
        self.state.progress.watermarks.current()
    }

    /// Number of events reported late so far.
    pub fn late_events(&self) -> u64 {
        self.state.progress.late_events
    }

    /// Starts of the windows that hold `event_time_ms`, oldest first: the multiples of
    /// the slide in `(event_time_ms - size, event_time_ms]`.
    pub fn window_starts(&self, event_time_ms: u64) -> impl Iterator<Item = u64> {
        let first = match event_time_ms.checked_sub(self.size_ms) {
            Some(before) => before / self.slide_ms + 1,
            None => 0,
        };
        let slide = self.slide_ms;
        (first..=event_time_ms / slide).map(move |k| k * slide)
    }

    fn closes_by(&self, window_start_ms: u64, watermark: Option<u64>) -> bool {
        let deadline = window_start_ms
            .saturating_add(self.size_ms)
            .saturating_add(self.lateness_ms);
        watermark.is_some_and(|w| deadline <= w)
    }

    /// Takes one event of `partition`, seen at processing time `now_ms`.
    pub fn observe(&mut self, partition: u32, event: AnalyticsEvent, now_ms: u64) -> Outcome {
        let time = event.event_time_ms();
        let watermark = self
            .state
            .progress
            .watermarks
            .refresh(now_ms, self.idle_timeout_ms);
        let (missed, open): (Vec<u64>, Vec<u64>) = self
            .window_starts(time)
            .partition(|&start| self.closes_by(start, watermark));
        let progress = &mut self.state.progress;
        progress.watermarks.record(partition, time, now_ms);
        progress.watermarks.refresh(now_ms, self.idle_timeout_ms);
        let late = !missed.is_empty();
        if late {
            progress.late_events += 1;
        }
        let Some(&first_window_ms) = open.first() else {
            return Outcome::Late { event, missed };
        };
        progress.open_windows.extend(&open);
        let seq = progress.next_seq;
        progress.next_seq += 1;
        let pane = time - time % self.pane_ms;
        self.changes.added.push((pane, seq));
        let held = |event| PaneEvent {
            seq,
            first_window_ms,
            event,
        };
        let panes = self.state.panes.entry(pane).or_default();
        if late {
            panes.push(held(event.clone()));
            Outcome::Late { event, missed }
        } else {
            panes.push(held(event));
            Outcome::Accepted
        }
    }

    /// Moves processing time to `now_ms` and emits, in window order, every window whose
    /// end plus the allowed lateness is at or before the watermark.
    pub fn advance(&mut self, now_ms: u64) -> Vec<WindowResult> {
        let watermark = self
            .state
            .progress
            .watermarks
            .refresh(now_ms, self.idle_timeout_ms);
        let closed: Vec<u64> = self
            .state
            .progress
            .open_windows
            .iter()
            .copied()
            .take_while(|&s| self.closes_by(s, watermark))
            .collect();
        let results = self.emit(closed);
        // A pane is needed until the newest window covering it has closed.
        let unneeded: Vec<u64> = self
            .state
            .panes
            .keys()
            .copied()
            .take_while(|&pane| self.closes_by(pane - pane % self.slide_ms, watermark))
            .collect();
        self.drop_panes(unneeded);
        results
    }

    /// The KPIs of every open window as they stand now (provisional), in window order.
    /// Nothing is emitted or removed.
    pub fn open_windows(&self) -> Vec<WindowResult> {
        self.state
            .progress
            .open_windows
            .iter()
            .map(|&s| self.compute(s))
            .collect()
    }

    /// Window length in milliseconds.
    pub fn size_ms(&self) -> u64 {
        self.size_ms
    }

    /// Distance between window starts in milliseconds (the size, for tumbling windows).
    pub fn slide_ms(&self) -> u64 {
        self.slide_ms
    }

    /// End of input: emits every open window, in window order.
    pub fn finish(&mut self) -> Vec<WindowResult> {
        let all: Vec<u64> = self.state.progress.open_windows.iter().copied().collect();
        let results = self.emit(all);
        let panes: Vec<u64> = self.state.panes.keys().copied().collect();
        self.drop_panes(panes);
        results
    }

    /// The KPIs of the window starting at `start`: its panes' events that arrived while it
    /// was open, in arrival order.
    fn compute(&self, start: u64) -> WindowResult {
        let end = start.saturating_add(self.size_ms);
        let mut held: Vec<&PaneEvent> = self
            .state
            .panes
            .range(start..end)
            .flat_map(|(_, events)| events)
            .filter(|e| e.first_window_ms <= start)
            .collect();
        held.sort_unstable_by_key(|e| e.seq);
        let events: Vec<&AnalyticsEvent> = held.iter().map(|e| &e.event).collect();
        compute_window(start, end, &events, &self.scorer)
    }

    fn emit(&mut self, starts: Vec<u64>) -> Vec<WindowResult> {
        let results = starts.iter().map(|&s| self.compute(s)).collect();
        for s in starts {
            self.state.progress.open_windows.remove(&s);
        }
        results
    }

    fn drop_panes(&mut self, panes: Vec<u64>) {
        for pane in &panes {
            self.state.panes.remove(pane);
        }
        self.changes.dropped.extend(panes);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::event::Rating;

    fn config() -> WindowConfig {
        WindowConfig {
            size: Duration::from_millis(1_000),
            slide: None,
            allowed_lateness: Duration::from_millis(500),
            idle_timeout: Duration::from_millis(100),
        }
    }

    fn conv(id: &str, t: u64, model: &str, latency: u64) -> AnalyticsEvent {
        AnalyticsEvent::Conversation {
            conversation_id: id.into(),
            event_time_ms: t,
            model: model.into(),
            latency_ms: latency,
            retrieved_chunks: 1,
            question: format!("q-{id}"),
        }
    }

    fn fb(id: &str, t: u64, rating: Rating) -> AnalyticsEvent {
        AnalyticsEvent::Feedback {
            conversation_id: id.into(),
            event_time_ms: t,
            rating,
            comment: None,
            model: None,
            question: None,
        }
    }

    #[test]
    fn zero_window_size_is_rejected() {
        let c = WindowConfig {
            size: Duration::ZERO,
            ..config()
        };
        assert!(matches!(
            WindowedKpis::new(&c),
            Err(Error::InvalidWindow(_))
        ));
    }

    #[test]
    fn lateness_boundary_is_inclusive() {
        let mut op = WindowedKpis::new(&config()).unwrap();
        assert_eq!(op.observe(0, conv("a", 100, "m", 5), 0), Outcome::Accepted);
        // watermark 1499: window [0,1000) closes at 1500, still open.
        assert_eq!(
            op.observe(0, conv("b", 1_499, "m", 5), 1),
            Outcome::Accepted
        );
        assert_eq!(op.observe(0, conv("c", 999, "m", 5), 2), Outcome::Accepted);
        assert!(op.advance(3).is_empty());
        // watermark 1500: window [0,1000) closes.
        assert_eq!(
            op.observe(0, conv("d", 1_500, "m", 5), 4),
            Outcome::Accepted
        );
        let e = conv("e", 10, "m", 5);
        assert_eq!(
            op.observe(0, e.clone(), 5),
            Outcome::Late {
                event: e,
                missed: vec![0]
            }
        );
        assert_eq!(op.late_events(), 1);
        let out = op.advance(6);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].window_start_ms, out[0].window_end_ms), (0, 1_000));
        assert_eq!(out[0].overall.conversations, 2);
        assert!(op.advance(7).is_empty(), "a window is emitted once");
        let rest = op.finish();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].overall.conversations, 2);
    }

    #[test]
    fn hopping_windows_count_an_event_in_each_window_covering_it() {
        let hopping = WindowConfig {
            size: Duration::from_millis(1_000),
            slide: Some(Duration::from_millis(400)),
            ..config()
        };
        let mut op = WindowedKpis::new(&hopping).unwrap();
        let starts = |op: &WindowedKpis, t| op.window_starts(t).collect::<Vec<u64>>();
        assert_eq!(starts(&op, 0), [0]);
        assert_eq!(starts(&op, 999), [0, 400, 800]);
        assert_eq!(starts(&op, 1_000), [400, 800]);
        assert_eq!(starts(&op, 1_200), [400, 800, 1_200]);

        assert_eq!(op.observe(0, conv("a", 900, "m", 5), 0), Outcome::Accepted);
        // Watermark 1900 closes [0,1000) (at 1500) and [400,1400) (at 1900).
        assert_eq!(
            op.observe(0, conv("b", 1_900, "m", 5), 1),
            Outcome::Accepted
        );
        let counted = |out: &[WindowResult]| -> Vec<(u64, u64)> {
            out.iter()
                .map(|w| (w.window_start_ms, w.overall.conversations))
                .collect()
        };
        assert_eq!(counted(&op.advance(2)), [(0, 1), (400, 1)]);
        // Too late for [400,1400); [800,1800) and [1200,2200) are open and count it.
        let c = conv("c", 1_300, "m", 5);
        assert_eq!(
            op.observe(0, c, 3),
            Outcome::Late {
                event: conv("c", 1_300, "m", 5),
                missed: vec![400],
            }
        );
        assert_eq!(op.late_events(), 1);
        assert_eq!(
            counted(&op.finish()),
            [(800, 2), (1_200, 2), (1_600, 1)],
            "a 900, b 1900 and c 1300 in each open window covering them"
        );
    }

    #[test]
    fn idle_partition_does_not_hold_the_watermark() {
        let mut op = WindowedKpis::new(&config()).unwrap();
        op.observe(1, conv("slow", 100, "m", 5), 0);
        op.observe(0, conv("a", 200, "m", 5), 50);
        op.observe(0, conv("b", 5_000, "m", 5), 90);
        assert_eq!(op.watermark(), Some(100), "partition 1 still active");
        assert!(op.advance(99).is_empty());
        // partition 1 idle since 0 + 100; partition 0 active until 190.
        let out = op.advance(150);
        assert_eq!(op.watermark(), Some(5_000));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].overall.conversations, 2);
        // The idle partition comes back with an old event: late, not counted.
        assert!(matches!(
            op.observe(1, conv("old", 300, "m", 5), 200),
            Outcome::Late { .. }
        ));
    }

    #[test]
    fn kpis_per_model_and_downvoted_questions() {
        let mut op = WindowedKpis::new(&config()).unwrap();
        op.observe(0, conv("a", 10, "m1", 100), 0);
        op.observe(0, conv("b", 20, "m2", 300), 0);
        op.observe(0, fb("a", 30, Rating::Down), 0);
        op.observe(0, fb("a", 40, Rating::Stars(2)), 0);
        op.observe(0, fb("b", 50, Rating::Up), 0);
        op.observe(0, fb("zzz", 60, Rating::Down), 0);
        let out = op.finish();
        assert_eq!(out.len(), 1);
        let o = &out[0].overall;
        assert_eq!(o.conversations, 2);
        assert_eq!(o.feedback, 4);
        assert_eq!(o.latency_p50_ms, Some(100));
        assert_eq!(o.latency_p99_ms, Some(300));
        assert_eq!(o.positive_share, Some(0.25));
        assert_eq!(o.mean_rating, Some((1.0 + 2.0 + 5.0 + 1.0) / 4.0));
        assert_eq!(o.no_context_share, Some(0.0));
        assert_eq!(o.mean_sentiment, None);
        assert_eq!(o.top_downvoted.len(), 1);
        assert_eq!(o.top_downvoted[0].question, "q-a");
        assert_eq!(o.top_downvoted[0].downvotes, 2);
        let models: Vec<&str> = out[0].per_model.keys().map(String::as_str).collect();
        assert_eq!(models, ["m1", "m2", "unknown"]);
        assert_eq!(out[0].per_model["m1"].feedback, 2);
        assert_eq!(out[0].per_model["unknown"].mean_rating, Some(1.0));
    }

    #[test]
    fn feedback_joined_upstream_keeps_its_model_and_question() {
        let mut op = WindowedKpis::new(&config()).unwrap();
        op.observe(
            0,
            AnalyticsEvent::Feedback {
                conversation_id: "old".into(),
                event_time_ms: 30,
                rating: Rating::Down,
                comment: None,
                model: Some("m1".into()),
                question: Some("why?".into()),
            },
            0,
        );
        let open = op.open_windows();
        assert_eq!(open.len(), 1);
        assert_eq!(
            op.open_windows(),
            open,
            "reading open windows changes nothing"
        );
        let out = op.finish();
        assert_eq!(out, open);
        assert_eq!(out[0].per_model["m1"].feedback, 1);
        assert_eq!(out[0].overall.top_downvoted[0].question, "why?");
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut op = WindowedKpis::new(&config()).unwrap();
        op.observe(0, conv("a", 10, "m1", 100), 0);
        op.observe(2, fb("a", 30, Rating::Stars(4)), 1);
        let json = serde_json::to_string(op.state()).unwrap();
        let state: OperatorState = serde_json::from_str(&json).unwrap();
        let mut restored = WindowedKpis::restore(&config(), LexiconScorer, state).unwrap();
        assert_eq!(restored.finish(), op.finish());
    }
}
