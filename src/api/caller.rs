//! Who calls: the role a route needs of the calling token, and the refusal of
//! a body that types a name (`"by"`), since the API records the token's own.

use axum::http::StatusCode;
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer};

use super::error::{ApiError, ApiResult};
use crate::access::{Caller, Role};

/// 403 `forbidden` unless the caller's roles permit what `role` does.
pub(super) fn require(caller: &Caller, role: Role, to: &str) -> ApiResult<()> {
    if caller.may(role) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!(
            "{} may not {to}: that needs the {role} role (it holds: {})",
            caller.name,
            roles_text(caller)
        ),
    ))
}

fn roles_text(caller: &Caller) -> String {
    let list: Vec<&str> = caller.roles.list().iter().map(|r| r.as_str()).collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

/// Deserializes a body's `"by"` as present, whatever its value (even `null`),
/// so that [`refuse_typed_name`] can refuse it.
pub(super) fn typed_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<()>, D::Error> {
    IgnoredAny::deserialize(d).map(|_| Some(()))
}

/// 400 when a body typed a name: the API records the calling token's name.
pub(super) fn refuse_typed_name(by: Option<()>) -> ApiResult<()> {
    match by {
        Some(()) => Err(ApiError::bad_request(
            "by_not_accepted",
            "the API records the calling token's name; remove \"by\"",
        )),
        None => Ok(()),
    }
}
