//! The HTTP API (DESIGN.md §3): documents, search, events, profiles, answers, feedback,
//! KPIs, health, readiness, metrics and the dashboard.
//! Handlers translate between JSON and the pipelines' services; errors become
//! `{"error": {"code", "message"}}` with a 4xx/5xx status here and nowhere else.
//! Every request first passes the guards (allowed Host, body media type), and the
//! listener bounds connections in number and time (docs/security.md).
#![warn(missing_docs)]

mod ask;
mod dashboard;
mod documents;
mod error;
mod events;
mod guards;
mod health;
mod kpis;
mod profiles;
mod search;
mod serve;

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{get, post};
use axum::Router;
use tidewater_analytics::Analytics;
use tidewater_answer::{AnswerConfig, ChatClient};
use tidewater_config::ServerConfig;
use tidewater_knowledge::Knowledge;
use tidewater_metrics::Metrics;
use tidewater_profiles::Profiles;

pub use error::ApiError;

/// How `/v1/ask` answers: its configuration and, when one is configured, the language model.
pub struct Answering {
    /// The `[answer]` section.
    pub config: AnswerConfig,
    /// The language model client; `None`: extractive answers.
    pub client: Option<ChatClient>,
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The knowledge pipeline.
    pub knowledge: Arc<Knowledge>,
    /// Process metrics.
    pub metrics: Arc<Metrics>,
    /// Set once the initial scan is indexed.
    pub ready: Arc<AtomicBool>,
    /// The profiles pipeline, when configured.
    pub profiles: Option<Arc<Profiles>>,
    /// The analytics pipeline (conversations, feedback, KPIs).
    pub analytics: Arc<Analytics>,
    /// How questions are answered.
    pub answering: Arc<Answering>,
}

/// The API's routes behind their guards; `config` gives the allowed hosts.
pub fn router(state: AppState, config: &ServerConfig) -> Router {
    let hosts = Arc::new(guards::AllowedHosts::new(config));
    Router::new()
        .route("/", get(dashboard::page))
        .route(dashboard::SCRIPT_PATH, get(dashboard::script))
        .route(dashboard::STYLE_PATH, get(dashboard::style))
        .route("/v1/stats", get(dashboard::stats))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route(
            "/v1/documents/{*id}",
            get(documents::get_document)
                .put(documents::put_document)
                .delete(documents::delete_document),
        )
        .route("/v1/search", post(search::search))
        .route(
            events::PATH,
            post(events::post_events)
                .layer(axum::extract::DefaultBodyLimit::max(events::MAX_BODY_BYTES)),
        )
        .route("/v1/profiles/{identifier}", get(profiles::get_profile))
        .route("/v1/ask", post(ask::ask))
        .route("/v1/feedback", post(kpis::post_feedback))
        .route("/v1/kpis", get(kpis::get_kpis))
        .fallback(error::not_found)
        .route_layer(from_fn(guards::check_body_type))
        .layer(from_fn(error::json_errors))
        .layer(from_fn_with_state(hosts, guards::check_host))
        .layer(from_fn(guards::security_headers))
        .layer(from_fn_with_state(state.clone(), error::count_responses))
        .with_state(state)
}

/// Serves the API on `listener` with the `[server]` limits until `shutdown` completes,
/// then lets in-flight requests finish for at most `config.drain_timeout`. Warns when the
/// listener is reachable from other machines (the API has no authentication).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    config: &ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve::serve(listener, router(state, config), config, shutdown).await
}
