//! Why a config could not be used, and how toml's messages are made safe to
//! show: clipped, and never quoting a value that may be a secret.

use std::path::{Path, PathBuf};

/// Longest line of a config error message; longer ones echo a hostile value.
const MAX_ECHO: usize = 400;

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {error}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error (in the message, and not also a `source`, so that an
        /// error chain does not print it twice).
        error: std::io::Error,
    },
    /// The TOML is malformed or a key has the wrong type or is unknown.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// toml's message, which names the key, line and column.
        message: String,
    },
    /// The values parse but do not make sense together.
    #[error("invalid config {path}: {key}: {message}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// The dotted key at fault.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

impl ConfigError {
    /// A toml error: toml quotes the offending line and value, so a huge one is
    /// kept short and a value that may be a secret is never quoted.
    pub(super) fn from_toml(path: &Path, e: &toml::de::Error) -> ConfigError {
        ConfigError::Parse {
            path: path.to_path_buf(),
            message: e
                .to_string()
                .trim_end()
                .lines()
                .map(|l| crate::text::clip(&redact_quoted_secret(l), MAX_ECHO))
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    /// Values that parse but do not make sense: the message is clipped, as it
    /// may echo a hostile value.
    pub(super) fn invalid(path: &Path, key: &str, message: &str) -> ConfigError {
        ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            message: crate::text::clip(message, MAX_ECHO),
        }
    }
}

/// Keys whose values are secrets (webhook and scan URLs carry tokens, a
/// PostgreSQL URL its password): never echoed into errors, logs or history.
fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    // `*_file` and `*_credential` name where a secret is, not the secret.
    !k.ends_with("_file")
        && !k.ends_with("_credential")
        && ["url", "secret", "token", "password", "key"]
            .iter()
            .any(|s| k.contains(s))
}

/// One line of a toml error: the line it quotes from the file (`12 | url =
/// "..."`) loses its value when the key is a secret's.
fn redact_quoted_secret(line: &str) -> String {
    let Some((gutter, content)) = line.split_once('|') else {
        return line.to_string();
    };
    if !gutter.trim().chars().all(|c| c.is_ascii_digit()) || gutter.trim().is_empty() {
        return line.to_string();
    }
    match content.split_once('=') {
        Some((key, _)) if is_secret_key(key.trim().trim_matches('"')) => {
            format!("{gutter}|{key}= <value not shown: it may be a secret>")
        }
        _ => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    #[test]
    fn a_toml_error_on_a_secret_line_names_the_place_but_not_the_value() {
        let text = "[[notify.webhook]]\nname = \"ops\"\nurl = \"https://hooks.example/services/T0/B0/SECRETVALUE\" junk\n";
        let e = Config::parse(text, Path::new("/etc/x.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3"), "{e}");
        assert!(!e.contains("SECRETVALUE"), "{e}");
        assert!(e.contains("value not shown"), "{e}");
        // Other lines are still quoted, so ordinary mistakes stay easy to find.
        let e = Config::parse("mode = 5\n", Path::new("/etc/x.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("mode = 5"), "{e}");
    }
}
