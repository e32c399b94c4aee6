//! Benchmark: how soon after a port opens does `reimage post-load` report
//! ready? Opens a port after a random delay, 20 times, and measures from
//! the moment the listener is bound to the moment reimage's JSON step-end
//! event arrives. Also times `reimage --version` and reads the peak RSS of a
//! run. Prints numbers; gates nothing.
//!
//!     cargo build --release && cargo run --release --example bench_ready

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/examples/bench_ready -> target/<profile>/reimage
    let dir = exe.parent().and_then(|p| p.parent()).expect("target dir");
    dir.join("reimage")
}

/// A small xorshift generator seeded from the clock: delays only need to
/// vary, not to be unpredictable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let bin = binary();
    assert!(
        bin.exists(),
        "build reimage first: cargo build --release ({} missing)",
        bin.display()
    );
    let dir = std::env::temp_dir().join(format!("reimage-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    let mut rng = Rng(seed);
    let runs = 20;
    let mut lags = Vec::new();
    for i in 0..runs {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let cfg = dir.join("reimage.toml");
        std::fs::write(
            &cfg,
            format!(
                "state_dir = \"{}\"\n[os.p]\nfamily = \"generic\"\nchannel = \"none\"\nsteps = [{{ wait = \"port\", port = {port}, timeout = \"60s\" }}]\n[images.i]\nos = \"p\"\nprovisioner = \"lab\"\n[computers.c]\naddress = \"127.0.0.1\"\n",
                dir.join("state").display()
            ),
        )
        .expect("config");
        let delay = Duration::from_millis(300 + rng.next() % 2700);
        let mut child = Command::new(&bin)
            .args(["--json", "--config"])
            .arg(&cfg)
            .args(["post-load", "c", "--image", "i"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn reimage");
        std::thread::sleep(delay);
        let l = TcpListener::bind(("127.0.0.1", port)).expect("bind");
        let opened = Instant::now();
        let out = child.stdout.take().expect("stdout");
        let mut seen = None;
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line.contains("\"kind\":\"step-end\"") && line.contains("\"result\":\"ok\"") {
                seen = Some(opened.elapsed());
                break;
            }
        }
        let _ = child.wait();
        drop(l);
        let lag = seen.expect("reimage reported ready");
        eprintln!(
            "run {:2}: port opened after {:>5} ms, ready reported {:>4} ms later",
            i + 1,
            delay.as_millis(),
            lag.as_millis()
        );
        lags.push(lag);
    }
    lags.sort();
    println!(
        "post-load readiness lag over {runs} runs: median {} ms, p95 {} ms, max {} ms",
        pct(&lags, 0.5).as_millis(),
        pct(&lags, 0.95).as_millis(),
        lags.last().map(|d| d.as_millis()).unwrap_or(0)
    );

    let n = 50;
    let t = Instant::now();
    for _ in 0..n {
        let st = Command::new(&bin)
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .expect("version");
        assert!(st.success());
    }
    println!(
        "reimage --version: {:.2} ms per run ({n} runs)",
        t.elapsed().as_secs_f64() * 1000.0 / n as f64
    );

    // Peak RSS of one post-load run (a port that is already open), read
    // with wait4 for that child alone.
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let cfg = dir.join("reimage.toml");
    let text = std::fs::read_to_string(&cfg).expect("config");
    let text = text
        .lines()
        .map(|line| {
            if line.starts_with("steps") {
                format!("steps = [{{ wait = \"port\", port = {port}, timeout = \"60s\" }}]")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&cfg, text).expect("config");
    // Reaped by wait4 below, which std's wait cannot do with rusage.
    #[allow(clippy::zombie_processes)]
    let child = Command::new(&bin)
        .arg("--config")
        .arg(&cfg)
        .args(["post-load", "c", "--image", "i"])
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    // SAFETY: wait4 on our own child with zeroed out-parameters.
    let (status, rss_kib) = unsafe {
        let mut st = 0;
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::wait4(child.id() as libc::pid_t, &mut st, 0, &mut ru);
        (st, ru.ru_maxrss)
    };
    drop(l);
    assert_eq!(status, 0, "post-load did not exit 0");
    println!("peak RSS of a reimage post-load run: {rss_kib} KiB");
    let _ = std::fs::remove_dir_all(&dir);
}
