//! `POST /v1/search`.

use std::time::Instant;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};
use tidewater_knowledge::SearchRequest;

use crate::error::{blocking, ApiError};
use crate::AppState;

pub(crate) async fn search(
    State(state): State<AppState>,
    body: Result<Json<SearchRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(request) = body?;
    let started = Instant::now();
    let knowledge = state.knowledge.clone();
    let results = blocking(move || Ok(knowledge.search(&request)?)).await?;
    Ok(Json(
        json!({"results": results, "took_ms": started.elapsed().as_secs_f64() * 1000.0}),
    ))
}
