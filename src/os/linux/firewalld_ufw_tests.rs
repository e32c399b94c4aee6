//! The firewalld and ufw branches of the first boot's lockdown and of
//! `grant`/`revoke` against the real firewalld (1.3) and ufw (0.36) of
//! Debian bookworm. Each test runs in network, mount and PID namespaces
//! of its own: nftables/iptables, /run and the tools' configuration
//! (scratch copies bind-mounted over /etc/firewalld, /etc/ufw,
//! /etc/default/ufw, /lib/ufw) are the test's, and everything it started
//! dies with it. firewalld talks D-Bus: a private system bus (a
//! dbus-daemon of the test's, on a socket in its scratch directory,
//! DBUS_SYSTEM_BUS_ADDRESS) carries firewall-cmd's calls. The assertions
//! read what the tool then holds (firewall-cmd's lists, `ufw status`,
//! the kernel's ruleset) and, for the rules bound to an interface, real
//! connections from a second namespace over two veth pairs.

use super::access::GRANT_FIREWALL;
use super::first_boot::{FIREWALL, program};
use super::tests::section;
use std::path::PathBuf;

/// The test's D-Bus system bus: anyone may own any name and call
/// anything (root alone runs in the namespace).
const BUS_CONF: &str = r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <auth>EXTERNAL</auth>
  <listen>unix:path=@DIR@/bus</listen>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
  </policy>
</busconfig>
"#;

/// Listens on the ports given after the ready file (created once they
/// listen), accepting and closing every connection.
const LISTEN: &str = r#"
import socket, sys, threading
socks = []
for p in sys.argv[2:]:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(p)))
    s.listen(16)
    socks.append(s)
open(sys.argv[1], "w").close()
def serve(s):
    while True:
        c, _ = s.accept()
        c.close()
for s in socks[1:]:
    threading.Thread(target=serve, args=(s,), daemon=True).start()
serve(socks[0])
"#;

/// Connects to each HOST:PORT (1.5 s each, at once) and prints
/// "HOST:PORT open" or "HOST:PORT shut", in order.
const PROBE: &str = r#"
import socket, sys
from concurrent.futures import ThreadPoolExecutor
def probe(t):
    h, p = t.rsplit(":", 1)
    try:
        socket.create_connection((h, int(p)), timeout=1.5).close()
        return t + " open"
    except OSError:
        return t + " shut"
with ThreadPoolExecutor(len(sys.argv)) as ex:
    print("\n".join(ex.map(probe, sys.argv[1:])))
"#;

/// Before every body: /run of the namespace's own (iptables' lock,
/// /run/firewalld), loopback up. `net` sets up the traffic: a clients'
/// namespace ($C, a process in it) behind two veth pairs, the computer's
/// `priv` (MAC $PRIV, 192.168.10.1) and `pub` (MAC $PUB, 192.168.20.1),
/// the clients .2 on each; listeners on 22 and 8080; `probe` connects
/// from the clients' side.
const COMMON: &str = r#"set -e
mount -t tmpfs tmpfs /run
ip link set lo up
net() {
  unshare --net sleep 600 & C=$!
  i=0; while [ "$(readlink /proc/$C/ns/net)" = "$(readlink /proc/self/ns/net)" ]; do
    i=$((i+1)); [ $i -lt 100 ] || { echo "no clients' namespace" >&2; exit 1; }; sleep 0.05
  done
  ip link add priv address "$PRIV" type veth peer name cpriv netns "$C"
  ip link add pub address "$PUB" type veth peer name cpub netns "$C"
  ip addr add 192.168.10.1/24 dev priv; ip link set priv up
  ip addr add 192.168.20.1/24 dev pub; ip link set pub up
  nsenter -t "$C" -n sh -ec 'ip link set lo up
    ip addr add 192.168.10.2/24 dev cpriv; ip link set cpriv up
    ip addr add 192.168.20.2/24 dev cpub; ip link set cpub up'
  /usr/bin/python3 "$DIR/listen.py" "$DIR/listening" 22 8080 &
  i=0; until [ -f "$DIR/listening" ]; do
    i=$((i+1)); [ $i -lt 100 ] || { echo "no listener" >&2; exit 1; }; sleep 0.05
  done
}
# Both clients to ports 22 and 8080: "priv:22 open", ...
probe() {
  nsenter -t "$C" -n /usr/bin/python3 "$DIR/probe.py" \
    192.168.10.1:22 192.168.10.1:8080 192.168.20.1:22 192.168.20.1:8080 |
    sed -e 's/^192.168.10.1:/priv:/' -e 's/^192.168.20.1:/pub:/'
}
"#;

/// firewalld on the test's own bus, with a scratch copy of /etc/firewalld.
const FIREWALLD: &str = r#"
cp -a /etc/firewalld "$DIR/etc-firewalld"
mount --bind "$DIR/etc-firewalld" /etc/firewalld
dbus-daemon --config-file="$DIR/bus.conf" --nofork --nopidfile 2>"$DIR/bus.log" &
export DBUS_SYSTEM_BUS_ADDRESS="unix:path=$DIR/bus"
firewalld --nofork --nopid --log-target file --log-file "$DIR/firewalld.log" & F=$!
i=0; until firewall-cmd --state >/dev/null 2>&1; do
  kill -0 "$F" 2>/dev/null || { echo "firewalld exited" >&2; exit 1; }
  i=$((i+1)); [ $i -lt 100 ] || { echo "firewalld did not start" >&2; exit 1; }; sleep 0.1
done
"#;

/// ufw enabled, with scratch copies of its configuration and state.
const UFW: &str = r#"
cp -a /etc/ufw "$DIR/etc-ufw"; mount --bind "$DIR/etc-ufw" /etc/ufw
cp /etc/default/ufw "$DIR/default-ufw"; mount --bind "$DIR/default-ufw" /etc/default/ufw
cp -a /lib/ufw "$DIR/lib-ufw"; mount --bind "$DIR/lib-ufw" /lib/ufw
ufw --force enable >/dev/null
"#;

/// The test computer's interfaces' MACs (`-i`).
const PRIV: &str = "02:52:45:00:10:01";
const PUB: &str = "02:52:45:00:20:01";

/// Runs `setup` then `body` (sh, after COMMON) as root in network, mount
/// and PID namespaces of its own, with a 2 min limit. `$FW` and `$GRANT`
/// are files holding FIREWALL and GRANT_FIREWALL, `$DIR` the scratch
/// directory, `$ROOT` (REIMAGE_ROOT) a scratch root. Returns stdout;
/// panics with stderr (and firewalld's log) unless it exits 0.
fn isolated(tag: &str, setup: &str, body: &str) -> (String, PathBuf) {
    let dir = std::env::temp_dir().join(format!("reimage-fwu-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("root")).expect("scratch dir");
    let files = [
        ("fw.sh", program(FIREWALL).to_string()),
        ("grant.sh", program(GRANT_FIREWALL).to_string()),
        (
            "bus.conf",
            BUS_CONF.replace("@DIR@", &dir.display().to_string()),
        ),
        ("listen.py", LISTEN.to_string()),
        ("probe.py", PROBE.to_string()),
    ];
    for (name, text) in files {
        std::fs::write(dir.join(name), text).expect("scratch file");
    }
    let script = format!("{COMMON}{setup}{body}");
    let out = std::process::Command::new("timeout")
        .args(["-k", "5", "120", "unshare", "--net", "--mount", "--pid"])
        .args(["--fork", "--mount-proc", "--kill-child", "/bin/sh", "-c"])
        .arg(&script)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("FW", dir.join("fw.sh"))
        .env("GRANT", dir.join("grant.sh"))
        .env("DIR", &dir)
        .env("ROOT", dir.join("root"))
        .env("REIMAGE_ROOT", dir.join("root"))
        .env("PRIV", PRIV)
        .env("PUB", PUB)
        .env("SSH_CLIENT", "10.0.2.2 40000 22")
        .output()
        .expect("timeout and unshare run");
    assert!(
        out.status.success(),
        "needs root (unshare), firewalld and ufw (.ci/run installs them): {}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout),
        std::fs::read_to_string(dir.join("firewalld.log")).unwrap_or_default()
    );
    (String::from_utf8_lossy(&out.stdout).into_owned(), dir)
}

/// The lines of section `name` of `out`, sorted (firewalld lists rich
/// rules in no fixed order).
fn sorted(out: &str, name: &str) -> Vec<String> {
    let mut v: Vec<String> = section(out, name).iter().map(|l| l.to_string()).collect();
    v.sort();
    v
}

/// firewalld's form of a rich rule letting SSH in from `src`.
fn ssh_from(src: &str) -> String {
    let fam = if src.contains(':') { "ipv6" } else { "ipv4" };
    format!("rule family=\"{fam}\" source address=\"{src}\" service name=\"ssh\" accept")
}

/// firewalld's form of a grant's rich rule: `port` from `src`.
fn port_from(src: &str, port: u16) -> String {
    let fam = if src.contains(':') { "ipv6" } else { "ipv4" };
    format!(
        "rule family=\"{fam}\" source address=\"{src}\" port port=\"{port}\" protocol=\"tcp\" accept"
    )
}

/// `want`, sorted, as owned strings.
fn set(want: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// A zone as `firewall-cmd --list-all-zones` shows it: its services,
/// ports and rich rules, each sorted.
#[derive(Debug, PartialEq)]
struct Zone {
    services: Vec<String>,
    ports: Vec<String>,
    rich: Vec<String>,
}

impl Zone {
    fn new(services: &[&str], ports: &[&str], rich: &[&str]) -> Zone {
        Zone {
            services: set(services),
            ports: set(ports),
            rich: set(rich),
        }
    }
}

/// Zone `zone` of section `name` of `out` (`--list-all-zones`).
fn zone(out: &str, name: &str, zone: &str) -> Zone {
    let lines = section(out, name);
    let mut z = Zone::new(&[], &[], &[]);
    let body = lines
        .iter()
        .skip_while(|l| l.starts_with([' ', '\t']) || l.split(' ').next() != Some(zone))
        .skip(1)
        .take_while(|l| !l.is_empty());
    for l in body {
        let words = |key: &str| {
            l.trim()
                .strip_prefix(key)
                .map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        };
        if let Some(r) = l.strip_prefix('\t') {
            z.rich.push(r.to_string());
        } else if let Some(v) = words("services:") {
            z.services = v;
        } else if let Some(v) = words("ports:") {
            z.ports = v;
        }
    }
    z.services.sort();
    z.ports.sort();
    z.rich.sort();
    z
}

/// An image whose firewalld has an interface in zone internal (SSH open
/// there too), 22/tcp open as a port in public and a rich rule of its
/// own for SSH; the lockdown, a rerun, grants, a reload, revokes.
/// `zones NAME [--permanent]`: every zone, now or as the boot loads them.
const FWD_BODY: &str = r#"
zones() { echo "== $1"; firewall-cmd $2 --list-all-zones; }
ip link add in0 type veth peer name in1; ip link set in0 up
firewall-cmd --permanent --zone=internal --add-interface=in0 >/dev/null
firewall-cmd --permanent --zone=public --add-port=22/tcp --add-port=80/tcp >/dev/null
firewall-cmd --permanent --zone=public --add-rich-rule='rule family=ipv4 source address=203.0.113.9 service name=ssh accept' >/dev/null
firewall-cmd --reload >/dev/null
echo "== lockdown"; sh "$FW" 10.0.2.2 2001:db8::1
zones locked
echo "== rerun"; sh "$FW" @peer 192.0.2.5
zones after-rerun
echo "== ann"; sh "$GRANT" 22 reimage-user-ann 198.51.100.0/24
echo "== ann again"; sh "$GRANT" 22 reimage-user-ann 198.51.100.0/24 2001:db8::7
echo "== bob"; sh "$GRANT" 22,8080 reimage-user-bob 192.0.2.77
echo "== list"; cat "$ROOT/var/lib/reimage/grants/reimage-user-ann"
zones granted; zones permanent --permanent
firewall-cmd --reload >/dev/null
zones reloaded
echo "== revoke"; sh "$GRANT" 22 reimage-user-ann
echo "== revoke again"; sh "$GRANT" 22 reimage-user-ann
zones revoked; zones revoked-permanent --permanent
echo "== kernel"; nft list table inet firewalld | grep -e 'saddr' -e 'dport 22' | sed 's/^[[:space:]]*//' | sort -u
echo "== list gone"; ls "$ROOT/var/lib/reimage/grants"
echo "== end"
"#;

#[test]
fn firewalld_lockdown_and_grants_in_every_active_zone_kept_over_a_reload() {
    let (out, dir) = isolated("fwd", FIREWALLD, FWD_BODY);
    let lock = [ssh_from("10.0.2.2"), ssh_from("192.0.2.5")];
    let lock: Vec<&str> = lock.iter().map(String::as_str).collect();
    fwd_lockdown(&out, &lock);
    fwd_grants(&out, &lock);
    // The host's firewalld configuration is not the test's.
    assert!(
        dir.join("etc-firewalld/zones/public.xml").exists()
            && !std::path::Path::new("/etc/firewalld/zones/public.xml").exists(),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// FWD_BODY's lockdown and rerun (whose rules are `lock`).
fn fwd_lockdown(out: &str, lock: &[&str]) {
    let s = section;
    assert_eq!(
        s(out, "lockdown"),
        ["firewalld: 22/tcp from 10.0.2.2 2001:db8::1 (zones internal public)"],
        "{out}"
    );
    // SSH out of both active zones (the default one and internal, with
    // its interface), the service, the port and the image's rich rule;
    // the rest stays.
    let first = [ssh_from("10.0.2.2"), ssh_from("2001:db8::1")];
    let first: Vec<&str> = first.iter().map(String::as_str).collect();
    assert_eq!(
        zone(out, "locked", "internal"),
        Zone::new(&INTERNAL, &[], &first),
        "{out}"
    );
    assert_eq!(
        zone(out, "locked", "public"),
        Zone::new(&["dhcpv6-client"], &["80/tcp"], &first),
        "{out}"
    );
    // A rerun replaces the sources (@peer: SSH_CLIENT's address).
    assert_eq!(
        s(out, "rerun"),
        ["firewalld: 22/tcp from 10.0.2.2 192.0.2.5 (zones internal public)"],
        "{out}"
    );
    assert_eq!(
        zone(out, "after-rerun", "public"),
        Zone::new(&["dhcpv6-client"], &["80/tcp"], lock),
        "{out}"
    );
}

/// Debian's zone internal, SSH aside.
const INTERNAL: [&str; 3] = ["dhcpv6-client", "mdns", "samba-client"];

/// FWD_BODY's grants, reload and revokes, after the lockdown's `lock`.
fn fwd_grants(out: &str, lock: &[&str]) {
    let s = section;
    let bob = [port_from("192.0.2.77", 22), port_from("192.0.2.77", 8080)];
    let ann = [
        port_from("198.51.100.0/24", 22),
        port_from("2001:db8::7", 22),
    ];
    // Grants in both zones, ann's second replacing her first, bob's
    // ports a rule each; now, for the boot, and after a reload.
    assert_eq!(
        s(out, "ann again"),
        ["firewalld: 22/tcp from 198.51.100.0/24 2001:db8::7 (zones internal public)"],
        "{out}"
    );
    assert_eq!(
        s(out, "bob"),
        ["firewalld: 22,8080/tcp from 192.0.2.77 (zones internal public)"],
        "{out}"
    );
    assert_eq!(
        sorted(out, "list"),
        set(&[
            "22 198.51.100.0/24 internal",
            "22 198.51.100.0/24 public",
            "22 2001:db8::7 internal",
            "22 2001:db8::7 public"
        ]),
        "{out}"
    );
    let all: Vec<&str> = lock
        .iter()
        .copied()
        .chain(ann.iter().chain(&bob).map(String::as_str))
        .collect();
    for snap in ["granted", "permanent", "reloaded"] {
        assert_eq!(
            zone(out, snap, "internal"),
            Zone::new(&INTERNAL, &[], &all),
            "{snap}: {out}"
        );
        assert_eq!(
            zone(out, snap, "public"),
            Zone::new(&["dhcpv6-client"], &["80/tcp"], &all),
            "{snap}: {out}"
        );
    }
    // Revoke, twice: ann's rules out of both zones, now and for the boot;
    // bob's and the lockdown's stay, in the kernel's ruleset too (SSH
    // from the sources only: no plain `tcp dport 22 accept` left).
    for r in ["revoke", "revoke again"] {
        assert_eq!(s(out, r), ["firewalld: 22/tcp from nowhere"], "{out}");
    }
    let left: Vec<&str> = lock
        .iter()
        .copied()
        .chain(bob.iter().map(String::as_str))
        .collect();
    for snap in ["revoked", "revoked-permanent"] {
        for z in ["internal", "public"] {
            assert_eq!(zone(out, snap, z).rich, set(&left), "{snap} {z}: {out}");
        }
    }
    let kernel = sorted(out, "kernel");
    let kernel: Vec<&str> = kernel
        .iter()
        .map(String::as_str)
        .filter(|l| l.contains("dport"))
        .collect();
    assert_eq!(
        kernel,
        [
            "ip saddr 10.0.2.2 tcp dport 22 accept",
            "ip saddr 192.0.2.5 tcp dport 22 accept",
            "ip saddr 192.0.2.77 tcp dport 22 accept",
            "ip saddr 192.0.2.77 tcp dport 8080 accept"
        ],
        "{out}"
    );
    assert_eq!(s(out, "list gone"), ["reimage-user-bob"], "{out}");
}

/// The rules of `ufw status numbered` in section `name` of `out`, their
/// blanks squeezed: "[ 1] 22/tcp ALLOW IN 10.0.2.2 # reimage-ssh".
fn ufw_rules(out: &str, name: &str) -> Vec<String> {
    section(out, name)
        .iter()
        .filter(|l| l.starts_with('['))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// An image whose ufw lets SSH in from anywhere (a port rule and the
/// OpenSSH profile, limited) and from one address, and HTTP; the
/// lockdown, a rerun, grants, a reload, revokes.
const UFW_BODY: &str = r#"
ufw allow 22/tcp >/dev/null; ufw limit OpenSSH >/dev/null; ufw allow 80/tcp >/dev/null
ufw allow from 203.0.113.9 to any port 22 proto tcp >/dev/null
echo "== lockdown"; sh "$FW" 10.0.2.2 2001:db8::1
echo "== locked"; ufw status numbered
echo "== rerun"; sh "$FW" @peer 192.0.2.5
echo "== ann"; sh "$GRANT" 22 reimage-user-ann 198.51.100.0/24
echo "== ann again"; sh "$GRANT" 22 reimage-user-ann 198.51.100.0/24 2001:db8::7
echo "== bob"; sh "$GRANT" 22,8080 reimage-user-bob 192.0.2.77
echo "== granted"; ufw status numbered
ufw reload >/dev/null
echo "== reloaded"; ufw status numbered
echo "== revoke"; sh "$GRANT" 22 reimage-user-ann
echo "== revoke again"; sh "$GRANT" 22 reimage-user-ann
echo "== revoked"; ufw status numbered
echo "== v4"; iptables -S ufw-user-input
echo "== v6"; ip6tables-save | grep -e '^-A ufw6-user-input'
echo "== end"
"#;

#[test]
fn ufw_lockdown_and_grants_ahead_of_its_deny_kept_over_a_reload() {
    let host = std::fs::read_to_string("/etc/ufw/ufw.conf").expect("ufw installed");
    let (out, dir) = isolated("ufw", UFW, UFW_BODY);
    ufw_statuses(&out);
    ufw_kernel(&out);
    // The host's ufw is not the test's.
    let conf = std::fs::read_to_string(dir.join("etc-ufw/ufw.conf")).expect("scratch ufw.conf");
    assert!(conf.contains("ENABLED=yes"), "{conf}");
    assert_eq!(
        std::fs::read_to_string("/etc/ufw/ufw.conf").expect("ufw.conf"),
        host
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// UFW_BODY's `ufw status` after each step.
fn ufw_statuses(out: &str) {
    let s = section;
    assert_eq!(
        s(out, "lockdown"),
        ["ufw: 22/tcp from 10.0.2.2 2001:db8::1"],
        "{out}"
    );
    // The image's rules for 22 from anywhere are gone (its rule for one
    // address stays, behind the deny); each family's list starts with the
    // sources' allows, then the deny.
    assert_eq!(
        ufw_rules(out, "locked"),
        [
            "[ 1] 22/tcp ALLOW IN 10.0.2.2 # reimage-ssh",
            "[ 2] 22/tcp DENY IN Anywhere # reimage-ssh",
            "[ 3] 80/tcp ALLOW IN Anywhere",
            "[ 4] 22/tcp ALLOW IN 203.0.113.9",
            "[ 5] 22/tcp ALLOW IN 2001:db8::1 # reimage-ssh",
            "[ 6] 22/tcp (v6) DENY IN Anywhere (v6) # reimage-ssh",
            "[ 7] 80/tcp (v6) ALLOW IN Anywhere (v6)",
        ],
        "{out}"
    );
    assert_eq!(
        s(out, "rerun"),
        ["ufw: 22/tcp from 10.0.2.2 192.0.2.5"],
        "{out}"
    );
    // Grants ahead of the lockdown (ann's second replacing her first, in
    // both families), kept over a reload (ufw's user rules files).
    assert_eq!(
        s(out, "ann again"),
        ["ufw: 22/tcp from 198.51.100.0/24 2001:db8::7"],
        "{out}"
    );
    assert_eq!(s(out, "bob"), ["ufw: 22,8080/tcp from 192.0.2.77"], "{out}");
    let granted = [
        "[ 1] 22,8080/tcp ALLOW IN 192.0.2.77 # reimage-user-bob",
        "[ 2] 22/tcp ALLOW IN 198.51.100.0/24 # reimage-user-ann",
        "[ 3] 22/tcp ALLOW IN 192.0.2.5 # reimage-ssh",
        "[ 4] 22/tcp ALLOW IN 10.0.2.2 # reimage-ssh",
        "[ 5] 22/tcp DENY IN Anywhere # reimage-ssh",
        "[ 6] 80/tcp ALLOW IN Anywhere",
        "[ 7] 22/tcp ALLOW IN 203.0.113.9",
        "[ 8] 22/tcp ALLOW IN 2001:db8::7 # reimage-user-ann",
        "[ 9] 22/tcp (v6) DENY IN Anywhere (v6) # reimage-ssh",
        "[10] 80/tcp (v6) ALLOW IN Anywhere (v6)",
    ];
    assert_eq!(ufw_rules(out, "granted"), granted, "{out}");
    assert_eq!(ufw_rules(out, "reloaded"), granted, "{out}");
    for r in ["revoke", "revoke again"] {
        assert_eq!(s(out, r), ["ufw: 22/tcp from nowhere"], "{out}");
    }
    assert_eq!(
        ufw_rules(out, "revoked"),
        [
            "[ 1] 22,8080/tcp ALLOW IN 192.0.2.77 # reimage-user-bob",
            "[ 2] 22/tcp ALLOW IN 192.0.2.5 # reimage-ssh",
            "[ 3] 22/tcp ALLOW IN 10.0.2.2 # reimage-ssh",
            "[ 4] 22/tcp DENY IN Anywhere # reimage-ssh",
            "[ 5] 80/tcp ALLOW IN Anywhere",
            "[ 6] 22/tcp ALLOW IN 203.0.113.9",
            "[ 7] 22/tcp (v6) DENY IN Anywhere (v6) # reimage-ssh",
            "[ 8] 80/tcp (v6) ALLOW IN Anywhere (v6)",
        ],
        "{out}"
    );
}

/// UFW_BODY's kernel rules at the end.
fn ufw_kernel(out: &str) {
    let s = section;
    // The kernel's: the same order in ufw's user chains.
    assert_eq!(
        s(out, "v4"),
        [
            "-N ufw-user-input",
            "-A ufw-user-input -s 192.0.2.77/32 -p tcp -m multiport --dports 22,8080 -j ACCEPT",
            "-A ufw-user-input -s 192.0.2.5/32 -p tcp -m tcp --dport 22 -j ACCEPT",
            "-A ufw-user-input -s 10.0.2.2/32 -p tcp -m tcp --dport 22 -j ACCEPT",
            "-A ufw-user-input -p tcp -m tcp --dport 22 -j DROP",
            "-A ufw-user-input -p tcp -m tcp --dport 80 -j ACCEPT",
            "-A ufw-user-input -s 203.0.113.9/32 -p tcp -m tcp --dport 22 -j ACCEPT",
        ],
        "{out}"
    );
    assert_eq!(
        s(out, "v6"),
        [
            "-A ufw6-user-input -p tcp -m tcp --dport 22 -j DROP",
            "-A ufw6-user-input -p tcp -m tcp --dport 80 -j ACCEPT",
        ],
        "{out}"
    );
}

/// `probe`'s answer: priv:22, priv:8080, pub:22, pub:8080, each open or
/// not.
fn probed(out: &str, name: &str, open: [bool; 4]) {
    let want: Vec<String> = ["priv:22", "priv:8080", "pub:22", "pub:8080"]
        .iter()
        .zip(open)
        .map(|(t, o)| format!("{t} {}", if o { "open" } else { "shut" }))
        .collect();
    assert_eq!(section(out, name), want, "{name}: {out}");
}

#[test]
fn firewalld_bound_to_interfaces_refuses_an_allowed_source_on_the_other_one() {
    // Clients in the allowed 192.168.0.0/16 on both links: the lockdown
    // bound to priv lets SSH in there only, a grant bound to pub its
    // ports there only; revoke (as `reimage revoke` runs it, without -i)
    // takes the grant out.
    let body = r#"
net
echo "== open"; probe
echo "== lockdown"; sh "$FW" -i "$PRIV" 192.168.0.0/16
echo "== zones"; firewall-cmd --list-all-zones
echo "== locked"; probe
echo "== grant"; sh "$GRANT" -i "$PUB" 22,8080 reimage-user-ann 192.168.0.0/16
echo "== granted"; probe
firewall-cmd --reload >/dev/null
echo "== reloaded"; probe
echo "== rerun"; sh "$FW" -i "$PRIV" 192.168.10.0/24
echo "== permanent"; firewall-cmd --permanent --list-all-zones
echo "== bob"; sh "$GRANT" -i "$PUB" 22,8080 reimage-user-bob 192.168.0.0/16
echo "== revoke"; sh "$GRANT" 22 reimage-user-ann
echo "== bob kept"; probe
sh "$GRANT" 22 reimage-user-bob >/dev/null
echo "== revoked"; probe
echo "== end"
"#;
    let (out, dir) = isolated("fwd-bound", FIREWALLD, body);
    let s = section;
    // Debian's firewalld lets SSH in on every interface (zone public).
    probed(&out, "open", [true, false, true, false]);
    assert_eq!(
        s(&out, "lockdown"),
        ["firewalld: 22/tcp from 192.168.0.0/16 on priv (zone reimage)"],
        "{out}"
    );
    // priv in zone reimage with public's services but SSH, and the rule;
    // public without SSH.
    let rule = ssh_from("192.168.0.0/16");
    assert_eq!(
        zone(&out, "zones", "reimage"),
        Zone::new(&["dhcpv6-client"], &[], &[&rule]),
        "{out}"
    );
    assert!(s(&out, "zones").contains(&"  interfaces: priv"), "{out}");
    assert_eq!(
        zone(&out, "zones", "public"),
        Zone::new(&["dhcpv6-client"], &[], &[]),
        "{out}"
    );
    probed(&out, "locked", [true, false, false, false]);
    assert_eq!(
        s(&out, "grant"),
        ["firewalld: 22,8080/tcp from 192.168.0.0/16 on pub (zones public)"],
        "{out}"
    );
    probed(&out, "granted", [true, false, true, true]);
    probed(&out, "reloaded", [true, false, true, true]);
    // A rerun keeps priv in zone reimage, for the boot too.
    assert_eq!(
        s(&out, "rerun"),
        ["firewalld: 22/tcp from 192.168.10.0/24 on priv (zone reimage)"],
        "{out}"
    );
    assert_eq!(
        zone(&out, "permanent", "reimage").rich,
        [ssh_from("192.168.10.0/24")],
        "{out}"
    );
    assert!(
        s(&out, "permanent").contains(&"  interfaces: priv"),
        "{out}"
    );
    assert_eq!(
        s(&out, "revoke"),
        ["firewalld: 22/tcp from nowhere"],
        "{out}"
    );
    // bob was granted the same rules: firewalld keeps one copy, which
    // ann's revoke took out and put back for bob.
    probed(&out, "bob kept", [true, false, true, true]);
    probed(&out, "revoked", [true, false, false, false]);
    assert!(
        dir.join("etc-firewalld/zones/reimage.xml").exists()
            && !std::path::Path::new("/etc/firewalld/zones/reimage.xml").exists(),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ufw_bound_to_interfaces_refuses_an_allowed_source_on_the_other_one() {
    // As firewalld's: an image that lets SSH in from anywhere.
    let body = r#"
net
ufw allow 22/tcp >/dev/null
echo "== open"; probe
echo "== lockdown"; sh "$FW" -i "$PRIV" 192.168.0.0/16
echo "== locked"; probe; echo "== locked rules"; ufw status numbered
echo "== grant"; sh "$GRANT" -i "$PUB" 22,8080 reimage-user-ann 192.168.0.0/16
echo "== granted"; probe; echo "== granted rules"; ufw status numbered
ufw reload >/dev/null
echo "== reloaded"; probe
echo "== rerun"; sh "$FW" -i "$PRIV" 192.168.10.0/24
echo "== bob"; sh "$GRANT" -i "$PUB" 22,8080 reimage-user-bob 192.168.0.0/16
echo "== revoke"; sh "$GRANT" 22 reimage-user-ann
echo "== bob kept"; probe
sh "$GRANT" 22 reimage-user-bob >/dev/null
echo "== revoked"; probe; echo "== revoked rules"; ufw status numbered
echo "== end"
"#;
    let (out, dir) = isolated("ufw-bound", UFW, body);
    let s = section;
    probed(&out, "open", [true, false, true, false]);
    assert_eq!(
        s(&out, "lockdown"),
        ["ufw: 22/tcp from 192.168.0.0/16 on priv"],
        "{out}"
    );
    probed(&out, "locked", [true, false, false, false]);
    assert_eq!(
        ufw_rules(&out, "locked rules"),
        [
            "[ 1] 22/tcp on priv ALLOW IN 192.168.0.0/16 # reimage-ssh",
            "[ 2] 22/tcp DENY IN Anywhere # reimage-ssh",
            "[ 3] 22/tcp (v6) DENY IN Anywhere (v6) # reimage-ssh",
        ],
        "{out}"
    );
    assert_eq!(
        s(&out, "grant")[0],
        "ufw: 22,8080/tcp from 192.168.0.0/16 on pub",
        "{out}"
    );
    probed(&out, "granted", [true, false, true, true]);
    assert_eq!(
        ufw_rules(&out, "granted rules")[0],
        "[ 1] 22,8080/tcp on pub ALLOW IN 192.168.0.0/16 # reimage-user-ann",
        "{out}"
    );
    probed(&out, "reloaded", [true, false, true, true]);
    assert_eq!(
        s(&out, "rerun"),
        ["ufw: 22/tcp from 192.168.10.0/24 on priv"],
        "{out}"
    );
    assert_eq!(s(&out, "revoke"), ["ufw: 22/tcp from nowhere"], "{out}");
    // bob's identical rule was skipped by ufw; ann's revoke put it back.
    probed(&out, "bob kept", [true, false, true, true]);
    probed(&out, "revoked", [true, false, false, false]);
    assert_eq!(
        ufw_rules(&out, "revoked rules"),
        [
            "[ 1] 22/tcp on priv ALLOW IN 192.168.10.0/24 # reimage-ssh",
            "[ 2] 22/tcp DENY IN Anywhere # reimage-ssh",
            "[ 3] 22/tcp (v6) DENY IN Anywhere (v6) # reimage-ssh",
        ],
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
