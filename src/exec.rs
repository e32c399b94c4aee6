//! Runs external commands: from an argument vector (never a shell), in their
//! own process group and process tree (`tree`), with a timeout after which
//! the whole tree is killed, stopped at once when reimage is interrupted,
//! and whatever they leave behind ended when they exit.

use rustix::process::{Pid, Signal};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::backoff::Backoff;
use crate::outcome::Outcome;
use crate::signal;
use crate::tree::Tree;

/// What a finished command left behind: one run here, or one run on the
/// computer over a channel (`control`).
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// Exit status, or `128 + signal` when it was killed by a signal.
    pub status: i32,
    /// Captured standard output (lossy UTF-8).
    pub stdout: String,
    /// Captured standard error (lossy UTF-8).
    pub stderr: String,
    /// How long it ran.
    pub elapsed: Duration,
}

impl Output {
    /// True when the command exited 0.
    pub fn success(&self) -> bool {
        self.status == 0
    }

    /// stdout and stderr together, trimmed, for error messages and output
    /// events. What either stream dropped is counted in one note at the
    /// top, so a later [`bounded`] still counts it (a note in the middle,
    /// behind stdout, would be cut away uncounted).
    pub fn text(&self) -> String {
        let (out_dropped, out) = split_note(&self.stdout);
        let (err_dropped, err) = split_note(&self.stderr);
        let mut s = out.trim().to_string();
        let e = err.trim();
        if !e.is_empty() {
            if !s.is_empty() {
                s.push('\n');
            }
            s.push_str(e);
        }
        with_note(&s, out_dropped + err_dropped)
    }
}

/// Why a command did not finish on its own.
#[derive(Debug)]
pub enum ExecError {
    /// It could not be started (missing binary, permissions).
    Spawn(std::io::Error),
    /// It ran past its timeout and its process group was killed.
    Timeout {
        /// The timeout it ran into.
        after: Duration,
        /// What it printed before it was killed.
        partial: Output,
    },
    /// reimage got SIGINT/SIGTERM; the child's group was killed.
    Interrupted(signal::Interrupted),
}

impl std::fmt::Display for ExecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExecError::Spawn(e) => write!(f, "could not start: {e}"),
            ExecError::Timeout { after, .. } => {
                write!(
                    f,
                    "timed out after {} and was killed",
                    crate::duration::fmt(*after)
                )
            }
            ExecError::Interrupted(i) => write!(f, "{i}"),
        }
    }
}

impl std::error::Error for ExecError {}

/// What to tell the user after the contract's own words when a command
/// fails in one of the ways [`ExecError::into_outcome`] classifies.
#[derive(Debug, Default, Clone, Copy)]
pub struct Hints<'a> {
    /// After "cannot start": what to install or which setting to fix.
    pub spawn: &'a str,
    /// After "ran past its timeout": what to check or raise.
    pub timeout: &'a str,
}

impl ExecError {
    /// What the command printed before it was killed, for the event log.
    pub fn partial(&self) -> Option<&Output> {
        match self {
            ExecError::Timeout { partial, .. } => Some(partial),
            _ => None,
        }
    }

    /// The contract's class of a command that did not end on its own: one
    /// that ran past its timeout is retry (a hung tool or host; loading
    /// again may help), one that cannot start is fatal (nothing changes
    /// until someone installs or fixes it), an interrupt is fatal (the
    /// runner reports it as interrupted). `what` names the computer and the
    /// step; `shown` is the command as displayed.
    pub fn into_outcome(self, what: &str, shown: &str, hints: Hints) -> Outcome {
        let hint = |h: &str| {
            if h.is_empty() {
                String::new()
            } else {
                format!("; {h}")
            }
        };
        match self {
            ExecError::Timeout { after, partial } => {
                let out = excerpt(&partial.text(), 5);
                let out = if out.is_empty() {
                    String::new()
                } else {
                    format!(" (last output: {out})")
                };
                Outcome::Retry(anyhow::anyhow!(
                    "{what}: `{shown}` ran past its timeout of {} and was killed{out}{}",
                    crate::duration::fmt(after),
                    hint(hints.timeout)
                ))
            }
            ExecError::Spawn(e) if transient(&e) => Outcome::Retry(anyhow::anyhow!(
                "{what}: cannot start `{shown}` now: {e}: this host is short of processes, memory or open files (tried {SPAWN_TRIES} times); a later attempt may succeed"
            )),
            ExecError::Spawn(e) => Outcome::Fatal(anyhow::anyhow!(
                "{what}: cannot start `{shown}`: {e}{}",
                hint(hints.spawn)
            )),
            e @ ExecError::Interrupted(_) => Outcome::Fatal(anyhow::anyhow!("{what}: {e}")),
        }
    }
}

/// A command to run: program, arguments, extra environment, timeout.
#[derive(Debug, Clone)]
pub struct Cmd {
    /// Program and arguments; `argv[0]` is looked up on PATH.
    pub argv: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Killed (the whole process tree) after this long.
    pub timeout: Duration,
    /// The daemon it leaves is its point (QEMU's `-daemonize`): only its
    /// process group ends with it, not its whole tree (see `tree`).
    keeps_daemons: bool,
}

impl Cmd {
    /// A command from an argument vector with a timeout.
    pub fn new<S: AsRef<str>>(argv: &[S], timeout: Duration) -> Cmd {
        Cmd {
            argv: argv.iter().map(|s| s.as_ref().to_string()).collect(),
            env: Vec::new(),
            timeout,
            keeps_daemons: false,
        }
    }

    /// Leaves the daemon the command starts (in a session of its own)
    /// running when it ends: for a command whose daemon is the point, as
    /// QEMU's `-daemonize` or a libvirt session daemon. Its process group
    /// still ends with it.
    pub fn keeps_daemons(mut self) -> Cmd {
        self.keeps_daemons = true;
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Cmd {
        self.env.push((k.into(), v.into()));
        self
    }

    /// The command line for messages (arguments are not secret by rule).
    pub fn display(&self) -> String {
        self.argv.join(" ")
    }

    /// Runs it to the end, the timeout, or an interrupt.
    ///
    /// Its output is read here, with a deadline, never by a thread that is
    /// joined: a daemon the command leaves behind (one that escaped its
    /// tree, or one it keeps, see [`Cmd::keeps_daemons`]) may hold the
    /// pipes open for as long as it likes, and reimage still returns at
    /// the timeout or the interrupt.
    /// Of each stream only the last [`KEEP_BYTES`] and [`KEEP_LINES`] are
    /// kept.
    pub fn run(&self) -> std::result::Result<Output, ExecError> {
        let mut r = self.start_retrying()?;
        // Without a pidfd: look for the exit after 2 ms, then ever later.
        let mut pause = Backoff::new(Duration::from_millis(2), Duration::from_millis(50));
        loop {
            let wait = r.next_wait(self.timeout, &mut pause);
            r.read_for(wait);
            if r.reap().is_err() {
                r.kill();
                break;
            }
            if r.drained() {
                break;
            }
            if let Err(i) = signal::check() {
                if r.exited.is_none() {
                    r.kill();
                }
                return Err(ExecError::Interrupted(i));
            }
            if r.start.elapsed() >= self.timeout {
                if r.exited.is_some() {
                    break;
                }
                return Err(r.time_out(self.timeout));
            }
        }
        Ok(r.output())
    }

    /// Starts it; a start that fails for want of processes, memory or
    /// descriptors (fork's EAGAIN, EMFILE) is tried again after a short
    /// pause, [`SPAWN_TRIES`] times in all, unless a signal arrives.
    fn start_retrying(&self) -> std::result::Result<Running, ExecError> {
        let mut pause = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let mut tries = 1;
        loop {
            signal::check().map_err(ExecError::Interrupted)?;
            match self.start() {
                Err(ExecError::Spawn(e)) if transient(&e) && tries < SPAWN_TRIES => {
                    tries += 1;
                    signal::sleep(pause.next_pause()).map_err(ExecError::Interrupted)?;
                }
                r => return r,
            }
        }
    }

    /// Starts it: no stdin, both outputs piped, in a process group of its
    /// own and a process tree (`tree`: a cgroup leaf or a marker), killed
    /// when reimage dies.
    fn start(&self) -> std::result::Result<Running, ExecError> {
        let Some((prog, args)) = self.argv.split_first() else {
            return Err(ExecError::Spawn(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "empty command",
            )));
        };
        let mut c = Command::new(prog);
        c.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        let tree = Tree::new(self.keeps_daemons);
        tree.prepare(&mut c);
        die_with_parent(&mut c);
        let start = Instant::now();
        let mut child = tree.spawn(&mut c).map_err(ExecError::Spawn)?;
        let pipes = Pipes {
            out: child.stdout.take(),
            err: child.stderr.take(),
            tails: [Tail::default(), Tail::default()],
            buf: vec![0; 64 * 1024],
        };
        // Turns readable when the child exits: with it (Linux 5.3+) and the
        // signal descriptor, the watch sleeps until output, the exit, a
        // signal or the timeout, with no wake-ups of its own.
        let pidfd = rustix::process::pidfd_open(
            Pid::from_child(&child),
            rustix::process::PidfdFlags::empty(),
        )
        .ok();
        Ok(Running {
            child,
            tree,
            pipes,
            pidfd,
            start,
            exited: None,
        })
    }
}

/// How often a start that fails for want of resources is tried.
pub const SPAWN_TRIES: u32 = 3;

/// A start failure that says nothing about the command, only that the host
/// is short of something now: processes (EAGAIN from fork), memory, open
/// files (per process or for the whole system), kernel buffers.
fn transient(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    e.raw_os_error()
        .map(Errno::from_raw_os_error)
        .is_some_and(|n| {
            [
                Errno::AGAIN,
                Errno::NOMEM,
                Errno::MFILE,
                Errno::NFILE,
                Errno::NOBUFS,
            ]
            .contains(&n)
        })
}

/// A started command, watched to its end.
struct Running {
    child: Child,
    /// Everything it starts; ended with it.
    tree: Tree,
    pipes: Pipes,
    /// Readable when the child exits; None where the kernel has no pidfd.
    pidfd: Option<OwnedFd>,
    start: Instant,
    /// The child's exit status, and when it was seen.
    exited: Option<(std::process::ExitStatus, Instant)>,
}

impl Running {
    /// How long the next read may wait: to the timeout while it runs (the
    /// pidfd ends the wait at the exit), to the end of the drain grace once
    /// it exited; without a pidfd, the next pause of `pause` (20 ms once it
    /// exited).
    fn next_wait(&self, timeout: Duration, pause: &mut Backoff) -> Duration {
        match (&self.pidfd, self.exited) {
            (Some(_), None) => timeout.saturating_sub(self.start.elapsed()),
            (Some(_), Some((_, at))) => DRAIN_GRACE.saturating_sub(at.elapsed()),
            (None, Some(_)) => Duration::from_millis(20),
            (None, None) => pause.next_pause(),
        }
    }

    /// Reads what comes within `wait` (sooner when the child exits).
    fn read_for(&mut self, wait: Duration) {
        let watch = self.pidfd.as_ref().filter(|_| self.exited.is_none());
        self.pipes.read_for(wait, watch);
    }

    /// Notes the exit if the child exited; its group and its whole tree
    /// go with it. Err: the child cannot be waited for.
    fn reap(&mut self) -> std::io::Result<()> {
        if self.exited.is_none()
            && let Some(st) = self.child.try_wait()?
        {
            self.tree.reaped(self.child.id());
            // The leader is gone; anything it left goes with it: in its
            // group, and wherever else it went (another session, a double
            // fork).
            signal_group(&self.child, Signal::KILL);
            let _ = self.tree.end(None);
            self.exited = Some((st, Instant::now()));
        }
        Ok(())
    }

    /// Ends a command that is still running: SIGTERM to its group and its
    /// tree, a short grace for the command to exit, then SIGKILL to
    /// everything, and the command reaped.
    fn kill(&mut self) {
        signal_group(&self.child, Signal::TERM);
        self.tree.signal(Signal::TERM);
        let pid = self.child.id();
        let t = Instant::now();
        // Watched without reaping it: until it is reaped its pid is its
        // own, so the tree's end can look for what descends from it.
        while i32::try_from(pid).is_ok_and(alive) && t.elapsed() < Duration::from_millis(500) {
            thread::sleep(Duration::from_millis(10));
        }
        signal_group(&self.child, Signal::KILL);
        let _ = self.tree.end(Some(pid));
        let _ = self.child.wait();
        self.tree.reaped(pid);
    }

    /// It exited and its output is read: both pipes at their end, or the
    /// drain grace passed.
    fn drained(&self) -> bool {
        self.exited
            .is_some_and(|(_, at)| self.pipes.closed() || at.elapsed() >= DRAIN_GRACE)
    }

    /// Kills the tree at the timeout; the error keeps what it printed.
    fn time_out(mut self, after: Duration) -> ExecError {
        self.kill();
        let [stdout, stderr] = self.pipes.tails.map(Tail::text);
        let partial = Output {
            status: -1,
            stdout,
            stderr,
            elapsed: self.start.elapsed(),
        };
        ExecError::Timeout { after, partial }
    }

    /// What it left behind (status -1 when its exit was never seen).
    fn output(self) -> Output {
        let status = self
            .exited
            .map(|(st, _)| st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0)))
            .unwrap_or(-1);
        let [stdout, stderr] = self.pipes.tails.map(Tail::text);
        Output {
            status,
            stdout,
            stderr,
            elapsed: self.start.elapsed(),
        }
    }
}

/// How long output is still read after the command exited, for what a
/// process it left behind (a daemon it keeps, or one that escaped) may
/// hold open.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// The most of each output stream kept in memory, in bytes: the tail.
pub const KEEP_BYTES: usize = 1 << 20;

/// The most of each output stream kept in memory, in lines: the tail.
pub const KEEP_LINES: usize = 10_000;

/// The last bytes of one stream, and how many came in all.
#[derive(Default)]
struct Tail {
    buf: Vec<u8>,
    total: u64,
}

impl Tail {
    fn push(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        self.buf.extend_from_slice(data);
        // Trimmed now and then, not at every read: at most twice the bound.
        if self.buf.len() > 2 * KEEP_BYTES {
            let cut = self.buf.len() - KEEP_BYTES;
            self.buf.drain(..cut);
        }
    }

    /// The kept text, with a first line that says what was dropped. The
    /// bytes are cut before they are read as (lossy) UTF-8, so the note
    /// counts the command's bytes, not the replacement characters that
    /// stand for invalid ones.
    fn text(self) -> String {
        let earlier = self.total - self.buf.len() as u64;
        let start = tail_start(&self.buf, KEEP_BYTES, KEEP_LINES);
        let text = String::from_utf8_lossy(&self.buf[start..]);
        with_note(&text, earlier + start as u64)
    }
}

/// `text` behind a first line that says `dropped` bytes came before it.
fn with_note(text: &str, dropped: u64) -> String {
    if dropped == 0 {
        text.to_string()
    } else {
        format!("{}\n{text}", dropped_note(dropped))
    }
}

/// The line that stands where output was dropped.
pub fn dropped_note(bytes: u64) -> String {
    format!("[reimage: {bytes} earlier bytes of output not kept]")
}

/// The end of `s`: at most `max_bytes` bytes (starting at a character
/// boundary) and at most `max_lines` lines; and how many bytes were cut.
pub fn tail(s: &str, max_bytes: usize, max_lines: usize) -> (&str, usize) {
    let mut start = s.len().saturating_sub(max_bytes);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    let body = s[start..].strip_suffix('\n').unwrap_or(&s[start..]);
    if let Some((i, _)) = body.rmatch_indices('\n').nth(max_lines.saturating_sub(1)) {
        start += i + 1;
    } else if max_lines == 0 {
        start = s.len();
    }
    (&s[start..], start)
}

/// Where the end of `b` starts that holds at most `max_bytes` bytes (from
/// the start of a UTF-8 character where one is near) and `max_lines` lines.
fn tail_start(b: &[u8], max_bytes: usize, max_lines: usize) -> usize {
    let mut start = b.len().saturating_sub(max_bytes);
    // A continuation byte (10xxxxxx) is inside a character: at most 3.
    let mut skip = 0;
    while start < b.len() && skip < 3 && b[start] & 0xC0 == 0x80 {
        start += 1;
        skip += 1;
    }
    let body = &b[start..];
    let body = body.strip_suffix(b"\n").unwrap_or(body);
    if max_lines == 0 {
        return b.len();
    }
    let mut newlines = body.iter().enumerate().rev().filter(|(_, c)| **c == b'\n');
    if let Some((i, _)) = newlines.nth(max_lines - 1) {
        start += i + 1;
    }
    start
}

/// A command's output for an event: its tail of at most `max_bytes` and
/// `max_lines`, behind one note of all that was dropped (here and when it
/// was captured).
pub fn bounded(s: &str, max_bytes: usize, max_lines: usize) -> String {
    let (before, body) = split_note(s);
    let (kept, dropped) = tail(body, max_bytes, max_lines);
    with_note(kept, before + dropped as u64)
}

/// The bytes a leading [`dropped_note`] says were dropped, and the rest.
fn split_note(s: &str) -> (u64, &str) {
    let parsed = s
        .strip_prefix("[reimage: ")
        .and_then(|r| r.split_once(" earlier bytes of output not kept]\n"))
        .and_then(|(n, rest)| Some((n.parse().ok()?, rest)));
    parsed.unwrap_or((0, s))
}

/// A message cut to at most about `max` bytes: its head and its tail
/// around a note of how much was left out (the head says what failed, the
/// tail how it ended).
pub fn shorten(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut head = max / 2;
    while !s.is_char_boundary(head) {
        head -= 1;
    }
    let mut from = s.len() - max / 2;
    while !s.is_char_boundary(from) {
        from += 1;
    }
    format!(
        "{} […{} bytes not kept…] {}",
        &s[..head],
        from - head,
        &s[from..]
    )
}

/// The two pipes of a running command and what came out of them.
struct Pipes {
    out: Option<std::process::ChildStdout>,
    err: Option<std::process::ChildStderr>,
    tails: [Tail; 2],
    buf: Vec<u8>,
}

impl Pipes {
    fn closed(&self) -> bool {
        self.out.is_none() && self.err.is_none()
    }

    /// Waits up to `wait` for output on either pipe and reads one chunk of
    /// each that has some; a pipe at its end (or broken) is closed.
    /// With `exit` (the child's pidfd) the wait also ends when the child
    /// exits, and always when a signal arrives.
    fn read_for(&mut self, wait: Duration, exit: Option<&OwnedFd>) {
        use rustix::event::{PollFd, PollFlags};
        let flags = PollFlags::IN;
        let mut fds = Vec::with_capacity(4);
        if let Some(o) = &self.out {
            fds.push(PollFd::new(o, flags));
        }
        if let Some(e) = &self.err {
            fds.push(PollFd::new(e, flags));
        }
        if let Some(x) = exit {
            fds.push(PollFd::new(x, flags));
        }
        signal::poll(&mut fds, wait);
        let (out_ready, err_ready) = {
            let mut ready = fds.iter().map(|f| !f.revents().is_empty());
            let o = self.out.is_some() && ready.next().unwrap_or(false);
            let e = self.err.is_some() && ready.next().unwrap_or(false);
            (o, e)
        };
        if out_ready && !read_chunk(&mut self.out, &mut self.buf, &mut self.tails[0]) {
            self.out = None;
        }
        if err_ready && !read_chunk(&mut self.err, &mut self.buf, &mut self.tails[1]) {
            self.err = None;
        }
    }
}

/// One read from a pipe poll said is ready; false at its end or on error.
fn read_chunk<R: Read>(pipe: &mut Option<R>, buf: &mut [u8], tail: &mut Tail) -> bool {
    let Some(p) = pipe.as_mut() else { return false };
    match p.read(buf) {
        Ok(0) => false,
        Ok(n) => {
            tail.push(&buf[..n]);
            true
        }
        Err(e) => e.kind() == std::io::ErrorKind::Interrupted,
    }
}

/// Ties the command's life to reimage's: when the thread that started it
/// ends (reimage killed, even by SIGKILL), the kernel sends it SIGKILL
/// (PR_SET_PDEATHSIG). If reimage is gone already, it does not start.
fn die_with_parent(c: &mut Command) {
    let parent = rustix::process::getpid();
    // SAFETY: the hook runs in the forked child before exec, where only
    // async-signal-safe work is allowed. It makes two raw system calls
    // (prctl, getppid) and builds an io::Error from an errno number; it
    // allocates nothing, takes no lock and touches no shared state.
    unsafe {
        c.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
            if rustix::process::getppid() != Some(parent) {
                return Err(rustix::io::Errno::SRCH.into());
            }
            Ok(())
        });
    }
}

#[cfg(test)]
impl Cmd {
    /// Runs it and fails unless it exits 0 (for tests).
    pub fn run_ok(&self) -> Result<Output, String> {
        match self.run() {
            Ok(o) if o.success() => Ok(o),
            Ok(o) => Err(format!(
                "`{}` exited {}: {}",
                self.display(),
                o.status,
                o.text()
            )),
            Err(e) => Err(format!("`{}`: {e}", self.display())),
        }
    }
}

/// The most an excerpt holds, in bytes.
pub const EXCERPT_BYTES: usize = 400;

/// Output quoted in a message: the last `lines` non-empty lines of `s`, on
/// one line joined by ` | ` with white space folded, and at most
/// [`EXCERPT_BYTES`] bytes (cut at a character boundary, marked `…`).
/// Empty when `s` has no text.
pub fn excerpt(s: &str, lines: usize) -> String {
    let kept: Vec<String> = s
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect();
    let t = kept[kept.len().saturating_sub(lines)..].join(" | ");
    if t.len() <= EXCERPT_BYTES {
        return t;
    }
    let mut end = EXCERPT_BYTES;
    while !t.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &t[..end])
}

/// True when process `pid` runs: it exists and is not a zombie (one that
/// exited and was not reaped, as a killed process whose parent is gone may
/// linger where PID 1 does not reap). Another user's process counts too,
/// also where `/proc` hides it (hidepid): then it cannot be seen whether it
/// is a zombie, and it counts as running.
pub fn alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    let Some(p) = Pid::from_raw(pid) else {
        return false;
    };
    match rustix::process::test_kill_process(p) {
        Ok(()) => {}
        Err(e) if e == rustix::io::Errno::PERM => {}
        Err(_) => return false,
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the name in parentheses, which may hold any
        // byte but ends at the last `)`.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// When process `pid` started: clock ticks after boot, field 22 of
/// `/proc/PID/stat`. With the pid it names one process for the whole boot
/// (a pid alone is reused once the process is gone). None when there is
/// no such process or it cannot be read.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the name (which may hold any byte but ends at the
    // last `)`) start with the state, field 3.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`): start times count
/// from the boot, so a recorded process names its boot too.
pub fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(id.trim().to_string()).filter(|s| !s.is_empty())
}

/// True when the process that was `pid`, started at `start` (see
/// [`start_time`]) on boot `boot` (when known), still runs: the same pid
/// with another start time is another process that got the pid; one that
/// cannot be read (hidepid) does not count as running.
pub fn still_runs(pid: u32, start: u64, boot: Option<&str>) -> bool {
    if let (Some(b), Some(now)) = (boot, boot_id())
        && b != now
    {
        return false;
    }
    i32::try_from(pid).is_ok_and(alive) && start_time(pid) == Some(start)
}

/// Sends `sig` to the child's process group, whose id is the child's pid
/// (process_group(0)). An error means the group is empty already.
fn signal_group(child: &Child, sig: Signal) {
    let _ = rustix::process::kill_process_group(Pid::from_child(child), sig);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_keep_the_last_lines_within_the_byte_bound() {
        assert_eq!(excerpt("a\n\nb  x\nc\n", 2), "b x | c");
        assert_eq!(excerpt("", 3), "");
        let long = "é".repeat(EXCERPT_BYTES);
        let e = excerpt(&long, 1);
        assert!(e.len() <= EXCERPT_BYTES + "…".len(), "{}", e.len());
        assert!(e.ends_with('…'));
    }

    #[test]
    fn tails_keep_the_last_bytes_and_lines_and_say_what_went() {
        assert_eq!(tail("a\nb\nc\n", 100, 2), ("b\nc\n", 2));
        assert_eq!(tail("abc", 2, 10), ("bc", 1));
        assert_eq!(tail("abc", 10, 0), ("", 3));
        let (t, cut) = tail("ééé", 3, 10);
        assert_eq!((t, cut), ("é", 4));
        let b = bounded(&format!("{}\nx\ny", dropped_note(10)), 100, 1);
        assert_eq!(b, format!("{}\ny", dropped_note(12)));
        let long = "x".repeat(1000);
        let s = shorten(&long, 100);
        assert!(s.len() < 150 && s.contains("900 bytes not kept"), "{s}");
    }

    #[test]
    fn notes_count_the_bytes_the_command_wrote() {
        let mut t = Tail::default();
        // Invalid UTF-8 shows as 3-byte replacement characters: the note
        // still counts the command's bytes.
        let junk = vec![0xFFu8; 3 * KEEP_BYTES];
        t.push(&junk);
        t.push(b"\nEND\n");
        let total = t.total;
        let text = t.text();
        let (dropped, kept) = split_note(&text);
        let kept_raw = kept.replace('\u{FFFD}', "x").len() as u64;
        assert_eq!(dropped + kept_raw, total, "{}", &text[..80]);
        // A note of each stream ends up as one note at the top of text().
        let o = Output {
            stdout: format!("{}\nout\n", dropped_note(7)),
            stderr: format!("{}\nerr\n", dropped_note(3_000_000)),
            ..Output::default()
        };
        assert_eq!(o.text(), format!("{}\nout\nerr", dropped_note(3_000_007)));
        let b = bounded(&o.text(), 3, 10);
        assert_eq!(b, format!("{}\nerr", dropped_note(3_000_011)));
    }

    #[test]
    fn a_flood_of_output_keeps_only_the_tail() {
        let o = Cmd::new(
            &["sh", "-c", "yes | head -c 5000000; echo END"],
            Duration::from_secs(60),
        )
        .run()
        .expect("sh runs");
        assert!(o.stdout.len() <= KEEP_BYTES + 100, "{}", o.stdout.len());
        assert!(o.stdout.lines().count() <= KEEP_LINES + 1);
        assert!(o.stdout.starts_with("[reimage: "), "{}", &o.stdout[..80]);
        assert!(o.stdout.ends_with("END\n"));
    }

    #[test]
    fn captures_output_and_exit_code() {
        let o = Cmd::new(
            &["sh", "-c", "echo out; echo err >&2; exit 3"],
            Duration::from_secs(5),
        )
        .run()
        .expect("sh runs");
        assert_eq!(o.status, 3);
        assert_eq!(o.stdout.trim(), "out");
        assert_eq!(o.stderr.trim(), "err");
    }

    #[test]
    fn a_zombie_is_not_alive_and_no_pid_is_alive() {
        assert!(alive(std::process::id() as i32));
        assert!(!alive(0) && !alive(-1) && !alive(i32::MAX));
        let mut child = Command::new("true").spawn().expect("true runs");
        let pid = child.id() as i32;
        // Not reaped: it stays a zombie until the wait below.
        let t = Instant::now();
        while alive(pid) && t.elapsed() < Duration::from_secs(10) {
            thread::sleep(Duration::from_millis(10));
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("zombie is listed");
        assert!(stat.contains(") Z"), "{stat}");
        assert!(!alive(pid), "zombie {pid} counted as alive");
        let _ = child.wait();
    }

    #[test]
    fn a_process_is_its_pid_and_its_start_time() {
        let me = std::process::id();
        let start = start_time(me).expect("own start time");
        let boot = boot_id();
        assert!(still_runs(me, start, boot.as_deref()));
        assert!(!still_runs(me, start + 1, boot.as_deref()), "another start");
        assert!(!still_runs(me, start, Some("another-boot")));
        let mut child = Command::new("true").spawn().expect("true runs");
        let pid = child.id();
        let _ = child.wait();
        assert!(!still_runs(pid, start, None));
    }

    #[test]
    fn a_daemon_the_command_leaves_ends_with_it_unless_kept() {
        let dir = std::env::temp_dir().join(format!("reimage-daemon-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let pidfile = dir.join("daemon");
        // A new session, and its parent gone: out of the group's reach.
        let script = format!(
            "setsid sh -c 'echo $$ > {p}; exec sleep 300' & while [ ! -s {p} ]; do sleep 0.05; done",
            p = pidfile.display()
        );
        for kept in [false, true] {
            let _ = std::fs::remove_file(&pidfile);
            let mut cmd = Cmd::new(&["sh", "-c", &script], Duration::from_secs(60));
            if kept {
                cmd = cmd.keeps_daemons();
            }
            let o = cmd.run().expect("sh runs");
            assert_eq!(o.status, 0);
            let pid: i32 = std::fs::read_to_string(&pidfile)
                .expect("pid written")
                .trim()
                .parse()
                .expect("pid");
            assert_eq!(alive(pid), kept, "daemon {pid}, kept: {kept}");
            if kept {
                let _ =
                    rustix::process::kill_process(Pid::from_raw(pid).expect("pid"), Signal::KILL);
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn kills_the_whole_group_at_the_timeout() {
        let dir = std::env::temp_dir().join(format!("reimage-exec-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let pidfile = dir.join("grandchild");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        // 1 s: time for the shell to start its child and write the pid on a
        // loaded machine; the sleep runs 30.
        let r = Cmd::new(&["sh", "-c", &script], Duration::from_secs(1)).run();
        assert!(matches!(r, Err(ExecError::Timeout { .. })), "{r:?}");
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .expect("pid written")
            .trim()
            .parse()
            .expect("pid");
        // SIGKILL is delivered at once, but a loaded machine may take a
        // moment to run the exit.
        let t = std::time::Instant::now();
        while alive(pid) && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!alive(pid), "grandchild {pid} survived the timeout");
    }
}
