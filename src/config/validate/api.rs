//! The `[api]` checks: timeouts and connection limits, and the bearer tokens
//! (`[[api.tokens]]` and the legacy `token_file` / `token_credential`).

use std::collections::HashMap;
use std::time::Duration;

use super::{Checked, fault};
use crate::config::{ApiConfig, LEGACY_TOKEN_NAME};

/// The longest API timeout accepted: longer ones would let connections pile up.
const MAX_API_TIMEOUT: Duration = Duration::from_secs(3600);
/// The most API connections accepted: each holds a file descriptor
/// (systemd/entra-remediator.service sets LimitNOFILE well above the default).
const MAX_API_CONNECTIONS: usize = 16_384;
/// The longest token name accepted (it is recorded in history).
const MAX_TOKEN_NAME: usize = 64;

pub(super) fn check_api(a: &ApiConfig) -> Checked {
    check_tokens(a)?;
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

/// A systemd credential name: one path component.
fn check_credential(key: &str, name: &str) -> Checked {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return fault(
            key,
            format!("{name:?} must be a credential name, not a path"),
        );
    }
    Ok(())
}

/// The legacy token and every `[[api.tokens]]`: names well formed and unique,
/// exactly one source each, at least one role each.
fn check_tokens(a: &ApiConfig) -> Checked {
    if a.token_file.is_some() && a.token_credential.is_some() {
        return fault(
            "api.token_credential",
            "set token_file or token_credential, not both",
        );
    }
    if let Some(c) = &a.token_credential {
        check_credential("api.token_credential", c)?;
    }
    let legacy = a.token_file.is_some() || a.token_credential.is_some();
    if a.enabled && !legacy && a.tokens.is_empty() {
        return fault(
            "api.tokens",
            "the API needs a bearer token: add an [[api.tokens]] entry (name, file or credential, roles)",
        );
    }
    let mut seen: HashMap<&str, String> = HashMap::new();
    if legacy {
        seen.insert(
            LEGACY_TOKEN_NAME,
            "api.token_file / api.token_credential".into(),
        );
    }
    for (i, t) in a.tokens.iter().enumerate() {
        let key = format!("api.tokens[{i}]");
        let name = t.name.as_str();
        let well_formed = !name.is_empty()
            && name.len() <= MAX_TOKEN_NAME
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        if !well_formed {
            return fault(
                format!("{key}.name"),
                format!(
                    "{:?} must be 1 to {MAX_TOKEN_NAME} of a-z, 0-9, '.', '_' or '-'",
                    crate::text::clip(name, 80)
                ),
            );
        }
        if let Some(first) = seen.insert(name, key.clone()) {
            return fault(
                format!("{key}.name"),
                format!(
                    "{name:?} is already the name of {first}: each token needs its own name, which history records"
                ),
            );
        }
        match (&t.file, &t.credential) {
            (Some(_), None) => {}
            (None, Some(c)) => check_credential(&format!("{key}.credential"), c)?,
            _ => return fault(key, "give exactly one of file or credential"),
        }
        if t.roles.is_empty() {
            return fault(
                format!("{key}.roles"),
                "must name at least one role (viewer, operator, approver, admin)",
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::{parse, refused};
    use crate::access::Role;
    use crate::config::LEGACY_TOKEN_NAME;

    fn token(extra: &str) -> String {
        format!(
            "[api]\nenabled = true\n[[api.tokens]]\nname = \"ci\"\nfile = \"ci.token\"\n{extra}"
        )
    }

    #[test]
    fn named_tokens_parse_with_operator_as_the_default_role() {
        let cfg = parse(&format!(
            "{}[[api.tokens]]\nname = \"alice.approver\"\ncredential = \"tok-alice\"\nroles = [\"approver\", \"viewer\"]\n",
            token("")
        ))
        .unwrap();
        let entries = cfg.api.token_entries();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].roles, vec![Role::Operator]);
        assert_eq!(
            entries[0].file.as_deref(),
            Some(std::path::Path::new("/etc/er/ci.token"))
        );
        assert_eq!(entries[1].roles, vec![Role::Approver, Role::Viewer]);
        // The legacy token is one more entry, named "api", that cannot approve.
        let cfg = parse("[api]\nenabled = true\ntoken_credential = \"t\"\n").unwrap();
        let entries = cfg.api.token_entries();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].name, LEGACY_TOKEN_NAME);
        assert_eq!(entries[0].roles, vec![Role::Operator]);
    }

    #[test]
    fn bad_token_entries_are_refused_naming_the_entry() {
        refused(
            "[api]\nenabled = true\n",
            "api.tokens",
            "needs a bearer token",
        );
        refused(
            &token("").replace("\"ci\"", "\"CI\""),
            "api.tokens[0].name",
            "a-z, 0-9",
        );
        refused(
            &token("").replace("\"ci\"", "\"\""),
            "api.tokens[0].name",
            "1 to 64",
        );
        refused(
            &format!(
                "{}[[api.tokens]]\nname = \"ci\"\ncredential = \"c\"\n",
                token("")
            ),
            "api.tokens[1].name",
            "already the name of api.tokens[0]",
        );
        refused(
            "[api]\ntoken_file = \"legacy\"\n[[api.tokens]]\nname = \"api\"\nfile = \"x\"\n",
            "api.tokens[0].name",
            "already the name of api.token_file",
        );
        refused(
            &token("credential = \"c\"\n"),
            "api.tokens[0]",
            "exactly one of file or credential",
        );
        refused(
            &token("").replace("file = \"ci.token\"\n", ""),
            "api.tokens[0]",
            "exactly one of file or credential",
        );
        refused(
            &token("").replace("file = \"ci.token\"", "credential = \"../x\""),
            "api.tokens[0].credential",
            "not a path",
        );
        refused(
            &token("roles = []\n"),
            "api.tokens[0].roles",
            "at least one role",
        );
        refused(
            "[api]\ntoken_file = \"a\"\ntoken_credential = \"b\"\n",
            "api.token_credential",
            "not both",
        );
    }

    #[test]
    fn an_unknown_role_or_key_is_a_toml_error_naming_its_line() {
        let e = parse(&token("roles = [\"aprover\"]\n")).unwrap_err();
        assert!(e.contains("line 6"), "{e}");
        assert!(e.contains("aprover"), "{e}");
        let e = parse(&token("role = [\"approver\"]\n")).unwrap_err();
        assert!(
            e.contains("line 6") && e.contains("unknown field `role`"),
            "{e}"
        );
    }
}
