//! How much of a computer's event log is kept: the last `keep_runs` runs,
//! the one in progress included, and of the finished ones no more than
//! `max_bytes`.
//!
//! The log is trimmed when a run starts, under the computer's lock and
//! before the run writes its first event, so no reimage process is writing
//! it: the kept runs are copied to a temporary file that is renamed over the
//! log (`StateDir::replace_event_log`), which a reader sees either before
//! or after, never half. Runs are split as `reimage log` splits them: a run
//! begins at its `start` event (or after the previous run's `run` event)
//! and ends with its `run` event, so a run killed before its end counts as
//! one run.
//! Lines that are not whole JSON (a line cut short by a crash or a full
//! disk) are dropped, so the next run's first line does not join a broken
//! one.
//!
//! The trim reads only the log's last `max_bytes` (and one line's cap):
//! everything kept lies there, and a log grown past it by something other
//! than reimage (or a `/dev/zero` in its place, which the state directory
//! refuses anyway) costs a bounded read, not memory or time without end.
//! A line longer than [`LINE_CAP`] is dropped as broken.
//!
//! Done in reimage rather than by logrotate: "the last N runs" needs to
//! know where a run ends, and logrotate's `copytruncate` loses the lines
//! written between its copy and its truncate.

use anyhow::{Context, Result};

use crate::report::{EventKind, line_kind};
use crate::state::{LINE_CAP, Line, Lines, StateDir, skip_partial, window};

/// Defaults: 20 runs (three weeks of nightly reloads), 8 MiB.
pub const DEFAULT_KEEP_RUNS: u32 = 20;
/// See [`DEFAULT_KEEP_RUNS`].
pub const DEFAULT_MAX_BYTES: u64 = 8 << 20;

/// What an event log keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Runs kept, the one about to start included (at least 1).
    pub keep_runs: u32,
    /// Bytes the finished runs kept may take; the oldest go first.
    pub max_bytes: u64,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            keep_runs: DEFAULT_KEEP_RUNS,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// What a trim did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Trimmed {
    /// Finished runs dropped, oldest first (of those read).
    pub runs: usize,
    /// Lines dropped because they were not whole JSON (or too long).
    pub broken_lines: usize,
    /// Bytes at the head of the log dropped unread: the log was larger
    /// than anything kept could be.
    pub unread_bytes: u64,
}

/// One run: where its first and last event lines are, and the bytes of
/// its event lines (broken lines between them not counted).
#[derive(Debug, Default, Clone, Copy)]
struct Run {
    start: u64,
    end: u64,
    bytes: u64,
}

/// Trims the computer's event log to what `keep` allows before a new run
/// starts; the caller holds the computer's lock. A missing log is fine.
pub fn trim(state: &StateDir, computer: &str, keep: Retention) -> Result<Trimmed> {
    let path = state.event_log(computer);
    let Some(file) = state.read_event_log(computer)? else {
        return Ok(Trimmed::default());
    };
    let len = file
        .metadata()
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    let from = window(len, keep.max_bytes.saturating_add(LINE_CAP as u64));
    let (runs, mut trimmed) =
        split_runs(&file, from).with_context(|| format!("cannot read {}", path.display()))?;
    let (kept, bytes) = newest_that_fit(&runs, keep);
    trimmed.runs = runs.len() - kept;
    if trimmed == Trimmed::default() {
        return Ok(trimmed);
    }
    let data = read_runs(&file, &runs[runs.len() - kept..], bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    state.replace_event_log(computer, &data)?;
    Ok(trimmed)
}

/// The log's runs from offset `from` on, as `reimage log` splits them: a
/// run begins at its `start` event and ends with its `run` event. And how
/// many lines were not whole JSON (left out of every run), and how many
/// bytes before `from` (and the line it cuts) were not read.
fn split_runs(file: &std::fs::File, from: u64) -> std::io::Result<(Vec<Run>, Trimmed)> {
    use std::io::{Seek, SeekFrom};
    let mut reader = file;
    reader.seek(SeekFrom::Start(from))?;
    let mut lines = Lines::new(reader, from, LINE_CAP);
    let mut t = Trimmed {
        unread_bytes: from,
        ..Trimmed::default()
    };
    if from > 0 {
        t.unread_bytes += skip_partial(&mut lines)?;
    }
    let mut runs: Vec<Run> = Vec::new();
    let mut current: Option<Run> = None;
    while let Some(line) = lines.next_line()? {
        let (at, text) = match line {
            Line::Whole { at, text } => (at, text),
            Line::TooLong { .. } => {
                t.broken_lines += 1;
                continue;
            }
        };
        let Some(kind) = line_kind(text) else {
            t.broken_lines += 1;
            continue;
        };
        let n = text.len() as u64 + 1;
        if kind == Some(EventKind::Start)
            && let Some(r) = current.take()
        {
            runs.push(r);
        }
        let r = current.get_or_insert(Run {
            start: at,
            ..Run::default()
        });
        r.end = at + n;
        r.bytes += n;
        if kind == Some(EventKind::Run)
            && let Some(r) = current.take()
        {
            runs.push(r);
        }
    }
    if lines.pending() > 0 {
        // A last line without its newline: cut short.
        t.broken_lines += 1;
    }
    runs.extend(current);
    Ok((runs, t))
}

/// How many of the newest finished runs `keep` allows (room is left for
/// the run about to start), and their bytes.
fn newest_that_fit(runs: &[Run], keep: Retention) -> (usize, u64) {
    let room = keep.keep_runs.saturating_sub(1) as usize;
    let mut kept = 0usize;
    let mut bytes = 0u64;
    for r in runs.iter().rev() {
        if kept == room || bytes + r.bytes > keep.max_bytes {
            break;
        }
        kept += 1;
        bytes += r.bytes;
    }
    (kept, bytes)
}

/// The event lines of `runs` (consecutive, the newest) read back from the
/// log, `bytes` of them (at most `max_bytes`: they fit in memory); the
/// broken lines between them are left out as [`split_runs`] left them out.
fn read_runs(file: &std::fs::File, runs: &[Run], bytes: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Seek, SeekFrom};
    let mut data = Vec::with_capacity(bytes as usize);
    let (Some(first), Some(last)) = (runs.first(), runs.last()) else {
        return Ok(data);
    };
    let mut reader = file;
    reader.seek(SeekFrom::Start(first.start))?;
    let mut lines = Lines::new(reader, first.start, LINE_CAP);
    while let Some(line) = lines.next_line()? {
        let Line::Whole { at, text } = line else {
            continue;
        };
        if at >= last.end {
            break;
        }
        if line_kind(text).is_some() {
            data.extend_from_slice(text);
            data.push(b'\n');
        }
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state directory whose computer pc7 has `text` as its event log.
    fn log(dir: &str, text: &str) -> (StateDir, std::path::PathBuf) {
        let d =
            std::env::temp_dir().join(format!("reimage-retention-{dir}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let state = StateDir::new(&d);
        let p = state.event_log("pc7");
        std::fs::create_dir_all(p.parent().expect("dir")).expect("temp dir");
        std::fs::write(&p, text).expect("write log");
        (state, p)
    }

    fn run(n: u32) -> String {
        format!("{{\"kind\":\"attempt\",\"n\":{n}}}\n{{\"kind\":\"run\",\"n\":{n}}}\n")
    }

    #[test]
    fn keeps_the_last_runs_and_room_for_the_next() {
        let text: String = (1..=6).map(run).collect();
        let (s, p) = log("runs", &text);
        let keep = Retention {
            keep_runs: 3,
            max_bytes: 1 << 20,
        };
        let t = trim(&s, "pc7", keep).expect("trim");
        assert_eq!(t.runs, 4);
        let expect: String = (5..=6).map(run).collect();
        assert_eq!(std::fs::read_to_string(&p).expect("log"), expect);
        // Within the limits now: left as it is.
        assert_eq!(trim(&s, "pc7", keep).expect("trim"), Trimmed::default());
    }

    #[test]
    fn bytes_drop_the_oldest_runs_first() {
        let text: String = (1..=4).map(run).collect();
        let one = run(1).len() as u64;
        let (s, p) = log("bytes", &text);
        let keep = Retention {
            keep_runs: 100,
            max_bytes: 2 * one + one / 2,
        };
        assert_eq!(trim(&s, "pc7", keep).expect("trim").runs, 2);
        let expect: String = (3..=4).map(run).collect();
        assert_eq!(std::fs::read_to_string(&p).expect("log"), expect);
    }

    #[test]
    fn a_killed_run_counts_and_broken_lines_go() {
        let text = format!(
            "{}{}{{\"kind\":\"attempt\"}}\nnot json\n{{\"kind\":\"step\"",
            run(1),
            run(2)
        );
        let (s, p) = log("broken", &text);
        let keep = Retention {
            keep_runs: 3,
            max_bytes: 1 << 20,
        };
        let t = trim(&s, "pc7", keep).expect("trim");
        assert_eq!(
            t,
            Trimmed {
                runs: 1,
                broken_lines: 2,
                unread_bytes: 0
            }
        );
        let expect = format!("{}{{\"kind\":\"attempt\"}}\n", run(2));
        assert_eq!(std::fs::read_to_string(&p).expect("log"), expect);
    }

    #[test]
    fn a_run_begins_at_its_start_event() {
        // Run 2 was killed after its attempt event: no `run` event.
        let started = |n: u32| format!("{{\"kind\":\"start\",\"n\":{n}}}\n{}", run(n));
        let text = format!(
            "{}{{\"kind\":\"start\",\"n\":2}}\n{{\"kind\":\"attempt\",\"n\":2}}\n{}",
            started(1),
            started(3)
        );
        let (s, p) = log("start", &text);
        let keep = Retention {
            keep_runs: 2,
            max_bytes: 1 << 20,
        };
        assert_eq!(trim(&s, "pc7", keep).expect("trim").runs, 2);
        assert_eq!(std::fs::read_to_string(&p).expect("log"), started(3));
    }

    #[test]
    fn a_missing_log_is_fine() {
        let s = StateDir::new(&std::env::temp_dir().join("reimage-retention-missing"));
        assert_eq!(
            trim(&s, "pc7", Retention::default()).expect("trim"),
            Trimmed::default()
        );
    }

    #[test]
    fn a_log_past_anything_kept_is_read_from_its_tail_only() {
        // 8 MiB without a newline, then three runs: only the tail is read.
        let mut text = "x".repeat(8 << 20);
        text.push('\n');
        let runs: String = (1..=3).map(run).collect();
        text.push_str(&runs);
        let (s, p) = log("tail", &text);
        let keep = Retention {
            keep_runs: 10,
            max_bytes: 1024,
        };
        let t = trim(&s, "pc7", keep).expect("trim");
        let from = (text.len() - 1024 - LINE_CAP) as u64;
        assert_eq!(t.runs, 0);
        assert_eq!(t.unread_bytes, (8 << 20) + 1, "up to the first whole line");
        assert!(t.unread_bytes > from);
        assert_eq!(std::fs::read_to_string(&p).expect("log"), runs);
    }
}
