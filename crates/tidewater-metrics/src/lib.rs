//! Metrics: lock-free [`Counter`]s, [`Gauge`]s and [`Histogram`]s, labelled [`Family`]s
//! of them, and [`Metrics`], the one catalogue where every Tidewater metric is defined.
//! [`Metrics::render`] writes the Prometheus text exposition format.
#![warn(missing_docs)]

mod catalog;
mod family;
mod primitives;
mod render;

pub use catalog::Metrics;
pub use family::Family;
pub use primitives::{Counter, FloatGauge, Gauge, Histogram, HistogramSnapshot};
