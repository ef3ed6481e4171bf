//! `/healthz`, `/readyz`, `/metrics`. Readiness tells the truth: not ready until the
//! initial scan is indexed, and not ready while the watchdog reports a source or pipeline
//! stalled or failed.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};
use tidewater_metrics::{ComponentStatus, Condition};

use crate::AppState;

/// The process is up.
pub(crate) async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// 200 once the initial scan is indexed and no component is stalled or failed; 503
/// naming what is not ready otherwise.
pub(crate) async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let (status, body) = readiness(
        state.ready.load(Ordering::SeqCst),
        &state.metrics.watchdog.unhealthy(),
    );
    (status, Json(body))
}

/// The `/readyz` answer: `{"ready": true}`, or 503 with an error and, when components are
/// unhealthy, each of them (`component`, `condition`, `since_progress_ms`, `reason`).
fn readiness(scanned: bool, unhealthy: &[ComponentStatus]) -> (StatusCode, Value) {
    if !scanned {
        let body = json!({"ready": false, "error": {"code": "not_ready", "message": "the initial scan is still being indexed"}, "unhealthy": unhealthy});
        return (StatusCode::SERVICE_UNAVAILABLE, body);
    }
    if unhealthy.is_empty() {
        return (StatusCode::OK, json!({"ready": true}));
    }
    let named: Vec<String> = unhealthy
        .iter()
        .map(|c| {
            let what = match c.condition {
                Condition::Failed => "failed",
                _ => "is stalled",
            };
            match &c.reason {
                Some(reason) => format!("{} {what}: {reason}", c.component),
                None => format!("{} {what}", c.component),
            }
        })
        .collect();
    let body = json!({
        "ready": false,
        "error": {"code": "unhealthy", "message": named.join("; ")},
        "unhealthy": unhealthy,
    });
    (StatusCode::SERVICE_UNAVAILABLE, body)
}

/// Prometheus text exposition.
pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tidewater_metrics::{HealthConfig, Watchdog};

    use super::*;

    #[test]
    fn readiness_names_each_failed_or_stalled_component() {
        let watchdog = Watchdog::new(&HealthConfig {
            stall_after: Duration::from_secs(60),
        });
        let source = watchdog.register("source files:docs");
        let outbox = watchdog.register("outbox profiles");
        source.idle();
        assert_eq!(readiness(true, &watchdog.unhealthy()).0, StatusCode::OK);

        outbox.fail("record of 18875026 bytes exceeds the maximum");
        let (status, body) = readiness(true, &watchdog.unhealthy());
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["ready"], false);
        assert_eq!(body["error"]["code"], "unhealthy");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("outbox profiles failed: record of"),
            "{message}"
        );
        assert_eq!(body["unhealthy"][0]["component"], "outbox profiles");
        assert_eq!(body["unhealthy"][0]["condition"], "failed");
        assert_eq!(body["unhealthy"].as_array().unwrap().len(), 1);

        outbox.progress();
        assert_eq!(readiness(true, &watchdog.unhealthy()).0, StatusCode::OK);
        assert_eq!(
            readiness(false, &watchdog.unhealthy()).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
