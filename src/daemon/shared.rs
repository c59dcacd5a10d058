//! What the scheduler jobs, the API requests and the main loop share: the
//! current config, rules and notifier (swapped whole on reload), the store, the
//! metrics, which tenants are busy here, and the tenant leases.

use std::collections::HashMap;
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

/// How many tenant runs and execution passes one instance works on at once.
/// The PostgreSQL store's pool has 5 connections (acquired for at most
/// `connect_timeout`): with hundreds of tenants on one schedule, every tick
/// firing at once made most of them time out taking the lease and skip the
/// tick. One connection is left for lease renewals and the API.
pub(super) const MAX_CONCURRENT: usize = 4;

/// What became of work that needed a tenant's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Leased {
    /// The work ran here, holding the lease to its end.
    Ran,
    /// Another instance holds the lease: nothing ran here.
    Held,
    /// The lease could not be taken (store error): nothing ran here.
    Failed,
    /// The lease was lost while the work ran (renewals failed long enough for
    /// it to expire and another instance took it): the work was stopped at
    /// once, as if this instance had crashed, and the new holder settles it.
    Lost,
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
    /// Tenants with a run (true) or an execution pass (false) in progress here.
    pub busy: Mutex<HashMap<String, bool>>,
    /// Bounds the runs and execution passes in progress here ([`MAX_CONCURRENT`]).
    pub slots: Arc<tokio::sync::Semaphore>,
    /// An execution round (a pass for every tenant) is going.
    pub exec_round: std::sync::atomic::AtomicBool,
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

    /// Marks a tenant busy with a run (`run`) or an execution pass; when it
    /// already is, says with which (true: a run), and changes nothing.
    pub(super) fn enter(&self, tenant: &str, run: bool) -> Result<(), bool> {
        let mut b = match self.busy.lock() {
            Ok(b) => b,
            Err(p) => p.into_inner(),
        };
        match b.get(tenant) {
            Some(other) => Err(*other),
            None => {
                b.insert(tenant.to_string(), run);
                Ok(())
            }
        }
    }

    /// Marks a tenant no longer busy.
    pub(super) fn leave(&self, tenant: &str) {
        match self.busy.lock() {
            Ok(mut b) => b.remove(tenant),
            Err(p) => p.into_inner().remove(tenant),
        };
    }

    /// Runs `f` holding the tenant's lease, renewed meanwhile; when a renewal
    /// finds that another instance took the lease, `f` is stopped (dropped).
    pub(super) async fn with_lease<F, Fut>(self: &Arc<Self>, tenant: &str, f: F) -> Leased
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
                return Leased::Held;
            }
            Err(e) => {
                tracing::error!(%tenant, error = %e, "cannot take the tenant lease");
                return Leased::Failed;
            }
        }
        // Renew the lease while working, so a long run keeps it; the renewal
        // ends only when another holder has it.
        let mut renew = {
            let me = self.clone();
            let lease = lease.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(ttl / 3).await;
                    match me.store.try_lease(&lease, &me.instance, ttl).await {
                        Ok(true) => {}
                        Ok(false) => return,
                        Err(e) => tracing::warn!(error = %e, "cannot renew the tenant lease"),
                    }
                }
            })
        };
        let outcome = tokio::select! {
            () = f() => Leased::Ran,
            _ = &mut renew => Leased::Lost,
        };
        renew.abort();
        match outcome {
            Leased::Lost => tracing::error!(
                %tenant,
                "the tenant lease expired and another instance took it: this instance's work on the tenant stopped"
            ),
            _ => {
                if let Err(e) = self.store.release_lease(&lease, &self.instance).await {
                    tracing::warn!(%tenant, error = %e, "cannot release the tenant lease");
                }
            }
        }
        outcome
    }
}
