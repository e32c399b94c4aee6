//! One stream of events (attempt, phase, step, progress, output, result):
//! an indicatif spinner on a terminal, plain timestamped lines on stderr
//! otherwise, JSON lines on stdout with `--json`, and always an append-only
//! JSON-lines event log per computer.

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::borrow::Cow;
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::duration;
use crate::exec::Output;
use crate::names::names;
use crate::outcome::{Phase, Verdict};

/// How events reach the person or program that ran reimage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Spinner with step, attempt, elapsed and remaining time (stderr is a TTY).
    Tty,
    /// Plain timestamped lines on stderr.
    Plain,
    /// JSON lines on stdout; stderr only for the final error.
    Json,
}

/// How the person or program that ran reimage wants events: `--json`
/// or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// For people: a spinner on a terminal, else plain lines (stderr).
    Human,
    /// JSON lines on stdout.
    Json,
}

/// How much of the run the screen shows (the event log gets all of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// `-q`: warnings and results only, and no spinner.
    Quiet,
    /// Attempts, phases, steps and their ends, warnings, results.
    Normal,
    /// `-v`: also what each step sees and commands' output.
    Verbose,
}

/// Whether an event is shown on the screen besides the event log (and
/// stdout with `--json`); [`Verbosity::Quiet`] still hides all but
/// warnings and results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Screen {
    Always,
    IfVerbose,
    Never,
}

/// What an event tells.
#[derive(Debug, Serialize, Clone, Copy, PartialEq, Eq)]
#[serde(into = "&'static str")]
pub enum EventKind {
    /// A run starts (written to the event log only; `reimage log` splits
    /// runs here).
    Start,
    /// An attempt starts.
    Attempt,
    /// A phase starts.
    Phase,
    /// A wait step or action starts.
    Step,
    /// What the current step sees now.
    Progress,
    /// The current step ended.
    StepEnd,
    /// A command's captured output.
    Output,
    /// Something worth telling.
    Info,
    /// Something the user should fix.
    Warn,
    /// A phase ended.
    Result,
    /// A user's access was granted (`grant`): where to connect.
    Access,
    /// The run ended.
    Run,
}

names!(EventKind {
    Start => "start",
    Attempt => "attempt",
    Phase => "phase",
    Step => "step",
    Progress => "progress",
    StepEnd => "step-end",
    Output => "output",
    Info => "info",
    Warn => "warn",
    Result => "result",
    Access => "access",
    Run => "run",
});

/// How a step or a phase ended.
#[derive(Debug, Serialize, Clone, Copy, PartialEq, Eq)]
#[serde(into = "&'static str")]
pub enum EventResult {
    /// A step succeeded.
    Ok,
    /// A step failed.
    Failed,
    /// A phase was done.
    Done,
    /// A phase asked for a retry.
    Retry,
    /// A phase failed.
    Fatal,
    /// The run was stopped by a signal.
    Interrupted,
}

names!(EventResult {
    Ok => "ok",
    Failed => "failed",
    Done => "done",
    Retry => "retry",
    Fatal => "fatal",
    Interrupted => "interrupted",
});

impl From<Verdict> for EventResult {
    fn from(v: Verdict) -> EventResult {
        match v {
            Verdict::Done => EventResult::Done,
            Verdict::Retry => EventResult::Retry,
            Verdict::Fatal => EventResult::Fatal,
        }
    }
}

/// One event, as written to the event log and to stdout with `--json`.
#[derive(Debug, Serialize, Clone)]
pub struct Event {
    /// UTC time, RFC 3339.
    pub time: String,
    /// What it tells.
    pub kind: EventKind,
    /// Computer name.
    pub computer: String,
    /// Image name.
    pub image: String,
    /// Reservation id, if given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reservation: Option<String>,
    /// Attempt number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// Attempts in all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub of: Option<u32>,
    /// The phase it belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Wait step or action name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// How a step or phase ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<EventResult>,
    /// Human-readable text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Milliseconds since the step (or phase) started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<u64>,
    /// Step timeout in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Exit code of a command (output events) or of the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// Where the user connects: the address the OS shows on the public
    /// interface after the first boot configured it (the post-load result
    /// and the run's end that follow it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_address: Option<String>,
    /// Access events: the user, protocol, address, port, the addresses
    /// it is open to, and the password file (never the password).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access: Option<serde_json::Value>,
}

/// The most of each output stream an output event holds: its tail.
pub const EVENT_OUTPUT_BYTES: usize = 64 * 1024;

/// The most lines of each output stream an output event holds.
pub const EVENT_OUTPUT_LINES: usize = 500;

/// The most any other event message holds, in bytes (its head and tail).
pub const MESSAGE_BYTES: usize = 16 * 1024;

/// The clocks of the step in progress.
struct Step {
    name: String,
    start: Instant,
    timeout: Option<Duration>,
    /// The stall limit and when the status last changed.
    stall: Option<(Duration, Instant)>,
}

impl Step {
    /// What the terminal shows as time left: the limit that fires first,
    /// and whether that is the stall limit.
    fn left(&self) -> Option<(Duration, bool)> {
        let timeout = self
            .timeout
            .map(|t| (t.saturating_sub(self.start.elapsed()), false));
        let stall = self
            .stall
            .map(|(s, since)| (s.saturating_sub(since.elapsed()), true));
        match (timeout, stall) {
            (Some(t), Some(s)) => Some(if s.0 < t.0 { s } else { t }),
            (t, s) => t.or(s),
        }
    }
}

struct Inner {
    attempt: Option<(u32, u32)>,
    phase: Option<Phase>,
    /// When the phase started (the terminal's elapsed time between steps).
    phase_start: Option<Instant>,
    step: Option<Step>,
    last_progress: String,
    log: Option<(File, std::path::PathBuf)>,
    /// A write to the event log failed once (and was said).
    log_failed: bool,
    /// `[logs] journald` or `syslog`: where events also go.
    sink: Option<crate::journal::Sink>,
    /// A send to the sink failed once (and was said).
    sink_failed: bool,
    bar: Option<ProgressBar>,
    /// The public interface's address, once the first boot read it.
    public_address: Option<String>,
}

/// The reporter every module writes to.
pub struct Reporter {
    mode: Mode,
    verbosity: Verbosity,
    computer: String,
    image: String,
    reservation: Option<String>,
    inner: Mutex<Inner>,
}

impl Reporter {
    /// A reporter for one computer and image: JSON lines for
    /// [`Format::Json`], else a spinner when stderr is a terminal (and not
    /// [`Verbosity::Quiet`]), else plain lines.
    pub fn new(
        computer: &str,
        image: &str,
        reservation: Option<String>,
        format: Format,
        verbosity: Verbosity,
    ) -> Reporter {
        let mode = match format {
            Format::Json => Mode::Json,
            Format::Human if verbosity != Verbosity::Quiet && spinner_fits() => Mode::Tty,
            Format::Human => Mode::Plain,
        };
        Reporter {
            mode,
            verbosity,
            computer: computer.into(),
            image: image.into(),
            reservation,
            inner: Mutex::new(Inner {
                attempt: None,
                phase: None,
                phase_start: None,
                step: None,
                last_progress: String::new(),
                log: None,
                log_failed: false,
                sink: None,
                sink_failed: false,
                bar: None,
                public_address: None,
            }),
        }
    }

    /// Appends every later event to the event log `file` (open for
    /// appending; `path` names it in messages).
    pub fn log_to(&self, file: File, path: &Path) {
        self.lock().log = Some((file, path.to_path_buf()));
    }

    /// Sends every later event (but progress) to journald or syslog too.
    pub fn send_to(&self, sink: crate::journal::Sink) {
        self.lock().sink = Some(sink);
    }

    /// The output mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn base(&self, inner: &Inner, kind: EventKind) -> Event {
        Event {
            time: rfc3339(SystemTime::now()),
            kind,
            computer: self.computer.clone(),
            image: self.image.clone(),
            reservation: self.reservation.clone(),
            attempt: inner.attempt.map(|a| a.0),
            of: inner.attempt.map(|a| a.1),
            phase: inner.phase,
            step: inner.step.as_ref().map(|s| s.name.clone()),
            result: None,
            message: None,
            elapsed_ms: inner
                .step
                .as_ref()
                .map(|s| s.start.elapsed().as_millis() as u64),
            timeout_ms: inner
                .step
                .as_ref()
                .and_then(|s| s.timeout)
                .map(|d| d.as_millis() as u64),
            code: None,
            public_address: None,
            access: None,
        }
    }

    fn emit(&self, inner: &mut Inner, mut e: Event, screen: Screen) {
        if e.kind != EventKind::Output
            && let Some(m) = e.message.as_mut()
            && m.len() > MESSAGE_BYTES
        {
            *m = crate::exec::shorten(m, MESSAGE_BYTES);
        }
        if let Ok(line) = serde_json::to_string(&e).map(|l| json_safe(&l).into_owned()) {
            self.log_line(inner, &line);
            if self.mode == Mode::Json {
                stdout_line(&line);
            }
        }
        self.sink_event(inner, &e);
        let show = match screen {
            Screen::Always => true,
            Screen::IfVerbose => self.verbosity == Verbosity::Verbose,
            Screen::Never => false,
        };
        if !show
            || self.mode == Mode::Json
            || (self.verbosity == Verbosity::Quiet
                && !matches!(e.kind, EventKind::Warn | EventKind::Result))
        {
            return;
        }
        // What a command or a guest said is data: escaped for the screen.
        let text = printable(&plain(&e)).into_owned();
        // The spinner comes back below the line as the state is now, not
        // as it was before the event (a step that ended, a phase before).
        self.redraw(inner);
        match (&self.mode, inner.bar.as_ref()) {
            // Not bar.println: indicatif writes a printed line as a piece
            // of the redraw, which the stderr writer drops when behind.
            // The line goes as a line, erasing the spinner's row first
            // (its clear is a redraw too, and may have been dropped).
            // A bar indicatif hides gets plain lines, as no terminal does.
            (Mode::Tty, Some(bar)) if !bar.is_hidden() => {
                bar.suspend(|| stderr_line(&format!("\r\x1b[2K{text}")))
            }
            _ => stderr_line(&format!("{} {text}", e.time)),
        }
    }

    /// Sends the event to journald or syslog, if asked to (progress is
    /// left out: it changes by the second). The first failure is said once,
    /// in the event log and on the screen.
    fn sink_event(&self, inner: &mut Inner, e: &Event) {
        let Some(sink) = inner.sink.as_ref() else {
            return;
        };
        if e.kind == EventKind::Progress || inner.sink_failed {
            return;
        }
        let (entry, severity) = sink_entry(e);
        if let Err(err) = sink.send(&entry, severity) {
            inner.sink_failed = true;
            let msg = format!(
                "cannot send events to {}: {err}; no more are sent there (the event log keeps them)",
                sink.path().display()
            );
            let mut w = self.base(inner, EventKind::Warn);
            w.message = Some(msg);
            self.emit(inner, w, Screen::Always);
        }
    }

    /// Appends one line to the event log, whole or not at all: a write that
    /// fails (disk full, file too large) is cut back to where the file
    /// ended, so the next line never glues onto half of one. The first
    /// failure is told once, naming the file.
    fn log_line(&self, inner: &mut Inner, line: &str) {
        let Some((f, path)) = inner.log.as_mut() else {
            return;
        };
        let before = f.metadata().map(|m| m.len());
        // One write per line keeps concurrent appends whole.
        let Err(err) = f.write_all(format!("{line}\n").as_bytes()) else {
            return;
        };
        let cut = match before {
            Ok(len) => f.set_len(len).err(),
            Err(e) => Some(e),
        };
        if !inner.log_failed {
            inner.log_failed = true;
            let mut msg = format!(
                "reimage: warning: cannot write the event log {}: {err}; events that do not fit are left out",
                path.display()
            );
            if let Some(c) = cut {
                msg.push_str(&format!(" (and cutting back a partial line failed: {c})"));
            }
            stderr_line(&msg);
        }
    }

    /// Tells the event log (only: the screen is what failed) what stdout
    /// and stderr could not take, after a short wait for them to drain.
    fn note_lost(&self, inner: &mut Inner) {
        for s in [&crate::stdio::STDOUT, &crate::stdio::STDERR] {
            s.drain_for(crate::stdio::DRAIN);
            let lost = s.lost();
            if lost.none() {
                continue;
            }
            let mut what = Vec::new();
            if lost.dropped > 0 {
                what.push(format!(
                    "{} writes ({} bytes) were dropped",
                    lost.dropped, lost.dropped_bytes
                ));
            }
            if lost.pending_bytes > 0 {
                what.push(format!(
                    "{} bytes were still waiting at the run's end",
                    lost.pending_bytes
                ));
            }
            let mut e = self.base(inner, EventKind::Warn);
            e.message = Some(format!(
                "{} was not read: {} (its reader stopped reading; the run went on)",
                s.name(),
                what.join(", and ")
            ));
            if let Ok(line) = serde_json::to_string(&e) {
                self.log_line(inner, &line);
            }
        }
    }

    /// A run of `command` starts: marks where its events begin in the event
    /// log (`reimage log` splits runs there). Not shown on a terminal.
    pub fn start(&self, command: &str) {
        let mut i = self.lock();
        let mut e = self.base(&i, EventKind::Start);
        e.message = Some(format!("{command} (pid {})", std::process::id()));
        self.emit(&mut i, e, Screen::Never);
    }

    /// Attempt `k` of `n` starts.
    pub fn attempt(&self, k: u32, n: u32) {
        let mut i = self.lock();
        i.attempt = Some((k, n));
        i.phase = None;
        i.phase_start = None;
        i.step = None;
        i.last_progress.clear();
        let mut e = self.base(&i, EventKind::Attempt);
        e.message = Some(format!("attempt {k} of {n}"));
        self.emit(&mut i, e, Screen::Always);
    }

    /// A phase starts.
    pub fn phase(&self, phase: Phase) {
        let mut i = self.lock();
        i.phase = Some(phase);
        i.phase_start = Some(Instant::now());
        i.step = None;
        i.last_progress.clear();
        let mut e = self.base(&i, EventKind::Phase);
        e.message = Some(format!("{phase} starts"));
        self.emit(&mut i, e, Screen::Always);
        if self.mode == Mode::Tty && i.bar.is_none() {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            // Through the stderr writer: a stopped terminal (Ctrl-S)
            // drops redraws instead of blocking the run.
            bar.set_draw_target(indicatif::ProgressDrawTarget::term_like(Box::new(
                crate::stdio::Term::new(),
            )));
            bar.enable_steady_tick(Duration::from_millis(120));
            i.bar = Some(bar);
        }
        self.redraw(&i);
    }

    /// A wait step or action starts, with its timeout for this attempt.
    pub fn step(&self, name: &str, timeout: Option<Duration>) {
        let mut i = self.lock();
        i.step = Some(Step {
            name: name.into(),
            start: Instant::now(),
            timeout,
            stall: None,
        });
        i.last_progress.clear();
        let mut e = self.base(&i, EventKind::Step);
        // A step named as its phase ("load" in load) is not named twice.
        let named = i.phase.is_none_or(|p| p.name() != name);
        e.message = Some(match (timeout, named) {
            (Some(t), true) => format!("{name}: waiting up to {}", duration::fmt(t)),
            (Some(t), false) => format!("waiting up to {}", duration::fmt(t)),
            (None, _) => name.to_string(),
        });
        self.emit(&mut i, e, Screen::Always);
        self.redraw(&i);
    }

    /// Whether a step is in progress (one not ended by `step_end`).
    pub fn in_step(&self) -> bool {
        self.lock().step.is_some()
    }

    /// (Re)starts the current step's stall timer: the step gives up when
    /// its status has not changed for `limit`. The terminal's time left is
    /// then the stall's when it fires before the step's timeout.
    pub fn stall(&self, limit: Duration) {
        let mut i = self.lock();
        if let Some(s) = i.step.as_mut() {
            s.stall = Some((limit, Instant::now()));
        }
        self.redraw(&i);
    }

    /// What the current step sees now ("connection refused", "booting").
    /// Logged when it changes; the spinner shows it always.
    pub fn progress(&self, status: &str) {
        let mut i = self.lock();
        if i.last_progress != status {
            i.last_progress = status.to_string();
            let mut e = self.base(&i, EventKind::Progress);
            e.message = Some(status.to_string());
            self.emit(&mut i, e, Screen::IfVerbose);
        }
        self.redraw(&i);
    }

    /// The current step ended as it should: `message` says how.
    pub fn step_done(&self, message: &str) {
        self.step_end(EventResult::Ok, message);
    }

    /// The current step failed: `message` says why.
    pub fn step_failed(&self, message: &str) {
        self.step_end(EventResult::Failed, message);
    }

    /// The current step ended with `result`.
    fn step_end(&self, result: EventResult, message: &str) {
        let mut i = self.lock();
        let mut e = self.base(&i, EventKind::StepEnd);
        e.result = Some(result);
        e.message = Some(message.to_string());
        i.step = None;
        i.last_progress.clear();
        self.emit(&mut i, e, Screen::Always);
        self.redraw(&i);
    }

    /// A phase ended with a result.
    pub fn result(&self, phase: Phase, result: EventResult, message: Option<String>) {
        let mut i = self.lock();
        i.step = None;
        i.last_progress.clear();
        i.phase = Some(phase);
        let mut e = self.base(&i, EventKind::Result);
        e.elapsed_ms = None;
        e.result = Some(result);
        e.message = message;
        if phase == Phase::PostLoad && result == EventResult::Done {
            e.public_address = i.public_address.clone();
        }
        self.emit(&mut i, e, Screen::Always);
        self.redraw(&i);
    }

    /// The run ended with an exit code and a result (the record's).
    pub fn finish(&self, code: i32, result: EventResult, message: &str) {
        let mut i = self.lock();
        if let Some(bar) = i.bar.take() {
            bar.finish_and_clear();
        }
        i.step = None;
        self.note_lost(&mut i);
        let mut e = self.base(&i, EventKind::Run);
        e.code = Some(code);
        e.result = Some(result);
        e.message = Some(message.to_string());
        e.public_address = i.public_address.clone();
        self.emit(&mut i, e, Screen::Always);
    }

    /// The first boot read the public interface's address: said at once,
    /// and carried by the post-load result and the run's end.
    pub fn public_address(&self, address: &str) {
        let mut i = self.lock();
        i.public_address = Some(address.to_string());
        let mut e = self.base(&i, EventKind::Info);
        e.message = Some(format!("public address: {address}"));
        e.public_address = Some(address.to_string());
        self.emit(&mut i, e, Screen::Always);
    }

    /// The public address the first boot read, if it did.
    pub fn public_address_seen(&self) -> Option<String> {
        self.lock().public_address.clone()
    }

    /// A user's access was granted: where to connect, on every screen.
    pub fn access(&self, g: &crate::state::Grant, protocol: &str) {
        let mut i = self.lock();
        let mut e = self.base(&i, EventKind::Access);
        let pw = g.password_file.as_ref().map(|p| p.display().to_string());
        e.message = Some(format!(
            "connect: {protocol} {}@{} port {}{}",
            g.user,
            g.address,
            g.port,
            pw.as_ref()
                .map(|p| format!(", password in {p}"))
                .unwrap_or_default()
        ));
        e.access = Some(serde_json::json!({
            "user": g.user,
            "protocol": protocol,
            "address": g.address,
            "port": g.port,
            "from": g.from,
            "admin": g.admin,
            "password_file": pw,
        }));
        self.emit(&mut i, e, Screen::Always);
    }

    /// Something worth telling.
    pub fn info(&self, msg: &str) {
        let mut i = self.lock();
        let mut e = self.base(&i, EventKind::Info);
        e.message = Some(msg.to_string());
        self.emit(&mut i, e, Screen::Always);
    }

    /// Something the user should fix.
    pub fn warn(&self, msg: &str) {
        let mut i = self.lock();
        let mut e = self.base(&i, EventKind::Warn);
        e.message = Some(msg.to_string());
        self.emit(&mut i, e, Screen::Always);
    }

    /// A command's captured output: into the event log always, to the screen
    /// with `-v`.
    pub fn output(&self, command: &str, out: &Output) {
        let mut i = self.lock();
        let mut e = self.base(&i, EventKind::Output);
        e.code = Some(out.status);
        e.elapsed_ms = Some(out.elapsed.as_millis() as u64);
        e.message = Some(format!(
            "{command}\n{}",
            crate::exec::bounded(&out.text(), EVENT_OUTPUT_BYTES, EVENT_OUTPUT_LINES)
        ));
        self.emit(&mut i, e, Screen::IfVerbose);
    }

    fn redraw(&self, i: &Inner) {
        if let Some(bar) = i.bar.as_ref() {
            bar.set_message(self.status_line(i));
        }
    }

    /// The spinner's line: attempt, computer, phase, step, the step's
    /// elapsed time (the phase's between steps) and the time left before
    /// the limit that fires first, and what the step sees now.
    fn status_line(&self, i: &Inner) -> String {
        let mut msg = String::new();
        if let Some((k, n)) = i.attempt {
            msg.push_str(&format!("[{}/{}] ", k, n));
        }
        msg.push_str(&self.computer);
        if let Some(p) = &i.phase {
            msg.push_str(&format!(" {p}"));
        }
        match (&i.step, i.phase_start) {
            (Some(step), _) => {
                if i.phase.is_none_or(|p| p.name() != step.name) {
                    msg.push_str(&format!(" · {}", step.name));
                }
                msg.push_str(&format!(" {}", clock(step.start.elapsed())));
                // Rounded up: "0:00 left" only when it is out.
                let up = |d: Duration| clock(d + Duration::from_nanos(999_999_999));
                match step.left() {
                    Some((left, true)) => msg.push_str(&format!(" (stall ≤{} left)", up(left))),
                    Some((left, false)) => msg.push_str(&format!(" (≤{} left)", up(left))),
                    None => {}
                }
            }
            (None, Some(start)) => msg.push_str(&format!(" {}", clock(start.elapsed()))),
            (None, None) => {}
        }
        if !i.last_progress.is_empty() {
            msg.push_str(&format!(" · {}", i.last_progress));
        }
        printable(&msg).into_owned()
    }
}

/// Whether stderr is a terminal that can draw a spinner: a TTY whose
/// `TERM` is set and not `dumb` (a dumb terminal moves no cursor, so
/// redraws would pile up as text; it gets plain lines).
fn spinner_fits() -> bool {
    let term = std::env::var_os("TERM").unwrap_or_default();
    std::io::stderr().is_terminal() && !term.is_empty() && term != "dumb"
}

fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// One plain line for an event.
fn plain(e: &Event) -> String {
    let mut s = e.computer.clone();
    if let (Some(a), Some(n)) = (e.attempt, e.of) {
        s.push_str(&format!(" [{a}/{n}]"));
    }
    // A message that starts with its phase ("load: running ...") names it
    // itself, as do a phase's start and the run's end ("load starts",
    // "post-load failed, not retrying: ...").
    let said = |p: &str| {
        let rest = e.message.as_deref().and_then(|m| m.strip_prefix(p));
        rest.is_some_and(|r| r.starts_with(':'))
            || (matches!(e.kind, EventKind::Phase | EventKind::Run)
                && rest.is_some_and(|r| r.starts_with(' ')))
    };
    if let Some(p) = e.phase.filter(|p| !said(p.name())) {
        s.push_str(&format!(" {p}"));
    }
    let result = e.result.map_or("?", EventResult::name);
    match e.kind {
        EventKind::Result => s.push_str(&format!(": {result}")),
        EventKind::StepEnd => {
            match &e.step {
                Some(st) if e.phase.is_none_or(|p| p.name() != st) => {
                    s.push_str(&format!(" {st}: {result}"))
                }
                _ => s.push_str(&format!(": {result}")),
            }
            if let Some(ms) = e.elapsed_ms {
                s.push_str(&format!(
                    " after {}",
                    duration::fmt(Duration::from_millis(ms))
                ));
            }
        }
        EventKind::Warn => s.push_str(": warning"),
        _ => {}
    }
    if let Some(m) = &e.message {
        s.push_str(": ");
        s.push_str(m);
    }
    s
}

/// The kind of the event on one line of an event log: `None` when the
/// line is not a whole JSON object, `Some(None)` for an event of a kind
/// this reimage does not know (a newer one wrote it).
pub fn line_kind(line: &[u8]) -> Option<Option<EventKind>> {
    #[derive(serde::Deserialize)]
    struct Kind<'a> {
        #[serde(borrow)]
        kind: Option<Cow<'a, str>>,
    }
    let k: Kind = serde_json::from_slice(line).ok()?;
    Some(k.kind.as_deref().and_then(EventKind::from_name))
}

/// `s` as it may reach a terminal: control characters other than newline
/// and tab, and the bidirectional-text controls, written as escapes
/// (`\x1b`, `\x0d`, `\u{9b}`, `\u{202e}`), so text a command or a guest
/// printed can neither move the cursor, retitle the window, answer back
/// through the terminal nor hide what follows it. JSON output is escaped
/// by JSON instead.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(hidden) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            c if !hidden(c) => out.push(c),
            c if c.is_ascii() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    Cow::Owned(out)
}

/// `json`, a JSON text, with the characters [`printable`] escapes that
/// JSON leaves raw (DEL, the C1 controls, the bidirectional-text controls)
/// written as `\uXXXX`: the same JSON, and harmless on a terminal. These
/// characters can stand only inside a JSON string, where the escape means
/// the same character; the other controls JSON escapes itself.
pub fn json_safe(json: &str) -> Cow<'_, str> {
    let raw = |c: char| hidden(c) && (c == '\u{7f}' || !c.is_ascii());
    if !json.chars().any(raw) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if raw(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A character [`printable`] escapes.
fn hidden(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `SystemTime` as RFC 3339 UTC with milliseconds. A clock outside what
/// RFC 3339 can write (before 1970 here, or past 9999) is clamped to it.
pub fn rfc3339(t: SystemTime) -> String {
    // The last millisecond of 9999-12-31.
    let last = UNIX_EPOCH + Duration::from_millis(253_402_300_799_999);
    humantime::format_rfc3339_millis(t.clamp(UNIX_EPOCH, last)).to_string()
}

/// An event as journald or syslog gets it: the line people read, the
/// fields, and how bad it is.
fn sink_entry(e: &Event) -> (crate::journal::Entry<'static>, crate::journal::Severity) {
    use crate::journal::Severity as S;
    let mut fields: Vec<(&'static str, String)> =
        vec![("COMPUTER", e.computer.clone()), ("IMAGE", e.image.clone())];
    let mut add = |name: &'static str, v: Option<String>| {
        if let Some(v) = v {
            fields.push((name, v));
        }
    };
    add("RESERVATION", e.reservation.clone());
    add("PHASE", e.phase.map(|p| p.name().to_string()));
    add("RESULT", e.result.map(|r| r.name().to_string()));
    add("STEP", e.step.clone());
    add("ATTEMPT", e.attempt.map(|a| a.to_string()));
    add("ATTEMPTS", e.of.map(|a| a.to_string()));
    add("EXIT_CODE", e.code.map(|c| c.to_string()));
    let severity = match (e.kind, e.result) {
        (EventKind::Warn, _) => S::Warning,
        (EventKind::Output, _) => S::Debug,
        (EventKind::Result | EventKind::Run, Some(EventResult::Fatal)) => S::Error,
        (
            EventKind::Result | EventKind::Run,
            Some(EventResult::Retry | EventResult::Interrupted),
        ) => S::Warning,
        (EventKind::Result | EventKind::Run, Some(EventResult::Done)) => S::Notice,
        _ => S::Info,
    };
    let entry = crate::journal::Entry {
        message: plain(e),
        kind: e.kind.name(),
        fields,
    };
    (entry, severity)
}

/// Writes one line to stderr; a closed or broken stderr is ignored, so it
/// can neither end nor change the run, and one whose reader does not read
/// never blocks it (see `stdio`).
pub fn stderr_line(line: &str) {
    crate::stdio::STDERR.write(format!("{line}\n").into_bytes());
}

/// Writes one line to stdout; as [`stderr_line`].
pub fn stdout_line(line: &str) {
    crate::stdio::STDOUT.write(format!("{line}\n").into_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_json_keeps_its_strings() {
        let r = Reporter::new("pc7", "img", None, Format::Human, Verbosity::Quiet);
        let i = r.lock();
        let mut e = r.base(&i, EventKind::StepEnd);
        e.phase = Some(Phase::PostLoad);
        e.result = Some(EventResult::Failed);
        let v = serde_json::to_value(&e).expect("json");
        assert_eq!(v["kind"], "step-end");
        assert_eq!(v["phase"], "post-load");
        assert_eq!(v["result"], "failed");
        e.kind = EventKind::Result;
        e.result = Some(Verdict::Retry.into());
        let v = serde_json::to_value(&e).expect("json");
        assert_eq!(
            (&v["kind"], &v["result"]),
            (&"result".into(), &"retry".into())
        );
        assert_eq!(plain(&e), "pc7 post-load: retry");
    }

    #[test]
    fn control_characters_reach_the_screen_escaped() {
        assert_eq!(printable("plain\ttext\nnext"), "plain\ttext\nnext");
        assert_eq!(
            printable("\x1b]0;owned\x07\x1b[2Jx\ry\u{9b}1m\u{202e}z\x7f"),
            r"\x1b]0;owned\x07\x1b[2Jx\x0dy\u{9b}1m\u{202e}z\x7f"
        );
        let r = Reporter::new("pc7", "img", None, Format::Human, Verbosity::Quiet);
        let i = r.lock();
        let mut e = r.base(&i, EventKind::Output);
        e.message = Some("cmd\n\x1b[31mred".into());
        assert_eq!(printable(&plain(&e)), "pc7: cmd\n\\x1b[31mred");
        // JSON escapes them its own way, and json_safe what JSON leaves.
        e.message = Some("\x1b[31mred\u{9b}2J\u{7f}\u{202e}é".into());
        let json = serde_json::to_string(&e).expect("json");
        let safe = json_safe(&json);
        assert!(
            safe.contains(r"\u001b[31mred\u009b2J\u007f\u202eé"),
            "{safe}"
        );
        let back: serde_json::Value = serde_json::from_str(&safe).expect("still JSON");
        assert_eq!(back["message"], "\x1b[31mred\u{9b}2J\u{7f}\u{202e}é");
    }

    #[test]
    fn the_status_line_counts_down_to_the_limit_that_fires_first() {
        let r = Reporter::new("pc7", "img", None, Format::Human, Verbosity::Quiet);
        r.attempt(1, 2);
        r.phase(Phase::Load);
        assert_eq!(r.status_line(&r.lock()), "[1/2] pc7 load 0:00");
        // A step named as its phase is not named twice.
        r.step("load", Some(Duration::from_secs(90)));
        assert_eq!(r.status_line(&r.lock()), "[1/2] pc7 load 0:00 (≤1:30 left)");
        r.step_done("exit 0");
        r.step("install", Some(Duration::from_secs(3600)));
        r.progress("installing");
        r.stall(Duration::from_secs(600));
        assert_eq!(
            r.status_line(&r.lock()),
            "[1/2] pc7 load · install 0:00 (stall ≤10:00 left) · installing"
        );
        // A stall limit longer than what the timeout leaves is not shown.
        r.stall(Duration::from_secs(7200));
        assert!(r.status_line(&r.lock()).contains("(≤1:00:00 left)"));
        // What a step saw is gone when it ends, and when the phase changes.
        r.step_done("installed");
        assert_eq!(r.status_line(&r.lock()), "[1/2] pc7 load 0:00");
        r.step("port", Some(Duration::from_secs(5)));
        r.progress("connection refused");
        r.phase(Phase::PostLoad);
        assert!(!r.status_line(&r.lock()).contains("refused"));
        r.progress("connection refused");
        r.result(Phase::PostLoad, EventResult::Retry, None);
        r.attempt(2, 2);
        assert_eq!(r.status_line(&r.lock()), "[2/2] pc7");
    }

    #[test]
    fn a_step_named_as_its_phase_is_said_once() {
        let r = Reporter::new("pc7", "img", None, Format::Human, Verbosity::Quiet);
        let mut i = r.lock();
        i.attempt = Some((1, 3));
        i.phase = Some(Phase::Load);
        i.step = Some(Step {
            name: "load".into(),
            start: Instant::now(),
            timeout: None,
            stall: None,
        });
        let mut e = r.base(&i, EventKind::StepEnd);
        e.result = Some(EventResult::Ok);
        e.elapsed_ms = Some(2000);
        e.message = Some("exit 0".into());
        assert_eq!(plain(&e), "pc7 [1/3] load: ok after 2s: exit 0");
        e.step = Some("port".into());
        assert_eq!(plain(&e), "pc7 [1/3] load port: ok after 2s: exit 0");
        // Nor a phase its message names.
        let mut e = r.base(&i, EventKind::Phase);
        e.message = Some("load starts".into());
        assert_eq!(plain(&e), "pc7 [1/3]: load starts");
        e.kind = EventKind::Info;
        e.message = Some("load of pc7: running".into());
        assert_eq!(plain(&e), "pc7 [1/3] load: load of pc7: running");
        e.message = Some("load: running `load.sh`".into());
        assert_eq!(plain(&e), "pc7 [1/3]: load: running `load.sh`");
    }

    #[test]
    fn formats_utc_times() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40.123Z");
        let leap_day = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap_day), "2000-02-29T00:00:00.000Z");
        let before = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(rfc3339(before), "1970-01-01T00:00:00.000Z");
        let after = UNIX_EPOCH + Duration::from_secs(300_000_000_000);
        assert_eq!(rfc3339(after), "9999-12-31T23:59:59.999Z");
    }
}
