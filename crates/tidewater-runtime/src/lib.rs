//! Tidewater's runtime as a library: [`App`] builds a running Tidewater (log, pipelines,
//! sources, retention, reconcile) from a configuration, and [`run_until_signal`] serves its
//! HTTP API until SIGINT or SIGTERM and drains it. The `tidewater` binary parses the
//! command line and calls these; benchmarks and tests start an [`App`] directly.
#![warn(missing_docs)]

mod app;
mod error;
mod kafka_source;
mod run;
mod shared_state;

pub use app::App;
pub use error::RuntimeError;
pub use run::run_until_signal;
pub use shared_state::PgState;
