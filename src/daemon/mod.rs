//! The daemon: per-tenant cron schedules, prompt execution of approved actions,
//! rule hot-reload, SIGHUP config reload, graceful SIGTERM, systemd readiness and
//! watchdog, the local HTTP API, and a lease per tenant so that several instances
//! can share one PostgreSQL store with exactly one running a tenant at a time.
//!
//! This module only schedules, reloads and handles signals; one cycle and an
//! execution pass are use cases of [`crate::service`].

mod cycle;
mod lifecycle;
mod reload;
mod schedule;
mod shared;
mod watch;

use std::path::Path;

pub use reload::needs_restart;
use shared::sd;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Configuration, rules, store or API could not be set up.
    #[error("{0}")]
    Startup(String),
}

fn startup(e: impl std::fmt::Display) -> DaemonError {
    DaemonError::Startup(e.to_string())
}

/// Runs the daemon until SIGTERM or SIGINT; returns when in-flight work is done
/// (or the grace period is over).
pub async fn run(config_path: &Path) -> Result<(), DaemonError> {
    shared::limit_arenas();
    let (mut daemon, mut inputs) = lifecycle::start(config_path).await?;
    loop {
        tokio::select! {
            _ = inputs.sigterm.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT: stopping"); break; }
            _ = inputs.sighup.recv() => {
                if !daemon.on_sighup().await {
                    break;
                }
            }
            Some(path) = inputs.rules.recv() => {
                daemon.shared.reload_rules(&format!("file changed: {path}"), false).await;
            }
            Some(req) = inputs.requests.recv() => daemon.on_request(req),
            _ = daemon.exec_tick.tick() => daemon.shared.on_execution_timer().await,
            _ = inputs.watchdog.tick() => {
                if inputs.watchdog_on {
                    sd(&[sd_notify::NotifyState::Watchdog]);
                }
            }
        }
    }
    daemon.shutdown().await;
    Ok(())
}
