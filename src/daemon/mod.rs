//! The daemon: per-tenant cron schedules, prompt execution of approved actions,
//! rule hot-reload, SIGHUP config reload, graceful SIGTERM, systemd readiness and
//! watchdog, the local HTTP API, and a lease per tenant so that several instances
//! can share one PostgreSQL store with exactly one running a tenant at a time.

mod watch;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, ApiState, DaemonRequest};
use crate::config::Config;
use crate::domain::{ActionState, ExecReport};
use crate::exceptions::Exceptions;
use crate::execute::Executor;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::notify::notice::{Notice, NoticeAction};
use crate::policy::RuleSet;
use crate::run::{RunOptions, TenantOutcome};
use crate::scan::ScanRequest;
use crate::store::{Filter, NewEvent, Store};

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

/// The loaded rules and exceptions, swapped whole on reload.
struct Rules {
    set: Arc<RuleSet>,
    exceptions: Arc<Exceptions>,
    /// The fingerprint of the files they were loaded from.
    sources: String,
}

/// A SHA-256 over what the rule files and the exceptions file hold (or why they
/// cannot be read), taken before loading them: the same fingerprint as last time
/// means nothing changed, so there is nothing to reload or to report again.
fn sources_fingerprint(cfg: &Config) -> String {
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

/// State shared by the scheduler jobs, the API and the main loop.
pub(crate) struct Shared {
    config_path: PathBuf,
    config: Arc<RwLock<Arc<Config>>>,
    rules: RwLock<Arc<Rules>>,
    /// The fingerprint of the rule sources last loaded or refused.
    rules_seen: Mutex<String>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    notifier: RwLock<Arc<Notifier>>,
    /// The API's bearer token (when the API is on), re-read on SIGHUP.
    api_token: Option<api::Token>,
    /// Tenants with a run or execution in progress here.
    busy: Mutex<HashSet<String>>,
    tracker: TaskTracker,
    stopping: CancellationToken,
    instance: String,
}

fn read<T: Clone>(l: &RwLock<T>) -> T {
    match l.read() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    }
}

fn write<T>(l: &RwLock<T>, v: T) {
    match l.write() {
        Ok(mut g) => *g = v,
        Err(p) => *p.into_inner() = v,
    }
}

fn sd(state: &[sd_notify::NotifyState<'_>]) {
    // Outside systemd NOTIFY_SOCKET is unset and this does nothing.
    let _ = sd_notify::notify(state);
}

fn instance_name(cfg: &Config) -> String {
    cfg.daemon.instance.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "host".into());
        format!("{host}:{}", std::process::id())
    })
}

impl Shared {
    fn event(&self, kind: &str, tenant: Option<&str>, detail: serde_json::Value) -> NewEvent {
        NewEvent {
            tenant: tenant.map(str::to_string),
            kind: kind.into(),
            actor: format!("daemon:{}", self.instance),
            detail: detail.to_string(),
            ..NewEvent::default()
        }
    }

    async fn record(&self, e: NewEvent) {
        if let Err(err) = self.store.record_event(e).await {
            tracing::error!(error = %err, "cannot record an event in history");
        }
    }

    /// Marks a tenant busy; false when it already is (runs never overlap).
    fn enter(&self, tenant: &str) -> bool {
        match self.busy.lock() {
            Ok(mut b) => b.insert(tenant.to_string()),
            Err(p) => p.into_inner().insert(tenant.to_string()),
        }
    }

    fn leave(&self, tenant: &str) {
        match self.busy.lock() {
            Ok(mut b) => b.remove(tenant),
            Err(p) => p.into_inner().remove(tenant),
        };
    }

    /// One scheduled (or requested) cycle for a tenant: scan, plan, record, execute.
    pub(crate) async fn tick(self: Arc<Self>, tenant: String, force: bool, why: &str) {
        if self.stopping.is_cancelled() {
            return;
        }
        if !self.enter(&tenant) {
            tracing::warn!(%tenant, "previous run still going; this tick is skipped");
            self.metrics.run_finished(&tenant, "skipped", Utc::now());
            self.record(self.event(
                "tick_skipped",
                Some(&tenant),
                json!({"why": "the previous run of this tenant is still going", "trigger": why}),
            ))
            .await;
            return;
        }
        self.clone().cycle(&tenant, force, why).await;
        self.leave(&tenant);
    }

    async fn with_lease<F, Fut>(self: &Arc<Self>, tenant: &str, f: F) -> bool
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

    async fn cycle(self: Arc<Self>, tenant: &str, force: bool, why: &str) {
        let me = self.clone();
        self.with_lease(tenant, || async move {
            let cfg = read(&me.config);
            let Some(tc) = cfg.tenant(tenant) else {
                return;
            };
            let rules = read(&me.rules);
            let opts = RunOptions {
                tenant: Some(tenant.to_string()),
                scan: ScanRequest::default(),
                force,
                actor: format!("daemon:{}", me.instance),
                now: Utc::now(),
            };
            tracing::info!(%tenant, trigger = why, "run starting");
            let outcome = crate::run::run_loaded(
                &cfg,
                Some(me.store.as_ref()),
                &opts,
                &[tc],
                &rules.set,
                &rules.exceptions,
            )
            .await;
            match outcome {
                Ok(outcomes) => {
                    for o in &outcomes {
                        me.after_run(o).await;
                    }
                }
                Err(e) => {
                    tracing::error!(%tenant, error = %e, "run failed");
                    me.metrics.run_finished(tenant, "failed", Utc::now());
                }
            }
            me.execute_now(&cfg, tenant).await;
            sd(&[sd_notify::NotifyState::Status(&format!(
                "last run: tenant {tenant} at {}",
                Utc::now().to_rfc3339()
            ))]);
        })
        .await;
    }

    async fn after_run(&self, o: &TenantOutcome) {
        let notifier = read(&self.notifier);
        match o {
            TenantOutcome::Planned {
                tenant,
                run_id,
                plan,
                ids,
                failures,
                ..
            } => {
                self.metrics.run_finished(tenant, "ok", Utc::now());
                self.metrics.rule_errors(failures.len() as u64);
                for a in &plan.actions {
                    self.metrics.actions(a.kind.as_str(), a.state().as_str(), 1);
                }
                let pending: Vec<NoticeAction> = plan
                    .actions
                    .iter()
                    .zip(ids)
                    .filter(|(a, _)| a.state() == "pending")
                    .map(|(a, id)| NoticeAction {
                        id: *id,
                        kind: a.kind.to_string(),
                        upn: a.identity_upn.clone(),
                        reason: a
                            .reasons
                            .iter()
                            .map(|r| r.reason.clone())
                            .collect::<Vec<_>>()
                            .join("; "),
                    })
                    .collect();
                if !pending.is_empty() {
                    notifier.notify(Notice::ApprovalPending {
                        tenant: tenant.clone(),
                        run_id: run_id.clone(),
                        actions: pending,
                    });
                }
                if !plan.downgrades.is_empty() {
                    notifier.notify(Notice::RunDowngraded {
                        tenant: tenant.clone(),
                        run_id: run_id.clone(),
                        reasons: plan.downgrades.clone(),
                    });
                }
            }
            TenantOutcome::Rejected { tenant, error } => {
                tracing::warn!(%tenant, %error, "scan refused");
                self.metrics.run_finished(tenant, "rejected", Utc::now());
            }
            TenantOutcome::AlreadyProcessed { tenant, .. } => {
                tracing::info!(%tenant, "newest scan already processed");
            }
        }
    }

    /// Settles in-flight actions and executes ready and approved ones.
    async fn execute_now(&self, cfg: &Config, tenant: &str) {
        let Some(tc) = cfg.tenant(tenant) else {
            return;
        };
        if tc.graph.is_none() {
            return;
        }
        let mut waiting = 0;
        for state in ["ready", "approved", "executing"] {
            waiting += self
                .store
                .actions(&Filter {
                    tenant: Some(tenant.to_string()),
                    state: Some(state.into()),
                    ..Filter::default()
                })
                .await
                .map(|v| v.len())
                .unwrap_or(0);
        }
        if waiting == 0 {
            return;
        }
        let actor = format!("daemon:{}", self.instance);
        let ex = match Executor::new(cfg, tc, self.store.as_ref(), &actor) {
            Ok(ex) => ex,
            Err(e) => {
                tracing::error!(%tenant, error = %e, "cannot execute");
                return;
            }
        };
        let metrics = self.metrics.clone();
        ex.observe(Arc::new(move |status, wait| match status {
            Some(s) => metrics.graph_call(s),
            None => metrics.throttle_wait(wait),
        }));
        let mut report = ExecReport::default();
        match ex.reconcile().await {
            Ok(r) => report.results.extend(r.results),
            Err(e) => tracing::error!(%tenant, error = %e, "cannot settle in-flight actions"),
        }
        match ex.run_pending().await {
            Ok(r) => report.results.extend(r.results),
            Err(e) => tracing::error!(%tenant, error = %e, "execution stopped"),
        }
        let mut failed = Vec::new();
        for r in &report.results {
            tracing::info!(%tenant, action = r.id, state = %r.state, why = %r.reason, "action executed");
            if r.state == ActionState::Failed {
                failed.push(NoticeAction {
                    id: r.id,
                    kind: String::new(),
                    upn: String::new(),
                    reason: r.reason.clone(),
                });
            }
        }
        for r in &report.results {
            self.metrics.actions("executed", r.state.as_str(), 1);
        }
        if !failed.is_empty() {
            for f in &mut failed {
                if let Ok(Some(a)) = self.store.action(f.id).await {
                    f.kind = a.kind.to_string();
                    f.upn = a.identity_upn;
                }
            }
            read(&self.notifier).notify(Notice::ActionFailed {
                tenant: tenant.to_string(),
                actions: failed,
            });
        }
    }

    /// Executes approved actions of a tenant promptly (API approvals, interval).
    async fn execute_tenant(self: Arc<Self>, tenant: String) {
        if self.stopping.is_cancelled() || !self.enter(&tenant) {
            return;
        }
        let me = self.clone();
        let t = tenant.clone();
        self.with_lease(&tenant, || async move {
            let cfg = read(&me.config);
            me.execute_now(&cfg, &t).await;
        })
        .await;
        self.leave(&tenant);
    }

    /// Compiles the rule set in full; the old one stays on any error. Unless
    /// `force`d (a config reload), files holding what they held at the last
    /// attempt are not loaded again: one edit is one reload, and a broken set is
    /// reported once until its files change.
    async fn reload_rules(&self, why: &str, force: bool) {
        let cfg = read(&self.config);
        let loaded = tokio::task::spawn_blocking(move || {
            let sources = sources_fingerprint(&cfg);
            (sources, crate::run::load_rules(&cfg))
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
    /// no setting that needs a restart; the API token is read again.
    async fn reload_config(&self) -> bool {
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
                let token = match (&self.api_token, new.api.enabled) {
                    (Some(_), true) => match api::load_token(&new.api) {
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
                let mut token_changed = false;
                if let (Some(slot), Some(t)) = (&self.api_token, token) {
                    token_changed = *slot.get() != *t;
                    slot.set(&t);
                }
                write(&self.config, Arc::new(new));
                tracing::info!(path = %self.config_path.display(), api_token_changed = token_changed, "configuration reloaded");
                self.record(self.event(
                    "config_reloaded",
                    None,
                    json!({"path": self.config_path.display().to_string(), "api_token_changed": token_changed}),
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
        ("daemon.instance", d.instance != e.instance),
        ("daemon.log_format", d.log_format != e.log_format),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}

/// Adds one cron job per tenant; returns the scheduler (started).
async fn schedule(shared: &Arc<Shared>) -> Result<JobScheduler, DaemonError> {
    let sched = JobScheduler::new().await.map_err(startup)?;
    let cfg = read(&shared.config);
    for t in &cfg.tenants {
        let expr = t
            .schedule
            .clone()
            .unwrap_or_else(|| cfg.daemon.schedule.clone());
        let me = shared.clone();
        let tenant = t.name.clone();
        let job = Job::new_async(expr.as_str(), move |_id, _sched| {
            let me = me.clone();
            let tenant = tenant.clone();
            Box::pin(async move {
                // Activations are independent tasks: track them for shutdown.
                let tracker = me.tracker.clone();
                tracker.spawn(me.tick(tenant, false, "schedule"));
            })
        })
        .map_err(|e| startup(format!("tenant {}: schedule {expr:?}: {e}", t.name)))?;
        sched.add(job).await.map_err(startup)?;
    }
    sched.start().await.map_err(startup)?;
    Ok(sched)
}

/// Tenants whose last run is older than their previous scheduled time.
async fn missed(shared: &Arc<Shared>) -> Vec<String> {
    let cfg = read(&shared.config);
    let mut out = Vec::new();
    if !cfg.daemon.catch_up {
        return out;
    }
    let now = Utc::now();
    for t in &cfg.tenants {
        let expr = t
            .schedule
            .clone()
            .unwrap_or_else(|| cfg.daemon.schedule.clone());
        let Ok(cron) = crate::config::parse_schedule(&expr) else {
            continue;
        };
        match shared.store.last_run_at(&t.name).await {
            Ok(None) => out.push(t.name.clone()),
            Ok(Some(last)) => {
                if cron
                    .find_next_occurrence(&last, false)
                    .is_ok_and(|next| next <= now)
                {
                    out.push(t.name.clone());
                }
            }
            Err(e) => tracing::warn!(tenant = %t.name, error = %e, "cannot read the last run time"),
        }
    }
    out
}

/// Runs the daemon until SIGTERM or SIGINT; returns when in-flight work is done
/// (or the grace period is over).
pub async fn run(config_path: &Path) -> Result<(), DaemonError> {
    let cfg = Config::load(config_path).map_err(startup)?;
    let store: Arc<dyn Store> = Arc::from(
        crate::store::open_with(&crate::store::OpenOptions::from_config(&cfg.store))
            .await
            .map_err(startup)?,
    );
    let sources = sources_fingerprint(&cfg);
    let (set, exceptions) = crate::run::load_rules(&cfg).map_err(startup)?;
    let metrics = Arc::new(Metrics::default());
    let notifier = Notifier::new(&cfg.notify).map_err(startup)?;
    {
        let metrics = metrics.clone();
        notifier.on_result(Arc::new(move |name, ok| metrics.webhook(name, ok)));
    }
    let instance = instance_name(&cfg);
    let api_cfg = cfg.api.clone();
    let api_token = if api_cfg.enabled {
        Some(api::Token::new(
            &api::load_token(&api_cfg).map_err(startup)?,
        ))
    } else {
        None
    };
    let config = Arc::new(RwLock::new(Arc::new(cfg)));
    let shared = Arc::new(Shared {
        config_path: config_path.to_path_buf(),
        config: config.clone(),
        rules: RwLock::new(Arc::new(Rules {
            set,
            exceptions,
            sources: sources.clone(),
        })),
        rules_seen: Mutex::new(sources),
        store: store.clone(),
        metrics: metrics.clone(),
        notifier: RwLock::new(Arc::new(notifier)),
        api_token: api_token.clone(),
        busy: Mutex::new(HashSet::new()),
        tracker: TaskTracker::new(),
        stopping: CancellationToken::new(),
        instance: instance.clone(),
    });
    let ready = Arc::new(AtomicBool::new(false));
    let (req_tx, mut req_rx) = mpsc::channel::<DaemonRequest>(64);

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(startup)?;
    let mut sighup =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).map_err(startup)?;

    let api_task = if let Some(token) = api_token {
        let state = ApiState {
            store: store.clone(),
            config: config.clone(),
            token,
            metrics: metrics.clone(),
            ready: ready.clone(),
            requests: req_tx.clone(),
        };
        let router = api::router(state, api_cfg.max_body_bytes);
        let stop = shared.stopping.clone();
        let listen = api_cfg.listen.clone();
        let limits = api::ServeLimits::from(&api_cfg);
        // Bound before serving: a bad address fails the start at once, and
        // READY is not held back by a wait.
        let bound = api::bind(&listen)
            .await
            .map_err(|e| startup(format!("HTTP API on {}: {e}", api_cfg.listen)))?;
        let task = tokio::spawn(async move {
            bound
                .serve(router, limits, async move { stop.cancelled().await })
                .await;
        });
        Some(task)
    } else {
        None
    };

    let (rules_tx, mut rules_rx) = mpsc::channel::<String>(16);
    let mut watcher = watch::RuleWatcher::start(read(config.as_ref()).as_ref(), rules_tx.clone())
        .map_err(startup)?;
    let mut sched = schedule(&shared).await?;

    ready.store(true, Ordering::SeqCst);
    sd(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("running: store and rules loaded"),
    ]);
    tracing::info!(instance = %instance, "daemon ready");
    shared
        .record(shared.event("daemon_started", None, json!({"instance": instance})))
        .await;

    for tenant in missed(&shared).await {
        tracing::info!(%tenant, "a scheduled run was missed while stopped: catching up");
        shared
            .tracker
            .spawn(shared.clone().tick(tenant, false, "catch-up"));
    }

    let exec_interval = |secs: u64| {
        let mut t = tokio::time::interval(Duration::from_secs(secs));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        t
    };
    let mut exec_every = read(config.as_ref()).daemon.execute_interval_secs;
    let mut exec_tick = exec_interval(exec_every);
    let watchdog = sd_notify::watchdog_enabled();
    let watchdog_on = watchdog.is_some();
    let wd_every = watchdog.map_or(Duration::from_secs(3600), |d| d / 2);
    let mut wd_tick = tokio::time::interval(wd_every);

    loop {
        tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT: stopping"); break; }
            _ = sighup.recv() => {
                sd(&[sd_notify::NotifyState::Reloading]);
                if shared.reload_config().await {
                    if let Err(e) = sched.shutdown().await {
                        tracing::warn!(error = %e, "scheduler shutdown during reload");
                    }
                    match schedule(&shared).await {
                        Ok(s) => sched = s,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot schedule the reloaded config; stopping");
                            break;
                        }
                    }
                    match watch::RuleWatcher::start(read(config.as_ref()).as_ref(), rules_tx.clone()) {
                        Ok(w) => watcher = w,
                        Err(e) => tracing::error!(error = %e, "cannot watch the rules directory"),
                    }
                    let every = read(config.as_ref()).daemon.execute_interval_secs;
                    if every != exec_every {
                        exec_every = every;
                        exec_tick = exec_interval(every);
                    }
                }
                sd(&[sd_notify::NotifyState::Ready]);
            }
            Some(path) = rules_rx.recv() => {
                shared.reload_rules(&format!("file changed: {path}"), false).await;
            }
            Some(req) = req_rx.recv() => match req {
                DaemonRequest::Run { tenant, force, by } => {
                    let cfg = read(config.as_ref());
                    for t in cfg.tenants.iter().filter(|t| tenant.as_deref().is_none_or(|n| n == t.name)) {
                        tracing::info!(tenant = %t.name, by = %by, "run requested through the API");
                        shared.tracker.spawn(shared.clone().tick(t.name.clone(), force, "api"));
                    }
                }
                DaemonRequest::Execute { tenant } => {
                    shared.tracker.spawn(shared.clone().execute_tenant(tenant));
                }
            },
            _ = exec_tick.tick() => {
                // Approvals expire on this timer, so that reads (the API, the
                // CLI) need no write transaction to see them.
                match shared.store.expire_due(chrono::Utc::now()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(expired = n, "pending approvals expired"),
                    Err(e) => tracing::warn!(error = %e, "expiring overdue approvals failed"),
                }
                let cfg = read(config.as_ref());
                for t in &cfg.tenants {
                    shared.tracker.spawn(shared.clone().execute_tenant(t.name.clone()));
                }
            }
            _ = wd_tick.tick() => {
                if watchdog_on {
                    sd(&[sd_notify::NotifyState::Watchdog]);
                }
            }
        }
    }

    // Stop taking new work, let in-flight runs and Graph calls finish and be recorded.
    sd(&[sd_notify::NotifyState::Stopping]);
    ready.store(false, Ordering::SeqCst);
    shared.stopping.cancel();
    drop(watcher);
    if let Err(e) = sched.shutdown().await {
        tracing::warn!(error = %e, "scheduler shutdown");
    }
    shared.tracker.close();
    let grace = Duration::from_secs(read(config.as_ref()).daemon.shutdown_grace_secs);
    if tokio::time::timeout(grace, shared.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "in-flight work did not finish within the grace period; it will be settled at the next start"
        );
    }
    read(&shared.notifier).flush(Duration::from_secs(5)).await;
    if let Some(t) = api_task {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    shared
        .record(shared.event("daemon_stopped", None, json!({"instance": instance})))
        .await;
    tracing::info!("stopped");
    Ok(())
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
