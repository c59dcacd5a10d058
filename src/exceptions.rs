//! Exceptions that security engineers keep beside the rules: an identity (and
//! optionally a rule and an action) that is left alone until a date, with a reason
//! and an owner.

use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;

use crate::domain::ActionKind;
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
    /// `exceptions_file` is configured but the file does not exist: the people
    /// it protects would be remediated, so this is never read as "no exceptions".
    #[error("exceptions_file {path} does not exist (configured in {config})")]
    Missing {
        /// The file.
        path: PathBuf,
        /// The config that names it.
        config: PathBuf,
    },
    /// Exceptions naming rules that are not in the rule set: they would never apply.
    #[error("{} exception(s) name a rule that does not exist:\n{}", .0.len(), .0.join("\n"))]
    UnknownRule(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    exception: Vec<Exception>,
}

/// The `rule` keys with their places, read beside [`File`] for error messages.
#[derive(Deserialize)]
struct Places {
    #[serde(default)]
    exception: Vec<RulePlace>,
}

#[derive(Deserialize)]
struct RulePlace {
    #[serde(default)]
    rule: Option<toml::Spanned<String>>,
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
    /// The file they came from (for messages).
    pub path: PathBuf,
    /// (line, column) of each item's `rule`, when it has one.
    rule_places: Vec<Option<(usize, usize)>>,
}

/// Where the exceptions are and whether the file must exist.
#[derive(Debug, Clone)]
pub struct ExceptionsSource {
    /// The file.
    pub path: PathBuf,
    /// The config that named it explicitly (`exceptions_file`): then it must
    /// exist; the default `<policies_dir>/exceptions.toml` is optional.
    pub configured_in: Option<PathBuf>,
}

impl ExceptionsSource {
    /// The configured exceptions file, which must then exist, or the optional
    /// default `<policies_dir>/exceptions.toml`.
    pub fn from_config(cfg: &crate::config::Config) -> ExceptionsSource {
        ExceptionsSource {
            path: cfg.exceptions_path(),
            configured_in: cfg.exceptions_file.as_ref().map(|_| cfg.path.clone()),
        }
    }
}

impl Exceptions {
    /// Loads the exceptions: a configured file that is missing is an error, a
    /// missing default file means no exceptions.
    pub fn load_from(src: &ExceptionsSource) -> Result<Exceptions, ExceptionError> {
        if let Some(config) = &src.configured_in
            && !src.path.exists()
        {
            return Err(ExceptionError::Missing {
                path: src.path.clone(),
                config: config.clone(),
            });
        }
        Self::load(&src.path)
    }

    /// Loads the file; a missing file means no exceptions (see [`Exceptions::load_from`]).
    pub fn load(path: &Path) -> Result<Exceptions, ExceptionError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Exceptions {
                    path: path.to_path_buf(),
                    ..Exceptions::default()
                });
            }
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
        let rule_places = toml::from_str::<Places>(&text)
            .map(|p| {
                p.exception
                    .iter()
                    .map(|e| {
                        e.rule
                            .as_ref()
                            .map(|r| crate::text::place_of(text.as_bytes(), r.span().start))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Exceptions {
            items: f.exception,
            path: path.to_path_buf(),
            rule_places,
        })
    }

    /// Refuses exceptions that name a rule the rule set does not have: such an
    /// exception never applies, so the identity it was written for is remediated.
    pub fn check_rules<'a>(
        &self,
        rules: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), ExceptionError> {
        let known: Vec<&str> = rules.into_iter().collect();
        let mut bad = Vec::new();
        for (i, e) in self.items.iter().enumerate() {
            let Some(rule) = &e.rule else { continue };
            if known.contains(&rule.as_str()) {
                continue;
            }
            let place = match self.rule_places.get(i).copied().flatten() {
                Some((line, column)) => format!("{}:{line}:{column}", self.path.display()),
                None => self.path.display().to_string(),
            };
            bad.push(format!(
                "  {place}: exception[{i}] for {:?} names rule {:?}, which does not exist (rules: {})",
                crate::text::clip(&e.identity, 200),
                crate::text::clip(rule, 200),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ));
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(ExceptionError::UnknownRule(bad))
        }
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
                    || id
                        .user_principal_name
                        .as_deref()
                        .is_some_and(|u| e.identity.eq_ignore_ascii_case(u)))
                && e.rule.as_deref().is_none_or(|r| r == rule)
                && e.action.is_none_or(|a| a == kind)
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;

    const ID: &str = "00000000-0000-0000-0000-000000000001";

    fn exceptions(toml_text: &str) -> Exceptions {
        let f: File = toml::from_str(toml_text).unwrap();
        Exceptions {
            items: f.exception,
            path: PathBuf::from("policies/exceptions.toml"),
            rule_places: Vec::new(),
        }
    }

    fn identity() -> Identity {
        serde_json::from_value(json!({
            "id": ID, "user_principal_name": "svc@t.com", "display_name": "svc",
            "user_type": "Member", "account_enabled": true, "last_sign_in": null,
            "roles": [], "groups": []
        }))
        .unwrap()
    }

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
    }

    fn owner_of(e: Option<&Exception>) -> Option<&str> {
        e.map(|e| e.owner.as_str())
    }

    #[test]
    fn an_exception_matches_by_object_id_or_upn_ignoring_case() {
        let now = at(2027, 1, 1, 0);
        let by_id = exceptions(&format!(
            "[[exception]]\nidentity = \"{}\"\nreason = \"r\"\nowner = \"by-id\"\nexpires = 2027-06-30\n",
            ID.to_uppercase()
        ));
        assert_eq!(
            owner_of(by_id.find(&identity(), "any", ActionKind::DisableUser, now)),
            Some("by-id")
        );
        let by_upn = exceptions(
            "[[exception]]\nidentity = \"SVC@T.COM\"\nreason = \"r\"\nowner = \"by-upn\"\nexpires = \"2027-06-30\"\n",
        );
        assert_eq!(
            owner_of(by_upn.find(&identity(), "any", ActionKind::DisableUser, now)),
            Some("by-upn")
        );
        let other = exceptions(
            "[[exception]]\nidentity = \"someone@t.com\"\nreason = \"r\"\nowner = \"o\"\nexpires = 2027-06-30\n",
        );
        assert_eq!(
            owner_of(other.find(&identity(), "any", ActionKind::DisableUser, now)),
            None
        );
    }

    #[test]
    fn an_exception_applies_through_its_last_day_and_not_after() {
        let ex = exceptions(
            "[[exception]]\nidentity = \"svc@t.com\"\nreason = \"r\"\nowner = \"o\"\nexpires = 2027-06-30\n",
        );
        let find = |now| owner_of(ex.find(&identity(), "any", ActionKind::EnforceMfa, now));
        assert_eq!(find(at(2027, 6, 30, 23)), Some("o"));
        assert_eq!(find(at(2027, 7, 1, 0)), None);
    }

    #[test]
    fn an_exception_for_a_rule_or_an_action_covers_only_that() {
        let ex = exceptions(
            "[[exception]]\nidentity = \"svc@t.com\"\nrule = \"stale\"\naction = \"disable_user\"\nreason = \"r\"\nowner = \"o\"\nexpires = 2027-06-30\n",
        );
        let now = at(2027, 1, 1, 0);
        let find = |rule, kind| owner_of(ex.find(&identity(), rule, kind, now));
        assert_eq!(find("stale", ActionKind::DisableUser), Some("o"));
        assert_eq!(find("other", ActionKind::DisableUser), None);
        assert_eq!(find("stale", ActionKind::RevokeSessions), None);
    }

    #[test]
    fn an_expiry_that_is_not_a_date_is_refused() {
        let err = toml::from_str::<File>(
            "[[exception]]\nidentity = \"x\"\nreason = \"r\"\nowner = \"o\"\nexpires = \"30/06/2027\"\n",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains("expires \"30/06/2027\" must be a date like 2027-06-30"),
            "{err}"
        );
        let err = toml::from_str::<File>(
            "[[exception]]\nidentity = \"x\"\nreason = \"r\"\nowner = \"o\"\nexpires = 20270630\n",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains("expires must be a date like 2027-06-30, not integer"),
            "{err}"
        );
    }

    #[test]
    fn an_exception_naming_an_unknown_rule_is_refused_with_its_place() {
        let mut ex = exceptions(
            "[[exception]]\nidentity = \"svc@t.com\"\nrule = \"stale\"\nreason = \"r\"\nowner = \"o\"\nexpires = 2027-06-30\n\
             [[exception]]\nidentity = \"b@t.com\"\nrule = \"gone\"\nreason = \"r\"\nowner = \"o\"\nexpires = 2027-06-30\n",
        );
        ex.rule_places = vec![Some((3, 1)), Some((9, 1))];
        assert!(ex.check_rules(["stale", "gone"]).is_ok());
        let err = ex.check_rules(["stale"]).unwrap_err().to_string();
        assert_eq!(
            err,
            "1 exception(s) name a rule that does not exist:\n  policies/exceptions.toml:9:1: exception[1] for \"b@t.com\" names rule \"gone\", which does not exist (rules: stale)"
        );
        let err = ex.check_rules([]).unwrap_err().to_string();
        assert!(err.starts_with("2 exception(s)"), "{err}");
        assert!(err.ends_with("(rules: none)"), "{err}");
    }
}
