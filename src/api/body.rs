//! Reading a JSON request body within the size and time limits.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use super::Shared;
use super::error::ApiError;

/// A JSON request body: any size up to the limit (413 beyond), parsed with a
/// message naming the field at fault. An empty body counts as `{}`.
pub(super) struct JsonBody<T>(pub(super) T);

impl<T: DeserializeOwned> FromRequest<Shared> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Shared) -> Result<Self, ApiError> {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            let mime = ct
                .to_str()
                .ok()
                .and_then(|s| s.split(';').next())
                .map(|m| m.trim().to_ascii_lowercase())
                .unwrap_or_default();
            if !(mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json")))
            {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "the request body must be JSON (Content-Type: application/json)",
                ));
            }
        }
        let limit = state.api.config().api.body_timeout.0;
        let read = tokio::time::timeout(limit, Bytes::from_request(req, state)).await;
        let Ok(read) = read else {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the request body did not arrive within {} (api.body_timeout)",
                    humantime::format_duration(limit)
                ),
            ));
        };
        let bytes = read.map_err(|rej| {
            if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!(
                        "the request body is larger than the limit of {} bytes (api.max_body_bytes)",
                        state.max_body
                    ),
                )
            } else {
                ApiError::bad_request(
                    "unreadable_body",
                    format!("cannot read the request body: {}", rej.body_text()),
                )
            }
        })?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        let mut de = serde_json::Deserializer::from_slice(text);
        let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            ApiError::bad_request("invalid_json", format!("invalid JSON body: {e}"))
        })?;
        de.end().map_err(|e| {
            ApiError::bad_request("invalid_json", format!("invalid JSON body: {e}"))
        })?;
        Ok(JsonBody(value))
    }
}
