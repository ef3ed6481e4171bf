//! `GET /v1/profiles/{namespace:value}`.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::Value;
use tidewater_profiles::Identifier;

use crate::error::{blocking, ApiError};
use crate::AppState;

pub(crate) async fn get_profile(
    State(state): State<AppState>,
    identifier: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(raw) = identifier?;
    let Some(profiles) = state.profiles.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "profiles are not configured: no [profiles] section",
        ));
    };
    let identifier = Identifier::parse(&raw).map_err(|e| {
        ApiError::bad_request(format!(
            "'{raw}' is not an identifier of the form namespace:value ({e})"
        ))
    })?;
    let lookup = identifier.clone();
    let profile = blocking(move || profiles.by_identifier(&lookup).map_err(ApiError::from)).await?;
    match profile {
        Some(profile) => Ok(Json(serde_json::to_value(profile).unwrap_or_default())),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no customer holds {identifier}"),
        )),
    }
}
