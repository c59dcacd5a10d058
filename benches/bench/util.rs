//! Shared helpers: measured child processes (wall time and peak RSS through
//! `wait4`), `/proc` readings, tiny HTTP/1.1 requests, statistics and formatting.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The hidden first argument that turns the bench binary into a parse-only child.
pub const PARSE_ONLY: &str = "--bench-parse-only-child";

/// The release binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_entra-remediator"))
}

/// The repository root (shipped policies).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Wall time, peak RSS and exit code of a child process.
#[derive(Debug, Clone)]
pub struct ChildStats {
    /// From spawn to reaped.
    pub wall: Duration,
    /// `ru_maxrss` of the child, in KiB.
    pub maxrss_kib: u64,
    /// User plus system CPU time of the child (all its threads).
    pub cpu: Duration,
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// What it printed on stdout, when captured.
    pub stdout: String,
    /// What it printed on stderr (through the launcher).
    pub stderr: String,
}

/// Waits for `child` with `wait4`, which also returns its resource usage.
pub fn reap(child: &mut Child, started: Instant) -> ChildStats {
    let pid = child.id() as libc::pid_t;
    let mut stdout = String::new();
    if let Some(mut out) = child.stdout.take() {
        // Read before reaping so that a chatty child never blocks on a full pipe.
        out.read_to_string(&mut stdout).expect("read child stdout");
    }
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data; zeroed is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = loop {
        // SAFETY: pid is our own child, status and ru are valid pointers.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == -1 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        break r;
    };
    let wall = started.elapsed();
    assert_eq!(r, pid, "wait4 failed: {}", std::io::Error::last_os_error());
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    ChildStats {
        wall,
        maxrss_kib: ru.ru_maxrss as u64,
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        code,
        stdout,
        stderr: String::new(),
    }
}

/// The hidden first argument that turns the bench binary into a small launcher:
/// `--bench-measure-child [--null-stdout] PROGRAM ARGS...` runs the program,
/// reaps it with `wait4` and reports its wall time and `ru_maxrss` on stderr.
///
/// Why a launcher: on Linux a child's `ru_maxrss` is the larger of its own peak
/// and the high-water mark of the memory it was started from (exec records the
/// old mm's peak; with vfork that old mm is the parent's). The bench process
/// itself holds parsed scans of hundreds of MiB, so measuring its direct
/// children would report the bench's own peak. The launcher is a fresh process
/// of a few MiB, so what it reports is the child's own peak.
pub const MEASURE: &str = "--bench-measure-child";

const REPORT: &str = "BENCH-MEASURE";

/// The launcher's side: runs `args` (after the optional `--null-stdout`).
pub fn measure_child(args: &[String]) {
    let (null_stdout, args) = match args.first().map(String::as_str) {
        Some("--null-stdout") => (true, &args[1..]),
        _ => (false, args),
    };
    let mut cmd = Command::new(&args[0]);
    cmd.args(&args[1..])
        .stdin(Stdio::null())
        .stdout(if null_stdout {
            Stdio::null()
        } else {
            Stdio::inherit()
        })
        .stderr(Stdio::inherit());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn measured child");
    let s = reap(&mut child, started);
    eprintln!(
        "{REPORT} wall_ns={} cpu_ns={} maxrss_kib={} code={}",
        s.wall.as_nanos(),
        s.cpu.as_nanos(),
        s.maxrss_kib,
        s.code
    );
}

/// Runs `program args` to completion through the launcher (current directory
/// and environment as set on `cmd`), with its stdout discarded, or captured when
/// `capture`; returns its wall time (spawn to reaped, measured by the launcher)
/// and its own peak RSS.
pub fn run_measured(cmd: &mut Command, capture: bool) -> ChildStats {
    let program = cmd.get_program().to_os_string();
    let args: Vec<std::ffi::OsString> = cmd.get_args().map(|a| a.to_os_string()).collect();
    let mut launcher = Command::new(std::env::current_exe().expect("current exe"));
    launcher.arg(MEASURE);
    if !capture {
        launcher.arg("--null-stdout");
    }
    launcher.arg(program).args(args);
    if let Some(dir) = cmd.get_current_dir() {
        launcher.current_dir(dir);
    }
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => launcher.env(k, v),
            None => launcher.env_remove(k),
        };
    }
    let out = launcher
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run launcher");
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.starts_with(REPORT))
        .unwrap_or_else(|| panic!("launcher gave no report: {err}"));
    let field = |name: &str| -> i64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line}"))
    };
    ChildStats {
        wall: Duration::from_nanos(field("wall_ns=") as u64),
        maxrss_kib: field("maxrss_kib=") as u64,
        cpu: Duration::from_nanos(field("cpu_ns=") as u64),
        code: field("code=") as i32,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: err
            .lines()
            .filter(|l| !l.starts_with(REPORT))
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

/// `VmRSS` and `VmHWM` of a process, in KiB.
pub fn proc_mem(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// The parse-only child: reads the file, parses it into a `serde_json::Value`,
/// keeps both alive (as the binary holds the bytes while it parses), prints the
/// in-process parse time in nanoseconds.
pub fn parse_only_child(path: &str) {
    let bytes = std::fs::read(path).expect("read scan");
    let t = Instant::now();
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("parse scan");
    let ns = t.elapsed().as_nanos();
    let n = v["identities"].as_array().map_or(0, Vec::len);
    println!("parse_ns={ns} identities={n} bytes={}", bytes.len());
    std::hint::black_box((&bytes, &v));
}

/// CPU time used so far by the calling thread.
pub fn thread_cpu() -> Duration {
    // SAFETY: timespec is plain old data and the pointer is valid.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: as above; CLOCK_THREAD_CPUTIME_ID is always available on Linux.
    unsafe {
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Median of a non-empty list.
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Median of a non-empty list of integers.
pub fn median_u64(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Seconds with 3 decimals, or milliseconds below one second.
pub fn fmt_dur(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.3} s", d.as_secs_f64())
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    }
}

/// Bytes as MiB with one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// KiB as MiB with one decimal.
pub fn kib_mib(kib: u64) -> String {
    mib(kib * 1024)
}

/// "MET" or "NOT MET".
pub fn verdict(ok: bool) -> &'static str {
    if ok { "MET" } else { "NOT MET" }
}

/// Quotes a path for a shell command line.
pub fn sh(p: &Path) -> String {
    let s = p.display().to_string();
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,".contains(c))
    {
        s
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; a small race is acceptable here).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// One HTTP/1.1 request on a fresh connection; returns the status and body.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    if method != "GET" {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).ok()?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).ok()?;
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// Output of a command, trimmed (for the machine record).
pub fn cmd_out(prog: &str, args: &[&str]) -> String {
    Command::new(prog)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// The load average, to show whether something else ran during a section.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Prints the machine the figures were taken on.
pub fn print_machine() {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown".to_string(), |(_, m)| m.trim().to_string());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    println!("== machine");
    println!("nproc:     {}", cmd_out("nproc", &[]));
    println!("cpu:       {model}");
    println!("memory:    {:.1} GiB", mem_kib as f64 / (1024.0 * 1024.0));
    println!("kernel:    {}", cmd_out("uname", &["-sr"]));
    println!("rustc:     {}", cmd_out("rustc", &["--version"]));
    println!(
        "date:      {}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC")
    );
    let repo_dir = repo().display().to_string();
    let dirty = Command::new("git")
        .args(["-C", &repo_dir, "status", "--porcelain"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().count())
        .unwrap_or(0);
    println!(
        "commit:    {} ({dirty} paths modified or untracked in the working tree; the binary is built from the working tree)",
        cmd_out("git", &["-C", &repo_dir, "rev-parse", "--short", "HEAD"])
    );
    println!("binary:    {}", bin().display());
    println!("loadavg:   {} (1, 5, 15 min) at start", loadavg());
    println!(
        "reproduce: nproc; grep -m1 'model name' /proc/cpuinfo; grep MemTotal /proc/meminfo; rustc --version; date -u"
    );
}
