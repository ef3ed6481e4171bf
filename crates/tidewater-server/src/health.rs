//! `/healthz`, `/readyz`, `/metrics`.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use crate::AppState;

/// The process is up.
pub(crate) async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// The initial scan is indexed.
pub(crate) async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, Json(json!({"ready": true})))
    } else {
        let body = json!({"ready": false, "error": {"code": "not_ready", "message": "the initial scan is still being indexed"}});
        (StatusCode::SERVICE_UNAVAILABLE, Json(body))
    }
}

/// Prometheus text exposition.
pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
