//! Slurm's power saving, end to end, against Debian's real slurmctld and
//! munged: slurmctld runs examples/slurm's ResumeProgram and SuspendProgram,
//! which run reimage, which loads QEMU guests whose slurmd registers back.
//!
//! Everything of Slurm's on the host runs in a network namespace of the
//! test's own: its loopback also carries 10.0.2.2, the address QEMU's user
//! networking gives the host inside a guest, so one slurm.conf serves
//! slurmctld, the test's sbatch and scontrol, and the guests' slurmd
//! (configless, `--conf-server 10.0.2.2:6817`); slurmctld reaches each
//! slurmd through its QEMU's forwarded port on 127.0.0.1, and the fixed
//! ports clash with nothing outside. munged runs on the host with a
//! throwaway key; the guests get that key from their image's post-load
//! script, never from the image.
//!
//! Three nodes, State=CLOUD (22.05 starts only those powered down):
//! - node2, the tiny guest with slurmd copied in (examples/slurm/tiny-node.sh),
//!   image from DEFAULT_IMAGE: its job runs, and the time from sbatch to
//!   the job's first line is the pipeline's floor;
//! - node1, the Debian guest (its own slurmd package), image from its
//!   feature image:debian-slurm: the same on a real distribution;
//! - node3, the tiny guest with no SSH server on any attempt: reimage gives
//!   up after two attempts, and the ResumeProgram sets the node DOWN with
//!   reimage's reason, which stays after it is powered down.
//!
//! After SuspendTime the SuspendProgram powers the idle nodes (and the DOWN
//! one) off with `reimage power-off`, and Slurm shows them POWERED_DOWN.

use crate::common::{Scratch, bin, eventually, one_vm_at_a_time, repo};
use crate::test::{Output, run};
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// slurmctld's port, on every address of the namespace.
const SLURMCTLD_PORT: u16 = 6817;
/// Where the jobs send their output: 10.0.2.2 in a guest, 127.0.0.1 in
/// the namespace.
const JOB_PORT: u16 = 7000;
/// The images' `post_load_timeout`, which `reimage check` does not print.
const POST_LOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// One node: its name, its Slurm feature, the ports QEMU forwards (SSH,
/// slurmd).
struct Node {
    name: &'static str,
    feature: &'static str,
    ssh: u16,
    slurmd: u16,
}

const NODES: [Node; 3] = [
    Node {
        name: "node1",
        feature: " Feature=image:debian-slurm",
        ssh: 2201,
        slurmd: 6821,
    },
    Node {
        name: "node2",
        feature: "",
        ssh: 2202,
        slurmd: 6822,
    },
    Node {
        name: "node3",
        feature: " Feature=image:tiny-broken",
        ssh: 2203,
        slurmd: 6823,
    },
];

/// Runs a guest build script (it caches its output) and returns its
/// output directory, the last line it prints.
fn build(script: &str, dir_var: &str, default: &str) -> PathBuf {
    let dir = std::env::var_os(dir_var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    let t = Instant::now();
    let r = run(
        Command::new("bash").arg(repo(script)).arg(&dir),
        Duration::from_secs(1200),
    );
    assert_eq!(r.code, 0, "{script}: {}", r.stderr);
    eprintln!("{script}: ready after {:?} (build or cache)", t.elapsed());
    PathBuf::from(r.stdout.lines().last().unwrap_or_default())
}

/// A network namespace held by a `sleep` of ours, with 127.0.0.1 and
/// 10.0.2.2 on its loopback. Dropping it kills every process in it (all of
/// them the test's: slurmctld, the programs it ran, reimage, QEMU).
struct Netns {
    holder: Child,
    id: String,
}

impl Netns {
    fn new() -> Netns {
        let mut holder = Command::new("unshare")
            .args(["--net", "--", "sh", "-c"])
            .arg("ip link set lo up && ip addr add 10.0.2.2/32 dev lo && echo ready && exec sleep infinity")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("unshare --net (the test runs as root, as .ci/run does)");
        let out = holder.stdout.take().expect("stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let ready = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        if ready.trim() != "ready" {
            let _ = holder.kill();
            let mut err = String::new();
            if let Some(mut e) = holder.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("the network namespace did not come up: {err}");
        }
        let id = std::fs::read_link(format!("/proc/{}/ns/net", holder.id()))
            .expect("the namespace's id")
            .display()
            .to_string();
        Netns { holder, id }
    }

    fn path(&self) -> String {
        format!("/proc/{}/ns/net", self.holder.id())
    }

    /// `prog` to be run inside the namespace.
    fn cmd(&self, prog: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path())).arg("--").arg(prog);
        c
    }

    /// A listener on 127.0.0.1:`port` inside the namespace: a thread moves
    /// into it (setns(2)) and binds; the socket stays there.
    fn listen(&self, port: u16) -> TcpListener {
        let ns = std::fs::File::open(self.path()).expect("open the namespace");
        std::thread::spawn(move || {
            rustix::thread::move_into_link_name_space(
                ns.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .expect("setns into the test's namespace");
            TcpListener::bind(("127.0.0.1", port)).expect("bind in the namespace")
        })
        .join()
        .expect("the listener thread")
    }

    /// Every process in the namespace but its holder.
    fn processes(&self) -> Vec<i32> {
        let me = self.holder.id() as i32;
        let mut v = Vec::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let ns = std::fs::read_link(e.path().join("ns/net"));
            if pid != me && ns.is_ok_and(|l| l.display().to_string() == self.id) {
                v.push(pid);
            }
        }
        v
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for _ in 0..3 {
            for pid in self.processes() {
                if let Some(p) = rustix::process::Pid::from_raw(pid) {
                    let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// A daemon of the test's, killed on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A syslog socket for the programs' logger(1) (LOG_SOCKET), collecting
/// what they log.
struct Syslog {
    lines: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Syslog {
    fn new(path: &Path) -> Syslog {
        let sock = UnixDatagram::bind(path).expect("bind the syslog socket");
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s) = (lines.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while !s.load(Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    let line = String::from_utf8_lossy(&buf[..n]).trim().to_string();
                    eprintln!("syslog: {line}");
                    l.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                }
            }
        });
        Syslog { lines, stop }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn has(&self, text: &str) -> bool {
        self.lines().iter().any(|l| l.contains(text))
    }
}

impl Drop for Syslog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The first line each connection to the job port sends, with when it
/// came: the jobs send their output file there.
fn job_lines(l: TcpListener) -> Receiver<(Instant, String)> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(c) = conn else { continue };
            let _ = c.set_read_timeout(Some(Duration::from_secs(60)));
            let mut line = String::new();
            let _ = BufReader::new(c).read_line(&mut line);
            if tx.send((Instant::now(), line.trim().to_string())).is_err() {
                return;
            }
        }
    });
    rx
}

/// A Slurm cluster of the test's: munged with a throwaway key, slurmctld
/// in a namespace of its own, examples/slurm's programs logging to a
/// syslog socket of the test's. The fields drop in order: slurmctld,
/// everything else in the namespace (the programs, reimage, QEMU), munged.
struct Cluster<'a> {
    ctld: Daemon,
    ns: Netns,
    _munged: Daemon,
    syslog: Syslog,
    s: &'a Scratch,
    conf: PathBuf,
    /// The MUNGE key, base64, for the guests' post-load scripts.
    key: String,
    /// Guests to look into when something failed (name, SSH port), with
    /// the keys that log in to them.
    guests: Vec<(&'static str, u16)>,
    keys: Vec<PathBuf>,
}

impl<'a> Cluster<'a> {
    /// Starts a cluster in `s`. slurm.conf: the cluster's lines, the power
    /// saving lines of examples/slurm/slurm.conf (shorter times,
    /// ResumeTimeout `resume_timeout`), then `nodes` (the NodeName and
    /// PartitionName lines). reimage-slurm.conf: the
    /// built reimage, `s`'s reimage.toml, the syslog socket, then
    /// `settings`.
    fn start(s: &'a Scratch, nodes: &str, resume_timeout: u64, settings: &str) -> Cluster<'a> {
        use std::os::unix::fs::PermissionsExt;
        // munged checks every directory above its socket.
        std::fs::set_permissions(&s.dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::create_dir_all(s.path("munge")).expect("munge dir");
        let key = s.path("munge/munge.key");
        let r = run(
            Command::new("mungekey").arg("-c").arg("-k").arg(&key),
            Duration::from_secs(30),
        );
        assert_eq!(r.code, 0, "mungekey (apt-get install munge): {}", r.stderr);
        let sock = s.path("munge/munge.socket.2");
        let arg = |k: &str, p: &str| format!("--{k}={}", s.path(p).display());
        let munged = Daemon(
            Command::new("munged")
                .arg("-F")
                .arg(arg("key-file", "munge/munge.key"))
                .arg(arg("socket", "munge/munge.socket.2"))
                .arg(arg("pid-file", "munge/munged.pid"))
                .arg(arg("seed-file", "munge/munged.seed"))
                .arg(arg("log-file", "munge/munged.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(
                    std::fs::File::create(s.path("munge/munged.err")).expect("munged.err"),
                ))
                .spawn()
                .expect("munged (apt-get install munge)"),
        );
        assert!(
            eventually(Duration::from_secs(30), || sock.exists()),
            "munged did not start: {}",
            std::fs::read_to_string(s.path("munge/munged.err")).unwrap_or_default()
        );
        let key = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(std::fs::read(&key).expect("key"))
        };

        for f in ["reimage-resume", "reimage-suspend", "reimage-slurm-lib.sh"] {
            let to = s.path(&format!("bin/{f}"));
            std::fs::create_dir_all(to.parent().expect("bin")).expect("bin dir");
            std::fs::copy(repo(&format!("examples/slurm/{f}")), &to).expect("copy a program");
            // slurmctld refuses programs that group or others may write.
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let log_sock = s.path("syslog.sock");
        let syslog = Syslog::new(&log_sock);
        s.write(
            "reimage-slurm.conf",
            &format!(
                "REIMAGE={}\nREIMAGE_CONFIG={}\nLOG_SOCKET={}\n{settings}",
                bin().display(),
                s.path("reimage.toml").display(),
                log_sock.display()
            ),
        );
        let conf = s.write(
            "slurm.conf",
            &slurm_conf(s, &short_hostname(), &sock, resume_timeout, nodes),
        );
        std::fs::create_dir_all(s.path("slurmctld")).expect("state dir");

        let ns = Netns::new();
        let mut c = ns.cmd("slurmctld");
        c.args(["-D", "-i"])
            .env("SLURM_CONF", &conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(s.path("slurmctld.err")).expect("slurmctld.err"),
            ));
        let ctld = Daemon(c.spawn().expect("slurmctld (apt-get install slurmctld)"));
        let mut cl = Cluster {
            ctld,
            ns,
            _munged: munged,
            syslog,
            s,
            conf,
            key,
            guests: Vec::new(),
            keys: Vec::new(),
        };
        let started = Instant::now();
        while !cl.slurm("scontrol", &["ping"]).stdout.contains("is UP") {
            if let Ok(Some(st)) = cl.ctld.0.try_wait() {
                panic!(
                    "slurmctld exited ({st}): {}\n{}",
                    std::fs::read_to_string(s.path("slurmctld.err")).unwrap_or_default(),
                    std::fs::read_to_string(s.path("slurmctld.log")).unwrap_or_default()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "slurmctld did not answer `scontrol ping` within 60 s: {}",
                std::fs::read_to_string(s.path("slurmctld.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        cl
    }

    /// A Slurm client command in the namespace; fails the test past 60 s.
    fn slurm(&self, prog: &str, args: &[&str]) -> Output {
        let mut c = self.ns.cmd(prog);
        c.args(args).env("SLURM_CONF", &self.conf);
        run(&mut c, Duration::from_secs(60))
    }

    fn node(&self, name: &str) -> String {
        self.slurm("scontrol", &["show", "node", name]).stdout
    }

    /// The node's State= and Reason= words.
    fn state(&self, name: &str) -> (String, String) {
        let text = self.node(name);
        let field = |k: &str| {
            text.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .unwrap_or_default()
                .to_string()
        };
        let reason = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Reason="))
            .unwrap_or_default()
            .to_string();
        (field("State="), reason)
    }

    /// Submits `job.sh` to `node`; its job id.
    fn sbatch(&self, node: &str) -> String {
        let job = self.s.path("job.sh").display().to_string();
        let r = self.slurm(
            "sbatch",
            &[
                "--parsable",
                "-w",
                node,
                "--output=/tmp/slurm-%j.out",
                "--chdir=/tmp",
                &job,
            ],
        );
        r.code(0);
        r.stdout.trim().to_string()
    }

    /// The first line of `job` on `node` and when it came; fails at once
    /// when the node goes DOWN instead, and past `limit`.
    fn job_line(
        &self,
        lines: &Receiver<(Instant, String)>,
        job: &str,
        node: &str,
        limit: Duration,
    ) -> (Instant, String) {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(got) = lines.recv_timeout(Duration::from_secs(2)) {
                return got;
            }
            let (state, reason) = self.state(node);
            if state.starts_with("DOWN") {
                panic!(
                    "{node} went {state} ({reason}) instead of running job {job}\n{}",
                    self.diagnosis()
                );
            }
        }
        panic!(
            "no output from job {job} on {node} within {limit:?}\n{}",
            self.diagnosis()
        );
    }

    /// What to read when something did not happen: the nodes, the queue,
    /// slurmctld's log.
    fn diagnosis(&self) -> String {
        let mut d = format!(
            "{}\n{}\n--- slurmctld.log\n{}\n--- syslog\n{}",
            self.slurm("scontrol", &["show", "nodes"]).stdout,
            self.slurm("squeue", &[]).stdout,
            tail(&self.s.path("slurmctld.log"), 60),
            self.syslog.lines().join("\n")
        );
        for (name, ssh) in &self.guests {
            let console = self.s.path(&format!("state/qemu/{name}/console.log"));
            d.push_str(&format!(
                "\n--- {name}: console\n{}\n--- {name}: reimage's events\n{}\n--- {name}: slurmd and munge\n",
                tail(&console, 15),
                tail(
                    &self.s.path(&format!("state/computers/{name}/events.jsonl")),
                    12
                ),
            ));
            let mut c = self.ns.cmd("timeout");
            c.args(["20", "ssh"]);
            for k in &self.keys {
                c.arg("-i").arg(k);
            }
            c.args(["-p", &ssh.to_string()])
                .args(["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"])
                .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR"])
                .arg("root@127.0.0.1")
                .arg("tail -n 20 /var/log/slurmd.log /var/log/*.start 2>&1; journalctl --no-pager -n 20 -u slurmd -u munge 2>&1");
            let r = run(&mut c, Duration::from_secs(30));
            d.push_str(&r.stdout);
            d.push_str(&r.stderr);
        }
        d
    }

    /// Waits up to `limit` for `f`, failing with a diagnosis.
    #[track_caller]
    fn until(&self, what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
        let start = Instant::now();
        while start.elapsed() < limit {
            if f() {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("{what}: not within {limit:?}\n{}", self.diagnosis());
    }
}

/// The job: its first line, then its output file as slurmstepd wrote it,
/// sent to the test through QEMU's NAT.
const JOB: &str = r#"#!/bin/sh
echo "$(hostname) $(cat /etc/reimage-image)"
out=/tmp/slurm-$SLURM_JOB_ID.out
if command -v bash >/dev/null 2>&1; then
    bash -c 'cat "$0" >/dev/tcp/10.0.2.2/PORT' "$out"
else
    nc 10.0.2.2 PORT <"$out"
fi
"#;

/// The Debian image's post-load script: the MUNGE key (kept out of the
/// image), munged's socket also where the test's slurm.conf looks
/// (AuthInfo), slurmd configless against the test's slurmctld, slurmd's
/// ports open to QEMU's NAT; then munge and slurmd start. It removes itself:
/// the key stays in /etc/munge only.
const DEBIAN_NODE: &str = r#"#!/bin/sh
set -eu
trap 'rm -f "$0"' EXIT
printf '%s' 'KEY' | base64 -d >/etc/munge/munge.key
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
mkdir -p -m 755 'SOCKDIR'
ln -sf /run/munge/munge.socket.2 'SOCKDIR/munge.socket.2'
mkdir -p /etc/systemd/system/slurmd.service.d /var/spool/slurmd
printf '[Unit]\nConditionPathExists=\n' >/etc/systemd/system/slurmd.service.d/configless.conf
echo 'SLURMD_OPTIONS="--conf-server 10.0.2.2:CTLD"' >/etc/default/slurmd
nft add rule inet filter input ip saddr 10.0.2.2 tcp dport PORTS accept
systemctl daemon-reload
systemctl enable --now munge.service slurmd.service
"#;

/// The same for the tiny guest: no systemd, no firewall; munged and slurmd
/// from the initrd, started by hand. slurmd 22.05 will not start without a
/// cgroup hierarchy it recognizes (src/common/cgroup.c,
/// autodetect_cgroup_version): cgroup v1 is a tmpfs on /sys/fs/cgroup with
/// a named cgroup at systemd/ in it, as systemd mounted it in v1 mode.
const TINY_NODE: &str = r#"#!/bin/sh
set -eu
trap 'rm -f "$0"' EXIT
if ! grep -q ' /sys/fs/cgroup ' /proc/mounts; then
    mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup
    mkdir /sys/fs/cgroup/systemd
    mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
fi
mkdir -p -m 700 /etc/munge /var/lib/munge /var/log/munge
mkdir -p -m 755 /run/munge 'SOCKDIR' /var/spool/slurmd
printf '%s' 'KEY' | base64 -d >/etc/munge/munge.key
chmod 400 /etc/munge/munge.key
ln -sf /run/munge/munge.socket.2 'SOCKDIR/munge.socket.2'
# Each daemon's start-up errors go to a file, and to stderr (reimage's
# events) when it fails.
start() {
    log=/var/log/$1.start
    if ! "$@" </dev/null >"$log" 2>&1; then
        cat "$log" >&2
        exit 1
    fi
}
start munged
start slurmd --conf-server 10.0.2.2:CTLD
"#;

fn reimage_config(s: &Scratch, deb: &Path, tiny: &Path, tiny_slurm: &Path) -> String {
    let mut c = format!(
        r#"max_attempts = 2
timeout_growth = 1.0

# The Debian guest with the built-in linux profile; timeouts for TCG on a
# busy machine, as tests/integration/debian.rs has them.
[os.debian]
family = "linux"
key_file = "{deb}/id_ed25519"
connect_timeout = "10s"
timeouts = {{ port = "5m", banner = "5m", login = "3m" }}

# The tiny guest (busybox has no chpasswd).
[os.tiny]
family = "linux"
fresh_password = false
key_file = "{tiny}/id_ed25519"
connect_timeout = "3s"
timeouts = {{ port = "2m", banner = "3m", login = "1m" }}

# The same, with little patience for a banner that never comes.
[os.tiny-broken]
family = "linux"
fresh_password = false
key_file = "{tiny}/id_ed25519"
connect_timeout = "3s"
timeouts = {{ port = "1m", banner = "20s", login = "1m" }}

[images.debian-slurm]
os = "debian"
virtual = true
source = "{deb}/base.qcow2"
kernel = "{deb}/vmlinux"
initrd = "{deb}/initrd.img"
cmdline = "root=/dev/vda rw console=ttyS0 quiet"
image_check = {{ command = ["cat", "/etc/reimage-image"], expect = "^debian-" }}
post_load = ["{dnode}"]
post_load_timeout = "{plt}s"

[images.tiny-slurm]
os = "tiny"
virtual = true
source = "{tiny}/base.qcow2"
kernel = "{tiny}/vmlinux"
initrd = "{tslurm}/initrd.cpio"
cmdline = "console=ttyS0 quiet reimage.attempt={{attempt}}"
image_check = {{ command = ["cat", "/etc/reimage-image"], expect = "^tiny-linux$" }}
post_load = ["{tnode}"]
post_load_timeout = "{plt}s"

# Broken: no SSH server on any attempt.
[images.tiny-broken]
os = "tiny-broken"
virtual = true
source = "{tiny}/base.qcow2"
kernel = "{tiny}/vmlinux"
initrd = "{tiny}/initramfs.cpio.gz"
cmdline = "console=ttyS0 quiet reimage.attempt={{attempt}} reimage.nossh=all"
"#,
        deb = deb.display(),
        tiny = tiny.display(),
        tslurm = tiny_slurm.display(),
        dnode = s.path("debian-node.sh").display(),
        tnode = s.path("tiny-node.sh").display(),
        plt = POST_LOAD_TIMEOUT.as_secs(),
    );
    for n in &NODES {
        c.push_str(&format!(
            r#"
# SSH, and slurmd on the port slurm.conf gives the node.
[provisioners.q-{name}]
kind = "qemu"
forwards = [{{ host = {ssh}, guest = 22 }}, {{ host = {slurmd}, guest = {slurmd} }}]

[computers.{name}]
address = "127.0.0.1"
port = {ssh}
provisioner = "q-{name}"
"#,
            name = n.name,
            ssh = n.ssh,
            slurmd = n.slurmd
        ));
    }
    c
}

fn slurm_conf(
    s: &Scratch,
    host: &str,
    munge_socket: &Path,
    resume_timeout: u64,
    nodes: &str,
) -> String {
    let mut c = format!(
        r#"ClusterName=reimage-test
SlurmctldHost={host}(10.0.2.2)
SlurmctldPort={SLURMCTLD_PORT}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={sock}
StateSaveLocation={dir}/slurmctld
SlurmctldPidFile={dir}/slurmctld.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmctldDebug=verbose
DebugFlags=Power
SlurmdSpoolDir=/var/spool/slurmd
SlurmdLogFile=/var/log/slurmd.log
SlurmctldParameters=enable_configless
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
MpiDefault=none
"#,
        sock = munge_socket.display(),
        dir = s.dir.display(),
    );
    c.push_str(&power_saving(
        &std::fs::read_to_string(repo("examples/slurm/slurm.conf")).expect("the fragment"),
        &[
            (
                "ResumeProgram",
                &format!("{}/bin/reimage-resume", s.dir.display()),
            ),
            (
                "SuspendProgram",
                &format!("{}/bin/reimage-suspend", s.dir.display()),
            ),
            ("SuspendTime", "20"),
            ("SuspendTimeout", "15"),
            ("ResumeTimeout", &resume_timeout.to_string()),
        ],
    ));
    c.push_str(nodes);
    c
}

/// examples/slurm/slurm.conf as a site adds it, with the test's values for
/// `set` (the programs' paths, shorter times) and without its example nodes
/// and partition: slurmctld reading it checks the fragment's keys and
/// values.
fn power_saving(fragment: &str, set: &[(&str, &str)]) -> String {
    let mut out = String::new();
    let mut seen = Vec::new();
    for line in fragment.lines() {
        let key = line.split('=').next().unwrap_or_default();
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if key == "NodeName" || key == "PartitionName" {
            continue;
        }
        match set.iter().find(|(k, _)| *k == key) {
            Some((k, v)) => {
                seen.push(*k);
                out.push_str(&format!("{k}={v}\n"));
            }
            None => out.push_str(&format!("{line}\n")),
        }
    }
    for (k, _) in set {
        assert!(seen.contains(k), "examples/slurm/slurm.conf has no {k}");
    }
    out
}

/// What `reimage check COMPUTER --image IMAGE` plans at attempt 1: the
/// first value of each "timeout" list (the provisioner's start, each wait
/// step), summed.
fn plan_at_attempt_1(s: &Scratch, computer: &str, image: &str) -> Duration {
    let r = run(
        Command::new(bin())
            .arg("--config")
            .arg(s.path("reimage.toml"))
            .args(["check", computer, "--image", image]),
        Duration::from_secs(30),
    );
    r.code(0);
    let firsts: Vec<Duration> = r
        .stdout
        .lines()
        .filter_map(|l| l.split_once("timeout"))
        .filter_map(|(_, rest)| {
            let first = rest.trim_start_matches([':', ' ']).split(',').next()?;
            humantime::parse_duration(first.trim()).ok()
        })
        .collect();
    // The start timeout and the port, banner and login steps.
    assert_eq!(firsts.len(), 4, "{}", r.stdout);
    firsts.into_iter().sum()
}

/// The short host name, which SlurmctldHost must name.
fn short_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("hostname")
        .trim()
        .split('.')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The last `n` lines of a file.
fn tail(p: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(p).unwrap_or_default();
    let v: Vec<&str> = text.lines().rev().take(n).collect();
    v.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// A file's text with `from` replaced by `to`, for each pair.
fn fill(text: &str, pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .fold(text.to_string(), |t, (from, to)| t.replace(from, to))
}

#[test]
fn the_example_programs_are_shellcheck_clean() {
    let dir = repo("examples/slurm");
    let r = run(
        Command::new("shellcheck")
            .arg("-x")
            .args(["reimage-resume", "reimage-suspend", "reimage-slurm-lib.sh"])
            .args(["reimage-slurm.conf", "tiny-node.sh"])
            .current_dir(&dir),
        Duration::from_secs(60),
    );
    assert_eq!(r.code, 0, "shellcheck:\n{}{}", r.stdout, r.stderr);
}

#[test]
fn slurm_resumes_nodes_through_reimage_and_suspends_them() {
    let _one = one_vm_at_a_time();
    let deb = build(
        "examples/debian-guest/build.sh",
        "REIMAGE_DEBIAN_DIR",
        "/var/cache/reimage/debian-guest",
    );
    let tiny_slurm = build(
        "examples/slurm/tiny-node.sh",
        "REIMAGE_TINY_SLURM_DIR",
        "/var/cache/reimage/tiny-slurm",
    );
    let tiny = std::env::var_os("REIMAGE_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/reimage/tiny-guest"));

    let s = Scratch::new("slurm");
    let mut nodes = String::new();
    for n in &NODES {
        nodes.push_str(&format!(
            "NodeName={} NodeAddr=127.0.0.1 Port={} CPUs=1{} State=CLOUD\n",
            n.name, n.slurmd, n.feature
        ));
    }
    nodes.push_str("PartitionName=main Nodes=node[1-3] Default=YES MaxTime=30 State=UP\n");
    s.config(&reimage_config(&s, &deb, &tiny, &tiny_slurm));
    // `check` wants the post-load scripts there; what they say needs the
    // cluster's key, so they are written again below.
    s.script("debian-node.sh", "#!/bin/sh\n");
    s.script("tiny-node.sh", "#!/bin/sh\n");
    // ResumeTimeout as the README says to choose it: the slowest image's
    // plan at attempt 1, plus its post-load scripts' timeout.
    let resume_timeout = plan_at_attempt_1(&s, "node1", "debian-slurm") + POST_LOAD_TIMEOUT;
    eprintln!("ResumeTimeout: {resume_timeout:?}");
    let mut cl = Cluster::start(
        &s,
        &nodes,
        resume_timeout.as_secs(),
        "DEFAULT_IMAGE=tiny-slurm\n",
    );
    cl.guests = NODES.iter().map(|n| (n.name, n.ssh)).collect();
    cl.keys = vec![deb.join("id_ed25519"), tiny.join("id_ed25519")];
    let jobs = job_lines(cl.ns.listen(JOB_PORT));
    let syslog = &cl.syslog;

    // --- the guests' scripts, the job, reimage ----------------------------
    let sockdir = s.path("munge").display().to_string();
    let ctld = SLURMCTLD_PORT.to_string();
    let ports = format!("{}-{}", NODES[0].slurmd, NODES[2].slurmd);
    let node_vars = [
        ("KEY", cl.key.as_str()),
        ("SOCKDIR", sockdir.as_str()),
        ("CTLD", ctld.as_str()),
        ("PORTS", ports.as_str()),
    ];
    s.script("debian-node.sh", &fill(DEBIAN_NODE, &node_vars));
    s.script("tiny-node.sh", &fill(TINY_NODE, &node_vars));
    s.script("job.sh", &JOB.replace("PORT", &JOB_PORT.to_string()));
    for n in &NODES {
        assert_eq!(
            cl.state(n.name).0,
            "IDLE+CLOUD+POWERED_DOWN",
            "{} starts powered down",
            n.name
        );
    }

    // --- node2: the tiny guest, from DEFAULT_IMAGE ------------------------
    let t0 = Instant::now();
    let job2 = cl.sbatch("node2");
    let (at, line) = cl.job_line(&jobs, &job2, "node2", Duration::from_secs(300));
    let tiny_time = at - t0;
    assert_eq!(line, "node2 tiny-linux", "job {job2}'s output file");
    eprintln!("node2 (tiny guest): sbatch to the job's first line: {tiny_time:?}");

    // --- node1: the Debian guest, from its feature ------------------------
    let t1 = Instant::now();
    let job1 = cl.sbatch("node1");
    let (at, line) = cl.job_line(&jobs, &job1, "node1", Duration::from_secs(600));
    let debian_time = at - t1;
    assert_eq!(line, "node1 debian-bookworm", "job {job1}'s output file");
    eprintln!("node1 (Debian guest): sbatch to the job's first line: {debian_time:?}");

    for (job, node) in [(&job2, "node2"), (&job1, "node1")] {
        cl.until(
            &format!("job {job} on {node} completed"),
            Duration::from_secs(120),
            || {
                let j = cl.slurm("scontrol", &["show", "job", job]).stdout;
                j.contains("JobState=COMPLETED") && j.contains("ExitCode=0:0")
            },
        );
    }
    // The ResumeProgram ran reimage for the job that needed the node, with
    // the image its feature or the default names.
    for (node, image, job) in [
        ("node1", "debian-slurm", &job1),
        ("node2", "tiny-slurm", &job2),
    ] {
        let start = s
            .events(node)
            .into_iter()
            .find(|e| e["kind"] == "start")
            .unwrap_or_else(|| panic!("{node} has no events"));
        assert_eq!(
            start["message"]
                .as_str()
                .unwrap_or_default()
                .split(" (pid")
                .next(),
            Some(format!("provision --image {image} --reservation slurm-job-{job}").as_str())
        );
        assert!(
            syslog.has(&format!("resume: {node}: exit 0 after")),
            "{:#?}",
            syslog.lines()
        );
    }

    // --- node3: a broken image ends DOWN with reimage's reason ------------
    let job3 = cl.sbatch("node3");
    cl.until(
        "node3 DOWN with reimage's reason",
        Duration::from_secs(600),
        || {
            let (state, reason) = cl.state("node3");
            state.starts_with("DOWN") && reason.starts_with("reimage: ")
        },
    );
    let (_, reason) = cl.state("node3");
    assert!(
        reason.contains("no attempts left"),
        "reimage's reason for node3: {reason}"
    );
    assert!(syslog.has("resume: node3: exit 1 after"));
    // Its job went back to the queue and waits.
    let j = cl.slurm("scontrol", &["show", "job", &job3]).stdout;
    assert!(j.contains("JobState=PENDING"), "{j}");

    // --- after SuspendTime: powered down through reimage power-off --------
    for (node, want) in [
        ("node1", "IDLE+CLOUD+POWERED_DOWN"),
        ("node2", "IDLE+CLOUD+POWERED_DOWN"),
        ("node3", "DOWN+CLOUD+POWERED_DOWN"),
    ] {
        cl.until(
            &format!("{node} powered down"),
            Duration::from_secs(180),
            || cl.state(node).0 == want,
        );
        assert!(
            syslog.has(&format!("suspend: {node}: power-off exit 0 after")),
            "{:#?}",
            syslog.lines()
        );
        let status = run(
            Command::new(bin())
                .arg("--config")
                .arg(s.path("reimage.toml"))
                .args(["--json", "status", node]),
            Duration::from_secs(30),
        );
        let v: serde_json::Value =
            serde_json::from_str(status.stdout.trim()).expect("status --json");
        let image = match node {
            "node1" => "debian-slurm",
            "node2" => "tiny-slurm",
            _ => "tiny-broken",
        };
        assert_eq!(
            (
                &v["record"]["command"],
                &v["record"]["image"],
                &v["record"]["result"]
            ),
            (&"power-off".into(), &image.into(), &"done".into()),
            "{v}"
        );
        assert!(
            !s.path(&format!("state/qemu/{node}/qemu.pid")).exists(),
            "{node}'s VM is stopped"
        );
    }
    // The reason survives the power-down.
    assert!(cl.state("node3").1.starts_with("reimage: "));
    let _ = cl.slurm("scancel", &[&job3]);
    eprintln!(
        "sbatch to the job's first line: tiny guest {tiny_time:?}, Debian guest {debian_time:?}"
    );
    // Where the time went, as slurmctld saw it.
    let log = std::fs::read_to_string(s.path("slurmctld.log")).unwrap_or_default();
    for l in log.lines().filter(|l| {
        [
            format!("JobId={job2} "),
            format!("JobId={job1} "),
            "waking".into(),
            "responding".into(),
            "resumed".into(),
        ]
        .iter()
        .any(|k| l.contains(k.as_str()))
    }) {
        eprintln!("slurmctld: {l}");
    }
}

/// The programs' own logic against the real slurmctld, without guests: a
/// command provisioner whose load and power-off record what they do. One
/// ResumeProgram run gets pc[1-5] with PARALLEL=2: at most two reimage
/// runs at once (pc1's load waits until another one has started, so a
/// program that ran them one by one fails here); pc4's load fails and pc5's
/// image does not exist (its feature names no image of reimage.toml), and
/// both end DOWN with reimage's message; the SuspendProgram then powers pc4
/// off through the provisioner's `power_off`, while pc5's power-off is
/// refused (64) and says so in the reason.
#[test]
fn resume_runs_reimage_bounded_and_marks_failures_down() {
    let s = Scratch::new("slurm-cmd");
    let load = s.script(
        "load.sh",
        r#"#!/bin/sh
log=$(dirname "$0")/loads.log
echo "start $1" >>"$log"
if [ "$1" = pc1 ]; then
    i=0
    while [ "$(grep -c '^start' "$log")" -lt 2 ] && [ $i -lt 600 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    grep -q '^start pc[2-4]$' "$log" || { echo "no other load started" >&2; exit 1; }
fi
sleep 1
echo "end $1" >>"$log"
if [ "$1" = pc4 ]; then
    echo "pc4's BMC does not answer" >&2
    exit 1
fi
"#,
    );
    let off = s.script(
        "off.sh",
        "#!/bin/sh\necho \"off $1\" >>\"$(dirname \"$0\")/off.log\"\n",
    );
    let mut toml = format!(
        r#"max_attempts = 1

[provisioners.script]
kind = "command"
load = ["{}", "{{computer}}"]
power_off = ["{}", "{{computer}}"]

[os.appliance]
family = "generic"
channel = "none"
steps = []

[images.img]
os = "appliance"
provisioner = "script"
"#,
        load.display(),
        off.display()
    );
    for n in 1..=5 {
        toml.push_str(&format!("\n[computers.pc{n}]\naddress = \"127.0.0.1\"\n"));
    }
    s.config(&toml);
    let nodes = "NodeName=pc[1-4] NodeAddr=127.0.0.1 Port=6899 CPUs=1 State=CLOUD
NodeName=pc5 NodeAddr=127.0.0.1 Port=6899 CPUs=1 Feature=image:nope State=CLOUD
PartitionName=main Nodes=pc[1-5] Default=YES MaxTime=30 State=UP
";
    let cl = Cluster::start(&s, nodes, 600, "DEFAULT_IMAGE=img\nPARALLEL=2\n");
    cl.slurm(
        "scontrol",
        &["update", "nodename=pc[1-5]", "state=power_up"],
    )
    .code(0);

    cl.until(
        "pc4 and pc5 DOWN with reimage's reasons",
        Duration::from_secs(180),
        || {
            ["pc4", "pc5"].iter().all(|n| {
                let (state, reason) = cl.state(n);
                state.starts_with("DOWN") && reason.starts_with("reimage")
            })
        },
    );
    cl.until(
        "the ResumeProgram's last line",
        Duration::from_secs(60),
        || (1..=5).all(|n| cl.syslog.has(&format!("resume: pc{n}: exit "))),
    );
    assert!(cl.syslog.has("resume: resuming 5 node(s): pc[1-5]"));
    for n in 1..=3 {
        assert!(cl.syslog.has(&format!("resume: pc{n}: exit 0 after")));
        // Ready for reimage; Slurm waits for a slurmd that never comes.
        assert!(cl.state(&format!("pc{n}")).0.contains("POWERING_UP"));
    }
    assert!(cl.syslog.has("resume: pc4: exit 1 after"));
    assert!(cl.syslog.has("resume: pc5: exit 64 after"));

    // At most two loads at a time, and every load but pc5's ran.
    let log = std::fs::read_to_string(s.path("loads.log")).expect("loads.log");
    let (mut now, mut most) = (0, 0);
    for l in log.lines() {
        if l.starts_with("start ") {
            now += 1;
            most = most.max(now);
        } else {
            now -= 1;
        }
    }
    assert_eq!(most, 2, "loads at once:\n{log}");
    let mut started: Vec<&str> = log
        .lines()
        .filter_map(|l| l.strip_prefix("start "))
        .collect();
    started.sort();
    assert_eq!(started, ["pc1", "pc2", "pc3", "pc4"]);

    // pc4 powered down through its provisioner, the reason kept.
    cl.until("pc4 powered down", Duration::from_secs(120), || {
        cl.state("pc4").0 == "DOWN+CLOUD+POWERED_DOWN"
    });
    let (_, reason) = cl.state("pc4");
    assert!(
        reason.starts_with("reimage: load failed, not retrying")
            && reason.contains("pc4's BMC does not answer"),
        "{reason}"
    );
    assert!(cl.syslog.has("suspend: pc4: power-off exit 0 after"));
    assert_eq!(
        std::fs::read_to_string(s.path("off.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| *l == "off pc4")
            .count(),
        1
    );
    // pc5: no image to resolve a provisioner with, so no power-off either.
    cl.until("pc5's power-off refused", Duration::from_secs(120), || {
        cl.syslog.has("suspend: pc5: power-off exit 64 after")
    });
    let (_, reason) = cl.state("pc5");
    assert!(
        reason.starts_with("reimage power-off: unknown image `nope`"),
        "{reason}"
    );
}
