//! Section `daemon`: resident memory of `entra-remediator daemon` when idle and
//! during a run over the largest generated scan, and the time from process
//! start to READY (the systemd `READY=1` notification on a `NOTIFY_SOCKET` the
//! bench binds, and the first 200 from `/readyz`).

use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::planning::config_text;
use crate::util::{self, fmt_dur, kib_mib, median_u64, sh};
use crate::{Ctx, copy_policies};

const TOKEN: &str = "bench-api-token-7f3c2b1a9d8e4f7a";

struct Started {
    child: Child,
    started: Instant,
    notify_ready: Duration,
    readyz: Duration,
}

fn start(ws: &std::path::Path, config: &str, port: Option<u16>, log: &str) -> Started {
    let sock_path = ws.join("notify.sock");
    let _ = std::fs::remove_file(&sock_path);
    let sock = UnixDatagram::bind(&sock_path).expect("bind NOTIFY_SOCKET");
    sock.set_nonblocking(true).expect("nonblocking");
    let started = Instant::now();
    let mut child = Command::new(util::bin())
        .current_dir(ws)
        .env_remove("ENTRA_REMEDIATOR_CONFIG")
        .env("NOTIFY_SOCKET", &sock_path)
        .args(["--config", config, "--log", "info", "daemon"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(ws.join(log)).expect("log"))
        .spawn()
        .expect("spawn daemon");
    let mut notify_ready = None;
    // Without the API there is no /readyz: only READY=1 counts.
    let mut readyz = if port.is_none() {
        Some(Duration::ZERO)
    } else {
        None
    };
    let mut buf = [0u8; 4096];
    while notify_ready.is_none() || readyz.is_none() {
        if notify_ready.is_none()
            && let Ok(k) = sock.recv(&mut buf)
            && String::from_utf8_lossy(&buf[..k])
                .lines()
                .any(|l| l == "READY=1")
        {
            notify_ready = Some(started.elapsed());
        }
        if let Some(port) = port
            && readyz.is_none()
            && util::http(port, "GET", "/readyz", None, None).is_some_and(|r| r.0 == 200)
        {
            readyz = Some(started.elapsed());
        }
        if let Some(s) = child.try_wait().expect("try_wait") {
            panic!(
                "the daemon exited ({s}) before READY: {}",
                std::fs::read_to_string(ws.join(log)).unwrap_or_default()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "daemon not ready after 120 s"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    Started {
        child,
        started,
        notify_ready: notify_ready.expect("ready"),
        readyz: readyz.expect("readyz"),
    }
}

fn sample_rss(pid: u32, count: usize, every: Duration) -> u64 {
    let mut v = Vec::new();
    for _ in 0..count {
        v.push(util::proc_mem(pid).expect("proc status").0);
        std::thread::sleep(every);
    }
    median_u64(v)
}

fn stop(mut s: Started) -> util::ChildStats {
    // SAFETY: kill on our own child's pid.
    unsafe {
        libc::kill(s.child.id() as libc::pid_t, libc::SIGTERM);
    }
    util::reap(&mut s.child, s.started)
}

fn metric(text: &str, prefix: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

pub fn run(ctx: &mut Ctx) {
    let n = ctx.largest();
    println!("\n== daemon: idle memory, memory during a {n}-identity run, start to READY");
    println!("reproduce: cargo bench --bench bench -- daemon");
    let (scan_path, stats) = ctx.scan(n);
    let ws = ctx.subdir("daemon");
    copy_policies(&ws);
    std::fs::create_dir_all(ws.join("scans")).expect("scans");
    let dst = ws.join("scans").join("scan.json");
    if std::fs::hard_link(&scan_path, &dst).is_err() {
        std::fs::copy(&scan_path, &dst).expect("copy scan");
    }
    std::fs::write(ws.join("api-token"), TOKEN).expect("token");
    let port = util::free_port();
    let cfg = config_text(
        "",
        &format!(
            "[daemon]\nschedule = \"0 0 0 1 1 *\"\ncatch_up = false\n[api]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"api-token\"\n"
        ),
    );
    std::fs::write(ws.join("config.toml"), cfg).expect("config");
    println!(
        "reproduce: cd {} && NOTIFY_SOCKET=... {} --config config.toml daemon; then curl -X POST -H 'Authorization: Bearer {TOKEN}' -d '{{\"tenant\":\"bench\"}}' http://127.0.0.1:{port}/v1/runs and watch grep -E 'VmRSS|VmHWM' /proc/PID/status",
        sh(&ws),
        sh(&util::bin())
    );

    // First start: a fresh store (migrations run), then idle, then a run.
    let d = start(&ws, "config.toml", Some(port), "daemon-1.log");
    let pid = d.child.id();
    let (first_ready, first_readyz) = (d.notify_ready, d.readyz);
    println!(
        "start 1 (fresh SQLite store): READY=1 after {}, /readyz 200 after {}",
        fmt_dur(d.notify_ready),
        fmt_dur(d.readyz)
    );
    std::thread::sleep(Duration::from_secs(3));
    let idle = sample_rss(pid, 10, Duration::from_millis(200));
    let (_, idle_hwm) = util::proc_mem(pid).expect("status");
    println!(
        "idle (3-5 s after READY): VmRSS {} (median of 10 samples), VmHWM {}",
        kib_mib(idle),
        kib_mib(idle_hwm)
    );

    let body = r#"{"tenant":"bench"}"#;
    let t = Instant::now();
    let (status, resp) =
        util::http(port, "POST", "/v1/runs", Some(TOKEN), Some(body)).expect("POST /v1/runs");
    assert!(
        (200..300).contains(&status),
        "POST /v1/runs: {status} {resp}"
    );
    let mut peak_sampled = 0u64;
    let mut samples = 0usize;
    let mut last_poll = Instant::now() - Duration::from_secs(1);
    let metrics_text = loop {
        if let Some((rss, _)) = util::proc_mem(pid) {
            peak_sampled = peak_sampled.max(rss);
            samples += 1;
        }
        if last_poll.elapsed() >= Duration::from_millis(250) {
            last_poll = Instant::now();
            if let Some((200, m)) = util::http(port, "GET", "/metrics", Some(TOKEN), None) {
                let ok = metric(
                    &m,
                    "entra_remediator_runs_total{tenant=\"bench\",outcome=\"ok\"}",
                );
                let bad = metric(
                    &m,
                    "entra_remediator_runs_total{tenant=\"bench\",outcome=\"failed\"}",
                ) + metric(
                    &m,
                    "entra_remediator_runs_total{tenant=\"bench\",outcome=\"rejected\"}",
                );
                assert_eq!(
                    bad,
                    0,
                    "the daemon's run failed: {}",
                    std::fs::read_to_string(ws.join("daemon-1.log")).unwrap_or_default()
                );
                if ok >= 1 {
                    break m;
                }
            }
        }
        assert!(t.elapsed() < Duration::from_secs(900), "run did not finish");
        std::thread::sleep(Duration::from_millis(20));
    };
    let run_time = t.elapsed();
    let (_, run_hwm) = util::proc_mem(pid).expect("status");
    let actions = metric(&metrics_text, "entra_remediator_actions_total");
    println!(
        "run over {n} identities ({}): {} from POST /v1/runs to runs_total ok, {} actions recorded (dry-run); VmRSS peak sampled every 20 ms {} ({} samples), VmHWM {} = {:.2}x the scan file",
        util::mib(stats.bytes as u64),
        fmt_dur(run_time),
        actions,
        kib_mib(peak_sampled),
        samples,
        kib_mib(run_hwm),
        (run_hwm * 1024) as f64 / stats.bytes as f64
    );
    std::thread::sleep(Duration::from_secs(3));
    let after = sample_rss(pid, 5, Duration::from_millis(200));
    println!("idle after the run (3-4 s later): VmRSS {}", kib_mib(after));
    let (_, life_hwm) = util::proc_mem(pid).expect("status");
    let s1 = stop(d);
    assert_eq!(s1.code, 0, "daemon exit code");
    println!(
        "SIGTERM: exit code {} (VmHWM over its whole life {})",
        s1.code,
        kib_mib(life_hwm)
    );

    // Two more starts on the now populated store: start-up time and idle memory.
    let mut restarts = Vec::new();
    for k in 2..=3 {
        let d = start(&ws, "config.toml", Some(port), &format!("daemon-{k}.log"));
        let pid = d.child.id();
        std::thread::sleep(Duration::from_secs(2));
        let rss = sample_rss(pid, 5, Duration::from_millis(200));
        println!(
            "start {k} (store with the run's history): READY=1 after {}, /readyz 200 after {}, idle VmRSS {}",
            fmt_dur(d.notify_ready),
            fmt_dur(d.readyz),
            kib_mib(rss)
        );
        restarts.push((d.notify_ready, d.readyz, rss));
        let s = stop(d);
        assert_eq!(s.code, 0, "daemon exit code");
    }

    // The same without the HTTP API: the start-up then has no 200 ms wait for
    // the listener to fail (daemon::run waits that long to catch a bad address).
    let cfg_noapi = config_text(
        "",
        "[daemon]\nschedule = \"0 0 0 1 1 *\"\ncatch_up = false\n",
    );
    std::fs::write(ws.join("config-noapi.toml"), cfg_noapi).expect("config");
    let mut noapi = Vec::new();
    for k in 1..=3 {
        let d = start(
            &ws,
            "config-noapi.toml",
            None,
            &format!("daemon-noapi-{k}.log"),
        );
        noapi.push(d.notify_ready);
        let s = stop(d);
        assert_eq!(s.code, 0, "daemon exit code");
    }
    let noapi_ready = util::median(noapi.clone());
    println!(
        "without the API (config-noapi.toml), 3 starts: READY=1 after {}",
        noapi
            .iter()
            .map(|d| fmt_dur(*d))
            .collect::<Vec<_>>()
            .join(", ")
    );

    println!("\n| measurement | value |");
    println!("|---|---:|");
    println!(
        "| start 1 to READY=1 / to /readyz 200 (fresh store, migrations) | {} / {} |",
        fmt_dur(first_ready),
        fmt_dur(first_readyz)
    );
    println!(
        "| idle VmRSS after start (fresh store) | {} |",
        kib_mib(idle)
    );
    for (k, (r, z, rss)) in restarts.iter().enumerate() {
        println!(
            "| start {} to READY=1 / to /readyz 200 (existing store) | {} / {} |",
            k + 2,
            fmt_dur(*r),
            fmt_dur(*z)
        );
        println!("| idle VmRSS after start {} | {} |", k + 2, kib_mib(*rss));
    }
    println!(
        "| start to READY=1 without the API (median of 3) | {} |",
        fmt_dur(noapi_ready)
    );
    println!(
        "| {n}-identity run: time (POST /v1/runs to runs_total ok) | {} |",
        fmt_dur(run_time)
    );
    println!(
        "| {n}-identity run: peak VmRSS sampled / VmHWM | {} / {} |",
        kib_mib(peak_sampled),
        kib_mib(run_hwm)
    );
    println!("| idle VmRSS after the run | {} |", kib_mib(after));
    let line = format!(
        "daemon: idle VmRSS {} ; {n}-identity run peak {} (VmHWM, {:.2}x the {} scan) in {}; after the run {}; start to READY {} (fresh store), {} (existing store), {} without the API",
        kib_mib(idle),
        kib_mib(run_hwm),
        (run_hwm * 1024) as f64 / stats.bytes as f64,
        util::mib(stats.bytes as u64),
        fmt_dur(run_time),
        kib_mib(after),
        fmt_dur(first_ready),
        fmt_dur(restarts[0].0),
        fmt_dur(noapi_ready)
    );
    println!("{line}");
    ctx.summary.push(line);
}
