//! Exceptions that security engineers keep beside the rules: an identity (and
//! optionally a rule and an action) that is left alone until a date, with a reason
//! and an owner.

use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;

use crate::action::ActionKind;
use crate::scan::Identity;

/// Why the exceptions file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ExceptionError {
    /// Unreadable file.
    #[error("cannot read exceptions {path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        message: String,
    },
    /// Malformed TOML or a bad value.
    #[error("invalid exceptions {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message with key, line and column.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    exception: Vec<Exception>,
}

/// One exception.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exception {
    /// Object id or UPN.
    pub identity: String,
    /// Only for this rule, if given.
    #[serde(default)]
    pub rule: Option<String>,
    /// Only for this action, if given.
    #[serde(default)]
    pub action: Option<ActionKind>,
    /// Why the identity is exempt.
    pub reason: String,
    /// Who answers for it.
    pub owner: String,
    /// Last day (UTC) on which it applies.
    #[serde(deserialize_with = "date")]
    pub expires: NaiveDate,
}

fn date<'de, D: serde::Deserializer<'de>>(d: D) -> Result<NaiveDate, D::Error> {
    let v = toml::Value::deserialize(d)?;
    let s = match &v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Datetime(dt) => dt.to_string(),
        other => {
            return Err(serde::de::Error::custom(format!(
                "expires must be a date like 2027-06-30, not {}",
                other.type_str()
            )));
        }
    };
    NaiveDate::parse_from_str(&s, "%Y-%m-%d").map_err(|_| {
        serde::de::Error::custom(format!("expires {s:?} must be a date like 2027-06-30"))
    })
}

/// The loaded exceptions.
#[derive(Debug, Clone, Default)]
pub struct Exceptions {
    /// All exceptions, expired ones included.
    pub items: Vec<Exception>,
}

impl Exceptions {
    /// Loads the file; a missing file means no exceptions.
    pub fn load(path: &Path) -> Result<Exceptions, ExceptionError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Exceptions::default()),
            Err(e) => {
                return Err(ExceptionError::Read {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                });
            }
        };
        let f: File = toml::from_str(&text).map_err(|e| ExceptionError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        for (i, e) in f.exception.iter().enumerate() {
            if e.reason.trim().is_empty() || e.owner.trim().is_empty() {
                return Err(ExceptionError::Parse {
                    path: path.to_path_buf(),
                    message: format!("exception[{i}] needs a non-empty reason and owner"),
                });
            }
        }
        Ok(Exceptions { items: f.exception })
    }

    /// The first unexpired exception covering this identity, rule and action.
    pub fn find(
        &self,
        id: &Identity,
        rule: &str,
        kind: ActionKind,
        now: DateTime<Utc>,
    ) -> Option<&Exception> {
        let today = now.date_naive();
        self.items.iter().find(|e| {
            e.expires >= today
                && (e.identity.eq_ignore_ascii_case(&id.id.0)
                    || e.identity.eq_ignore_ascii_case(&id.user_principal_name))
                && e.rule.as_deref().is_none_or(|r| r == rule)
                && e.action.is_none_or(|a| a == kind)
        })
    }
}
