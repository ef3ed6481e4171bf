//! `GET /v1/kpis` and `POST /v1/feedback`.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tidewater_core::{FeedbackEvent, Rating};

use crate::error::{blocking, ApiError};
use crate::AppState;

/// A time given as milliseconds since the Unix epoch or as RFC 3339 (`2026-11-21T10:00:00Z`).
fn parse_time(name: &str, raw: &str) -> Result<u64, ApiError> {
    if let Ok(ms) = raw.parse::<u64>() {
        return Ok(ms);
    }
    humantime::parse_rfc3339_weak(raw)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "{name}={raw}: expected milliseconds since the Unix epoch or an RFC 3339 time"
            ))
        })
}

/// `GET /v1/kpis?from=&to=&window=`: windows starting in `[from, to)`, closed ones final,
/// open ones provisional. `window`, when given, must be the configured window size.
pub(crate) async fn get_kpis(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    for key in params.keys() {
        if !["from", "to", "window"].contains(&key.as_str()) {
            return Err(ApiError::bad_request(format!(
                "unknown parameter '{key}'; use from, to and window"
            )));
        }
    }
    let from = params
        .get("from")
        .map(|v| parse_time("from", v))
        .transpose()?;
    let to = params.get("to").map(|v| parse_time("to", v)).transpose()?;
    let size = state.analytics.config().window.size;
    if let Some(raw) = params.get("window") {
        let window: Duration = humantime::parse_duration(raw)
            .map_err(|e| ApiError::bad_request(format!("window={raw}: {e}")))?;
        if window != size {
            return Err(ApiError::bad_request(format!(
                "window={raw}: KPIs are computed over {} windows (analytics.window.size)",
                humantime::format_duration(size)
            )));
        }
    }
    let analytics = state.analytics.clone();
    let report = blocking(move || analytics.kpis(from, to).map_err(ApiError::from)).await?;
    Ok(Json(serde_json::to_value(report).unwrap_or_default()))
}

/// The body of `POST /v1/feedback`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FeedbackRequest {
    conversation_id: String,
    rating: Rating,
    #[serde(default)]
    comment: Option<String>,
}

/// `POST /v1/feedback`: a rating of an answer, appended to the feedback topic.
pub(crate) async fn post_feedback(
    State(state): State<AppState>,
    body: Result<Json<FeedbackRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(request) = body?;
    if request.conversation_id.trim().is_empty() {
        return Err(ApiError::bad_request("conversation_id must not be empty"));
    }
    let event = FeedbackEvent {
        conversation_id: request.conversation_id,
        rating: request.rating,
        comment: request.comment.filter(|c| !c.trim().is_empty()),
        event_time_ms: u64::try_from(tidewater_core::time::now_ms()).ok(),
    };
    let analytics = state.analytics.clone();
    let logged = event.clone();
    let position =
        blocking(move || analytics.record_feedback(&logged).map_err(ApiError::from)).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "conversation_id": event.conversation_id,
            "rating": event.rating,
            "event_time_ms": event.event_time_ms,
            "offset": {"partition": position.partition, "offset": position.offset},
        })),
    ))
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn times_are_millis_or_rfc3339() {
        assert_eq!(parse_time("from", "1500").unwrap(), 1_500);
        assert_eq!(parse_time("from", "1970-01-01T00:00:01Z").unwrap(), 1_000);
        assert!(parse_time("from", "yesterday").is_err());
    }
}
