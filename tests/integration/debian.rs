//! End to end on a real distribution: the qemu provisioner boots the Debian
//! guest (examples/debian-guest: debootstrap, systemd, OpenSSH, nftables,
//! systemd-timesyncd) under QEMU, and the built-in linux profile brings it
//! to ready with its first boot. Three boots in one test, one guest at a
//! time: a provision; a post-load whose reboot step only gets back in
//! through the SSH rule first boot kept in /etc/nftables.conf; and a
//! provision on a fresh overlay.

use crate::common;
use crate::test::{Output, Test, run};
use common::{Scratch, of_kind, one_vm_at_a_time, repo};
use rustix::process::{Pid, Signal, kill_process};
use std::io::Write;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use testbed::port::Port;

/// A run that boots the guest under TCG on a busy 2-core machine: minutes.
pub(crate) const BOOT: Duration = Duration::from_secs(600);

pub(crate) fn guest_dir() -> PathBuf {
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
        let sock = UdpSocket::bind("127.0.0.1:123").expect(
            "bind 127.0.0.1:123 for the guest's NTP client (the test runs as root, as .ci/run does)",
        );
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

/// Runs `cmd` in the guest with OpenSSH's client (not reimage's channel),
/// `input` on its standard input.
pub(crate) fn guest_in(g: &Path, port: u16, cmd: &str, input: &str) -> String {
    // coreutils' timeout bounds the whole session, not only the connect.
    let mut child = Command::new("timeout")
        .args(["120", "ssh"])
        .arg("-i")
        .arg(g.join("id_ed25519"))
        .args(["-p", &port.to_string()])
        .args(["-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"])
        .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=30"])
        .args(["root@127.0.0.1", cmd])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ssh");
    if let Some(mut i) = child.stdin.take() {
        i.write_all(input.as_bytes()).expect("ssh stdin");
    }
    let out = child.wait_with_output().expect("ssh");
    assert!(
        out.status.success(),
        "ssh {cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub(crate) fn guest(g: &Path, port: u16, cmd: &str) -> String {
    guest_in(g, port, cmd, "")
}

pub(crate) struct Vm(pub(crate) PathBuf);

impl Drop for Vm {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.0)
            && let Some(pid) = pid.trim().parse().ok().and_then(Pid::from_raw)
        {
            // The test's own VM, by its pid file.
            let _ = kill_process(pid, Signal::KILL);
        }
    }
}

/// The steps of the second run: the built-in linux waits, then a reboot.
/// First boot took the image's own open SSH rule out of
/// /etc/nftables.conf, so the login after the reboot gets in only through
/// the rules first boot kept there.
const REBOOT_STEPS: &str = r#"steps = [
  { wait = "port", timeout = "5m" },
  { wait = "banner", regex = "^SSH-", timeout = "5m" },
  { wait = "login", timeout = "3m" },
  { wait = "reboot", timeout = "5m", command = ["systemctl", "reboot"] },
]
"#;

/// In the guest: two network namespaces behind veth pairs, `inside` with
/// 192.168.77.2 (in allow_from) and `outside` with 192.168.78.2 (not), and
/// what sshd answers each of them (`SSH-2.0`, or nothing when the firewall
/// drops the connection). The guest has a public interface, so the
/// lockdown's accepts are bound to the private one: `inside` is dropped
/// too, its veth being another interface (reimage's own logins, from
/// 10.0.2.2 over the private interface, are the ones let in). Each waits
/// 10 s: a dropped connection waits out whatever it is given.
const FROM_NAMESPACES: &str = r#"set -e
for ns in inside:77 outside:78; do
  n=${ns%%:*} net=${ns##*:}
  ip netns add "$n"
  ip link add "v-$n" type veth peer name eth0 netns "$n"
  ip addr add "192.168.$net.1/24" dev "v-$n"
  ip link set "v-$n" up
  ip netns exec "$n" ip addr add "192.168.$net.2/24" dev eth0
  ip netns exec "$n" ip link set eth0 up
done
for ns in inside:77:10 outside:78:10; do
  n=${ns%%:*} rest=${ns#*:} net=${rest%%:*} wait=${rest##*:}
  a=$(ip netns exec "$n" timeout "$wait" bash -c 'exec 3<>/dev/tcp/$0/22; head -c 7 <&3' "192.168.$net.1" 2>/dev/null || true)
  echo "$n: ${a:-nothing}"
done"#;

/// Hooks in the guest as an image would carry them.
const GUEST_HOOKS: &str = r#"set -e
rm -f /var/tmp/reimage-hooks
mkdir -p /usr/local/vcl /etc/reimage/post-load.d
echo 'echo "vcl $REIMAGE_RESERVATION" >> /var/tmp/reimage-hooks' > /usr/local/vcl/vcl_post_load
for h in 20 10; do
  printf '#!/bin/sh\necho "%s $REIMAGE_COMPUTER $REIMAGE_IMAGE $REIMAGE_ATTEMPT" >> /var/tmp/reimage-hooks\n' "$h" > "/etc/reimage/post-load.d/$h-hook"
  chmod +x "/etc/reimage/post-load.d/$h-hook"
done
echo 'not executable: skipped' > /etc/reimage/post-load.d/30-notes"#;

/// The two networks (issue 25): the private NIC (QEMU's user network with
/// the forwards, where reimage's SSH runs) and the public one. Other
/// tests' public NIC is a user network of its own (10.0.3.0/24, QEMU's
/// DHCP server on it); this file's test puts it on a tap of this host
/// (`PublicNet`), first with a static address, then by DHCP from a
/// dnsmasq on that tap.
pub(crate) const PRIVATE_MAC: &str = "52:54:00:aa:00:01";
pub(crate) const PUBLIC_MAC: &str = "52:54:00:aa:00:02";
const PUBLIC_STATIC: &str = r#"public_mac = "52:54:00:aa:00:02"
public_address = "192.168.90.10"
public_netmask = "255.255.255.0"
public_gateway = "192.168.90.1"
public_dns = ["192.168.90.53"]
"#;
const PUBLIC_DHCP: &str = "public_mac = \"52:54:00:aa:00:02\"\n";

/// The address dnsmasq leases to `PUBLIC_MAC`, and this host's on the tap
/// (the static run's gateway).
const LEASED: &str = "192.168.90.123";
const TAP_HOST: &str = "192.168.90.1";

/// The public network as a site has it: a tap on this host (QEMU's
/// `-netdev tap`) with `TAP_HOST`, and dnsmasq serving DHCP on that tap
/// only (no DNS: `--port=0`), leasing `LEASED` to `PUBLIC_MAC`. Both go
/// when it drops.
struct PublicNet {
    tap: String,
    dnsmasq: std::process::Child,
    leases: PathBuf,
}

impl PublicNet {
    fn start(dir: &Path) -> PublicNet {
        let tap = format!("rpub{}", std::process::id() % 100_000);
        let ip = |args: &[&str]| {
            let r = run(Command::new("ip").args(args), Duration::from_secs(20));
            assert_eq!(r.code, 0, "ip {args:?}: {}", r.stderr);
        };
        let _ = run(
            Command::new("ip").args(["link", "del", &tap]),
            Duration::from_secs(20),
        );
        ip(&["tuntap", "add", "dev", &tap, "mode", "tap"]);
        ip(&["addr", "add", &format!("{TAP_HOST}/24"), "dev", &tap]);
        ip(&["link", "set", &tap, "up"]);
        let leases = dir.join("dnsmasq.leases");
        let dnsmasq = Command::new("dnsmasq")
            .args(["--keep-in-foreground", "--conf-file=/dev/null"])
            .args(["--no-resolv", "--no-hosts", "--port=0", "--bind-interfaces"])
            .arg(format!("--interface={tap}"))
            .args(["--except-interface=lo", "--dhcp-authoritative"])
            .args(["--user=root", "--group=root", "--log-dhcp"])
            .arg("--dhcp-range=192.168.90.100,192.168.90.150,255.255.255.0,1h")
            .arg(format!("--dhcp-host={PUBLIC_MAC},{LEASED}"))
            .arg(format!("--dhcp-leasefile={}", leases.display()))
            .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
            .arg(format!(
                "--log-facility={}",
                dir.join("dnsmasq.log").display()
            ))
            .spawn()
            .expect("dnsmasq runs (.ci/run installs dnsmasq-base)");
        PublicNet {
            tap,
            dnsmasq,
            leases,
        }
    }

    /// `public_netdev` for the qemu provisioner: the guest's public NIC on
    /// the tap.
    fn provisioner(&self) -> String {
        format!(
            "\n[provisioners.qemu]\nkind = \"qemu\"\npublic_netdev = \"tap,ifname={},script=no,downscript=no\"\n",
            self.tap
        )
    }

    /// dnsmasq's lease file.
    fn leases(&self) -> String {
        std::fs::read_to_string(&self.leases).unwrap_or_default()
    }
}

impl Drop for PublicNet {
    fn drop(&mut self) {
        let _ = self.dnsmasq.kill();
        let _ = self.dnsmasq.wait();
        let _ = run(
            Command::new("ip").args(["link", "del", &self.tap]),
            Duration::from_secs(20),
        );
    }
}

/// The guest's interface with MAC `mac` (`ip -j addr`): its name and its
/// IPv4 addresses as `A.B.C.D/N`.
pub(crate) fn guest_interface(g: &Path, port: u16, mac: &str) -> (String, Vec<String>) {
    let text = guest(g, port, "ip -j addr");
    let links: Vec<serde_json::Value> = serde_json::from_str(&text).expect("ip -j addr is JSON");
    let link = links
        .iter()
        .find(|l| l["address"] == mac)
        .unwrap_or_else(|| panic!("no interface with MAC {mac}: {text}"));
    let v4 = link["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["family"] == "inet")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]))
        .collect();
    (link["ifname"].as_str().unwrap_or("").to_string(), v4)
}

/// The interface the guest's route to `to` leaves through (`ip -j route
/// get`).
fn route_dev(g: &Path, port: u16, to: &str) -> String {
    let text = guest(g, port, &format!("ip -j route get {to}"));
    let r: Vec<serde_json::Value> = serde_json::from_str(&text).expect("ip -j route is JSON");
    r[0]["dev"].as_str().unwrap_or("").to_string()
}

/// What the run reported as the public address: the last post-load
/// result's and the run's end event's (the same).
fn reported_public(ev: &[serde_json::Value]) -> Option<String> {
    let result = of_kind(ev, "result")
        .into_iter()
        .rfind(|e| e["phase"] == "post-load" && e["result"] == "done")
        .and_then(|e| e["public_address"].as_str().map(str::to_string));
    let end = of_kind(ev, "run")
        .last()
        .and_then(|e| e["public_address"].as_str().map(str::to_string));
    assert_eq!(result, end, "the post-load result and the run's end agree");
    result
}

pub(crate) fn config(g: &Path, port: u16, steps: &str) -> String {
    config_with(g, port, steps, PUBLIC_DHCP)
}

fn config_with(g: &Path, port: u16, steps: &str, public: &str) -> String {
    format!(
        r#"max_attempts = 2
timeout_growth = 1.0

# The built-in linux profile with the test key and timeouts for TCG on a
# busy machine (sshd may take seconds to send its banner; a shorter
# connect_timeout only starts more overlapping probes, each making the
# guest's sshd fork and re-exec). SSH from QEMU's NAT address, one test
# network and this host's address on the public tap (which the lockdown
# still drops: it arrives on the public interface); the clock from the
# host through QEMU's NAT.
[os.debian]
family = "linux"
key_file = "{g}/id_ed25519"
connect_timeout = "10s"
timeouts = {{ port = "5m", banner = "5m", login = "3m" }}
allow_from = ["10.0.2.2", "192.168.77.2", "{TAP_HOST}"]
time_servers = ["10.0.2.2"]
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
mac = "{PRIVATE_MAC}"
{public}"#,
        g = g.display()
    )
}

/// Runs reimage; prints its output, and the console of a load that was
/// retried (a slow TCG boot on a busy machine should be visible).
pub(crate) fn reimage(t: Test<'_>) -> Output {
    let s = t.scratch().dir.clone();
    let r = t.limit(BOOT).run();
    eprintln!("{}", r.stderr);
    if r.stderr.contains(" retry: ") {
        let old = s.join("state/qemu/deb-vm/console.log.old");
        let text = std::fs::read_to_string(&old).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        eprintln!("console of the retried load ({}):", old.display());
        for l in tail.iter().rev() {
            eprintln!("  {l}");
        }
    }
    eprintln!("that run took {:?}", r.took);
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
pub(crate) fn step_messages(ev: &[serde_json::Value], step: &str) -> Vec<String> {
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

/// Whether the password in `file` (`PW` on its first line) is root's in the
/// guest: perl's crypt with the hash's own settings, the password on
/// standard input, never in a command line.
fn is_root_password(g: &Path, port: u16, file: &Path) -> bool {
    let pw = std::fs::read_to_string(file).expect("the root password file");
    let check = r#"perl -e 'my $p = <STDIN>; chomp $p; my $h = (getpwnam("root"))[1]; print crypt($p, $h) eq $h ? "yes" : "no"'"#;
    guest_in(g, port, check, &pw) == "yes"
}

#[test]
fn debian_with_systemd_openssh_nftables_and_timesyncd() {
    // The build (debootstrap, minutes on a cold cache) takes the lock too:
    // it would slow other tests' guests down past their timeouts.
    let _one = one_vm_at_a_time();
    let g = guest_dir();
    let ntp = Ntp::start();
    let held = Port::new();
    let port = held.num();
    let s = Scratch::new("debian");
    let net = PublicNet::start(&s.dir);
    let _vm = Vm(s.path("state/qemu/deb-vm/qemu.pid"));
    let public = |p: &str| format!("{p}{}", net.provisioner());
    s.config(&config_with(&g, port, "", &public(PUBLIC_STATIC)));
    let pw_file = s.path("state/computers/deb-vm/root-password");

    // --- 1: provision ------------------------------------------------------
    let r = reimage(
        Test::with(&s)
            .provision("deb-vm", "debian")
            .args(&["--reservation", "r-15"]),
    );
    r.code(0);
    let ev = r.events();
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
        step_messages(&ev, "time-sync"),
        ["ok: timesyncd: synced from 10.0.2.2"]
    );
    // The public interface, found by its MAC, got the static address
    // through systemd-networkd; the run reported it; the private one
    // keeps the route to the management node (QEMU's 10.0.2.2).
    let (pub_if, pub_v4) = guest_interface(&g, port, PUBLIC_MAC);
    assert_eq!(pub_v4, ["192.168.90.10/24"]);
    assert_eq!(
        step_messages(&ev, "public-network"),
        [format!(
            "ok: public interface {pub_if} (systemd-networkd): 192.168.90.10/24"
        )]
    );
    assert_eq!(reported_public(&ev).as_deref(), Some("192.168.90.10/24"));
    let (priv_if, _) = guest_interface(&g, port, PRIVATE_MAC);
    assert_ne!(priv_if, pub_if);
    // The lockdown's accepts bound to the private interface (found by
    // `mac`), as the computer has a public one.
    assert_eq!(
        step_messages(&ev, "firewall-ssh"),
        [format!(
            "ok: nftables: 22/tcp from 10.0.2.2 192.168.77.2 {TAP_HOST} on {priv_if} (kept in /etc/nftables.conf)"
        )]
    );
    assert_eq!(route_dev(&g, port, "10.0.2.2"), priv_if);
    assert_eq!(
        route_dev(&g, port, "198.51.100.1"),
        pub_if,
        "the public gateway's default route"
    );
    let status = guest(&g, port, &format!("networkctl status {pub_if} --no-pager"));
    assert!(
        status.contains("192.168.90.53"),
        "the public DNS server: {status}"
    );
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(s.path("state/computers/deb-vm/last-run.json"))
            .expect("the record"),
    )
    .expect("JSON");
    assert_eq!(record["public_address"], "192.168.90.10/24");

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
    // SSH only from allow_from over the private interface: the image's
    // open rule is out, reimage's accepts (bound to the private
    // interface) and drop (on every interface) are in, in the chain and
    // in the file.
    let chain = guest(&g, port, "nft list chain inet filter input");
    assert_eq!(chain.matches("tcp dport 22 accept\n").count(), 0, "{chain}");
    assert_eq!(
        chain.matches("comment \"reimage-ssh\"").count(),
        4,
        "{chain}"
    );
    let lines: Vec<&str> = chain.lines().map(str::trim).collect();
    for from in ["10.0.2.2", "192.168.77.2", TAP_HOST] {
        let accept = format!(
            "iifname \"{priv_if}\" ip saddr {from} tcp dport 22 accept comment \"reimage-ssh\""
        );
        assert!(lines.contains(&accept.as_str()), "{accept}: {chain}");
    }
    assert!(
        lines.contains(&"tcp dport 22 drop comment \"reimage-ssh\""),
        "{chain}"
    );
    assert_eq!(
        guest(&g, port, "grep -c '^# reimage-ssh' /etc/nftables.conf"),
        "3",
        "the begin and end lines, and the image's open rule commented out"
    );
    assert_eq!(
        guest(
            &g,
            port,
            &format!("grep -c 'iifname \"{priv_if}\" ip saddr' /etc/nftables.conf")
        ),
        "3",
        "the boot's copy bound the same"
    );
    // Real connections from a source inside allow_from and one outside it,
    // neither over the private interface: both dropped.
    assert_eq!(
        guest(&g, port, FROM_NAMESPACES),
        "inside: nothing\noutside: nothing"
    );
    // This host on the public tap, in allow_from too, reaches the guest's
    // public address (the image's firewall answers ping) but not its sshd:
    // the drop, since the accept is for the private interface only.
    let ping = run(
        Command::new("ping").args(["-c", "3", "-W", "5", "192.168.90.10"]),
        Duration::from_secs(30),
    );
    assert_eq!(ping.code, 0, "the public path works: {}", ping.stdout);
    let sshd = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([192, 168, 90, 10], 22)),
        Duration::from_secs(10),
    );
    assert_eq!(
        sshd.map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::TimedOut),
        "an allow_from source over the public interface is dropped"
    );
    // The clock, synced by systemd-timesyncd from the host.
    assert_eq!(
        guest(&g, port, "timedatectl show -p NTPSynchronized --value"),
        "yes"
    );
    assert_eq!(
        guest(
            &g,
            port,
            "timedatectl show-timesync -p ServerAddress --value"
        ),
        "10.0.2.2"
    );
    assert!(ntp.answered.load(Ordering::Relaxed) > 0);
    // A fresh root password, kept in the state dir (mode 0600), set in the
    // guest.
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(&pw_file).expect("root-password file");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(is_root_password(&g, port, &pw_file));
    let pw1 = std::fs::read_to_string(&pw_file).expect("root-password");
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

    // --- 2: post-load again, with a reboot that needs the kept rules -------
    // The public interface now by DHCP, from the test's dnsmasq on the tap.
    s.config(&config_with(&g, port, REBOOT_STEPS, &public(PUBLIC_DHCP)));
    let r = reimage(Test::with(&s).post_load("deb-vm", "debian"));
    r.code(0);
    let ev = r.events();
    let (pub_if, pub_v4) = guest_interface(&g, port, PUBLIC_MAC);
    let leased = format!("{LEASED}/24");
    assert_eq!(
        pub_v4,
        [leased.as_str()],
        "dnsmasq's lease, the static address gone"
    );
    let leases = net.leases();
    assert!(
        leases.contains(&format!(" {PUBLIC_MAC} {LEASED} ")),
        "dnsmasq leased it: {leases}"
    );
    assert_eq!(reported_public(&ev).as_deref(), Some(leased.as_str()));
    assert_eq!(route_dev(&g, port, "10.0.2.2"), priv_if);
    assert_eq!(
        step_messages(&ev, "public-network").last(),
        Some(&format!(
            "ok: public interface {pub_if} (systemd-networkd): {leased}"
        ))
    );
    let reboot = step_messages(&ev, "reboot");
    assert_eq!(reboot.len(), 1, "{reboot:?}");
    assert!(
        reboot[0].starts_with("ok: back with new boot id "),
        "{reboot:?}"
    );
    let boot2 = guest(&g, port, "cat /proc/sys/kernel/random/boot_id");
    assert_ne!(boot1, boot2);
    assert!(reboot[0].contains(&boot2), "{reboot:?} vs {boot2}");
    // First boot ran again and replaced its rules instead of adding more.
    let chain = guest(&g, port, "nft list chain inet filter input");
    assert_eq!(
        chain.matches("comment \"reimage-ssh\"").count(),
        4,
        "{chain}"
    );
    assert_eq!(
        guest(&g, port, "grep -c '^# reimage-ssh' /etc/nftables.conf"),
        "3"
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
    // The image's own hooks (written here, not built into the image): VCL's
    // script (not executable: run by sh), then post-load.d by name, each
    // with the run's environment.
    guest(&g, port, GUEST_HOOKS);
    s.config(&config_with(&g, port, "", &public(PUBLIC_DHCP)));
    let r = reimage(
        Test::with(&s)
            .post_load("deb-vm", "debian")
            .args(&["--reservation", "r-16"]),
    );
    r.code(0);
    assert_eq!(
        guest(&g, port, "cat /var/tmp/reimage-hooks"),
        format!(
            "vcl r-16\n10 deb-vm debian {a}\n20 deb-vm debian {a}",
            a = done_attempt(&r.events())
        )
    );
    assert_eq!(
        step_messages(&r.events(), "enable-sshd")
            .last()
            .map(String::as_str),
        Some("ok: ssh.service enabled")
    );
    assert_eq!(
        guest(&g, port, "systemctl is-enabled ssh.service"),
        "enabled"
    );

    // --- 3: provision again: a fresh overlay ------------------------------
    let r = reimage(Test::with(&s).provision("deb-vm", "debian"));
    r.code(0);
    let ev = r.events();
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
    let chain = guest(&g, port, "nft list chain inet filter input");
    assert_eq!(
        chain.matches("comment \"reimage-ssh\"").count(),
        4,
        "{chain}"
    );
    assert_eq!(guest(&g, port, "hostnamectl hostname"), "deb-vm");
    // Another fresh password for this load.
    let pw3 = std::fs::read_to_string(&pw_file).expect("root-password");
    assert_ne!(pw1, pw3);
    assert!(is_root_password(&g, port, &pw_file));
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
    let r = Test::with(&s)
        .no_config_flag()
        .arg("--config")
        .arg(repo("examples/debian.toml"))
        .arg("--state-dir")
        .arg(s.path("state"))
        .check("deb-vm", "debian")
        .run();
    r.code(0)
        // The built-in qemu provisioner and linux profile, direct boot.
        .stdout_has("provisioner: qemu (kind qemu)")
        .stdout_has("os profile: debian (family linux, channel ssh)")
        .stdout_has("direct boot: kernel /var/cache/reimage/debian-guest/vmlinux")
        .stdout_has("first boot: yes");
}
