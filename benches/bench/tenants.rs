//! Section `tenants`: a managed-service provider's deployment. Many tenants
//! (1,000 with 1,000 identities each; BENCH_QUICK: 50 with 200), each with its
//! own fake Entra tenant served in the bench process, on one PostgreSQL store
//! served by 3 daemon instances in enforce mode. Per cron tick: every tenant's
//! run happens exactly once (the store's runs table), the split of runs across
//! the instances (the runs' actor), the tick time (first run start to the last
//! event of the tick's runs and actions) against 1 instance doing all of it;
//! and a tick in which one instance is SIGKILLed mid-tick: the others take its
//! tenants over after its lease expires, no Graph write reaches a fake twice,
//! every action ends in a final state.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};

use crate::Ctx;
use crate::tenants_setup::{self as setup, Instance, Size, Tenant};
use crate::util::{self, fmt_dur, kib_mib, sh};

/// States an action does not leave on its own.
const FINAL: &[&str] = &["done", "already_done", "refused", "failed", "skipped"];

struct Tick {
    label: String,
    instances: usize,
    /// Runs per tenant in the tick: (tenants with 0, with 1, with more).
    once: (usize, usize, usize),
    /// Runs per instance (actor).
    split: BTreeMap<String, usize>,
    /// First run start to the last event of the tick's runs and actions.
    span: Duration,
    /// From the cron time to everything final, as the bench saw it (0.5 s
    /// polls; shorter than the tick time when queued activations of the
    /// previous cron time started the tick early).
    wall: Duration,
    /// Actions per state.
    states: BTreeMap<String, usize>,
    /// Graph writes received (all fakes), and those received more than once.
    writes: usize,
    twice: Vec<String>,
    /// When an instance was killed: its name, runs recorded by then, tenant
    /// leases it held, and how long after the kill the tick was complete.
    killed: Option<(String, usize, usize, Duration)>,
    /// VmHWM of each live instance at the end.
    hwm: Vec<(String, u64)>,
}

fn now_ts() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse(s: &str) -> DateTime<Utc> {
    s.parse().expect("store time")
}

/// The next cron time of the `*/period` schedule, at least a quarter of the
/// period from now (time to write every tenant's scan).
fn next_fire(period: u64) -> DateTime<Utc> {
    let now = Utc::now().timestamp() + (period / 4) as i64;
    let p = period as i64;
    DateTime::from_timestamp((now / p + 1) * p, 0).expect("time")
}

fn sleep_until(t: DateTime<Utc>) {
    if let Ok(d) = (t - Utc::now()).to_std() {
        std::thread::sleep(d);
    }
}

/// (tenants with a run since `since`, runs, actions not final).
async fn progress(pool: &sqlx::PgPool, since: &str) -> (i64, i64, i64) {
    let (tenants, runs): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(DISTINCT tenant), COUNT(*) FROM runs WHERE kind = 'scan' AND started_at >= $1",
    )
    .bind(since)
    .fetch_one(pool)
    .await
    .expect("runs");
    let open: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM actions a JOIN runs r ON a.run_id = r.id \
         WHERE r.started_at >= $1 AND a.state <> ALL($2)",
    )
    .bind(since)
    .bind(FINAL)
    .fetch_one(pool)
    .await
    .expect("actions");
    (tenants, runs, open)
}

/// Graph writes each fake received since its requests were cleared.
fn writes(tenants: &[Tenant]) -> (usize, Vec<String>) {
    let mut total = 0;
    let mut twice = Vec::new();
    for t in tenants {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for r in t.fake.requests() {
            let write = matches!(r.method.as_str(), "POST" | "PATCH" | "DELETE" | "PUT");
            if !write || r.path.ends_with("/$batch") || r.path.contains("/oauth2/") {
                continue;
            }
            *seen.entry(format!("{} {}", r.method, r.path)).or_default() += 1;
        }
        total += seen.values().sum::<usize>();
        twice.extend(
            seen.into_iter()
                .filter(|(_, n)| *n > 1)
                .map(|(k, n)| format!("{}: {k} x{n}", t.name)),
        );
    }
    (total, twice)
}

struct Run<'a> {
    rt: &'a tokio::runtime::Runtime,
    pool: &'a sqlx::PgPool,
    ws: &'a std::path::Path,
    tenants: &'a [Tenant],
    size: Size,
    period: u64,
}

impl Run<'_> {
    /// One tick: new scans for every tenant, the cron time, then polls the
    /// store until every tenant has a run and every action is final. With
    /// `kill`, that instance gets SIGKILL once a third of the tenants have run.
    fn tick(&self, n: usize, label: &str, inst: &mut [Instance], kill: Option<usize>) -> Tick {
        for t in self.tenants {
            t.fake.clear_requests();
        }
        // Scans are written between two cron times, so every tenant's new
        // scan is there when the next one fires.
        let fire = next_fire(self.period);
        let scanned_at = now_ts();
        // The tick's runs are those after the new scans exist: activations of
        // the previous cron time still queued (a long tick) may pick them up
        // before this cron time, and that is the daemon doing its job.
        let since = scanned_at.clone();
        let t = Instant::now();
        setup::write_scans(self.ws, self.tenants, self.size, n, &scanned_at);
        let wrote = t.elapsed();
        assert!(
            Utc::now() < fire,
            "writing the scans took {} and passed the cron time: raise the period",
            fmt_dur(wrote)
        );
        println!(
            "tick {n} ({label}): {} scans written in {}; cron fires at {}",
            self.tenants.len(),
            fmt_dur(wrote),
            fire.format("%H:%M:%S")
        );
        sleep_until(fire);
        let started = Instant::now();
        let total = self.tenants.len() as i64;
        let mut killed = None;
        let mut killed_at = None;
        let deadline = Duration::from_secs(if self.size.tenants > 100 { 3600 } else { 600 });
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let (done, runs, open) = self.rt.block_on(progress(self.pool, &since));
            if let Some(k) = kill
                && killed.is_none()
                && done * 3 >= total
            {
                let holder = inst[k].name.clone();
                let held: i64 = self
                    .rt
                    .block_on(
                        sqlx::query_scalar(
                            "SELECT COUNT(*) FROM leases WHERE holder = $1 AND expires_at > $2",
                        )
                        .bind(&holder)
                        .bind(now_ts())
                        .fetch_one(self.pool),
                    )
                    .expect("leases");
                inst[k].signal(libc::SIGKILL);
                if let Some(mut c) = inst[k].child.take() {
                    let _ = c.wait();
                }
                killed_at = Some(Instant::now());
                killed = Some((holder.clone(), runs as usize, held as usize));
                println!(
                    "  SIGKILL {holder} after {} with {runs} runs recorded, holding {held} tenant leases",
                    fmt_dur(started.elapsed())
                );
            }
            if done == total && open == 0 {
                break;
            }
            if started.elapsed() > deadline {
                let logs: Vec<String> = inst
                    .iter()
                    .map(|i| format!("{}:\n{}", i.name, i.log_tail()))
                    .collect();
                panic!(
                    "tick {n} incomplete after {}: {done}/{total} tenants ran, {open} actions open\n{}",
                    fmt_dur(deadline),
                    logs.join("\n")
                );
            }
        }
        let wall = started.elapsed();
        let killed = killed.zip(killed_at.map(|k| k.elapsed()));
        // Let late duplicates (a second run of a tenant) show before counting.
        std::thread::sleep(Duration::from_secs(setup::LEASE_SECS));
        self.measure(label, &since, inst, wall, killed)
    }

    fn measure(
        &self,
        label: &str,
        since: &str,
        inst: &[Instance],
        wall: Duration,
        killed: Option<((String, usize, usize), Duration)>,
    ) -> Tick {
        let pool = self.pool;
        let (per_tenant, split, states, span) = self.rt.block_on(async {
            let per_tenant: Vec<(String, i64)> = sqlx::query_as(
                "SELECT tenant, COUNT(*) FROM runs WHERE kind = 'scan' AND started_at >= $1 GROUP BY tenant",
            )
            .bind(since)
            .fetch_all(pool)
            .await
            .expect("per tenant");
            let split: Vec<(String, i64)> = sqlx::query_as(
                "SELECT actor, COUNT(*) FROM runs WHERE kind = 'scan' AND started_at >= $1 GROUP BY actor ORDER BY actor",
            )
            .bind(since)
            .fetch_all(pool)
            .await
            .expect("split");
            let states: Vec<(String, i64)> = sqlx::query_as(
                "SELECT a.state, COUNT(*) FROM actions a JOIN runs r ON a.run_id = r.id \
                 WHERE r.started_at >= $1 GROUP BY a.state ORDER BY a.state",
            )
            .bind(since)
            .fetch_all(pool)
            .await
            .expect("states");
            let (first, last): (Option<String>, Option<String>) = sqlx::query_as(
                "SELECT (SELECT MIN(started_at) FROM runs WHERE kind = 'scan' AND started_at >= $1), \
                 (SELECT MAX(e.at) FROM events e WHERE e.at >= $1 AND ( \
                    e.run_id IN (SELECT id FROM runs WHERE started_at >= $1) OR \
                    e.action_id IN (SELECT a.id FROM actions a JOIN runs r ON a.run_id = r.id WHERE r.started_at >= $1)))",
            )
            .bind(since)
            .fetch_one(pool)
            .await
            .expect("span");
            let span = match (first, last) {
                (Some(f), Some(l)) => (parse(&l) - parse(&f)).to_std().unwrap_or_default(),
                _ => Duration::ZERO,
            };
            (per_tenant, split, states, span)
        });
        let ran: BTreeMap<String, i64> = per_tenant.into_iter().collect();
        let mut once = (0, 0, 0);
        for t in self.tenants {
            match ran.get(&t.name).copied().unwrap_or(0) {
                0 => once.0 += 1,
                1 => once.1 += 1,
                _ => once.2 += 1,
            }
        }
        let (writes, twice) = writes(self.tenants);
        let hwm = inst
            .iter()
            .filter_map(|i| Some((i.name.clone(), util::proc_mem(i.pid()?)?.1)))
            .collect();
        Tick {
            label: label.into(),
            instances: inst.iter().filter(|i| i.child.is_some()).count()
                + usize::from(killed.is_some()),
            once,
            split: split.into_iter().map(|(a, c)| (a, c as usize)).collect(),
            span,
            wall,
            states: states.into_iter().map(|(s, c)| (s, c as usize)).collect(),
            writes,
            twice,
            killed: killed.map(|((name, runs, held), after)| (name, runs, held, after)),
            hwm,
        }
    }
}

fn print_tick(t: &Tick, expected_writes: usize) {
    let split: Vec<String> = t.split.iter().map(|(a, c)| format!("{a} {c}")).collect();
    let states: Vec<String> = t.states.iter().map(|(s, c)| format!("{s} {c}")).collect();
    println!(
        "  {}: runs per tenant: {} with exactly 1, {} with none, {} with more; split: {}",
        t.label,
        t.once.1,
        t.once.0,
        t.once.2,
        split.join(", ")
    );
    println!(
        "  tick time (first run start to last event) {}, cron to all final (bench polls) {}; actions: {}",
        fmt_dur(t.span),
        fmt_dur(t.wall),
        states.join(", ")
    );
    println!(
        "  Graph writes received {} (expected {expected_writes}), received twice: {}",
        t.writes,
        if t.twice.is_empty() {
            "none".to_string()
        } else {
            t.twice.join("; ")
        }
    );
    if let Some((name, runs, held, after)) = &t.killed {
        println!(
            "  killed {name} with {runs} runs recorded, holding {held} tenant leases; tick complete {} after the kill (lease {} s)",
            fmt_dur(*after),
            setup::LEASE_SECS
        );
    }
    let hwm: Vec<String> = t
        .hwm
        .iter()
        .map(|(n, k)| format!("{n} {}", kib_mib(*k)))
        .collect();
    println!("  VmHWM: {}", hwm.join(", "));
}

pub fn run(ctx: &mut Ctx) {
    let size = Size::new(ctx.quick);
    let period = setup::period_secs(ctx.quick);
    println!(
        "\n== tenants: {} tenants x {} identities on one PostgreSQL store, 3 daemon instances against 1",
        size.tenants, size.identities
    );
    println!(
        "reproduce: cargo bench --bench bench -- tenants   (BENCH_QUICK=1: 50 x 200; BENCH_TENANTS, BENCH_TENANT_IDENTITIES; BENCH_POSTGRES_URL)"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let admin = setup::admin_url();
    let store_url = match rt.block_on(setup::create_database(&admin)) {
        Ok(u) => u,
        Err(e) => {
            println!("tenants: SKIPPED: no PostgreSQL at {admin} ({e}); set BENCH_POSTGRES_URL");
            ctx.summary.push("tenants: SKIPPED (no PostgreSQL)".into());
            return;
        }
    };
    let pool = rt
        .block_on(
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(2)
                .connect(&store_url),
        )
        .expect("pool");
    let ticks = 3;
    let t = Instant::now();
    let tenants = rt.block_on(setup::tenants(size, ticks));
    println!(
        "{} fake tenants started in {}",
        tenants.len(),
        fmt_dur(t.elapsed())
    );
    let ws = ctx.subdir("tenants");
    setup::policies(&ws);
    std::fs::write(ws.join("secret"), setup::SECRET).expect("secret");
    for name in ["i1", "i2", "i3"] {
        std::fs::write(
            ws.join(format!("config-{name}.toml")),
            setup::config(&tenants, &store_url, name, ctx.quick),
        )
        .expect("config");
    }
    println!(
        "work dir {} (store {store_url}); instances: cd {} && {} --config config-i1.toml daemon (and i2, i3); the fakes live in the bench process",
        sh(&ws),
        sh(&ws),
        sh(&setup::daemon_bin())
    );
    let r = Run {
        rt: &rt,
        pool: &pool,
        ws: &ws,
        tenants: &tenants,
        size,
        period,
    };
    let expected = size.tenants * size.risky * 2;
    let mut inst: Vec<Instance> = ["i1", "i2", "i3"]
        .iter()
        .map(|n| Instance::start(&ws, n))
        .collect();
    let three = r.tick(0, "3 instances", &mut inst, None);
    print_tick(&three, expected);
    let kill = r.tick(1, "3 instances, i2 killed mid-tick", &mut inst, Some(1));
    print_tick(&kill, expected);
    for i in &mut inst {
        i.stop();
    }
    drop(inst);
    let mut one_inst = vec![Instance::start(&ws, "i1")];
    let one = r.tick(2, "1 instance", &mut one_inst, None);
    print_tick(&one, expected);
    one_inst[0].stop();

    println!(
        "\n| tick | instances | tenants run exactly once | split of runs | tick time | cron to all final | Graph writes (twice) |"
    );
    println!("|---|---:|---:|---|---:|---:|---:|");
    for t in [&three, &kill, &one] {
        let split: Vec<String> = t
            .split
            .iter()
            .map(|(a, c)| format!("{} {c}", a.trim_start_matches("daemon:")))
            .collect();
        println!(
            "| {} | {} | {}/{} | {} | {} | {} | {} ({}) |",
            t.label,
            t.instances,
            t.once.1,
            size.tenants,
            split.join(", "),
            fmt_dur(t.span),
            fmt_dur(t.wall),
            t.writes,
            t.twice.len()
        );
    }
    let ok = [&three, &kill, &one].iter().all(|t| {
        t.once.1 == size.tenants
            && t.twice.is_empty()
            && t.states.keys().all(|s| FINAL.contains(&s.as_str()))
    });
    let line = format!(
        "tenants: {} x {} identities, 3 instances: tick {} (1 instance: {}, {:.2}x); kill tick {}; exactly once and no write twice: {}",
        size.tenants,
        size.identities,
        fmt_dur(three.span),
        fmt_dur(one.span),
        one.span.as_secs_f64() / three.span.as_secs_f64().max(1e-9),
        fmt_dur(kill.span),
        util::verdict(ok)
    );
    println!("{line}");
    ctx.summary.push(line);
}
