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

struct Inner {
    attempt: Option<(u32, u32)>,
    phase: Option<Phase>,
    step: Option<(String, Instant, Option<Duration>)>,
    last_progress: String,
    log: Option<(File, std::path::PathBuf)>,
    /// A write to the event log failed once (and was said).
    log_failed: bool,
    bar: Option<ProgressBar>,
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
            Format::Human if std::io::stderr().is_terminal() && verbosity != Verbosity::Quiet => {
                Mode::Tty
            }
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
                step: None,
                last_progress: String::new(),
                log: None,
                log_failed: false,
                bar: None,
            }),
        }
    }

    /// Appends every later event to the event log `file` (open for
    /// appending; `path` names it in messages).
    pub fn log_to(&self, file: File, path: &Path) {
        self.lock().log = Some((file, path.to_path_buf()));
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
            step: inner.step.as_ref().map(|s| s.0.clone()),
            result: None,
            message: None,
            elapsed_ms: inner
                .step
                .as_ref()
                .map(|s| s.1.elapsed().as_millis() as u64),
            timeout_ms: inner
                .step
                .as_ref()
                .and_then(|s| s.2)
                .map(|d| d.as_millis() as u64),
            code: None,
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
        match (&self.mode, inner.bar.as_ref()) {
            // Not bar.println: indicatif writes a printed line as a piece
            // of the redraw, which the stderr writer drops when behind.
            // The line goes as a line, erasing the spinner's row first
            // (its clear is a redraw too, and may have been dropped).
            (Mode::Tty, Some(bar)) => bar.suspend(|| stderr_line(&format!("\r\x1b[2K{text}"))),
            _ => stderr_line(&format!("{} {text}", e.time)),
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
        i.step = None;
        let mut e = self.base(&i, EventKind::Attempt);
        e.message = Some(format!("attempt {k} of {n}"));
        self.emit(&mut i, e, Screen::Always);
    }

    /// A phase starts.
    pub fn phase(&self, phase: Phase) {
        let mut i = self.lock();
        i.phase = Some(phase);
        i.step = None;
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
                crate::stdio::Term,
            )));
            bar.enable_steady_tick(Duration::from_millis(120));
            i.bar = Some(bar);
        }
        self.redraw(&i);
    }

    /// A wait step or action starts, with its timeout for this attempt.
    pub fn step(&self, name: &str, timeout: Option<Duration>) {
        let mut i = self.lock();
        i.step = Some((name.into(), Instant::now(), timeout));
        i.last_progress.clear();
        let mut e = self.base(&i, EventKind::Step);
        e.message = Some(match timeout {
            Some(t) => format!("{name}: waiting up to {}", duration::fmt(t)),
            None => name.to_string(),
        });
        self.emit(&mut i, e, Screen::Always);
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

    /// The current step ended.
    pub fn step_end(&self, ok: bool, message: &str) {
        let mut i = self.lock();
        let mut e = self.base(&i, EventKind::StepEnd);
        e.result = Some(if ok {
            EventResult::Ok
        } else {
            EventResult::Failed
        });
        e.message = Some(message.to_string());
        self.emit(&mut i, e, Screen::Always);
        i.step = None;
        self.redraw(&i);
    }

    /// A phase ended with a result.
    pub fn result(&self, phase: Phase, result: EventResult, message: Option<String>) {
        let mut i = self.lock();
        i.step = None;
        i.phase = Some(phase);
        let mut e = self.base(&i, EventKind::Result);
        e.elapsed_ms = None;
        e.result = Some(result);
        e.message = message;
        self.emit(&mut i, e, Screen::Always);
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
        self.emit(&mut i, e, Screen::Always);
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
        let Some(bar) = i.bar.as_ref() else { return };
        let mut msg = String::new();
        if let Some((k, n)) = i.attempt {
            msg.push_str(&format!("[{}/{}] ", k, n));
        }
        msg.push_str(&self.computer);
        if let Some(p) = &i.phase {
            msg.push_str(&format!(" {p}"));
        }
        if let Some((name, start, timeout)) = &i.step {
            let el = start.elapsed();
            msg.push_str(&format!(" · {name} {}", clock(el)));
            if let Some(t) = timeout {
                msg.push_str(&format!(" (≤{} left)", clock(t.saturating_sub(el))));
            }
        }
        if !i.last_progress.is_empty() {
            msg.push_str(&format!(" · {}", i.last_progress));
        }
        bar.set_message(printable(&msg).into_owned());
    }
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
    if let Some(p) = &e.phase {
        s.push_str(&format!(" {p}"));
    }
    let result = e.result.map_or("?", EventResult::name);
    match e.kind {
        EventKind::Result => s.push_str(&format!(": {result}")),
        EventKind::StepEnd => {
            if let Some(st) = &e.step {
                s.push_str(&format!(" {st}: {result}"));
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
