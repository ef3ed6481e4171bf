//! `POST /v1/events/{topic}`: change events, conversations or feedback, as one JSON value,
//! a JSON array, or NDJSON.

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use crate::error::{blocking, ApiError};
use crate::AppState;

/// The route.
pub(crate) const PATH: &str = "/v1/events/{topic}";

/// Largest request body accepted.
pub(crate) const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Splits a body into events: a JSON array is its elements, any other JSON value is one
/// event, and otherwise each non-empty line must be a JSON value (NDJSON).
fn events_of(body: &[u8]) -> Result<Vec<Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(items)) => return Ok(items),
        Ok(value) => return Ok(vec![value]),
        Err(_) => {}
    }
    let text = std::str::from_utf8(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("body is not UTF-8: {e}"),
        )
    })?;
    let mut events = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let event = serde_json::from_str(line).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!(
                    "line {}: not JSON ({e}); send one JSON value, a JSON array, or NDJSON",
                    n + 1
                ),
            )
        })?;
        events.push(event);
    }
    if events.is_empty() {
        return Err(ApiError::bad_request("the body holds no events"));
    }
    Ok(events)
}

pub(crate) async fn post_events(
    State(state): State<AppState>,
    topic: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Path(topic) = topic?;
    let events = events_of(&body)?;
    let count = events.len();
    let positions = if state.analytics.accepts(&topic) {
        let analytics = state.analytics.clone();
        let topic = topic.clone();
        blocking(move || analytics.ingest(&topic, events).map_err(ApiError::from)).await?
    } else {
        let profiles = match &state.profiles {
            Some(p) if p.topic() == topic => p.clone(),
            _ => {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "unknown_topic",
                    format!(
                        "topic '{topic}' does not accept events; accepted: {}",
                        accepted_topics(&state).join(", ")
                    ),
                ))
            }
        };
        blocking(move || profiles.ingest(events).map_err(ApiError::from)).await?
    };
    let offsets: Vec<Value> = positions
        .iter()
        .map(|p| json!({"partition": p.partition, "offset": p.offset}))
        .collect();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"topic": topic, "accepted": count, "offsets": offsets})),
    ))
}

/// The topics `POST /v1/events/{topic}` writes to.
fn accepted_topics(state: &AppState) -> Vec<String> {
    let analytics = state.analytics.config();
    let mut topics = vec![
        analytics.conversations_topic.clone(),
        analytics.feedback_topic.clone(),
    ];
    if let Some(p) = &state.profiles {
        topics.push(format!("{} (change events)", p.topic()));
    }
    topics
}

#[cfg(test)]
mod tests {
    use super::events_of;

    #[test]
    fn bodies_split_into_events() {
        assert_eq!(events_of(br#"{"op":"c"}"#).unwrap().len(), 1);
        assert_eq!(events_of(br#"[{"op":"c"},{"op":"d"}]"#).unwrap().len(), 2);
        assert_eq!(
            events_of(b"{\"op\":\"c\"}\n\n{\"op\":\"u\"}\n")
                .unwrap()
                .len(),
            2
        );
        let err = format!("{:?}", events_of(b"{\"op\":\"c\"}\n{oops\n").unwrap_err());
        assert!(err.contains("line 2"), "{err}");
        assert!(events_of(b"  \n").is_err());
    }
}
