//! What rules see: the finding, identity and tenant types with their helpers, and
//! the six action constructors. Documented for rule writers in `docs/rules.md`.

use std::sync::Arc;

use rhai::{Array, Dynamic, Engine, EvalAltResult, ImmutableString, Map};

use crate::domain::ActionKind;
use crate::scan::{AssignmentType, Identity, Scan, Severity};

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

/// An identity of the scan, handed to `evaluate`.
#[derive(Clone)]
pub(crate) struct IdentityRef {
    pub scan: Arc<Scan>,
    pub idx: usize,
}

/// A finding of the scan, handed to `evaluate`.
#[derive(Clone)]
pub(crate) struct FindingRef {
    pub scan: Arc<Scan>,
    pub idx: usize,
}

/// What a rule's action constructor returns.
#[derive(Clone, Debug)]
pub(crate) struct RuleAction {
    pub kind: ActionKind,
    pub targets: Vec<String>,
    pub reason: String,
}

impl IdentityRef {
    fn get(&self) -> &Identity {
        &self.scan.identities[self.idx]
    }
}

impl FindingRef {
    fn get(&self) -> &crate::scan::Finding {
        &self.scan.findings[self.idx]
    }
}

/// The tenant map handed to `evaluate`.
pub(crate) fn tenant_map(scan: &Scan) -> Map {
    let mut m = Map::new();
    m.insert("id".into(), scan.tenant_id.0.clone().into());
    m.insert("name".into(), scan.tenant_name.clone().into());
    m.insert("scanned_at".into(), scan.scanned_at.to_rfc3339().into());
    m
}

fn role_matches(r: &crate::scan::RoleAssignment, name_or_id: &str) -> bool {
    r.role_name.eq_ignore_ascii_case(name_or_id)
        || r.role_definition_id.0.eq_ignore_ascii_case(name_or_id)
}

fn reason_of(reason: &str) -> RhaiResult<String> {
    if reason.trim().is_empty() {
        Err("an action needs a non-empty reason".into())
    } else {
        Ok(reason.to_string())
    }
}

fn simple(kind: ActionKind, reason: ImmutableString) -> RhaiResult<RuleAction> {
    Ok(RuleAction {
        kind,
        targets: Vec::new(),
        reason: reason_of(&reason)?,
    })
}

fn with_targets(
    kind: ActionKind,
    targets: Array,
    reason: ImmutableString,
) -> RhaiResult<RuleAction> {
    let mut out = Vec::with_capacity(targets.len());
    for t in targets {
        match t.into_immutable_string() {
            Ok(s) if !s.is_empty() => out.push(s.to_string()),
            _ => {
                return Err(format!("{} takes ids as strings", kind.as_str()).into());
            }
        }
    }
    if out.is_empty() {
        return Err(format!(
            "{} must name at least one {}",
            kind.as_str(),
            if kind == ActionKind::RemoveRoleAssignment {
                "role assignment id"
            } else {
                "group id"
            }
        )
        .into());
    }
    out.sort();
    out.dedup();
    Ok(RuleAction {
        kind,
        targets: out,
        reason: reason_of(&reason)?,
    })
}

/// Registers the rule API on an engine.
pub(crate) fn register(engine: &mut Engine) {
    register_actions(engine);
    register_finding(engine);
    register_identity_properties(engine);
    register_identity_helpers(engine);
}

/// The `Action` type and the six action constructors.
fn register_actions(engine: &mut Engine) {
    engine
        .register_type_with_name::<RuleAction>("Action")
        .register_get("action", |a: &mut RuleAction| a.kind.as_str().to_string())
        .register_get("reason", |a: &mut RuleAction| a.reason.clone())
        .register_get("targets", |a: &mut RuleAction| {
            a.targets
                .iter()
                .cloned()
                .map(Dynamic::from)
                .collect::<Array>()
        })
        .register_fn("to_string", |a: &mut RuleAction| {
            format!("{}({:?})", a.kind, a.targets)
        });

    // Action constructors.
    engine.register_fn("disable_user", |r: ImmutableString| {
        simple(ActionKind::DisableUser, r)
    });
    engine.register_fn("revoke_sessions", |r: ImmutableString| {
        simple(ActionKind::RevokeSessions, r)
    });
    engine.register_fn("enforce_mfa", |r: ImmutableString| {
        simple(ActionKind::EnforceMfa, r)
    });
    engine.register_fn("enforce_phishing_resistant_mfa", |r: ImmutableString| {
        simple(ActionKind::EnforcePhishingResistantMfa, r)
    });
    for kind in [
        ActionKind::RemoveRoleAssignment,
        ActionKind::RemoveGroupMembership,
    ] {
        engine.register_fn(kind.as_str(), move |t: Array, r: ImmutableString| {
            with_targets(kind, t, r)
        });
        engine.register_fn(
            kind.as_str(),
            move |t: ImmutableString, r: ImmutableString| {
                with_targets(kind, vec![Dynamic::from(t)], r)
            },
        );
    }
}

/// The `Finding` type: its properties and `severity_at_least`.
fn register_finding(engine: &mut Engine) {
    engine
        .register_type_with_name::<FindingRef>("Finding")
        .register_get("id", |f: &mut FindingRef| f.get().id.clone())
        .register_get("title", |f: &mut FindingRef| f.get().title.clone())
        .register_get("severity", |f: &mut FindingRef| {
            f.get().severity.as_str().to_string()
        })
        .register_get("category", |f: &mut FindingRef| f.get().category.clone())
        .register_get("recommendation", |f: &mut FindingRef| {
            f.get().recommendation.clone()
        })
        .register_get("documentation", |f: &mut FindingRef| {
            f.get()
                .documentation
                .clone()
                .map_or(Dynamic::UNIT, Dynamic::from)
        })
        .register_fn(
            "severity_at_least",
            |f: &mut FindingRef, s: ImmutableString| -> RhaiResult<bool> {
                let want = Severity::parse(&s).ok_or_else(|| {
                    format!("unknown severity {s:?}: use critical, high, medium, low or info")
                })?;
                Ok(f.get().severity >= want)
            },
        );
}

/// The `Identity` type and its properties.
fn register_identity_properties(engine: &mut Engine) {
    engine
        .register_type_with_name::<IdentityRef>("Identity")
        .register_get("id", |i: &mut IdentityRef| i.get().id.0.clone())
        .register_get("upn", |i: &mut IdentityRef| {
            i.get()
                .user_principal_name
                .clone()
                .map_or(Dynamic::UNIT, Dynamic::from)
        })
        .register_get("display_name", |i: &mut IdentityRef| {
            i.get().display_name.clone()
        })
        .register_get("user_type", |i: &mut IdentityRef| match i.get().user_type {
            Some(crate::scan::UserType::Member) => Dynamic::from("Member".to_string()),
            Some(crate::scan::UserType::Guest) => Dynamic::from("Guest".to_string()),
            None => Dynamic::UNIT,
        })
        .register_get("account_enabled", |i: &mut IdentityRef| {
            i.get().account_enabled.map_or(Dynamic::UNIT, Dynamic::from)
        })
        .register_get("risk_score", |i: &mut IdentityRef| {
            i.get()
                .risk_score
                .map_or(Dynamic::UNIT, |r| Dynamic::from(rhai::INT::from(r)))
        })
        .register_get("mfa_registered", |i: &mut IdentityRef| {
            i.get().mfa_registered.map_or(Dynamic::UNIT, Dynamic::from)
        })
        .register_get("last_sign_in", |i: &mut IdentityRef| {
            i.get()
                .last_sign_in
                .time()
                .map_or(Dynamic::UNIT, |t| Dynamic::from(t.to_rfc3339()))
        })
        .register_get("attributes", |i: &mut IdentityRef| -> RhaiResult<Dynamic> {
            match &i.get().attributes {
                None => Ok(Dynamic::from_map(Map::new())),
                Some(raw) => {
                    let v: serde_json::Value =
                        serde_json::from_str(raw.get()).map_err(|e| format!("attributes: {e}"))?;
                    rhai::serde::to_dynamic(&v)
                }
            }
        })
        .register_get("roles", |i: &mut IdentityRef| -> RhaiResult<Dynamic> {
            rhai::serde::to_dynamic(&i.get().roles)
        })
        .register_get("groups", |i: &mut IdentityRef| -> RhaiResult<Dynamic> {
            rhai::serde::to_dynamic(&i.get().groups)
        });
}

/// The identity helpers rules call: roles, groups and sign-in questions.
fn register_identity_helpers(engine: &mut Engine) {
    engine
        .register_fn("is_guest", |i: &mut IdentityRef| i.get().is_guest())
        .register_fn("is_global_admin", |i: &mut IdentityRef| {
            i.get().is_global_admin()
        })
        .register_fn("has_role", |i: &mut IdentityRef, role: ImmutableString| {
            i.get()
                .roles
                .iter()
                .any(|r| r.assignment_type == AssignmentType::Active && role_matches(r, &role))
        })
        .register_fn("active_role_assignments", |i: &mut IdentityRef| {
            i.get()
                .roles
                .iter()
                .filter(|r| r.assignment_type == AssignmentType::Active)
                .map(|r| Dynamic::from(r.assignment_id.clone()))
                .collect::<Array>()
        })
        .register_fn(
            "active_role_assignments",
            |i: &mut IdentityRef, role: ImmutableString| {
                i.get()
                    .roles
                    .iter()
                    .filter(|r| {
                        r.assignment_type == AssignmentType::Active && role_matches(r, &role)
                    })
                    .map(|r| Dynamic::from(r.assignment_id.clone()))
                    .collect::<Array>()
            },
        )
        .register_fn("days_since_sign_in", |i: &mut IdentityRef| {
            let id = i.get();
            id.last_sign_in.time().map_or(Dynamic::UNIT, |t| {
                Dynamic::from(i.scan.scanned_at.signed_duration_since(t).num_days())
            })
        })
        .register_fn("never_signed_in", |i: &mut IdentityRef| {
            i.get().last_sign_in == crate::scan::LastSignIn::Never
        })
        .register_fn("member_of", |i: &mut IdentityRef, g: ImmutableString| {
            i.get()
                .groups
                .iter()
                .any(|m| m.id.0.eq_ignore_ascii_case(&g) || m.display_name.eq_ignore_ascii_case(&g))
        })
        .register_fn("group_ids", |i: &mut IdentityRef, g: ImmutableString| {
            i.get()
                .groups
                .iter()
                .filter(|m| {
                    m.id.0.eq_ignore_ascii_case(&g) || m.display_name.eq_ignore_ascii_case(&g)
                })
                .map(|m| Dynamic::from(m.id.0.clone()))
                .collect::<Array>()
        });
}
