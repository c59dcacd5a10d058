//! When tenants run: one cron job per tenant, catching up on runs missed while
//! stopped, and the execution timer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_cron_scheduler::{Job, JobScheduler};

use super::shared::{Shared, read};
use super::{DaemonError, startup};

/// Adds one cron job per schedule, which starts the ticks of every tenant on
/// it; returns the scheduler (started). One job per tenant lost ticks with
/// many tenants: the scheduler passes activations through a channel of 200,
/// and 1,000 tenants firing in the same second overflowed it (logged as
/// "Lagged"), dropping activations.
pub(super) async fn schedule(shared: &Arc<Shared>) -> Result<JobScheduler, DaemonError> {
    let sched = JobScheduler::new().await.map_err(startup)?;
    let cfg = read(&shared.config);
    let mut by_schedule: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in &cfg.tenants {
        let expr = t
            .schedule
            .clone()
            .unwrap_or_else(|| cfg.daemon.schedule.clone());
        by_schedule.entry(expr).or_default().push(t.name.clone());
    }
    for (expr, tenants) in by_schedule {
        let first = tenants.first().cloned().unwrap_or_default();
        let me = shared.clone();
        let tenants = Arc::new(tenants);
        let job = Job::new_async(expr.as_str(), move |_id, _sched| {
            let me = me.clone();
            let tenants = tenants.clone();
            Box::pin(async move {
                // Activations are independent tasks: track them for shutdown.
                for tenant in tenants.iter() {
                    me.tracker
                        .spawn(me.clone().tick(tenant.clone(), false, "schedule"));
                }
            })
        })
        .map_err(|e| startup(format!("tenant {first}: schedule {expr:?}: {e}")))?;
        sched.add(job).await.map_err(startup)?;
    }
    sched.start().await.map_err(startup)?;
    Ok(sched)
}

/// Tenants whose last run is older than their previous scheduled time.
pub(super) async fn missed(shared: &Arc<Shared>) -> Vec<String> {
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

/// The execution timer: a missed tick is skipped, not made up in a burst.
pub(super) fn exec_interval(secs: u64) -> tokio::time::Interval {
    let mut t = tokio::time::interval(Duration::from_secs(secs));
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    t
}
