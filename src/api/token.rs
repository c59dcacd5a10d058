//! The API bearer token: where it is read from, the slot SIGHUP replaces, and
//! the constant-time check of a request's `Authorization` header.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};

use crate::config::ApiConfig;

/// The API bearer token, shared with the daemon so that SIGHUP can replace it
/// (a rotated token works at once and the old one is refused).
#[derive(Clone)]
pub struct Token(Arc<RwLock<Arc<str>>>);

impl Token {
    /// A token slot holding `token`.
    pub fn new(token: &str) -> Token {
        Token(Arc::new(RwLock::new(Arc::from(token))))
    }

    /// The token in force now.
    pub fn get(&self) -> Arc<str> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the token; requests after this need the new one.
    pub fn set(&self, token: &str) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::from(token);
    }
}

/// Whether the request carries the token; compared in constant time.
pub(super) fn authorized(headers: &HeaderMap, token: &str) -> bool {
    if token.is_empty() {
        return false;
    }
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, given)) = value.trim().split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer") && constant_time_eq(given.trim(), token)
}

/// Compares the SHA-256 digests of both strings without an early exit, so the
/// time taken reveals neither a matching prefix nor the token's length.
fn constant_time_eq(a: &str, b: &str) -> bool {
    let (x, y) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    let diff = x
        .iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q));
    std::hint::black_box(diff) == 0
}

/// Reads the bearer token from `api.token_file` or `$CREDENTIALS_DIRECTORY/<api.token_credential>`.
pub fn load_token(cfg: &ApiConfig) -> Result<String, String> {
    let (source, path): (String, PathBuf) = match (&cfg.token_file, &cfg.token_credential) {
        (Some(_), Some(_)) => {
            return Err(
                "api: give only one of token_file or token_credential for the bearer token".into(),
            );
        }
        (Some(file), None) => (format!("api.token_file {}", file.display()), file.clone()),
        (None, Some(name)) => {
            if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                return Err(format!(
                    "api.token_credential {name:?} must be a credential name, not a path"
                ));
            }
            let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                format!(
                    "api.token_credential {name:?} needs systemd's LoadCredential= ($CREDENTIALS_DIRECTORY is not set)"
                )
            })?;
            (
                format!("api.token_credential {name:?}"),
                std::path::Path::new(&dir).join(name),
            )
        }
        (None, None) => {
            return Err(
                "the API needs a bearer token: set api.token_file or api.token_credential".into(),
            );
        }
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read the API token ({source}): {e}"))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("the API token ({source}) is empty"));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "the API token ({source}) must be one line without spaces"
        ));
    }
    #[cfg(unix)]
    if cfg.token_file.is_some() {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(&path)
            && m.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                file = %path.display(),
                "the API token file is readable by group or others; chmod 600 it"
            );
        }
    }
    Ok(token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_tokens_compare_exactly() {
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, "s3cret"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cret"),
        );
        assert!(authorized(&h, "s3cret"));
        assert!(!authorized(&h, "s3cre"));
        assert!(!authorized(&h, ""));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer s3cret"),
        );
        assert!(authorized(&h, "s3cret"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic s3cret"),
        );
        assert!(!authorized(&h, "s3cret"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert!(!authorized(&h, "s3cret"));
    }

    #[test]
    fn load_token_reads_a_trimmed_file_and_refuses_empty_or_ambiguous_sources() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "abc123\n").unwrap();
        let mut cfg = ApiConfig {
            token_file: Some(file.clone()),
            ..ApiConfig::default()
        };
        assert_eq!(load_token(&cfg).unwrap(), "abc123");
        std::fs::write(&file, " \n").unwrap();
        assert!(load_token(&cfg).unwrap_err().contains("empty"));
        cfg.token_credential = Some("api-token".into());
        assert!(load_token(&cfg).unwrap_err().contains("only one"));
        cfg.token_file = None;
        cfg.token_credential = Some("../x".into());
        assert!(load_token(&cfg).unwrap_err().contains("not a path"));
        cfg.token_credential = None;
        assert!(
            load_token(&cfg)
                .unwrap_err()
                .contains("needs a bearer token")
        );
    }
}
