//! Event-time analytics: windows, watermarks, lateness and KPIs.
//!
//! [`WindowedKpis`] consumes [`AnalyticsEvent`]s (conversations and feedback) from one or
//! more partitions, assigns them to tumbling or hopping event-time windows, tracks a per-partition
//! watermark with idle-partition handling, reports events that arrive too late as
//! [`Outcome::Late`] and emits one final [`WindowResult`] per window once it closes.
//! The operator is pure logic: no I/O. Its state ([`OperatorState`]) is serde-serialisable,
//! and [`WindowedKpis::take_changes`] tells what changed, so a batch stores only that.
//!
//! [`Analytics`] runs it as a pipeline over the conversations and feedback topics, with
//! its state, the closed windows and the consumed offsets committed together in redb, and
//! serves KPI queries.
#![warn(missing_docs)]

mod config;
mod error;
mod event;
mod kpis;
mod operator;
mod pipeline;
mod sentiment;
mod service;
mod watermark;

pub use config::WindowConfig;
pub use error::Error;
pub use event::{AnalyticsEvent, Rating};
pub use kpis::{
    compute_kpis, compute_window, percentile_nearest_rank, DownvotedQuestion, Kpis, WindowResult,
    TOP_DOWNVOTED, UNKNOWN_MODEL,
};
pub use operator::{
    OperatorProgress, OperatorState, Outcome, PaneEvent, StateChanges, WindowedKpis,
};
pub use pipeline::config::AnalyticsConfig;
pub use sentiment::{LexiconScorer, SentimentScorer};
pub use service::{Analytics, KpiReport, KpiWindow, MAX_WINDOWS};
pub use watermark::Watermarks;
