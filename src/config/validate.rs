//! The rules a parsed config must follow beyond its types: values in range,
//! settings that only make sense together, names and ids well formed. The checks
//! run section by section in a fixed order and the first broken rule is reported.

use std::collections::HashSet;
use std::time::Duration;

use super::api::ApiConfig;
use super::daemon::DaemonConfig;
use super::graph::{GraphConfig, MfaMode};
use super::notify::NotifyConfig;
use super::safety::{Guardrails, RuleLimits};
use super::store::StoreConfig;
use super::tenant::TenantConfig;
use super::{Config, ConfigError, parse_schedule};
use crate::domain::Mode;
use crate::text::is_guid;

/// Longest `approval_ttl` (and `max_clock_skew`) accepted.
const MAX_APPROVAL_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// Longest `daemon.lease_secs` accepted.
const MAX_LEASE_SECS: u64 = 365 * 24 * 3600;
/// The longest API timeout accepted: longer ones would let connections pile up.
const MAX_API_TIMEOUT: Duration = Duration::from_secs(3600);
/// The most API connections accepted: each holds a file descriptor
/// (systemd/entra-remediator.service sets LimitNOFILE well above the default).
const MAX_API_CONNECTIONS: usize = 16_384;

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
    check_api(&cfg.api)?;
    check_lease(&cfg.daemon)?;
    check_webhooks(&cfg.notify)?;
    check_schedule("daemon.schedule", &cfg.daemon.schedule)?;
    let mut names = HashSet::new();
    for (i, t) in cfg.tenants.iter().enumerate() {
        check_tenant(&format!("tenant[{i}]"), t, cfg.mode, &mut names)?;
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

fn check_api(a: &ApiConfig) -> Checked {
    if a.enabled && a.token_file.is_none() && a.token_credential.is_none() {
        return fault(
            "api.token_file",
            "the API needs a bearer token: set token_file or token_credential",
        );
    }
    for (key, d) in [
        ("api.header_timeout", a.header_timeout),
        ("api.body_timeout", a.body_timeout),
    ] {
        if d.0.is_zero() || d.0 > MAX_API_TIMEOUT {
            return fault(key, "must be above 0 and at most 1h");
        }
    }
    if a.max_connections == 0 || a.max_connections > MAX_API_CONNECTIONS {
        return fault(
            "api.max_connections",
            format!("must be at least 1 and at most {MAX_API_CONNECTIONS}"),
        );
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

fn check_schedule(key: &str, schedule: &str) -> Checked {
    parse_schedule(schedule).map_or_else(|m| fault(key, m), |_| Ok(()))
}

/// One `[[tenant]]`; `names` collects the names seen so far, `default_mode` is
/// the top-level mode the tenant's own can only make stricter.
fn check_tenant<'a>(
    key: &str,
    t: &'a TenantConfig,
    default_mode: Mode,
    names: &mut HashSet<&'a str>,
) -> Checked {
    check_tenant_name(key, &t.name, names)?;
    if !is_guid(&t.tenant_id) {
        return fault(
            format!("{key}.tenant_id"),
            format!("{:?} is not a GUID", t.tenant_id),
        );
    }
    match (&t.source.dir, &t.source.url) {
        (Some(_), None) | (None, Some(_)) => {}
        _ => return fault(format!("{key}.source"), "give exactly one of dir or url"),
    }
    if t.source.token_file.is_some() && t.source.url.is_none() {
        return fault(
            format!("{key}.source.token_file"),
            "only applies to a url source",
        );
    }
    if let Some(sch) = &t.schedule {
        check_schedule(&format!("{key}.schedule"), sch)?;
    }
    if let Some(g) = &t.graph {
        check_graph(g).map_err(|f| f.under(&format!("{key}.graph")))?;
    } else if t.mode.map_or(default_mode, |m| default_mode.strictest(m)) != Mode::DryRun {
        return fault(
            format!("{key}.graph"),
            format!(
                "tenant {:?} may approve or enforce actions but has no [tenant.graph] section to execute them",
                t.name
            ),
        );
    }
    if let Some(url) = &t.source.url
        && !is_http(url)
    {
        return fault(
            format!("{key}.source.url"),
            format!("{url:?} must be an http:// or https:// URL"),
        );
    }
    Ok(())
}

fn check_tenant_name<'a>(key: &str, name: &'a str, names: &mut HashSet<&'a str>) -> Checked {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return fault(
            format!("{key}.name"),
            format!("{name:?} must be non-empty letters, digits, '-' or '_'"),
        );
    }
    if !names.insert(name) {
        return fault(
            format!("{key}.name"),
            format!("tenant name {name:?} is used twice"),
        );
    }
    Ok(())
}

/// A tenant's `[tenant.graph]`. Keys are relative to the graph table.
fn check_graph(g: &GraphConfig) -> Checked {
    if !is_guid(&g.client_id) {
        return fault(
            "client_id",
            "must be the app registration's client id (a GUID)",
        );
    }
    check_credential(g)?;
    check_graph_limits(g)?;
    for (k, u) in [("authority", &g.authority), ("graph_url", &g.graph_url)] {
        if let Some(u) = u
            && !is_http(u)
        {
            return fault(k, "must be an http(s) URL");
        }
    }
    check_mfa(g)
}

/// Exactly one credential: a client secret from one place, or a certificate
/// with its private key. Keys are relative to the graph table.
fn check_credential(g: &GraphConfig) -> Checked {
    let secrets = [
        g.client_secret_file.is_some(),
        g.client_secret_env.is_some(),
        g.client_secret_credential.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    let cert = g.certificate_file.is_some();
    let key_given = g.private_key_file.is_some() || g.private_key_credential.is_some();
    if cert != key_given {
        return fault(
            "certificate_file",
            "certificate authentication needs certificate_file and one of private_key_file or private_key_credential",
        );
    }
    if secrets + usize::from(cert) != 1 {
        return fault(
            "client_secret_file",
            "give exactly one credential: client_secret_file, client_secret_env, client_secret_credential, or certificate_file with its private key",
        );
    }
    Ok(())
}

/// Batching, concurrency and retry settings. Keys are relative to the graph table.
fn check_graph_limits(g: &GraphConfig) -> Checked {
    if g.batch_size == 0 || g.batch_size > 20 {
        return fault("batch_size", "must be 1 to 20 (Graph's $batch limit)");
    }
    if g.max_concurrency == 0 || g.max_attempts == 0 || g.timeout_secs == 0 {
        return fault(
            "max_concurrency",
            "max_concurrency, max_attempts and timeout_secs must be above 0",
        );
    }
    if g.action_attempts == 0 || g.action_attempts > 100 {
        return fault("action_attempts", "must be 1 to 100");
    }
    if g.action_retry_secs > 86_400 {
        return fault(
            "action_retry_secs",
            "must be at most 86400 (a day); later waits double it up to a day",
        );
    }
    Ok(())
}

/// The two MFA policies: group ids are GUIDs, and users mode has no group.
/// Keys are relative to the graph table.
fn check_mfa(g: &GraphConfig) -> Checked {
    let policies = [
        ("mfa", &g.mfa),
        ("phishing_resistant_mfa", &g.phishing_resistant_mfa),
    ];
    for (k, m) in policies {
        if let Some(id) = &m.group_id
            && !is_guid(id)
        {
            return fault(format!("{k}.group_id"), "must be a group object id (GUID)");
        }
    }
    for (k, m) in policies {
        if m.mode == Some(MfaMode::Users) && m.group_id.is_some() {
            return fault(
                format!("{k}.mode"),
                "\"users\" lists users in the policy, so group_id would be ignored: remove one of them",
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    #[test]
    fn a_store_url_with_a_password_is_never_quoted() {
        let text = "[store]\nurl = \"mysql://app:hunter2@db/x\"\n";
        let e = Config::parse(text, Path::new("/etc/x.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("store.url"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }
}
