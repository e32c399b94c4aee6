//! The state directory over the built binary: event log retention
//! (`[logs] keep_runs`, `max_bytes`) across many runs, and the format
//! marker that keeps an older reimage from misreading a newer state dir.

use crate::common::{Scratch, run_measured};
use crate::test::Test;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

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

// Issue 21: the state directory is a trust boundary (as OpenSSH's
// StrictModes treats ~/.ssh), and what commands print is data. The
// attacks are made by user nobody against root's runs.

/// Runs `argv` as user nobody (setpriv, util-linux); it must succeed.
#[track_caller]
fn as_nobody(argv: &[&str]) {
    let st = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .args(argv)
        .status()
        .expect("setpriv");
    assert!(st.success(), "as nobody: {argv:?}: {st}");
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn chmod(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod");
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// A root-only file outside the state dir, and what it must still be.
struct Bait {
    path: PathBuf,
    text: &'static str,
}

impl Bait {
    fn new(s: &Scratch) -> Bait {
        let path = s.write("root-only", "root only\n");
        chmod(&path, 0o600);
        Bait {
            path,
            text: "root only\n",
        }
    }

    #[track_caller]
    fn untouched(&self) {
        assert_eq!(
            std::fs::read_to_string(&self.path).expect("bait"),
            self.text,
            "the root-only file was written through a link"
        );
        assert_eq!(mode(&self.path), 0o600);
    }
}

#[test]
fn a_state_dir_others_can_write_is_refused_and_no_link_is_followed() {
    let s = setup("world-writable", "");
    let bait = Bait::new(&s);
    let planted = s.path("planted-by-nobody");
    let state = s.path("state");
    let pc7 = s.path("state/computers/pc7");
    // The admin's mistake: a state dir anyone can write. User nobody
    // plants a computer directory with links in it.
    std::fs::create_dir(&state).expect("state");
    chmod(&state, 0o777);
    as_nobody(&["mkdir", "-p", path_str(&pc7)]);
    as_nobody(&[
        "ln",
        "-s",
        path_str(&bait.path),
        path_str(&pc7.join("lock")),
    ]);
    as_nobody(&[
        "ln",
        "-s",
        path_str(&planted),
        path_str(&pc7.join("events.jsonl")),
    ]);
    let refused = |r: &crate::test::Output, what: &str| {
        r.code(78).stderr_has(what);
        bait.untouched();
        assert!(!planted.exists(), "a file was made through a link");
    };
    let state_text = state.display().to_string();
    for args in [
        vec!["provision", "pc7", "--image", "img"],
        vec!["log", "pc7"],
        vec!["status"],
    ] {
        let r = Test::with(&s).args(&args).run();
        refused(&r, "is writable by group or others (mode 0777)");
        r.stderr_has(&format!("chmod go-w {state_text}"));
    }
    // Made the admin's own again: what nobody made is still nobody's.
    chmod(&state, 0o700);
    let r = Test::with(&s).provision("pc7", "img").run();
    refused(&r, "is owned by uid 65534, not by root");
    r.stderr_has("chown -R root");
    // Given to root, without looking inside: the links are refused, one
    // by one, never followed.
    for p in [s.path("state/computers"), pc7.clone()] {
        std::os::unix::fs::lchown(&p, Some(0), Some(0)).expect("chown");
    }
    for link in ["lock", "events.jsonl"] {
        std::os::unix::fs::lchown(pc7.join(link), Some(0), Some(0)).expect("chown");
    }
    let r = Test::with(&s).provision("pc7", "img").run();
    refused(&r, "lock which is a symbolic link");
    r.stderr_has("rm ");
    std::fs::remove_file(pc7.join("lock")).expect("rm lock");
    let r = Test::with(&s).provision("pc7", "img").run();
    refused(&r, "events.jsonl which is a symbolic link");
    let r = Test::with(&s).args(&["log", "pc7"]).run();
    refused(&r, "events.jsonl which is a symbolic link");
    std::fs::remove_file(pc7.join("events.jsonl")).expect("rm events");
    provision(&s, "r01");
    bait.untouched();
}

#[test]
fn a_state_dir_with_a_link_for_a_directory_is_refused() {
    let s = setup("dir-link", "");
    provision(&s, "r01");
    // Root's own files elsewhere, and the computer's directory a link to
    // them.
    s.write("elsewhere/events.jsonl", "{\"kind\":\"start\"}\n");
    let pc7 = s.path("state/computers/pc7");
    std::fs::remove_dir_all(&pc7).expect("rm");
    std::os::unix::fs::symlink(s.path("elsewhere"), &pc7).expect("link");
    Test::with(&s)
        .provision("pc7", "img")
        .run()
        .code(78)
        .stderr_has("pc7 which is a symbolic link");
    Test::with(&s)
        .args(&["log", "pc7"])
        .run()
        .code(78)
        .stderr_has("symbolic link");
    assert!(!s.path("elsewhere/lock").exists());
    assert_eq!(
        std::fs::read_to_string(s.path("elsewhere/events.jsonl")).expect("read"),
        "{\"kind\":\"start\"}\n"
    );
}

#[test]
fn dirs_are_0700_and_files_0600_whatever_the_umask() {
    let s = setup("umask", "");
    let mut cmd = Test::with(&s)
        .provision("pc7", "img")
        .args(&["--reservation", "r01"])
        .command();
    // SAFETY: umask is async-signal-safe; nothing is allocated.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    crate::test::run(&mut cmd, crate::common::LIMIT).code(0);
    for d in ["state", "state/computers", "state/computers/pc7"] {
        assert_eq!(mode(&s.path(d)), 0o700, "{d}");
    }
    for f in [
        "state/format",
        "state/computers/pc7/lock",
        "state/computers/pc7/last-run.json",
        "state/computers/pc7/events.jsonl",
    ] {
        assert_eq!(mode(&s.path(f)), 0o600, "{f}");
    }
}

#[test]
fn log_takes_computer_names_only() {
    let s = setup("log-names", "");
    provision(&s, "r01");
    // Another directory with an event log: never read through `log`.
    let elsewhere = s.write(
        "elsewhere/events.jsonl",
        "{\"kind\":\"start\",\"message\":\"SEEN\"}\n",
    );
    let dir = elsewhere.parent().expect("dir").display().to_string();
    for name in ["../..", "..", "/some/dir", &dir, "pc7/../pc7", "-pc7", ""] {
        Test::with(&s)
            .args(&["log", "--", name])
            .run()
            .code(64)
            .stderr_has("is not allowed")
            .stdout_lacks("SEEN");
    }
    Test::with(&s).args(&["log", "pc7"]).run().code(0);
}

#[test]
fn an_event_log_that_is_dev_zero_a_fifo_or_huge_costs_bounded_memory() {
    let s = setup("zero", "");
    provision(&s, "r01");
    let log = s.path("state/computers/pc7/events.jsonl");
    let kept = std::fs::read(&log).expect("log");
    // A link to /dev/zero: refused at once, by a run and by `log`.
    std::fs::remove_file(&log).expect("rm");
    std::os::unix::fs::symlink("/dev/zero", &log).expect("link");
    for args in [
        vec!["log", "pc7"],
        vec!["provision", "pc7", "--image", "img"],
    ] {
        Test::with(&s)
            .args(&args)
            .run()
            .code(78)
            .stderr_has("symbolic link");
    }
    // A FIFO nobody writes: refused, not waited on.
    std::fs::remove_file(&log).expect("rm");
    let st = Command::new("mkfifo").arg(&log).status().expect("mkfifo");
    assert!(st.success());
    Test::with(&s)
        .args(&["log", "pc7"])
        .run()
        .code(78)
        .stderr_has("is not a regular file");
    // 4 GiB without a newline (sparse), then the runs.
    std::fs::remove_file(&log).expect("rm");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::File::create(&log).expect("create");
        f.set_len(4 << 30).expect("grow");
        f.seek(SeekFrom::End(0)).expect("seek");
        f.write_all(b"\n").expect("newline");
        f.write_all(&kept).expect("runs");
    }
    chmod(&log, 0o600);
    Test::with(&s)
        .args(&["--json", "log", "pc7"])
        .run()
        .code(0)
        .stdout_has("\"reservation\":\"r01\"")
        .stderr_has("are not shown (reimage reads the last 67108864 bytes");
    let (code, kib) = run_measured(Test::with(&s).args(&["log", "pc7", "--all"]).command());
    println!("log --all of a 4 GiB log: peak RSS {kib} KiB");
    assert_eq!(code, 0);
    assert!(kib < 64 * 1024, "log took {kib} KiB");
    // A run trims it: the head is dropped unread, the runs stay.
    let (code, kib) = run_measured(
        Test::with(&s)
            .provision("pc7", "img")
            .args(&["--reservation", "r02"])
            .command(),
    );
    println!("a run over a 4 GiB log: peak RSS {kib} KiB");
    assert_eq!(code, 0);
    assert!(kib < 64 * 1024, "the run took {kib} KiB");
    assert_eq!(names(&runs(&s)), vec!["r01", "r02"]);
}

/// A config whose load command prints what a hostile guest or command
/// might: a window title, a screen clear, a carriage return, a CSI in C1.
fn hostile(name: &str) -> Scratch {
    let s = Scratch::new(name);
    crate::common::command_config(
        &s,
        r#"["printf", "\\033]0;pwned\\007\\033[2Jcleared\\rover\\302\\2332J\\n"]"#,
        "1m",
        "",
    );
    s
}

#[test]
fn control_characters_a_command_prints_reach_the_screen_escaped() {
    let s = hostile("ctl");
    Test::with(&s)
        .load("pc7", "img")
        .attempt(1, 2)
        .run()
        .code(0);
    let escaped = r"\x1b]0;pwned\x07\x1b[2Jcleared\x0dover\u{9b}2J";
    // The event log keeps them, as JSON escapes.
    let log = std::fs::read_to_string(s.path("state/computers/pc7/events.jsonl")).expect("log");
    assert!(log.contains(r"\u001b]0;pwned\u0007"), "{log}");
    assert!(
        log.contains(r"over\u009b2J") && !log.contains('\u{9b}'),
        "{log}"
    );
    // `log` shows them escaped; --json stays JSON.
    let r = Test::with(&s).args(&["log", "pc7"]).run();
    r.code(0).stdout_has(escaped);
    assert!(
        !r.stdout.contains('\x1b') && !r.stdout.contains('\r'),
        "{r:?}"
    );
    let r = Test::with(&s).args(&["--json", "log", "pc7"]).run();
    r.code(0);
    assert!(
        !r.stdout.contains('\x1b') && !r.stdout.contains('\u{9b}'),
        "{r:?}"
    );
    for l in r.stdout.lines() {
        serde_json::from_str::<serde_json::Value>(l).expect("JSON");
    }
    // -v on a terminal (script(1) gives the run a pseudo-terminal):
    // the spinner draws, the command's sequences do not.
    let cmd = Test::with(&s)
        .args(&[
            "-v",
            "load",
            "pc7",
            "--image",
            "img",
            "--attempt",
            "1",
            "--of",
            "2",
        ])
        .command();
    let line: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| format!("'{}'", a.to_string_lossy()))
        .collect();
    let mut script = Command::new("script");
    script
        .args(["-q", "-e", "-c", &line.join(" "), "/dev/null"])
        // The spinner's path (without a terminal type: plain lines).
        .env("TERM", "xterm")
        .env_remove("REIMAGE_CONFIG")
        .env_remove("REIMAGE_STATE_DIR");
    let r = crate::test::run(&mut script, crate::common::LIMIT);
    r.code(0).stdout_has(escaped);
    assert!(!r.stdout.contains("\x1b]0;pwned"), "{r:?}");
    assert!(!r.stdout.contains("\x1b[2Jcleared"), "{r:?}");
    assert!(!r.stdout.contains("\u{9b}"), "{r:?}");
}

/// Runs reimage `args` in a mount namespace of its own where the state
/// dir is `setup` (a shell fragment on "$d", the state dir): a read-only
/// bind mount, a tiny full tmpfs.
fn in_namespace(s: &Scratch, setup: &str, args: &[&str]) -> crate::test::Output {
    let cmd = Test::with(s).args(args).command();
    let mut ns = Command::new("unshare");
    ns.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!("d=$1; shift; {setup} && exec \"$@\""))
        .arg("sh")
        .arg(s.path("state"))
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .env_remove("REIMAGE_CONFIG")
        .env_remove("REIMAGE_STATE_DIR");
    crate::test::run(&mut ns, crate::common::LIMIT)
}

#[test]
fn a_read_only_or_full_state_dir_is_refused_before_the_run() {
    let s = setup("ro-full", "");
    provision(&s, "r01");
    let before = log_text(&s);
    let ro = "mount --bind \"$d\" \"$d\" && mount -o remount,bind,ro \"$d\"";
    let r = in_namespace(&s, ro, &["--json", "provision", "pc7", "--image", "img"]);
    r.code(78)
        .stderr_has("Read-only file system")
        .stderr_has("give reimage a state directory it can write");
    let ev: serde_json::Value = serde_json::from_str(r.stdout.trim()).expect("one JSON event");
    assert_eq!((&ev["kind"], &ev["code"]), (&"run".into(), &78.into()));
    assert_eq!(log_text(&s), before);
    let full = "mount -t tmpfs -o size=64k,mode=0700 tmpfs \"$d\" && { cat /dev/zero > \"$d/fill\" 2>/dev/null; true; }";
    in_namespace(&s, full, &["provision", "pc7", "--image", "img"])
        .code(78)
        .stderr_has("No space left on device")
        .stderr_has("free space where the state directory is");
}

#[test]
fn log_json_shows_a_corrupt_line_as_json() {
    let s = setup("corrupt", "");
    provision(&s, "r01");
    let log = s.path("state/computers/pc7/events.jsonl");
    let mut text = log_text(&s);
    text.push_str("{\"kind\":\"start\"}\nnot json \u{1b}[2J\n");
    text.push_str(&"y".repeat(2 << 20));
    text.push_str("\n{\"kind\":\"run\",\"code\":0}\n");
    std::fs::write(&log, text).expect("write");
    let r = Test::with(&s).args(&["--json", "log", "pc7"]).run();
    r.code(0);
    let lines: Vec<serde_json::Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    let kinds: Vec<&str> = lines
        .iter()
        .map(|v| v["kind"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(kinds, ["start", "unreadable", "unreadable", "run"]);
    assert_eq!(lines[1]["text"], "not json \u{1b}[2J");
    assert_eq!(lines[2]["bytes"], (2 << 20) + 1);
    Test::with(&s)
        .args(&["log", "pc7"])
        .run()
        .code(0)
        .stdout_has(r"(unreadable line) not json \x1b[2J")
        .stdout_has("longer than the 1048576 reimage reads; not shown");
}

#[test]
fn status_shows_an_attempt_past_the_plan_as_the_last() {
    let s = setup("attempt-of", "");
    // max_attempts is 3 by default; attempt 5 without --of is the last.
    Test::with(&s)
        .load("pc7", "img")
        .args(&["--attempt", "5"])
        .run()
        .code(0);
    Test::with(&s)
        .arg("status")
        .run()
        .code(0)
        .stdout_has(" 5/5 ")
        .stdout_lacks("5/3");
    let r = Test::with(&s).args(&["--json", "status"]).run();
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).expect("JSON");
    assert_eq!(
        (&v["record"]["attempt"], &v["record"]["of"]),
        (&5.into(), &5.into())
    );
}

#[test]
fn status_escapes_odd_directory_names() {
    let s = setup("odd-names", "");
    provision(&s, "r01");
    std::fs::create_dir(s.path("state/computers/\u{1b}]0;pwned\u{7}x")).expect("mkdir");
    let r = Test::with(&s).arg("status").run();
    r.code(0).stdout_has(r"\x1b]0;pwned\x07x");
    assert!(!r.stdout.contains('\x1b'), "{r:?}");
    let r = Test::with(&s).args(&["--json", "status"]).run();
    r.code(0)
        .stdout_has(r#""computer":"\u001b]0;pwned\u0007x""#);
}

/// `log --follow` of a run that waits for `go`, while `rotate` does to the
/// event log what logrotate would; returns what follow printed.
fn follow_through(name: &str, rotate: impl FnOnce(&Path)) -> String {
    use std::io::Read;
    let s = Scratch::new(name);
    let go = s.path("go");
    crate::common::command_config(
        &s,
        &format!(
            r#"["sh", "-c", "while [ ! -e {} ]; do sleep 0.05; done; echo loaded"]"#,
            go.display()
        ),
        "1m",
        "",
    );
    let mut run = Test::with(&s)
        .load("pc7", "img")
        .attempt(1, 2)
        .command()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run");
    let running = |s: &Scratch| {
        s.events_so_far("pc7").iter().any(|e| {
            e["kind"] == "info" && e["message"].as_str().is_some_and(|m| m.contains("running"))
        })
    };
    assert!(crate::common::eventually(Duration::from_secs(30), || {
        running(&s)
    }));
    let mut follow = Test::with(&s)
        .args(&["log", "pc7", "--follow"])
        .command()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("follow");
    let mut out = follow.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = out.read_to_string(&mut text);
        text
    });
    // Let follow show what is there, then rotate under it.
    std::thread::sleep(Duration::from_millis(500));
    rotate(&s.path("state/computers/pc7/events.jsonl"));
    std::thread::sleep(Duration::from_millis(700));
    std::fs::write(&go, "").expect("go");
    assert_eq!(
        crate::common::wait_limit(&mut run, crate::common::LIMIT),
        Some(0)
    );
    assert_eq!(
        crate::common::wait_limit(&mut follow, crate::common::LIMIT),
        Some(0)
    );
    reader.join().expect("reader")
}

#[test]
fn log_follow_goes_on_through_rename_and_copytruncate() {
    let out = follow_through("follow-rename", |log| {
        std::fs::rename(log, log.with_extension("jsonl.1")).expect("rename");
    });
    assert!(out.contains("running `sh"), "{out}");
    assert!(
        out.contains("(the event log was renamed or replaced"),
        "{out}"
    );
    assert!(out.contains(": exit 0"), "{out}");
    let out = follow_through("follow-truncate", |log| {
        std::fs::copy(log, log.with_extension("jsonl.1")).expect("copy");
        std::fs::OpenOptions::new()
            .write(true)
            .open(log)
            .and_then(|f| f.set_len(0))
            .expect("truncate");
    });
    assert!(
        out.contains("(the event log was truncated in place"),
        "{out}"
    );
    assert!(out.contains(": exit 0"), "{out}");
}
