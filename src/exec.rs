//! Runs external commands: from an argument vector (never a shell), in their
//! own process group, with a timeout after which the whole group is killed,
//! and stopped at once when reimage is interrupted.

use rustix::process::{Pid, Signal};
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::outcome::Outcome;
use crate::signal;

/// What a finished command left behind.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code, or `128 + signal` when it was killed by a signal.
    pub code: i32,
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
        self.code == 0
    }

    /// stdout and stderr together, trimmed, for error messages.
    pub fn text(&self) -> String {
        let mut s = self.stdout.trim().to_string();
        let e = self.stderr.trim();
        if !e.is_empty() {
            if !s.is_empty() {
                s.push('\n');
            }
            s.push_str(e);
        }
        s
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
    /// Killed (the whole process group) after this long.
    pub timeout: Duration,
}

impl Cmd {
    /// A command from an argument vector with a timeout.
    pub fn new<S: AsRef<str>>(argv: &[S], timeout: Duration) -> Cmd {
        Cmd {
            argv: argv.iter().map(|s| s.as_ref().to_string()).collect(),
            env: Vec::new(),
            timeout,
        }
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
    pub fn run(&self) -> std::result::Result<Output, ExecError> {
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
        let start = Instant::now();
        let mut child = c.spawn().map_err(ExecError::Spawn)?;
        let out = reader(child.stdout.take());
        let err = reader(child.stderr.take());
        let mut pause = Duration::from_millis(2);
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) => {}
                Err(_) => break None,
            }
            if let Err(i) = signal::check() {
                kill_group(&mut child);
                let _ = join(out);
                let _ = join(err);
                return Err(ExecError::Interrupted(i));
            }
            if start.elapsed() >= self.timeout {
                kill_group(&mut child);
                let partial = Output {
                    code: -1,
                    stdout: join(out),
                    stderr: join(err),
                    elapsed: start.elapsed(),
                };
                return Err(ExecError::Timeout {
                    after: self.timeout,
                    partial,
                });
            }
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        };
        // The leader is gone; anything it left in its group goes with it.
        signal_group(&child, Signal::KILL);
        let code = status
            .map(|st| st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0)))
            .unwrap_or(-1);
        Ok(Output {
            code,
            stdout: join(out),
            stderr: join(err),
            elapsed: start.elapsed(),
        })
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
                o.code,
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

fn reader<R: Read + Send + 'static>(r: Option<R>) -> Option<thread::JoinHandle<Vec<u8>>> {
    r.map(|mut r| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    })
}

fn join(h: Option<thread::JoinHandle<Vec<u8>>>) -> String {
    h.and_then(|h| h.join().ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// True when process `pid` exists and is not a zombie (a killed process
/// whose parent is gone may linger as a zombie where PID 1 does not reap).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Sends `sig` to the child's process group, whose id is the child's pid
/// (process_group(0)). An error means the group is empty already.
fn signal_group(child: &Child, sig: Signal) {
    let _ = rustix::process::kill_process_group(Pid::from_child(child), sig);
}

/// SIGTERM to the child's whole group, a short grace, then SIGKILL.
fn kill_group(child: &mut Child) {
    signal_group(child, Signal::TERM);
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(500) {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    signal_group(child, Signal::KILL);
    let _ = child.wait();
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
    fn captures_output_and_exit_code() {
        let o = Cmd::new(
            &["sh", "-c", "echo out; echo err >&2; exit 3"],
            Duration::from_secs(5),
        )
        .run()
        .expect("sh runs");
        assert_eq!(o.code, 3);
        assert_eq!(o.stdout.trim(), "out");
        assert_eq!(o.stderr.trim(), "err");
    }

    #[test]
    fn kills_the_whole_group_at_the_timeout() {
        let dir = std::env::temp_dir().join(format!("reimage-exec-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let pidfile = dir.join("grandchild");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let r = Cmd::new(&["sh", "-c", &script], Duration::from_millis(300)).run();
        assert!(matches!(r, Err(ExecError::Timeout { .. })), "{r:?}");
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .expect("pid written")
            .trim()
            .parse()
            .expect("pid");
        std::thread::sleep(Duration::from_millis(100));
        assert!(!alive(pid), "grandchild {pid} survived the timeout");
    }
}
