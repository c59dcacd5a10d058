//! Undo: asking to take back what a done action changed, recorded as a new
//! action of kind `undo` under the tenant's mode.

use chrono::{DateTime, Utc};

use crate::approval::{ApprovalError, ApprovalPolicy, Origin, check_approver};
use crate::config::Config;
use crate::domain::{Action, ActionKind, ActionState, Reason, WorkKind, initial_state};
use crate::store::{Filter, NewAction, NewRun, Store, StoreError};

/// Why an undo could not be requested.
#[derive(Debug, thiserror::Error)]
pub enum UndoError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No such action.
    #[error("action {0} does not exist")]
    Unknown(i64),
    /// The name asking is not in `[approvals] approvers`.
    #[error(
        "{0:?} is not in approvals.approvers and may not request an undo (undoing is a decision like approving)"
    )]
    NotAllowed(String),
    /// No name given.
    #[error("--by must name who asks for the undo")]
    NoName,
    /// Not undoable.
    #[error("action {id} cannot be undone: {why}")]
    NotUndoable {
        /// The action.
        id: i64,
        /// Why.
        why: String,
    },
}

/// States in which an undo of an action still stands: asking again would undo
/// the same change twice.
const UNDO_STANDING: [ActionState; 5] = [
    ActionState::Pending,
    ActionState::Approved,
    ActionState::Ready,
    ActionState::Executing,
    ActionState::Done,
];

/// Records an undo of a done action as a new action of kind `undo`, under the
/// tenant's mode: planned (dry-run), pending (approval) or ready (enforce).
/// Only a name on `[approvals] approvers` (when the list is set) may ask, and
/// not while another undo of the same action is pending, ready, executing or done.
pub async fn request_undo(
    cfg: &Config,
    store: &dyn Store,
    id: i64,
    by: &str,
    origin: &Origin,
    now: DateTime<Utc>,
) -> Result<(i64, ActionState), UndoError> {
    match check_approver(&ApprovalPolicy::from(&cfg.approvals), by) {
        Ok(()) => {}
        Err(ApprovalError::NoName) => return Err(UndoError::NoName),
        Err(_) => return Err(UndoError::NotAllowed(by.to_string())),
    }
    let a = store.action(id).await?.ok_or(UndoError::Unknown(id))?;
    check_undoable(&a)?;
    let tenant = cfg
        .tenant(&a.tenant)
        .ok_or_else(|| not_undoable(id, "its tenant is no longer configured"))?;
    check_no_standing_undo(store, &a).await?;
    let mode = tenant.mode_under(cfg.mode);
    let state = initial_state(mode);
    let run = NewRun {
        id: uuid::Uuid::new_v4().to_string(),
        tenant: a.tenant.clone(),
        scan_source: format!("undo of action {id}"),
        scan_sha256: String::new(),
        scanned_at: now,
        rule_set_hash: String::new(),
        mode: mode.to_string(),
        downgrades: Vec::new(),
        identities: 1,
        findings: 0,
        started_at: now,
        actor: by.to_string(),
        kind: "undo".into(),
    };
    let action = NewAction {
        identity_id: a.identity_id.clone(),
        identity_upn: a.identity_upn.clone(),
        identity_name: a.identity_name.clone(),
        kind: WorkKind::Undo,
        targets: vec![id.to_string()],
        reasons: vec![Reason {
            rule: "undo".into(),
            finding: String::new(),
            reason: undo_reason(&a, by, origin),
        }],
        mode,
        state,
        state_reason: None,
        expires_at: (state == ActionState::Pending).then(|| cfg.approval_expiry(now)),
    };
    let ids = store.record_run(&run, &[action], &[]).await?;
    Ok((ids.first().copied().unwrap_or(0), state))
}

fn not_undoable(id: i64, why: &str) -> UndoError {
    UndoError::NotUndoable {
        id,
        why: why.to_string(),
    }
}

/// Only a done remedy that changed something lasting can be undone.
fn check_undoable(a: &Action) -> Result<(), UndoError> {
    if a.kind == WorkKind::Undo {
        return Err(not_undoable(
            a.id,
            "it is itself an undo; run the original action again instead",
        ));
    }
    if a.remedy() == Some(ActionKind::RevokeSessions) {
        return Err(not_undoable(
            a.id,
            "revoking sessions cannot be undone (the signed-out sessions are gone)",
        ));
    }
    if a.state != ActionState::Done {
        return Err(not_undoable(
            a.id,
            &format!(
                "it is {}, and only done actions change anything to undo",
                a.state
            ),
        ));
    }
    Ok(())
}

/// Refuses a second undo while an earlier one of the same action still stands.
async fn check_no_standing_undo(store: &dyn Store, a: &Action) -> Result<(), UndoError> {
    let target = vec![a.id.to_string()];
    let undos = store
        .actions(&Filter {
            tenant: Some(a.tenant.clone()),
            identity: Some(a.identity_id.clone()),
            action: Some(WorkKind::Undo.to_string()),
            ..Filter::default()
        })
        .await?;
    match undos
        .iter()
        .find(|u| u.targets == target && UNDO_STANDING.contains(&u.state))
    {
        Some(u) => Err(not_undoable(
            a.id,
            &format!(
                "it already has an undo, action {} ({}); a second one would undo it twice",
                u.id, u.state
            ),
        )),
        None => Ok(()),
    }
}

/// The undo's reason in history: who asked, and through which interface.
fn undo_reason(a: &Action, by: &str, origin: &Origin) -> String {
    let id = a.id;
    match (origin.interface_column(), &origin.os_user) {
        (Some(i), Some(u)) => format!(
            "undo of action {id} ({}) requested by {by} (via {i}, operating-system user {u})",
            a.kind
        ),
        (Some(i), None) => format!(
            "undo of action {id} ({}) requested by {by} (via {i})",
            a.kind
        ),
        _ => format!("undo of action {id} ({}) requested by {by}", a.kind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Mode;

    fn action(kind: WorkKind, state: ActionState) -> Action {
        Action {
            id: 7,
            run_id: "r1".into(),
            tenant: "contoso".into(),
            identity_id: "u1".into(),
            identity_upn: "a@contoso.test".into(),
            identity_name: "A".into(),
            kind,
            targets: Vec::new(),
            reasons: Vec::new(),
            rules: Vec::new(),
            mode: Mode::Enforce,
            state,
            state_reason: None,
            created_at: DateTime::<Utc>::UNIX_EPOCH,
            expires_at: None,
        }
    }

    fn why(a: &Action) -> String {
        match check_undoable(a) {
            Err(UndoError::NotUndoable { id, why }) => {
                assert_eq!(id, 7);
                why
            }
            other => panic!("expected NotUndoable, got {other:?}"),
        }
    }

    #[test]
    fn only_a_done_remedy_other_than_revoking_sessions_is_undoable() {
        let disable = WorkKind::Remedy(ActionKind::DisableUser);
        assert!(check_undoable(&action(disable, ActionState::Done)).is_ok());
        assert_eq!(
            why(&action(WorkKind::Undo, ActionState::Done)),
            "it is itself an undo; run the original action again instead"
        );
        assert_eq!(
            why(&action(
                WorkKind::Remedy(ActionKind::RevokeSessions),
                ActionState::Done
            )),
            "revoking sessions cannot be undone (the signed-out sessions are gone)"
        );
        assert_eq!(
            why(&action(disable, ActionState::Pending)),
            "it is pending, and only done actions change anything to undo"
        );
    }

    #[test]
    fn the_undo_reason_names_who_asked_and_through_what() {
        let a = action(WorkKind::Remedy(ActionKind::DisableUser), ActionState::Done);
        assert_eq!(
            undo_reason(&a, "alice", &Origin::api()),
            "undo of action 7 (disable_user) requested by alice (via api)"
        );
        let cli = Origin {
            interface: "cli",
            os_user: Some("root".into()),
        };
        assert_eq!(
            undo_reason(&a, "alice", &cli),
            "undo of action 7 (disable_user) requested by alice (via cli, operating-system user root)"
        );
        let unknown = Origin {
            interface: "",
            os_user: None,
        };
        assert_eq!(
            undo_reason(&a, "alice", &unknown),
            "undo of action 7 (disable_user) requested by alice"
        );
    }
}
