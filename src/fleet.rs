//! The admin's views: `reimage status` (one line per computer, from the
//! last-run records and, with `[coordination]`, the store's live holders)
//! and `reimage log` (a computer's event log, split into runs).
//!
//! Both read files other processes write while they read; a record or a
//! line that does not parse is shown as such, never an error.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

use crate::cli::LogArgs;
use crate::config::Loaded;
use crate::coord::store::{Holder, Store};
use crate::error::Error;
use crate::report::{EventKind, Format};
use crate::signal;
use crate::state::{RunResult, StateDir};

/// One line on stdout; a closed stdout (`reimage log pc7 | head`) is not
/// an error.
macro_rules! out {
    ($($t:tt)*) => {
        crate::report::stdout_line(&format!($($t)*))
    };
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

fn read_record(state: &StateDir, computer: &str) -> Option<Result<Record, String>> {
    let p = state.last_run_file(computer);
    let text = std::fs::read_to_string(&p).ok()?;
    Some(serde_json::from_str(&text).map_err(|e| format!("unreadable record {}: {e}", p.display())))
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

/// `reimage status [COMPUTER...]`: one JSON line per computer as it is
/// read, or one table at the end.
pub fn status(
    loaded: &Loaded,
    state: &StateDir,
    wanted: &[String],
    format: Format,
) -> Result<i32, Error> {
    let names = computers_to_show(loaded, state, wanted)?;
    let (holders, code) = live_holders(loaded, &names);
    let mut rows = Vec::new();
    for name in &names {
        let seen = Seen::read(state, name, holders.get(name));
        match format {
            Format::Json => out!("{}", seen.json()),
            Format::Human => rows.push(seen.row()),
        }
    }
    if format == Format::Human {
        print_table(&rows);
    }
    Ok(code)
}

/// The computers `status` shows: those asked for (each must be in the
/// config or have records), else every one in the config or on disk.
fn computers_to_show(
    loaded: &Loaded,
    state: &StateDir,
    wanted: &[String],
) -> Result<Vec<String>, Error> {
    let on_disk = state.computers();
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
            crate::report::stderr_line(&format!(
                "reimage: warning: {e:#}: runs on other management nodes are not shown"
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
}

impl<'a> Seen<'a> {
    fn read(state: &StateDir, name: &'a str, holder: Option<&'a Holder>) -> Seen<'a> {
        let (record, bad) = match read_record(state, name) {
            Some(Ok(r)) => (Some(r), None),
            Some(Err(e)) => (Some(Record::default()), Some(e)),
            None => (None, None),
        };
        let runs = record.as_ref().is_some_and(|r| r.still_runs(state, name));
        let run = run_state(record.as_ref(), holder, runs);
        Seen {
            name,
            record,
            bad,
            holder,
            run,
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

    /// The computer as a table row, one cell per [`COLUMNS`] entry.
    fn row(&self) -> [String; COLUMNS.len()] {
        let r = self.record.clone().unwrap_or_default();
        let dash = |s: Option<String>| s.unwrap_or_else(|| "-".into());
        [
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
            dash(r.started),
            dash(r.updated),
            self.run.clone(),
        ]
    }
}

/// The columns of `status`'s table.
const COLUMNS: [&str; 11] = [
    "COMPUTER",
    "COMMAND",
    "IMAGE",
    "RESERVATION",
    "PHASE",
    "ATTEMPT",
    "RESULT",
    "EXIT",
    "STARTED",
    "UPDATED",
    "RUN",
];

/// The table: a head line, then the rows, each column as wide as its
/// widest cell (the last one not padded).
fn print_table(rows: &[[String; COLUMNS.len()]]) {
    let mut w = COLUMNS.map(str::len);
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: [&str; COLUMNS.len()]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<width$}  ", width = w[i]));
            }
        }
        out!("{}", s.trim_end());
    };
    line(COLUMNS);
    for r in rows {
        line(r.each_ref().map(String::as_str));
    }
}

/// The event log split into runs: a run begins at a `start` event, or at
/// the first event after a `run` (end) event.
fn split_runs(text: &str) -> Vec<Vec<&str>> {
    let mut runs: Vec<Vec<&str>> = Vec::new();
    let mut ended = true;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let kind = kind_of(line);
        if kind == Some(EventKind::Start) || ended {
            runs.push(Vec::new());
        }
        ended = kind == Some(EventKind::Run);
        if let Some(r) = runs.last_mut() {
            r.push(line);
        }
    }
    runs
}

/// The kind of the event on `line`; None for a line that is not an event
/// or a kind this reimage does not know.
fn kind_of(line: &str) -> Option<EventKind> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    EventKind::from_name(v.get("kind")?.as_str()?)
}

/// One event as a readable line.
fn readable(line: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
        return format!("(unreadable line) {line}");
    };
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    let n = |k: &str| v.get(k).and_then(|x| x.as_i64());
    let kind = s("kind").as_deref().and_then(EventKind::from_name);
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
    if let Some(m) = s("message") {
        let m = m.trim_end();
        if m.contains('\n') {
            out.push(':');
            for l in m.lines() {
                out.push_str(&format!("\n    {l}"));
            }
        } else if !m.is_empty() {
            out.push_str(&format!(": {m}"));
        }
    }
    out
}

fn show(line: &str, format: Format) {
    if format == Format::Json {
        out!("{line}");
    } else {
        out!("{}", readable(line));
    }
}

/// `reimage log COMPUTER [--run N | --all | --follow]`.
pub fn log(state: &StateDir, a: &LogArgs, format: Format) -> Result<i32, Error> {
    let path = state.event_log(&a.computer);
    let mut file = std::fs::File::open(&path).map_err(|e| {
        Error::Usage(format!(
            "no event log for computer `{}` at {}: {e} (has it run on this host? see --state-dir)",
            a.computer,
            path.display()
        ))
    })?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| Error::Fatal(anyhow::anyhow!("cannot read {}: {e}", path.display())))?;
    // Only whole lines: a writer may be in the middle of one.
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let text = String::from_utf8_lossy(&bytes[..whole]).into_owned();
    let runs = split_runs(&text);
    if runs.is_empty() {
        return Err(Error::Usage(format!(
            "the event log {} has no events yet",
            path.display()
        )));
    }
    if a.all {
        for (i, r) in runs.iter().enumerate() {
            if format == Format::Human {
                out!("== run {} of {}", i + 1, runs.len());
            }
            r.iter().for_each(|l| show(l, format));
        }
        return Ok(0);
    }
    let k = a.run.map_or(runs.len(), |n| n as usize);
    let Some(run) = runs.get(k.wrapping_sub(1)) else {
        return Err(Error::Usage(format!(
            "computer `{}` has {} run(s) in its event log: --run takes 1 to {}",
            a.computer,
            runs.len(),
            runs.len()
        )));
    };
    run.iter().for_each(|l| show(l, format));
    if !a.follow || run.last().and_then(|l| kind_of(l)) == Some(EventKind::Run) {
        return Ok(0);
    }
    follow(state, &a.computer, &mut file, whole as u64, format)
}

/// Shows new events until the run ends (its `run` event), its process is
/// gone, or SIGINT.
fn follow(
    state: &StateDir,
    computer: &str,
    file: &mut std::fs::File,
    mut at: u64,
    format: Format,
) -> Result<i32, Error> {
    let mut pending = Vec::new();
    loop {
        if signal::check().is_err() {
            return Ok(0);
        }
        let mut buf = Vec::new();
        if file.seek(SeekFrom::Start(at)).is_ok() && file.read_to_end(&mut buf).is_ok() {
            at += buf.len() as u64;
            pending.extend_from_slice(&buf);
        }
        while let Some(i) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=i).collect();
            let line = String::from_utf8_lossy(&line).trim_end().to_string();
            if line.is_empty() {
                continue;
            }
            let kind = kind_of(&line);
            if kind == Some(EventKind::Start) {
                // Another run began: ours ended without its last event.
                return Ok(0);
            }
            show(&line, format);
            if kind == Some(EventKind::Run) {
                return Ok(0);
            }
        }
        if buf.is_empty() {
            // A new run trims the log by renaming a new file over it, so
            // the run followed here has ended.
            if replaced(&state.event_log(computer), file) {
                return Ok(0);
            }
            let running = match read_record(state, computer) {
                Some(Ok(r)) => r.says_running() && r.still_runs(state, computer),
                _ => false,
            };
            if !running {
                if format == Format::Human {
                    out!("(the run's process is gone; no more events)");
                }
                return Ok(0);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The file at `path` is no longer the one `file` has open.
fn replaced(path: &Path, file: &std::fs::File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(path), file.metadata()) {
        (Ok(p), Ok(f)) => (p.dev(), p.ino()) != (f.dev(), f.ino()),
        (Err(_), _) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_split_at_start_and_after_run_events() {
        let text = concat!(
            "{\"kind\":\"attempt\"}\n",
            "{\"kind\":\"run\",\"code\":0}\n",
            "{\"kind\":\"start\"}\n",
            "{\"kind\":\"attempt\"}\n",
            "{\"kind\":\"start\"}\n",
            "{\"kind\":\"attempt\"}\n",
            "{\"kind\":\"run\",\"code\":1}\n",
            "{\"kind\":\"attempt\"}\n",
        );
        let runs = split_runs(text);
        assert_eq!(
            runs.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![2, 2, 3, 1]
        );
    }

    #[test]
    fn a_status_row_shortens_the_command_and_dashes_what_is_missing() {
        let record = Record {
            command: Some("provision --image img --reservation 4711".into()),
            phase: Some(String::new()),
            attempt: Some(2),
            of: Some(3),
            result: Some("retry".into()),
            ..Record::default()
        };
        let seen = Seen {
            name: "pc7",
            record: Some(record),
            bad: None,
            holder: None,
            run: "idle".into(),
        };
        let row = seen.row();
        assert_eq!(
            row.each_ref().map(String::as_str),
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
                "idle"
            ]
        );
        let unreadable = Seen {
            bad: Some("unreadable record".into()),
            ..seen
        };
        assert_eq!(unreadable.row()[6], "unreadable");
        assert_eq!(unreadable.json()["error"], "unreadable record");
    }

    #[test]
    fn events_read_as_lines_by_their_kind() {
        let line = |kind: &str| {
            readable(&format!(
                r#"{{"time":"T","computer":"pc7","kind":"{kind}","step":"port 22","result":"ok","code":3}}"#
            ))
        };
        assert_eq!(line("step-end"), "T pc7 port 22: ok");
        assert_eq!(line("run"), "T pc7: exit 3");
        assert_eq!(line("output"), "T pc7: output (exit 3)");
        // A kind from a newer reimage still shows, without a suffix.
        assert_eq!(line("teleport"), "T pc7");
        assert_eq!(readable("nope"), "(unreadable line) nope");
    }
}
