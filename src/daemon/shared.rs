//! What the scheduler jobs, the API requests and the main loop share: the
//! current config, rules and notifier (swapped whole on reload), the store, the
//! metrics, which tenants are busy here, and the tenant leases.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api;
use crate::config::Config;
use crate::exceptions::Exceptions;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::policy::RuleSet;
use crate::store::{NewEvent, Store};

/// The loaded rules and exceptions, swapped whole on reload.
pub(super) struct Rules {
    /// The compiled rule set.
    pub set: Arc<RuleSet>,
    /// The exceptions.
    pub exceptions: Arc<Exceptions>,
    /// The fingerprint of the files they were loaded from.
    pub sources: String,
}

/// State shared by the scheduler jobs, the API and the main loop.
pub(super) struct Shared {
    pub config_path: PathBuf,
    pub config: Arc<RwLock<Arc<Config>>>,
    pub rules: RwLock<Arc<Rules>>,
    /// The fingerprint of the rule sources last loaded or refused.
    pub rules_seen: Mutex<String>,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    pub notifier: RwLock<Arc<Notifier>>,
    /// The API's named bearer tokens (when the API is on), re-read on SIGHUP.
    pub api_tokens: Option<api::Tokens>,
    /// Tenants with a run or execution in progress here.
    pub busy: Mutex<HashSet<String>>,
    pub tracker: TaskTracker,
    pub stopping: CancellationToken,
    pub instance: String,
}

/// The current value behind a lock (a poisoned lock still holds a whole value).
pub(super) fn read<T: Clone>(l: &RwLock<T>) -> T {
    match l.read() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    }
}

/// Replaces the value behind a lock.
pub(super) fn write<T>(l: &RwLock<T>, v: T) {
    match l.write() {
        Ok(mut g) => *g = v,
        Err(p) => *p.into_inner() = v,
    }
}

/// Tells systemd; outside systemd NOTIFY_SOCKET is unset and this does nothing.
/// Gives the heap a run freed back to the system. glibc's malloc keeps freed
/// memory for reuse, so a daemon that planned a 100,000-identity scan would
/// otherwise hold its peak between runs (measured: 181 MiB against 20 MiB idle).
pub(super) fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers; it only returns free pages of the
    // heap and the arenas to the kernel, and is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Caps glibc's malloc arenas at two: by default each thread that meets
/// contention gets its own arena (up to 8 per core), and memory freed after a
/// run stays scattered across them, so less of it can be given back.
pub(super) fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt takes two integers and only changes allocator settings.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

pub(super) fn sd(state: &[sd_notify::NotifyState<'_>]) {
    let _ = sd_notify::notify(state);
}

/// This instance's name in leases and history: configured, or host and pid.
pub(super) fn instance_name(cfg: &Config) -> String {
    cfg.daemon.instance.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "host".into());
        format!("{host}:{}", std::process::id())
    })
}

impl Shared {
    /// The actor that names this daemon in history.
    pub(super) fn actor(&self) -> String {
        format!("daemon:{}", self.instance)
    }

    /// A history event by this daemon.
    pub(super) fn event(
        &self,
        kind: &str,
        tenant: Option<&str>,
        detail: serde_json::Value,
    ) -> NewEvent {
        NewEvent {
            tenant: tenant.map(str::to_string),
            kind: kind.into(),
            actor: self.actor(),
            detail: detail.to_string(),
            ..NewEvent::default()
        }
    }

    /// Records an event; a failure is logged (the daemon goes on).
    pub(super) async fn record(&self, e: NewEvent) {
        if let Err(err) = self.store.record_event(e).await {
            tracing::error!(error = %err, "cannot record an event in history");
        }
    }

    /// Marks a tenant busy; false when it already is (runs never overlap).
    pub(super) fn enter(&self, tenant: &str) -> bool {
        match self.busy.lock() {
            Ok(mut b) => b.insert(tenant.to_string()),
            Err(p) => p.into_inner().insert(tenant.to_string()),
        }
    }

    /// Marks a tenant no longer busy.
    pub(super) fn leave(&self, tenant: &str) {
        match self.busy.lock() {
            Ok(mut b) => b.remove(tenant),
            Err(p) => p.into_inner().remove(tenant),
        };
    }

    /// Runs `f` holding the tenant's lease (renewed meanwhile); false when
    /// another instance holds it or it cannot be taken.
    pub(super) async fn with_lease<F, Fut>(self: &Arc<Self>, tenant: &str, f: F) -> bool
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let cfg = read(&self.config);
        let ttl = Duration::from_secs(cfg.daemon.lease_secs);
        let lease = format!("tenant:{tenant}");
        match self.store.try_lease(&lease, &self.instance, ttl).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(%tenant, "another instance holds this tenant's lease; not running here");
                return false;
            }
            Err(e) => {
                tracing::error!(%tenant, error = %e, "cannot take the tenant lease");
                return false;
            }
        }
        // Renew the lease while working, so a long run keeps it.
        let renew = {
            let me = self.clone();
            let lease = lease.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(ttl / 3).await;
                    if let Err(e) = me.store.try_lease(&lease, &me.instance, ttl).await {
                        tracing::warn!(error = %e, "cannot renew the tenant lease");
                    }
                }
            })
        };
        f().await;
        renew.abort();
        if let Err(e) = self.store.release_lease(&lease, &self.instance).await {
            tracing::warn!(%tenant, error = %e, "cannot release the tenant lease");
        }
        true
    }
}
