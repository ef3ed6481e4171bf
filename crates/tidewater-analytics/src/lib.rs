//! Event-time analytics: windows, watermarks, lateness and KPIs.
//!
//! [`WindowedKpis`] consumes [`AnalyticsEvent`]s (conversations and feedback) from one or
//! more partitions, assigns them to tumbling event-time windows, tracks a per-partition
//! watermark with idle-partition handling, reports events that arrive too late as
//! [`Outcome::Late`] and emits one final [`WindowResult`] per window once it closes.
//! The operator is pure logic: no I/O, and its state ([`OperatorState`]) is serde-serialisable.
#![warn(missing_docs)]

mod config;
mod error;
mod event;
mod kpis;
mod operator;
mod sentiment;
mod watermark;

pub use config::WindowConfig;
pub use error::Error;
pub use event::{AnalyticsEvent, Rating};
pub use kpis::{
    compute_kpis, compute_window, percentile_nearest_rank, DownvotedQuestion, Kpis, WindowResult,
    TOP_DOWNVOTED, UNKNOWN_MODEL,
};
pub use operator::{OperatorState, Outcome, WindowedKpis};
pub use sentiment::{LexiconScorer, SentimentScorer};
pub use watermark::Watermarks;
