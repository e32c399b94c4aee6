//! Bench: N concurrent reimage runs (default 1,000) holding N computers
//! through one coordination store, a throwaway PostgreSQL with its default
//! `max_connections = 100`.
//!
//!     cargo build && cargo run --example site_bench [-- RUNS [LEASE_SECS [HOLD_SECS]]]
//!
//! Every run is `reimage load pcK` with a load command that sleeps, so it
//! holds its lease (renewed every quarter lease over short connections) for
//! HOLD_SECS; then every run gets SIGTERM. Prints: time for all to take
//! their computer, the latency of each take (spawn to load command
//! started), peak client connections seen by the server, how often the
//! server refused a connection as full, and how the runs ended.
//!
//! Needs Debian's postgresql (as the tests do). Numbers only, no pass/fail.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime};
use testbed::pg;

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn reimage_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/debug/examples/site_bench -> target/debug/reimage
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("reimage"))
        .expect("target dir");
    assert!(bin.exists(), "build reimage first: cargo build");
    bin
}

fn pct(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i]
}

fn main() {
    let runs = arg(1, 1000) as usize;
    let lease = arg(2, 20);
    let hold = arg(3, 30);
    let pg = pg::Pg::start("bench");
    let dir = std::env::temp_dir().join(format!("reimage-site-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("pids")).expect("bench dir");
    let script = dir.join("load.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ntouch {}/pids/$1\nexec sleep {}\n",
            dir.display(),
            hold * 4
        ),
    )
    .expect("script");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut config = format!(
        r#"state_dir = "{state}"
max_attempts = 1
[coordination]
url = "{url}"
lease = "{lease}s"
host = "bench"
[provisioners.script]
kind = "command"
load = ["{script}", "{{node}}"]
timeout = "1h"
[os.none]
family = "generic"
channel = "none"
steps = []
[images.hold]
os = "none"
provisioner = "script"
"#,
        state = dir.join("state").display(),
        url = pg.url(),
        script = script.display(),
    );
    for i in 1..=runs {
        config.push_str(&format!("[computers.pc{i}]\naddress = \"127.0.0.1\"\n"));
    }
    std::fs::write(dir.join("reimage.toml"), config).expect("config");
    let bin = reimage_bin();
    // The schema first, as an admin would with setup-db.
    let st = Command::new(&bin)
        .arg("--config")
        .arg(dir.join("reimage.toml"))
        .arg("setup-db")
        .env("PGPASSFILE", "/nonexistent")
        .status()
        .expect("setup-db");
    assert!(st.success(), "setup-db failed");

    // Peak client connections, sampled every 10 ms over one connection.
    let peak = Arc::new(AtomicI64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let monitor = {
        let (peak, stop, url) = (peak.clone(), stop.clone(), pg.url());
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("monitor");
            let mut samples = 0u64;
            while !stop.load(Ordering::SeqCst) {
                if let Ok(r) = c.query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'",
                    &[],
                ) {
                    // Less the monitor's own connection.
                    peak.fetch_max(r.get::<_, i64>(0) - 1, Ordering::SeqCst);
                    samples += 1;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            samples
        })
    };

    let t0 = Instant::now();
    let mut children: Vec<(Child, Instant, SystemTime)> = Vec::with_capacity(runs);
    for i in 1..=runs {
        let err = std::fs::File::create(dir.join(format!("err-{i}"))).expect("stderr file");
        let child = Command::new(&bin)
            .arg("--config")
            .arg(dir.join("reimage.toml"))
            .args(["-q", "load", &format!("pc{i}"), "--image", "hold"])
            .env("PGPASSFILE", "/nonexistent")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn reimage");
        children.push((child, Instant::now(), SystemTime::now()));
    }
    let spawned = t0.elapsed();
    // Every run has its computer once its load command has started.
    let pids = dir.join("pids");
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut lat: Vec<Option<Duration>> = vec![None; runs];
    while Instant::now() < deadline && lat.iter().any(Option::is_none) {
        for (i, l) in lat.iter_mut().enumerate() {
            if l.is_none()
                && let Ok(m) = std::fs::metadata(pids.join(format!("pc{}", i + 1)))
                && let Ok(t) = m.modified()
            {
                *l = Some(t.duration_since(children[i].2).unwrap_or_default());
            }
        }
        if children
            .iter_mut()
            .zip(&lat)
            .all(|((c, _, _), l)| l.is_some() || matches!(c.try_wait(), Ok(Some(_))))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let all_held = t0.elapsed();
    let mut took: Vec<Duration> = lat.iter().flatten().copied().collect();
    took.sort();
    let holders = pg.psql("SELECT count(*) FROM reimage_holder WHERE released IS NULL");
    println!(
        "runs: {runs}, lease {lease}s (renewed every {:.1}s), held {hold}s",
        lease as f64 / 4.0
    );
    println!("spawned all in {spawned:.2?}; all holding after {all_held:.2?}");
    println!(
        "take latency (spawn -> load command started): p50 {:.2?}, p90 {:.2?}, p99 {:.2?}, max {:.2?} ({} of {runs} took)",
        pct(&took, 0.5),
        pct(&took, 0.9),
        pct(&took, 0.99),
        pct(&took, 1.0),
        took.len()
    );
    println!("holders in the store: {}", holders.trim());
    let held_from = Instant::now();
    while held_from.elapsed() < Duration::from_secs(hold) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let still =
        pg.psql("SELECT count(*) FROM reimage_holder WHERE expires > now() AND released IS NULL");
    println!("live leases after {hold}s of renewals: {}", still.trim());
    let t1 = Instant::now();
    for (c, _, _) in &children {
        if let Some(pid) = rustix::process::Pid::from_raw(c.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }
    let mut codes = std::collections::BTreeMap::new();
    let mut odd = Vec::new();
    for (i, (c, _, _)) in children.iter_mut().enumerate() {
        let code = c.wait().ok().and_then(|s| s.code()).unwrap_or(-1);
        *codes.entry(code).or_insert(0) += 1;
        if code != 143 {
            odd.push((i + 1, code));
        }
    }
    println!(
        "all ended {:.2?} after SIGTERM; exit codes: {codes:?}",
        t1.elapsed()
    );
    println!(
        "holders left in the store: {}",
        pg.psql("SELECT count(*) FROM reimage_holder WHERE released IS NULL")
            .trim()
    );
    stop.store(true, Ordering::SeqCst);
    let samples = monitor.join().unwrap_or(0);
    let log = pg.server_log();
    println!(
        "peak client connections: {} (max_connections {}; {samples} samples); server refused as full: {} times",
        peak.load(Ordering::SeqCst),
        pg.psql("SHOW max_connections").trim(),
        log.matches("too many clients").count()
    );
    for (i, code) in odd.iter().take(3) {
        let e = std::fs::read_to_string(dir.join(format!("err-{i}"))).unwrap_or_default();
        println!("pc{i} ended {code}: {}", e.trim());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
