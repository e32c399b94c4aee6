//! End to end on a real distribution: the qemu provisioner boots the Debian
//! guest (examples/debian-guest: debootstrap, systemd, OpenSSH, nftables,
//! systemd-timesyncd) under QEMU, and the built-in linux profile brings it
//! to ready with its first boot. Three boots in one test, one guest at a
//! time: a provision, a post-load whose reboot step needs the firewall rule
//! first boot kept, and a second provision on a fresh overlay.

mod common;

use common::{Scratch, eventually, free_port, of_kind, repo, run};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const LIMIT: Duration = Duration::from_secs(600);

fn guest_dir() -> PathBuf {
    let dir = std::env::var_os("REIMAGE_DEBIAN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/reimage/debian-guest"));
    let mut build = Command::new("bash");
    build.arg(repo("examples/debian-guest/build.sh")).arg(&dir);
    let t = Instant::now();
    let r = run(&mut build, Duration::from_secs(1200));
    assert_eq!(r.code, 0, "examples/debian-guest/build.sh: {}", r.stderr);
    eprintln!(
        "debian guest ready after {:?} (build or cache)",
        t.elapsed()
    );
    dir
}

/// An NTP server on 127.0.0.1:123 for the guest's systemd-timesyncd, which
/// asks 10.0.2.2 (QEMU user networking's name for the host's loopback).
/// The guest's client is what the test checks; this side only answers in
/// the server reply format of RFC 5905 section 7.3: mode 4, stratum 1,
/// the client's transmit timestamp echoed as origin, the host's clock in
/// the receive and transmit timestamps.
struct Ntp {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
}

/// Seconds from 1900 (NTP's era 0) to 1970.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

fn ntp_now() -> [u8; 8] {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    let secs = (d.as_secs() + NTP_UNIX_OFFSET) as u32;
    let frac = ((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000) as u32;
    let mut t = [0u8; 8];
    t[..4].copy_from_slice(&secs.to_be_bytes());
    t[4..].copy_from_slice(&frac.to_be_bytes());
    t
}

impl Ntp {
    fn start() -> Ntp {
        let sock = UdpSocket::bind("127.0.0.1:123")
            .expect("bind 127.0.0.1:123 for the guest's NTP client (the test runs as root, as .ci/run does)");
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("read timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let (s, a) = (stop.clone(), answered.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let mode = buf[0] & 7;
                if n < 48 || mode != 3 {
                    continue;
                }
                let now = ntp_now();
                let mut r = [0u8; 48];
                // LI 0 (synchronized), the client's version, mode 4 (server).
                r[0] = buf[0] & 0x38 | 4;
                r[1] = 1; // stratum: a primary server
                r[2] = buf[2]; // poll
                r[3] = 0xec; // precision 2^-20 s
                // Root delay and dispersion zero; reference id "LOCL".
                r[12..16].copy_from_slice(b"LOCL");
                r[16..24].copy_from_slice(&now); // reference
                r[24..32].copy_from_slice(&buf[40..48]); // origin
                r[32..40].copy_from_slice(&now); // receive
                r[40..48].copy_from_slice(&ntp_now()); // transmit
                if sock.send_to(&r, peer).is_ok() {
                    a.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Ntp { stop, answered }
    }
}

impl Drop for Ntp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Runs `cmd` in the guest with OpenSSH's client (not reimage's channel).
fn guest(g: &Path, port: u16, cmd: &str) -> String {
    let out = Command::new("ssh")
        .arg("-i")
        .arg(g.join("id_ed25519"))
        .args(["-p", &port.to_string()])
        .args(["-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"])
        .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=20"])
        .args(["root@127.0.0.1", cmd])
        .output()
        .expect("ssh");
    assert!(
        out.status.success(),
        "ssh {cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

struct Vm(PathBuf);

impl Drop for Vm {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.0)
            && let Ok(pid) = pid.trim().parse::<i32>()
        {
            // SAFETY: killing the test's own VM by its pid file.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// The steps of the second run: the built-in linux waits, then a reboot
/// that first takes the image's own SSH rule out of /etc/nftables.conf, so
/// only the rule first boot kept there lets the login after it in.
const REBOOT_STEPS: &str = r#"steps = [
  { wait = "port", timeout = "5m" },
  { wait = "banner", regex = "^SSH-", timeout = "5m" },
  { wait = "login", timeout = "3m" },
  { wait = "reboot", timeout = "5m", command = ["sh", "-c", "sed -i '/^[[:space:]]*tcp dport 22 accept$/d' /etc/nftables.conf && grep -c 'dport 22' /etc/nftables.conf && systemctl reboot"] },
]
"#;

fn config(g: &Path, port: u16, steps: &str) -> String {
    format!(
        r#"max_attempts = 2
timeout_growth = 1.0

# The built-in linux profile with the test key and longer timeouts: under
# TCG on a busy machine sshd may take seconds to send its banner, and a
# short connect_timeout only starts more overlapping probes, each making
# the guest's sshd fork and re-exec.
[os.debian]
family = "linux"
key_file = "{g}/id_ed25519"
connect_timeout = "10s"
timeouts = {{ port = "5m", banner = "5m", login = "3m" }}
{steps}
[images.debian]
os = "debian"
provisioner = "qemu"
virtual = true
source = "{g}/base.qcow2"
kernel = "{g}/vmlinux"
initrd = "{g}/initrd.img"
cmdline = "root=/dev/vda rw console=ttyS0 quiet"
image_check = {{ command = ["cat", "/etc/reimage-image"], expect = "^debian-" }}

[computers.deb-vm]
address = "127.0.0.1"
port = {port}
"#,
        g = g.display()
    )
}

/// Runs reimage with `args`; prints its output, and the console of a load
/// that was retried (a slow TCG boot on a busy machine should be visible).
fn reimage(s: &Scratch, args: &[&str]) -> common::Run {
    let r = run(&mut s.reimage(args), LIMIT);
    eprintln!("{}", r.stderr);
    if r.stderr.contains(" retry: ") {
        let old = s.path("state/qemu/deb-vm/console.log.old");
        let text = std::fs::read_to_string(&old).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        eprintln!("console of the retried load ({}):", old.display());
        for l in tail.iter().rev() {
            eprintln!("  {l}");
        }
    }
    eprintln!("reimage {} took {:?}", args.join(" "), r.took);
    r
}

/// The attempt of the last post-load that was done.
fn done_attempt(ev: &[serde_json::Value]) -> u64 {
    of_kind(ev, "result")
        .into_iter()
        .rfind(|e| e["phase"] == "post-load" && e["result"] == "done")
        .and_then(|e| e["attempt"].as_u64())
        .expect("a post-load that was done")
}

/// The messages of the step-end events named `step`, in order.
fn step_messages(ev: &[serde_json::Value], step: &str) -> Vec<String> {
    of_kind(ev, "step-end")
        .into_iter()
        .filter(|e| e["step"] == step)
        .map(|e| {
            format!(
                "{}: {}",
                e["result"].as_str().unwrap_or(""),
                e["message"].as_str().unwrap_or("")
            )
        })
        .collect()
}

#[test]
fn debian_with_systemd_openssh_nftables_and_timesyncd() {
    let g = guest_dir();
    let ntp = Ntp::start();
    let port = free_port();
    let s = Scratch::new("debian");
    let _vm = Vm(s.path("state/qemu/deb-vm/qemu.pid"));
    s.config(&config(&g, port, ""));

    // --- 1: provision ------------------------------------------------------
    let r = reimage(
        &s,
        &[
            "provision",
            "deb-vm",
            "--image",
            "debian",
            "--reservation",
            "r-15",
        ],
    );
    assert_eq!(r.code, 0, "provision failed");
    let ev = s.events("deb-vm");
    assert_eq!(
        step_messages(&ev, "set-hostname"),
        ["ok: hostname is deb-vm"]
    );
    // openssh-server's postinst enabled it.
    assert_eq!(
        step_messages(&ev, "enable-sshd"),
        ["ok: ssh.service already enabled"]
    );
    assert_eq!(
        step_messages(&ev, "open-firewall"),
        ["ok: nftables: 22/tcp accepted in inet filter input (kept in /etc/nftables.conf)"]
    );

    // The name, as systemd's hostnamed and Debian's /etc/hosts have it.
    assert_eq!(guest(&g, port, "hostnamectl hostname"), "deb-vm");
    assert_eq!(guest(&g, port, "hostnamectl --static"), "deb-vm");
    assert_eq!(
        guest(&g, port, "getent hosts deb-vm | cut -d' ' -f1"),
        "127.0.1.1"
    );
    assert_eq!(
        guest(&g, port, "systemctl is-enabled ssh.service"),
        "enabled"
    );
    assert_eq!(guest(&g, port, "systemctl is-active ssh.service"), "active");
    // Exactly one rule of reimage's, first in the chain, and one line kept.
    let chain = guest(&g, port, "nft list chain inet filter input");
    assert_eq!(
        chain.matches("comment \"reimage-ssh\"").count(),
        1,
        "{chain}"
    );
    let first_rule = chain.lines().nth(3).unwrap_or("").trim();
    assert_eq!(
        first_rule, "tcp dport 22 accept comment \"reimage-ssh\"",
        "{chain}"
    );
    assert_eq!(
        guest(&g, port, "grep -c reimage-ssh /etc/nftables.conf"),
        "1"
    );
    assert_eq!(
        guest(&g, port, "nft -c -f /etc/nftables.conf && echo ok"),
        "ok"
    );
    // The clock, synced by systemd-timesyncd from the host.
    let synced = eventually(Duration::from_secs(120), || {
        guest(&g, port, "timedatectl show -p NTPSynchronized --value") == "yes"
    });
    assert!(
        synced,
        "timesyncd never synced: {}",
        guest(
            &g,
            port,
            "timedatectl timesync-status; journalctl -b -u systemd-timesyncd --no-pager | tail -n 5"
        )
    );
    assert_eq!(
        guest(
            &g,
            port,
            "timedatectl show-timesync -p ServerAddress --value"
        ),
        "10.0.2.2"
    );
    assert_eq!(
        guest(
            &g,
            port,
            "test -e /run/systemd/timesync/synchronized && echo yes"
        ),
        "yes"
    );
    assert!(ntp.answered.load(Ordering::Relaxed) > 0);
    let marker = guest(&g, port, "cat /var/lib/reimage/post-load");
    assert!(
        marker.contains("image=debian")
            && marker.contains("reservation=r-15")
            && marker.contains(&format!("attempt={}\n", done_attempt(&ev))),
        "{marker}"
    );
    let machine_id1 = guest(&g, port, "cat /etc/machine-id");
    assert_eq!(machine_id1.len(), 32, "{machine_id1}");
    let boot1 = guest(&g, port, "cat /proc/sys/kernel/random/boot_id");
    let kh1 = std::fs::read_to_string(s.path("state/known_hosts")).expect("known_hosts");

    // --- 2: post-load again, with a reboot that needs the kept rule --------
    s.config(&config(&g, port, REBOOT_STEPS));
    let r = reimage(&s, &["post-load", "deb-vm", "--image", "debian"]);
    assert_eq!(r.code, 0, "post-load with a reboot failed");
    let ev = s.events("deb-vm");
    let reboot = step_messages(&ev, "reboot");
    assert_eq!(reboot.len(), 1, "{reboot:?}");
    assert!(
        reboot[0].starts_with("ok: back with new boot id "),
        "{reboot:?}"
    );
    let boot2 = guest(&g, port, "cat /proc/sys/kernel/random/boot_id");
    assert_ne!(boot1, boot2);
    assert!(reboot[0].contains(&boot2), "{reboot:?} vs {boot2}");
    // The boot loaded reimage's rule from the file (the image's own is
    // gone); first boot ran again and added nothing twice.
    let chain = guest(&g, port, "nft list chain inet filter input");
    assert_eq!(chain.matches("dport 22").count(), 1, "{chain}");
    assert_eq!(
        chain.matches("comment \"reimage-ssh\"").count(),
        1,
        "{chain}"
    );
    assert_eq!(
        guest(&g, port, "grep -c reimage-ssh /etc/nftables.conf"),
        "1"
    );
    assert_eq!(guest(&g, port, "hostnamectl hostname"), "deb-vm");
    assert_eq!(guest(&g, port, "cat /etc/machine-id"), machine_id1);
    assert_eq!(
        std::fs::read_to_string(s.path("state/known_hosts")).expect("known_hosts"),
        kh1,
        "a reboot keeps the host key"
    );

    // A post-load with sshd disabled enables it again (no boot needed).
    guest(&g, port, "systemctl disable ssh.service 2>/dev/null");
    assert_eq!(
        guest(&g, port, "systemctl is-enabled ssh.service || true"),
        "disabled"
    );
    s.config(&config(&g, port, ""));
    let r = reimage(&s, &["post-load", "deb-vm", "--image", "debian"]);
    assert_eq!(r.code, 0, "post-load after disabling sshd failed");
    let ev = s.events("deb-vm");
    assert_eq!(
        step_messages(&ev, "enable-sshd").last().map(String::as_str),
        Some("ok: ssh.service enabled")
    );
    assert_eq!(
        guest(&g, port, "systemctl is-enabled ssh.service"),
        "enabled"
    );

    // --- 3: provision again: a fresh overlay ------------------------------
    let r = reimage(&s, &["provision", "deb-vm", "--image", "debian"]);
    assert_eq!(r.code, 0, "second provision failed");
    let ev = s.events("deb-vm");
    assert_eq!(
        step_messages(&ev, "set-hostname").len(),
        4,
        "first boot ran in each run"
    );
    let boot3 = guest(&g, port, "cat /proc/sys/kernel/random/boot_id");
    assert!(boot3 != boot1 && boot3 != boot2);
    // systemd's first boot ran again: a new machine id.
    let machine_id3 = guest(&g, port, "cat /etc/machine-id");
    assert_eq!(machine_id3.len(), 32);
    assert_ne!(
        machine_id3, machine_id1,
        "a fresh overlay makes a new machine id"
    );
    let marker = guest(&g, port, "cat /var/lib/reimage/post-load");
    assert!(
        marker.contains(&format!("attempt={}\n", done_attempt(&ev)))
            && marker.contains("reservation=\n"),
        "{marker}"
    );
    // The image's own SSH rule is back (fresh overlay), reimage's added once.
    let chain = guest(&g, port, "nft list chain inet filter input");
    assert_eq!(chain.matches("dport 22").count(), 2, "{chain}");
    assert_eq!(guest(&g, port, "hostnamectl hostname"), "deb-vm");
    // The new host key replaced the old one, once.
    let kh3 = std::fs::read_to_string(s.path("state/known_hosts")).expect("known_hosts");
    assert_ne!(kh1, kh3, "a fresh overlay has a new host key");
    assert_eq!(
        kh3.lines().filter(|l| l.starts_with("deb-vm ")).count(),
        1,
        "{kh3}"
    );
}

#[test]
fn the_debian_example_config_checks() {
    let s = Scratch::new("debian-example");
    let mut cmd = Command::new(common::bin());
    cmd.arg("--config")
        .arg(repo("examples/debian.toml"))
        .arg("--state-dir")
        .arg(s.path("state"))
        .args(["check", "deb-vm", "--image", "debian"])
        .env_remove("REIMAGE_CONFIG");
    let r = run(&mut cmd, Duration::from_secs(30));
    assert_eq!(r.code, 0, "{r:?}");
    // The built-in qemu provisioner and linux profile, direct boot.
    for want in [
        "provisioner: qemu (kind qemu)",
        "os profile: debian (family linux, channel ssh)",
        "direct boot: kernel /var/cache/reimage/debian-guest/vmlinux",
        "first boot: yes",
    ] {
        assert!(r.stdout.contains(want), "{want} in {}", r.stdout);
    }
}
