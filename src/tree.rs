//! A command's whole process tree ends with it: every process the command
//! starts, also one that starts a session of its own or double-forks, is
//! killed when the command ends, times out or is interrupted, and when
//! reimage dies the next run of the computer ends what is left before it
//! loads.
//!
//! Two mechanisms, chosen once per run ([`Run::start`]) and named in its
//! events:
//!
//! - **cgroup**: where the host delegates a cgroup v2 to reimage (its own
//!   cgroup is writable and not a systemd unit that did not set
//!   `Delegate=yes`), the run gets a cgroup `reimage-COMPUTER-PID` beside
//!   itself and each command a leaf in it, joined before exec. Nothing the
//!   command starts can leave it without privileges (moving itself to
//!   another cgroup); at the end the leaf is killed whole (`cgroup.kill`,
//!   or freeze, kill, thaw where the kernel is older than 5.14).
//! - **subreaper** otherwise: reimage is a child subreaper
//!   (PR_SET_CHILD_SUBREAPER), so a process orphaned by its parent's exit
//!   comes to reimage instead of init, and every command carries
//!   [`MARKER`] in its environment, which its descendants inherit. At the
//!   end the processes with the command's marker, their descendants, and
//!   the orphans reimage adopted are killed, in rounds until none is left.
//!   A process that both clears its environment and is orphaned while
//!   reimage does not run can escape.
//!
//! Either way the command itself gets SIGKILL when reimage dies
//! (PR_SET_PDEATHSIG, see `exec`), and the run records its cgroup and
//! marker in the computer's state directory (`tree.json`): a run that was
//! killed (SIGKILL) leaves its record, and the next run on the computer
//! ends the processes the record points to (the cgroup; else the marker,
//! found in `/proc/PID/environ`) before anything else, says so in an
//! event, and refuses to run (exit 73) while one of them still lives.
//!
//! Like the signal flag, the run's mechanism is process-wide: the
//! commands that `exec` starts anywhere in the run find it here.

use rustix::process::{Pid, Signal};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::backoff::Backoff;
use crate::error::Error;
use crate::report::Reporter;
use crate::state::StateDir;

/// The environment variable that marks every process of a command:
/// `PID.START/N` of the reimage run and the command (`PID.START/N/kept`
/// for one whose daemon is its point, see `Cmd::keeps_daemons`).
pub const MARKER: &str = "REIMAGE_TREE";

/// How long ending a tree may take before what is left is given up on
/// (a process in uninterruptible sleep dies when its I/O returns).
const END_WITHIN: Duration = Duration::from_secs(10);

/// This process as a marker prefix: `PID.START`.
static TOKEN: LazyLock<String> = LazyLock::new(|| {
    let pid = std::process::id();
    format!("{pid}.{}", crate::exec::start_time(pid).unwrap_or(0))
});

/// The run's mechanism, once [`Run::start`] chose it.
static RUN: OnceLock<Container> = OnceLock::new();

/// Commands started so far (numbers their markers and leaves).
static NEXT: AtomicU64 = AtomicU64::new(1);

/// The pids of the commands `exec` runs now (its `Child`ren, which only it
/// may reap), and a lock that keeps a sweep from looking at a child that
/// is between fork and exec (not marked yet).
static SPAWNING: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

fn spawning() -> MutexGuard<'static, BTreeSet<u32>> {
    SPAWNING.lock().unwrap_or_else(|p| p.into_inner())
}

/// How the run holds its commands' processes.
#[derive(Debug)]
struct Container {
    /// The run's cgroup, where one is delegated.
    cgroup: Option<PathBuf>,
    /// reimage is a child subreaper (no cgroup).
    subreaper: bool,
}

/// What the computer's `tree.json` says of the run that wrote it.
#[derive(Debug, Serialize, Deserialize, Clone)]
struct Record {
    /// The run's process: pid, start time, boot.
    pid: u32,
    pid_start: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    boot_id: Option<String>,
    /// The value its commands' markers start with (before `/`).
    marker: String,
    /// Its cgroup, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cgroup: Option<PathBuf>,
    /// When it started (RFC 3339), for messages.
    started: String,
}

/// The run's hold on its commands' processes: ends whatever is left of
/// them when dropped (the run ends), removes the run's cgroup and record.
pub struct Run {
    state: StateDir,
    computer: String,
}

impl Run {
    /// Before a run loads anything: ends what an earlier run of `computer`
    /// left (Err, exit 73, when some of it will not die), chooses how this
    /// run holds its commands' processes, records it, and says both in
    /// events.
    pub fn start(state: &StateDir, computer: &str, report: &Reporter) -> Result<Run, Error> {
        if let Some(v) = std::env::var_os("REIMAGE_PROCESS_TREE")
            && !["", "auto", "cgroup", "subreaper"].contains(&v.to_str().unwrap_or("?"))
        {
            return Err(Error::Usage(format!(
                "REIMAGE_PROCESS_TREE is {v:?}: set it to auto, cgroup or subreaper, or unset it"
            )));
        }
        end_earlier(state, computer, report)?;
        let container = RUN.get_or_init(|| choose(computer));
        if container.cgroup.is_none()
            && std::env::var("REIMAGE_PROCESS_TREE").as_deref() == Ok("cgroup")
        {
            return Err(Error::Fatal(anyhow::anyhow!(
                "REIMAGE_PROCESS_TREE=cgroup, but there is no delegated cgroup: {}",
                why_not().unwrap_or_default()
            )));
        }
        match (&container.cgroup, container.subreaper) {
            (Some(cg), _) => report.info(&format!(
                "process tree: the commands run in cgroup {} (one leaf each); whatever a command starts is killed with it",
                cg.display()
            )),
            (None, true) => report.info(&format!(
                "process tree: no delegated cgroup ({}); reimage is the subreaper of what its commands start and ends what carries their {MARKER} marker; a process that drops the marker and leaves its parent can escape",
                why_not().unwrap_or_default()
            )),
            (None, false) => report.warn(&format!(
                "process tree: neither a delegated cgroup ({}) nor a subreaper: only what carries a command's {MARKER} marker ends with it",
                why_not().unwrap_or_default()
            )),
        }
        let me = std::process::id();
        let record = Record {
            pid: me,
            pid_start: crate::exec::start_time(me).unwrap_or(0),
            boot_id: crate::exec::boot_id(),
            marker: TOKEN.clone(),
            cgroup: container.cgroup.clone(),
            started: crate::report::rfc3339(std::time::SystemTime::now()),
        };
        let text = serde_json::to_vec_pretty(&record).map_err(anyhow::Error::from)?;
        if let Err(e) = state.write_tree(computer, &text) {
            report.warn(&format!(
                "{e:#}: if reimage is killed, the next run cannot find what its commands left"
            ));
        }
        Ok(Run {
            state: state.clone(),
            computer: computer.into(),
        })
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let Some(c) = RUN.get() else { return };
        let mut left = match &c.cgroup {
            Some(cg) => end_cgroup(cg).err().unwrap_or_default(),
            None => Vec::new(),
        };
        let prefix = format!("{}/", *TOKEN);
        if let Err(l) = sweep(&|v: &str| run_marker(v, &prefix), &[], c.subreaper) {
            left.extend(l);
        }
        // Kept while something lives: the next run tries again.
        if left.is_empty() {
            let _ = self.state.remove_tree(&self.computer);
        }
    }
}

/// True when marker value `v` is a contained command's of the run whose
/// prefix (`PID.START/`) is `prefix`.
fn run_marker(v: &str, prefix: &str) -> bool {
    v.starts_with(prefix) && !v.ends_with("/kept")
}

/// Why this run has no cgroup (after [`choose`]).
static WHY_NOT: OnceLock<String> = OnceLock::new();

fn why_not() -> Option<String> {
    WHY_NOT.get().cloned()
}

/// Picks the run's mechanism: a cgroup where one is delegated (unless
/// `REIMAGE_PROCESS_TREE=subreaper` says not to try), else the subreaper.
fn choose(computer: &str) -> Container {
    let cgroup = match std::env::var("REIMAGE_PROCESS_TREE").as_deref() {
        Ok("subreaper") => Err("REIMAGE_PROCESS_TREE=subreaper".to_string()),
        _ => run_cgroup(computer),
    };
    match cgroup {
        Ok(cg) => Container {
            cgroup: Some(cg),
            subreaper: false,
        },
        Err(why) => {
            let _ = WHY_NOT.set(why);
            Container {
                cgroup: None,
                subreaper: rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
                    .is_ok(),
            }
        }
    }
}

/// Makes the run's cgroup beside reimage's own: Err says why there is
/// none.
fn run_cgroup(computer: &str) -> Result<PathBuf, String> {
    let own = own_cgroup().ok_or("no cgroup v2 hierarchy is mounted")?;
    if Path::new("/run/systemd/system").exists()
        && own != Path::new(&mount_of_cgroup2().unwrap_or_default())
        && !delegated(&own)
    {
        return Err(format!(
            "systemd manages {} and did not delegate it: run reimage in a unit with Delegate=yes",
            own.display()
        ));
    }
    remove_stale(&own);
    let dir = own.join(format!("reimage-{computer}-{}", std::process::id()));
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create a cgroup in {}: {e}", own.display())),
    }
    if !dir.join("cgroup.kill").exists() && !dir.join("cgroup.freeze").exists() {
        let _ = std::fs::remove_dir(&dir);
        return Err("the kernel's cgroup v2 has neither cgroup.kill nor cgroup.freeze".into());
    }
    Ok(dir)
}

/// Removes the empty cgroups that runs killed with SIGKILL left beside
/// reimage (`reimage-COMPUTER-PID` whose PID no process has now): what
/// still holds processes stays for that computer's next run, which ends
/// it and says so (rmdir(2) refuses a cgroup that is not empty).
fn remove_stale(own: &Path) {
    for dir in subdirs(own) {
        let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let pid = name
            .strip_prefix("reimage-")
            .and_then(|r| r.rsplit_once('-'))
            .and_then(|(_, p)| p.parse::<i32>().ok());
        if let Some(pid) = pid
            && !crate::exec::alive(pid)
            && cgroup_pids(&dir).is_empty()
        {
            remove_cgroup(&dir);
        }
    }
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or
/// `/sys/fs/cgroup/unified` on a hybrid layout), and the cgroup path its
/// root stands for.
fn mount_of_cgroup2() -> Option<String> {
    cgroup2_mount().map(|(m, _)| m)
}

fn cgroup2_mount() -> Option<(String, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [TAGS...] - FSTYPE ...
        let (head, tail) = l.split_once(" - ")?;
        if tail.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let f: Vec<&str> = head.split_whitespace().collect();
        Some((unescape(f.get(4)?), unescape(f.get(3)?)))
    })
}

/// mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(n) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(n);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// reimage's own cgroup v2 directory.
fn own_cgroup() -> Option<PathBuf> {
    let (mount, root) = cgroup2_mount()?;
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let rel = path.strip_prefix(&root).unwrap_or(path);
    Some(Path::new(&mount).join(rel.trim_start_matches('/')))
}

/// systemd marks a cgroup it delegated (Delegate=yes) with this extended
/// attribute (systemd 251 and later).
fn delegated(dir: &Path) -> bool {
    ["trusted.delegate", "user.delegate"].iter().any(|name| {
        let mut buf = [0u8; 8];
        matches!(rustix::fs::getxattr(dir, *name, &mut buf), Ok(n) if &buf[..n] == b"1")
    })
}

/// One command's process tree.
pub struct Tree {
    marker: String,
    kept: bool,
    leaf: Option<Leaf>,
    ended: bool,
}

/// A command's cgroup leaf, and its `cgroup.procs` open for the child to
/// join before exec.
struct Leaf {
    dir: PathBuf,
    procs: OwnedFd,
}

impl Tree {
    /// The tree of the next command; `kept` for one whose daemon is its
    /// point (it is left alone: only the command's process group ends).
    pub fn new(kept: bool) -> Tree {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let marker = if kept {
            format!("{}/{n}/kept", *TOKEN)
        } else {
            format!("{}/{n}", *TOKEN)
        };
        let leaf = match RUN.get().and_then(|c| c.cgroup.as_ref()) {
            Some(cg) if !kept => Leaf::make(&cg.join(format!("c{n}"))),
            _ => None,
        };
        Tree {
            marker,
            kept,
            leaf,
            ended: false,
        }
    }

    /// Marks the command and, with a cgroup, has it join its leaf before
    /// it runs (a raw write(2) in the forked child).
    pub fn prepare(&self, c: &mut Command) {
        c.env(MARKER, &self.marker);
        if let Some(leaf) = &self.leaf {
            let fd = leaf.procs.as_raw_fd();
            // SAFETY: the hook runs in the forked child before exec; it
            // makes one write(2) on a descriptor the parent keeps open
            // until the spawn returned, and allocates nothing.
            unsafe {
                c.pre_exec(move || {
                    let fd = std::os::fd::BorrowedFd::borrow_raw(fd);
                    rustix::io::write(fd, b"0")?;
                    Ok(())
                });
            }
        }
    }

    /// Starts `c` (prepared) so that no sweep sees it between fork and
    /// exec, and remembers it as a command `exec` waits for.
    pub fn spawn(&self, c: &mut Command) -> std::io::Result<Child> {
        let mut running = spawning();
        let child = c.spawn()?;
        running.insert(child.id());
        Ok(child)
    }

    /// Sends `sig` to every process of the tree (a short warning before
    /// [`Tree::end`]'s SIGKILL).
    pub fn signal(&self, sig: Signal) {
        if self.kept {
            return;
        }
        let pids = match &self.leaf {
            Some(l) => cgroup_pids(&l.dir),
            None => {
                let procs = scan();
                let want = format!("{MARKER}={}", self.marker);
                procs
                    .values()
                    .filter(|p| !p.zombie && environ_has(p.pid, |e| e == want))
                    .map(|p| p.pid)
                    .collect()
            }
        };
        for p in pids {
            if let Some(p) = Pid::from_raw(p as i32) {
                let _ = rustix::process::kill_process(p, sig);
            }
        }
    }

    /// Kills every process left of the tree and waits until they are
    /// gone (at most [`END_WITHIN`]). `child` is the command's own process
    /// while it is not reaped yet (its pid cannot have gone to another
    /// process): its descendants count too, whatever their environment.
    /// Returns how many processes besides it were killed; Err lists the
    /// pids that would not die.
    pub fn end(&mut self, child: Option<u32>) -> Result<usize, Vec<u32>> {
        if self.ended || self.kept {
            return Ok(0);
        }
        self.ended = true;
        let roots: Vec<u32> = child.into_iter().collect();
        let r = match self.leaf.take() {
            Some(l) => end_cgroup(&l.dir),
            None => {
                let adopt = RUN.get().is_some_and(|c| c.subreaper);
                let marker = self.marker.as_str();
                sweep(&|v: &str| v == marker, &roots, adopt)
            }
        };
        r.map(|killed| killed.iter().filter(|p| !roots.contains(p)).count())
    }

    /// The command `child` was reaped: it is no longer one to leave alone.
    pub fn reaped(&self, child: u32) {
        spawning().remove(&child);
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        // A tree dropped without an end (an error path) still ends.
        let _ = self.end(None);
    }
}

impl Leaf {
    fn make(dir: &Path) -> Option<Leaf> {
        std::fs::create_dir(dir).ok()?;
        match std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))
        {
            Ok(f) => Some(Leaf {
                dir: dir.to_path_buf(),
                procs: f.into(),
            }),
            Err(_) => {
                let _ = std::fs::remove_dir(dir);
                None
            }
        }
    }
}

/// The pids in cgroup `dir` and the cgroups below it.
fn cgroup_pids(dir: &Path) -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    for sub in subdirs(dir) {
        pids.extend(cgroup_pids(&sub));
    }
    pids
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// A cgroup's `cgroup.events` says `KEY 1`.
fn cgroup_event(dir: &Path, key: &str) -> bool {
    std::fs::read_to_string(dir.join("cgroup.events"))
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_once(' ') == Some((key, "1")))
}

/// Writes `value` to the cgroup file `dir/name`.
fn cgroup_write(dir: &Path, name: &str, value: &str) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join(name))?
        .write_all(value.as_bytes())
}

/// Kills everything in cgroup `dir` (and below), waits until it is empty
/// and removes it (and below). Ok: the pids killed; Err: those left.
fn end_cgroup(dir: &Path) -> Result<Vec<u32>, Vec<u32>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let killed = cgroup_pids(dir);
    if !killed.is_empty() {
        kill_cgroup(dir);
    }
    let end = Instant::now() + END_WITHIN;
    let mut pause = Backoff::new(Duration::from_millis(1), Duration::from_millis(50));
    while cgroup_event(dir, "populated") {
        if Instant::now() >= end {
            return Err(cgroup_pids(dir));
        }
        std::thread::sleep(pause.next_pause());
        // Another fork may have slipped in under a freeze-less kill.
        if !dir.join("cgroup.kill").exists() {
            kill_cgroup(dir);
        }
    }
    remove_cgroup(dir);
    Ok(killed)
}

/// SIGKILL to every process in cgroup `dir` and below: `cgroup.kill`
/// (Linux 5.14), else freeze it, kill what it holds, thaw it (the kills
/// land as it thaws; a frozen cgroup cannot fork meanwhile).
fn kill_cgroup(dir: &Path) {
    if cgroup_write(dir, "cgroup.kill", "1").is_ok() {
        return;
    }
    freeze_kill(dir);
}

fn freeze_kill(dir: &Path) {
    if cgroup_write(dir, "cgroup.freeze", "1").is_ok() {
        let end = Instant::now() + Duration::from_secs(1);
        while !cgroup_event(dir, "frozen") && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    for p in cgroup_pids(dir) {
        if let Some(p) = Pid::from_raw(p as i32) {
            let _ = rustix::process::kill_process(p, Signal::KILL);
        }
    }
    let _ = cgroup_write(dir, "cgroup.freeze", "0");
}

/// Removes cgroup `dir` and the (empty) cgroups below it.
fn remove_cgroup(dir: &Path) {
    for sub in subdirs(dir) {
        remove_cgroup(&sub);
    }
    let _ = std::fs::remove_dir(dir);
}

/// What `/proc/PID/stat` says of a process.
#[derive(Debug, Clone)]
struct Proc {
    pid: u32,
    ppid: u32,
    start: u64,
    zombie: bool,
    comm: String,
}

/// Every process on the host, by pid.
fn scan() -> BTreeMap<u32, Proc> {
    let mut all = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return all;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if let Some(p) = stat(pid) {
            all.insert(pid, p);
        }
    }
    all
}

fn stat(pid: u32) -> Option<Proc> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, rest) = text.rsplit_once(')')?;
    let comm = head.split_once('(').map(|(_, c)| c.to_string())?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(Proc {
        pid,
        zombie: f.first() == Some(&"Z"),
        ppid: f.get(1)?.parse().ok()?,
        start: f.get(22 - 3)?.parse().ok()?,
        comm,
    })
}

/// The most of a process's environment read, in bytes.
const ENVIRON_MAX: u64 = 8 << 20;

/// True when some `NAME=value` entry of process `pid`'s environment
/// (as it was at exec) passes `f`; false when it cannot be read.
fn environ_has(pid: u32, f: impl Fn(&str) -> bool) -> bool {
    let Ok(file) = std::fs::File::open(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let mut buf = Vec::new();
    if file.take(ENVIRON_MAX).read_to_end(&mut buf).is_err() {
        return false;
    }
    buf.split(|b| *b == 0)
        .any(|e| std::str::from_utf8(e).is_ok_and(&f))
}

/// The value of process `pid`'s marker, if it has one.
fn marker_of(pid: u32) -> Option<String> {
    let file = std::fs::File::open(format!("/proc/{pid}/environ")).ok()?;
    let mut buf = Vec::new();
    file.take(ENVIRON_MAX).read_to_end(&mut buf).ok()?;
    let want = format!("{MARKER}=");
    buf.split(|b| *b == 0).find_map(|e| {
        std::str::from_utf8(e)
            .ok()?
            .strip_prefix(&want)
            .map(str::to_string)
    })
}

/// Kills, in rounds until none is left (at most [`END_WITHIN`]), every
/// process whose marker passes `marked`, `roots`, all their descendants,
/// and with `adopted` the orphans reimage adopted as a subreaper that
/// carry no marker (never a command `exec` still runs). Ok: the pids
/// killed; Err: those that would not die.
fn sweep(
    marked: &dyn Fn(&str) -> bool,
    roots: &[u32],
    adopted: bool,
) -> Result<Vec<u32>, Vec<u32>> {
    let me = std::process::id();
    let end = Instant::now() + END_WITHIN;
    let mut pause = Backoff::new(Duration::from_millis(1), Duration::from_millis(50));
    let mut killed = BTreeSet::new();
    loop {
        let running = spawning();
        let procs = scan();
        let mut doomed: BTreeSet<u32> = procs
            .values()
            .filter(|p| !p.zombie && p.pid != me)
            .filter(|p| {
                roots.contains(&p.pid)
                    || match marker_of(p.pid) {
                        Some(v) => marked(&v),
                        None => adopted && p.ppid == me && !running.contains(&p.pid),
                    }
            })
            .map(|p| p.pid)
            .collect();
        descendants(&procs, &mut doomed, me);
        if adopted {
            reap_adopted(&procs, &running, me);
        }
        drop(running);
        if doomed.is_empty() {
            return Ok(killed.into_iter().collect());
        }
        if Instant::now() >= end {
            return Err(doomed.into_iter().collect());
        }
        for pid in &doomed {
            if let Some(p) = procs.get(pid) {
                kill_exactly(p, Signal::KILL);
            }
        }
        killed.extend(doomed);
        std::thread::sleep(pause.next_pause());
    }
}

/// Adds to `set` every live descendant (by parent pid) of its members,
/// never `me`.
fn descendants(procs: &BTreeMap<u32, Proc>, set: &mut BTreeSet<u32>, me: u32) {
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for p in procs.values().filter(|p| !p.zombie) {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    let mut todo: Vec<u32> = set.iter().copied().collect();
    while let Some(p) = todo.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or_default() {
            if c != me && set.insert(c) {
                todo.push(c);
            }
        }
    }
}

/// Reaps the zombies that reimage adopted as a subreaper (children that
/// are not a command `exec` waits for).
fn reap_adopted(procs: &BTreeMap<u32, Proc>, running: &BTreeSet<u32>, me: u32) {
    for p in procs.values() {
        if p.zombie
            && p.ppid == me
            && !running.contains(&p.pid)
            && let Some(pid) = Pid::from_raw(p.pid as i32)
        {
            let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::NOHANG);
        }
    }
}

/// Sends `sig` to process `p`, and only to it: through a pidfd opened
/// after checking that the pid still has the start time it was seen with
/// (a pid alone may have gone to another process meanwhile).
fn kill_exactly(p: &Proc, sig: Signal) {
    let Some(pid) = Pid::from_raw(p.pid as i32) else {
        return;
    };
    match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => {
            if crate::exec::start_time(p.pid) == Some(p.start) {
                let _ = rustix::process::pidfd_send_signal(&fd, sig);
            }
        }
        // No pidfd (before Linux 5.3): the start time, then kill(2).
        Err(_) => {
            if crate::exec::start_time(p.pid) == Some(p.start) {
                let _ = rustix::process::kill_process(pid, sig);
            }
        }
    }
}

/// Ends what an earlier run of `computer` left, as its `tree.json` says.
fn end_earlier(state: &StateDir, computer: &str, report: &Reporter) -> Result<(), Error> {
    let path = state.tree_file(computer);
    let Some(rec) = read_record(state, computer) else {
        return Ok(());
    };
    let here = crate::exec::boot_id();
    if rec.boot_id.is_some() && here.is_some() && rec.boot_id != here {
        // Another boot: nothing of it runs.
        let _ = state.remove_tree(computer);
        return Ok(());
    }
    let who = format!(
        "the earlier run of `{computer}` (pid {}, started {})",
        rec.pid, rec.started
    );
    if rec.pid != std::process::id()
        && crate::exec::still_runs(rec.pid, rec.pid_start, rec.boot_id.as_deref())
    {
        return Err(Error::Locked(format!(
            "{who} still runs without holding the computer's lock: stop it, then run again"
        )));
    }
    let before = scan();
    let mut killed = Vec::new();
    let mut left = Vec::new();
    let mut how = Vec::new();
    if let Some(cg) = rec.cgroup.as_deref().filter(|c| c.exists()) {
        if !ours(cg, computer, rec.pid) {
            return Err(Error::Fatal(anyhow::anyhow!(
                "{} names the cgroup {}, which is not one reimage makes for `{computer}` (reimage-{computer}-{}): not ending what is in it; remove the file if it was edited by hand",
                path.display(),
                cg.display(),
                rec.pid
            )));
        }
        how.push(format!("in its cgroup {}", cg.display()));
        match end_cgroup(cg) {
            Ok(k) => killed.extend(k),
            Err(l) => left.extend(l),
        }
    }
    let prefix = format!("{}/", rec.marker);
    match sweep(&|v: &str| run_marker(v, &prefix), &[], false) {
        Ok(k) if !k.is_empty() => {
            how.push(format!("by their {MARKER} marker"));
            killed.extend(k);
        }
        Ok(_) => {}
        Err(l) => left.extend(l),
    }
    let name = |p: &u32| match before.get(p) {
        Some(pr) => format!("{p} ({})", pr.comm),
        None => p.to_string(),
    };
    if !killed.is_empty() {
        killed.sort_unstable();
        killed.dedup();
        report.warn(&format!(
            "{who} was killed (or crashed) before it ended its commands' processes; ended {} process(es) they left, found {}: {}",
            killed.len(),
            how.join(" and "),
            killed.iter().map(name).collect::<Vec<_>>().join(", ")
        ));
    }
    if !left.is_empty() {
        return Err(Error::Locked(format!(
            "{} process(es) of {who} did not die within {}: {}; not loading `{computer}` beside them: end them, then run again",
            left.len(),
            crate::duration::fmt(END_WITHIN),
            left.iter().map(name).collect::<Vec<_>>().join(", ")
        )));
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}

/// True when `cg` is a cgroup reimage makes for a run of `computer` with
/// pid `pid` (`reimage-COMPUTER-PID` under the cgroup v2 mount): a record
/// never steers reimage into killing another cgroup's processes.
fn ours(cg: &Path, computer: &str, pid: u32) -> bool {
    use std::path::Component;
    let Some(mount) = mount_of_cgroup2() else {
        return false;
    };
    cg.starts_with(&mount)
        && cg
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && cg.file_name() == Some(std::ffi::OsStr::new(&format!("reimage-{computer}-{pid}")))
}

/// The computer's tree record, if there is one that parses.
fn read_record(state: &StateDir, computer: &str) -> Option<Record> {
    let buf = state.read_tree(computer).ok()??;
    serde_json::from_slice(&buf).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_read() {
        assert_eq!(unescape(r"/sys/fs/cgroup\040x"), "/sys/fs/cgroup x");
        assert_eq!(unescape("/plain"), "/plain");
    }

    #[test]
    fn a_record_names_only_a_cgroup_reimage_makes() {
        let mount = PathBuf::from(mount_of_cgroup2().expect("cgroup v2 mounted"));
        assert!(ours(&mount.join("x/reimage-pc7-12"), "pc7", 12));
        assert!(!ours(&mount.join("x/reimage-pc7-12"), "pc7", 13));
        assert!(!ours(&mount.join("system.slice"), "pc7", 12));
        assert!(!ours(&mount.join("../reimage-pc7-12"), "pc7", 12));
        assert!(!ours(Path::new("/tmp/reimage-pc7-12"), "pc7", 12));
    }

    #[test]
    fn markers_of_kept_commands_are_not_the_runs_to_end() {
        assert!(run_marker("1.2/3", "1.2/"));
        assert!(!run_marker("1.2/3/kept", "1.2/"));
        assert!(!run_marker("11.2/3", "1.2/"));
    }

    #[test]
    fn a_sweep_ends_a_marked_double_forked_tree() {
        let marker = format!("{}/unit-{}", *TOKEN, std::process::id());
        let ready = std::env::temp_dir().join(format!("reimage-sweep-{}", std::process::id()));
        let _ = std::fs::remove_file(&ready);
        // The outer shell exits once the inner one (a new session) started
        // its child: they go to init (no subreaper in the test process)
        // and are found by their marker.
        let script = format!(
            "setsid sh -c 'sleep 300 & echo > {r}; sleep 300' & while [ ! -e {r} ]; do sleep 0.05; done",
            r = ready.display()
        );
        let mut c = Command::new("sh");
        c.args(["-c", &script]).env(MARKER, &marker);
        let mut child = c.spawn().expect("sh");
        let _ = child.wait();
        let want = marker.clone();
        let seen = |m: &str| m == want;
        let before: Vec<u32> = scan()
            .values()
            .filter(|p| !p.zombie && marker_of(p.pid).is_some_and(|v| seen(&v)))
            .map(|p| p.pid)
            .collect();
        assert!(before.len() >= 2, "{before:?}");
        let killed = sweep(&seen, &[], false).expect("all ended");
        assert!(before.iter().all(|p| killed.contains(p)), "{killed:?}");
        assert!(before.iter().all(|p| !crate::exec::alive(*p as i32)));
        let _ = std::fs::remove_file(&ready);
    }

    #[test]
    fn a_cgroup_is_ended_whole_by_kill_and_by_freeze() {
        let Some(own) = own_cgroup() else {
            panic!("no cgroup v2 mounted: the tests need one (see .ci/run)");
        };
        for (i, how) in ["kill", "freeze"].iter().enumerate() {
            let dir = own.join(format!("reimage-unit-{}-{i}", std::process::id()));
            let leaf = Leaf::make(&dir).expect("a cgroup (tests run as root)");
            let mut c = Command::new("sh");
            c.args(["-c", "setsid sleep 300 & sleep 300 & exec sleep 300"]);
            let fd = leaf.procs.as_raw_fd();
            // SAFETY: as in Tree::prepare.
            unsafe {
                c.pre_exec(move || {
                    rustix::io::write(std::os::fd::BorrowedFd::borrow_raw(fd), b"0")?;
                    Ok(())
                });
            }
            let mut child = c.spawn().expect("sh");
            let end = Instant::now() + Duration::from_secs(30);
            // Three sleeps, one in a session of its own.
            let sleeping = |p: &u32| stat(*p).is_some_and(|s| s.comm == "sleep");
            while cgroup_pids(&dir).iter().filter(|p| sleeping(p)).count() < 3
                && Instant::now() < end
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            let pids = cgroup_pids(&dir);
            assert_eq!(pids.len(), 3, "{pids:?}");
            let killed = if *how == "freeze" {
                freeze_kill(&dir);
                let end = Instant::now() + Duration::from_secs(30);
                while cgroup_event(&dir, "populated") && Instant::now() < end {
                    std::thread::sleep(Duration::from_millis(10));
                }
                assert!(!cgroup_event(&dir, "populated"));
                remove_cgroup(&dir);
                pids.clone()
            } else {
                end_cgroup(&dir).expect("ended")
            };
            let _ = child.wait();
            assert_eq!(killed.len(), 3);
            assert!(!dir.exists(), "{} removed", dir.display());
            for p in pids {
                assert!(!crate::exec::alive(p as i32), "{p} survived ({how})");
            }
        }
    }
}
