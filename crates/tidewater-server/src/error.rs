//! API errors and their JSON form: the one place where errors become status codes and
//! bodies. A client learns what it can act on (a stable code and a message); what only
//! the operator can act on (file paths, I/O errors, internal failures) goes to the server
//! log, never into a response.

use std::fmt::Display;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tidewater_knowledge::KnowledgeError;
use tidewater_log::LogError;

use crate::AppState;

/// The message of every 500: its cause is logged, not answered.
const INTERNAL_MESSAGE: &str = "internal error; the server log has the details";

/// An error answered to a client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    /// What the client is told.
    message: String,
    /// What only the server log gets.
    detail: Option<String>,
}

impl ApiError {
    /// An error with an explicit status and machine-readable code. The message of a 500
    /// is not answered but logged: the client gets a generic one.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        let message = message.into();
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            return Self::with_detail(status, code, INTERNAL_MESSAGE, message);
        }
        Self {
            status,
            code,
            message,
            detail: None,
        }
    }

    /// An error whose `detail` goes to the server log only; the client gets `message`.
    pub fn with_detail(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
        detail: impl Display,
    ) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            detail: Some(detail.to_string()),
        }
    }

    /// 500 with code `internal`; `detail` is logged.
    pub fn internal(detail: impl Display) -> Self {
        Self::with_detail(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            INTERNAL_MESSAGE,
            detail,
        )
    }

    /// 400 with code `invalid_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }
}

impl ApiError {
    /// The JSON body: `{"error": {"code", "message"}}`.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::json!({"error": {"code": self.code, "message": self.message}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            let detail = self.detail.as_deref().unwrap_or("");
            tracing::error!(code = self.code, message = %self.message, detail, "request failed");
        } else if let Some(detail) = &self.detail {
            tracing::info!(code = self.code, message = %self.message, detail, "request refused");
        }
        let body = self.json();
        (self.status, Json(body)).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let code = match rejection {
            JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
            JsonRejection::JsonSyntaxError(_) => "invalid_json",
            _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            _ => "invalid_request",
        };
        // 422 (well-formed JSON of the wrong shape) is reported as 400 like other bad bodies.
        let status = match rejection.status() {
            StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
            other => other,
        };
        Self::new(status, code, rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::bad_request(rejection.body_text())
    }
}

impl From<tidewater_analytics::Error> for ApiError {
    fn from(error: tidewater_analytics::Error) -> Self {
        use tidewater_analytics::Error as E;
        match error {
            E::InvalidEvent { .. } => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_event", error.to_string())
            }
            E::UnknownTopic(_) => {
                Self::new(StatusCode::NOT_FOUND, "unknown_topic", error.to_string())
            }
            E::Log(error) => error.into(),
            other => Self::internal(other),
        }
    }
}

impl From<tidewater_profiles::ProfilesError> for ApiError {
    fn from(error: tidewater_profiles::ProfilesError) -> Self {
        match error {
            tidewater_profiles::ProfilesError::Log(error) => error.into(),
            other => Self::internal(other),
        }
    }
}

impl From<LogError> for ApiError {
    /// A record over the log's size limit is the client's to fix (413, not retried); any
    /// other failure to append is the server's (503, worth a retry).
    fn from(error: LogError) -> Self {
        match error {
            LogError::RecordTooLarge { size, max } => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "record_too_large",
                format!("the record is {size} bytes, over the log's maximum of {max} bytes"),
            ),
            other => Self::with_detail(
                StatusCode::SERVICE_UNAVAILABLE,
                "log_unavailable",
                "the log cannot take writes right now; retry later",
                other,
            ),
        }
    }
}

impl From<KnowledgeError> for ApiError {
    fn from(error: KnowledgeError) -> Self {
        match error {
            KnowledgeError::BadRequest(m) => Self::bad_request(m),
            KnowledgeError::Embed(e) => Self::with_detail(
                StatusCode::SERVICE_UNAVAILABLE,
                "embedding_unavailable",
                "the embedding model is unavailable; retry later",
                e,
            ),
            KnowledgeError::Log(e) => e.into(),
            // The shared index is down or restarting: the request may succeed later.
            KnowledgeError::PgVector(e) if e.is_transient() => Self::with_detail(
                StatusCode::SERVICE_UNAVAILABLE,
                "index_unavailable",
                "the vector index (PostgreSQL) is unavailable; retry later",
                e,
            ),
            other => Self::internal(other),
        }
    }
}

/// Unknown routes.
pub(crate) async fn not_found(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {} {}", request.method(), request.uri().path()),
    )
}

/// The stable code of an error status that no handler chose (axum's rejections).
fn code_of(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::LENGTH_REQUIRED => "length_required",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal",
        _ => "invalid_request",
    }
}

/// Longest plain-text rejection body read to become a JSON message.
const MAX_REJECTION_BYTES: usize = 4096;

/// Gives every error response the JSON form: an error answered in another form (axum's
/// plain-text rejections, e.g. a body over the limit, or a 405 with no body) is rewritten
/// as `{"error": {"code", "message"}}` with the same status and headers.
pub(crate) async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_REJECTION_BYTES)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
    } else {
        text
    };
    let rewritten = ApiError::new(status, code_of(status), message).into_response();
    let (json_parts, body) = rewritten.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in &json_parts.headers {
        parts.headers.insert(name.clone(), value.clone());
    }
    parts
        .headers
        .entry(header::CONTENT_TYPE)
        .or_insert(HeaderValue::from_static("application/json"));
    Response::from_parts(parts, body)
}

/// Counts responses by status class.
pub(crate) async fn count_responses(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    let class = match response.status().as_u16() {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    state.metrics.http_responses.with(&[class]).inc();
    response
}

/// Runs blocking work (model, state store) off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(error: ApiError) -> (StatusCode, serde_json::Value) {
        let response = error.into_response();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn l9_error_bodies_never_carry_paths() {
        let path = "/tmp/tw-data/log/topics/documents/1/00000000000000000000.seg";
        let io = std::io::Error::other(format!(
            "failed to write all with offset to {path}: No space left on device"
        ));
        let (status, body) = body_of(LogError::Io(io).into()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"]["code"], "log_unavailable");
        assert!(!body.to_string().contains("/tmp"), "{body}");

        let (status, body) = body_of(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("state store: cannot open {path}"),
        ))
        .await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"]["code"], "internal");
        assert!(!body.to_string().contains("/tmp"), "{body}");
    }

    #[tokio::test]
    async fn l3_a_record_over_the_log_limit_is_413_not_503() {
        let (status, body) = body_of(
            LogError::RecordTooLarge {
                size: 17_825_951,
                max: 16_777_216,
            }
            .into(),
        )
        .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body["error"]["code"], "record_too_large");
    }
}
