//! The `[[tenant]]` checks: name, id, scan source, schedule, and the graph
//! table with its credential, limits and MFA policies.

use std::collections::HashSet;

use super::{Checked, check_schedule, fault, is_http};
use crate::config::{GraphConfig, MfaMode, TenantConfig};
use crate::domain::Mode;
use crate::text::is_guid;

/// One `[[tenant]]`; `names` collects the names seen so far, `default_mode` is
/// the top-level mode the tenant's own can only make stricter.
pub(super) fn check_tenant<'a>(
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
    check_scan_settings(key, t)?;
    if let Some(sch) = &t.schedule {
        check_schedule(&format!("{key}.schedule"), sch)?;
    }
    if let Some(g) = &t.graph {
        check_graph(g).map_err(|f| f.under(&format!("{key}.graph")))?;
    } else if t.mode_under(default_mode) != Mode::DryRun {
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

/// `source.keep_scans` and `source.graph`: the built-in scan writes into the
/// scan directory and reads through the tenant's `[tenant.graph]`.
fn check_scan_settings(key: &str, t: &TenantConfig) -> Checked {
    if t.source.keep_scans == Some(0) {
        return fault(
            format!("{key}.source.keep_scans"),
            "must be at least 1 (the newest scan is the one planned from)",
        );
    }
    if t.source.keep_scans.is_some() && t.source.dir.is_none() {
        return fault(
            format!("{key}.source.keep_scans"),
            "only applies to a dir source",
        );
    }
    let Some(g) = &t.source.graph else {
        return Ok(());
    };
    if t.source.dir.is_none() {
        return fault(
            format!("{key}.source.graph"),
            "needs source.dir: the scan is written there, and planned from there",
        );
    }
    if t.graph.is_none() {
        return fault(
            format!("{key}.source.graph"),
            format!(
                "tenant {:?} has no [tenant.graph] section to read the tenant through",
                t.name
            ),
        );
    }
    if g.stale_days == 0 || g.stale_days > 3650 {
        return fault(
            format!("{key}.source.graph.stale_days"),
            format!("{} must be between 1 and 3650 days", g.stale_days),
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

    use super::super::testing::{ID, PATH, graph, parse, refused, tenant};

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

    /// A tenant whose source is `source` (inline table), with `extra` lines.
    fn sourced(source: &str, extra: &str) -> String {
        format!("[[tenant]]\nname = \"x\"\ntenant_id = \"{ID}\"\nsource = {source}\n{extra}")
    }

    #[test]
    fn the_built_in_scan_needs_a_directory_and_graph_access() {
        let creds = format!("[tenant.graph]\nclient_id = \"{ID}\"\nclient_secret_env = \"S\"\n");
        let ok = sourced(
            "{ dir = \"scans\", keep_scans = 5, graph = { stale_days = 60, privileged_groups = [\"Tier 0\"] } }",
            &creds,
        );
        let cfg = parse(&ok).expect("valid");
        let src = &cfg.tenants[0].source;
        assert_eq!(src.keep_scans(), 5);
        assert_eq!(src.graph.as_ref().map(|g| g.stale_days), Some(60));
        refused(
            &sourced("{ url = \"https://x\", graph = {} }", &creds),
            "tenant[0].source.graph",
            "needs source.dir",
        );
        refused(
            &sourced("{ dir = \"scans\", graph = {} }", ""),
            "tenant[0].source.graph",
            "no [tenant.graph] section",
        );
        refused(
            &sourced("{ dir = \"scans\", keep_scans = 0 }", ""),
            "tenant[0].source.keep_scans",
            "at least 1",
        );
        refused(
            &sourced("{ dir = \"scans\", graph = { stale_days = 0 } }", &creds),
            "tenant[0].source.graph.stale_days",
            "between 1 and 3650",
        );
        let typo = parse(&sourced(
            "{ dir = \"scans\", graph = { stale = 3 } }",
            &creds,
        ));
        let typo = typo.expect_err("unknown key");
        assert!(
            typo.contains("line 4") && typo.contains("unknown field `stale`"),
            "{typo}"
        );
        assert_eq!(
            parse(&sourced("{ dir = \"s\" }", "")).map(|c| c.tenants[0].source.keep_scans()),
            Ok(30)
        );
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
}
