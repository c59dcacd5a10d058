//! The JSON body of a notice in each webhook format:
//!
//! - `generic`: `{"event", "tenant", "summary", "details", "sent_at"}`, where
//!   `details` is the [`Notice`] itself (with its `event` tag) and `sent_at` RFC 3339.
//! - `slack`: an incoming-webhook message, `{"text": summary, "blocks": [...]}`, with
//!   mrkdwn sections listing up to 10 actions and "and N more".
//! - `teams`: an Adaptive Card (version 1.4) in the
//!   `{"type": "message", "attachments": [{"contentType":
//!   "application/vnd.microsoft.card.adaptive", "content": {...}}]}` envelope that
//!   Teams Workflows ("Post to a channel when a webhook request is received") accept;
//!   the retired Office 365 connector MessageCard is not produced.

use serde_json::{Value, json};

use super::notice::Notice;
use crate::config::{NoticeKind, WebhookFormat};
use crate::text::truncate_chars;

/// Actions listed by name in Slack and Teams messages; the rest are counted.
pub const MAX_LISTED_ACTIONS: usize = 10;

/// The JSON body sent to a webhook of the given format.
pub fn payload(format: WebhookFormat, notice: &Notice) -> Value {
    match format {
        WebhookFormat::Generic => generic_payload(notice),
        WebhookFormat::Slack => slack_payload(notice),
        WebhookFormat::Teams => teams_payload(notice),
    }
}

fn generic_payload(n: &Notice) -> Value {
    json!({
        "event": n.event(),
        "tenant": n.tenant(),
        "summary": n.summary(),
        "details": serde_json::to_value(n).unwrap_or(Value::Null),
        "sent_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

/// Escapes the three characters Slack's mrkdwn treats as control characters.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn mrkdwn(text: String) -> Value {
    // Slack refuses section texts over 3000 characters.
    json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate_chars(&text, 3000)}})
}

fn slack_payload(n: &Notice) -> Value {
    let summary = n.summary();
    let mut head = format!("*{}*", slack_escape(&summary));
    if let Some(run) = n.run_id() {
        head.push_str(&format!("\nRun `{}`", slack_escape(run)));
    }
    let mut blocks = vec![mrkdwn(head)];
    match n {
        Notice::RunDowngraded { reasons, .. } => {
            let lines: Vec<String> = reasons
                .iter()
                .map(|r| format!("• {}", slack_escape(&truncate_chars(r, 300))))
                .collect();
            if !lines.is_empty() {
                blocks.push(mrkdwn(lines.join("\n")));
            }
        }
        Notice::RulesError { message } => {
            blocks.push(mrkdwn(format!(
                "```{}```",
                slack_escape(&truncate_chars(message, 2800))
            )));
        }
        _ => {}
    }
    let actions = n.actions();
    if !actions.is_empty() {
        let lines: Vec<String> = actions
            .iter()
            .take(MAX_LISTED_ACTIONS)
            .map(|a| {
                format!(
                    "• `{}` {} {} — {}",
                    a.id,
                    slack_escape(&a.kind),
                    slack_escape(&a.upn),
                    slack_escape(&truncate_chars(&a.reason, 120))
                )
            })
            .collect();
        blocks.push(mrkdwn(lines.join("\n")));
        if actions.len() > MAX_LISTED_ACTIONS {
            blocks.push(mrkdwn(format!(
                "and {} more",
                actions.len() - MAX_LISTED_ACTIONS
            )));
        }
    }
    json!({"text": summary, "blocks": blocks})
}

fn text_block(text: impl Into<String>) -> Value {
    json!({"type": "TextBlock", "text": text.into(), "wrap": true})
}

fn teams_payload(n: &Notice) -> Value {
    let title = match n.kind() {
        NoticeKind::ApprovalPending => "Approval needed",
        NoticeKind::RunDowngraded => "Run held for approval",
        NoticeKind::ActionFailed => "Actions failed",
        NoticeKind::RulesError => "Rule set error",
    };
    let color = match n.kind() {
        NoticeKind::ApprovalPending | NoticeKind::RunDowngraded => "Warning",
        NoticeKind::ActionFailed | NoticeKind::RulesError => "Attention",
    };
    let mut body = vec![
        json!({"type": "TextBlock", "text": format!("entra-remediator: {title}"),
               "weight": "Bolder", "size": "Medium", "color": color, "wrap": true}),
        text_block(n.summary()),
    ];
    let mut facts = Vec::new();
    if let Some(t) = n.tenant() {
        facts.push(json!({"title": "Tenant", "value": t}));
    }
    if let Some(r) = n.run_id() {
        facts.push(json!({"title": "Run", "value": r}));
    }
    if !facts.is_empty() {
        body.push(json!({"type": "FactSet", "facts": facts}));
    }
    match n {
        Notice::RunDowngraded { reasons, .. } => {
            for r in reasons {
                body.push(text_block(format!("- {}", truncate_chars(r, 300))));
            }
        }
        Notice::RulesError { message } => {
            body.push(
                json!({"type": "TextBlock", "text": truncate_chars(message, 2800),
                             "wrap": true, "fontType": "Monospace"}),
            );
        }
        _ => {}
    }
    let actions = n.actions();
    if !actions.is_empty() {
        let facts: Vec<Value> = actions
            .iter()
            .take(MAX_LISTED_ACTIONS)
            .map(|a| {
                json!({"title": format!("#{} {}", a.id, a.kind),
                       "value": format!("{} — {}", a.upn, truncate_chars(&a.reason, 120))})
            })
            .collect();
        body.push(json!({"type": "FactSet", "facts": facts, "separator": true}));
        if actions.len() > MAX_LISTED_ACTIONS {
            body.push(text_block(format!(
                "and {} more",
                actions.len() - MAX_LISTED_ACTIONS
            )));
        }
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body,
                "msteams": {"width": "Full"},
            },
        }],
    })
}
