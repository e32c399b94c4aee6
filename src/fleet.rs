//! The admin's views: `reimage status` (one line per computer, from the
//! last-run records and, with `[coordination]`, the store's live holders)
//! and `reimage log` (a computer's event log, split into runs).
//!
//! Both read files other processes write while they read; a record or a
//! line that does not parse is shown as such, never an error. What they
//! show came from commands and guests: their text output escapes control
//! characters ([`printable`]); `--json` output is JSON, escaped as JSON.
//! Every read is bounded (see [`crate::state::Lines`]).

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::cli::{LogArgs, StatusArgs};
use crate::config::Loaded;
use crate::coord::SlotClass;
use crate::coord::store::{Holder, Store};
use crate::error::Error;
use crate::report::{EventKind, Format, json_safe, line_kind, printable};
use crate::signal;
use crate::state::{
    LINE_CAP, LOG_READ_CAP, Line, Lines, RunResult, StateDir, setup_error, skip_partial, window,
};

/// The views' standard output, written through [`crate::stdio::STDOUT`]:
/// it waits for a slow reader (a pager) and still ends on SIGTERM. A
/// reader that stops reading (`reimage log pc7 | head`) ends the output
/// quietly; any other failed write (a full disk, an I/O error) ends it
/// too, and makes the command fail (exit 1) when it is done, rather than
/// exit 0 with its output lost.
#[derive(Debug, Default)]
pub struct Out {
    _private: (),
}

impl Out {
    /// A fresh standard output.
    pub fn new() -> Out {
        Out::default()
    }

    /// Writes one line (flushed as soon as the reader takes it: `log
    /// --follow` is read live).
    pub fn line(&mut self, line: &str) {
        if !self.closed() {
            crate::report::stdout_line(line);
        }
    }

    /// Writes one JSON text as a line, [`json_safe`].
    pub fn json(&mut self, json: &str) {
        self.line(&json_safe(json));
    }

    /// No more lines will be read or written.
    pub fn closed(&self) -> bool {
        crate::stdio::STDOUT.failure().is_some()
    }

    /// The command's result once its output is written (the wait ends
    /// early on a signal): `code`, or the error that lost the output.
    pub fn done(self, code: i32) -> Result<i32, Error> {
        crate::stdio::STDOUT.drain_until_signal();
        match crate::stdio::STDOUT.failure() {
            Some((std::io::ErrorKind::BrokenPipe, _)) => Ok(code),
            Some((_, e)) => Err(Error::Fatal(anyhow::anyhow!(
                "cannot write to standard output: {e}"
            ))),
            None => Ok(code),
        }
    }
}

/// The last-run record as `status` reads it: every field optional, so a
/// record from an older or newer reimage still shows.
#[derive(Debug, Serialize, Deserialize, Default, Clone)]
struct Record {
    command: Option<String>,
    image: Option<String>,
    reservation: Option<String>,
    attempt: Option<u32>,
    of: Option<u32>,
    phase: Option<String>,
    result: Option<String>,
    message: Option<String>,
    exit_code: Option<i32>,
    started: Option<String>,
    updated: Option<String>,
    pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pid_start: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    boot_id: Option<String>,
    /// Where the user connects (a two-network computer's public address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    public_address: Option<String>,
}

impl Record {
    /// The record says its run is still going (true or not: the process
    /// may be gone).
    fn says_running(&self) -> bool {
        self.result.as_deref().and_then(RunResult::from_name) == Some(RunResult::Running)
    }
}

impl Record {
    /// Whether the run that wrote the record still runs on this host: its
    /// process (pid and start time; a pid alone may belong to another
    /// process by now). A record an older reimage wrote has no start time:
    /// its run counts as running while the computer's lock is held.
    fn still_runs(&self, state: &StateDir, computer: &str) -> bool {
        match (self.pid, self.pid_start) {
            (Some(pid), Some(start)) => {
                crate::exec::still_runs(pid, start, self.boot_id.as_deref())
            }
            _ => state.lock_held(computer),
        }
    }
}

/// The computer's last-run record: none, one that parses, or why it does
/// not. A directory the state dir refuses is the view's error.
fn read_record(state: &StateDir, computer: &str) -> Result<Option<Result<Record, String>>, Error> {
    let p = state.last_run_file(computer);
    let text = match state.last_run_bytes(computer) {
        Ok(Some(t)) => t,
        Ok(None) => return Ok(None),
        Err(e) if e.downcast_ref::<crate::state::Refused>().is_some() => {
            return Err(setup_error(e, state.root()));
        }
        Err(e) if denied(&e) => return Err(view_error(e, state.root())),
        Err(e) => return Ok(Some(Err(format!("{e:#}")))),
    };
    Ok(Some(serde_json::from_slice(&text).map_err(|e| {
        format!("unreadable record {}: {e}", p.display())
    })))
}

/// Is a run in progress, and where; `runs` says whether the record's run
/// still runs.
fn run_state(rec: Option<&Record>, holder: Option<&Holder>, runs: bool) -> String {
    if let Some(h) = holder {
        return format!("running on {} (pid {})", h.host, h.pid);
    }
    match rec {
        None => "never run".into(),
        Some(r) if r.says_running() => match r.pid {
            Some(p) if runs => format!("running (pid {p})"),
            Some(p) => format!("stale (pid {p} gone)"),
            None => "stale".into(),
        },
        Some(_) => "idle".into(),
    }
}

/// What `status` shows, from its flags.
struct Filter {
    failed: bool,
    since: Option<SystemTime>,
    reservation: Option<String>,
}

impl Filter {
    fn new(a: &StatusArgs, now: SystemTime) -> Result<Filter, Error> {
        let since = match &a.since {
            Some(s) => Some(since(s, a.utc, now).map_err(Error::Usage)?),
            None => None,
        };
        Ok(Filter {
            failed: a.failed,
            since,
            reservation: a.reservation.clone(),
        })
    }

    /// Whether any flag narrows the view (then a computer without a
    /// record is left out).
    fn narrows(&self) -> bool {
        self.failed || self.since.is_some() || self.reservation.is_some()
    }

    fn keeps(&self, seen: &Seen<'_>) -> bool {
        if !self.narrows() {
            return true;
        }
        let Some(r) = seen.record.as_ref().filter(|_| seen.bad.is_none()) else {
            return false;
        };
        if self.failed && !seen.failed() {
            return false;
        }
        if let Some(t) = self.since {
            let updated = r.updated.as_deref().and_then(|u| parse_time(u).ok());
            if updated.is_none_or(|u| u < t) {
                return false;
            }
        }
        match &self.reservation {
            Some(id) => r.reservation.as_deref() == Some(id.as_str()),
            None => true,
        }
    }
}

/// `--since`: a duration back from `now` ("12h", "2d") or a time: RFC
/// 3339 with its offset, or `YYYY-MM-DD[ HH:MM[:SS]]` in local time (UTC
/// with `--utc`).
fn since(s: &str, utc: bool, now: SystemTime) -> Result<SystemTime, String> {
    let t = s.trim();
    if let Ok(d) = crate::duration::parse(t) {
        return Ok(now.checked_sub(d).unwrap_or(std::time::UNIX_EPOCH));
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(t) {
        return Ok(SystemTime::from(t));
    }
    let naive = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(t, f).ok())
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })
        .ok_or_else(|| {
            format!(
                "--since {s:?} is neither a duration (\"12h\", \"2d\") nor a time (\"2026-12-05 18:00\", local time unless --utc; or RFC 3339 with its offset)"
            )
        })?;
    let at = if utc {
        Some(naive.and_utc())
    } else {
        naive
            .and_local_timezone(chrono::Local)
            .earliest()
            .map(|t| t.with_timezone(&chrono::Utc))
    };
    at.map(SystemTime::from).ok_or_else(|| {
        format!("--since {s:?}: that local time does not exist (a clock change skips it)")
    })
}

/// A time a record holds (RFC 3339).
fn parse_time(s: &str) -> Result<SystemTime, humantime::TimestampError> {
    humantime::parse_rfc3339_weak(s.trim_end_matches('Z'))
        .or_else(|_| humantime::parse_rfc3339(s))
        .or_else(|e| {
            chrono::DateTime::parse_from_rfc3339(s)
                .map(SystemTime::from)
                .map_err(|_| e)
        })
}

/// How `status` writes times: local (the default) or UTC, compact or in
/// full (`-w`).
#[derive(Debug, Clone, Copy)]
struct Clock {
    utc: bool,
    wide: bool,
}

impl Clock {
    /// A record's RFC 3339 time for the table; one that does not parse is
    /// shown as it is.
    fn show(&self, s: &str) -> String {
        let Ok(t) = parse_time(s) else {
            return s.to_string();
        };
        let t = chrono::DateTime::<chrono::Utc>::from(t);
        match (self.utc, self.wide) {
            (true, false) => t.format("%Y-%m-%d %H:%MZ").to_string(),
            (true, true) => t.format("%Y-%m-%d %H:%M:%SZ").to_string(),
            (false, false) => t
                .with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M")
                .to_string(),
            (false, true) => t
                .with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S%:z")
                .to_string(),
        }
    }
}

/// `reimage status [COMPUTER...]`: one JSON line per computer as it is
/// read, or one table at the end, then (for people) the load slots in use
/// per limit class. Exits 69 when the store could not be read, else 1
/// when a run it shows failed, else 0.
pub fn status(
    loaded: &Loaded,
    state: &StateDir,
    a: &StatusArgs,
    format: Format,
    classes: &[SlotClass],
) -> Result<i32, Error> {
    let filter = Filter::new(a, SystemTime::now())?;
    let names = computers_to_show(loaded, state, &a.computers)?;
    let (holders, code) = live_holders(loaded, &names);
    let clock = Clock {
        utc: a.utc,
        wide: a.wide,
    };
    let mut out = Out::new();
    let mut rows = Vec::new();
    let mut failed = false;
    let mut granted = Vec::new();
    for name in &names {
        let seen = Seen::read(state, name, holders.get(name))?;
        if !filter.keeps(&seen) {
            continue;
        }
        failed |= seen.failed();
        let grants = state.read_grants(name).unwrap_or_else(|e| {
            granted.push(format!("{name}: {}", printable(&format!("{e:#}"))));
            Vec::new()
        });
        match format {
            Format::Json => {
                let mut v = seen.json();
                v["grants"] = serde_json::to_value(&grants).unwrap_or_default();
                out.json(&v.to_string());
            }
            Format::Human => {
                rows.push(seen.row(clock));
                granted.extend(grants.iter().map(|g| grant_line(name, g)));
            }
        }
    }
    if format == Format::Human {
        match a.wide {
            true => print_table(&WIDE, &rows, None, &mut out),
            false => {
                // PUBLIC only when a computer has a public address.
                let public = rows.iter().any(|r| r[PUBLIC] != "-");
                let rows: Vec<Vec<String>> = rows.iter().map(|r| compact(r, public)).collect();
                let head: Vec<&str> = COMPACT
                    .iter()
                    .copied()
                    .filter(|h| public || *h != "PUBLIC")
                    .collect();
                print_table(&head, &rows, Some(WIDTH), &mut out);
            }
        }
        if filter.narrows() && rows.is_empty() {
            out.line("(no run matches)");
        }
        if !granted.is_empty() {
            out.line("access granted:");
            for l in &granted {
                out.line(&format!("  {l}"));
            }
        }
        if !filter.narrows() {
            print_slots(loaded, state, classes, &mut out);
        }
    }
    // An unreadable store (69) says first that the view is incomplete.
    let code = if failed && code == 0 {
        crate::outcome::EXIT_FATAL
    } else {
        code
    };
    out.done(code)
}

/// `status`'s line for one grant: who, for which reservation, from where,
/// since when, where to connect.
fn grant_line(computer: &str, g: &crate::state::Grant) -> String {
    let text = format!(
        "{computer}: {} (reservation {}{}) from {} since {}, at {} port {}{}",
        g.user,
        g.reservation,
        if g.admin { ", admin" } else { "" },
        g.from.join(", "),
        g.since,
        g.address,
        g.port,
        g.password_file
            .as_ref()
            .map(|p| format!(", password in {}", p.display()))
            .unwrap_or_default()
    );
    printable(&text).into_owned()
}

/// The computers `status` shows: those asked for (each must be in the
/// config or have records), else every one in the config or on disk.
fn computers_to_show(
    loaded: &Loaded,
    state: &StateDir,
    wanted: &[String],
) -> Result<Vec<String>, Error> {
    let on_disk = state.computers().map_err(|e| view_error(e, state.root()))?;
    if wanted.is_empty() {
        let mut names = on_disk;
        names.extend(loaded.config.computers.keys().cloned());
        return Ok(names.into_iter().collect());
    }
    let mut names = BTreeSet::new();
    for w in wanted {
        if !loaded.config.computers.contains_key(w) && !on_disk.contains(w) {
            return Err(Error::Usage(format!(
                "unknown computer `{w}`: not in {} and no records in {}",
                loaded.path.display(),
                state.computers_dir().display()
            )));
        }
        names.insert(w.clone());
    }
    Ok(names.into_iter().collect())
}

/// An error from the state directory in a view: one this user may not
/// read is said so (exit 77), never shown as "never run"; anything else
/// is a run's error ([`setup_error`]).
fn view_error(e: anyhow::Error, root: &Path) -> Error {
    if !denied(&e) {
        return setup_error(e, root);
    }
    Error::NoPermission(format!(
        "{e:#}: this user (uid {}) may not read the state directory {}, so no run can be shown; it is its owner's alone (root's, mode 0700, as packaged): run this as that user (sudo), or give the directory with --state-dir",
        rustix::process::getuid().as_raw(),
        root.display(),
    ))
}

/// The error is a permission refused by the system (EACCES, EPERM).
fn denied(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
}

/// With `[coordination]`, the store's live holders of `names`, by
/// computer; and the exit code: 69 when the store cannot be read (said on
/// stderr; the local records still show).
fn live_holders(loaded: &Loaded, names: &[String]) -> (BTreeMap<String, Holder>, i32) {
    let Some(s) = &loaded.config.coordination else {
        return (BTreeMap::new(), 0);
    };
    match Store::new(s).and_then(|st| st.holders(names)) {
        Ok(v) => (v.into_iter().map(|h| (h.computer.clone(), h)).collect(), 0),
        Err(e) => {
            // The store's error may quote what its server said.
            let text = format!("{e:#}");
            crate::report::stderr_line(&format!(
                "reimage: warning: {}: runs on other management nodes are not shown",
                printable(&text)
            ));
            (BTreeMap::new(), crate::outcome::EXIT_STORE)
        }
    }
}

/// What `status` knows of one computer.
struct Seen<'a> {
    name: &'a str,
    /// The last-run record (empty when it does not parse).
    record: Option<Record>,
    /// Why the record does not parse.
    bad: Option<String>,
    holder: Option<&'a Holder>,
    /// Is a run in progress, and where.
    run: String,
    /// A run is in progress (here or, with a store, anywhere).
    running: bool,
}

impl<'a> Seen<'a> {
    fn read(
        state: &StateDir,
        name: &'a str,
        holder: Option<&'a Holder>,
    ) -> Result<Seen<'a>, Error> {
        let (record, bad) = match read_record(state, name)? {
            Some(Ok(r)) => (Some(r), None),
            Some(Err(e)) => (Some(Record::default()), Some(e)),
            None => (None, None),
        };
        let runs = record.as_ref().is_some_and(|r| r.still_runs(state, name));
        let run = run_state(record.as_ref(), holder, runs);
        let running =
            holder.is_some() || (runs && record.as_ref().is_some_and(Record::says_running));
        Ok(Seen {
            name,
            record,
            bad,
            holder,
            run,
            running,
        })
    }

    /// The last run failed: it ended retry, fatal or interrupted (or with
    /// another exit code than 0), or its process died while its record
    /// said running. A run in progress has not failed.
    fn failed(&self) -> bool {
        let Some(r) = self.record.as_ref().filter(|_| self.bad.is_none()) else {
            return false;
        };
        if self.running {
            return false;
        }
        let result = r.result.as_deref().and_then(RunResult::from_name);
        match result {
            Some(RunResult::Retry | RunResult::Fatal | RunResult::Interrupted) => true,
            Some(RunResult::Running) => true,
            _ => r.exit_code.is_some_and(|c| c != 0),
        }
    }

    /// Why, in one line: a failed run's error (its first line), a stale
    /// run's dead process, what a running run does; empty otherwise.
    fn reason(&self) -> String {
        if let Some(b) = &self.bad {
            return b.clone();
        }
        let Some(r) = &self.record else {
            return String::new();
        };
        if self.running {
            let phase = r.phase.as_deref().filter(|p| !p.is_empty());
            return match phase {
                Some(p) => format!("{} in {p}", self.run),
                None => self.run.clone(),
            };
        }
        if !self.failed() {
            return String::new();
        }
        if r.says_running() {
            return format!(
                "{}: killed or crashed{}",
                self.run.trim_start_matches("stale (").trim_end_matches(')'),
                r.phase
                    .as_deref()
                    .filter(|p| !p.is_empty())
                    .map(|p| format!(" in {p}"))
                    .unwrap_or_default()
            );
        }
        let first = r
            .message
            .as_deref()
            .and_then(|m| m.lines().map(str::trim).find(|l| !l.is_empty()));
        match (first, r.exit_code) {
            (Some(m), _) => m.to_string(),
            (None, Some(c)) => format!("exit {c}"),
            (None, None) => "no reason recorded".into(),
        }
    }

    /// The computer as one JSON object.
    fn json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({ "computer": self.name, "run": self.run });
        if let Some(r) = &self.record {
            v["record"] = serde_json::to_value(r).unwrap_or_default();
        }
        if let Some(h) = self.holder {
            v["holder"] = serde_json::json!({
                "host": h.host, "pid": h.pid, "command": h.command, "started": h.started,
            });
        }
        if let Some(b) = &self.bad {
            v["error"] = serde_json::json!(b);
        }
        v
    }

    /// The computer as a row of the wide table, one cell per [`WIDE`]
    /// column, each [`printable`] (a directory's name or a record may hold
    /// anything).
    fn row(&self, clock: Clock) -> Vec<String> {
        let r = self.record.clone().unwrap_or_default();
        let dash = |s: Option<String>| s.unwrap_or_else(|| "-".into());
        let cells = [
            self.name.to_string(),
            // Only the subcommand: the rest is in the image and attempt
            // columns.
            dash(
                r.command
                    .and_then(|c| c.split_whitespace().next().map(str::to_string)),
            ),
            dash(r.image),
            dash(r.reservation),
            dash(r.phase.filter(|p| !p.is_empty())),
            dash(r.attempt.zip(r.of).map(|(a, o)| format!("{a}/{o}"))),
            match self.bad {
                Some(_) => "unreadable".to_string(),
                None => dash(r.result),
            },
            dash(r.exit_code.map(|c| c.to_string())),
            dash(r.public_address),
            dash(r.started.map(|t| clock.show(&t))),
            dash(r.updated.map(|t| clock.show(&t))),
            self.run.clone(),
            self.reason(),
        ];
        cells
            .into_iter()
            .map(|c| printable(&c).into_owned())
            .collect()
    }
}

/// The wide table's columns (`status -w`).
const WIDE: [&str; 13] = [
    "COMPUTER",
    "COMMAND",
    "IMAGE",
    "RESERVATION",
    "PHASE",
    "ATTEMPT",
    "RESULT",
    "EXIT",
    "PUBLIC",
    "STARTED",
    "UPDATED",
    "RUN",
    "REASON",
];

/// The index of PUBLIC in a wide row.
const PUBLIC: usize = 8;

/// The default table's columns: a wide row's cells [`compact`] keeps
/// (PUBLIC when a computer has a public address).
const COMPACT: [&str; 7] = [
    "COMPUTER", "IMAGE", "RESULT", "ATTEMPT", "PUBLIC", "UPDATED", "REASON",
];

/// The width the default table fits in (its reasons are cut to it).
const WIDTH: usize = 100;

/// A wide row as the default table shows it: the result says whether a
/// run is in progress, or never ran, or died. `public`: with the PUBLIC
/// column.
fn compact(wide: &[String], public: bool) -> Vec<String> {
    let run = wide[11].as_str();
    let result = if run == "never run" {
        "never run".to_string()
    } else if run.starts_with("running") {
        "running".to_string()
    } else if run.starts_with("stale") {
        "stale".to_string()
    } else {
        wide[6].clone()
    };
    let mut row = vec![wide[0].clone(), wide[2].clone(), result, wide[5].clone()];
    if public {
        row.push(wide[PUBLIC].clone());
    }
    row.extend([wide[10].clone(), wide[12].clone()]);
    row
}

/// The table: a head line, then the rows, each column as wide as its
/// widest cell (the last one not padded). With `fit`, the last column is
/// cut (with "…") so a line takes at most that many columns, unless the
/// others take nearly all of them already.
fn print_table(head: &[&str], rows: &[Vec<String>], fit: Option<usize>, out: &mut Out) {
    let n = head.len();
    let mut w: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(n) {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let used: usize = w[..n - 1].iter().map(|x| x + 2).sum();
    let last = fit.map(|f| f.saturating_sub(used).max(20));
    let mut line = |cells: &[&str]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(&cut(c, last));
            } else {
                s.push_str(&format!("{c:<width$}  ", width = w[i]));
            }
        }
        out.line(s.trim_end());
    };
    line(head);
    for r in rows {
        line(&r.iter().map(String::as_str).collect::<Vec<_>>());
    }
}

/// `s` in at most `max` characters, cut in the middle (marked "…"): an
/// error's head says what failed, its tail the cause a command gave.
fn cut(s: &str, max: Option<usize>) -> String {
    let n = s.chars().count();
    match max {
        Some(m) if n > m => {
            let keep = m.saturating_sub(1);
            let head = keep * 2 / 5;
            let tail = keep - head;
            let mut t: String = s.chars().take(head).collect();
            t.push('…');
            t.extend(s.chars().skip(n - tail));
            t
        }
        _ => s.to_string(),
    }
}

/// The load slots in use per limit class: reimage's own loads (the slots'
/// labels: here, or every host's with a store) and the nodes the
/// provisioner's system shows loading with no reimage run behind them,
/// each with the command that frees its slot.
fn print_slots(loaded: &Loaded, state: &StateDir, classes: &[SlotClass], out: &mut Out) {
    if classes.is_empty() {
        return;
    }
    out.line("");
    out.line("LOAD SLOTS");
    for c in classes {
        let ours: BTreeSet<String> = match &loaded.config.coordination {
            Some(s) => Store::new(s)
                .and_then(|st| st.slot_labels(&c.class))
                .unwrap_or_default(),
            None => state.slot_labels(&c.class),
        }
        .into_iter()
        .collect();
        let loading: BTreeSet<String> = c.loading.clone().unwrap_or_default().into_iter().collect();
        let stray: Vec<&String> = loading.difference(&ours).collect();
        let used = ours.len() + stray.len();
        out.line(&printable(&format!(
            "{}: {used} of {} in use",
            c.title, c.max
        )));
        for n in &ours {
            out.line(&printable(&format!("  {n}: loading, by reimage")));
        }
        for n in stray {
            out.line(&printable(&format!(
                "  {n}: in install state, with no reimage run: `{}` frees its slot",
                c.free_with.replace("{node}", n)
            )));
        }
        if let Err(e) = &c.loading {
            out.line(&printable(&format!(
                "  (what it loads itself is not known: {e}; only reimage's loads are counted)"
            )));
        }
    }
}

/// Splits an event log into runs as it is read, line by line: a run
/// begins at a `start` event, or at the first line after a `run` (end)
/// event; blank lines belong to no run.
#[derive(Debug)]
struct Splitter {
    ended: bool,
    runs: usize,
}

impl Splitter {
    fn new() -> Splitter {
        Splitter {
            ended: true,
            runs: 0,
        }
    }

    /// The number (from 1) of the run a line of `kind` belongs to (`None`
    /// for a line that is not an event of a known kind).
    fn feed(&mut self, kind: Option<EventKind>) -> usize {
        if kind == Some(EventKind::Start) || self.ended {
            self.runs += 1;
        }
        self.ended = kind == Some(EventKind::Run);
        self.runs
    }
}

/// The bytes of one run in the log, and whether its last line is its
/// `run` event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Span {
    start: u64,
    end: u64,
    ended: bool,
}

/// What one pass over the log found, in constant memory: how many runs,
/// the span of the run asked for (or the last), and where reading stopped.
#[derive(Debug, Default)]
struct Scan {
    runs: usize,
    wanted: Option<Span>,
    /// The offset after the last whole line.
    end: u64,
    /// Bytes at the head not read (past [`LOG_READ_CAP`]).
    unread: u64,
}

/// A line of the log as `log` takes it: whole (with its kind, `None` when
/// it is not an event) or too long to read.
enum Entry<'l> {
    Event(&'l [u8], Option<Option<EventKind>>),
    TooLong(u64),
}

impl Entry<'_> {
    /// Its kind, for splitting runs: `None` unless an event of a known kind.
    fn kind(&self) -> Option<EventKind> {
        match self {
            Entry::Event(_, k) => k.flatten(),
            Entry::TooLong(_) => None,
        }
    }
}

/// Where [`each_line`] starts reading.
#[derive(Debug, Clone, Copy)]
enum ReadFrom {
    /// At the start of a window over the log, which may cut a line: the
    /// rest of that line is skipped.
    Window(u64),
    /// At the start of a line.
    Line(u64),
}

/// The lines of `file` from `from` on; calls `each` with each non-blank
/// line, its offset and its end, until it says stop. Returns the bytes
/// skipped at the head (a window's cut line and all before it) and the
/// offset after the last whole line.
fn each_line(
    file: &File,
    from: ReadFrom,
    mut each: impl FnMut(u64, u64, Entry<'_>) -> bool,
) -> std::io::Result<(u64, u64)> {
    let (ReadFrom::Window(at) | ReadFrom::Line(at)) = from;
    let mut reader = file;
    reader.seek(SeekFrom::Start(at))?;
    let mut lines = Lines::new(reader, at, LINE_CAP);
    let unread = match from {
        ReadFrom::Window(w) if w > 0 => w + skip_partial(&mut lines)?,
        _ => 0,
    };
    while let Some(line) = lines.next_line()? {
        let go = match line {
            Line::Whole { text, .. } if text.trim_ascii().is_empty() => true,
            Line::Whole { at, text } => each(
                at,
                at + text.len() as u64 + 1,
                Entry::Event(text, line_kind(text)),
            ),
            Line::TooLong { at, len } => each(at, at + len, Entry::TooLong(len)),
        };
        if !go {
            break;
        }
    }
    Ok((unread, lines.offset()))
}

/// One pass over the log: counts its runs and keeps the span of run
/// `want` (from 1; `None`: the last).
fn scan(file: &File, from: u64, want: Option<usize>) -> std::io::Result<Scan> {
    let mut split = Splitter::new();
    let (mut last, mut last_n) = (Span::default(), 0);
    let mut wanted = None;
    let (unread, end) = each_line(file, ReadFrom::Window(from), |at, end, line| {
        let n = split.feed(line.kind());
        if n != last_n {
            (last, last_n) = (
                Span {
                    start: at,
                    ..Span::default()
                },
                n,
            );
        }
        last.end = end;
        last.ended = line.kind() == Some(EventKind::Run);
        if want == Some(n) {
            wanted = Some(last);
        }
        true
    })?;
    Ok(Scan {
        runs: split.runs,
        wanted: if want.is_some() {
            wanted
        } else {
            (split.runs > 0).then_some(last)
        },
        end,
        unread,
    })
}

/// One event as a readable line, every part [`printable`].
fn readable(line: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
        return format!(
            "(unreadable line) {}",
            printable(&String::from_utf8_lossy(line))
        );
    };
    let s = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .map(|t| printable(t).into_owned())
    };
    let n = |k: &str| v.get(k).and_then(|x| x.as_i64());
    let kind = v
        .get("kind")
        .and_then(|x| x.as_str())
        .and_then(EventKind::from_name);
    let mut out = format!(
        "{} {}",
        s("time").unwrap_or_default(),
        s("computer").unwrap_or_default()
    );
    if let (Some(a), Some(o)) = (n("attempt"), n("of")) {
        out.push_str(&format!(" [{a}/{o}]"));
    }
    if let Some(p) = s("phase") {
        out.push_str(&format!(" {p}"));
    }
    match kind {
        Some(EventKind::Start) => out.push_str(": start"),
        Some(EventKind::Step) => {
            out.push_str(&format!(" {}: started", s("step").unwrap_or_default()))
        }
        Some(EventKind::StepEnd) => out.push_str(&format!(
            " {}: {}",
            s("step").unwrap_or_default(),
            s("result").unwrap_or_default()
        )),
        Some(EventKind::Result) => out.push_str(&format!(": {}", s("result").unwrap_or_default())),
        Some(EventKind::Run) => out.push_str(&format!(": exit {}", n("code").unwrap_or(-1))),
        Some(EventKind::Output) => {
            out.push_str(&format!(": output (exit {})", n("code").unwrap_or(-1)))
        }
        Some(EventKind::Warn) => out.push_str(": warning"),
        _ => {}
    }
    // Split before escaping: the newlines are the message's own lines.
    if let Some(m) = v.get("message").and_then(|x| x.as_str()) {
        let m = m.trim_end();
        if m.contains('\n') {
            out.push(':');
            for l in m.lines() {
                out.push_str(&format!("\n    {}", printable(l)));
            }
        } else if !m.is_empty() {
            out.push_str(&format!(": {}", printable(m)));
        }
    }
    out
}

/// One line of the log on stdout: as it is (an event, JSON) with
/// `--json`, else [`readable`]. A line that is not an event is said to be
/// unreadable, in JSON too.
fn show(at: u64, line: Entry<'_>, format: Format, out: &mut Out) {
    match (format, line) {
        (Format::Json, Entry::Event(text, Some(_))) => {
            out.json(&String::from_utf8_lossy(text));
        }
        (Format::Json, Entry::Event(text, None)) => out.json(
            &serde_json::json!({
                "kind": "unreadable",
                "offset": at,
                "text": String::from_utf8_lossy(text),
            })
            .to_string(),
        ),
        (Format::Json, Entry::TooLong(len)) => out.json(
            &serde_json::json!({
                "kind": "unreadable",
                "offset": at,
                "bytes": len,
                "message": format!("a line longer than {LINE_CAP} bytes, not shown"),
            })
            .to_string(),
        ),
        (Format::Human, Entry::Event(text, _)) => out.line(&readable(text)),
        (Format::Human, Entry::TooLong(len)) => out.line(&format!(
            "(unreadable line at byte {at}: {len} bytes, longer than the {LINE_CAP} reimage reads; not shown)"
        )),
    }
}

/// Shows the lines of `span`.
fn show_span(file: &File, span: Span, format: Format, out: &mut Out) -> std::io::Result<()> {
    each_line(file, ReadFrom::Line(span.start), |at, _, line| {
        if at >= span.end || out.closed() {
            return false;
        }
        show(at, line, format, out);
        true
    })?;
    Ok(())
}

/// `reimage log COMPUTER [--run N | --all | --follow]`. It reads the
/// last [`LOG_READ_CAP`] bytes of the log at most, in two passes of
/// constant memory (count the runs, then show what was asked for).
pub fn log(state: &StateDir, a: &LogArgs, format: Format) -> Result<i32, Error> {
    crate::state::check_computer_name(&a.computer).map_err(Error::Usage)?;
    let path = state.event_log(&a.computer);
    let io =
        |e: std::io::Error| Error::Fatal(anyhow::anyhow!("cannot read {}: {e}", path.display()));
    let file = state
        .read_event_log(&a.computer)
        .map_err(|e| view_error(e, state.root()))?
        .ok_or_else(|| {
            Error::Usage(format!(
                "no event log for computer `{}` at {} (has it run on this host? see --state-dir)",
                a.computer,
                path.display()
            ))
        })?;
    let len = file.metadata().map_err(io)?.len();
    let from = window(len, LOG_READ_CAP);
    let scan = scan(&file, from, a.run.map(|n| n as usize)).map_err(io)?;
    if scan.runs == 0 {
        return Err(Error::Usage(format!(
            "the event log {} has no events yet",
            path.display()
        )));
    }
    if scan.unread > 0 {
        crate::report::stderr_line(&format!(
            "reimage: note: {} holds {len} bytes; the first {} are not shown (reimage reads the last {LOG_READ_CAP} bytes of a log; runs are counted from there)",
            path.display(),
            scan.unread
        ));
    }
    let mut out = Out::new();
    if a.all {
        show_all(&file, from, scan.runs, format, &mut out).map_err(io)?;
        return out.done(0);
    }
    if a.list {
        let clock = Clock {
            utc: a.utc,
            wide: false,
        };
        list_runs(&file, from, format, clock, &mut out).map_err(io)?;
        return out.done(0);
    }
    let Some(run) = scan.wanted else {
        return Err(Error::Usage(format!(
            "computer `{}` has {} run(s) in its event log: --run takes 1 to {}",
            a.computer, scan.runs, scan.runs
        )));
    };
    show_span(&file, run, format, &mut out).map_err(io)?;
    if a.follow && !run.ended && !out.closed() {
        follow(state, &a.computer, &file, scan.end, format, &mut out).map_err(io)?;
    }
    out.done(0)
}

/// `log --all`: every run, each under a head line (for people).
fn show_all(
    file: &File,
    from: u64,
    runs: usize,
    format: Format,
    out: &mut Out,
) -> std::io::Result<()> {
    let mut split = Splitter::new();
    let mut current = 0;
    each_line(file, ReadFrom::Window(from), |at, _, line| {
        let n = split.feed(line.kind());
        if n != current && format == Format::Human {
            out.line(&format!("== run {n} of {runs}"));
        }
        current = n;
        show(at, line, format, out);
        !out.closed()
    })?;
    Ok(())
}

/// One run as `log --list` shows it, from its events.
#[derive(Debug, Default, Serialize)]
struct RunLine {
    run: usize,
    started: Option<String>,
    command: Option<String>,
    image: Option<String>,
    reservation: Option<String>,
    /// The run event's result; none while the run goes on (or if it died).
    result: Option<String>,
    code: Option<i64>,
    message: Option<String>,
    /// The time of its last event.
    last: Option<String>,
}

impl RunLine {
    /// Takes what an event of the run says.
    fn take(&mut self, v: &serde_json::Value) {
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        let kind = s("kind").as_deref().and_then(EventKind::from_name);
        self.started = self.started.take().or_else(|| s("time"));
        self.last = s("time").or(self.last.take());
        self.image = self.image.take().or_else(|| s("image"));
        self.reservation = self.reservation.take().or_else(|| s("reservation"));
        match kind {
            // "provision --image img ... (pid 7)": its subcommand.
            Some(EventKind::Start) => {
                self.command =
                    s("message").and_then(|m| m.split_whitespace().next().map(str::to_string));
            }
            Some(EventKind::Run) => {
                self.result = s("result");
                self.code = v.get("code").and_then(|c| c.as_i64());
                self.message = s("message");
            }
            _ => {}
        }
    }

    /// The table row: the reason is a failed run's message (first line).
    fn row(&self, clock: Clock) -> Vec<String> {
        let dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
        let failed = self.code.is_some_and(|c| c != 0);
        let reason = match (&self.result, failed) {
            (None, _) => "no end event: still running, or killed".to_string(),
            (Some(_), true) => self
                .message
                .as_deref()
                .and_then(|m| m.lines().map(str::trim).find(|l| !l.is_empty()))
                .unwrap_or_default()
                .to_string(),
            (Some(_), false) => String::new(),
        };
        [
            self.run.to_string(),
            self.started
                .as_deref()
                .map_or_else(|| "-".into(), |t| clock.show(t)),
            dash(&self.command),
            dash(&self.image),
            dash(&self.reservation),
            dash(&self.result),
            self.code.map_or_else(|| "-".into(), |c| c.to_string()),
            reason,
        ]
        .into_iter()
        .map(|c| printable(&c).into_owned())
        .collect()
    }
}

/// `log --list`: one line per run in the log (JSON: one object each).
fn list_runs(
    file: &File,
    from: u64,
    format: Format,
    clock: Clock,
    out: &mut Out,
) -> std::io::Result<()> {
    let mut split = Splitter::new();
    let mut runs: Vec<RunLine> = Vec::new();
    each_line(file, ReadFrom::Window(from), |_, _, line| {
        let n = split.feed(line.kind());
        if runs.last().is_none_or(|r| r.run != n) {
            runs.push(RunLine {
                run: n,
                ..RunLine::default()
            });
        }
        if let (Entry::Event(text, Some(_)), Some(r)) = (&line, runs.last_mut())
            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(text)
        {
            r.take(&v);
        }
        true
    })?;
    match format {
        Format::Json => {
            for r in &runs {
                out.json(&serde_json::to_string(r).unwrap_or_default());
            }
        }
        Format::Human => {
            let rows: Vec<Vec<String>> = runs.iter().map(|r| r.row(clock)).collect();
            print_table(&RUNS, &rows, Some(WIDTH), out);
        }
    }
    Ok(())
}

/// `log --list`'s columns.
const RUNS: [&str; 8] = [
    "RUN",
    "STARTED",
    "COMMAND",
    "IMAGE",
    "RESERVATION",
    "RESULT",
    "EXIT",
    "REASON",
];

/// A note while following: a line for people, on stderr with `--json`
/// (stdout stays events only).
fn note(format: Format, out: &mut Out, text: &str) {
    match format {
        Format::Human => out.line(&format!("({text})")),
        Format::Json => crate::report::stderr_line(&format!("reimage: note: {text}")),
    }
}

/// Shows new events of the run from offset `at` on until the run ends
/// (its `run` event, or another run's `start`), its process is gone, or
/// SIGINT. A log renamed away (logrotate) is followed on in the file the
/// run writes to; one truncated in place (copytruncate) from its new start.
/// Each is said.
fn follow(
    state: &StateDir,
    computer: &str,
    file: &File,
    at: u64,
    format: Format,
    out: &mut Out,
) -> std::io::Result<()> {
    let mut reader = file;
    reader.seek(SeekFrom::Start(at))?;
    let mut lines = Lines::new(reader, at, LINE_CAP);
    let mut said_replaced = false;
    loop {
        if signal::check().is_err() || out.closed() {
            return Ok(());
        }
        let mut got = false;
        while let Some(line) = lines.next_line()? {
            got = true;
            let (at, entry) = match line {
                Line::Whole { text, .. } if text.trim_ascii().is_empty() => continue,
                Line::Whole { at, text } => (at, Entry::Event(text, line_kind(text))),
                Line::TooLong { at, len } => (at, Entry::TooLong(len)),
            };
            let kind = entry.kind();
            if kind == Some(EventKind::Start) {
                // Another run began: ours ended without its last event.
                return Ok(());
            }
            show(at, entry, format, out);
            if kind == Some(EventKind::Run) {
                return Ok(());
            }
        }
        if got {
            continue;
        }
        if file.metadata()?.len() < lines.offset() + lines.pending() {
            note(
                format,
                out,
                "the event log was truncated in place (copytruncate?): following it from its new start",
            );
            let mut reader = file;
            reader.seek(SeekFrom::Start(0))?;
            lines = Lines::new(reader, 0, LINE_CAP);
            continue;
        }
        if !said_replaced && replaced(state, computer, file) {
            said_replaced = true;
            note(
                format,
                out,
                "the event log was renamed or replaced: following the file the run writes to",
            );
        }
        let running = match read_record(state, computer) {
            Ok(Some(Ok(r))) => r.says_running() && r.still_runs(state, computer),
            _ => false,
        };
        if !running {
            note(format, out, "the run's process is gone; no more events");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The event log's name no longer leads to the file `file` has open.
fn replaced(state: &StateDir, computer: &str, file: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (
        std::fs::symlink_metadata(state.event_log(computer)),
        file.metadata(),
    ) {
        (Ok(p), Ok(f)) => (p.dev(), p.ino()) != (f.dev(), f.ino()),
        (Err(_), _) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str, text: &str) -> File {
        let p = std::env::temp_dir().join(format!("reimage-fleet-{name}-{}", std::process::id()));
        std::fs::write(&p, text).expect("write");
        let f = File::open(&p).expect("open");
        let _ = std::fs::remove_file(&p);
        f
    }

    #[test]
    fn runs_split_at_start_and_after_run_events() {
        let text = concat!(
            "{\"kind\":\"attempt\"}\n",
            "{\"kind\":\"run\",\"code\":0}\n",
            "{\"kind\":\"start\"}\n",
            "{\"kind\":\"attempt\"}\n",
            "\n",
            "{\"kind\":\"start\"}\n",
            "not json\n",
            "{\"kind\":\"run\",\"code\":1}\n",
            "{\"kind\":\"attempt\"}\n",
        );
        let f = scratch("split", text);
        let last = scan(&f, 0, None).expect("scan");
        assert_eq!(last.runs, 4);
        let at = |line: &str| text.find(line).expect("line") as u64;
        assert_eq!(
            last.wanted,
            Some(Span {
                start: text.rfind("{\"kind\":\"attempt\"}").expect("last") as u64,
                end: text.len() as u64,
                ended: false
            })
        );
        let third = scan(&f, 0, Some(3)).expect("scan").wanted.expect("run 3");
        assert_eq!(
            (third.start, third.end, third.ended),
            (
                at("{\"kind\":\"start\"}\nnot"),
                text.rfind("{\"kind\":\"attempt\"}").expect("last") as u64,
                true
            )
        );
        assert_eq!(scan(&f, 0, Some(5)).expect("scan").wanted, None);
    }

    #[test]
    fn a_status_row_shortens_the_command_and_dashes_what_is_missing() {
        let record = Record {
            command: Some("provision --image img --reservation 4711".into()),
            phase: Some(String::new()),
            attempt: Some(2),
            of: Some(3),
            result: Some("retry".into()),
            message: Some("\nport 22 closed\nmore".into()),
            updated: Some("2026-12-06T08:53:07.123Z".into()),
            ..Record::default()
        };
        let seen = Seen {
            name: "pc7",
            record: Some(record),
            bad: None,
            holder: None,
            run: "idle".into(),
            running: false,
        };
        let clock = Clock {
            utc: true,
            wide: false,
        };
        let row = seen.row(clock);
        assert_eq!(
            row,
            [
                "pc7",
                "provision",
                "-",
                "-",
                "-",
                "2/3",
                "retry",
                "-",
                "-",
                "-",
                "2026-12-06 08:53Z",
                "idle",
                "port 22 closed"
            ]
        );
        assert!(seen.failed());
        assert_eq!(
            compact(&row, false),
            [
                "pc7",
                "-",
                "retry",
                "2/3",
                "2026-12-06 08:53Z",
                "port 22 closed"
            ]
        );
        assert_eq!(compact(&row, true)[4], "-", "PUBLIC after ATTEMPT");
        let unreadable = Seen {
            bad: Some("unreadable record".into()),
            ..seen
        };
        assert_eq!(unreadable.row(clock)[6], "unreadable");
        assert_eq!(unreadable.json()["error"], "unreadable record");
        assert!(!unreadable.failed());
    }

    #[test]
    fn since_takes_a_duration_or_a_time() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(since("2h", true, now), Ok(now - Duration::from_secs(7200)));
        let t = since("1970-01-12 13:00", true, now).expect("utc time");
        assert_eq!(
            t,
            SystemTime::UNIX_EPOCH + Duration::from_secs(11 * 86_400 + 13 * 3600)
        );
        assert_eq!(
            since("1970-01-12T13:00:00+01:00", false, now),
            Ok(t - Duration::from_secs(3600))
        );
        assert!(since("yesterday-ish", false, now).is_err());
    }

    #[test]
    fn the_last_column_is_cut_to_fit() {
        assert_eq!(cut("abcdefghij", Some(6)), "ab…hij");
        assert_eq!(cut("abc", Some(4)), "abc");
        assert_eq!(cut("abcdef", None), "abcdef");
    }

    #[test]
    fn events_read_as_lines_by_their_kind() {
        let line = |kind: &str| {
            readable(
                format!(
                    r#"{{"time":"T","computer":"pc7","kind":"{kind}","step":"port 22","result":"ok","code":3}}"#
                )
                .as_bytes(),
            )
        };
        assert_eq!(line("step-end"), "T pc7 port 22: ok");
        assert_eq!(line("run"), "T pc7: exit 3");
        assert_eq!(line("output"), "T pc7: output (exit 3)");
        // A kind from a newer reimage still shows, without a suffix.
        assert_eq!(line("teleport"), "T pc7");
        assert_eq!(readable(b"nope"), "(unreadable line) nope");
    }

    #[test]
    fn what_a_command_printed_is_shown_escaped() {
        let line = r#"{"time":"T","computer":"pc7","kind":"output","code":0,"message":"cmd\n\u001b]0;x\u0007ok\r\u009b2J"}"#;
        assert_eq!(
            readable(line.as_bytes()),
            "T pc7: output (exit 0):\n    cmd\n    \\x1b]0;x\\x07ok\\x0d\\u{9b}2J"
        );
        assert_eq!(readable(b"\x1b[2Jraw"), "(unreadable line) \\x1b[2Jraw");
    }
}
