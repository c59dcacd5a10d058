//! The `[notify]` table: webhooks and the events they are sent.

use std::path::PathBuf;

use serde::Deserialize;

/// Webhook notifications.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// The webhooks.
    #[serde(rename = "webhook")]
    pub webhooks: Vec<WebhookConfig>,
}

/// One webhook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Name, for logs and metrics.
    pub name: String,
    /// Where to POST. Read from `url_file` instead when the URL holds a secret.
    #[serde(default)]
    pub url: Option<String>,
    /// A file holding the URL (Slack and Teams URLs are secrets).
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// Payload shape.
    #[serde(default)]
    pub format: WebhookFormat,
    /// Which events to send; all when empty.
    #[serde(default)]
    pub events: Vec<NoticeKind>,
    /// Delivery attempts before giving up.
    #[serde(default = "default_webhook_attempts")]
    pub max_attempts: u32,
}

fn default_webhook_attempts() -> u32 {
    5
}

/// Webhook payload shapes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WebhookFormat {
    /// A JSON object with `event`, `tenant`, `summary` and details.
    #[default]
    Generic,
    /// Slack incoming webhook (`text` and blocks).
    Slack,
    /// Microsoft Teams incoming webhook (MessageCard/Adaptive Card).
    Teams,
}

/// Events worth a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// Actions are waiting for approval.
    ApprovalPending,
    /// A run was held for approval by a guardrail.
    RunDowngraded,
    /// Actions failed.
    ActionFailed,
    /// The rule set could not be loaded.
    RulesError,
}
