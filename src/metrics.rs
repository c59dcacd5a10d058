//! Counters the daemon keeps and `/metrics` renders in the Prometheus text
//! exposition format 0.0.4.
//!
//! Every method takes `&self` and only holds a lock for the few instructions that
//! update a map, so the daemon can call them from any task without awaiting.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};

const PREFIX: &str = "entra_remediator_";

/// Counters the daemon keeps and `/metrics` renders (Prometheus text format 0.0.4).
#[derive(Default)]
pub struct Metrics {
    runs: Mutex<BTreeMap<(String, String), u64>>,
    actions: Mutex<BTreeMap<(String, String), u64>>,
    graph_requests: Mutex<BTreeMap<u16, u64>>,
    throttle_wait_nanos: AtomicU64,
    rule_errors: AtomicU64,
    webhooks: Mutex<BTreeMap<(String, String), u64>>,
    last_success: Mutex<BTreeMap<String, DateTime<Utc>>>,
}

/// Locks a map, recovering it when another thread panicked while holding it:
/// a counter map is never left half-updated, so its contents stay valid.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn bump<K: Ord>(m: &Mutex<BTreeMap<K, u64>>, key: K, n: u64) {
    let mut map = lock(m);
    let v = map.entry(key).or_insert(0);
    *v = v.saturating_add(n);
}

/// Escapes a label value: backslash, double quote and line feed.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {PREFIX}{name} {help}");
    let _ = writeln!(out, "# TYPE {PREFIX}{name} {kind}");
}

fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// How a tenant run finished, as the `outcome` label of `runs_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// The scan was planned and recorded.
    Ok,
    /// The scan was refused.
    Rejected,
    /// The run stopped on an error.
    Failed,
    /// The tick was skipped: the tenant's previous run was still going.
    Skipped,
}

impl RunOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Ok => "ok",
            RunOutcome::Rejected => "rejected", // a run outcome, not an action state
            RunOutcome::Failed => "failed",     // a run outcome, not an action state
            RunOutcome::Skipped => "skipped",   // a run outcome, not an action state
        }
    }
}

impl Metrics {
    /// Counts a finished tenant run; an `ok` run also sets the last-success gauge.
    pub fn run_finished(&self, tenant: &str, outcome: RunOutcome, at: DateTime<Utc>) {
        bump(
            &self.runs,
            (tenant.to_string(), outcome.as_str().to_string()),
            1,
        );
        if outcome == RunOutcome::Ok {
            let mut last = lock(&self.last_success);
            let slot = last.entry(tenant.to_string()).or_insert(at);
            if at > *slot {
                *slot = at;
            }
        }
    }

    /// Counts `n` actions of `kind` that reached `state`.
    pub fn actions(&self, kind: &str, state: &str, n: u64) {
        bump(&self.actions, (kind.to_string(), state.to_string()), n);
    }

    /// Counts one Microsoft Graph request by HTTP status (0 = no answer).
    pub fn graph_call(&self, status: u16) {
        bump(&self.graph_requests, status, 1);
    }

    /// Adds time spent waiting because Graph throttled us.
    pub fn throttle_wait(&self, d: std::time::Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        // fetch_update never fails with a closure that always returns Some.
        let _ = self
            .throttle_wait_nanos
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_add(nanos))
            });
    }

    /// Counts rule evaluation errors.
    pub fn rule_errors(&self, n: u64) {
        let _ = self
            .rule_errors
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_add(n))
            });
    }

    /// Counts one webhook delivery (after its retries) as success or failure.
    pub fn webhook(&self, name: &str, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        bump(&self.webhooks, (name.to_string(), result.to_string()), 1);
    }

    /// Renders every metric in the Prometheus text format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.render_counts(&mut out);
        self.render_graph(&mut out);
        self.render_outcomes(&mut out);
        out
    }

    /// Runs and actions.
    fn render_counts(&self, out: &mut String) {
        header(
            out,
            "runs_total",
            "counter",
            "Tenant runs finished, by outcome (ok, rejected, failed, skipped).",
        );
        for ((tenant, outcome), v) in lock(&self.runs).iter() {
            let l = labels(&[("tenant", tenant), ("outcome", outcome)]);
            let _ = writeln!(out, "{PREFIX}runs_total{l} {v}");
        }

        header(
            out,
            "actions_total",
            "counter",
            "Remediation actions that reached a state, by action kind and state.",
        );
        for ((kind, state), v) in lock(&self.actions).iter() {
            let l = labels(&[("kind", kind), ("state", state)]);
            let _ = writeln!(out, "{PREFIX}actions_total{l} {v}");
        }
    }

    /// Microsoft Graph requests and throttling.
    fn render_graph(&self, out: &mut String) {
        header(
            out,
            "graph_requests_total",
            "counter",
            "Microsoft Graph requests, by HTTP status (0 when no answer came).",
        );
        for (status, v) in lock(&self.graph_requests).iter() {
            let status = status.to_string();
            let l = labels(&[("status", &status)]);
            let _ = writeln!(out, "{PREFIX}graph_requests_total{l} {v}");
        }

        header(
            out,
            "graph_throttle_wait_seconds_total",
            "counter",
            "Seconds spent waiting because Microsoft Graph throttled requests.",
        );
        let nanos = self.throttle_wait_nanos.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{PREFIX}graph_throttle_wait_seconds_total {}",
            nanos as f64 / 1e9
        );
    }

    /// Rule errors, webhook deliveries and the last successful run.
    fn render_outcomes(&self, out: &mut String) {
        header(
            out,
            "rule_errors_total",
            "counter",
            "Rule evaluations that failed.",
        );
        let _ = writeln!(
            out,
            "{PREFIX}rule_errors_total {}",
            self.rule_errors.load(Ordering::Relaxed)
        );

        header(
            out,
            "webhook_deliveries_total",
            "counter",
            "Webhook deliveries, by webhook name and result (success, failure).",
        );
        for ((name, result), v) in lock(&self.webhooks).iter() {
            let l = labels(&[("webhook", name), ("result", result)]);
            let _ = writeln!(out, "{PREFIX}webhook_deliveries_total{l} {v}");
        }

        header(
            out,
            "last_successful_run_timestamp_seconds",
            "gauge",
            "Unix time of the last run that finished ok, by tenant.",
        );
        for (tenant, at) in lock(&self.last_success).iter() {
            let l = labels(&[("tenant", tenant)]);
            let secs = at.timestamp_millis() as f64 / 1000.0;
            let _ = writeln!(
                out,
                "{PREFIX}last_successful_run_timestamp_seconds{l} {secs}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn renders_counters_with_help_type_and_escaped_labels() {
        let m = Metrics::default();
        let at = Utc.with_ymd_and_hms(2026, 11, 20, 6, 0, 0).unwrap();
        m.run_finished("contoso", RunOutcome::Ok, at);
        m.run_finished("contoso", RunOutcome::Ok, at - chrono::Duration::hours(1));
        m.run_finished("fab\"ri\\kam\n", RunOutcome::Failed, at);
        m.actions("disable_user", "done", 3);
        m.actions("disable_user", "done", 2);
        m.graph_call(429);
        m.graph_call(0);
        m.throttle_wait(std::time::Duration::from_millis(1500));
        m.rule_errors(2);
        m.webhook("slack", true);
        m.webhook("slack", false);
        let text = m.render();
        for name in [
            "runs_total",
            "actions_total",
            "graph_requests_total",
            "graph_throttle_wait_seconds_total",
            "rule_errors_total",
            "webhook_deliveries_total",
            "last_successful_run_timestamp_seconds",
        ] {
            assert!(text.contains(&format!("# HELP entra_remediator_{name} ")));
            assert!(text.contains(&format!("# TYPE entra_remediator_{name} ")));
        }
        assert!(
            text.contains("entra_remediator_runs_total{tenant=\"contoso\",outcome=\"ok\"} 2\n")
        );
        assert!(text.contains(
            "entra_remediator_runs_total{tenant=\"fab\\\"ri\\\\kam\\n\",outcome=\"failed\"} 1\n"
        ));
        assert!(
            text.contains(
                "entra_remediator_actions_total{kind=\"disable_user\",state=\"done\"} 5\n"
            )
        );
        assert!(text.contains("entra_remediator_graph_requests_total{status=\"0\"} 1\n"));
        assert!(text.contains("entra_remediator_graph_throttle_wait_seconds_total 1.5\n"));
        assert!(text.contains("entra_remediator_rule_errors_total 2\n"));
        assert!(text.contains(
            "entra_remediator_webhook_deliveries_total{webhook=\"slack\",result=\"failure\"} 1\n"
        ));
        assert!(text.contains(&format!(
            "entra_remediator_last_successful_run_timestamp_seconds{{tenant=\"contoso\"}} {}\n",
            at.timestamp()
        )));
        assert!(!text.contains("last_successful_run_timestamp_seconds{tenant=\"fab"));
        assert!(
            text.contains("# TYPE entra_remediator_last_successful_run_timestamp_seconds gauge")
        );
    }
}
