//! `PUT`, `DELETE` and `GET /v1/documents/{id}`.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tidewater_core::document::MAX_ID_BYTES;
use tidewater_core::{content_hash, DocumentEvent, DocumentFormat, DocumentOp};
use tidewater_knowledge::body_text;

use crate::error::{blocking, ApiError};
use crate::AppState;

/// The body of `PUT /v1/documents/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PutDocument {
    text: String,
    #[serde(default)]
    metadata: serde_json::Map<String, Value>,
    #[serde(default)]
    format: DocumentFormat,
}

fn check_id(id: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(id) = id?;
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(ApiError::bad_request(format!(
            "document id must be 1 to {MAX_ID_BYTES} bytes"
        )));
    }
    Ok(id)
}

async fn append(
    state: &AppState,
    event: DocumentEvent,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let writer = state.knowledge.writer();
    let doc_id = event.doc_id.clone();
    let positions = blocking(move || {
        writer
            .write(std::slice::from_ref(&event))
            .map_err(ApiError::from)
    })
    .await?;
    let topic = state.knowledge.writer().topic().to_owned();
    let position = positions.first().copied();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "doc_id": doc_id,
            "topic": topic,
            "partition": position.map(|p| p.partition),
            "offset": position.map(|p| p.offset),
        })),
    ))
}

pub(crate) async fn put_document(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<PutDocument>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let doc_id = check_id(id)?;
    let Json(body) = body?;
    // Refused now rather than accepted and then dead-lettered by the pipeline.
    if let Err(reason) = body_text(body.text.as_bytes()) {
        return Err(ApiError::bad_request(format!(
            "document '{doc_id}' {reason}"
        )));
    }
    let bytes = body.text.into_bytes();
    let event = DocumentEvent {
        op: DocumentOp::Upsert,
        doc_id,
        source: "api".into(),
        format: body.format,
        metadata: body.metadata,
        content_hash: Some(content_hash(&bytes)),
        observed_at_ms: tidewater_core::time::now_ms(),
        body: bytes,
    };
    append(&state, event).await
}

pub(crate) async fn delete_document(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let doc_id = check_id(id)?;
    let event = DocumentEvent {
        op: DocumentOp::Delete,
        doc_id,
        source: "api".into(),
        format: DocumentFormat::Text,
        metadata: Default::default(),
        content_hash: None,
        observed_at_ms: tidewater_core::time::now_ms(),
        body: Vec::new(),
    };
    append(&state, event).await
}

pub(crate) async fn get_document(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let doc_id = check_id(id)?;
    let knowledge = state.knowledge.clone();
    let lookup = doc_id.clone();
    let status = blocking(move || Ok(knowledge.document(&lookup)?)).await?;
    match status {
        Some(status) => Ok(Json(serde_json::to_value(status).unwrap_or_default())),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("document '{doc_id}' is not indexed"),
        )),
    }
}
