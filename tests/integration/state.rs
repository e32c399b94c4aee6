//! The state directory over the built binary: event log retention
//! (`[logs] keep_runs`, `max_bytes`) across many runs, and the format
//! marker that keeps an older reimage from misreading a newer state dir.

use crate::common::Scratch;
use crate::test::Test;

/// A standing machine with nothing to wait for: a run takes milliseconds
/// and writes the same events every time.
fn setup(name: &str, logs: &str) -> Scratch {
    let s = Scratch::new(name);
    config(&s, logs);
    s
}

fn config(s: &Scratch, logs: &str) {
    s.config(&format!(
        r#"
[logs]
{logs}

[provisioners.standing]
kind = "lab"

[os.none]
family = "generic"
channel = "none"

[images.img]
os = "none"
provisioner = "standing"

[computers.pc7]
address = "127.0.0.1"
"#
    ));
}

fn provision(s: &Scratch, reservation: &str) {
    Test::with(s)
        .provision("pc7", "img")
        .args(&["--reservation", reservation])
        .run()
        .code(0);
}

fn log_text(s: &Scratch) -> String {
    std::fs::read_to_string(s.path("state/computers/pc7/events.jsonl")).expect("event log")
}

/// The log as runs: every line parsed (a line that is not whole JSON fails
/// the test), split after each `run` event, each run named by the one
/// reservation all its lines carry.
fn runs(s: &Scratch) -> Vec<(String, usize)> {
    let text = log_text(s);
    assert!(text.ends_with('\n'), "the log ends in a whole line");
    let mut runs = Vec::new();
    let mut current: Option<String> = None;
    let mut bytes = 0;
    for line in text.lines() {
        let e: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|err| panic!("not whole JSON: {line:?}: {err}"));
        let r = e["reservation"].as_str().expect("reservation").to_string();
        match &current {
            Some(c) => assert_eq!(c, &r, "a run's lines carry one reservation"),
            None => current = Some(r),
        }
        bytes += line.len() + 1;
        if e["kind"] == "run" {
            runs.push((current.take().expect("run"), bytes));
            bytes = 0;
        }
    }
    assert!(current.is_none(), "the log ends with a run event");
    runs
}

fn names(runs: &[(String, usize)]) -> Vec<String> {
    runs.iter().map(|r| r.0.clone()).collect()
}

fn expected(range: std::ops::RangeInclusive<u32>) -> Vec<String> {
    range.map(|i| format!("r{i:02}")).collect()
}

#[test]
fn fifty_runs_keep_the_last_keep_runs() {
    let s = setup("keep-runs", "keep_runs = 5\nmax_bytes = \"1MiB\"");
    for i in 1..=50 {
        provision(&s, &format!("r{i:02}"));
    }
    assert_eq!(names(&runs(&s)), expected(46..=50));
    // `reimage log` counts the same runs in the trimmed log.
    Test::with(&s)
        .args(&["log", "pc7", "--all"])
        .run()
        .code(0)
        .stdout_has("== run 5 of 5")
        .stdout_lacks("== run 6");
    Test::with(&s)
        .args(&["--json", "log", "pc7", "--run", "1"])
        .run()
        .code(0)
        .stdout_has("\"reservation\":\"r46\"")
        .stdout_lacks("\"reservation\":\"r47\"");
}

#[test]
fn fifty_runs_keep_what_max_bytes_holds() {
    let s = setup("max-bytes", "keep_runs = 1000\nmax_bytes = \"1MiB\"");
    provision(&s, "r01");
    // Every run writes the same events; only times and elapsed
    // milliseconds differ, by a few bytes.
    let one = log_text(&s).len() as u64;
    // Room for three and a half finished runs: three stay, then this run.
    let max = 3 * one + one / 2;
    config(&s, &format!("keep_runs = 1000\nmax_bytes = {max}"));
    for i in 2..=50 {
        provision(&s, &format!("r{i:02}"));
    }
    let runs = runs(&s);
    assert_eq!(names(&runs), expected(47..=50));
    let finished: usize = runs[..3].iter().map(|r| r.1).sum();
    assert!(
        finished as u64 <= max,
        "{finished} bytes kept, {max} allowed"
    );
}

#[test]
fn a_line_cut_short_is_dropped_not_joined() {
    let s = setup("cut-short", "keep_runs = 3");
    provision(&s, "r01");
    provision(&s, "r02");
    // A crash mid-write leaves half a line and no newline.
    let log = s.path("state/computers/pc7/events.jsonl");
    let mut text = log_text(&s);
    text.push_str("{\"time\":\"2026-11-25T00:00:00Z\",\"kind\":\"st");
    std::fs::write(&log, text).expect("write log");
    provision(&s, "r03");
    assert_eq!(names(&runs(&s)), expected(1..=3));
}

#[test]
fn logs_settings_are_checked() {
    let s = setup("logs-bad", "keep_runs = 0");
    Test::with(&s)
        .arg("check")
        .run()
        .code(78)
        .stderr_has("reimage.toml:4:")
        .stderr_has("keep_runs must be 1 or more");
    config(&s, "max_bytes = \"lots\"");
    Test::with(&s)
        .arg("check")
        .run()
        .code(78)
        .stderr_has("not a size like");
    config(&s, "keep_runs = 3\nmax_bytes = \"512KiB\"");
    Test::with(&s).arg("check").run().code(0);
}

#[test]
fn the_state_dir_is_root_only_and_versioned() {
    use std::os::unix::fs::PermissionsExt;
    let s = setup("format", "");
    provision(&s, "r01");
    let meta = std::fs::metadata(s.path("state")).expect("state dir");
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    assert_eq!(
        std::fs::read_to_string(s.path("state/format")).expect("format"),
        "1\n"
    );
    // A newer reimage's state dir: refused before anything is touched.
    std::fs::write(s.path("state/format"), "2\n").expect("format");
    let before = log_text(&s);
    Test::with(&s)
        .provision("pc7", "img")
        .run()
        .code(1)
        .stderr_has("has format 2, written by a newer reimage")
        .stderr_has("upgrade reimage");
    assert_eq!(log_text(&s), before);
    std::fs::write(s.path("state/format"), "one\n").expect("format");
    Test::with(&s)
        .provision("pc7", "img")
        .run()
        .code(1)
        .stderr_has("not a state directory format");
}
