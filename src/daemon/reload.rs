//! Reloads: the rule set when its files change (compiled in full, the old one
//! kept on any error), and the configuration on SIGHUP (refused when invalid or
//! when it changes a setting that needs a restart).

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::json;

use super::shared::{Rules, Shared, read, write};
use crate::api;
use crate::config::Config;
use crate::notify::Notifier;
use crate::notify::notice::Notice;

/// A SHA-256 over what the rule files and the exceptions file hold (or why they
/// cannot be read), taken before loading them: the same fingerprint as last time
/// means nothing changed, so there is nothing to reload or to report again.
pub(super) fn sources_fingerprint(cfg: &Config) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut part = |tag: &str, name: &[u8], body: &[u8]| {
        for piece in [tag.as_bytes(), name, body] {
            h.update((piece.len() as u64).to_le_bytes());
            h.update(piece);
        }
    };
    match std::fs::read_dir(&cfg.policies_dir) {
        Ok(entries) => {
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("rhai"))
                .collect();
            files.sort();
            for f in files {
                let name = f
                    .file_name()
                    .map(|n| n.as_encoded_bytes())
                    .unwrap_or_default();
                match std::fs::read(&f) {
                    Ok(bytes) => part("rule", name, &bytes),
                    Err(e) => part("unreadable", name, e.to_string().as_bytes()),
                }
            }
        }
        Err(e) => part("no-dir", b"", e.to_string().as_bytes()),
    }
    let exc = cfg.exceptions_path();
    match std::fs::read(&exc) {
        Ok(bytes) => part("exceptions", exc.as_os_str().as_encoded_bytes(), &bytes),
        Err(e) => part(
            "no-exceptions",
            exc.as_os_str().as_encoded_bytes(),
            e.to_string().as_bytes(),
        ),
    }
    hex::encode(h.finalize())
}

impl Shared {
    /// Compiles the rule set in full; the old one stays on any error. Unless
    /// `force`d (a config reload), files holding what they held at the last
    /// attempt are not loaded again: one edit is one reload, and a broken set is
    /// reported once until its files change.
    pub(super) async fn reload_rules(&self, why: &str, force: bool) {
        let cfg = read(&self.config);
        let loaded = tokio::task::spawn_blocking(move || {
            let sources = sources_fingerprint(&cfg);
            (sources, crate::service::run::load_rules(&cfg))
        });
        let (sources, loaded) = match loaded.await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "rule loading stopped unexpectedly");
                return;
            }
        };
        {
            let mut seen = match self.rules_seen.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            if !force && *seen == sources {
                tracing::debug!(trigger = why, "rule files unchanged; nothing to reload");
                return;
            }
            seen.clone_from(&sources);
        }
        match loaded {
            Ok((set, exceptions)) => {
                let current = read(&self.rules);
                let old = current.set.hash.clone();
                if old == set.hash && current.sources == sources {
                    return;
                }
                tracing::info!(hash = %set.hash, trigger = why, "rule set reloaded");
                self.record(self.event(
                    "rules_reloaded",
                    None,
                    json!({"rule_set_hash": set.hash, "previous": old, "rules": set.rules.len(), "sources_sha256": sources, "trigger": why}),
                ))
                .await;
                write(
                    &self.rules,
                    Arc::new(Rules {
                        set,
                        exceptions,
                        sources,
                    }),
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "new rule set refused; the previous one stays in use");
                self.metrics.rule_errors(1);
                self.record(self.event(
                    "rule_set_refused",
                    None,
                    json!({"error": e.to_string(), "kept": read(&self.rules).set.hash, "sources_sha256": sources, "trigger": why}),
                ))
                .await;
                read(&self.notifier).notify(Notice::RulesError {
                    message: e.to_string(),
                });
            }
        }
    }

    /// SIGHUP: the new config replaces the old only if it is valid and changes
    /// no setting that needs a restart; the API tokens are read again.
    pub(super) async fn reload_config(&self) -> bool {
        match Config::load(&self.config_path) {
            Ok(new) => {
                let old = read(&self.config);
                let restart = needs_restart(&old, &new);
                if !restart.is_empty() {
                    let message = format!(
                        "{} changed, which takes effect only at a restart: the new configuration is refused and the previous one stays in use (restart the daemon to apply it, or set {} back)",
                        restart.join(", "),
                        if restart.len() == 1 { "it" } else { "them" }
                    );
                    self.refuse_config_with(
                        &message,
                        json!({"error": message, "settings": restart}),
                    )
                    .await;
                    return false;
                }
                let tokens = match (&self.api_tokens, new.api.enabled) {
                    (Some(_), true) => match api::load_tokens(&new.api) {
                        Ok(t) => Some(t),
                        Err(e) => {
                            self.refuse_config(&e).await;
                            return false;
                        }
                    },
                    _ => None,
                };
                match Notifier::new(&new.notify) {
                    Ok(n) => {
                        let metrics = self.metrics.clone();
                        n.on_result(Arc::new(move |name, ok| metrics.webhook(name, ok)));
                        write(&self.notifier, Arc::new(n));
                    }
                    Err(e) => {
                        self.refuse_config(&e).await;
                        return false;
                    }
                }
                let mut tokens_changed = false;
                if let (Some(slot), Some(t)) = (&self.api_tokens, tokens) {
                    tokens_changed = slot.replace(t);
                }
                write(&self.config, Arc::new(new));
                tracing::info!(path = %self.config_path.display(), api_tokens_changed = tokens_changed, "configuration reloaded");
                self.record(self.event(
                    "config_reloaded",
                    None,
                    json!({"path": self.config_path.display().to_string(), "api_tokens_changed": tokens_changed}),
                ))
                .await;
                self.reload_rules("config reload", true).await;
                true
            }
            Err(e) => {
                self.refuse_config(&e.to_string()).await;
                false
            }
        }
    }

    async fn refuse_config(&self, e: &str) {
        self.refuse_config_with(e, json!({"error": e})).await;
    }

    async fn refuse_config_with(&self, e: &str, detail: serde_json::Value) {
        tracing::error!(error = %e, "new configuration refused; the previous one stays in use");
        self.record(self.event("config_refused", None, detail))
            .await;
    }
}

/// The settings a running daemon cannot change (they were used to open the
/// store, bind the API, set up logging or name this instance), by dotted key,
/// that differ between `old` and `new`. README.md and systemd/README.md list them.
pub fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let (a, b) = (&old.api, &new.api);
    let (d, e) = (&old.daemon, &new.daemon);
    // The API's own settings matter only while it is on.
    let on = a.enabled && b.enabled;
    [
        ("store.url", old.store.url != new.store.url),
        (
            "store.history_key_file",
            old.store.history_key_file != new.store.history_key_file,
        ),
        (
            "store.history_key_credential",
            old.store.history_key_credential != new.store.history_key_credential,
        ),
        (
            "store.connect_timeout",
            old.store.connect_timeout != new.store.connect_timeout,
        ),
        (
            "store.checkpoint_every",
            old.store.checkpoint_every != new.store.checkpoint_every,
        ),
        (
            "store.checkpoint_file",
            old.store.checkpoint_file != new.store.checkpoint_file,
        ),
        ("api.enabled", a.enabled != b.enabled),
        ("api.listen", on && a.listen != b.listen),
        (
            "api.max_body_bytes",
            on && a.max_body_bytes != b.max_body_bytes,
        ),
        (
            "api.header_timeout",
            on && a.header_timeout != b.header_timeout,
        ),
        (
            "api.max_connections",
            on && a.max_connections != b.max_connections,
        ),
        (
            "console.enabled",
            old.console.enabled != new.console.enabled,
        ),
        (
            "console (issuer, client, secret, redirect_url, secure_cookies)",
            console_start_settings(old) != console_start_settings(new),
        ),
        ("daemon.instance", d.instance != e.instance),
        ("daemon.log_format", d.log_format != e.log_format),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}

/// The console settings read when the daemon starts: changing them needs a
/// restart (roles, timeouts and the bulk size apply on reload).
fn console_start_settings(c: &Config) -> Option<impl PartialEq + use<'_>> {
    let k = &c.console;
    k.enabled.then_some((
        &k.issuer,
        &k.client_id,
        &k.client_secret_file,
        &k.client_secret_credential,
        &k.redirect_url,
        k.secure_cookies,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Config {
        Config::parse(
            text,
            std::path::Path::new("/etc/entra-remediator/config.toml"),
        )
        .unwrap()
    }

    #[test]
    fn store_settings_used_at_open_need_a_restart_and_others_do_not() {
        let old = cfg("[store]\nurl = \"sqlite://a.db\"\n");
        for (text, key) in [
            ("[store]\nurl = \"sqlite://b.db\"\n", "store.url"),
            (
                "[store]\nurl = \"sqlite://a.db\"\nhistory_key_file = \"k\"\n",
                "store.history_key_file",
            ),
            (
                "[store]\nurl = \"sqlite://a.db\"\ncheckpoint_every = 10\n",
                "store.checkpoint_every",
            ),
            (
                "[store]\nurl = \"sqlite://a.db\"\nconnect_timeout = \"9s\"\n",
                "store.connect_timeout",
            ),
        ] {
            assert_eq!(needs_restart(&old, &cfg(text)), vec![key], "{text}");
        }
        let same = cfg("mode = \"approval\"\n[store]\nurl = \"sqlite://a.db\"\n");
        assert!(needs_restart(&old, &same).is_empty());
    }
}
