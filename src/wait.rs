//! Waiting: poll a condition with short intervals that back off, report
//! what is seen, and give up at the timeout or when nothing has changed for
//! the stall timeout. Probes that may hang on a host that does not answer
//! run overlapped, so readiness is seen soon after it happens.

use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::duration;
use crate::report::Reporter;
use crate::signal;

/// What one poll saw.
#[derive(Debug)]
pub enum Poll {
    /// The condition holds; the text says what was seen.
    Ready(String),
    /// Not yet; the text says what was seen. A change of text counts as
    /// progress for the stall timeout.
    NotYet(String),
    /// Waiting longer cannot help (bad credentials, host key mismatch).
    Fatal(anyhow::Error),
}

/// How a wait ended.
#[derive(Debug)]
pub enum Waited {
    /// Ready, with what was seen and how long it took.
    Ready(String, Duration),
    /// The timeout passed; the last status seen.
    TimedOut(String),
    /// The status did not change for the stall timeout.
    Stalled(String, Duration),
    /// A poll said waiting cannot help.
    Fatal(anyhow::Error),
    /// SIGINT/SIGTERM.
    Interrupted(signal::Interrupted),
}

/// Poll pacing: start at `first`, multiply by 1.5 up to `max`.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// First pause.
    pub first: Duration,
    /// Longest pause.
    pub max: Duration,
}

impl Pace {
    /// Cheap probes (a TCP connect): 20 ms backing off to 250 ms, so an
    /// opened port is seen well under a second after it opens.
    pub const CHEAP: Pace = Pace {
        first: Duration::from_millis(20),
        max: Duration::from_millis(250),
    };
    /// Costly probes (a login, a remote command): 100 ms up to 2 s.
    pub const COSTLY: Pace = Pace {
        first: Duration::from_millis(100),
        max: Duration::from_secs(2),
    };
}

/// Limits of one wait.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Give up after this long.
    pub timeout: Duration,
    /// Give up when the status has not changed for this long.
    pub stall: Option<Duration>,
}

/// Sleeps `d`, stopping at once on SIGINT/SIGTERM.
pub fn pause(d: Duration) -> Result<(), signal::Interrupted> {
    sleep_checked(d, Instant::now() + d)
}

fn sleep_checked(d: Duration, deadline: Instant) -> Result<(), signal::Interrupted> {
    let until = (Instant::now() + d).min(deadline);
    while Instant::now() < until {
        signal::check()?;
        thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
    }
    signal::check()
}

struct Tracker {
    start: Instant,
    last_change: Instant,
    status: String,
}

impl Tracker {
    fn new() -> Tracker {
        let now = Instant::now();
        Tracker {
            start: now,
            last_change: now,
            status: String::new(),
        }
    }

    fn see(&mut self, status: String, report: &Reporter) {
        if status != self.status {
            self.last_change = Instant::now();
            report.progress(&status);
            self.status = status;
        } else {
            report.progress(&status);
        }
    }

    fn verdict(&self, limits: Limits) -> Option<Waited> {
        if self.start.elapsed() >= limits.timeout {
            return Some(Waited::TimedOut(self.status.clone()));
        }
        if let Some(stall) = limits.stall
            && self.last_change.elapsed() >= stall
        {
            return Some(Waited::Stalled(self.status.clone(), stall));
        }
        None
    }
}

/// Just waits `d` (a sleep step), stopping at once on an interrupt.
pub fn sleep(report: &Reporter, d: Duration) -> Waited {
    let start = Instant::now();
    report.progress(&format!("sleeping {}", duration::fmt(d)));
    match sleep_checked(d, start + d) {
        Ok(()) => Waited::Ready(format!("slept {}", duration::fmt(d)), start.elapsed()),
        Err(i) => Waited::Interrupted(i),
    }
}

/// Polls `f` one call at a time until it is ready, fatal, or out of time.
pub fn poll(
    report: &Reporter,
    limits: Limits,
    pace: Pace,
    mut f: impl FnMut(Duration) -> Poll,
) -> Waited {
    let mut t = Tracker::new();
    let deadline = t.start + limits.timeout;
    let mut pause = pace.first;
    loop {
        if let Err(i) = signal::check() {
            return Waited::Interrupted(i);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match f(left) {
            Poll::Ready(s) => return Waited::Ready(s, t.start.elapsed()),
            Poll::Fatal(e) => return Waited::Fatal(e),
            Poll::NotYet(s) => t.see(s, report),
        }
        if let Some(v) = t.verdict(limits) {
            return v;
        }
        if let Err(i) = sleep_checked(pause, deadline) {
            return Waited::Interrupted(i);
        }
        pause = pace.max.min(pause.mul_f64(1.5));
    }
}

/// Like [`poll`], but each probe runs on its own thread and a new one starts
/// every pace interval even while earlier ones are still waiting on a host
/// that does not answer (at most `max_in_flight` at once).
pub fn overlapped(
    report: &Reporter,
    limits: Limits,
    pace: Pace,
    max_in_flight: usize,
    probe: Arc<dyn Fn() -> Poll + Send + Sync>,
) -> Waited {
    let mut t = Tracker::new();
    let deadline = t.start + limits.timeout;
    let (tx, rx) = mpsc::channel::<Poll>();
    let mut in_flight = 0usize;
    let mut pause = pace.first;
    let mut next = Instant::now();
    loop {
        if let Err(i) = signal::check() {
            return Waited::Interrupted(i);
        }
        let now = Instant::now();
        if now >= next && in_flight < max_in_flight {
            let tx = tx.clone();
            let p = Arc::clone(&probe);
            in_flight += 1;
            thread::spawn(move || {
                let _ = tx.send(p());
            });
            next = now + pause;
            pause = pace.max.min(pause.mul_f64(1.5));
        }
        let wait = next
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(1), Duration::from_millis(50));
        match rx.recv_timeout(wait) {
            Ok(Poll::Ready(s)) => return Waited::Ready(s, t.start.elapsed()),
            Ok(Poll::Fatal(e)) => return Waited::Fatal(e),
            Ok(Poll::NotYet(s)) => {
                in_flight -= 1;
                t.see(s, report);
            }
            Err(_) => {}
        }
        if let Some(v) = t.verdict(limits) {
            return v;
        }
        if Instant::now() >= deadline {
            return Waited::TimedOut(t.status.clone());
        }
    }
}

/// A sentence for a wait that did not end ready.
pub fn describe(w: &Waited, what: &str, timeout: Duration) -> String {
    match w {
        Waited::Ready(s, _) => format!("{what}: {s}"),
        Waited::TimedOut(s) if s.is_empty() => {
            format!("{what}: not ready after {}", duration::fmt(timeout))
        }
        Waited::TimedOut(s) => format!(
            "{what}: not ready after {} (last seen: {s})",
            duration::fmt(timeout)
        ),
        Waited::Stalled(s, d) => format!(
            "{what}: no change for {} (stuck at: {s})",
            duration::fmt(*d)
        ),
        Waited::Fatal(e) => format!("{what}: {e:#}"),
        Waited::Interrupted(i) => format!("{what}: {i}"),
    }
}
