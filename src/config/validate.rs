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

    const PATH: &str = "/etc/er/config.toml";
    const ID: &str = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0";

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new(PATH)).map_err(|e| e.to_string())
    }

    /// Asserts that `text` is refused at `key` with a message containing `needle`.
    fn refused(text: &str, key: &str, needle: &str) {
        let e = parse(text).expect_err("config should be refused");
        let place = format!("invalid config {PATH}: {key}: ");
        assert!(e.starts_with(&place), "expected {place:?} in {e}");
        assert!(e.contains(needle), "expected {needle:?} in {e}");
    }

    /// One dry-run tenant named `name` with `extra` lines in its table.
    fn tenant(name: &str, extra: &str) -> String {
        format!(
            "[[tenant]]\nname = \"{name}\"\ntenant_id = \"{ID}\"\nsource = {{ dir = \"scans\" }}\n{extra}"
        )
    }

    /// One tenant with a graph table holding a client secret and `extra` lines.
    fn graph(extra: &str) -> String {
        tenant(
            "x",
            &format!("[tenant.graph]\nclient_id = \"{ID}\"\nclient_secret_env = \"S\"\n{extra}"),
        )
    }

    #[test]
    fn a_complete_tenant_with_graph_access_is_accepted() {
        let cfg = parse(&format!("mode = \"enforce\"\n{}", graph(""))).expect("valid config");
        assert_eq!(cfg.tenants.len(), 1);
        assert_eq!(cfg.policies_dir, Path::new("/etc/er/policies"));
    }

    #[test]
    fn ids_that_are_not_guids_are_refused_where_they_are() {
        refused(
            &tenant("x", "").replace(ID, "contoso"),
            "tenant[0].tenant_id",
            "\"contoso\" is not a GUID",
        );
        refused(
            &graph("").replace(&format!("client_id = \"{ID}\""), "client_id = \"app\""),
            "tenant[0].graph.client_id",
            "a GUID",
        );
        refused(
            &graph("[tenant.graph.phishing_resistant_mfa]\ngroup_id = \"admins\"\n"),
            "tenant[0].graph.phishing_resistant_mfa.group_id",
            "group object id (GUID)",
        );
    }

    #[test]
    fn an_unknown_tenant_mode_is_a_toml_error_naming_its_line() {
        let e = parse(&tenant("x", "mode = \"yolo\"\n")).expect_err("refused");
        assert!(e.starts_with(&format!("invalid config {PATH}: ")), "{e}");
        assert!(e.contains("line 5"), "{e}");
        assert!(e.contains("unknown variant `yolo`"), "{e}");
    }

    #[test]
    fn retry_settings_out_of_range_are_refused() {
        refused(
            &graph("action_attempts = 0\n"),
            "tenant[0].graph.action_attempts",
            "must be 1 to 100",
        );
        refused(
            &graph("action_attempts = 101\n"),
            "tenant[0].graph.action_attempts",
            "must be 1 to 100",
        );
        refused(
            &graph("action_retry_secs = 86401\n"),
            "tenant[0].graph.action_retry_secs",
            "at most 86400",
        );
        refused(
            &graph("max_attempts = 0\n"),
            "tenant[0].graph.max_concurrency",
            "max_attempts and timeout_secs must be above 0",
        );
        assert!(parse(&graph("action_attempts = 100\naction_retry_secs = 86400\n")).is_ok());
    }

    #[test]
    fn a_duplicate_or_malformed_tenant_name_is_refused() {
        let two = format!("{}{}", tenant("x", ""), tenant("x", ""));
        refused(&two, "tenant[1].name", "tenant name \"x\" is used twice");
        refused(
            &tenant("a b", ""),
            "tenant[0].name",
            "\"a b\" must be non-empty letters, digits, '-' or '_'",
        );
    }

    #[test]
    fn graph_access_needs_exactly_one_credential() {
        let none = graph("").replace("client_secret_env = \"S\"\n", "");
        refused(
            &none,
            "tenant[0].graph.client_secret_file",
            "give exactly one credential",
        );
        refused(
            &graph("client_secret_file = \"secret\"\n"),
            "tenant[0].graph.client_secret_file",
            "give exactly one credential",
        );
        refused(
            &graph("certificate_file = \"app.pem\"\n"),
            "tenant[0].graph.certificate_file",
            "one of private_key_file or private_key_credential",
        );
        let cert = none.replace(
            "[tenant.graph]\n",
            "[tenant.graph]\ncertificate_file = \"app.pem\"\nprivate_key_credential = \"key\"\n",
        );
        assert!(parse(&cert).is_ok(), "{:?}", parse(&cert).err());
    }

    #[test]
    fn users_mode_with_a_group_id_is_refused() {
        refused(
            &graph(&format!(
                "[tenant.graph.mfa]\nmode = \"users\"\ngroup_id = \"{ID}\"\n"
            )),
            "tenant[0].graph.mfa.mode",
            "group_id would be ignored",
        );
        assert!(
            parse(&graph(&format!(
                "[tenant.graph.mfa]\nmode = \"group\"\ngroup_id = \"{ID}\"\n"
            )))
            .is_ok()
        );
    }

    #[test]
    fn a_tenant_that_may_act_needs_graph_access_unless_it_only_dry_runs() {
        refused(
            &format!("mode = \"approval\"\n{}", tenant("x", "")),
            "tenant[0].graph",
            "tenant \"x\" may approve or enforce actions but has no [tenant.graph] section",
        );
        refused(
            &format!(
                "mode = \"enforce\"\n{}",
                tenant("x", "mode = \"approval\"\n")
            ),
            "tenant[0].graph",
            "has no [tenant.graph] section",
        );
        // A tenant may make the default stricter, never looser.
        assert!(
            parse(&format!(
                "mode = \"enforce\"\n{}",
                tenant("x", "mode = \"dry-run\"\n")
            ))
            .is_ok()
        );
        assert!(parse(&tenant("x", "mode = \"enforce\"\n")).is_ok());
    }

    #[test]
    fn a_scan_source_is_a_dir_or_an_http_url() {
        let url = tenant("x", "").replace("dir = \"scans\"", "url = \"ftp://scans\"");
        refused(
            &url,
            "tenant[0].source.url",
            "must be an http:// or https:// URL",
        );
        let token = tenant("x", "").replace("}", ", token_file = \"t\" }");
        refused(
            &token,
            "tenant[0].source.token_file",
            "only applies to a url source",
        );
    }

    #[test]
    fn store_api_daemon_and_webhook_settings_are_checked() {
        refused(
            "[store]\nurl = \"sqlite://h.db\"\nhistory_key_file = \"k\"\nhistory_key_credential = \"k\"\n",
            "store.history_key_credential",
            "not both",
        );
        refused(
            "[api]\nenabled = true\n",
            "api.token_file",
            "needs a bearer token",
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
