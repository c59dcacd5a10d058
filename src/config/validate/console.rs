//! Checks of the `[console]` table: sign-in settings that work together, safe
//! cookies, sane timeouts and role entries that can match someone.

use std::time::Duration;

use super::{Checked, fault};
use crate::config::Config;
use crate::text::is_guid;

/// Longest idle timeout and session lifetime accepted.
const MAX_SESSION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Whether `url` is HTTPS, or plain HTTP to this machine (tests, a local proxy).
fn is_https_or_loopback(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
}

/// The `[console]` checks; nothing is checked while it is disabled.
pub(super) fn check_console(cfg: &Config) -> Checked {
    let c = &cfg.console;
    if !c.enabled {
        return Ok(());
    }
    if !cfg.api.enabled {
        return fault(
            "console.enabled",
            "the console is served by the API's listener: set [api] enabled = true",
        );
    }
    if !is_https_or_loopback(&c.issuer) {
        return fault(
            "console.issuer",
            "must be the https:// OpenID Connect issuer, e.g. https://login.microsoftonline.com/<tenant id>/v2.0",
        );
    }
    if c.client_id.trim().is_empty() {
        return fault(
            "console.client_id",
            "must be the app registration's application (client) id",
        );
    }
    if c.client_secret_file.is_some() == c.client_secret_credential.is_some() {
        return fault(
            "console.client_secret_file",
            "give exactly one of client_secret_file or client_secret_credential",
        );
    }
    if !is_https_or_loopback(&c.redirect_url) || !c.redirect_url.ends_with("/console/auth/callback")
    {
        return fault(
            "console.redirect_url",
            "must be the console's https:// address ending in /console/auth/callback (http:// only on loopback)",
        );
    }
    if !c.secure_cookies && c.redirect_url.starts_with("https://") {
        return fault(
            "console.secure_cookies",
            "must stay true when the console is reached over https://",
        );
    }
    for (key, d) in [
        ("console.idle_timeout", c.idle_timeout),
        ("console.session_lifetime", c.session_lifetime),
    ] {
        if d.0 < Duration::from_secs(60) || d.0 > MAX_SESSION {
            return fault(key, "must be at least 1m and at most 7d");
        }
    }
    if c.bulk_confirm_over == 0 {
        return fault(
            "console.bulk_confirm_over",
            "must be at least 1 (the size above which a bulk selection needs its count typed)",
        );
    }
    for (role, entry) in c.roles.entries() {
        let e = entry.trim();
        if !(is_guid(e) || (e.contains('@') && !e.contains(char::is_whitespace))) {
            return fault(
                format!("console.roles.{role}s"),
                format!("{entry:?} is neither an object id (GUID) nor a UPN"),
            );
        }
    }
    if c.roles.entries().next().is_none() {
        return fault(
            "console.roles",
            "nobody holds a role: name at least one admin, approver, operator or viewer",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    const BASE: &str = "[api]\nenabled = true\ntoken_file = \"t\"\n";

    fn refused(console: &str, key: &str, words: &str) {
        let text = format!("{BASE}[console]\nenabled = true\n{console}");
        let e = Config::parse(&text, Path::new("c.toml"))
            .expect_err("must be refused")
            .to_string();
        assert!(e.contains(key) && e.contains(words), "{e}");
    }

    const GOOD: &str = "issuer = \"https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0\"\nclient_id = \"c\"\nclient_secret_file = \"s\"\nredirect_url = \"https://er.example.com/console/auth/callback\"\n[console.roles]\nadmins = [\"alice@contoso.com\"]\n";

    #[test]
    fn a_complete_console_table_is_accepted() {
        let text = format!("{BASE}[console]\nenabled = true\n{GOOD}");
        let cfg = Config::parse(&text, Path::new("/etc/er/c.toml")).unwrap();
        assert_eq!(
            cfg.console.client_secret_file.as_deref(),
            Some(Path::new("/etc/er/s"))
        );
        assert!(cfg.console.secure_cookies);
    }

    #[test]
    fn broken_console_settings_name_their_key() {
        refused(
            &GOOD.replace("https://login", "http://login"),
            "console.issuer",
            "https://",
        );
        refused(
            &GOOD.replace("client_id = \"c\"", "client_id = \" \""),
            "console.client_id",
            "client",
        );
        refused(
            &GOOD.replace("client_secret_file = \"s\"\n", ""),
            "console.client_secret_file",
            "exactly one",
        );
        refused(
            &GOOD.replace("/console/auth/callback", "/cb"),
            "console.redirect_url",
            "/console/auth/callback",
        );
        refused(
            &format!("secure_cookies = false\n{GOOD}"),
            "console.secure_cookies",
            "https://",
        );
        refused(
            &format!("idle_timeout = \"5s\"\n{GOOD}"),
            "console.idle_timeout",
            "at least 1m",
        );
        refused(
            &GOOD.replace("alice@contoso.com", "alice"),
            "console.roles.admins",
            "neither",
        );
        let text = format!("[console]\nenabled = true\n{GOOD}");
        let e = Config::parse(&text, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("console.enabled") && e.contains("[api]"), "{e}");
    }
}
