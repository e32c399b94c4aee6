//! The lockdown bound to the private interface and a grant bound to the
//! public one (issue 25 item 4, issue 27), against the real nft and
//! iptables with real connections: the computer's namespace has two veth
//! interfaces with set MACs (priv0, pub0), each leading to a client
//! namespace of its own, and a TCP listener on port 22. One source
//! address is moved between the two sides to show that the same address
//! gets in over one interface and not over the other.

use super::first_boot::private_interface;
use super::tests::{IPT, in_netns, section};

const PRIVATE_MAC: &str = "02:00:00:00:01:01";
const PUBLIC_MAC: &str = "02:00:00:00:02:01";

/// The shell the tests' bodies start with: the two client namespaces
/// (`unshare --net sleep`, entered by nsenter), veth pairs into them, a
/// listener on 22, and `at SIDE ADDR` (ADDR is now the client's of SIDE,
/// priv or pub, and the computer's route to it leads there) and `try
/// SIDE ADDR` (prints `in` when a TCP connection from ADDR to the
/// computer's address on SIDE is made in 3 s, `out` when not: the
/// firewall drops it). The namespaces and listener end with the body.
const TWO_SIDES: &str = r#"
unshare --net sleep 600 & PRIV=$!
unshare --net sleep 600 & PUB=$!
LISTENER=
trap 'kill $PRIV $PUB $LISTENER 2>/dev/null || true' EXIT
me=$(readlink /proc/$$/ns/net)
for p in $PRIV $PUB; do
  while [ "$(readlink /proc/$p/ns/net)" = "$me" ]; do sleep 0.05; done
done
in_() { s=$1; shift; p=$PUB; [ "$s" = priv ] && p=$PRIV; nsenter --net=/proc/$p/ns/net "$@"; }
n=1
for side in priv:02:00:00:00:01:01 pub:02:00:00:00:02:01; do
  s=${side%%:*} mac=${side#*:} p=$PUB
  [ "$s" = priv ] && p=$PRIV
  ip link add "${s}0" address "$mac" type veth peer name eth0 netns "$p"
  ip addr add "10.9.$n.1/24" dev "${s}0"
  ip link set "${s}0" up
  in_ "$s" ip link set eth0 up
  n=$((n+1))
done
python3 -c '
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", 22))
s.listen(64)
open(sys.argv[1], "w").close()
while True:
    s.accept()[0].close()
' "$ROOT/listening" & LISTENER=$!
while [ ! -e "$ROOT/listening" ]; do sleep 0.05; done
host() { if [ "$1" = priv ]; then echo 10.9.1.1; else echo 10.9.2.1; fi; }
at() {
  for s in priv pub; do in_ "$s" ip addr del "$2/32" dev eth0 2>/dev/null || true; done
  in_ "$1" ip addr add "$2/32" dev eth0
  in_ "$1" ip route replace "$(host "$1")/32" dev eth0 src "$2"
  ip route replace "$2/32" dev "${1}0"
}
try() {
  in_ "$1" python3 -c '
import socket, sys
try:
    socket.create_connection((sys.argv[1], 22), timeout=3, source_address=(sys.argv[2], 0)).close()
    print("in")
except OSError:
    print("out")
' "$(host "$1")" "$2"
}
"#;

/// The lockdown's source, and a user's.
const ALLOWED: &str = "192.0.2.5";
const USER: &str = "198.51.100.9";

/// What `try` printed after each `== NAME` line of `out`, by name.
fn tried<'a>(out: &'a str, want: &[(&'a str, &str)]) -> Vec<(&'a str, &'a str)> {
    want.iter()
        .map(|(n, _)| (*n, section(out, n).first().copied().unwrap_or("")))
        .collect()
}

/// Runs TWO_SIDES and `body` (`$A`, `$U`: ALLOWED, USER) in a namespace
/// of their own, with nft, iptables and what TWO_SIDES uses.
fn run(tag: &str, files: &[(&str, &str)], body: &str) -> (String, std::path::PathBuf) {
    let tools = [IPT, &["ip", "nft", "iptables-restore", "python3"]].concat();
    let body = format!(
        "{TWO_SIDES}\n{}",
        body.replace("$A", ALLOWED).replace("$U", USER)
    );
    in_netns(tag, &tools, files, &body)
}

/// The connections every test makes after the bound lockdown and the
/// bound grant (and again after the boot's reload): the lockdown's
/// source in over the private side only, the user's over the public
/// side only.
const BOUND_TRIES: &str = r#"
at priv $A; echo "== $1 A priv"; try priv $A
at pub $A; echo "== $1 A pub"; try pub $A
at pub $U; echo "== $1 U pub"; try pub $U
at priv $U; echo "== $1 U priv"; try priv $U
"#;

fn bound_tries(phase: &str) -> Vec<(&'static str, &'static str)> {
    let names: &[(&str, &str)] = match phase {
        "live" => &[
            ("live A priv", "in"),
            ("live A pub", "out"),
            ("live U pub", "in"),
            ("live U priv", "out"),
        ],
        _ => &[
            ("boot A priv", "in"),
            ("boot A pub", "out"),
            ("boot U pub", "in"),
            ("boot U priv", "out"),
        ],
    };
    names.to_vec()
}

#[test]
fn nftables_lockdown_binds_to_the_private_interface_and_the_grant_to_the_public_one() {
    let conf = "#!/usr/sbin/nft -f\nflush ruleset\ntable inet filter {\n\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n\t\ttcp dport 22 accept\n\t}\n}\n";
    let body = format!(
        r#"
tries() {{ {BOUND_TRIES} }}
nft -f "$ROOT/etc/nftables.conf"
# An older run's lockdown, on every interface: $A gets in over public.
sh "$FW" $A >/dev/null
at pub $A; echo "== old A pub"; try pub $A
echo "== lockdown"; sh "$FW" -i {PRIVATE_MAC} $A
echo "== grant"; sh "$GRANT" -i {PUBLIC_MAC} 22 reimage-user-ann $U
tries live
echo "== chain"; nft list chain inet filter input
nft -f "$ROOT/etc/nftables.conf"
tries boot
echo "== revoke"; sh "$GRANT" 22 reimage-user-ann
at pub $U; echo "== revoked U pub"; try pub $U
echo "== end"
"#
    );
    let root_conf = "etc/nftables.conf";
    let (out, dir) = run("bind-nft", &[(root_conf, conf)], &body);
    let mut want = vec![("old A pub", "in")];
    want.extend(bound_tries("live"));
    want.extend(bound_tries("boot"));
    want.push(("revoked U pub", "out"));
    assert_eq!(tried(&out, &want), want, "{out}");
    let conf_path = dir.join("root").join(root_conf);
    let kept = format!("(kept in {})", conf_path.display());
    assert_eq!(
        section(&out, "lockdown"),
        [format!("nftables: 22/tcp from {ALLOWED} on priv0 {kept}")],
        "{out}"
    );
    assert_eq!(
        section(&out, "grant"),
        [format!("nftables: 22/tcp from {USER} on pub0 {kept}")],
        "{out}"
    );
    let rules: Vec<String> = section(&out, "chain")
        .iter()
        .map(|l| l.trim().to_string())
        .filter(|l| l.contains("dport"))
        .collect();
    assert_eq!(
        rules,
        [
            format!(
                "iifname \"pub0\" ip saddr {USER} tcp dport 22 accept comment \"reimage-user-ann\""
            ),
            format!(
                "iifname \"priv0\" ip saddr {ALLOWED} tcp dport 22 accept comment \"reimage-ssh\""
            ),
            // The drop on every interface; the older run's unbound
            // accept replaced.
            "tcp dport 22 drop comment \"reimage-ssh\"".to_string(),
        ],
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn iptables_lockdown_binds_to_the_interface_of_the_peer_and_the_grant_to_the_public_one() {
    // The config names no private MAC: `-i @peer` finds the interface by
    // the route to SSH_CLIENT's address (a client on the private side).
    let body = format!(
        r#"
tries() {{ {BOUND_TRIES} }}
sh "$FW" $A >/dev/null
at pub $A; echo "== old A pub"; try pub $A
echo "== lockdown"; SSH_CLIENT="10.9.1.7 40000 22" sh "$FW" -i @peer $A
echo "== grant"; sh "$GRANT" -i {PUBLIC_MAC} 22,8080 reimage-user-ann $U
tries live
echo "== v4"; iptables -S INPUT
iptables-restore < "$ROOT/etc/iptables/rules.v4"
tries boot
echo "== revoke"; sh "$GRANT" 22 reimage-user-ann
at pub $U; echo "== revoked U pub"; try pub $U
echo "== end"
"#
    );
    let files = [("etc/iptables/rules.v4", ""), ("etc/iptables/rules.v6", "")];
    let (out, dir) = run("bind-ipt", &files, &body);
    let mut want = vec![("old A pub", "in")];
    want.extend(bound_tries("live"));
    want.extend(bound_tries("boot"));
    want.push(("revoked U pub", "out"));
    assert_eq!(tried(&out, &want), want, "{out}");
    let lockdown = section(&out, "lockdown");
    assert_eq!(lockdown.len(), 1, "{out}");
    assert!(
        lockdown[0].starts_with(&format!(
            "iptables: 22/tcp from {ALLOWED} on priv0 (kept in "
        )),
        "{out}"
    );
    let grant = section(&out, "grant");
    assert!(
        grant.len() == 1
            && grant[0].starts_with(&format!(
                "iptables: 22,8080/tcp from {USER} on pub0 (kept in "
            )),
        "{out}"
    );
    let tag = "-m comment --comment";
    assert_eq!(
        section(&out, "v4"),
        [
            "-P INPUT ACCEPT".to_string(),
            format!(
                "-A INPUT -s {USER}/32 -i pub0 -p tcp -m multiport --dports 22,8080 {tag} reimage-user-ann -j ACCEPT"
            ),
            format!(
                "-A INPUT -s {ALLOWED}/32 -i priv0 -p tcp -m tcp --dport 22 {tag} reimage-ssh -j ACCEPT"
            ),
            format!("-A INPUT -p tcp -m tcp --dport 22 {tag} reimage-ssh -j DROP"),
        ],
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_interface_the_peer_has_no_route_through_or_no_ssh_client_is_an_error() {
    let body = r#"
echo "== no client"; SSH_CLIENT= sh "$FW" -i @peer $A 2>&1 && echo ran || echo "exit $?"
echo "== no mac"; sh "$GRANT" -i 02:00:00:00:09:09 22 reimage-user-ann $U 2>&1 && echo ran || echo "exit $?"
echo "== end"
"#;
    let (out, dir) = run("bind-err", &[], body);
    assert_eq!(
        section(&out, "no client"),
        ["-i @peer: no SSH_CLIENT to find the interface by", "exit 1"],
        "{out}"
    );
    assert_eq!(
        section(&out, "no mac"),
        ["no interface has MAC 02:00:00:00:09:09", "exit 1"],
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The plan of a linux computer with `computer`'s keys.
fn plan(computer: &str) -> crate::config::Plan {
    let text = format!(
        "[os.p]\nfamily = \"linux\"\n[images.img]\nos = \"p\"\nprovisioner = \"lab\"\n\
         [computers.pc]\naddress = \"10.0.0.7\"\n{computer}\n"
    );
    let l = crate::config::parse(
        std::path::Path::new("t.toml"),
        text,
        &["lab"],
        crate::os::families(),
    )
    .expect("config parses");
    crate::config::resolve(&l, "pc", "img", std::path::Path::new("/state"), None)
        .expect("plan resolves")
}

#[test]
fn the_lockdown_binds_only_where_there_is_a_public_interface() {
    let cases = [
        ("", None),
        ("mac = \"52:54:00:00:00:01\"", None),
        (
            "mac = \"52-54-00-00-00-0A\"\npublic_mac = \"52:54:00:00:00:02\"",
            Some("52:54:00:00:00:0a"),
        ),
        ("public_mac = \"52:54:00:00:00:02\"", Some("@peer")),
    ];
    for (keys, want) in cases {
        assert_eq!(private_interface(&plan(keys)).as_deref(), want, "{keys}");
    }
    // What `check` says of it.
    use crate::os::Family;
    let lockdown = |keys: &str| {
        super::Linux
            .first_boot_lines(&plan(keys))
            .into_iter()
            .find(|l| l.starts_with("lockdown: "))
            .expect("a lockdown line")
    };
    assert!(!lockdown("mac = \"52:54:00:00:00:01\"").contains(" on "));
    assert!(
        lockdown("mac = \"52:54:00:00:00:01\"\npublic_mac = \"52:54:00:00:00:02\"")
            .contains(" on the private interface (MAC 52:54:00:00:00:01);"),
    );
    assert!(
        lockdown("public_mac = \"52:54:00:00:00:02\"")
            .contains(" on the private interface (the one the SSH connection comes in on);"),
    );
}
