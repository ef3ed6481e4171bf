//! Metrics: lock-free [`Counter`]s, [`Gauge`]s and [`Histogram`]s, labelled [`Family`]s
//! of them, and [`Metrics`], the one catalogue where every Tidewater metric is defined.
//! [`Metrics::render`] writes the Prometheus text exposition format. The [`Watchdog`]
//! (a part of [`Metrics`]) is where every source and pipeline reports its progress.
#![warn(missing_docs)]

mod catalog;
mod family;
mod primitives;
mod render;
mod watchdog;

pub use catalog::Metrics;
pub use family::Family;
pub use primitives::{Counter, FloatGauge, Gauge, Histogram, HistogramSnapshot};
pub use watchdog::{ComponentStatus, Condition, HealthConfig, Heartbeat, Watchdog};
