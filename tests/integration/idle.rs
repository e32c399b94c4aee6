//! Waiting costs no wake-ups of its own (issue 13.2): a `sleep` step, a
//! port step on a target that drops its SYNs, and a load command that runs
//! a long time each block in one poll(2) that only an answer, the child's
//! exit, the next probe or a signal ends. The count of the main thread's
//! voluntary context switches over one second shows it (a 50 ms slice made
//! 20); SIGTERM still ends each wait at once.

use crate::common::{self, Scratch, command_config, eventually};
use crate::test::Test;
use rustix::process::{Pid, Signal, kill_process};
use std::process::{Child, Stdio};
use std::time::Duration;

/// The main thread's voluntary context switches (each one a block in the
/// kernel: a poll, a sleep, a read).
fn switches(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(u64::MAX)
}

/// Starts reimage, waits until one of its events says `started` (the wait
/// under test has begun), counts its wake-ups over one second, then
/// sends SIGTERM and checks it exits 143 at once.
fn wakes_in_a_second_then_sigterm(
    s: &Scratch,
    computer: &str,
    test: Test<'_>,
    started: &str,
) -> u64 {
    let mut child: Child = test
        .command()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn reimage");
    assert!(
        eventually(Duration::from_secs(20), || {
            s.events(computer)
                .iter()
                .any(|e| e["message"].as_str().unwrap_or("").contains(started))
        }),
        "the wait never started: {:?}",
        s.events(computer)
    );
    // Let the first probes go out.
    std::thread::sleep(Duration::from_millis(300));
    let before = switches(child.id());
    std::thread::sleep(Duration::from_secs(1));
    let after = switches(child.id());
    kill_process(Pid::from_child(&child), Signal::TERM).expect("SIGTERM to reimage");
    let code = common::wait_limit(&mut child, Duration::from_secs(10));
    assert_eq!(code, Some(143), "SIGTERM must end the wait at once");
    after.saturating_sub(before)
}

#[test]
fn a_sleep_step_sleeps_in_one_piece() {
    let s = Scratch::new("idle-sleep");
    command_config(
        &s,
        r#"["true"]"#,
        "5m",
        r#"{ wait = "sleep", duration = "60s" }"#,
    );
    let t = Test::with(&s).post_load("pc7", "img");
    let wakes = wakes_in_a_second_then_sigterm(&s, "pc7", t, "sleeping");
    assert!(wakes <= 2, "{wakes} wake-ups in one second of a sleep step");
}

#[test]
fn a_silent_target_is_waited_on_without_wakes_between_probes() {
    // A listener whose accept queue is full drops further SYNs, as a host
    // that drops packets does.
    use rustix::net::{AddressFamily, SocketType, bind, listen, socket};
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None).expect("socket");
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    bind(&fd, &any).expect("bind");
    listen(&fd, 0).expect("listen");
    let l = std::net::TcpListener::from(fd);
    let port = l.local_addr().expect("addr").port();
    let _fill: Vec<_> = (0..2)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_millis(300),
            )
            .ok()
        })
        .collect();
    let s = Scratch::new("idle-silent");
    command_config(
        &s,
        r#"["true"]"#,
        "5m",
        &format!(r#"{{ wait = "port", port = {port}, timeout = "60s" }}"#),
    );
    let t = Test::with(&s).post_load("pc7", "img");
    let wakes = wakes_in_a_second_then_sigterm(&s, "pc7", t, "port: waiting up to");
    // At most 3 connects in flight, each given up after the connect
    // timeout (5 s), pauses doubling to 2 s: a second holds at most a
    // couple of probes or expiries.
    assert!(
        wakes <= 4,
        "{wakes} wake-ups in one second of waiting on a silent port"
    );
    drop(l);
}

#[test]
fn a_long_load_command_is_waited_on_without_wakes() {
    let s = Scratch::new("idle-load");
    command_config(&s, r#"["sleep", "60"]"#, "5m", "");
    let t = Test::with(&s).load("pc7", "img");
    let wakes = wakes_in_a_second_then_sigterm(&s, "pc7", t, "running `sleep 60`");
    assert!(
        wakes <= 2,
        "{wakes} wake-ups in one second of a silent load command"
    );
}
