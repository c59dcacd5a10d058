//! What rules see: the finding, identity and tenant types with their helpers, and
//! the six action constructors. Documented for rule writers in `docs/rules.md`.

use std::sync::{Arc, Mutex};

use rhai::{Array, Dynamic, Engine, EvalAltResult, ImmutableString, Map};

use crate::domain::ActionKind;
use crate::scan::{AssignmentType, Identity, Scan, Severity};

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

/// An identity of the scan, handed to `evaluate`.
#[derive(Clone)]
pub(crate) struct IdentityRef {
    pub scan: Arc<Scan>,
    pub idx: usize,
    /// Shared by every call of one evaluation, so `attributes` is parsed once
    /// per identity rather than on every read.
    pub attributes: Arc<AttributeCache>,
}

/// The parsed `attributes` of the identity read last. The rules of one
/// finding run one identity after another, so keeping only the last one
/// serves every repeated read while holding a single map, however large the
/// scan.
#[derive(Default)]
pub(crate) struct AttributeCache {
    last: Mutex<Option<(usize, Dynamic)>>,
    /// How many times a raw `attributes` text was parsed (for tests).
    #[cfg(test)]
    pub parses: std::sync::atomic::AtomicUsize,
}

impl AttributeCache {
    /// The identity's attributes as a map: from the cache, or parsed once.
    fn get(&self, scan: &Scan, idx: usize) -> RhaiResult<Dynamic> {
        // A rule that panicked mid-read cannot leave the cache half-written:
        // it holds either the old entry or the new one, so a poisoned lock is safe.
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((i, map)) = last.as_ref()
            && *i == idx
        {
            return Ok(map.clone());
        }
        let map = match &scan.identities[idx].attributes {
            None => Dynamic::from_map(Map::new()),
            Some(raw) => {
                #[cfg(test)]
                self.parses
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // Straight into Rhai values: no `serde_json::Value` in between.
                serde_json::from_str::<Dynamic>(raw.get())
                    .map_err(|e| format!("attributes: {e}"))?
            }
        };
        *last = Some((idx, map.clone()));
        Ok(map)
    }
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
    m.insert("id".into(), scan.tenant_id.0.to_string().into());
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
        .register_get("id", |i: &mut IdentityRef| i.get().id.0.to_string())
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
            i.attributes.get(&i.scan, i.idx)
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
                .map(|m| Dynamic::from(m.id.0.to_string()))
                .collect::<Array>()
        });
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use rhai::{CallFnOptions, Scope};

    use super::*;
    use crate::config::RuleLimits;

    /// The shipped example scan, whose identities carry free-form attributes.
    fn example_scan() -> Arc<Scan> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/scans/contoso-2026-11-20.json"
        );
        let bytes = std::fs::read(path).unwrap();
        Arc::new(Scan::from_slice(&bytes, path).unwrap())
    }

    /// Calls `evaluate(identity)` of `script` for identity `idx` and returns its result.
    fn call(engine: &Engine, ast: &rhai::AST, identity: IdentityRef) -> Dynamic {
        engine
            .call_fn_with_options::<Dynamic>(
                CallFnOptions::new().eval_ast(false),
                &mut Scope::new(),
                ast,
                "evaluate",
                (identity,),
            )
            .unwrap()
    }

    #[test]
    fn attributes_read_twice_are_the_same_map_and_parsed_once() {
        let scan = example_scan();
        let mut engine = crate::policy::sandbox::engine(&RuleLimits::default());
        register(&mut engine);
        let ast = engine
            .compile(
                r#"fn evaluate(identity) {
                    let a = identity.attributes;
                    let b = identity.attributes;
                    [a == b, a.department, b.job_title, a.len()]
                }"#,
            )
            .unwrap();
        let cache = Arc::new(AttributeCache::default());
        let at = |idx| IdentityRef {
            scan: scan.clone(),
            idx,
            attributes: cache.clone(),
        };
        let expect = |idx: usize| {
            let raw = scan.identities[idx].attributes.as_ref().unwrap().get();
            let v: serde_json::Value = serde_json::from_str(raw).unwrap();
            let obj = v.as_object().unwrap();
            format!(
                "[true, {:?}, {:?}, {}]",
                obj["department"].as_str().unwrap(),
                obj["job_title"].as_str().unwrap(),
                obj.len()
            )
        };
        // Two reads in one call, then a second call (another rule) for the
        // same identity: one parse.
        assert_eq!(call(&engine, &ast, at(1)).to_string(), expect(1));
        assert_eq!(cache.parses.load(Ordering::Relaxed), 1);
        assert_eq!(call(&engine, &ast, at(1)).to_string(), expect(1));
        assert_eq!(cache.parses.load(Ordering::Relaxed), 1);
        // Another identity is its own map, parsed once.
        assert_eq!(call(&engine, &ast, at(2)).to_string(), expect(2));
        assert_ne!(expect(1), expect(2));
        assert_eq!(cache.parses.load(Ordering::Relaxed), 2);
        // Back to the first: parsed again (only the last identity is kept), and
        // a rule that changed its copy did not change what the next rule reads.
        let mutate = engine
            .compile(
                r#"fn evaluate(identity) {
                    let a = identity.attributes;
                    a.department = "changed";
                    identity.attributes.department
                }"#,
            )
            .unwrap();
        let dept = call(&engine, &mutate, at(1)).to_string();
        assert_eq!(cache.parses.load(Ordering::Relaxed), 3);
        assert_ne!(dept, "changed");
        assert_eq!(call(&engine, &ast, at(1)).to_string(), expect(1));
        assert_eq!(cache.parses.load(Ordering::Relaxed), 3);
    }
}
