//! How much of a computer's event log is kept: the last `keep_runs` runs,
//! the one in progress included, and of the finished ones no more than
//! `max_bytes`.
//!
//! The log is trimmed when a run starts, under the computer's lock and
//! before the run writes its first event, so no reimage process is writing
//! it: the kept runs are copied to a temporary file that is renamed over the
//! log (`state::write_atomic`), which a reader sees either before or after,
//! never half. Runs are split as `reimage log` splits them: a run begins
//! at its `start` event (or after the previous run's `run` event) and ends
//! with its `run` event, so a run killed before its end counts as one run.
//! Lines that are not whole JSON (a line cut short by a crash or a full
//! disk) are dropped, so the next run's first line does not join a broken
//! one.
//!
//! Done in reimage rather than by logrotate: "the last N runs" needs to
//! know where a run ends, and logrotate's `copytruncate` loses the lines
//! written between its copy and its truncate.

use anyhow::{Context, Result};
use serde::Deserialize;
use std::io::{BufRead, BufReader};
use std::path::Path;

use crate::report::EventKind;
use crate::state::write_atomic;

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
    /// Finished runs dropped, oldest first.
    pub runs: usize,
    /// Lines dropped because they were not whole JSON.
    pub broken_lines: usize,
}

/// One finished run: its lines, as byte ranges of the log.
#[derive(Default)]
struct Run {
    lines: Vec<(u64, usize)>,
    bytes: u64,
}

#[derive(Deserialize)]
struct Kind<'a> {
    #[serde(borrow)]
    kind: Option<&'a str>,
}

/// Trims the event log at `path` to what `keep` allows before a new run
/// starts; the caller holds the computer's lock. A missing log is fine.
pub fn trim(path: &Path, keep: Retention) -> Result<Trimmed> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Trimmed::default()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let (runs, broken_lines) =
        split_runs(file).with_context(|| format!("cannot read {}", path.display()))?;
    let (kept, bytes) = newest_that_fit(&runs, keep);
    let trimmed = Trimmed {
        runs: runs.len() - kept,
        broken_lines,
    };
    if trimmed == Trimmed::default() {
        return Ok(trimmed);
    }
    let data = read_runs(path, &runs[runs.len() - kept..], bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    write_atomic(path, &data)?;
    Ok(trimmed)
}

/// The log's runs, as `reimage log` splits them: a run begins at its
/// `start` event and ends with its `run` event. And how many lines were
/// not whole JSON (left out of every run).
fn split_runs(file: std::fs::File) -> std::io::Result<(Vec<Run>, usize)> {
    let mut reader = BufReader::new(file);
    let mut runs: Vec<Run> = Vec::new();
    let mut current = Run::default();
    let mut broken = 0;
    let mut offset = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        let start = offset;
        offset += n as u64;
        let parsed = match line.strip_suffix(b"\n") {
            Some(text) => serde_json::from_slice::<Kind>(text).ok(),
            None => None,
        };
        let Some(k) = parsed else {
            broken += 1;
            continue;
        };
        let kind = k.kind.and_then(EventKind::from_name);
        if kind == Some(EventKind::Start) && !current.lines.is_empty() {
            runs.push(std::mem::take(&mut current));
        }
        current.lines.push((start, n));
        current.bytes += n as u64;
        if kind == Some(EventKind::Run) {
            runs.push(std::mem::take(&mut current));
        }
    }
    if !current.lines.is_empty() {
        runs.push(current);
    }
    Ok((runs, broken))
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

/// The lines of `runs` read back from the log, `bytes` of them (at most
/// `max_bytes`: they fit in memory).
fn read_runs(path: &Path, runs: &[Run], bytes: u64) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::with_capacity(bytes as usize);
    let mut reader = BufReader::new(std::fs::File::open(path)?);
    let mut at = 0u64;
    for &(start, len) in runs.iter().flat_map(|r| &r.lines) {
        std::io::Seek::seek_relative(&mut reader, (start - at) as i64)?;
        let from = data.len();
        data.resize(from + len, 0);
        std::io::Read::read_exact(&mut reader, &mut data[from..])?;
        at = start + len as u64;
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(dir: &str, text: &str) -> std::path::PathBuf {
        let d =
            std::env::temp_dir().join(format!("reimage-retention-{dir}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        let p = d.join("events.jsonl");
        std::fs::write(&p, text).expect("write log");
        p
    }

    fn run(n: u32) -> String {
        format!("{{\"kind\":\"attempt\",\"n\":{n}}}\n{{\"kind\":\"run\",\"n\":{n}}}\n")
    }

    #[test]
    fn keeps_the_last_runs_and_room_for_the_next() {
        let text: String = (1..=6).map(run).collect();
        let p = log("runs", &text);
        let keep = Retention {
            keep_runs: 3,
            max_bytes: 1 << 20,
        };
        let t = trim(&p, keep).expect("trim");
        assert_eq!(t.runs, 4);
        let expect: String = (5..=6).map(run).collect();
        assert_eq!(std::fs::read_to_string(&p).expect("log"), expect);
        // Within the limits now: left as it is.
        assert_eq!(trim(&p, keep).expect("trim"), Trimmed::default());
    }

    #[test]
    fn bytes_drop_the_oldest_runs_first() {
        let text: String = (1..=4).map(run).collect();
        let one = run(1).len() as u64;
        let p = log("bytes", &text);
        let keep = Retention {
            keep_runs: 100,
            max_bytes: 2 * one + one / 2,
        };
        assert_eq!(trim(&p, keep).expect("trim").runs, 2);
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
        let p = log("broken", &text);
        let keep = Retention {
            keep_runs: 3,
            max_bytes: 1 << 20,
        };
        let t = trim(&p, keep).expect("trim");
        assert_eq!(
            t,
            Trimmed {
                runs: 1,
                broken_lines: 2
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
        let p = log("start", &text);
        let keep = Retention {
            keep_runs: 2,
            max_bytes: 1 << 20,
        };
        assert_eq!(trim(&p, keep).expect("trim").runs, 2);
        assert_eq!(std::fs::read_to_string(&p).expect("log"), started(3));
    }

    #[test]
    fn a_missing_log_is_fine() {
        let p = std::env::temp_dir().join("reimage-retention-missing/events.jsonl");
        assert_eq!(
            trim(&p, Retention::default()).expect("trim"),
            Trimmed::default()
        );
    }
}
