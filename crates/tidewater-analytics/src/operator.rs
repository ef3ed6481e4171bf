//! The windowed KPI operator.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::WindowConfig;
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

/// The serialisable state of a [`WindowedKpis`] operator.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OperatorState {
    /// Watermark tracking.
    pub watermarks: Watermarks,
    /// Open windows by start time, each with its accepted events in arrival order.
    pub windows: BTreeMap<u64, Vec<AnalyticsEvent>>,
    /// Number of events reported late so far.
    pub late_events: u64,
}

/// Event-time windows over conversations and feedback, emitting [`WindowResult`]s.
///
/// Windows are `[k * slide, k * slide + size)`: tumbling when `slide == size`, hopping
/// (overlapping, an event in each window that covers it) when `slide < size`. A window
/// closes when its end plus the allowed lateness is at or before the watermark; an event
/// is late for each of its windows that has closed. [`WindowedKpis::advance`] emits a
/// window (once, in window order) as soon as it closes, and drops its state.
/// Within a window, feedback is joined to the first-arrived conversation with its id.
pub struct WindowedKpis<S = LexiconScorer> {
    size_ms: u64,
    slide_ms: u64,
    lateness_ms: u64,
    idle_timeout_ms: u64,
    scorer: S,
    state: OperatorState,
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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

    /// Rebuilds an operator from a state saved with [`WindowedKpis::state`].
    pub fn restore(config: &WindowConfig, scorer: S, state: OperatorState) -> Result<Self, Error> {
        config.validate().map_err(Error::InvalidWindow)?;
        Ok(Self {
            size_ms: millis(config.size),
            slide_ms: millis(config.slide()),
            lateness_ms: millis(config.allowed_lateness),
            idle_timeout_ms: millis(config.idle_timeout),
            scorer,
            state,
        })
    }

    /// The operator's state, to be stored and later passed to [`WindowedKpis::restore`].
    pub fn state(&self) -> &OperatorState {
        &self.state
    }

    /// The current watermark, if any event has been seen.
    pub fn watermark(&self) -> Option<u64> {
        self.state.watermarks.current()
    }

    /// Number of events reported late so far.
    pub fn late_events(&self) -> u64 {
        self.state.late_events
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
        let watermark = self.state.watermarks.refresh(now_ms, self.idle_timeout_ms);
        let (missed, open): (Vec<u64>, Vec<u64>) = self
            .window_starts(time)
            .partition(|&start| self.closes_by(start, watermark));
        self.state.watermarks.record(partition, time, now_ms);
        self.state.watermarks.refresh(now_ms, self.idle_timeout_ms);
        for &start in &open {
            self.state
                .windows
                .entry(start)
                .or_default()
                .push(event.clone());
        }
        if missed.is_empty() {
            Outcome::Accepted
        } else {
            self.state.late_events += 1;
            Outcome::Late { event, missed }
        }
    }

    /// Moves processing time to `now_ms` and emits, in window order, every window whose
    /// end plus the allowed lateness is at or before the watermark.
    pub fn advance(&mut self, now_ms: u64) -> Vec<WindowResult> {
        let watermark = self.state.watermarks.refresh(now_ms, self.idle_timeout_ms);
        let closed: Vec<u64> = self
            .state
            .windows
            .keys()
            .copied()
            .take_while(|&s| self.closes_by(s, watermark))
            .collect();
        self.emit(closed)
    }

    /// The KPIs of every open window as they stand now (provisional), in window order.
    /// Nothing is emitted or removed.
    pub fn open_windows(&self) -> Vec<WindowResult> {
        self.state
            .windows
            .iter()
            .map(|(&s, events)| {
                compute_window(s, s.saturating_add(self.size_ms), events, &self.scorer)
            })
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
        let all: Vec<u64> = self.state.windows.keys().copied().collect();
        self.emit(all)
    }

    fn emit(&mut self, starts: Vec<u64>) -> Vec<WindowResult> {
        starts
            .into_iter()
            .filter_map(|s| {
                let events = self.state.windows.remove(&s)?;
                Some(compute_window(
                    s,
                    s.saturating_add(self.size_ms),
                    &events,
                    &self.scorer,
                ))
            })
            .collect()
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
