//! Waiting: poll a condition with short intervals that back off, report
//! what is seen, and give up at the timeout or when nothing has changed for
//! the stall timeout. Probes that may hang on a host that does not answer
//! run overlapped, so readiness is seen soon after it happens.

use rustix::event::{PollFd, PollFlags};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The one backoff; also reachable here, beside the waits that pace with it.
pub use crate::backoff::Backoff;
use crate::duration;
use crate::outcome::Outcome;
use crate::probe::{self, Pending, Started};
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

    /// The pauses of this pace: from `first`, growing by half up to `max`.
    pub fn backoff(self) -> Backoff {
        Backoff::new(self.first, self.max).growing_by(1.5)
    }
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
    let now = Instant::now();
    signal::sleep(d.min(deadline.saturating_duration_since(now)))
}

struct Tracker {
    start: Instant,
    last_change: Instant,
    status: String,
    stall: Option<Duration>,
}

impl Tracker {
    /// Starts the clocks of a wait; a stall limit is shown on the
    /// terminal's time left when it fires before the timeout.
    fn new(limits: Limits, report: &Reporter) -> Tracker {
        let now = Instant::now();
        if let Some(s) = limits.stall {
            report.stall(s);
        }
        Tracker {
            start: now,
            last_change: now,
            status: String::new(),
            stall: limits.stall,
        }
    }

    fn see(&mut self, status: String, report: &Reporter) {
        if status != self.status {
            self.last_change = Instant::now();
            report.progress(&status);
            if let Some(s) = self.stall {
                report.stall(s);
            }
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
    let mut t = Tracker::new(limits, report);
    let deadline = t.start + limits.timeout;
    let mut pause = pace.backoff();
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
        if let Err(i) = sleep_checked(pause.next_pause(), deadline) {
            return Waited::Interrupted(i);
        }
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
    let mut t = Tracker::new(limits, report);
    let deadline = t.start + limits.timeout;
    let (tx, rx) = mpsc::channel::<Poll>();
    // Each probe thread writes a byte here after sending its answer, so
    // this thread can sleep in poll(2) beside the signal descriptor.
    let bell = signal::bell();
    let mut in_flight = 0usize;
    let mut pause = pace.backoff();
    let mut next = Instant::now();
    loop {
        if let Err(i) = signal::check() {
            return Waited::Interrupted(i);
        }
        let now = Instant::now();
        if now >= next && in_flight < max_in_flight {
            let tx = tx.clone();
            let ring = bell.as_ref().and_then(|(_, w)| w.try_clone().ok());
            let p = Arc::clone(&probe);
            in_flight += 1;
            thread::spawn(move || {
                let _ = tx.send(p());
                if let Some(mut w) = ring {
                    let _ = w.write(&[0]);
                }
            });
            next = now + pause.next_pause();
        }
        while let Ok(answer) = rx.try_recv() {
            match answer {
                Poll::Ready(s) => return Waited::Ready(s, t.start.elapsed()),
                Poll::Fatal(e) => return Waited::Fatal(e),
                Poll::NotYet(s) => {
                    in_flight -= 1;
                    t.see(s, report);
                }
            }
        }
        if let Some(v) = t.verdict(limits) {
            return v;
        }
        let now = Instant::now();
        if now >= deadline {
            return Waited::TimedOut(t.status.clone());
        }
        let mut wake = deadline;
        if in_flight < max_in_flight {
            wake = wake.min(next);
        }
        let left = wake.saturating_duration_since(now);
        match &bell {
            Some((r, _)) => {
                signal::poll(&mut vec![PollFd::new(r, PollFlags::IN)], left);
                let mut sink = [0u8; 64];
                while matches!((&*r).read(&mut sink), Ok(k) if k > 0) {}
            }
            // No bell to ring: look for answers every 50 ms.
            None => signal::poll(&mut Vec::new(), left.min(Duration::from_millis(50))),
        }
    }
}

/// How hard a TCP watch ([`tcp`]) may knock on one computer.
///
/// A refusal (RST) or a wrong banner costs the target microseconds, so a
/// target that answers is probed at a flat, short interval: the port is
/// seen within one interval of opening. A target that does not answer at
/// all (packets dropped, the computer still off) gets ever longer pauses,
/// and never more than `in_flight` connects at once, each of them the
/// kernel's own SYN retransmits for at most the connect timeout.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    /// Pause between probes while the target answers.
    pub answering: Duration,
    /// Longest pause between probes to a silent target (the pause doubles
    /// from `answering` while earlier connects are still unanswered; never
    /// shorter than `answering`).
    pub silent_max: Duration,
    /// Most connects (or banner reads) in flight at once.
    pub in_flight: usize,
}

impl Rate {
    /// Port and banner steps: at most 25 probes a second per computer
    /// (one every 40 ms: an opened port is seen 20 ms later in the median,
    /// 40 ms at worst), at most 3 connects in flight, pauses up to 2 s for a
    /// silent target.
    pub const TCP: Rate = Rate {
        answering: Duration::from_millis(40),
        silent_max: Duration::from_secs(2),
        in_flight: 3,
    };

    /// The pauses between probes to a silent target: doubling from
    /// `answering` (its first is twice that) up to `silent_max`, never
    /// shorter than `answering`.
    fn silent_backoff(&self) -> Backoff {
        let longest = self.silent_max.max(self.answering);
        Backoff::new((self.answering * 2).min(longest), longest)
    }
}

/// What a TCP watch looks for once a connect succeeds.
#[derive(Debug, Clone, Copy)]
pub enum Want<'a> {
    /// The connect alone.
    Connect,
    /// A first line matching the regex.
    Banner(&'a regex::Regex),
}

/// What a TCP watch did, for tests and benchmarks.
#[derive(Debug, Default, Clone, Copy)]
pub struct TcpStats {
    /// Connects started.
    pub probes: u32,
    /// The most connects in flight at once.
    pub most_in_flight: usize,
}

enum Flight {
    Connecting(Pending),
    Reading(TcpStream, Vec<u8>),
}

/// A banner is one short line: never read more than this.
const BANNER_LIMIT: usize = 4096;

/// Watches a TCP service until it accepts (and sends a matching banner):
/// non-blocking connects from this one thread, paced by `rate`, each given
/// up after `connect_timeout`. `target` gives the address for each probe
/// (Err: why there is none yet); `label` starts every status ("port 22").
#[allow(clippy::too_many_arguments)]
pub fn tcp(
    report: &Reporter,
    limits: Limits,
    rate: Rate,
    connect_timeout: Duration,
    want: Want<'_>,
    label: &str,
    target: impl FnMut() -> Result<SocketAddr, String>,
) -> Waited {
    tcp_counted(report, limits, rate, connect_timeout, want, label, target).0
}

/// [`tcp`], also saying how many probes it made.
#[allow(clippy::too_many_arguments)]
pub fn tcp_counted(
    report: &Reporter,
    limits: Limits,
    rate: Rate,
    connect_timeout: Duration,
    want: Want<'_>,
    label: &str,
    target: impl FnMut() -> Result<SocketAddr, String>,
) -> (Waited, TcpStats) {
    let t = Tracker::new(limits, report);
    let next = t.start;
    let mut w = TcpWatch {
        report,
        limits,
        rate,
        connect_timeout,
        want,
        label,
        target,
        t,
        stats: TcpStats::default(),
        flights: Vec::new(),
        pause: rate.answering,
        silent: rate.silent_backoff(),
        next,
        refused: None,
    };
    let waited = w.run();
    (waited, w.stats)
}

/// One TCP watch under way: the connects and banner reads in flight, the
/// pacing, and what has been seen.
struct TcpWatch<'a, F> {
    report: &'a Reporter,
    limits: Limits,
    rate: Rate,
    connect_timeout: Duration,
    want: Want<'a>,
    label: &'a str,
    target: F,
    t: Tracker,
    stats: TcpStats,
    /// Each with the time its connect started.
    flights: Vec<(Flight, Instant)>,
    /// The pause before the next probe: `rate.answering`, or longer while
    /// the target is silent.
    pause: Duration,
    /// The pauses for a silent target, started over when it answers.
    silent: Backoff,
    /// When the next probe may start.
    next: Instant,
    /// The last refusal's errno and status, made once, not on every probe.
    refused: Option<(i32, String)>,
}

impl<F: FnMut() -> Result<SocketAddr, String>> TcpWatch<'_, F> {
    /// Probes until ready, out of time, stalled or interrupted.
    fn run(&mut self) -> Waited {
        let deadline = self.t.start + self.limits.timeout;
        loop {
            if let Err(i) = signal::check() {
                return Waited::Interrupted(i);
            }
            self.expire(Instant::now());
            if let Some(m) = self.probe_if_due(Instant::now()) {
                return Waited::Ready(m, self.t.start.elapsed());
            }
            if let Some(v) = self.t.verdict(self.limits) {
                return v;
            }
            let now = Instant::now();
            if now >= deadline {
                return Waited::TimedOut(self.t.status.clone());
            }
            // Walk backwards so removing a flight keeps earlier indices valid.
            for i in self.await_answers(now, deadline).into_iter().rev() {
                if let Some(m) = self.answer(i) {
                    return Waited::Ready(m, self.t.start.elapsed());
                }
            }
        }
    }

    fn see(&mut self, status: String) {
        self.t.see(status, self.report);
    }

    /// Gives up on connects and banners that took too long.
    fn expire(&mut self, now: Instant) {
        let (kept, late): (Vec<_>, Vec<_>) = std::mem::take(&mut self.flights)
            .into_iter()
            .partition(|(_, since)| now.duration_since(*since) < self.connect_timeout);
        self.flights = kept;
        for (f, _) in late {
            let m = match f {
                Flight::Connecting(_) => "no answer",
                Flight::Reading(..) => "no banner: no answer",
            };
            self.see(format!("{}: {m}", self.label));
        }
    }

    /// Starts a connect if one is due and a slot is free: Some(ready text)
    /// when it connected at once and only the connect was wanted.
    fn probe_if_due(&mut self, now: Instant) -> Option<String> {
        if now < self.next || self.flights.len() >= self.rate.in_flight {
            return None;
        }
        // Earlier probes still unanswered: the target is silent, so wait
        // longer before the next.
        if !self.flights.is_empty() {
            self.pause = self.silent.next_pause();
        }
        self.next = now + self.pause;
        self.stats.probes += 1;
        let ready = match (self.target)() {
            Err(e) => {
                self.see(e);
                None
            }
            Ok(addr) => match probe::start_connect(addr) {
                Started::Connected(s) => self.connected(s, now),
                Started::Failed(e) => {
                    self.failed(&e);
                    None
                }
                Started::Pending(p) => {
                    self.flights.push((Flight::Connecting(p), now));
                    None
                }
            },
        };
        self.stats.most_in_flight = self.stats.most_in_flight.max(self.flights.len());
        ready
    }

    /// A finished connect: Some(ready text) when only the connect was
    /// wanted, else its banner is read next.
    fn connected(&mut self, s: TcpStream, since: Instant) -> Option<String> {
        match self.want {
            Want::Connect => Some(format!("{} accepts connections", peer(&s))),
            Want::Banner(_) => {
                self.flights.push((Flight::Reading(s, Vec::new()), since));
                None
            }
        }
    }

    /// The target answered: back to the short pause.
    fn answered(&mut self, status: String) {
        self.pause = self.rate.answering;
        self.silent = self.rate.silent_backoff();
        self.see(status);
    }

    /// A connect that failed (refused, unreachable).
    fn failed(&mut self, e: &std::io::Error) {
        let code = e.raw_os_error().unwrap_or(-1);
        let status = match &self.refused {
            Some((c, s)) if *c == code => s.clone(),
            _ => {
                let s = format!("{}: {}", self.label, probe::io_text(e));
                self.refused = Some((code, s.clone()));
                s
            }
        };
        self.answered(status);
    }

    /// Sleeps in poll(2) until an answer, the next probe, the first expiry,
    /// the deadline, or a signal (no wake-up of its own); the indices of
    /// the flights that have an answer.
    fn await_answers(&self, now: Instant, deadline: Instant) -> Vec<usize> {
        let mut wake = deadline;
        if self.flights.len() < self.rate.in_flight {
            wake = wake.min(self.next);
        }
        for (_, since) in &self.flights {
            wake = wake.min(*since + self.connect_timeout);
        }
        let mut fds: Vec<PollFd<'_>> = self
            .flights
            .iter()
            .map(|(f, _)| match f {
                Flight::Connecting(p) => PollFd::new(p, PollFlags::OUT),
                Flight::Reading(s, _) => PollFd::new(s, PollFlags::IN),
            })
            .collect();
        signal::poll(&mut fds, wake.saturating_duration_since(now));
        fds.iter()
            .enumerate()
            .filter(|(_, f)| !f.revents().is_empty())
            .map(|(i, _)| i)
            .collect()
    }

    /// Takes up flight `i`, which has an answer: Some(ready text) when it
    /// is what the watch wants.
    fn answer(&mut self, i: usize) -> Option<String> {
        let (f, since) = self.flights.swap_remove(i);
        match f {
            Flight::Connecting(p) => match p.finish() {
                Ok(s) => self.connected(s, since),
                Err(e) => {
                    self.failed(&e);
                    None
                }
            },
            Flight::Reading(s, buf) => self.banner(s, buf, since),
        }
    }

    /// Reads on from a connection that is to send a banner: Some(ready
    /// text) when its first line matches.
    fn banner(&mut self, mut s: TcpStream, mut buf: Vec<u8>, since: Instant) -> Option<String> {
        let Want::Banner(re) = self.want else {
            return None;
        };
        let label = self.label;
        match read_banner(&mut s, &mut buf) {
            Banner::Line(l) if re.is_match(&l) => return Some(format!("banner `{l}`")),
            Banner::Line(l) => self.answered(format!(
                "{label}: banner `{l}` does not match /{}/",
                re.as_str()
            )),
            Banner::Closed => self.answered(format!("{label}: closed before sending a banner")),
            Banner::Failed(e) => {
                self.answered(format!("{label}: no banner: {}", probe::io_text(&e)))
            }
            Banner::Partial => self.flights.push((Flight::Reading(s, buf), since)),
        }
        None
    }
}

/// What one read of a banner gave.
enum Banner {
    /// The first line (or the first [`BANNER_LIMIT`] bytes), without its
    /// line end.
    Line(String),
    /// The other side closed before a whole line.
    Closed,
    /// No whole line yet.
    Partial,
    /// The read failed.
    Failed(std::io::Error),
}

/// Reads what `s` has into `buf` and looks for the first line.
fn read_banner(s: &mut TcpStream, buf: &mut Vec<u8>) -> Banner {
    let mut chunk = [0u8; 1024];
    match s.read(&mut chunk) {
        Ok(0) => Banner::Closed,
        Ok(k) => {
            buf.extend_from_slice(&chunk[..k]);
            let end = match buf.iter().position(|b| *b == b'\n') {
                Some(end) => end,
                None if buf.len() >= BANNER_LIMIT => buf.len(),
                None => return Banner::Partial,
            };
            Banner::Line(String::from_utf8_lossy(&buf[..end]).trim_end().to_string())
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Banner::Partial,
        Err(e) => Banner::Failed(e),
    }
}

fn peer(s: &TcpStream) -> String {
    s.peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "the target".into())
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

impl Waited {
    /// A wait that was a step, as the contract classes it: the one mapping
    /// from a finished wait to an outcome. Ready is `Ok` with what was seen
    /// and how long it took; the caller ends the step saying what it made
    /// of that. Otherwise the step ends here with [`describe`]'s sentence
    /// for `what` within `timeout`, and the outcome is fatal when a poll
    /// said waiting cannot help or a signal came (the error, in the context
    /// of `what`), retry when the time ran out or nothing changed (the
    /// sentence).
    pub fn into_outcome(
        self,
        what: &str,
        timeout: Duration,
        report: &Reporter,
    ) -> Result<(String, Duration), Outcome> {
        if let Waited::Ready(seen, took) = self {
            return Ok((seen, took));
        }
        let sentence = describe(&self, what, timeout);
        report.step_failed(&sentence);
        Err(match self {
            Waited::Fatal(e) => Outcome::Fatal(e.context(what.to_string())),
            Waited::Interrupted(i) => {
                Outcome::Fatal(anyhow::Error::new(i).context(what.to_string()))
            }
            _ => Outcome::Retry(anyhow::anyhow!(sentence)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::Write;
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn a_finished_wait_becomes_the_contracts_outcome() {
        let r = quiet();
        let t = Duration::from_secs(3);
        let ready = Waited::Ready("up".into(), Duration::from_millis(5)).into_outcome("x", t, &r);
        assert!(matches!(ready, Ok((s, d)) if s == "up" && d == Duration::from_millis(5)));
        let msg = |w: Waited| match w.into_outcome("step `port`", t, &r) {
            Err(Outcome::Retry(e)) => format!("retry: {e:#}"),
            Err(Outcome::Fatal(e)) => format!("fatal: {e:#}"),
            other => format!("{other:?}"),
        };
        assert_eq!(
            msg(Waited::TimedOut("refused".into())),
            "retry: step `port`: not ready after 3s (last seen: refused)"
        );
        assert_eq!(
            msg(Waited::Stalled("booting".into(), Duration::from_secs(2))),
            "retry: step `port`: no change for 2s (stuck at: booting)"
        );
        assert_eq!(
            msg(Waited::Fatal(anyhow::anyhow!("bad key"))),
            "fatal: step `port`: bad key"
        );
        let i = msg(Waited::Interrupted(signal::Interrupted(2)));
        assert!(i.starts_with("fatal: step `port`: "), "{i}");
    }

    fn quiet() -> Reporter {
        Reporter::new(
            "pc7",
            "img",
            None,
            crate::report::Format::Human,
            crate::report::Verbosity::Quiet,
        )
    }

    fn limits(ms: u64) -> Limits {
        Limits {
            timeout: Duration::from_millis(ms),
            stall: None,
        }
    }

    /// A port nothing listens on.
    fn closed_port() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    }

    /// The most probes a watch of `ms` may start at `rate`: one at the
    /// start, then one per interval.
    fn bound(ms: u64, rate: Rate) -> u32 {
        (ms / rate.answering.as_millis() as u64) as u32 + 1
    }

    #[test]
    fn a_silent_target_gets_doubling_pauses_within_the_rate() {
        let ms = Duration::from_millis;
        let mut b = Rate::TCP.silent_backoff();
        let seen: Vec<_> = (0..7).map(|_| b.next_pause()).collect();
        assert_eq!(
            seen,
            [
                ms(80),
                ms(160),
                ms(320),
                ms(640),
                ms(1280),
                ms(2000),
                ms(2000)
            ]
        );
        let slow = Rate {
            answering: ms(800),
            silent_max: ms(100),
            in_flight: 3,
        };
        assert_eq!(slow.silent_backoff().next_pause(), ms(800));
    }

    #[test]
    fn a_refusing_target_gets_at_most_the_documented_rate() {
        let addr = closed_port();
        let (w, stats) = tcp_counted(
            &quiet(),
            limits(1000),
            Rate::TCP,
            Duration::from_secs(5),
            Want::Connect,
            "port",
            || Ok(addr),
        );
        assert!(
            matches!(&w, Waited::TimedOut(s) if s.contains("refused")),
            "{w:?}"
        );
        assert!(stats.probes >= 2, "{stats:?}");
        assert!(stats.probes <= bound(1000, Rate::TCP), "{stats:?}");
    }

    #[test]
    fn a_wrong_banner_is_asked_again_at_most_at_the_documented_rate() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let accepted = Arc::new(AtomicU32::new(0));
        let n = Arc::clone(&accepted);
        thread::spawn(move || {
            for mut s in l.incoming().flatten() {
                n.fetch_add(1, Ordering::SeqCst);
                let _ = s.write_all(b"HTTP/1.0 400 nope\r\n");
            }
        });
        let re = regex::Regex::new("^SSH-").expect("re");
        let (w, stats) = tcp_counted(
            &quiet(),
            limits(1000),
            Rate::TCP,
            Duration::from_secs(5),
            Want::Banner(&re),
            "port",
            || Ok(addr),
        );
        assert!(
            matches!(&w, Waited::TimedOut(s) if s.contains("does not match")),
            "{w:?}"
        );
        let got = accepted.load(Ordering::SeqCst);
        assert!(
            got >= 2 && got <= bound(1000, Rate::TCP),
            "{got} connections, {stats:?}"
        );
    }

    /// A listener whose accept queue is full: it drops further SYNs, as a
    /// host that drops packets does. Keep the returned values alive.
    fn silent_target() -> (SocketAddr, TcpListener, Vec<TcpStream>) {
        use rustix::net::{AddressFamily, SocketType, bind, listen, socket};
        let fd = socket(AddressFamily::INET, SocketType::STREAM, None).expect("socket");
        let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        bind(&fd, &any).expect("bind");
        listen(&fd, 0).expect("listen");
        let l = std::net::TcpListener::from(fd);
        let addr = l.local_addr().expect("addr");
        // Fill the queue (backlog 0 still queues one).
        let fill: Vec<_> = (0..2)
            .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok())
            .collect();
        (addr, l, fill)
    }

    #[test]
    fn a_silent_target_is_never_probed_faster_than_one_that_answers() {
        // probe_interval longer than the silent backoff's cap: the pause
        // stays at the interval (probes at 0 and 800 ms in 1.5 s), where
        // capping at `silent_max` alone would have made it 100 ms.
        let (addr, _l, _fill) = silent_target();
        let rate = Rate {
            answering: Duration::from_millis(800),
            silent_max: Duration::from_millis(100),
            in_flight: 3,
        };
        let (w, stats) = tcp_counted(
            &quiet(),
            limits(1500),
            rate,
            Duration::from_secs(30),
            Want::Connect,
            "port",
            || Ok(addr),
        );
        assert!(matches!(w, Waited::TimedOut(_)), "{w:?}");
        assert!(stats.probes <= 2, "{stats:?}");
    }

    #[test]
    fn a_silent_target_never_has_more_than_a_few_connects_in_flight() {
        let (addr, _l, _fill) = silent_target();
        let (w, stats) = tcp_counted(
            &quiet(),
            limits(1500),
            Rate::TCP,
            Duration::from_secs(30),
            Want::Connect,
            "port",
            || Ok(addr),
        );
        assert!(matches!(w, Waited::TimedOut(_)), "{w:?}");
        assert!(stats.most_in_flight <= Rate::TCP.in_flight, "{stats:?}");
        assert!(stats.probes <= Rate::TCP.in_flight as u32, "{stats:?}");
    }

    #[test]
    fn a_port_that_opens_is_seen_and_a_banner_read_on_the_same_connect() {
        let addr = closed_port();
        // The port opens once the first probe was refused (the second is
        // being asked for), however slowly this machine got there.
        let asked = Arc::new(AtomicU32::new(0));
        let seen = Arc::clone(&asked);
        let t = thread::spawn(move || {
            let start = Instant::now();
            while seen.load(Ordering::SeqCst) < 2 && start.elapsed() < Duration::from_secs(10) {
                thread::sleep(Duration::from_millis(5));
            }
            let l = TcpListener::bind(addr).expect("bind again");
            for mut s in l.incoming().take(1).flatten() {
                let _ = s.write_all(b"SSH-2.0-Test\r\n");
                thread::sleep(Duration::from_millis(100));
            }
        });
        let re = regex::Regex::new("^SSH-").expect("re");
        let (w, stats) = tcp_counted(
            &quiet(),
            limits(20_000),
            Rate::TCP,
            Duration::from_secs(5),
            Want::Banner(&re),
            "port",
            || {
                asked.fetch_add(1, Ordering::SeqCst);
                Ok(addr)
            },
        );
        assert!(
            matches!(&w, Waited::Ready(m, _) if m == "banner `SSH-2.0-Test`"),
            "{w:?}"
        );
        assert!(stats.probes >= 2, "{stats:?}");
        let _ = t.join();
    }
}
