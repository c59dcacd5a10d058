//! Start and stop: load config, store and rules, bind the API, watch the rules,
//! schedule the tenants and tell systemd; on SIGTERM or SIGINT, stop taking work
//! and let in-flight work finish within the grace period.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::json;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_cron_scheduler::JobScheduler;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::reload::sources_fingerprint;
use super::schedule::{exec_interval, missed, schedule};
use super::shared::{Rules, Shared, instance_name, read, sd};
use super::watch::RuleWatcher;
use super::{DaemonError, startup};
use crate::api::{self, ApiState, DaemonRequest};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::store::Store;

/// The running daemon: what the main loop changes.
pub(super) struct Daemon {
    /// State shared with jobs and tasks.
    pub shared: Arc<Shared>,
    /// What `/readyz` answers.
    pub ready: Arc<AtomicBool>,
    /// The HTTP API, when on.
    pub api_task: Option<JoinHandle<()>>,
    /// The tenants' cron jobs.
    pub sched: JobScheduler,
    /// The watch on the rule files.
    pub watcher: RuleWatcher,
    /// Where the watcher reports a change.
    pub rules_tx: mpsc::Sender<String>,
    /// The execution timer's period, in seconds.
    pub exec_every: u64,
    /// The execution timer.
    pub exec_tick: tokio::time::Interval,
}

/// What the main loop waits for.
pub(super) struct Inputs {
    /// SIGTERM.
    pub sigterm: Signal,
    /// SIGHUP.
    pub sighup: Signal,
    /// Changed rule files.
    pub rules: mpsc::Receiver<String>,
    /// Requests from the API.
    pub requests: mpsc::Receiver<DaemonRequest>,
    /// The systemd watchdog timer (an hour when there is no watchdog).
    pub watchdog: tokio::time::Interval,
    /// Whether systemd expects watchdog pings.
    pub watchdog_on: bool,
}

/// Loads config, store, rules and notifier into the shared state.
async fn load(config_path: &Path) -> Result<(Arc<Shared>, Arc<Metrics>), DaemonError> {
    let cfg = Config::load(config_path).map_err(startup)?;
    let store: Arc<dyn Store> = Arc::from(
        crate::store::open_with(&crate::store::OpenOptions::from_config(&cfg.store))
            .await
            .map_err(startup)?,
    );
    let sources = sources_fingerprint(&cfg);
    let (set, exceptions) = crate::service::run::load_rules(&cfg).map_err(startup)?;
    let metrics = Arc::new(Metrics::default());
    let notifier = Notifier::new(&cfg.notify).map_err(startup)?;
    {
        let metrics = metrics.clone();
        notifier.on_result(Arc::new(move |name, ok| metrics.webhook(name, ok)));
    }
    let api_tokens = if cfg.api.enabled {
        Some(api::Tokens::new(
            api::load_tokens(&cfg.api).map_err(startup)?,
        ))
    } else {
        None
    };
    let shared = Arc::new(Shared {
        config_path: config_path.to_path_buf(),
        instance: instance_name(&cfg),
        config: Arc::new(RwLock::new(Arc::new(cfg))),
        rules: RwLock::new(Arc::new(Rules {
            set,
            exceptions,
            sources: sources.clone(),
        })),
        rules_seen: Mutex::new(sources),
        store,
        metrics: metrics.clone(),
        notifier: RwLock::new(Arc::new(notifier)),
        api_tokens,
        busy: Mutex::new(HashMap::new()),
        slots: Arc::new(tokio::sync::Semaphore::new(super::shared::MAX_CONCURRENT)),
        exec_round: AtomicBool::new(false),
        tracker: TaskTracker::new(),
        stopping: CancellationToken::new(),
    });
    Ok((shared, metrics))
}

/// The console's routes when `[console]` is enabled, with a timer that drops
/// ended sessions; a console that cannot start (unreadable secret) fails the
/// daemon's start.
fn console_router(
    shared: &Arc<Shared>,
    requests: &mpsc::Sender<DaemonRequest>,
) -> Result<Option<axum::Router>, DaemonError> {
    let cfg = read(shared.config.as_ref());
    if !cfg.console.enabled {
        return Ok(None);
    }
    let oidc = crate::console::oidc::Oidc::new(&cfg.console)
        .map_err(|e| startup(format!("console: {e}")))?;
    let state = crate::console::ConsoleState {
        store: shared.store.clone(),
        config: shared.config.clone(),
        sessions: Arc::default(),
        oidc: Arc::new(oidc),
        requests: requests.clone(),
        cookies: crate::console::session::CookieNames::new(cfg.console.secure_cookies),
        scans: Arc::new(crate::service::scan_view::ScanCache::new(2)),
    };
    let sweeper = state.clone();
    let stop = shared.stopping.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = tick.tick() => crate::console::sweep(&sweeper),
                () = stop.cancelled() => break,
            }
        }
    });
    Ok(Some(crate::console::router(state)))
}

/// Binds the API (a bad address fails the start at once, and READY is not
/// held back by a wait) and serves it until the daemon stops.
async fn serve_api(
    shared: &Arc<Shared>,
    metrics: Arc<Metrics>,
    ready: &Arc<AtomicBool>,
    requests: mpsc::Sender<DaemonRequest>,
) -> Result<Option<JoinHandle<()>>, DaemonError> {
    let Some(tokens) = shared.api_tokens.clone() else {
        return Ok(None);
    };
    let api_cfg = read(shared.config.as_ref()).api.clone();
    let state = ApiState {
        store: shared.store.clone(),
        config: shared.config.clone(),
        tokens,
        metrics,
        ready: ready.clone(),
        requests,
    };
    let console = console_router(shared, &state.requests)?;
    let router = api::router(state, api_cfg.max_body_bytes);
    let router = match console {
        Some(console) => router.merge(console),
        None => router,
    };
    let stop = shared.stopping.clone();
    let limits = api::ServeLimits::from(&api_cfg);
    let bound = api::bind(&api_cfg.listen)
        .await
        .map_err(|e| startup(format!("HTTP API on {}: {e}", api_cfg.listen)))?;
    Ok(Some(tokio::spawn(async move {
        bound
            .serve(router, limits, async move { stop.cancelled().await })
            .await;
    })))
}

/// Starts the daemon: ready (and READY told to systemd) when this returns.
pub(super) async fn start(config_path: &Path) -> Result<(Daemon, Inputs), DaemonError> {
    let (shared, metrics) = load(config_path).await?;
    let ready = Arc::new(AtomicBool::new(false));
    let (req_tx, requests) = mpsc::channel::<DaemonRequest>(64);
    let sigterm = signal(SignalKind::terminate()).map_err(startup)?;
    let sighup = signal(SignalKind::hangup()).map_err(startup)?;
    let api_task = serve_api(&shared, metrics, &ready, req_tx).await?;
    let (rules_tx, rules) = mpsc::channel::<String>(16);
    let watcher = RuleWatcher::start(read(shared.config.as_ref()).as_ref(), rules_tx.clone())
        .map_err(startup)?;
    let sched = schedule(&shared).await?;

    ready.store(true, Ordering::SeqCst);
    sd(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("running: store and rules loaded"),
    ]);
    let instance = shared.instance.clone();
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

    let exec_every = read(shared.config.as_ref()).daemon.execute_interval_secs;
    let watchdog = sd_notify::watchdog_enabled();
    let inputs = Inputs {
        sigterm,
        sighup,
        rules,
        requests,
        watchdog_on: watchdog.is_some(),
        watchdog: tokio::time::interval(watchdog.map_or(Duration::from_secs(3600), |d| d / 2)),
    };
    let daemon = Daemon {
        shared,
        ready,
        api_task,
        sched,
        watcher,
        rules_tx,
        exec_every,
        exec_tick: exec_interval(exec_every),
    };
    Ok((daemon, inputs))
}

impl Daemon {
    /// SIGHUP: reload the config; when accepted, schedule its tenants again,
    /// watch its rules and take its execution interval. False when the new
    /// schedule cannot be set up (the daemon stops).
    pub(super) async fn on_sighup(&mut self) -> bool {
        sd(&[sd_notify::NotifyState::Reloading]);
        if self.shared.reload_config().await {
            if let Err(e) = self.sched.shutdown().await {
                tracing::warn!(error = %e, "scheduler shutdown during reload");
            }
            match schedule(&self.shared).await {
                Ok(s) => self.sched = s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot schedule the reloaded config; stopping");
                    return false;
                }
            }
            let cfg = read(self.shared.config.as_ref());
            match RuleWatcher::start(cfg.as_ref(), self.rules_tx.clone()) {
                Ok(w) => self.watcher = w,
                Err(e) => tracing::error!(error = %e, "cannot watch the rules directory"),
            }
            let every = cfg.daemon.execute_interval_secs;
            if every != self.exec_every {
                self.exec_every = every;
                self.exec_tick = exec_interval(every);
            }
        }
        sd(&[sd_notify::NotifyState::Ready]);
        true
    }

    /// A request from the API: run tenants now, or execute one's approved actions.
    pub(super) fn on_request(&self, req: DaemonRequest) {
        let shared = &self.shared;
        match req {
            DaemonRequest::Run { tenant, force, by } => {
                let cfg = read(shared.config.as_ref());
                for t in cfg
                    .tenants
                    .iter()
                    .filter(|t| tenant.as_deref().is_none_or(|n| n == t.name))
                {
                    tracing::info!(tenant = %t.name, by = %by, "run requested through the API");
                    shared
                        .tracker
                        .spawn(shared.clone().tick(t.name.clone(), force, "api"));
                }
            }
            DaemonRequest::Execute { tenant } => {
                shared.tracker.spawn(shared.clone().execute_tenant(tenant));
            }
            DaemonRequest::Recorded { tenant, run_id } => {
                let me = shared.clone();
                shared.tracker.spawn(async move {
                    me.clone().notify_recorded(&tenant, &run_id).await;
                    me.execute_tenant(tenant).await;
                });
            }
        }
    }

    /// Stops taking new work, lets in-flight runs and Graph calls finish and be
    /// recorded (within the grace period), then flushes notifications.
    pub(super) async fn shutdown(mut self) {
        let shared = &self.shared;
        sd(&[sd_notify::NotifyState::Stopping]);
        self.ready.store(false, Ordering::SeqCst);
        shared.stopping.cancel();
        drop(self.watcher);
        if let Err(e) = self.sched.shutdown().await {
            tracing::warn!(error = %e, "scheduler shutdown");
        }
        shared.tracker.close();
        let grace = Duration::from_secs(read(shared.config.as_ref()).daemon.shutdown_grace_secs);
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
        if let Some(t) = self.api_task {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
        let instance = shared.instance.clone();
        shared
            .record(shared.event("daemon_stopped", None, json!({"instance": instance})))
            .await;
        tracing::info!("stopped");
    }
}
