//! Issue 9: the run holds under hostile commands, inputs and crashes. Each
//! test drives the built binary and asserts the exit code, the event log,
//! the last-run record, and that no process and no lock is left behind.
//! Time bounds here only prove "did not hang"; they are far above what a
//! run takes even on a loaded machine.

use crate::common::{self, Scratch, alive, command_config, eventually, of_kind, run_measured};
use crate::test::Test;
use rustix::process::{Pid, Signal, kill_process};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn record(s: &Scratch) -> Value {
    let p = s.path("state/computers/pc7/last-run.json");
    serde_json::from_str(&std::fs::read_to_string(&p).expect("last-run.json")).expect("json")
}

fn read_pid(path: &std::path::Path) -> i32 {
    assert!(
        eventually(Duration::from_secs(30), || {
            std::fs::read_to_string(path).is_ok_and(|p| p.trim().parse::<i32>().is_ok())
        }),
        "{} never written",
        path.display()
    );
    std::fs::read_to_string(path)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid")
}

/// The lock is free: a run with a load command that exits 0 at once takes
/// it and ends 0.
#[track_caller]
fn lock_is_free(s: &Scratch) {
    command_config(s, r#"["true"]"#, "20s", "");
    Test::with(s).load("pc7", "img").run().code(0);
}

/// Kills a process the test started on purpose outside reimage's reach.
fn reap(pid: i32) {
    if let Some(p) = Pid::from_raw(pid) {
        let _ = kill_process(p, Signal::KILL);
    }
}

/// Kills the daemon whose pid is in a file when dropped, so a failing test
/// leaves none behind.
struct Daemon(std::path::PathBuf);

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(p) = std::fs::read_to_string(&self.0)
            && let Ok(p) = p.trim().parse()
        {
            reap(p);
        }
    }
}

fn spawn(t: Test) -> Child {
    t.command()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn reimage")
}

/// Issue 9.1 and 21.2: a load command that leaves a daemon (in its own
/// session, holding stdout and stderr) ends when the command ends, and the
/// daemon with it; one that runs on ends at its timeout; either way
/// reimage does not wait for the daemon.
#[test]
fn a_daemonizing_command_does_not_hang_the_run() {
    let s = Scratch::new("daemon");
    let daemon = s.path("daemon.pid");
    let _guard = Daemon(daemon.clone());
    let argv = |rest: &str| {
        format!(
            r#"["sh", "-c", "setsid sh -c 'echo $$ > {d}; exec sleep 300' & while [ ! -s {d} ]; do sleep 0.05; done{rest}"]"#,
            d = daemon.display()
        )
    };
    // The command returns once the daemon wrote its pid; the daemon keeps
    // the pipes. A run that waited for the daemon would end at the 10 s
    // timeout (75).
    command_config(&s, &argv(""), "10s", "");
    let r = Test::with(&s)
        .load("pc7", "img")
        .attempt(1, 2)
        .limit(Duration::from_secs(120))
        .run();
    let d = read_pid(&daemon);
    assert!(!alive(d), "the daemon {d} outlived its load command");
    r.code(0);
    assert!(r.took < Duration::from_secs(30), "took {:?}", r.took);
    assert_eq!(record(&s)["result"], "done");
    reap(d);
    let _ = std::fs::remove_file(&daemon);

    // The command runs on past its 2 s timeout: killed, retry.
    command_config(&s, &argv("; sleep 300"), "2s", "");
    let r = Test::with(&s)
        .load("pc7", "img")
        .attempt(1, 2)
        .limit(Duration::from_secs(120))
        .run();
    let d = read_pid(&daemon);
    r.code(75).stderr_has("ran past its timeout of 2s");
    assert!(r.took < Duration::from_secs(30), "took {:?}", r.took);
    assert_eq!(record(&s)["result"], "retry");
    reap(d);
    let _ = std::fs::remove_file(&daemon);

    // SIGTERM or SIGINT while the command runs and the daemon holds the
    // pipes; then after the command ended, while its output is drained.
    for (sig, code, rest) in [
        (Signal::TERM, 143, "; sleep 300"),
        (Signal::INT, 130, "; sleep 300"),
        (Signal::TERM, 143, ""),
    ] {
        command_config(&s, &argv(rest), "10m", "");
        let mut child = spawn(Test::with(&s).load("pc7", "img").attempt(1, 2));
        let d = read_pid(&daemon);
        kill_process(Pid::from_child(&child), sig).expect("signal");
        let got = common::wait_limit(&mut child, Duration::from_secs(30));
        if rest.is_empty() && got == Some(0) {
            // The command and its drain ended before the signal came.
        } else {
            assert_eq!(got, Some(code), "{sig:?}");
            let rec = record(&s);
            assert_eq!(
                (&rec["result"], &rec["exit_code"]),
                (&"interrupted".into(), &code.into())
            );
            let ev = s.events("pc7");
            let last = ev.last().expect("events");
            assert_eq!(
                (&last["code"], &last["result"]),
                (&code.into(), &"interrupted".into())
            );
        }
        reap(d);
        let _ = std::fs::remove_file(&daemon);
        lock_is_free(&s);
    }
    lock_is_free(&s);
}

/// Issue 9.2: 100 MB of output (one 20 MB line among them) is kept as a
/// bounded tail in memory, in the event log and in the record, with a note
/// of how much was dropped; `yes` for 3 s does not abort the run.
#[test]
fn command_output_is_kept_bounded() {
    let s = Scratch::new("flood");
    command_config(
        &s,
        r#"["sh", "-c", "head -c 20000000 /dev/zero | tr '\\0' x; echo; yes 'a line of output' | head -c 80000000; echo LAST-LINE; exit 3"]"#,
        "10m",
        "",
    );
    let (code, rss) = run_measured(Test::with(&s).load("pc7", "img").attempt(1, 2).command());
    assert_eq!(code, 1, "exit 3 is fatal");
    println!("peak RSS with 100 MB of output: {rss} KiB");
    assert!(rss < 60 * 1024, "peak RSS {rss} KiB");
    let log = std::fs::read_to_string(s.path("state/computers/pc7/events.jsonl")).expect("log");
    assert!(log.len() < 512 * 1024, "event log is {} bytes", log.len());
    let ev = s.events("pc7");
    let out = of_kind(&ev, "output");
    let msg = out[0]["message"].as_str().expect("message");
    assert!(
        msg.contains("earlier bytes of output not kept]"),
        "{}",
        &msg[..200]
    );
    assert!(msg.contains("LAST-LINE"), "the tail is kept");
    let rec = std::fs::read_to_string(s.path("state/computers/pc7/last-run.json")).expect("rec");
    assert!(rec.len() < 64 * 1024, "record is {} bytes", rec.len());
    let rec: Value = serde_json::from_str(&rec).expect("json");
    assert_eq!(
        (&rec["result"], &rec["exit_code"]),
        (&"fatal".into(), &1.into())
    );
    assert!(
        rec["message"]
            .as_str()
            .expect("message")
            .contains("LAST-LINE")
    );

    command_config(&s, r#"["timeout", "3", "yes"]"#, "10m", "");
    let (code, rss) = run_measured(Test::with(&s).load("pc7", "img").attempt(1, 2).command());
    println!("peak RSS with `yes` for 3 s: {rss} KiB");
    assert_eq!(
        code, 1,
        "yes killed by timeout(1) exits 124: fatal, not an abort"
    );
    assert!(rss < 60 * 1024, "peak RSS {rss} KiB");
    let rec = record(&s);
    assert_eq!(
        (&rec["result"], &rec["exit_code"]),
        (&"fatal".into(), &1.into())
    );
    lock_is_free(&s);
}

/// Issue 9.5: SIGKILL of reimage mid-load kills the load command too
/// (PR_SET_PDEATHSIG); the next run takes the lock, says in its first event
/// and in its record that the previous run died while running.
#[test]
fn sigkill_mid_load_then_a_new_run() {
    let s = Scratch::new("sigkill");
    let pidf = s.path("load.pid");
    s.script(
        "load.sh",
        &format!("#!/bin/sh\necho $$ > {}\nexec sleep 300\n", pidf.display()),
    );
    command_config(
        &s,
        &format!("[\"{}\"]", s.path("load.sh").display()),
        "10m",
        "",
    );
    let mut child = spawn(Test::with(&s).load("pc7", "img").attempt(1, 2));
    let load = read_pid(&pidf);
    let dead = child.id();
    kill_process(Pid::from_child(&child), Signal::KILL).expect("SIGKILL");
    let _ = child.wait();
    assert!(
        eventually(Duration::from_secs(30), || !alive(load)),
        "load command {load} outlived reimage"
    );
    assert_eq!(record(&s)["result"], "running");
    let r = {
        command_config(&s, r#"["true"]"#, "20s", "");
        Test::with(&s).load("pc7", "img").run()
    };
    r.code(0);
    let ev = r.events();
    // The dead run's events, then the new run's: a warning first.
    let second = ev
        .iter()
        .enumerate()
        .filter(|(_, e)| e["kind"] == "attempt")
        .nth(1)
        .map(|(i, _)| i)
        .expect("the new run's attempt event");
    let warn = &ev[second - 1];
    assert_eq!(warn["kind"], "warn", "{ev:?}");
    let text = warn["message"].as_str().expect("message");
    assert!(
        text.contains(&format!("pid {dead}")) && text.contains("ended without finishing"),
        "{text}"
    );
    let rec = record(&s);
    assert_eq!(rec["result"], "done");
    assert!(
        rec["previous"]
            .as_str()
            .is_some_and(|p| p.contains(&format!("pid {dead}"))),
        "{rec}"
    );
    lock_is_free(&s);
}

/// Issue 9.5 and 9.13: SIGHUP is handled like SIGTERM: the command's group
/// is killed, the exit code is 129, and the JSON `run` event, the phase's
/// result and the record all say "interrupted".
#[test]
fn sighup_interrupts_like_sigterm() {
    let s = Scratch::new("sighup");
    let pidf = s.path("load.pid");
    s.script(
        "load.sh",
        &format!(
            "#!/bin/sh\necho $$ > {}\nsleep 300 & wait\n",
            pidf.display()
        ),
    );
    command_config(
        &s,
        &format!("[\"{}\"]", s.path("load.sh").display()),
        "10m",
        "",
    );
    let mut child = Test::with(&s)
        .load("pc7", "img")
        .attempt(1, 2)
        .args(&["--json"])
        .command()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let lines = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let load = read_pid(&pidf);
    kill_process(Pid::from_child(&child), Signal::HUP).expect("SIGHUP");
    let code = common::wait_limit(&mut child, Duration::from_secs(30));
    assert_eq!(code, Some(129));
    assert!(
        eventually(Duration::from_secs(10), || !alive(load)),
        "load command {load} survived"
    );
    let json: Vec<Value> = lines
        .join()
        .expect("stdout")
        .iter()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let run = json.last().expect("events on stdout");
    assert_eq!(run["kind"], "run");
    assert_eq!(
        (&run["code"], &run["result"]),
        (&129.into(), &"interrupted".into())
    );
    assert!(
        run["message"]
            .as_str()
            .is_some_and(|m| m.contains("SIGHUP")),
        "{run}"
    );
    let result = of_kind(&json, "result");
    assert_eq!(result.last().expect("result")["result"], "interrupted");
    let rec = record(&s);
    assert_eq!(
        (&rec["result"], &rec["exit_code"]),
        (&"interrupted".into(), &129.into())
    );
    let log = s.events("pc7");
    assert_eq!(log.last(), Some(run));
    lock_is_free(&s);
}

/// Issue 9.7: a reader that goes away after one line (`2>&1 | head -1`)
/// neither ends nor changes the run, in plain and in JSON mode.
#[test]
fn a_closed_stderr_or_stdout_does_not_change_the_run() {
    let s = Scratch::new("closed");
    s.script(
        "load.sh",
        "#!/bin/sh\necho some output\nsleep 1\necho more\nexit 0\n",
    );
    command_config(
        &s,
        &format!("[\"{}\"]", s.path("load.sh").display()),
        "1m",
        "",
    );
    for json in [false, true] {
        let mut t = Test::with(&s)
            .load("pc7", "img")
            .attempt(1, 2)
            .args(&["-v"]);
        if json {
            t = t.args(&["--json"]);
        }
        let mut cmd = t.command();
        let (stdout, stderr) = if json {
            (Stdio::piped(), Stdio::null())
        } else {
            (Stdio::null(), Stdio::piped())
        };
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn");
        // Read one line, then close the pipe, as `head -1` does.
        let mut line = String::new();
        if json {
            let mut r = BufReader::new(child.stdout.take().expect("stdout"));
            r.read_line(&mut line).expect("one line");
        } else {
            let mut r = BufReader::new(child.stderr.take().expect("stderr"));
            r.read_line(&mut line).expect("one line");
        }
        assert!(!line.is_empty());
        let code = common::wait_limit(&mut child, Duration::from_secs(60));
        assert_eq!(code, Some(0), "json={json}");
        let rec = record(&s);
        assert_eq!(
            (&rec["result"], &rec["exit_code"]),
            (&"done".into(), &0.into())
        );
        let ev = s.events("pc7");
        let run = ev.last().expect("events");
        assert_eq!((&run["kind"], &run["code"]), (&"run".into(), &0.into()));
    }
    lock_is_free(&s);
}

/// Issue 9.9 and 21.5: a state directory that fills up (RLIMIT_FSIZE on
/// the run, with SIGXFSZ at its default action) leaves whole event lines
/// only, says which file once, and the next run's
/// events start on a line of their own.
#[test]
fn a_full_state_dir_keeps_event_lines_whole() {
    let s = Scratch::new("full");
    command_config(&s, r#"["sh", "-c", "echo loaded"]"#, "1m", "");
    let log = s.path("state/computers/pc7/events.jsonl");
    let line = format!(
        "{}\n",
        serde_json::json!({"kind": "info", "message": "x".repeat(200)})
    );
    const LIMIT: u64 = 64 * 1024;
    // Room for about one event: the next ones fail part way.
    let n = (LIMIT as usize - 300) / line.len();
    let mut text = line.repeat(n);
    text.push_str(
        &"{\"kind\":\"info\",\"message\":\"pad\"}\n"
            .repeat((LIMIT as usize - 300 - text.len()) / 34),
    );
    s.write("state/computers/pc7/events.jsonl", &text);
    let mut cmd = Test::with(&s).load("pc7", "img").attempt(1, 2).command();
    // SAFETY: runs in the forked child before exec; setrlimit is an
    // async-signal-safe system call, nothing is allocated. SIGXFSZ keeps
    // its default action: reimage itself must not die of it (issue 21.5).
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::setrlimit(
                rustix::process::Resource::Fsize,
                rustix::process::Rlimit {
                    current: Some(LIMIT),
                    maximum: Some(LIMIT),
                },
            )?;
            Ok(())
        });
    }
    let r = crate::test::run(&mut cmd, common::LIMIT);
    r.code(0);
    let warned = format!("cannot write the event log {}", log.display());
    assert_eq!(r.stderr.matches(&warned).count(), 1, "{r:?}");
    let after = std::fs::read_to_string(&log).expect("log");
    assert!(after.len() as u64 <= LIMIT);
    assert!(after.ends_with('\n'), "a partial line was left");
    for l in after.lines() {
        serde_json::from_str::<Value>(l).expect("every line is whole JSON");
    }
    assert_eq!(record(&s)["result"], "done");
    // So small that no record can be written either: said once, naming
    // the computer's directory; the run itself goes on.
    let mut cmd = Test::with(&s).load("pc7", "img").attempt(1, 2).command();
    // SAFETY: as above.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::setrlimit(
                rustix::process::Resource::Fsize,
                rustix::process::Rlimit {
                    current: Some(100),
                    maximum: Some(100),
                },
            )?;
            Ok(())
        });
    }
    let r = crate::test::run(&mut cmd, common::LIMIT);
    r.code(0);
    let said = format!(
        "cannot write the last-run record in {}",
        s.path("state/computers/pc7").display()
    );
    assert_eq!(r.stderr.matches(&said).count(), 1, "{r:?}");
    // The next run, with room, appends whole lines after them.
    let r = Test::with(&s).load("pc7", "img").attempt(1, 2).run();
    r.code(0);
    let ev = r.events();
    assert_eq!(ev.last().expect("events")["kind"], "run");
    lock_is_free(&s);
}

/// Issue 9.11 and the suite: 50 runs on one computer at once: exactly one
/// proceeds, every other exits 73 naming the holder's pid.
#[test]
fn fifty_simultaneous_runs_on_one_computer() {
    let s = Scratch::new("fifty");
    let go = s.path("go");
    s.script(
        "load.sh",
        &format!(
            "#!/bin/sh\nwhile [ ! -e {} ]; do sleep 0.1; done\nexit 0\n",
            go.display()
        ),
    );
    command_config(
        &s,
        &format!("[\"{}\"]", s.path("load.sh").display()),
        "10m",
        "",
    );
    // Every other run with --json: its one event must say 73 too.
    let mut children: Vec<Child> = (0..50)
        .map(|i| {
            let mut t = Test::with(&s).load("pc7", "img").attempt(1, 2);
            if i % 2 == 1 {
                t = t.args(&["--json"]);
            }
            t.command()
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let readers: Vec<_> = children
        .iter_mut()
        .map(|c| {
            let e = c.stderr.take().expect("stderr");
            let o = c.stdout.take().expect("stdout");
            (drain(Box::new(e)), drain(Box::new(o)))
        })
        .collect();
    // Every run but the holder ends on its own; then the holder may go.
    let start = Instant::now();
    let mut codes: Vec<Option<i32>> = vec![None; 50];
    while codes.iter().filter(|c| c.is_none()).count() > 1 {
        for (c, code) in children.iter_mut().zip(codes.iter_mut()) {
            if code.is_none()
                && let Ok(Some(st)) = c.try_wait()
            {
                *code = Some(st.code().unwrap_or(-1));
            }
        }
        assert!(start.elapsed() < Duration::from_secs(120), "{codes:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let holder = codes.iter().position(|c| c.is_none()).expect("one holder");
    let holder_pid = children[holder].id();
    std::fs::write(&go, "").expect("go");
    let code = common::wait_limit(&mut children[holder], Duration::from_secs(60));
    assert_eq!(code, Some(0));
    let outs: Vec<(String, String)> = readers
        .into_iter()
        .map(|(e, o)| (e.join().expect("stderr"), o.join().expect("stdout")))
        .collect();
    for (i, c) in codes.iter().enumerate() {
        if i == holder {
            continue;
        }
        let (err, out) = &outs[i];
        assert_eq!(*c, Some(73), "{err}");
        let pid = format!("pid {holder_pid}");
        assert!(err.contains(&pid), "run {i}: {err}");
        if i % 2 == 1 {
            let ev: Value = serde_json::from_str(out.trim()).expect("one JSON event");
            assert_eq!((&ev["kind"], &ev["code"]), (&"run".into(), &73.into()));
            assert!(ev["message"].as_str().is_some_and(|m| m.contains(&pid)));
        }
    }
    let rec = record(&s);
    assert_eq!(
        (&rec["result"], &rec["pid"]),
        (&"done".into(), &holder_pid.into())
    );
    let runs = of_kind(&s.events("pc7"), "run").len();
    assert_eq!(runs, 1, "only the holder ran");
    lock_is_free(&s);
}

/// Issue 9.6: while a phase runs, the record says "running" for that
/// phase and attempt, not the previous phase's result.
#[test]
fn the_record_says_running_while_a_phase_runs() {
    let s = Scratch::new("running");
    let seen = s.path("seen");
    // Attempt 1 asks for a retry; attempt 2 copies the record as it is
    // while its load runs.
    s.script(
        "load.sh",
        &format!(
            "#!/bin/sh\n[ \"$REIMAGE_ATTEMPT\" = 1 ] && exit 75\ncp {} {}\nexit 0\n",
            s.path("state/computers/pc7/last-run.json").display(),
            seen.display()
        ),
    );
    command_config(
        &s,
        &format!("[\"{}\"]", s.path("load.sh").display()),
        "1m",
        "",
    );
    let r = Test::with(&s).provision("pc7", "img").run();
    r.code(0);
    let during: Value =
        serde_json::from_str(&std::fs::read_to_string(&seen).expect("copied")).expect("json");
    assert_eq!(
        (&during["result"], &during["phase"], &during["attempt"]),
        (&"running".into(), &"load".into(), &2.into()),
        "{during}"
    );
    assert!(during["exit_code"].is_null());
    assert_eq!(record(&s)["result"], "done");
}

/// Issue 9.12: only a regular file of at most 4 MiB is read as the config:
/// a device, a FIFO (which would block) and a huge file are refused at once.
#[test]
fn the_config_must_be_a_small_regular_file() {
    let s = Scratch::new("cfgfile");
    let fifo = s.path("fifo.toml");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let big = s.write("big.toml", &format!("# {}\n", "x".repeat(5 << 20)));
    for (path, says) in [
        (std::path::Path::new("/dev/zero"), "not a regular file"),
        (fifo.as_path(), "not a regular file"),
        (big.as_path(), "the most reimage reads is 4194304"),
    ] {
        let r = Test::with(&s)
            .no_config_flag()
            .arg("--config")
            .arg(path)
            .args(&["check"])
            .limit(Duration::from_secs(60))
            .run();
        r.code(78).stderr_has(says);
    }
}

/// Issue 9.11 and 9.13: an empty REIMAGE_CONFIG or REIMAGE_STATE_DIR is
/// named (not a flag that was never given); with --json every early error
/// (64, 78) still ends with one `run` event carrying the exit code.
#[test]
fn early_errors_are_told_plainly_and_end_json_runs() {
    let s = Scratch::new("early");
    command_config(&s, r#"["true"]"#, "1m", "");
    for var in ["REIMAGE_CONFIG", "REIMAGE_STATE_DIR"] {
        let r = Test::with(&s)
            .no_config_flag()
            .env(var, "")
            .args(&["check", "--json"])
            .run();
        r.code(64)
            .stderr_has(&format!("{var} is set but empty"))
            .stderr_lacks("--config")
            .stderr_lacks("--state-dir");
        let ev: Value = serde_json::from_str(r.stdout.trim()).expect("one JSON event");
        assert_eq!((&ev["kind"], &ev["code"]), (&"run".into(), &64.into()));
    }
    let runs = [
        (
            Test::with(&s).load("pc7", "img").attempt(3, 2),
            64,
            "more than --of",
        ),
        (Test::with(&s).load("pc99", "img"), 64, "unknown computer"),
        // Issue 21: a state directory reimage cannot write is the setup's
        // fault (78), said with the fix.
        (
            Test::with(&s)
                .load("pc7", "img")
                .args(&["--state-dir", "/dev/null/x"]),
            78,
            "cannot create state directory",
        ),
    ];
    for (t, code, says) in runs {
        let r = t.args(&["--json"]).run();
        r.code(code).stderr_has(says);
        let ev: Value = serde_json::from_str(r.stdout.trim()).expect("one JSON event");
        assert_eq!((&ev["kind"], &ev["code"]), (&"run".into(), &code.into()));
    }
    s.write("reimage.toml", "max_attempts = 0\n");
    let r = Test::with(&s).args(&["check", "--json"]).run();
    r.code(78).stderr_has("reimage.toml:1:1:");
    let ev: Value = serde_json::from_str(r.stdout.trim()).expect("one JSON event");
    assert_eq!((&ev["kind"], &ev["code"]), (&"run".into(), &78.into()));
}

/// Issue 21.5: `--attempt` past 2^31 saturates the timeout (at a week)
/// instead of wrapping it to 0.
#[test]
fn a_huge_attempt_number_does_not_wrap_the_timeout() {
    let s = Scratch::new("huge-attempt");
    command_config(&s, r#"["sh", "-c", "sleep 0.2"]"#, "1m", "");
    for n in ["2147483648", "4294967295"] {
        let r = Test::with(&s)
            .load("pc7", "img")
            .args(&["--attempt", n])
            .run();
        // The load is a step whose timeout its start says.
        r.code(0).stderr_has("load: waiting up to 168h");
    }
}

/// Issue 21.5: the note of dropped output counts what both streams
/// dropped: 10 bytes of stdout and 3 MB of stderr keep a tail whose note
/// and kept bytes add up to all of it.
#[test]
fn the_dropped_output_note_counts_both_streams() {
    let s = Scratch::new("note");
    let line = "e".repeat(99);
    command_config(
        &s,
        &format!(r#"["sh", "-c", "printf 0123456789; yes {line} | head -n 30000 >&2"]"#),
        "1m",
        "",
    );
    Test::with(&s)
        .load("pc7", "img")
        .attempt(1, 2)
        .run()
        .code(0);
    let ev = s.events("pc7");
    let out = of_kind(&ev, "output");
    let msg = out[0]["message"].as_str().expect("message");
    let (_, body) = msg.split_once('\n').expect("command line");
    let (note, kept) = body.split_once('\n').expect("a note");
    let n: u64 = note
        .strip_prefix("[reimage: ")
        .and_then(|r| r.strip_suffix(" earlier bytes of output not kept]"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a note: {note}"));
    // stdout, a newline between the streams, stderr without its last
    // newline (the text is trimmed).
    assert_eq!(n + kept.len() as u64, 10 + 1 + 30_000 * 100 - 1, "{note}");
    assert!(kept.ends_with(&line));
}

/// Issue 21.5: a load command that cannot start because the host is out
/// of processes (fork's EAGAIN: RLIMIT_NPROC for an otherwise unused uid)
/// or of descriptors (EMFILE: RLIMIT_NOFILE) is a retry that says so, not
/// fatal with "check the command's path".
#[test]
fn transient_start_failures_are_a_retry_that_says_why() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new("transient");
    command_config(&s, r#"["true"]"#, "1m", "");
    // A uid no process runs as: RLIMIT_NPROC 1 leaves room for reimage
    // only.
    let uid = (64_000..65_000)
        .find(|u| {
            std::fs::read_dir("/proc")
                .expect("/proc")
                .flatten()
                .all(|e| {
                    use std::os::unix::fs::MetadataExt;
                    e.metadata().map_or(true, |m| m.uid() != *u)
                })
        })
        .expect("a free uid");
    let state = s.path("state");
    std::fs::create_dir_all(&state).expect("state");
    std::os::unix::fs::chown(&state, Some(uid), Some(uid)).expect("chown");
    std::fs::set_permissions(&s.dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut cmd = Test::with(&s).load("pc7", "img").attempt(1, 2).command();
    cmd.uid(uid).gid(uid);
    // SAFETY: runs in the forked child before exec (after setuid);
    // setrlimit is an async-signal-safe system call.
    unsafe {
        cmd.pre_exec(|| {
            let one = rustix::process::Rlimit {
                current: Some(1),
                maximum: Some(1),
            };
            rustix::process::setrlimit(rustix::process::Resource::Nproc, one)?;
            Ok(())
        });
    }
    let r = crate::test::run(&mut cmd, common::LIMIT);
    r.code(75)
        .stderr_has("cannot start `true` now: Resource temporarily unavailable")
        .stderr_has("short of processes")
        .stderr_lacks("check the command's path");
    std::os::unix::fs::chown(&state, Some(0), Some(0)).expect("chown back");
    let _ = std::fs::remove_dir_all(&state);

    // Out of descriptors: somewhere between a limit too low for reimage
    // to read its config and one that lets the load start, the command's
    // pipes are the first thing that fails.
    let mut seen = Vec::new();
    for n in 8..48u64 {
        let mut cmd = Test::with(&s).load("pc7", "img").attempt(1, 2).command();
        // SAFETY: as above.
        unsafe {
            cmd.pre_exec(move || {
                let lim = rustix::process::Rlimit {
                    current: Some(n),
                    maximum: Some(n),
                };
                rustix::process::setrlimit(rustix::process::Resource::Nofile, lim)?;
                Ok(())
            });
        }
        let r = crate::test::run(&mut cmd, common::LIMIT);
        r.stderr_lacks("check the command's path");
        let done = r.code == 0;
        seen.push((n, r.code, r.stderr.lines().last().unwrap_or("").to_string()));
        if done {
            break;
        }
    }
    assert!(
        seen.iter().any(|(_, code, _)| *code == 0),
        "never started: {seen:#?}"
    );
    assert!(
        seen.iter().any(|(_, code, _)| *code == 75),
        "no retry: {seen:#?}"
    );
    let retry = seen.iter().find(|(_, code, _)| *code == 75).expect("retry");
    println!("descriptor limits tried: {seen:#?}");
    let r = {
        let n = retry.0;
        let mut cmd = Test::with(&s).load("pc7", "img").attempt(1, 2).command();
        // SAFETY: as above.
        unsafe {
            cmd.pre_exec(move || {
                let lim = rustix::process::Rlimit {
                    current: Some(n),
                    maximum: Some(n),
                };
                rustix::process::setrlimit(rustix::process::Resource::Nofile, lim)?;
                Ok(())
            });
        }
        crate::test::run(&mut cmd, common::LIMIT)
    };
    r.code(75)
        .stderr_has("cannot start `true` now: Too many open files");
}

/// Issue 21.5: a file size limit (`ulimit -f`) is not SIGXFSZ's death for
/// reimage (it is reported like a full disk, see above), and the commands
/// it runs still get the default action: `head` past the limit dies of it.
#[test]
fn a_file_size_limit_leaves_the_commands_their_sigxfsz() {
    let s = Scratch::new("xfsz");
    let big = s.path("big");
    command_config(
        &s,
        &format!(
            r#"["sh", "-c", "head -c 2000000 /dev/zero > {}; echo head=$?"]"#,
            big.display()
        ),
        "1m",
        "",
    );
    let mut cmd = Test::with(&s).load("pc7", "img").attempt(1, 2).command();
    // SAFETY: runs in the forked child before exec; setrlimit is an
    // async-signal-safe system call, nothing is allocated.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::setrlimit(
                rustix::process::Resource::Fsize,
                rustix::process::Rlimit {
                    current: Some(1 << 20),
                    maximum: Some(1 << 20),
                },
            )?;
            Ok(())
        });
    }
    let r = crate::test::run(&mut cmd, common::LIMIT);
    r.code(0);
    let ev = s.events("pc7");
    let out = of_kind(&ev, "output");
    let msg = out[0]["message"].as_str().expect("message");
    assert!(msg.contains("head=153"), "{msg}");
    assert_eq!(record(&s)["result"], "done");
}

/// Issue 21.5: a run stopped (SIGSTOP) past its command's timeout kills
/// the command as soon as it continues, not the stopped time later. The
/// command, which runs on meanwhile, touches `late` 10 s after the
/// continue; the kill must come before.
#[test]
fn a_stopped_run_times_out_when_it_continues() {
    let s = Scratch::new("stopped");
    let (pidf, cont, late) = (s.path("load.pid"), s.path("cont"), s.path("late"));
    s.script(
        "load.sh",
        &format!(
            "#!/bin/sh\necho $$ > {}\nwhile [ ! -e {} ]; do sleep 0.1; done\nsleep 10\ntouch {}\nsleep 300\n",
            pidf.display(),
            cont.display(),
            late.display()
        ),
    );
    command_config(
        &s,
        &format!("[\"{}\"]", s.path("load.sh").display()),
        "20s",
        "",
    );
    let mut child = spawn(Test::with(&s).load("pc7", "img").attempt(1, 2));
    let load = read_pid(&pidf);
    let pid = Pid::from_child(&child);
    kill_process(pid, Signal::STOP).expect("SIGSTOP");
    // Past the 20 s timeout, counted from before the stop.
    std::thread::sleep(Duration::from_secs(22));
    std::fs::write(&cont, "").expect("cont");
    kill_process(pid, Signal::CONT).expect("SIGCONT");
    let code = common::wait_limit(&mut child, common::LIMIT);
    assert_eq!(code, Some(75));
    assert!(!late.exists(), "the timeout came late");
    assert!(!alive(load));
    let ev = s.events("pc7");
    let result = of_kind(&ev, "result");
    assert!(
        result[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("ran past its timeout of 20s")),
        "{result:?}"
    );
}

/// True once process `pid` catches SIGTERM (its handlers are installed):
/// a SIGTERM sent earlier would end it by the default action instead.
fn catches_sigterm(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (libc::SIGTERM - 1)) != 0)
}

/// Issue 21.5: SIGTERM while a run looks for the holder of the lock ends
/// it at once with 143, and the load never starts, also when the lock
/// came free meanwhile.
#[test]
fn sigterm_in_the_lock_wait_ends_the_run_before_any_load() {
    let s = Scratch::new("lockwait");
    let loaded = s.path("loaded");
    command_config(
        &s,
        &format!(r#"["touch", "{}"]"#, loaded.display()),
        "1m",
        "",
    );
    std::fs::create_dir_all(s.path("state/computers/pc7")).expect("dir");
    // A holder that has not written its pid: the run waits for it (up to
    // 10 s, then it would exit 73).
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(s.path("state/computers/pc7/lock"))
        .expect("lock file");
    for free_it in [false, true] {
        lock.try_lock().expect("the test holds the lock");
        let mut child = spawn(Test::with(&s).load("pc7", "img").attempt(1, 2));
        assert!(
            eventually(Duration::from_secs(30), || catches_sigterm(child.id())),
            "reimage never caught SIGTERM"
        );
        kill_process(Pid::from_child(&child), Signal::TERM).expect("SIGTERM");
        if free_it {
            lock.unlock().expect("unlock");
        }
        let code = common::wait_limit(&mut child, Duration::from_secs(30));
        assert_eq!(code, Some(143), "lock freed after the signal: {free_it}");
        assert!(!loaded.exists(), "the load ran (lock freed: {free_it})");
        if !free_it {
            lock.unlock().expect("unlock");
        }
    }
    assert!(
        !s.path("state/computers/pc7/last-run.json").exists(),
        "no run started"
    );
    lock_is_free(&s);
}

/// A pipe whose buffer holds one page, that the test never reads.
fn stuck_pipe() -> (std::io::PipeReader, std::io::PipeWriter) {
    use std::os::fd::AsRawFd;
    let (r, w) = std::io::pipe().expect("pipe");
    // SAFETY: fcntl on a descriptor this function owns.
    let size = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
    assert!(size > 0, "F_SETPIPE_SZ");
    (r, w)
}

/// Issue 21.5: a reader that stops reading stdout (`--json`) or stderr
/// (`-v`) neither blocks the run nor keeps the lock: the run ends as it
/// would, and its event log says what its reader did not take.
#[test]
fn a_reader_that_stops_reading_does_not_block_the_run() {
    let s = Scratch::new("stuck");
    command_config(
        &s,
        r#"["sh", "-c", "yes 'a line of output' | head -c 2000000"]"#,
        "1m",
        "",
    );
    for (json, stream) in [(true, "stdout"), (false, "stderr")] {
        let (reader, writer) = stuck_pipe();
        let mut t = Test::with(&s)
            .load("pc7", "img")
            .attempt(1, 2)
            .args(&["-v"]);
        if json {
            t = t.args(&["--json"]);
        }
        let mut cmd = t.command();
        cmd.stdin(Stdio::null());
        if json {
            cmd.stdout(writer).stderr(Stdio::null());
        } else {
            cmd.stdout(Stdio::null()).stderr(writer);
        }
        let mut child = cmd.spawn().expect("spawn");
        // The Command kept the write end; `cmd` goes, `reader` stays open.
        drop(cmd);
        let code = common::wait_limit(&mut child, common::LIMIT);
        assert_eq!(code, Some(0), "{stream}");
        drop(reader);
        let rec = record(&s);
        assert_eq!(
            (&rec["result"], &rec["exit_code"]),
            (&"done".into(), &0.into())
        );
        let ev = s.events("pc7");
        let warned = of_kind(&ev, "warn").into_iter().any(|w| {
            w["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(&format!("{stream} was not read: ")))
        });
        assert!(warned, "{stream}: {:?}", of_kind(&ev, "warn"));
        assert_eq!(ev.last().expect("events")["kind"], "run");
    }
    lock_is_free(&s);
}

/// Issue 21.5: a record that says "running" with the pid of a process
/// that is not its run (the pid was reused) shows as stale, and
/// `log --follow` ends at once; also for a record without a start time
/// (an older reimage's), whose computer's lock nobody holds.
#[test]
fn a_reused_pid_is_not_a_running_run() {
    let s = Scratch::new("reused");
    command_config(&s, r#"["true"]"#, "1m", "");
    Test::with(&s)
        .load("pc7", "img")
        .attempt(1, 2)
        .run()
        .code(0);
    let mut other = Command::new("sleep")
        .arg("300")
        .spawn()
        .expect("spawn sleep");
    let pid = other.id();
    // The run died mid-phase: its record says running, its log has no
    // `run` event; and its pid now belongs to `other`.
    let log = s.path("state/computers/pc7/events.jsonl");
    let text = std::fs::read_to_string(&log).expect("log");
    let cut: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains(r#""kind":"run""#))
        .collect();
    std::fs::write(&log, format!("{}\n", cut.join("\n"))).expect("log");
    let mut rec = record(&s);
    rec["result"] = "running".into();
    rec["exit_code"] = Value::Null;
    rec["pid"] = pid.into();
    let rec_path = s.path("state/computers/pc7/last-run.json");
    for older in [false, true] {
        if older {
            let o = rec.as_object_mut().expect("object");
            o.remove("pid_start");
            o.remove("boot_id");
        } else {
            assert!(rec["pid_start"].is_u64(), "{rec}");
        }
        std::fs::write(&rec_path, rec.to_string()).expect("record");
        // A run that died failed (issue 24): exit 1.
        let r = Test::with(&s).args(&["status", "-w", "pc7"]).run();
        r.code(1)
            .stdout_has(&format!("stale (pid {pid} gone)"))
            .stdout_lacks("running (pid");
        let r = Test::with(&s)
            .args(&["log", "pc7", "--follow"])
            .limit(Duration::from_secs(60))
            .run();
        r.code(0).stdout_has("the run's process is gone");
    }
    let _ = other.kill();
    let _ = other.wait();
}

/// Issue 21.5, for the views: `reimage log` holds no lock, so it waits
/// for a reader that is slow (a pager) rather than dropping lines; and one
/// whose reader never reads still ends on SIGTERM.
#[test]
fn a_view_waits_for_a_slow_reader_and_ends_on_sigterm() {
    let s = Scratch::new("view");
    command_config(&s, r#"["true"]"#, "1m", "");
    // 4 MB of events: more than the pipe and the 1 MiB reimage queues.
    let line = serde_json::json!({
        "time": "2026-01-01T00:00:00.000Z", "kind": "info", "computer": "pc7",
        "image": "img", "message": "x".repeat(1000),
    })
    .to_string();
    let n = 4000;
    s.write(
        "state/computers/pc7/events.jsonl",
        &format!("{}\n", vec![line.as_str(); n].join("\n")),
    );
    let (reader, writer) = stuck_pipe();
    let mut cmd = Test::with(&s).args(&["log", "pc7", "--json"]).command();
    cmd.stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn");
    drop(cmd);
    // A reader that starts late, once reimage has had time to fill both.
    std::thread::sleep(Duration::from_secs(2));
    let got = BufReader::new(reader).lines().map_while(Result::ok).count();
    assert_eq!(common::wait_limit(&mut child, common::LIMIT), Some(0));
    assert_eq!(got, n, "lines dropped");

    let (reader, writer) = stuck_pipe();
    let mut cmd = Test::with(&s).args(&["log", "pc7", "--json"]).command();
    cmd.stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn");
    drop(cmd);
    assert!(
        eventually(Duration::from_secs(30), || catches_sigterm(child.id())),
        "reimage never caught SIGTERM"
    );
    kill_process(Pid::from_child(&child), Signal::TERM).expect("SIGTERM");
    assert!(common::wait_limit(&mut child, common::LIMIT).is_some());
    drop(reader);
}
