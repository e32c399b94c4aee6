//! The `qemu` provisioner against a real QEMU (TCG here) and the tiny guest
//! from examples/tiny-guest/build.sh (built once, cached in
//! `REIMAGE_GUEST_DIR` or /var/cache/reimage/tiny-guest). Tests that boot a
//! VM take a lock so at most one guest runs at a time, and every VM is
//! killed at the end of its test by a guard.

use crate::common;
use crate::test::Test;
use common::{Scratch, alive, eventually, one_vm_at_a_time};
use rustix::process::{Pid, Signal, kill_process};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use testbed::port::{self, Port};

/// The tiny guest's directory, built on first use.
fn guest() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::var("REIMAGE_GUEST_DIR")
            .unwrap_or_else(|_| "/var/cache/reimage/tiny-guest".into());
        let out = std::process::Command::new(common::repo("examples/tiny-guest/build.sh"))
            .arg(&dir)
            .output()
            .expect("run examples/tiny-guest/build.sh");
        assert!(
            out.status.success(),
            "building the tiny guest failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(dir)
    })
}

/// Writes a config with a load-only OS profile, the tiny image, a missing
/// image, and computer vm1 forwarding `port`; `extra` is appended.
fn config(s: &Scratch, port: u16, extra: &str) {
    let g = guest();
    s.config(&format!(
        r#"
[os.none]
family = "generic"
channel = "none"
steps = []

[images.tiny]
os = "none"
provisioner = "qemu"
source = "{g}/base.qcow2"
kernel = "{g}/vmlinux"
initrd = "{g}/initramfs.cpio.gz"
cmdline = "console=ttyS0 quiet reimage.attempt={{attempt}}"

[images.gone]
os = "none"
provisioner = "qemu"
source = "{missing}"
kernel = "{g}/vmlinux"
initrd = "{g}/initramfs.cpio.gz"

[os.reset]
family = "generic"
channel = "none"
steps = [{{ wait = "port", port = {closed}, timeout = "1s", reset_on_timeout = "1s" }}]

[images.tiny-reset]
os = "reset"
provisioner = "qemu"

[computers.vm1]
address = "127.0.0.1"
port = {port}
{extra}"#,
        g = g.display(),
        missing = s.path("no-such-base.qcow2").display(),
        closed = port::closed(),
    ));
}

/// vm1's run directory under the scratch state directory.
fn run_dir(s: &Scratch) -> PathBuf {
    s.path("state/qemu/vm1")
}

/// The `-qmp` argument reimage gives the QEMU of `dir`.
fn qmp_arg(dir: &Path) -> String {
    format!("unix:{},server=on,wait=off", dir.join("qmp.sock").display())
}

/// Live processes whose command line carries the `-qmp` argument of `dir`.
fn vm_pids(dir: &Path) -> Vec<i32> {
    let want = qmp_arg(dir);
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if raw.split(|b| *b == 0).any(|a| a == want.as_bytes()) && alive(pid) {
            out.push(pid);
        }
    }
    out
}

/// Kills every VM of a run directory when the test ends, however it ends.
struct VmGuard(PathBuf);

impl Drop for VmGuard {
    fn drop(&mut self) {
        // Each pid's command line names our run dir.
        for pid in vm_pids(&self.0).into_iter().filter_map(Pid::from_raw) {
            let _ = kill_process(pid, Signal::KILL);
        }
    }
}

fn pid_of(dir: &Path) -> i32 {
    std::fs::read_to_string(dir.join("qemu.pid"))
        .expect("qemu.pid written")
        .trim()
        .parse()
        .expect("pid file holds a pid")
}

fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Asks the VM's QMP socket for its run state.
fn qmp_status(dir: &Path) -> String {
    let s = UnixStream::connect(dir.join("qmp.sock")).expect("connect to QMP");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut w = s.try_clone().expect("clone");
    let mut r = BufReader::new(s);
    let mut line = String::new();
    let mut next = |r: &mut BufReader<UnixStream>| -> serde_json::Value {
        loop {
            line.clear();
            r.read_line(&mut line).expect("QMP line");
            let v: serde_json::Value = serde_json::from_str(&line).expect("QMP JSON");
            if v.get("event").is_none() {
                return v;
            }
        }
    };
    assert!(next(&mut r).get("QMP").is_some(), "QMP greeting");
    w.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
        .expect("send");
    next(&mut r);
    w.write_all(b"{\"execute\":\"query-status\"}\n")
        .expect("send");
    next(&mut r)["return"]["status"]
        .as_str()
        .unwrap_or("?")
        .to_string()
}

/// The boot ids the tiny guest printed on its console, in order.
fn boot_ids(console: &Path) -> Vec<String> {
    std::fs::read_to_string(console)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split("tiny-guest: boot_id ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn console(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("console.log")).unwrap_or_default()
}

fn identity(
    p: &Path,
) -> (
    u64,
    Option<std::time::SystemTime>,
    Option<std::time::SystemTime>,
) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).expect("overlay exists");
    (m.ino(), m.created().ok(), m.modified().ok())
}

#[test]
fn load_starts_a_vm_and_the_next_load_replaces_it() {
    let _one = one_vm_at_a_time();
    let s = Scratch::new("qemu-load");
    let held = Port::new();
    let port = held.num();
    config(&s, port, "");
    let dir = run_dir(&s);
    let _guard = VmGuard(dir.clone());

    let r = Test::with(&s).load("vm1", "tiny").arg("-q").run();
    r.code(0); // first load
    eprintln!("first load took {:?}", r.took);
    assert_eq!(qmp_status(&dir), "running");
    let first = pid_of(&dir);
    assert!(alive(first), "qemu pid {first} is not alive");
    let cl = cmdline(first);
    assert!(cl.contains("qemu-system"), "pid {first} is not qemu: {cl}");
    assert!(cl.contains("reimage.attempt=1"), "{cl}");
    // The events say which accelerator the VM got, as its command line has it.
    let accel = if cl.contains("-accel kvm") {
        "kvm"
    } else {
        "tcg"
    };
    r.event_log_has(&format!("accelerator: {accel} (auto, "));
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(5),
    )
    .expect("the forwarded port accepts connections");
    let overlay = dir.join("overlay.qcow2");
    let before = identity(&overlay);

    let r = Test::with(&s)
        .load("vm1", "tiny")
        .attempt(2, 3)
        .arg("-q")
        .run();
    r.code(0); // second load
    eprintln!("second load (stops the first VM) took {:?}", r.took);
    assert!(!alive(first), "the first VM (pid {first}) still runs");
    let second = pid_of(&dir);
    assert_ne!(first, second);
    assert!(alive(second));
    assert!(cmdline(second).contains("reimage.attempt=2"));
    assert_ne!(
        before,
        identity(&overlay),
        "the overlay was not made afresh"
    );
    assert_eq!(qmp_status(&dir), "running");
    assert_eq!(vm_pids(&dir), vec![second], "exactly one VM of vm1 runs");

    // Power reset through QMP: a post-load whose only step times out
    // resets the VM, which boots again with a new boot id.
    let boots = |n: usize| {
        // A hang bound: a TCG boot on a loaded machine can take a minute.
        eventually(Duration::from_secs(180), || {
            boot_ids(&dir.join("console.log")).len() >= n
        })
    };
    assert!(boots(1), "the guest did not boot: {}", console(&dir));
    let r = Test::with(&s)
        .post_load("vm1", "tiny-reset")
        .arg("-q")
        .run();
    r.code(75); // post-load with a step that cannot pass
    assert!(
        boots(2),
        "no second boot after the power reset: {}",
        console(&dir)
    );
    let ids = boot_ids(&dir.join("console.log"));
    assert_ne!(ids[0], ids[1], "same boot id after the reset");
    assert_eq!(pid_of(&dir), second, "a reset keeps the same QEMU");

    let ev = s.events("vm1");
    assert!(
        common::of_kind(&ev, "step")
            .iter()
            .any(|e| e["step"] == "port-after-reset"),
        "no wait after the reset in the event log"
    );
    assert!(
        common::of_kind(&ev, "step-end")
            .iter()
            .any(|e| e["step"] == "qemu running" && e["result"] == "ok"),
        "no `qemu running` step in the event log"
    );
}

#[test]
fn interrupted_load_leaves_no_vm_and_frees_the_lock() {
    let _one = one_vm_at_a_time();
    let s = Scratch::new("qemu-int");
    let real = std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("qemu-system-x86_64"))
                .find(|p| p.is_file())
        })
        .expect("qemu-system-x86_64 on PATH (install qemu-system-x86)");
    let marker = s.path("qemu-started");
    // Starts the real QEMU (which daemonizes), then keeps the load waiting.
    let wrapper = s.script(
        "slow-qemu",
        &format!(
            "#!/bin/sh\n\"{}\" \"$@\"\necho $? > \"{}\"\nsleep 30\n",
            real.display(),
            marker.display()
        ),
    );
    let held = Port::new();
    let port = held.num();
    config(
        &s,
        port,
        &format!(
            "provisioner = \"slow\"\n\n[provisioners.slow]\nkind = \"qemu\"\nqemu = \"{}\"\n",
            wrapper.display()
        ),
    );
    let dir = run_dir(&s);
    let _guard = VmGuard(dir.clone());

    let mut child = Test::with(&s)
        .load("vm1", "tiny")
        .args(&["-q"])
        .command()
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn reimage");
    assert!(
        eventually(Duration::from_secs(60), || marker.exists()),
        "the wrapper never started QEMU"
    );
    assert!(
        !vm_pids(&dir).is_empty(),
        "QEMU is not running before the signal"
    );
    kill_process(Pid::from_child(&child), Signal::TERM).expect("SIGTERM to reimage");
    let t = Instant::now();
    let code = common::wait_limit(&mut child, Duration::from_secs(30));
    assert_eq!(code, Some(143), "exit code after SIGTERM");
    eprintln!("reimage stopped {:?} after SIGTERM", t.elapsed());
    assert!(
        vm_pids(&dir).is_empty(),
        "a QEMU of the interrupted load is left: {:?}",
        vm_pids(&dir)
    );

    // The lock is free: the next load runs (and stops at the missing base).
    let r = Test::with(&s).load("vm1", "gone").run();
    r.code(1);
    r.stderr_has("no-such-base.qcow2");
    r.stderr_has("does not exist");
    r.stderr_has("examples/tiny-guest/build.sh");
}

#[test]
fn missing_qemu_binary_is_fatal() {
    let s = Scratch::new("qemu-nobin");
    config(
        &s,
        port::closed(),
        "provisioner = \"broken\"\n\n[provisioners.broken]\nkind = \"qemu\"\nqemu = \"/nonexistent/qemu\"\n",
    );
    let r = Test::with(&s).load("vm1", "tiny").run();
    r.code(1);
    r.stderr_has("/nonexistent/qemu");
    r.stderr_has("install qemu-system-x86");
}

#[test]
fn a_port_in_use_is_fatal_and_named() {
    let s = Scratch::new("qemu-port");
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = held.local_addr().expect("addr").port();
    config(&s, port, "");
    let _guard = VmGuard(run_dir(&s));
    let r = Test::with(&s).load("vm1", "tiny").run();
    r.code(1);
    assert!(r.stderr.contains(&format!("port {port}")), "{}", r.stderr);
    r.stderr_has("already in use");
    assert!(vm_pids(&run_dir(&s)).is_empty());
}

#[test]
fn check_describes_the_vm() {
    let s = Scratch::new("qemu-check");
    let held = Port::new();
    let port = held.num();
    config(&s, port, "");
    let r = Test::with(&s).check("vm1", "tiny").run();
    r.code(0);
    for want in [
        "qemu: qemu-system-x86_64 (machine q35, accel ",
        "memory: 256 MiB, cpus: 1",
        "overlay.qcow2 on base ",
        "cmdline \"console=ttyS0 quiet reimage.attempt=1\"",
        &format!("forwards: 127.0.0.1:{port} -> guest 22"),
        "start timeout: 1m, 1m30s, 2m15s",
        "nic: QEMU's MAC on the forwards' user network",
    ] {
        assert!(
            r.stdout.contains(want),
            "`{want}` missing from:\n{}",
            r.stdout
        );
    }
    // Two networks (issue 25): the private NIC gets mac, a second NIC on
    // public_netdev gets public_mac.
    config(
        &s,
        port,
        "mac = \"52:54:00:aa:00:01\"\npublic_mac = \"52:54:00:aa:00:02\"\n",
    );
    let r = Test::with(&s).check("vm1", "tiny").run();
    r.code(0);
    r.stdout_has("nic: mac 52:54:00:aa:00:01 on the forwards' user network");
    r.stdout_has("public nic: mac 52:54:00:aa:00:02 on -netdev user,net=10.0.3.0/24");
}

#[test]
fn bad_config_values_name_the_line() {
    let s = Scratch::new("qemu-badcfg");
    config(
        &s,
        port::closed(),
        "\n[provisioners.q]\nkind = \"qemu\"\naccel = \"warp\"\n",
    );
    let r = Test::with(&s).args(&["check"]).run();
    r.code(78);
    r.stderr_has("warp");
}

#[test]
fn a_vm_that_dies_during_start_asks_for_a_retry() {
    let _one = one_vm_at_a_time();
    let s = Scratch::new("qemu-dies");
    let dir = run_dir(&s);
    // Starts the real QEMU, then kills it before reimage sees it running:
    // a VM that died during its start.
    let wrapper = s.script(
        "dying-qemu",
        &format!(
            "#!/bin/sh\nqemu-system-x86_64 \"$@\" || exit $?\nkill -9 \"$(cat '{}')\"\n",
            dir.join("qemu.pid").display()
        ),
    );
    config(
        &s,
        port::closed(),
        &format!(
            "provisioner = \"dying\"\n\n[provisioners.dying]\nkind = \"qemu\"\nqemu = \"{}\"\n",
            wrapper.display()
        ),
    );
    let _guard = VmGuard(dir.clone());
    let r = Test::with(&s).load("vm1", "tiny").run();
    r.code(75);
    r.stderr_has("exited");
    r.stderr_has("console:");
    assert!(vm_pids(&dir).is_empty());
}

#[test]
fn a_load_retry_on_the_last_attempt_is_fatal() {
    let _one = one_vm_at_a_time();
    let s = Scratch::new("qemu-last");
    let dir = run_dir(&s);
    // The dying QEMU of a_vm_that_dies_during_start_asks_for_a_retry, on
    // attempt 2 of 2: no reload is left to ask for.
    let wrapper = s.script(
        "dying-qemu",
        &format!(
            "#!/bin/sh\nqemu-system-x86_64 \"$@\" || exit $?\nkill -9 \"$(cat '{}')\"\n",
            dir.join("qemu.pid").display()
        ),
    );
    config(
        &s,
        port::closed(),
        &format!(
            "provisioner = \"dying\"\n\n[provisioners.dying]\nkind = \"qemu\"\nqemu = \"{}\"\n",
            wrapper.display()
        ),
    );
    let _guard = VmGuard(dir.clone());
    let r = Test::with(&s).load("vm1", "tiny").attempt(2, 2).run();
    r.code(1);
    r.stderr_has("exited");
    r.stderr_has("no attempts left");
    assert!(vm_pids(&dir).is_empty());
}

#[test]
fn a_post_load_retry_on_the_last_attempt_is_fatal() {
    let s = Scratch::new("qemu-post-last");
    // A step nothing can pass; post-load does not need the VM for it.
    config(
        &s,
        port::closed(),
        &format!(
            "\n[os.closed]\nfamily = \"generic\"\nchannel = \"none\"\n\
             steps = [{{ wait = \"port\", port = {}, timeout = \"300ms\" }}]\n\n\
             [images.closed]\nos = \"closed\"\nprovisioner = \"qemu\"\n",
            port::closed()
        ),
    );
    Test::with(&s)
        .post_load("vm1", "closed")
        .attempt(2, 2)
        .run()
        .code(1)
        .stderr_has("no attempts left");
    Test::with(&s)
        .post_load("vm1", "closed")
        .attempt(1, 2)
        .run()
        .code(75)
        .stderr_lacks("no attempts left");
}

/// `qemu-img create` of a 16 MiB qcow2 at `p`, on `backing` when given.
fn qcow2(p: &Path, backing: Option<&Path>) {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).expect("the image's directory");
    }
    let mut cmd = std::process::Command::new("qemu-img");
    cmd.args(["create", "-q", "-f", "qcow2"]);
    if let Some(b) = backing {
        cmd.arg("-b").arg(b).args(["-F", "qcow2"]);
    }
    let o = cmd.arg(p).arg("16M").output().expect("qemu-img runs");
    assert!(o.status.success(), "qemu-img create {}", p.display());
}

/// A config whose image `img` loads `base` (no kernel: no VM is needed,
/// every load here is refused), with provisioner `q` and `extra` keys.
fn golden_config(s: &Scratch, base: &Path, extra: &str) {
    s.config(&format!(
        r#"
[provisioners.q]
kind = "qemu"
{extra}

[os.none]
family = "generic"
channel = "none"
steps = []

[images.img]
os = "none"
provisioner = "q"
source = "{}"

[computers.vm1]
address = "127.0.0.1"
port = {}
"#,
        base.display(),
        port::closed()
    ));
}

#[test]
fn a_base_image_the_load_would_replace_is_never_touched() {
    let s = Scratch::new("qemu-golden");
    // The base is named as the overlay, in the directory given as run_dir.
    let base = s.path("golden/overlay.qcow2");
    qcow2(&base, None);
    let golden = std::fs::read(&base).expect("the base");
    golden_config(
        &s,
        &base,
        &format!("run_dir = \"{}\"", s.path("golden").display()),
    );
    let line = std::fs::read_to_string(s.path("reimage.toml"))
        .expect("config")
        .lines()
        .position(|l| l.starts_with("run_dir"))
        .expect("the run_dir line")
        + 1;
    let r = Test::with(&s).check("vm1", "img").run();
    r.code(78);
    r.stderr_has(&format!("reimage.toml:{line}:1:"));
    r.stderr_has("which every load replaces");
    let r = Test::with(&s).load("vm1", "img").run();
    r.code(1);
    r.stderr_has("refusing to load image `img` onto computer `vm1`");
    assert_eq!(std::fs::read(&base).expect("the base"), golden);

    // The default run directory's overlay as the base: the image's source
    // is to blame.
    let overlay = s.path("state/qemu/vm1/overlay.qcow2");
    qcow2(&overlay, None);
    let before = std::fs::read(&overlay).expect("the overlay");
    golden_config(&s, &overlay, "");
    let r = Test::with(&s).check("vm1", "img").run();
    r.code(78);
    r.stderr_has("image `img`'s base");

    // A base that stands on that overlay: the load reads the chain and
    // refuses before anything is replaced.
    let over = s.path("images/golden.qcow2");
    qcow2(&over, Some(&overlay));
    golden_config(&s, &over, "");
    Test::with(&s).check("vm1", "img").run().code(0);
    let r = Test::with(&s).load("vm1", "img").run();
    r.code(1);
    r.stderr_has(&format!("stands on {}", overlay.display()));
    assert_eq!(std::fs::read(&overlay).expect("the overlay"), before);
}
