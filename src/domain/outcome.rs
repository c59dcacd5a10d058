//! How the execution of one action ended, typed, and the report of a pass.

use super::ActionState;

/// How an action ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Graph made the change.
    Done(String),
    /// Live state already matched; nothing was written.
    AlreadyDone(String),
    /// A live guardrail refused it.
    Refused(String),
    /// Graph failed; `retryable` when trying again later may work.
    Failed {
        /// What failed.
        why: String,
        /// Whether a later attempt may work.
        retryable: bool,
    },
}

impl Outcome {
    /// A failure that a later attempt may cure (throttling, outages, tokens).
    pub fn retryable(why: impl Into<String>) -> Outcome {
        Outcome::Failed {
            why: why.into(),
            retryable: true,
        }
    }

    /// A failure that trying again will not cure.
    pub fn failed(why: impl Into<String>) -> Outcome {
        Outcome::Failed {
            why: why.into(),
            retryable: false,
        }
    }

    /// The state the action ends in.
    pub fn state(&self) -> ActionState {
        match self {
            Outcome::Done(_) => ActionState::Done,
            Outcome::AlreadyDone(_) => ActionState::AlreadyDone,
            Outcome::Refused(_) => ActionState::Refused,
            Outcome::Failed { .. } => ActionState::Failed,
        }
    }

    /// The words recorded with it.
    pub fn reason(&self) -> String {
        match self {
            Outcome::Done(s) | Outcome::AlreadyDone(s) | Outcome::Refused(s) => s.clone(),
            Outcome::Failed {
                why,
                retryable: true,
            } => format!("{why} (retryable)"),
            Outcome::Failed { why, .. } => why.clone(),
        }
    }
}

/// What happened to one action in an execution pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecResult {
    /// The action.
    pub id: i64,
    /// The state it ended the pass in.
    pub state: ActionState,
    /// Why.
    pub reason: String,
}

/// What an execution pass did.
#[derive(Debug, Default)]
pub struct ExecReport {
    /// One entry per action the pass claimed.
    pub results: Vec<ExecResult>,
}

impl ExecReport {
    /// How many actions ended in `state`.
    pub fn count(&self, state: ActionState) -> usize {
        self.results.iter().filter(|r| r.state == state).count()
    }

    /// How many actions failed retryably and wait for a later run (they are
    /// back to ready or approved).
    pub fn to_retry(&self) -> usize {
        self.results
            .iter()
            .filter(|r| r.state.is_runnable())
            .count()
    }
}
