//! `qemu`: a local QEMU VM, the embedded default for trying reimage on one
//! machine. A load stops the computer's VM, puts a fresh copy-on-write
//! overlay on the image's base disk (`qemu-img create -b`), starts
//! `qemu-system-x86_64` daemonized with a QMP socket, and is done when QMP
//! says the VM is running. It never waits for the guest OS: that is the OS
//! module's job. The VM keeps running after the load; the next load stops it.
//!
//! Everything of one computer's VM lives in its run directory
//! (`STATE_DIR/qemu/COMPUTER` by default): `overlay.qcow2`, `qemu.pid`,
//! `qmp.sock`, `console.log` (the serial console; the one before it is kept
//! as `console.log.old`).

use anyhow::{Context, Result, anyhow, bail};
use rustix::process::{Pid, Signal};
use serde::Deserialize;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::disk::{Chain, same_file};
use super::{PowerOff, Provisioner, expand, placeholders};
use crate::attempt::Attempt;
use crate::config::{ChannelSettings, FileUse, KeyError, LocalFile, Plan};
use crate::duration;
use crate::exec::{Cmd, Hints, alive};
use crate::outcome::Outcome;
use crate::report::Reporter;
use crate::wait::{self, Backoff, Limits, Pace, Poll};

/// Which accelerator QEMU uses.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// KVM when it can run a guest here, else TCG.
    #[default]
    Auto,
    /// KVM, or QEMU fails to start.
    Kvm,
    /// TCG: software emulation, works everywhere, slower.
    Tcg,
}

/// `forwards = [{ host = 2222, guest = 22 }]`: a TCP port on 127.0.0.1
/// forwarded into the guest.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Forward {
    /// Port on the host's 127.0.0.1.
    pub host: u16,
    /// Port in the guest.
    pub guest: u16,
}

/// `[provisioners.NAME] kind = "qemu"`. Every key is optional; the default
/// is the built-in provisioner named `qemu`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct QemuConfig {
    /// The QEMU system emulator (name on PATH or a path).
    pub qemu: String,
    /// qemu-img (name on PATH or a path).
    pub qemu_img: String,
    /// Where the overlay, pid file, QMP socket and console log live;
    /// default `STATE_DIR/qemu/COMPUTER`.
    pub run_dir: Option<PathBuf>,
    /// auto | kvm | tcg.
    pub accel: Accel,
    /// Memory in MiB, unless the image sets `memory`.
    pub memory: u32,
    /// Virtual CPUs, unless the image sets `cpus`.
    pub cpus: u32,
    /// Ports forwarded from 127.0.0.1 into the guest; default: the
    /// computer's `port` to the OS profile's channel port (22 for SSH).
    pub forwards: Vec<Forward>,
    /// How long QEMU may take to start and report `running` over QMP
    /// (grows with the attempt).
    #[serde(deserialize_with = "duration::de")]
    pub start_timeout: Duration,
    /// Arguments appended to the QEMU command line (placeholders allowed).
    pub extra_args: Vec<String>,
    /// QEMU machine type.
    pub machine: String,
    /// The `-netdev` of the second NIC, which a computer with `public_mac`
    /// gets (QEMU's option text without `id`): by default a second user
    /// network of its own, 10.0.3.0/24, with QEMU's DHCP server on it.
    pub public_netdev: String,
}

impl Default for QemuConfig {
    fn default() -> QemuConfig {
        QemuConfig {
            qemu: "qemu-system-x86_64".into(),
            qemu_img: "qemu-img".into(),
            run_dir: None,
            accel: Accel::Auto,
            memory: 256,
            cpus: 1,
            forwards: Vec::new(),
            start_timeout: Duration::from_secs(60),
            extra_args: Vec::new(),
            machine: "q35".into(),
            public_netdev: "user,net=10.0.3.0/24".into(),
        }
    }
}

/// How long one qemu-img command may take.
const QEMU_IMG_TIMEOUT: Duration = Duration::from_secs(60);
/// Read/write timeout of one QMP exchange.
const QMP_TIMEOUT: Duration = Duration::from_secs(3);
/// The `-device` of a virtio NIC on netdev `id`, with MAC `mac` when the
/// computer names one (QEMU's default otherwise, 52:54:00:12:34:56 and up).
fn nic_device(id: &str, mac: Option<&str>) -> String {
    match mac.and_then(crate::config::network::parse_mac) {
        Some(m) => format!("virtio-net-pci,netdev={id},mac={m},romfile="),
        None => format!("virtio-net-pci,netdev={id},romfile="),
    }
}

/// `check`'s words for the private NIC.
fn nic_text(mac: Option<&str>, on: &str) -> String {
    match mac.and_then(crate::config::network::parse_mac) {
        Some(m) => format!("mac {m} on {on}"),
        None => format!("QEMU's MAC on {on}"),
    }
}

/// Longest unix socket path (sun_path is 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;

impl QemuConfig {
    /// Checks serde cannot make.
    pub fn validate(&self) -> Result<(), String> {
        super::check_argv_placeholders("extra_args", &self.extra_args, &[])?;
        if self.qemu.trim().is_empty() {
            return Err("`qemu` must name the QEMU binary, e.g. \"qemu-system-x86_64\"".into());
        }
        if self.qemu_img.trim().is_empty() {
            return Err("`qemu_img` must name the qemu-img binary, e.g. \"qemu-img\"".into());
        }
        if self.machine.trim().is_empty() {
            return Err("`machine` must name a QEMU machine type, e.g. \"q35\"".into());
        }
        if !(16..=1 << 22).contains(&self.memory) {
            return Err(format!(
                "`memory` is in MiB and must be between 16 and 4194304, not {}",
                self.memory
            ));
        }
        if !(1..=1024).contains(&self.cpus) {
            return Err(format!(
                "`cpus` must be between 1 and 1024, not {}",
                self.cpus
            ));
        }
        if self.start_timeout.is_zero() {
            return Err("`start_timeout` must be more than 0s, e.g. \"60s\"".into());
        }
        let mut seen = Vec::new();
        for f in &self.forwards {
            if f.host == 0 || f.guest == 0 {
                return Err("`forwards` ports must be 1..65535".into());
            }
            if seen.contains(&f.host) {
                return Err(format!("`forwards` uses host port {} twice", f.host));
            }
            seen.push(f.host);
        }
        let netdev = self.public_netdev.trim();
        if netdev.is_empty() || netdev.starts_with(',') || netdev.contains(",id=") {
            return Err("`public_netdev` must be a QEMU -netdev without its id, e.g. \"user,net=10.0.3.0/24\" or \"tap,ifname=pub0,script=no,downscript=no\"".into());
        }
        if let Some(d) = &self.run_dir
            && d.to_string_lossy().contains(',')
        {
            return Err("`run_dir` must not contain a comma (QEMU option syntax)".into());
        }
        Ok(())
    }

    /// Lines for `reimage check`.
    pub fn describe(&self, plan: &Plan) -> Vec<String> {
        let a = plan.attempt(1, plan.max_attempts);
        let run = RunDir::new(self, plan);
        let (accel, why) = resolve_accel(self.accel);
        let img = &plan.image.config;
        let mut v = vec![
            format!(
                "qemu: {} (machine {}, accel {}: {why})",
                self.qemu,
                self.machine,
                accel.name()
            ),
            format!(
                "memory: {} MiB, cpus: {}",
                img.memory.unwrap_or(self.memory),
                img.cpus.unwrap_or(self.cpus)
            ),
            format!("run dir: {}", run.dir.display()),
        ];
        match base_of(plan) {
            Some(b) => v.push(format!(
                "disk: fresh overlay {} on base {}",
                run.overlay.display(),
                b.display()
            )),
            None => v.push("disk: none".into()),
        }
        if let Some(k) = &img.kernel {
            v.push(format!(
                "direct boot: kernel {}, initrd {}, cmdline \"{}\"",
                k.display(),
                img.initrd
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "none".into()),
                expand(img.cmdline.as_deref().unwrap_or(""), &placeholders(plan, a))
            ));
        }
        match self.forwards(plan) {
            Ok(f) if f.is_empty() => v.push("forwards: none".into()),
            Ok(f) => v.push(format!(
                "forwards: {}",
                f.iter()
                    .map(|f| format!("127.0.0.1:{} -> guest {}", f.host, f.guest))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Err(e) => v.push(format!("forwards: {e}")),
        }
        v.push(format!(
            "nic: {}",
            nic_text(plan.computer.mac.as_deref(), "the forwards' user network")
        ));
        if let Some(n) = &plan.computer.public {
            v.push(format!(
                "public nic: mac {} on -netdev {}",
                n.mac, self.public_netdev
            ));
        }
        v.push(format!(
            "start timeout: {}",
            plan.per_attempt(self.start_timeout)
        ));
        if !self.extra_args.is_empty() {
            v.push(format!("extra args: {}", self.extra_args.join(" ")));
        }
        v
    }

    /// The forwarded ports: `forwards`, or the computer's `port` to the
    /// profile's channel port.
    fn forwards(&self, plan: &Plan) -> Result<Vec<Forward>> {
        if !self.forwards.is_empty() {
            return Ok(self.forwards.clone());
        }
        let guest = match &plan.profile.channel {
            ChannelSettings::None { .. } => 22,
            ChannelSettings::Ssh(ssh) => ssh.port,
            ChannelSettings::Winrm(w) => w.port,
        };
        match plan.computer.port {
            Some(host) => Ok(vec![Forward { host, guest }]),
            None => bail!(
                "computer `{}` needs `port = N`: the port on 127.0.0.1 that QEMU forwards to the guest's port {guest} (or set `forwards` in a kind = \"qemu\" provisioner)",
                plan.computer.name
            ),
        }
    }
}

impl Accel {
    fn name(self) -> &'static str {
        match self {
            Accel::Auto => "auto",
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// The accelerator `accel` means here, and why.
fn resolve_accel(accel: Accel) -> (Accel, &'static str) {
    match accel {
        Accel::Kvm => (Accel::Kvm, "configured"),
        Accel::Tcg => (Accel::Tcg, "configured"),
        Accel::Auto => {
            let opens = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .is_ok();
            // Opening /dev/kvm is not enough: sandboxes (PVM, gVisor) offer a
            // /dev/kvm that cannot run an unmodified guest; real KVM needs
            // the CPU's vmx or svm.
            let virt = std::fs::read_to_string("/proc/cpuinfo")
                .map(|s| {
                    s.lines()
                        .filter(|l| l.starts_with("flags"))
                        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
                })
                .unwrap_or(false);
            match (opens, virt) {
                (true, true) => (Accel::Kvm, "auto, /dev/kvm is usable"),
                (false, _) => (Accel::Tcg, "auto, /dev/kvm cannot be opened read-write"),
                (true, false) => (
                    Accel::Tcg,
                    "auto, /dev/kvm opens but the CPU shows no vmx/svm",
                ),
            }
        }
    }
}

/// The image's base disk, made absolute: `source` when the image boots a
/// kernel directly (optional then), else `source` or the image name.
fn base_of(plan: &Plan) -> Option<PathBuf> {
    let img = &plan.image.config;
    let s = match (&img.kernel, &img.source) {
        (Some(_), None) => return None,
        (_, Some(s)) => s.clone(),
        (None, None) => plan.image.source.clone(),
    };
    Some(absolute(Path::new(&s)))
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The files of one computer's VM.
#[derive(Debug, Clone)]
struct RunDir {
    dir: PathBuf,
    overlay: PathBuf,
    pidfile: PathBuf,
    qmp: PathBuf,
    console: PathBuf,
}

impl RunDir {
    fn new(c: &QemuConfig, plan: &Plan) -> RunDir {
        let dir = absolute(
            &c.run_dir
                .clone()
                .unwrap_or_else(|| plan.state_dir.join("qemu").join(&plan.computer.name)),
        );
        RunDir {
            overlay: dir.join("overlay.qcow2"),
            pidfile: dir.join("qemu.pid"),
            qmp: dir.join("qmp.sock"),
            console: dir.join("console.log"),
            dir,
        }
    }

    /// The `-qmp` argument, also how a QEMU of ours is recognized.
    fn qmp_arg(&self) -> String {
        format!("unix:{},server=on,wait=off", self.qmp.display())
    }

    /// The pid in the pid file, if there is one.
    fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(&self.pidfile)
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// True when `pid` is a live QEMU started for this run directory: its
    /// command line carries our `-qmp` argument (a recycled pid does not).
    fn is_ours(&self, pid: i32) -> bool {
        if pid <= 0 || pid as u32 == std::process::id() || !alive(pid) {
            return false;
        }
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            return false;
        };
        let want = self.qmp_arg();
        let args: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
        args.windows(2)
            .any(|w| w[0] == b"-qmp" && w[1] == want.as_bytes())
    }

    /// Every live process of ours: the pid file's, and any other whose
    /// command line carries our `-qmp` argument (a QEMU whose pid file was
    /// not written yet, a wrapper that started it).
    fn processes(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .pid()
            .filter(|p| self.is_ours(*p))
            .into_iter()
            .collect();
        if let Ok(rd) = std::fs::read_dir("/proc") {
            for e in rd.flatten() {
                if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok())
                    && !pids.contains(&pid)
                    && self.is_ours(pid)
                {
                    pids.push(pid);
                }
            }
        }
        pids
    }

    /// The files a load removes, replaces or moves: none of them may be the
    /// image's base.
    fn replaced(&self) -> [PathBuf; 5] {
        [
            self.overlay.clone(),
            self.console.clone(),
            self.dir.join("console.log.old"),
            self.pidfile.clone(),
            self.qmp.clone(),
        ]
    }

    /// The last lines of the console log, for error messages.
    fn console_tail(&self) -> String {
        tail_of_file(&self.console, 8)
    }
}

fn tail_of_file(p: &Path, n: usize) -> String {
    let Ok(mut f) = std::fs::File::open(p) else {
        return String::new();
    };
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let start = buf.len().saturating_sub(4096);
    crate::exec::excerpt(&String::from_utf8_lossy(&buf[start..]), n)
}

/// A QMP connection: JSON lines over the VM's unix socket.
struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects, reads the greeting and leaves capability negotiation.
    fn connect(sock: &Path, timeout: Duration) -> Result<Qmp> {
        let s = UnixStream::connect(sock)
            .with_context(|| format!("connecting to QMP at {}", sock.display()))?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        let writer = s.try_clone()?;
        let mut q = Qmp {
            reader: BufReader::new(s),
            writer,
        };
        let hello = q.line().context("reading the QMP greeting")?;
        if hello.get("QMP").is_none() {
            bail!("not a QMP greeting: {hello}");
        }
        q.execute("qmp_capabilities", None)?;
        Ok(q)
    }

    fn line(&mut self) -> Result<Value> {
        let mut s = String::new();
        let n = (&mut self.reader).take(1 << 20).read_line(&mut s)?;
        if n == 0 {
            bail!("QMP closed the connection");
        }
        serde_json::from_str(&s).with_context(|| format!("QMP sent a line that is not JSON: {s}"))
    }

    /// Runs a command and returns its `return` value; events in between are
    /// skipped.
    fn execute(&mut self, cmd: &str, args: Option<Value>) -> Result<Value> {
        let mut req = json!({ "execute": cmd });
        if let Some(a) = args {
            req["arguments"] = a;
        }
        let mut text = req.to_string();
        text.push('\n');
        self.writer
            .write_all(text.as_bytes())
            .with_context(|| format!("sending QMP `{cmd}`"))?;
        loop {
            let v = self.line().with_context(|| format!("QMP `{cmd}`"))?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                bail!(
                    "QMP `{cmd}` failed: {}",
                    e.get("desc")
                        .and_then(Value::as_str)
                        .unwrap_or("unknown error")
                );
            }
        }
    }

    /// The run state: "running", "paused", "prelaunch", "guest-panicked", ...
    fn status(&mut self) -> Result<String> {
        let r = self.execute("query-status", None)?;
        r.get("status")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| anyhow!("QMP query-status returned no status: {r}"))
    }
}

/// Sends `sig` to `pid` (checked to be a QEMU of ours); an error means it
/// is gone already.
fn kill(pid: i32, sig: Signal) {
    if let Some(pid) = Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// Waits up to `limit` until none of `pids` is alive; the ones still alive.
fn wait_gone(pids: &[i32], limit: Duration) -> Vec<i32> {
    let start = Instant::now();
    let mut pause = Backoff::new(Duration::from_millis(10), Duration::from_millis(200));
    loop {
        let left: Vec<i32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() || start.elapsed() >= limit {
            return left;
        }
        std::thread::sleep(pause.next_pause());
    }
}

/// Stops the VM of `run` if one is running: QMP `quit`, then SIGTERM and
/// SIGKILL to each process of ours (checked by command line, never by name
/// alone). Runs to the end even after SIGINT/SIGTERM, so an interrupted load
/// leaves no VM behind; bounded to about 10 seconds.
fn stop_run(run: &RunDir, report: &Reporter) -> Result<()> {
    let pids = run.processes();
    if !pids.is_empty() || run.qmp.exists() {
        let quit = Qmp::connect(&run.qmp, Duration::from_secs(2))
            .and_then(|mut q| q.execute("quit", None));
        match &quit {
            Ok(_) => report.info(&format!(
                "stopping the running VM (pid {}) with QMP quit",
                join_pids(&pids)
            )),
            Err(e) if !pids.is_empty() => report.info(&format!(
                "QMP quit failed ({e:#}); stopping pid {} with signals",
                join_pids(&pids)
            )),
            Err(_) => {}
        }
        let mut left = wait_gone(&pids, Duration::from_secs(if quit.is_ok() { 5 } else { 0 }));
        // A QEMU that started after the first look (its launcher was slower).
        for p in run.processes() {
            if !left.contains(&p) {
                left.push(p);
            }
        }
        if !left.is_empty() {
            for p in &left {
                kill(*p, Signal::TERM);
            }
            left = wait_gone(&left, Duration::from_secs(3));
            for p in &left {
                kill(*p, Signal::KILL);
            }
            left = wait_gone(&left, Duration::from_secs(2));
        }
        if !left.is_empty() {
            bail!(
                "cannot stop the VM of {}: pid {} survived SIGKILL",
                run.dir.display(),
                join_pids(&left)
            );
        }
    }
    for p in [&run.pidfile, &run.qmp] {
        match std::fs::remove_file(p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", p.display()));
            }
            _ => {}
        }
    }
    Ok(())
}

fn join_pids(p: &[i32]) -> String {
    p.iter().map(i32::to_string).collect::<Vec<_>>().join(", ")
}

/// True when `prog` names an executable file (a path, or a name on PATH).
fn find_program(prog: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let exec = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if prog.contains('/') {
        return exec(Path::new(prog));
    }
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|d| exec(&d.join(prog))))
        .unwrap_or(false)
}

/// One look at a starting VM: its process, then its run state over QMP.
fn vm_status(run: &RunDir, pid: Option<i32>) -> Poll {
    if let Some(p) = pid
        && !alive(p)
    {
        return Poll::Fatal(anyhow!("QEMU (pid {p}) exited"));
    }
    match Qmp::connect(&run.qmp, QMP_TIMEOUT).and_then(|mut q| q.status()) {
        Ok(s) if s == "running" => Poll::Ready(s),
        Ok(s)
            if matches!(
                s.as_str(),
                "internal-error" | "guest-panicked" | "shutdown" | "io-error"
            ) =>
        {
            Poll::Fatal(anyhow!("VM status is {s}"))
        }
        Ok(s) => Poll::NotYet(format!("VM status {s}")),
        Err(e) => Poll::NotYet(format!("{e:#}")),
    }
}

/// The qemu provisioner.
pub struct Qemu {
    config: QemuConfig,
}

/// A fatal outcome.
fn fatal(msg: String) -> Outcome {
    Outcome::Fatal(anyhow!(msg))
}

impl Qemu {
    /// A qemu provisioner.
    pub fn new(config: QemuConfig) -> Qemu {
        Qemu { config }
    }

    /// Stops the plan's VM if one is running (see the module docs); loads
    /// call it first, and after a failed or interrupted start.
    pub fn stop(&self, plan: &Plan, report: &Reporter) -> Result<()> {
        stop_run(&RunDir::new(&self.config, plan), report)
    }

    /// Checks what a start needs, before the running VM is touched.
    fn preflight(&self, plan: &Plan, run: &RunDir) -> Result<(), Outcome> {
        let c = &self.config;
        let img = &plan.image.config;
        let who = format!("image `{}`", plan.image.name);
        if !find_program(&c.qemu) {
            return Err(fatal(format!(
                "QEMU binary `{}` not found: install qemu-system-x86 (apt-get install qemu-system-x86) or set `qemu` in a kind = \"qemu\" provisioner table",
                c.qemu
            )));
        }
        let build_hint = " (the tiny test guest: build it with examples/tiny-guest/build.sh)";
        for (key, p) in [("kernel", &img.kernel), ("initrd", &img.initrd)] {
            if let Some(p) = p
                && !p.is_file()
            {
                return Err(fatal(format!(
                    "{key} {} of {who} does not exist: fix `{key}` in [images.{}]{build_hint}",
                    absolute(p).display(),
                    plan.image.name
                )));
            }
        }
        if img.initrd.is_some() && img.kernel.is_none() {
            return Err(fatal(format!(
                "{who} sets `initrd` without `kernel`: add kernel = \"...\" to [images.{}]",
                plan.image.name
            )));
        }
        if let Some(b) = base_of(plan) {
            if !b.is_file() {
                return Err(fatal(format!(
                    "base image {} of {who} does not exist: fix `source` in [images.{}]{build_hint}",
                    b.display(),
                    plan.image.name
                )));
            }
            if !find_program(&c.qemu_img) {
                return Err(fatal(format!(
                    "`{}` not found: install qemu-utils (apt-get install qemu-utils) or set `qemu_img` in a kind = \"qemu\" provisioner table",
                    c.qemu_img
                )));
            }
        }
        let dir = run.dir.to_string_lossy();
        if dir.contains(',') {
            return Err(fatal(format!(
                "run directory {dir} contains a comma, which QEMU options cannot carry: set `run_dir` or `state_dir` elsewhere"
            )));
        }
        if run.qmp.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(fatal(format!(
                "QMP socket path {} is longer than a unix socket allows ({MAX_SOCKET_PATH} bytes): set a shorter `run_dir`",
                run.qmp.display()
            )));
        }
        c.forwards(plan).map_err(Outcome::Fatal)?;
        Ok(())
    }

    /// The base's format from `qemu-img info --backing-chain`, which also
    /// names every file the base stands on: fatal, before anything is
    /// stopped, when one of them is a file of the run directory that a load
    /// replaces (the overlay under the golden disk).
    fn base_format(&self, base: &Path, run: &RunDir, report: &Reporter) -> Result<String, Outcome> {
        let qi = &self.config.qemu_img;
        let base_s = base.to_string_lossy().to_string();
        let info = Cmd::new(
            &[
                qi.as_str(),
                "info",
                "-U",
                "--backing-chain",
                "--output=json",
                &base_s,
            ],
            QEMU_IMG_TIMEOUT,
        );
        let out = self.run_img(&info, report)?;
        if !out.success() {
            return Err(fatal(format!(
                "base image {base_s} is not a disk image qemu-img can read (with every file it stands on): {}",
                crate::exec::excerpt(&out.text(), 3)
            )));
        }
        let chain = Chain::parse(&out.stdout)
            .ok_or_else(|| fatal(format!("`{}` gave no format for {base_s}", info.display())))?;
        for f in run.replaced() {
            if let Some(hit) = chain.holds(&f) {
                return Err(fatal(format!(
                    "refusing to load: base image {base_s} stands on {}, which is this computer's {}, replaced by every load: give the computer another run_dir, or rebase the image off it",
                    hit.display(),
                    f.display()
                )));
            }
        }
        Ok(chain.format)
    }

    /// A fresh overlay on the base, whose format is `fmt`.
    fn overlay(
        &self,
        base: &Path,
        fmt: &str,
        run: &RunDir,
        report: &Reporter,
    ) -> Result<(), Outcome> {
        let qi = &self.config.qemu_img;
        let base_s = base.to_string_lossy().to_string();
        match std::fs::remove_file(&run.overlay) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(fatal(format!(
                    "cannot remove the old overlay {}: {e}",
                    run.overlay.display()
                )));
            }
            _ => {}
        }
        let ov = run.overlay.to_string_lossy().to_string();
        let create = Cmd::new(
            &[
                qi.as_str(),
                "create",
                "-q",
                "-f",
                "qcow2",
                "-b",
                &base_s,
                "-F",
                fmt,
                &ov,
            ],
            QEMU_IMG_TIMEOUT,
        );
        let out = self.run_img(&create, report)?;
        if !out.success() {
            return Err(fatal(format!(
                "`{}` exited {}: {}",
                create.display(),
                out.status,
                crate::exec::excerpt(&out.text(), 3)
            )));
        }
        report.info(&format!("fresh overlay {ov} on {base_s} ({fmt})"));
        Ok(())
    }

    fn run_img(&self, cmd: &Cmd, report: &Reporter) -> Result<crate::exec::Output, Outcome> {
        match cmd.run() {
            Ok(o) => {
                report.output(&cmd.display(), &o);
                Ok(o)
            }
            Err(e) => {
                if let Some(p) = e.partial() {
                    report.output(&cmd.display(), p);
                }
                Err(e.into_outcome(
                    "making the disk",
                    &cmd.display(),
                    Hints {
                        spawn: "install qemu-utils",
                        timeout: "",
                    },
                ))
            }
        }
    }

    /// The QEMU command line.
    fn argv(&self, plan: &Plan, attempt: Attempt, run: &RunDir) -> Result<Vec<String>> {
        let c = &self.config;
        let img = &plan.image.config;
        let values = placeholders(plan, attempt);
        let p = |p: &Path| p.to_string_lossy().to_string();
        let mut a: Vec<String> = vec![c.qemu.clone()];
        let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
        let name = format!("reimage-{}", plan.computer.name).replace(',', "_");
        push(&["-name", &name, "-machine", &c.machine]);
        match resolve_accel(c.accel) {
            // Auto: fall back to TCG should KVM still fail to start.
            (Accel::Kvm, _) if c.accel == Accel::Auto => {
                push(&["-accel", "kvm", "-accel", "tcg", "-cpu", "max"])
            }
            (Accel::Kvm, _) => push(&["-accel", "kvm", "-cpu", "host"]),
            _ => push(&["-accel", "tcg"]),
        }
        let mem = img.memory.unwrap_or(c.memory).to_string();
        let cpus = img.cpus.unwrap_or(c.cpus).to_string();
        push(&["-m", &mem, "-smp", &cpus]);
        push(&["-nodefaults", "-no-user-config", "-display", "none"]);
        push(&["-daemonize", "-pidfile", &p(&run.pidfile)]);
        push(&["-qmp", &run.qmp_arg()]);
        push(&["-serial", &format!("file:{}", p(&run.console))]);
        if let Some(k) = &img.kernel {
            push(&["-kernel", &p(&absolute(k))]);
            if let Some(i) = &img.initrd {
                push(&["-initrd", &p(&absolute(i))]);
            }
            if let Some(cl) = &img.cmdline {
                push(&["-append", &expand(cl, &values)]);
            }
        }
        if base_of(plan).is_some() {
            push(&[
                "-drive",
                &format!("file={},if=virtio,format=qcow2", p(&run.overlay)),
            ]);
        }
        let fwd: String = c
            .forwards(plan)?
            .iter()
            .map(|f| format!(",hostfwd=tcp:127.0.0.1:{}-:{}", f.host, f.guest))
            .collect();
        push(&["-netdev", &format!("user,id=n0{fwd}")]);
        push(&["-device", &nic_device("n0", plan.computer.mac.as_deref())]);
        if let Some(n) = &plan.computer.public {
            push(&["-netdev", &format!("{},id=n1", c.public_netdev.trim())]);
            push(&["-device", &nic_device("n1", Some(&n.mac))]);
        }
        push(&["-device", "virtio-rng-pci"]);
        a.extend(c.extra_args.iter().map(|s| expand(s, &values)));
        Ok(a)
    }

    fn load_inner(&self, plan: &Plan, attempt: Attempt, report: &Reporter) -> Result<(), Outcome> {
        let run = RunDir::new(&self.config, plan);
        self.vet(plan).map_err(|e| super::refused(plan, e))?;
        self.preflight(plan, &run)?;
        let base = match base_of(plan) {
            Some(b) => Some((self.base_format(&b, &run, report)?, b)),
            None => None,
        };
        self.stop(plan, report).map_err(Outcome::Retry)?;
        self.check_ports_free(plan)?;
        self.fresh_run_dir(&run, base.as_ref(), report)?;
        let argv = self.argv(plan, attempt, &run).map_err(Outcome::Fatal)?;
        // Do not start a VM only to stop it again.
        crate::signal::check().map_err(|i| Outcome::Fatal(anyhow!("before starting QEMU: {i}")))?;
        let timeout = attempt.scale(self.config.start_timeout);
        let start = Instant::now();
        self.launch(&argv, timeout, &run, report)?;
        let pid = run.pid();
        self.wait_running(&run, pid, start, timeout, report)?;
        self.report_running(plan, &run, pid, report);
        Ok(())
    }

    /// Fatal when a port to forward is taken already: QEMU would fail on
    /// it, and so would every reload.
    fn check_ports_free(&self, plan: &Plan) -> Result<(), Outcome> {
        for f in self.config.forwards(plan).map_err(Outcome::Fatal)? {
            if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", f.host)) {
                return Err(fatal(format!(
                    "port {} on 127.0.0.1 (forwarded to the guest's port {}) is already in use ({e}): stop what holds it or give computer `{}` another `port`",
                    f.host, f.guest, plan.computer.name
                )));
            }
        }
        Ok(())
    }

    /// The run directory, its console log moved aside, a fresh overlay.
    fn fresh_run_dir(
        &self,
        run: &RunDir,
        base: Option<&(String, PathBuf)>,
        report: &Reporter,
    ) -> Result<(), Outcome> {
        // 0700 whatever the umask: it is in the state directory by default.
        crate::state::make_dirs(&run.dir).map_err(|e| {
            fatal(format!(
                "cannot create the run directory {}: {e} (set `run_dir` or `state_dir` to a writable place)",
                run.dir.display()
            ))
        })?;
        if run.console.exists() {
            let _ = std::fs::rename(&run.console, run.dir.join("console.log.old"));
        }
        if let Some((fmt, base)) = base {
            self.overlay(base, fmt, run, report)?;
        }
        Ok(())
    }

    /// Runs the QEMU command line, which daemonizes: done when the launcher
    /// exits 0. A failed launch leaves no VM behind.
    fn launch(
        &self,
        argv: &[String],
        timeout: Duration,
        run: &RunDir,
        report: &Reporter,
    ) -> Result<(), Outcome> {
        let c = &self.config;
        // The daemonized QEMU is the computer: it outlives the launcher.
        let cmd = Cmd::new(argv, timeout).keeps_daemons();
        let (accel, why) = resolve_accel(c.accel);
        report.info(&format!("accelerator: {} ({why})", accel.name()));
        report.info(&format!("starting `{}`", cmd.display()));
        let out = match cmd.run() {
            Ok(o) => o,
            Err(e) => {
                // The launcher is gone; a QEMU it daemonized may not be.
                let _ = stop_run(run, report);
                if let Some(p) = e.partial() {
                    report.output(&cmd.display(), p);
                }
                return Err(e.into_outcome(
                    "starting QEMU",
                    &cmd.display(),
                    Hints {
                        spawn: "install qemu-system-x86 or fix `qemu`",
                        timeout: "QEMU did not finish starting and was stopped",
                    },
                ));
            }
        };
        report.output(&cmd.display(), &out);
        if out.success() {
            return Ok(());
        }
        let _ = stop_run(run, report);
        let text = out.text();
        let msg = format!(
            "`{}` exited {}: {}",
            c.qemu,
            out.status,
            crate::exec::excerpt(&text, 5)
        );
        // Bad arguments, files or ports do not get better on a reload;
        // a host short of memory might.
        Err(if text.contains("Cannot allocate memory") {
            Outcome::Retry(anyhow!(msg))
        } else if text.contains("hostfwd") || text.contains("host forwarding") {
            fatal(format!("{msg} (a forwarded port is in use?)"))
        } else {
            fatal(msg)
        })
    }

    /// Waits (step `qemu running`) until QMP says the VM (QEMU's pid
    /// `pid`) runs, up to `timeout` after `start`. A VM that exits or fails
    /// meanwhile, or does not run in time, is stopped and asks for a retry,
    /// with the console's last lines.
    fn wait_running(
        &self,
        run: &RunDir,
        pid: Option<i32>,
        start: Instant,
        timeout: Duration,
        report: &Reporter,
    ) -> Result<(), Outcome> {
        let timeout = timeout.saturating_sub(start.elapsed());
        report.step("qemu running", Some(timeout));
        let limits = Limits {
            timeout,
            stall: None,
        };
        // Set when the VM exited or failed: a reload may help.
        let mut failed = false;
        let waited = wait::poll(report, limits, Pace::CHEAP, |_| {
            let p = vm_status(run, pid);
            failed = matches!(p, Poll::Fatal(_));
            p
        });
        let o = match waited.into_outcome("QEMU start", timeout, report) {
            Ok(_) => {
                report.step_done(&format!("running after {}", duration::fmt(start.elapsed())));
                return Ok(());
            }
            Err(o) => o,
        };
        let _ = stop_run(run, report);
        // An interrupt stays fatal; a VM that died or failed, or did not
        // run in time, asks for a reload.
        if let Outcome::Fatal(_) = o
            && !failed
        {
            return Err(o);
        }
        let what = o.error().map(|e| format!("{e:#}")).unwrap_or_default();
        let console = run.console_tail();
        Err(Outcome::Retry(anyhow!(
            "{what}; console: {}",
            if console.is_empty() {
                "(empty)".into()
            } else {
                console
            }
        )))
    }

    /// Says where the running VM is: its pid, forwards and console.
    fn report_running(&self, plan: &Plan, run: &RunDir, pid: Option<i32>, report: &Reporter) {
        let fw: Vec<String> = self
            .config
            .forwards(plan)
            .unwrap_or_default()
            .iter()
            .map(|f| format!("127.0.0.1:{} -> {}", f.host, f.guest))
            .collect();
        report.info(&format!(
            "VM running (pid {}, forwards {}, console {})",
            pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into()),
            fw.join(", "),
            run.console.display()
        ));
    }
}

impl Provisioner for Qemu {
    /// The base disk (unless the image boots a kernel directly without
    /// one).
    fn local_files(&self, plan: &Plan) -> Vec<LocalFile> {
        let img = &plan.image.config;
        match (&img.kernel, &img.source) {
            (Some(_), None) => Vec::new(),
            _ => vec![LocalFile::new(
                Path::new(&plan.image.source),
                &["images", &plan.image.name, "source"],
                FileUse::Read,
            )],
        }
    }

    fn describe(&self, plan: &Plan) -> Vec<String> {
        self.config.describe(plan)
    }

    fn power_off(&self) -> Option<&dyn PowerOff> {
        Some(self)
    }

    /// The base image must not be a file of the computer's run directory
    /// that a load replaces (its overlay above all).
    fn vet(&self, plan: &Plan) -> Result<(), KeyError> {
        if let Some(why) = plan
            .image
            .config
            .cmdline
            .as_deref()
            .and_then(|cl| super::unknown_placeholder(cl, &[]))
        {
            return Err(KeyError {
                path: vec!["images".into(), plan.image.name.clone(), "cmdline".into()],
                message: format!("image `{}`: `cmdline`: {why}", plan.image.name),
            });
        }
        let Some(base) = base_of(plan) else {
            return Ok(());
        };
        let run = RunDir::new(&self.config, plan);
        let Some(f) = run.replaced().into_iter().find(|f| same_file(&base, f)) else {
            return Ok(());
        };
        let path = if plan.provisioner.table.contains_key("run_dir") {
            vec!["provisioners", plan.provisioner.name.as_str(), "run_dir"]
        } else {
            vec!["images", plan.image.name.as_str(), "source"]
        };
        Err(KeyError {
            path: path.into_iter().map(String::from).collect(),
            message: format!(
                "image `{}`'s base {} is {} of computer `{}`'s run directory, which every load replaces: move the base image, or give the computer another run_dir",
                plan.image.name,
                base.display(),
                f.display(),
                plan.computer.name
            ),
        })
    }

    fn load(&self, plan: &Plan, attempt: Attempt, report: &Reporter) -> Outcome {
        match self.load_inner(plan, attempt, report) {
            Ok(()) => Outcome::Done,
            Err(o) => o.context(format!("qemu load of {}", plan.computer.name)),
        }
    }

    fn power_reset(&self, plan: &Plan, _attempt: Attempt, report: &Reporter) -> Option<Outcome> {
        let run = RunDir::new(&self.config, plan);
        report.info(&format!(
            "power reset of {} through QMP system_reset",
            plan.computer.name
        ));
        Some(
            match Qmp::connect(&run.qmp, QMP_TIMEOUT)
                .and_then(|mut q| q.execute("system_reset", None))
            {
                Ok(_) => Outcome::Done,
                Err(e) => Outcome::Retry(e.context(format!(
                    "power reset of {}: is its VM running? load it again",
                    plan.computer.name
                ))),
            },
        )
    }
}

/// `reimage power-off`: the VM stops the way a load stops the one before
/// it (QMP quit, then signals); the run directory keeps the overlay and the
/// console log.
impl PowerOff for Qemu {
    fn off(&self, plan: &Plan, report: &Reporter) -> Outcome {
        let run = RunDir::new(&self.config, plan);
        let name = &plan.computer.name;
        if run.processes().is_empty() {
            report.info(&format!(
                "{name}: no VM of ours runs from {}: it is off",
                run.dir.display()
            ));
        }
        match stop_run(&run, report) {
            Ok(()) => Outcome::Done,
            Err(e) => Outcome::Retry(e.context(format!("qemu power-off of {name}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A QMP stand-in following the protocol's documented line format: the
    /// greeting, then one reply per command, with an event in between.
    fn standin(sock: &Path, replies: Vec<&'static str>) -> std::thread::JoinHandle<Vec<String>> {
        let l = UnixListener::bind(sock).expect("bind");
        std::thread::spawn(move || {
            let (s, _) = l.accept().expect("accept");
            let mut w = s.try_clone().expect("clone");
            let mut r = BufReader::new(s);
            let _ = w.write_all(
                b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}}, \"capabilities\": [\"oob\"]}}\n",
            );
            let mut got = Vec::new();
            for reply in replies {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                got.push(line.trim().to_string());
                let _ = w.write_all(b"{\"event\": \"RTC_CHANGE\", \"data\": {\"offset\": 0}}\n");
                let _ = w.write_all(reply.as_bytes());
                let _ = w.write_all(b"\n");
            }
            got
        })
    }

    #[test]
    fn qmp_negotiates_skips_events_and_reads_status() {
        let dir = std::env::temp_dir().join(format!("reimage-qmp-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let sock = dir.join("a.sock");
        let _ = std::fs::remove_file(&sock);
        let h = standin(
            &sock,
            vec![
                "{\"return\": {}}",
                "{\"return\": {\"status\": \"running\", \"singlestep\": false, \"running\": true}}",
                "{\"error\": {\"class\": \"GenericError\", \"desc\": \"nope\"}}",
            ],
        );
        let mut q = Qmp::connect(&sock, Duration::from_secs(2)).expect("connect");
        assert_eq!(q.status().expect("status"), "running");
        let e = q.execute("system_reset", None).expect_err("error reply");
        assert!(format!("{e:#}").contains("nope"), "{e:#}");
        let got = h.join().expect("standin");
        assert_eq!(got[0], "{\"execute\":\"qmp_capabilities\"}");
        assert_eq!(got[1], "{\"execute\":\"query-status\"}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn defaults_validate_and_bad_values_do_not() {
        assert!(QemuConfig::default().validate().is_ok());
        let c = QemuConfig {
            memory: 4,
            ..QemuConfig::default()
        };
        assert!(c.validate().is_err());
        let c = QemuConfig {
            forwards: vec![
                Forward {
                    host: 2222,
                    guest: 22,
                },
                Forward {
                    host: 2222,
                    guest: 80,
                },
            ],
            ..QemuConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("twice"));
        let c: QemuConfig = toml::from_str(
            "accel = \"tcg\"\nstart_timeout = \"2m\"\nforwards = [{ host = 2222, guest = 22 }]",
        )
        .expect("parses");
        assert_eq!(c.accel, Accel::Tcg);
        assert_eq!(Accel::Tcg.name(), "tcg");
        assert_eq!(Accel::Auto.name(), "auto");
        assert_eq!(c.start_timeout, Duration::from_secs(120));
        assert_eq!(c.memory, 256);
        assert!(toml::from_str::<QemuConfig>("acel = \"tcg\"").is_err());
    }
}
