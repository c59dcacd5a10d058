//! The three run modes and how they combine: the strictest always wins.

use serde::{Deserialize, Serialize};

/// What a run may do with the actions it plans.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Execute now (least strict).
    Enforce,
    /// Queue each action until a person approves it.
    Approval,
    /// Plan and record only (strictest, and the default).
    #[default]
    DryRun,
}

impl Mode {
    /// The stricter of two modes.
    pub fn strictest(self, other: Mode) -> Mode {
        self.max(other)
    }

    /// The name used in config, rules and history.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Approval => "approval",
            Mode::DryRun => "dry-run",
        }
    }

    /// Parses a mode name as written in config and rules.
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "enforce" => Some(Mode::Enforce),
            "approval" => Some(Mode::Approval),
            "dry-run" => Some(Mode::DryRun),
            _ => None,
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Mode::parse(s).ok_or_else(|| format!("unknown mode {s:?}"))
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dry_run_is_the_strictest_and_enforce_the_least() {
        assert_eq!(Mode::Enforce.strictest(Mode::Approval), Mode::Approval);
        assert_eq!(Mode::DryRun.strictest(Mode::Approval), Mode::DryRun);
        assert_eq!(Mode::Enforce.strictest(Mode::Enforce), Mode::Enforce);
        assert_eq!(Mode::default(), Mode::DryRun);
    }
}
