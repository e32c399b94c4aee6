//! Benchmark: how soon after a computer is ready does each tool notice, and
//! what does waiting cost? Prints numbers and writes them as JSON and a
//! Markdown table; gates nothing. `examples/bench/run.sh` installs what it
//! compares against and runs it:
//!
//!     bash examples/bench/run.sh
//!
//! or, with the tools in place:
//!
//!     cargo build --release --examples
//!     target/release/examples/bench_ready --out DIR --ansible VENV/bin [--guest DIR]
//!
//! Lag is measured from the moment the target became ready (the listener
//! was bound; sshd was spawned) to the moment the tool's process exited
//! saying ready, for every tool alike. Trials are interleaved: each trial
//! runs every tool once against its own fresh target, in a rotating order,
//! with the same random delay (1-4 s after the tool started; for Ansible,
//! after its measured start-up, so its module is already polling).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn die(msg: &str) -> ! {
    eprintln!("bench: {msg}");
    std::process::exit(2)
}

/// target/release/reimage next to target/release/examples/bench_ready.
fn reimage() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| die(&format!("current exe: {e}")));
    let bin = exe
        .parent()
        .and_then(|p| p.parent())
        .map(|d| d.join("reimage"))
        .unwrap_or_else(|| die("no target dir"));
    if !bin.exists() {
        die(&format!(
            "build reimage first: cargo build --release ({} missing)",
            bin.display()
        ));
    }
    bin
}

/// A small xorshift generator: delays only need to vary.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("BENCH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        Rng(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// 1-4 s.
    fn delay(&mut self) -> Duration {
        Duration::from_millis(1000 + self.next() % 3000)
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| die(&format!("no free port: {e}")))
}

/// A port bound but not listening: it refuses connections (RST) until
/// `listen`, and no other socket can take it meanwhile (a free port picked
/// and let go could become the local port of some outgoing connect).
struct Reserved {
    fd: std::os::fd::OwnedFd,
    port: u16,
}

fn reserve() -> Reserved {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let fd = rustix::net::socket_with(
        AddressFamily::INET,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap_or_else(|e| die(&format!("socket: {e}")));
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    rustix::net::bind(&fd, &any).unwrap_or_else(|e| die(&format!("bind 127.0.0.1:0: {e}")));
    let port = rustix::net::getsockname(&fd)
        .ok()
        .and_then(|a| std::net::SocketAddr::try_from(a).ok())
        .map(|a| a.port())
        .unwrap_or_else(|| die("getsockname"));
    Reserved { fd, port }
}

impl Reserved {
    /// Starts listening: from now on the port accepts.
    fn listen(self) -> TcpListener {
        self.listen_with(128)
    }

    /// [`Reserved::listen`] with a backlog of `backlog`.
    fn listen_with(self, backlog: i32) -> TcpListener {
        if let Err(e) = rustix::net::listen(&self.fd, backlog) {
            die(&format!("listen on {}: {e}", self.port));
        }
        TcpListener::from(self.fd)
    }
}

/// A target that drops SYNs, as a host that is off, still booting or
/// firewalled does: a listener with backlog 0 whose queue is full (the
/// kernel then drops further SYNs), and the connections that fill it.
fn silent_target() -> (u16, TcpListener, Vec<std::net::TcpStream>) {
    let r = reserve();
    let port = r.port;
    let l = r.listen_with(0);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let fill: Vec<_> = (0..3)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()
        })
        .collect();
    (port, l, fill)
}

/// `--floor SECS [--port PORT]`: the least any poller at 25 probes a
/// second can cost here: a loop that only sleeps 40 ms at a time, and with
/// PORT one blocking connect to a loopback port nothing listens on after
/// each sleep (refused before `connect` returns), nothing else.
fn floor_loop(secs: u64, refused: Option<u16>) -> ! {
    let addr = refused.map(|p| std::net::SocketAddr::from(([127, 0, 0, 1], p)));
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(40));
        if let Some(a) = addr {
            let _ = std::net::TcpStream::connect(a);
        }
    }
    std::process::exit(0)
}

/// A target being prepared: its port, and what makes it ready (the
/// returned value keeps it so until dropped).
type Target<'a> = (u16, Box<dyn FnOnce() -> Box<dyn std::any::Any> + 'a>);

fn port_target<'a>() -> Target<'a> {
    let r = reserve();
    (r.port, Box::new(move || Box::new(r.listen())))
}

/// How a process ended: exit code, when, and its resource use (its own and
/// its waited-for children's, as wait4 reports it).
#[derive(Debug, Clone, Copy)]
struct Ended {
    code: i32,
    at: Instant,
    cpu: f64,
    rss_kib: i64,
}

/// Waits for `child` on a thread (wait4, for the rusage std cannot give).
fn watch(child: Child) -> mpsc::Receiver<Ended> {
    let (tx, rx) = mpsc::channel();
    let pid = child.id() as libc::pid_t;
    // The Child is forgotten: wait4 below reaps it.
    std::mem::forget(child);
    std::thread::spawn(move || {
        let mut st = 0;
        // SAFETY: all-zero is a valid rusage; wait4 on our own child.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(pid, &mut st, 0, &mut ru) };
        let at = Instant::now();
        let code = if r < 0 {
            -1
        } else if libc::WIFEXITED(st) {
            libc::WEXITSTATUS(st)
        } else {
            128 + libc::WTERMSIG(st)
        };
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        let _ = tx.send(Ended {
            code,
            at,
            cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
            rss_kib: ru.ru_maxrss,
        });
    });
    rx
}

fn spawn(cmd: &mut Command) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| die(&format!("spawn {cmd:?}: {e}")))
}

fn wait_for(rx: &mpsc::Receiver<Ended>, what: &str) -> Ended {
    rx.recv_timeout(Duration::from_secs(180))
        .unwrap_or_else(|_| die(&format!("{what} did not end within 180 s")))
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return f64::NAN;
    }
    s[(((s.len() - 1) as f64) * p).round() as usize]
}

fn median(v: &[f64]) -> f64 {
    pct(v, 0.5)
}

struct Bench {
    dir: PathBuf,
    reimage: PathBuf,
    ansible: Option<PathBuf>,
    key: PathBuf,
    user: String,
}

impl Bench {
    fn ansible(&self) -> Command {
        let bin = self
            .ansible
            .as_ref()
            .map(|d| d.join("ansible"))
            .unwrap_or_default();
        let mut c = Command::new(bin);
        c.env("ANSIBLE_HOST_KEY_CHECKING", "False")
            .env("ANSIBLE_PYTHON_INTERPRETER", "/usr/bin/python3")
            .env("ANSIBLE_LOCALHOST_WARNING", "False")
            .env("ANSIBLE_INVENTORY_UNPARSED_WARNING", "False")
            .env("ANSIBLE_NOCOLOR", "1");
        c
    }

    /// `ansible wait_for` on a port, module defaults (1 s between checks).
    fn ansible_wait_for(&self, port: u16, timeout_s: u32) -> Command {
        let mut c = self.ansible();
        c.args([
            "all",
            "-i",
            "localhost,",
            "-c",
            "local",
            "-m",
            "wait_for",
            "-a",
        ])
        .arg(format!("host=127.0.0.1 port={port} timeout={timeout_s}"));
        c
    }

    /// `ansible wait_for_connection` over SSH, module defaults.
    fn ansible_wait_for_connection(&self, port: u16) -> Command {
        let mut c = self.ansible();
        c.args(["all", "-i", "127.0.0.1,", "-m", "wait_for_connection"])
            .arg("-e")
            .arg(format!("ansible_port={port} ansible_user={}", self.user))
            .arg("--private-key")
            .arg(&self.key)
            .env(
                "ANSIBLE_SSH_ARGS",
                "-o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no",
            );
        c
    }

    fn write_config(&self, name: &str, body: &str) -> PathBuf {
        let p = self.dir.join(name);
        let text = format!(
            "state_dir = \"{}\"\n{body}",
            self.dir.join("state").display()
        );
        std::fs::write(&p, text).unwrap_or_else(|e| die(&format!("{}: {e}", p.display())));
        p
    }

    /// reimage post-load on a generic port profile.
    fn reimage_port(&self, port: u16, timeout: &str) -> Command {
        self.reimage_port_every(port, timeout, None)
    }

    /// [`Bench::reimage_port`] with the OS profile's `probe_interval`.
    fn reimage_port_every(&self, port: u16, timeout: &str, interval: Option<&str>) -> Command {
        let every = interval
            .map(|i| format!("probe_interval = \"{i}\"\n"))
            .unwrap_or_default();
        let cfg = self.write_config(
            &format!("port-{port}.toml"),
            &format!(
                "[os.p]\nfamily = \"generic\"\nchannel = \"none\"\n{every}steps = [{{ wait = \"port\", port = {port}, timeout = \"{timeout}\" }}]\n[images.i]\nos = \"p\"\nprovisioner = \"lab\"\n[computers.c{port}]\naddress = \"127.0.0.1\"\n"
            ),
        );
        let mut c = Command::new(&self.reimage);
        c.arg("--config")
            .arg(cfg)
            .args(["-q", "post-load", &format!("c{port}"), "--image", "i"]);
        c
    }

    /// reimage post-load on a linux profile over SSH: port, banner, login.
    fn reimage_ssh(&self, port: u16, steps: &str) -> Command {
        let cfg = self.write_config(
            &format!("ssh-{port}.toml"),
            &format!(
                "[os.l]\nfamily = \"linux\"\nuser = \"{}\"\nkey_file = \"{}\"\nknown_hosts = \"{}\"\nfirst_boot = false\n{steps}\n[images.i]\nos = \"l\"\nprovisioner = \"lab\"\n[computers.s{port}]\naddress = \"127.0.0.1\"\nport = {port}\n",
                self.user,
                self.key.display(),
                self.dir.join(format!("known_hosts.{port}")).display()
            ),
        );
        let mut c = Command::new(&self.reimage);
        c.arg("--config")
            .arg(cfg)
            .args(["-q", "post-load", &format!("s{port}"), "--image", "i"]);
        c
    }

    fn openssh(&self, port: u16) -> Vec<String> {
        vec![
            "ssh".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "StrictHostKeyChecking=no".into(),
            "-o".into(),
            "UserKnownHostsFile=/dev/null".into(),
            "-o".into(),
            "LogLevel=ERROR".into(),
            "-o".into(),
            "ConnectTimeout=5".into(),
            "-i".into(),
            self.key.display().to_string(),
            "-p".into(),
            port.to_string(),
            format!("{}@127.0.0.1", self.user),
            "true".into(),
        ]
    }

    /// Starts sshd on `port` (returns at once; it listens a few ms later).
    fn sshd(&self, port: u16) -> Child {
        let cfg = self.dir.join(format!("sshd_config.{port}"));
        let text = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPidFile none\nUsePAM no\nStrictModes no\nPermitRootLogin yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPrintMotd no\nLogLevel ERROR\n",
            self.dir.join("host_key").display(),
            self.dir.join("authorized_keys").display()
        );
        std::fs::write(&cfg, text).unwrap_or_else(|e| die(&format!("sshd config: {e}")));
        Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| die(&format!("sshd: {e}")))
    }
}

fn keygen(path: &Path) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .unwrap_or_else(|e| die(&format!("ssh-keygen: {e}")));
    if !st.success() {
        die("ssh-keygen failed");
    }
}

/// One tool in a lag trial: how to start it against `port`, and how long
/// after its start the target is opened on top of the trial's delay.
struct Tool<'a> {
    name: &'static str,
    offset: Duration,
    start: Box<dyn Fn(u16) -> Command + 'a>,
}

/// Runs `tools` interleaved over `trials`, each against a fresh target.
fn lag_trials<'a>(
    rng: &mut Rng,
    trials: usize,
    tools: &[Tool<'_>],
    target: &dyn Fn() -> Target<'a>,
) -> BTreeMap<String, Vec<f64>> {
    let mut out: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for t in 0..trials {
        let delay = rng.delay();
        for i in 0..tools.len() {
            let tool = &tools[(t + i) % tools.len()];
            let (port, open) = target();
            let started = Instant::now();
            let rx = watch(spawn(&mut (tool.start)(port)));
            let open_at = started + tool.offset + delay;
            std::thread::sleep(open_at.saturating_duration_since(Instant::now()));
            if let Ok(e) = rx.try_recv() {
                die(&format!(
                    "{} ended before its target was ready: exit {}",
                    tool.name, e.code
                ));
            }
            let opened = Instant::now();
            let guard = open();
            let e = wait_for(&rx, tool.name);
            drop(guard);
            if e.code != 0 {
                die(&format!(
                    "{} exited {} (trial {})",
                    tool.name,
                    e.code,
                    t + 1
                ));
            }
            let lag = e.at.duration_since(opened).as_secs_f64() * 1000.0;
            eprintln!(
                "trial {:2} {:28} target ready after {:>5} ms, seen {:>7.1} ms later",
                t + 1,
                tool.name,
                (tool.offset + delay).as_millis(),
                lag
            );
            out.entry(tool.name.to_string()).or_default().push(lag);
        }
    }
    out
}

/// Median wall time of `n` runs of `cmd` (exit 0 required).
fn time_runs(n: usize, what: &str, mut cmd: impl FnMut() -> Command) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            let e = wait_for(&watch(spawn(&mut cmd())), what);
            if e.code != 0 {
                die(&format!("{what} exited {}", e.code));
            }
            e.at.duration_since(t).as_secs_f64() * 1000.0
        })
        .collect()
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// The slower probe rate measured beside the default (5 probes a second).
const SLOW_INTERVAL: &str = "200ms";
const SLOW_PORT: &str = "reimage (port, probe_interval 200ms)";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(secs) = arg(&args, "--floor").and_then(|s| s.parse().ok()) {
        floor_loop(secs, arg(&args, "--port").and_then(|s| s.parse().ok()));
    }
    let trials: usize = arg(&args, "--trials")
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let concurrent: usize = arg(&args, "--concurrent")
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let cost_secs: u64 = arg(&args, "--cost-secs")
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let out = PathBuf::from(arg(&args, "--out").unwrap_or_else(|| "bench-out".into()));
    let ansible = arg(&args, "--ansible").map(PathBuf::from);
    let guest = arg(&args, "--guest").map(PathBuf::from);
    let dir = std::env::temp_dir().join(format!("reimage-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| die(&format!("{}: {e}", dir.display())));
    std::fs::create_dir_all(&out).unwrap_or_else(|e| die(&format!("{}: {e}", out.display())));
    std::fs::create_dir_all("/run/sshd").unwrap_or_else(|e| die(&format!("/run/sshd: {e}")));
    keygen(&dir.join("host_key"));
    keygen(&dir.join("client"));
    let _ = std::fs::copy(dir.join("client.pub"), dir.join("authorized_keys"));
    let user = String::from_utf8_lossy(
        &Command::new("id")
            .arg("-un")
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default(),
    )
    .trim()
    .to_string();
    let b = Bench {
        key: dir.join("client"),
        dir: dir.clone(),
        reimage: reimage(),
        ansible: ansible.clone(),
        user,
    };
    let mut results = serde_json::Map::new();
    results.insert("trials".into(), trials.into());
    let has_ansible = ansible.as_ref().is_some_and(|d| d.join("ansible").exists());
    if !has_ansible {
        eprintln!("bench: no --ansible VENV/bin with ansible in it: the Ansible rows are left out");
    }

    // Ansible's start-up: wait_for against a port already open, and
    // wait_for_connection against an sshd already up.
    let (mut ansible_port_startup, mut ansible_ssh_startup) = (0.0, 0.0);
    if has_ansible {
        let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| die(&format!("bind: {e}")));
        let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
        let v = time_runs(5, "ansible wait_for (open port)", || {
            b.ansible_wait_for(port, 60)
        });
        ansible_port_startup = median(&v);
        drop(l);
        let sp = free_port();
        let _sshd = Killed(b.sshd(sp));
        std::thread::sleep(Duration::from_millis(300));
        let v = time_runs(5, "ansible wait_for_connection (sshd up)", || {
            b.ansible_wait_for_connection(sp)
        });
        ansible_ssh_startup = median(&v);
        eprintln!(
            "ansible start-up: wait_for {ansible_port_startup:.0} ms, wait_for_connection {ansible_ssh_startup:.0} ms"
        );
        results.insert(
            "ansible_startup_ms".into(),
            serde_json::json!({"wait_for": ansible_port_startup, "wait_for_connection": ansible_ssh_startup}),
        );
    }

    // SSH login cost on an sshd that is up: reimage (a login step alone,
    // the whole process) against OpenSSH's client running `true`.
    {
        let sp = free_port();
        let _sshd = Killed(b.sshd(sp));
        std::thread::sleep(Duration::from_millis(300));
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        for _ in 0..trials {
            ours.extend(time_runs(1, "reimage login", || {
                b.reimage_ssh(sp, "steps = [{ wait = \"login\", timeout = \"30s\" }]")
            }));
            let argv = b.openssh(sp);
            theirs.extend(time_runs(1, "ssh true", || {
                let mut c = Command::new(&argv[0]);
                c.args(&argv[1..]);
                c
            }));
        }
        eprintln!(
            "login on an sshd that is up: reimage {:.0} ms, OpenSSH ssh {:.0} ms (medians)",
            median(&ours),
            median(&theirs)
        );
        results.insert(
            "login_ms".into(),
            serde_json::json!({"reimage": ours, "openssh": theirs}),
        );
    }

    // Port target: it refuses until it listens.
    let mut port_tools = vec![
        Tool {
            name: "reimage (port)",
            offset: Duration::ZERO,
            start: Box::new(|p| b.reimage_port(p, "60s")),
        },
        Tool {
            name: SLOW_PORT,
            offset: Duration::ZERO,
            start: Box::new(|p| b.reimage_port_every(p, "60s", Some(SLOW_INTERVAL))),
        },
        Tool {
            name: "shell loop, nc -z every 1 s",
            offset: Duration::ZERO,
            start: Box::new(|p| {
                let mut c = Command::new("bash");
                c.arg("-c").arg(format!(
                    "until nc -z 127.0.0.1 {p} 2>/dev/null; do sleep 1; done"
                ));
                c
            }),
        },
    ];
    if has_ansible {
        port_tools.push(Tool {
            name: "ansible wait_for",
            offset: Duration::from_secs_f64(ansible_port_startup / 1000.0),
            start: Box::new(|p| b.ansible_wait_for(p, 60)),
        });
    }
    let mut rng = Rng::new();
    let port_lags = lag_trials(&mut rng, trials, &port_tools, &port_target);
    drop(port_tools);
    results.insert(
        "port_lags_ms".into(),
        serde_json::to_value(&port_lags).unwrap_or_default(),
    );
    save(&out, &results);

    // SSH target: sshd starts after the delay; ready = logged in.
    let mut ssh_tools = vec![
        Tool {
            name: "reimage (linux, ssh login)",
            offset: Duration::ZERO,
            start: Box::new(|p| {
                b.reimage_ssh(
                    p,
                    "connect_timeout = \"5s\"\ntimeouts = { port = \"60s\", banner = \"60s\", login = \"60s\" }",
                )
            }),
        },
        Tool {
            name: "shell loop, ssh every 1 s",
            offset: Duration::ZERO,
            start: Box::new(|p| {
                let argv = b.openssh(p).join(" ");
                let mut c = Command::new("bash");
                c.arg("-c")
                    .arg(format!("until {argv} 2>/dev/null; do sleep 1; done"));
                c
            }),
        },
    ];
    if has_ansible {
        ssh_tools.push(Tool {
            name: "ansible wait_for_connection",
            offset: Duration::from_secs_f64(ansible_ssh_startup / 1000.0),
            start: Box::new(|p| b.ansible_wait_for_connection(p)),
        });
    }
    let bref = &b;
    let sshd_target = move || -> Target<'_> {
        let p = free_port();
        (
            p,
            Box::new(move || Box::new(Killed(bref.sshd(p))) as Box<dyn std::any::Any>),
        )
    };
    let mut ssh_delays = Vec::new();
    let mut ssh_lags = {
        // Same seed sequence as the trials: record the delays for VCL.
        let mut r = Rng(rng.0);
        for _ in 0..trials {
            ssh_delays.push(r.delay());
        }
        lag_trials(&mut rng, trials, &ssh_tools, &sshd_target)
    };
    drop(ssh_tools);
    // Apache VCL's pattern, computed, not run: an SSH try every 15 s from
    // the start; the first try after the target is ready logs in, costing
    // what OpenSSH's login costs here.
    let ssh_login = results
        .get("login_ms")
        .and_then(|v| v["openssh"].as_array())
        .map(|a| a.iter().filter_map(|x| x.as_f64()).collect::<Vec<_>>())
        .map(|v| median(&v))
        .unwrap_or(0.0);
    let vcl: Vec<f64> = ssh_delays
        .iter()
        .map(|d| {
            let d = d.as_secs_f64() * 1000.0;
            (d / 15000.0).ceil() * 15000.0 - d + ssh_login
        })
        .collect();
    ssh_lags.insert("VCL, ssh every 15 s (computed)".into(), vcl);
    results.insert(
        "ssh_lags_ms".into(),
        serde_json::to_value(&ssh_lags).unwrap_or_default(),
    );
    save(&out, &results);

    // Waiting cost over `cost_secs` against a port that never opens: one
    // tool at a time (each its own target), so that no tool's load changes
    // what another's wake-ups cost.
    let mut cost = serde_json::Map::new();
    {
        let secs = cost_secs.to_string();
        let timeout = format!("{secs}s");
        let (silent_port, _silent, _fill) = silent_target();
        let exe = std::env::current_exe().unwrap_or_else(|e| die(&format!("current exe: {e}")));
        type Start<'a> = Box<dyn Fn() -> Command + 'a>;
        let mut runs: Vec<(&str, &str, Start<'_>)> = vec![
            (
                "reimage (port)",
                "refuses",
                Box::new(|| b.reimage_port(free_port(), &timeout)),
            ),
            (
                SLOW_PORT,
                "refuses",
                Box::new(|| b.reimage_port_every(free_port(), &timeout, Some(SLOW_INTERVAL))),
            ),
            (
                "reimage (port)",
                "silent",
                Box::new(|| b.reimage_port(silent_port, &timeout)),
            ),
            (
                "floor: a loop that only sleeps 40 ms at a time",
                "none",
                Box::new(|| {
                    let mut c = Command::new(&exe);
                    c.args(["--floor", &secs]);
                    c
                }),
            ),
            (
                "floor: sleep 40 ms, one refused connect, repeat",
                "refuses",
                Box::new(|| {
                    let mut c = Command::new(&exe);
                    c.args(["--floor", &secs, "--port", &free_port().to_string()]);
                    c
                }),
            ),
            (
                "shell loop, nc -z every 1 s",
                "refuses",
                Box::new(|| {
                    let mut c = Command::new("timeout");
                    c.arg(&secs).arg("bash").arg("-c").arg(format!(
                        "until nc -z 127.0.0.1 {} 2>/dev/null; do sleep 1; done",
                        free_port()
                    ));
                    c
                }),
            ),
        ];
        if has_ansible {
            runs.push((
                "ansible wait_for",
                "refuses",
                Box::new(|| b.ansible_wait_for(free_port(), cost_secs as u32)),
            ));
        }
        for (name, target, start) in runs {
            eprintln!("waiting {cost_secs} s: {name}, target {target} ...");
            let rx = watch(spawn(&mut start()));
            let e = wait_for(&rx, name);
            eprintln!(
                "waiting {cost_secs} s: {name}, target {target}: {:.3} CPU-s, peak RSS {} KiB",
                e.cpu, e.rss_kib
            );
            cost.insert(
                format!("{name} / {target}"),
                serde_json::json!({"tool": name, "target": target, "cpu_s": e.cpu, "rss_kib": e.rss_kib, "secs": cost_secs}),
            );
        }
    }

    results.insert("cost".into(), serde_json::Value::Object(cost.clone()));
    save(&out, &results);

    // `concurrent` post-load runs at once, each its own computer and port.
    let conc = if concurrent > 0 {
        let mut ports = Vec::new();
        let mut rxs = Vec::new();
        let mut opens = Vec::new();
        let t0 = Instant::now();
        for _ in 0..concurrent {
            let r = reserve();
            let started = Instant::now();
            rxs.push(watch(spawn(&mut b.reimage_port(r.port, "120s"))));
            opens.push(started + rng.delay());
            ports.push(Some(r));
        }
        let spawned = t0.elapsed();
        let mut order: Vec<usize> = (0..concurrent).collect();
        order.sort_by_key(|&i| opens[i]);
        let mut opened = vec![t0; concurrent];
        let mut listeners = Vec::new();
        for i in order {
            std::thread::sleep(opens[i].saturating_duration_since(Instant::now()));
            opened[i] = Instant::now();
            if let Some(r) = ports[i].take() {
                listeners.push(r.listen());
            }
        }
        let mut lags = Vec::new();
        let (mut ok, mut cpu, mut rss_sum, mut rss_max) = (0, 0.0, 0i64, 0i64);
        for (i, rx) in rxs.iter().enumerate() {
            let e = wait_for(rx, "concurrent post-load");
            if e.code == 0 {
                ok += 1;
            }
            cpu += e.cpu;
            rss_sum += e.rss_kib;
            rss_max = rss_max.max(e.rss_kib);
            lags.push(e.at.saturating_duration_since(opened[i]).as_secs_f64() * 1000.0);
        }
        drop(listeners);
        eprintln!(
            "{concurrent} concurrent: {ok} ready, lag median {:.1} ms p95 {:.1} ms max {:.1} ms, {cpu:.2} CPU-s in all, peak RSS {rss_max} KiB each ({rss_sum} KiB summed), spawned in {} ms",
            median(&lags),
            pct(&lags, 0.95),
            pct(&lags, 1.0),
            spawned.as_millis()
        );
        Some(serde_json::json!({
            "n": concurrent, "ok": ok, "lags_ms": lags, "cpu_s": cpu,
            "rss_kib_max": rss_max, "rss_kib_sum": rss_sum,
        }))
    } else {
        None
    };

    if let Some(c) = &conc {
        results.insert("concurrent".into(), c.clone());
        save(&out, &results);
    }

    // --reuse against a full provision on the tiny QEMU guest.
    let reuse = guest.map(|g| reuse_bench(&b, &g));

    results.insert("trials".into(), trials.into());
    results.insert(
        "port_lags_ms".into(),
        serde_json::to_value(&port_lags).unwrap_or_default(),
    );
    results.insert(
        "ssh_lags_ms".into(),
        serde_json::to_value(&ssh_lags).unwrap_or_default(),
    );
    results.insert("cost".into(), serde_json::Value::Object(cost.clone()));
    if let Some(c) = &conc {
        results.insert("concurrent".into(), c.clone());
    }
    if let Some(r) = &reuse {
        results.insert("reuse".into(), r.clone());
    }
    let json = serde_json::Value::Object(results);
    let path = out.join("results.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&json).unwrap_or_default(),
    )
    .unwrap_or_else(|e| die(&format!("{}: {e}", path.display())));
    let table = table(&json, &port_lags, &ssh_lags);
    let tpath = out.join("table.md");
    std::fs::write(&tpath, &table).unwrap_or_else(|e| die(&format!("{}: {e}", tpath.display())));
    print!("{table}");
    let _ = std::io::stdout().flush();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes what is measured so far (after every part: a later part that
/// fails keeps the earlier ones).
fn save(out: &Path, results: &serde_json::Map<String, serde_json::Value>) {
    let path = out.join("results.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(results).unwrap_or_default(),
    )
    .unwrap_or_else(|e| die(&format!("{}: {e}", path.display())));
}

/// Times a full provision (a preload: no reservation) and a `--reuse`
/// provision for a reservation right after it, three times each.
fn reuse_bench(b: &Bench, g: &Path) -> serde_json::Value {
    let port = free_port();
    let cfg = b.write_config(
        "guest.toml",
        &format!(
            r#"max_attempts = 2
[os.tiny]
family = "linux"
# The tiny guest's busybox has no chpasswd: root keeps its key-only login.
fresh_password = false
key_file = "{g}/id_ed25519"
known_hosts = "{kh}"
connect_timeout = "3s"
timeouts = {{ port = "3m", banner = "2m", login = "2m" }}
[images.tiny]
os = "tiny"
provisioner = "qemu"
virtual = true
source = "{g}/base.qcow2"
kernel = "{g}/vmlinux"
initrd = "{g}/initramfs.cpio.gz"
cmdline = "console=ttyS0 quiet reimage.attempt={{attempt}}"
image_check = {{ command = ["cat", "/etc/reimage-image"], expect = "^tiny-linux" }}
[computers.vm]
address = "127.0.0.1"
port = {port}
"#,
            g = g.display(),
            kh = b.dir.join("known_hosts.guest").display()
        ),
    );
    let run = |extra: &[&str]| {
        let mut c = Command::new(&b.reimage);
        c.arg("--config")
            .arg(&cfg)
            .args(["-q", "provision", "vm", "--image", "tiny"])
            .args(extra);
        let t = Instant::now();
        let e = wait_for(&watch(spawn(&mut c)), "provision on the tiny guest");
        (e.code, e.at.duration_since(t).as_secs_f64())
    };
    // Stops the VM the runs leave running (also before giving up).
    let stop_vm = || {
        let pidfile = b.dir.join("state/qemu/vm/qemu.pid");
        if let Some(pid) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    };
    let (mut full, mut reused) = (Vec::new(), Vec::new());
    for i in 0..3 {
        let (code, s) = run(&[]);
        if code != 0 {
            stop_vm();
            die(&format!("full provision on the tiny guest exited {code}"));
        }
        full.push(s);
        let r = format!("r{i}");
        let (code, s) = run(&["--reservation", &r, "--reuse"]);
        if code != 0 {
            stop_vm();
            die(&format!(
                "--reuse provision on the tiny guest exited {code}"
            ));
        }
        reused.push(s);
        eprintln!(
            "tiny guest: full provision {s0:.1} s, --reuse {s:.1} s",
            s0 = full[i]
        );
    }
    stop_vm();
    let accel = std::fs::read_to_string(b.dir.join("state/computers/vm/events.jsonl"))
        .ok()
        .and_then(|t| {
            t.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter_map(|e| e["message"].as_str().map(String::from))
                .find(|m| m.starts_with("accelerator: "))
        })
        .unwrap_or_default();
    serde_json::json!({"full_s": full, "reuse_s": reused, "accelerator": accel})
}

fn table(
    json: &serde_json::Value,
    port: &BTreeMap<String, Vec<f64>>,
    ssh: &BTreeMap<String, Vec<f64>>,
) -> String {
    let mut s = String::new();
    let trials = json["trials"].as_u64().unwrap_or(0);
    s.push_str(&format!(
        "Lag from ready to noticed, {trials} interleaved trials (target ready 1-4 s after the tool started):\n\n"
    ));
    s.push_str("| target | tool | median | p95 | max | median vs reimage |\n|---|---|---:|---:|---:|---:|\n");
    for (target, rows, ours) in [
        ("port (refuses until it listens)", port, "reimage (port)"),
        ("sshd (login)", ssh, "reimage (linux, ssh login)"),
    ] {
        let base = rows.get(ours).map(|v| median(v)).unwrap_or(f64::NAN);
        let mut names: Vec<&String> = rows.keys().collect();
        names.sort_by(|a, b| median(&rows[*a]).total_cmp(&median(&rows[*b])));
        for n in names {
            let v = &rows[n];
            s.push_str(&format!(
                "| {target} | {n} | {:.0} ms | {:.0} ms | {:.0} ms | {:.1}x |\n",
                median(v),
                pct(v, 0.95),
                pct(v, 1.0),
                median(v) / base
            ));
        }
    }
    if let Some(a) = json.get("ansible_startup_ms") {
        s.push_str(&format!(
            "\nAnsible start-up (a run against a target already ready): wait_for {:.0} ms, wait_for_connection {:.0} ms; its trials open the target that much later, so the lag above is its polling and exit alone.\n",
            a["wait_for"].as_f64().unwrap_or(0.0),
            a["wait_for_connection"].as_f64().unwrap_or(0.0)
        ));
    }
    let l = &json["login_ms"];
    let m = |k: &str| {
        l[k].as_array()
            .map(|a| median(&a.iter().filter_map(|x| x.as_f64()).collect::<Vec<_>>()))
            .unwrap_or(f64::NAN)
    };
    s.push_str(&format!(
        "\nSSH login on an sshd that is up (whole process, median): reimage {:.0} ms, OpenSSH `ssh ... true` {:.0} ms.\n",
        m("reimage"),
        m("openssh")
    ));
    s.push_str("\nWaiting cost against a port that never opens (refuses: the OS is up, the service not yet; silent: the host drops packets, as one still off or booting does):\n\n| tool | target | CPU-s per minute | peak RSS |\n|---|---|---:|---:|\n");
    if let Some(c) = json["cost"].as_object() {
        let mut rows: Vec<(&String, &serde_json::Value)> = c.iter().collect();
        rows.sort_by_key(|(n, v)| {
            (
                !n.starts_with("reimage"),
                v["target"].as_str() != Some("refuses"),
            )
        });
        for (n, v) in rows {
            let secs = v["secs"].as_f64().unwrap_or(60.0);
            let tool = v["tool"].as_str().unwrap_or(n);
            let target = v["target"].as_str().unwrap_or("refuses");
            s.push_str(&format!(
                "| {tool} | {target} | {:.3} | {:.1} MB |\n",
                v["cpu_s"].as_f64().unwrap_or(0.0) * 60.0 / secs,
                v["rss_kib"].as_f64().unwrap_or(0.0) / 1024.0
            ));
        }
    }
    if let Some(c) = json.get("concurrent") {
        let lags: Vec<f64> = c["lags_ms"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
            .unwrap_or_default();
        s.push_str(&format!(
            "\n{} concurrent `post-load` runs (port profile, one computer each): {} ready; lag median {:.0} ms, p95 {:.0} ms, max {:.0} ms; {:.2} CPU-s in all; peak RSS {:.1} MB per run.\n",
            c["n"], c["ok"], median(&lags), pct(&lags, 0.95), pct(&lags, 1.0),
            c["cpu_s"].as_f64().unwrap_or(0.0),
            c["rss_kib_max"].as_f64().unwrap_or(0.0) / 1024.0
        ));
    }
    if let Some(r) = json.get("reuse") {
        let v = |k: &str| -> Vec<f64> {
            r[k].as_array()
                .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
                .unwrap_or_default()
        };
        s.push_str(&format!(
            "\nTiny QEMU guest ({}): full provision median {:.1} s, `--reuse` provision median {:.1} s (3 each).\n",
            r["accelerator"].as_str().unwrap_or(""),
            median(&v("full_s")),
            median(&v("reuse_s"))
        ));
    }
    s
}
