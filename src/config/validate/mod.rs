//! The rules a parsed config must follow beyond its types: values in range,
//! settings that only make sense together, names and ids well formed. The checks
//! run section by section in a fixed order and the first broken rule is reported.

use std::collections::HashSet;
use std::time::Duration;

mod api;
mod console;
mod tenant;

use super::daemon::DaemonConfig;
use super::notify::NotifyConfig;
use super::safety::{Guardrails, RuleLimits};
use super::store::StoreConfig;
use super::{Config, ConfigError, parse_schedule};

/// Longest `approval_ttl` (and `max_clock_skew`) accepted.
const MAX_APPROVAL_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// Longest `daemon.lease_secs` accepted.
const MAX_LEASE_SECS: u64 = 365 * 24 * 3600;

/// A broken rule: the dotted key at fault and what is wrong with it.
#[derive(Debug)]
struct Fault {
    key: String,
    message: String,
}

impl Fault {
    /// The same fault, its key placed inside the table at `prefix`.
    fn under(self, prefix: &str) -> Fault {
        Fault {
            key: format!("{prefix}.{}", self.key),
            message: self.message,
        }
    }
}

/// The outcome of one check.
type Checked = Result<(), Fault>;

/// Fails a check, naming the key at fault and what is wrong with it.
fn fault(key: impl Into<String>, message: impl Into<String>) -> Checked {
    Err(Fault {
        key: key.into(),
        message: message.into(),
    })
}

/// Whether a URL is one the HTTP client will fetch.
fn is_http(url: &str) -> bool {
    url.starts_with("https://") || url.starts_with("http://")
}

impl Config {
    /// Checks the parsed values; the error names the first key at fault.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check(self).map_err(|f| ConfigError::invalid(&self.path, &f.key, &f.message))
    }
}

/// Every check, in the order their errors are reported.
fn check(cfg: &Config) -> Checked {
    check_store(&cfg.store)?;
    check_guardrails(&cfg.guardrails)?;
    check_rules(&cfg.rules)?;
    check_durations(cfg)?;
    api::check_api(&cfg.api)?;
    console::check_console(cfg)?;
    check_lease(&cfg.daemon)?;
    check_webhooks(&cfg.notify)?;
    check_schedule("daemon.schedule", &cfg.daemon.schedule)?;
    let mut names = HashSet::new();
    for (i, t) in cfg.tenants.iter().enumerate() {
        tenant::check_tenant(&format!("tenant[{i}]"), t, cfg.mode, &mut names)?;
    }
    Ok(())
}

fn check_store(s: &StoreConfig) -> Checked {
    let url = &s.url;
    if !(url.starts_with("sqlite://")
        || url.starts_with("postgres://")
        || url.starts_with("postgresql://"))
    {
        // The URL itself is not quoted: it may carry a password.
        let scheme = url.split_once("://").map_or("", |(s, _)| s);
        return fault(
            "store.url",
            format!(
                "must start with sqlite:// or postgres:// (it starts with {:?}; the rest is not shown, it may carry a password)",
                crate::text::clip(scheme, 40)
            ),
        );
    }
    if s.history_key_file.is_some() && s.history_key_credential.is_some() {
        return fault(
            "store.history_key_credential",
            "set history_key_file or history_key_credential, not both",
        );
    }
    if s.checkpoint_every == 0 {
        return fault("store.checkpoint_every", "must be above 0");
    }
    if s.connect_timeout.0.is_zero() {
        return fault("store.connect_timeout", "must be above 0");
    }
    Ok(())
}

fn check_guardrails(g: &Guardrails) -> Checked {
    if !(g.max_actions_percent > 0.0 && g.max_actions_percent <= 100.0) {
        return fault(
            "guardrails.max_actions_percent",
            "must be above 0 and at most 100",
        );
    }
    if g.circuit_breaker_factor < 1.0 || g.circuit_breaker_factor.is_nan() {
        return fault("guardrails.circuit_breaker_factor", "must be at least 1");
    }
    Ok(())
}

fn check_rules(r: &RuleLimits) -> Checked {
    if r.timeout_ms == 0 || r.max_operations == 0 {
        return fault("rules", "timeout_ms and max_operations must be above 0");
    }
    Ok(())
}

/// The top-level durations: times computed from them must stay representable.
fn check_durations(cfg: &Config) -> Checked {
    // A scan's time plus this is compared with now.
    if cfg.max_clock_skew.0 > MAX_APPROVAL_TTL {
        return fault("max_clock_skew", "must be at most 100 years");
    }
    if cfg.approval_ttl.0.is_zero() {
        return fault("approval_ttl", "must be above 0");
    }
    // Expiry times are computed by adding it to now.
    if cfg.approval_ttl.0 > MAX_APPROVAL_TTL {
        return fault("approval_ttl", "must be at most 100 years");
    }
    Ok(())
}

fn check_lease(d: &DaemonConfig) -> Checked {
    if d.lease_secs < 10 || d.execute_interval_secs == 0 {
        return fault(
            "daemon.lease_secs",
            "lease_secs must be at least 10 and execute_interval_secs above 0",
        );
    }
    // A lease's expiry is now + lease_secs: keep that representable.
    if d.lease_secs > MAX_LEASE_SECS {
        return fault(
            "daemon.lease_secs",
            format!("must be at most {MAX_LEASE_SECS} (a year)"),
        );
    }
    Ok(())
}

fn check_webhooks(n: &NotifyConfig) -> Checked {
    for (i, w) in n.webhooks.iter().enumerate() {
        let key = format!("notify.webhook[{i}].url");
        if w.url.is_some() == w.url_file.is_some() {
            return fault(key, "give exactly one of url or url_file");
        }
        if let Some(u) = &w.url
            && !is_http(u)
        {
            return fault(key, "must be an http(s) URL");
        }
    }
    Ok(())
}

/// A cron schedule the scheduler accepts and that fires at some time.
fn check_schedule(key: &str, schedule: &str) -> Checked {
    parse_schedule(schedule).map_or_else(|m| fault(key, m), |_| Ok(()))
}

/// Config texts and assertions shared by the validation tests.
#[cfg(test)]
mod testing {
    use std::path::Path;

    use crate::config::Config;

    /// Where the test configs claim to be.
    pub(super) const PATH: &str = "/etc/er/config.toml";
    /// A well-formed GUID.
    pub(super) const ID: &str = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0";

    /// Parses `text` as the config at [`PATH`], the error as its message.
    pub(super) fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new(PATH)).map_err(|e| e.to_string())
    }

    /// Asserts that `text` is refused at `key` with a message containing `needle`.
    pub(super) fn refused(text: &str, key: &str, needle: &str) {
        let e = parse(text).expect_err("config should be refused");
        let place = format!("invalid config {PATH}: {key}: ");
        assert!(e.starts_with(&place), "expected {place:?} in {e}");
        assert!(e.contains(needle), "expected {needle:?} in {e}");
    }

    /// One dry-run tenant named `name` with `extra` lines in its table.
    pub(super) fn tenant(name: &str, extra: &str) -> String {
        format!(
            "[[tenant]]\nname = \"{name}\"\ntenant_id = \"{ID}\"\nsource = {{ dir = \"scans\" }}\n{extra}"
        )
    }

    /// One tenant with a graph table holding a client secret and `extra` lines.
    pub(super) fn graph(extra: &str) -> String {
        tenant(
            "x",
            &format!("[tenant.graph]\nclient_id = \"{ID}\"\nclient_secret_env = \"S\"\n{extra}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::testing::{ID, parse, refused, tenant};
    use crate::config::Config;

    #[test]
    fn store_api_daemon_and_webhook_settings_are_checked() {
        refused(
            "[store]\nurl = \"sqlite://h.db\"\nhistory_key_file = \"k\"\nhistory_key_credential = \"k\"\n",
            "store.history_key_credential",
            "not both",
        );
        refused(
            "[api]\nbody_timeout = \"2h\"\n",
            "api.body_timeout",
            "at most 1h",
        );
        refused(
            "[daemon]\nlease_secs = 5\n",
            "daemon.lease_secs",
            "at least 10",
        );
        refused(
            "[[notify.webhook]]\nname = \"ops\"\n",
            "notify.webhook[0].url",
            "exactly one of url or url_file",
        );
        refused("approval_ttl = \"0s\"\n", "approval_ttl", "must be above 0");
        refused(
            "[guardrails]\nmax_actions_percent = 150.0\n",
            "guardrails.max_actions_percent",
            "at most 100",
        );
        refused(
            "[guardrails]\ncircuit_breaker_factor = nan\n",
            "guardrails.circuit_breaker_factor",
            "at least 1",
        );
    }

    #[test]
    fn a_store_url_with_a_password_is_never_quoted() {
        let text = "[store]\nurl = \"mysql://app:hunter2@db/x\"\n";
        let e = Config::parse(text, Path::new("/etc/x.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("store.url"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn the_first_section_at_fault_is_reported() {
        // Store, api, then tenants: the order the checks run in.
        let text = format!(
            "[store]\nurl = \"sqlite://h.db\"\ncheckpoint_every = 0\n[api]\nmax_connections = 0\n{}",
            tenant("x", "").replace(ID, "contoso")
        );
        refused(&text, "store.checkpoint_every", "must be above 0");
        let text = text.replace("checkpoint_every = 0", "checkpoint_every = 1");
        refused(&text, "api.max_connections", "at least 1 and at most 16384");
    }

    #[test]
    fn a_call_depth_beyond_the_rule_stack_names_its_line() {
        let e = parse("\n[rules]\nmax_call_depth = 257\n").expect_err("refused");
        assert!(e.contains("line 3"), "{e}");
        assert!(
            e.contains("rules.max_call_depth 257 must be 1 to 256"),
            "{e}"
        );
    }
}
