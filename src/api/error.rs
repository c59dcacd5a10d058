//! Error answers: a status, a stable code and a message, as JSON.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::approval::ApprovalError;
use crate::service::approvals::DecideError;
use crate::store::StoreError;

/// An error answer: status, a stable code, and a message for people.
#[derive(Debug)]
pub(super) struct ApiError {
    pub(super) status: StatusCode,
    pub(super) code: &'static str,
    message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub(super) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub(super) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.status == StatusCode::REQUEST_TIMEOUT {
            // The rest of the body may never come: do not wait to read it.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "API request failed in the history store");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store_error",
            "the history store failed; the daemon log has the details",
        )
    }
}

impl From<DecideError> for ApiError {
    fn from(e: DecideError) -> Self {
        match e {
            DecideError::Approval(a) => a.into(),
            DecideError::Store(s) => s.into(),
            DecideError::Contended => {
                ApiError::new(StatusCode::CONFLICT, "contended", e.to_string())
            }
        }
    }
}

impl From<ApprovalError> for ApiError {
    fn from(e: ApprovalError) -> Self {
        let message = e.to_string();
        match e {
            ApprovalError::UnknownId(_) => ApiError::not_found(message),
            ApprovalError::NotPending { .. } => {
                ApiError::new(StatusCode::CONFLICT, "not_pending", message)
            }
            ApprovalError::SameApprover { .. } | ApprovalError::SameOsUser { .. } => {
                ApiError::new(StatusCode::CONFLICT, "already_approved", message)
            }
            ApprovalError::OwnRequest { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "own_request", message)
            }
            ApprovalError::NotBulk { .. } => {
                ApiError::new(StatusCode::CONFLICT, "not_bulk", message)
            }
            ApprovalError::Empty => {
                ApiError::new(StatusCode::CONFLICT, "nothing_to_decide", message)
            }
            ApprovalError::NotAllowed(_) => {
                ApiError::new(StatusCode::FORBIDDEN, "not_an_approver", message)
            }
            ApprovalError::NoName => ApiError::bad_request(
                "missing_approver",
                "\"by\" must name who approves or rejects",
            ),
        }
    }
}

pub(super) type ApiResult<T> = Result<T, ApiError>;
