//! `grant` and `revoke`: a reservation's user on the computer.
//!
//! On the real Debian guest (examples/debian-guest: useradd, sudo,
//! OpenSSH, nftables), one boot for grant, a second grant, revoke and a
//! grant again, then the next reservation's `provision --reuse`: the user
//! logs in with their key from an allowed address over the guest's public
//! interface (QEMU's second user network, with a forward from the host:
//! the guest sees 10.0.3.2) and not from addresses that arrive on other
//! interfaces (network namespaces inside the guest), `--admin` gives sudo,
//! revoke ends the session. Without a guest: the exit codes and the lock.

use crate::common::{Scratch, of_kind, one_vm_at_a_time};
use crate::debian::{
    PRIVATE_MAC, PUBLIC_MAC, Vm, config, guest, guest_dir, guest_in, guest_interface, reimage,
    step_messages,
};
use crate::test::{Output, Test};
use std::path::Path;
use std::time::Duration;
use testbed::port::Port;

/// In the guest: namespaces `outside` (192.168.78.2) and `other`
/// (192.168.79.2) behind veth pairs, neither in the profile's allow_from,
/// and the user's private key at /root/ann_key.
const NAMESPACES: &str = r#"set -e
for ns in outside:78 other:79; do
  n=${ns%%:*} net=${ns##*:}
  ip netns add "$n"
  ip link add "v-$n" type veth peer name eth0 netns "$n"
  ip addr add "192.168.$net.1/24" dev "v-$n"
  ip link set "v-$n" up
  ip netns exec "$n" ip addr add "192.168.$net.2/24" dev eth0
  ip netns exec "$n" ip link set eth0 up
  ip netns exec "$n" ip link set lo up
done
cat > /root/ann_key
chmod 600 /root/ann_key"#;

/// `ssh ann@` the guest from namespace `$1` (its own address's .1),
/// running `$2`: what it printed, or `refused` when no login came of it
/// (the firewall drops the connection: 20 s are enough for a login over
/// a veth under TCG; a dropped one waits them out).
const AS_ANN: &str = r#"net=78; [ "$0" = other ] && net=79
ip netns exec "$0" timeout 60 ssh -i /root/ann_key -o BatchMode=yes \
  -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
  -o ConnectTimeout=20 "ann@192.168.$net.1" "$1" 2>/dev/null || echo refused"#;

fn as_ann(g: &Path, port: u16, ns: &str, cmd: &str) -> String {
    let q = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    guest(g, port, &format!("sh -c {} {} {}", q(AS_ANN), ns, q(cmd)))
}

/// Where the guest's public interface sees the host's connections come
/// from (QEMU user networking's host address on 10.0.3.0/24).
const PUBLIC_PEER: &str = "10.0.3.2";

/// `ssh ann@` the guest from the host through the forward `public` to the
/// public interface, running `cmd`: what it printed, or `refused` (as
/// AS_ANN).
fn ssh_public(key: &Path, public: u16, cmd: &str) -> std::process::Command {
    let mut c = std::process::Command::new("timeout");
    c.args(["60", "ssh", "-i"])
        .arg(key)
        .args(["-p", &public.to_string()])
        .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"])
        .args(["-o", "ConnectTimeout=20", "ann@127.0.0.1", cmd]);
    c
}

fn as_ann_public(key: &Path, public: u16, cmd: &str) -> String {
    let out = ssh_public(key, public, cmd).output().expect("ssh runs");
    if out.status.success() {
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    } else {
        "refused".to_string()
    }
}

fn grant_test<'a>(s: &'a Scratch, args: &[&str]) -> Test<'a> {
    Test::with(s)
        .arg("--json")
        .args(&["grant", "deb-vm", "--reservation", "r-27", "--user", "ann"])
        .args(args)
}

/// The events a `--json` run wrote on stdout.
fn json_events(r: &Output) -> Vec<serde_json::Value> {
    r.stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// The one `access` event of a grant.
fn access(r: &Output) -> serde_json::Value {
    let ev = json_events(r);
    let a = of_kind(&ev, "access");
    assert_eq!(a.len(), 1, "{ev:?}");
    a[0]["access"].clone()
}

#[test]
fn debian_grant_second_grant_revoke_and_the_next_reservation() {
    let _one = one_vm_at_a_time();
    let g = guest_dir();
    let held = Port::new();
    let port = held.num();
    let s = Scratch::new("grant-debian");
    let _vm = Vm(s.path("state/qemu/deb-vm/qemu.pid"));
    // The built-in linux profile; no time servers (no NTP server here).
    // The public network with a forward from the host to the guest's
    // sshd, for the user's logins over the public interface.
    let held_public = Port::new();
    let public_port = held_public.num();
    let text = config(&g, port, "")
        .replace("time_servers = [\"10.0.2.2\"]\n", "")
        .replace("provisioner = \"qemu\"", "provisioner = \"qpub\"");
    s.config(&format!(
        "{text}\n[provisioners.qpub]\nkind = \"qemu\"\npublic_netdev = \"user,net=10.0.3.0/24,hostfwd=tcp:127.0.0.1:{public_port}-:22\"\n"
    ));
    let key = s.path("ann_key");
    let keygen = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "ann@test", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen");
    assert!(keygen.success());
    let pubkey = s.path("ann_key.pub");

    reimage(
        Test::with(&s)
            .provision("deb-vm", "debian")
            .args(&["--reservation", "r-27"]),
    )
    .code(0);
    let private = std::fs::read_to_string(&key).expect("the key");
    guest_in(&g, port, NAMESPACES, &private);
    assert_eq!(as_ann_public(&key, public_port, "id -un"), "refused");

    // --- grant: the key, from the public side and `outside` -------------
    let r = grant_test(&s, &["--ssh-key", &pubkey.display().to_string()])
        .args(&["--from", PUBLIC_PEER, "--from", "192.168.78.2"])
        .limit(Duration::from_secs(300))
        .run();
    r.code(0);
    let a = access(&r);
    // The guest has a public interface (QEMU's second user network, by
    // DHCP): the user connects to the address the provision saw there, on
    // port 22, not to reimage's forwarded private port.
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(s.path("state/computers/deb-vm/last-run.json")).expect("record"),
    )
    .expect("record is JSON");
    let public = record["public_address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .expect("the provision's public address")
        .to_string();
    assert_eq!(
        (&a["user"], &a["protocol"], &a["address"], &a["port"]),
        (&"ann".into(), &"ssh".into(), &public.into(), &22.into())
    );
    assert_eq!(a["from"], serde_json::json!([PUBLIC_PEER, "192.168.78.2"]));
    assert_eq!(
        a["password_file"],
        serde_json::Value::Null,
        "a key, no password"
    );
    // In over the public interface; `outside`'s address is granted too,
    // but it arrives on another interface: the user's rules are bound to
    // the public one.
    assert_eq!(as_ann_public(&key, public_port, "id -un"), "ann");
    assert_eq!(as_ann(&g, port, "outside", "id -un"), "refused");
    assert_eq!(
        as_ann_public(
            &key,
            public_port,
            "sudo -n true 2>/dev/null && echo sudo || echo no"
        ),
        "no"
    );
    // The rules as nft has them: the user's on the public interface, the
    // lockdown's on the private one (the computer's `mac`).
    let (pub_if, _) = guest_interface(&g, port, PUBLIC_MAC);
    let (priv_if, _) = guest_interface(&g, port, PRIVATE_MAC);
    let ruleset = guest(&g, port, "nft list ruleset");
    let lines: Vec<&str> = ruleset.lines().map(str::trim).collect();
    for want in [
        format!(
            "iifname \"{pub_if}\" ip saddr {PUBLIC_PEER} tcp dport 22 accept comment \"reimage-user-ann\""
        ),
        format!(
            "iifname \"{pub_if}\" ip saddr 192.168.78.2 tcp dport 22 accept comment \"reimage-user-ann\""
        ),
        format!(
            "iifname \"{priv_if}\" ip saddr 10.0.2.2 tcp dport 22 accept comment \"reimage-ssh\""
        ),
    ] {
        assert!(lines.contains(&want.as_str()), "{want}: {ruleset}");
    }
    assert_eq!(
        guest(&g, port, "stat -c %U:%a /home/ann/.ssh/authorized_keys"),
        "ann:600"
    );

    // --- a second grant adds `other`, and makes ann an administrator ------
    let r = grant_test(&s, &["--from", "192.168.79.2", "--admin"])
        .limit(Duration::from_secs(300))
        .run();
    r.code(0);
    assert_eq!(
        access(&r)["from"],
        serde_json::json!([PUBLIC_PEER, "192.168.78.2", "192.168.79.2"])
    );
    assert_eq!(as_ann(&g, port, "other", "id -un"), "refused");
    assert_eq!(as_ann_public(&key, public_port, "sudo -n id -u"), "0");
    let st = Test::with(&s).args(&["status", "deb-vm"]).run();
    st.code(0).stdout_has(
        "deb-vm: ann (reservation r-27, admin) from 10.0.3.2, 192.168.78.2, 192.168.79.2",
    );

    // --- revoke ends the session ------------------------------------------
    let mut session = ssh_public(&key, public_port, "sleep 600")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("ssh runs");
    assert_eq!(
        guest(
            &g,
            port,
            "for i in $(seq 120); do pgrep -u ann -x sleep >/dev/null && break; sleep 0.5; done; pgrep -u ann -x sleep >/dev/null && echo in"
        ),
        "in"
    );
    let r = Test::with(&s)
        .arg("--json")
        .args(&["revoke", "deb-vm", "--reservation", "r-27"])
        .limit(Duration::from_secs(300))
        .run();
    r.code(0);
    assert_eq!(
        step_messages(&json_events(&r), "revoke-user"),
        ["ok: user ann logged out and removed"]
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let ended = loop {
        match session.try_wait() {
            Ok(Some(_)) => break true,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(500))
            }
            _ => break false,
        }
    };
    if !ended {
        let _ = session.kill();
        let _ = session.wait();
    }
    assert!(ended, "the session ended with the revoke");
    assert_eq!(
        guest(
            &g,
            port,
            "id ann >/dev/null 2>&1 && echo there || echo gone"
        ),
        "gone"
    );
    assert_eq!(
        guest(
            &g,
            port,
            "ls /etc/sudoers.d/reimage-ann 2>&1 >/dev/null | wc -l"
        ),
        "1"
    );
    let chain = guest(&g, port, "nft list ruleset");
    assert!(!chain.contains("reimage-user-ann"), "{chain}");
    assert!(chain.contains("reimage-ssh"), "{chain}");
    assert!(!s.path("state/computers/deb-vm/grants.json").exists());
    // Idempotent: nothing recorded, and nothing on the computer either.
    Test::with(&s)
        .args(&["revoke", "deb-vm", "--reservation", "r-27"])
        .run()
        .code(0)
        .stderr_has("nothing to revoke");
    let r = Test::with(&s)
        .arg("--json")
        .args(&["revoke", "deb-vm", "--reservation", "r-27", "--user", "ann"])
        .limit(Duration::from_secs(300))
        .run();
    r.code(0);
    assert_eq!(
        step_messages(&json_events(&r), "revoke-user"),
        ["ok: no user ann: nothing to remove"]
    );

    // An account of the image is never taken over, nor removed.
    guest(&g, port, "useradd -m -c 'the image' bob");
    let r = Test::with(&s)
        .args(&["grant", "deb-vm", "--reservation", "r-27", "--user", "bob"])
        .args(&["--from", "192.168.78.2"])
        .limit(Duration::from_secs(300))
        .run();
    r.code(1).stderr_has("not taken over");
    Test::with(&s)
        .args(&["revoke", "deb-vm", "--reservation", "r-27", "--user", "bob"])
        .limit(Duration::from_secs(300))
        .run()
        .code(1)
        .stderr_has("left alone");
    assert_eq!(guest(&g, port, "id -un bob"), "bob");

    // --- without a key: a password, kept in the state directory -----------
    let r = grant_test(&s, &["--from", "192.168.78.2"])
        .limit(Duration::from_secs(300))
        .run();
    r.code(0);
    let pw_file = s.path("state/computers/deb-vm/users/ann-password");
    assert_eq!(access(&r)["password_file"], pw_file.display().to_string());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&pw_file)
        .expect("password file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let pw = std::fs::read_to_string(&pw_file).expect("password");
    let check = r#"perl -e 'my $p = <STDIN>; chomp $p; my $h = (getpwnam("ann"))[1]; print crypt($p, $h) eq $h ? "yes" : "no"'"#;
    assert_eq!(guest_in(&g, port, check, &pw), "yes");
    let log = std::fs::read_to_string(s.path("state/computers/deb-vm/events.jsonl")).expect("log");
    assert!(
        !log.contains(pw.trim()),
        "the password is never in the events"
    );
    assert!(!r.stdout.contains(pw.trim()));

    // --- the next reservation's provision --reuse revokes it first --------
    let r = reimage(Test::with(&s).provision("deb-vm", "debian").args(&[
        "--reservation",
        "r-28",
        "--reuse",
    ]));
    r.code(0);
    r.event_log_has("revoking the earlier grants first: ann (reservation r-27)")
        .event_log_has("earlier grants revoked: ann (reservation r-27)");
    assert!(!s.path("state/computers/deb-vm/grants.json").exists());
    assert!(!pw_file.exists());
}

/// A computer at a port nobody answers on, with a last run for r-1.
fn offline(name: &str) -> Scratch {
    let s = Scratch::new(name);
    let port = testbed::port::closed();
    s.config(&format!(
        r#"
[os.lx]
family = "linux"
key_file = "{dir}/key"
connect_timeout = "1s"
timeouts = {{ port = "1s", banner = "1s", login = "1s" }}

[os.plain]
family = "generic"
channel = "none"
steps = []

[images.img]
os = "lx"
provisioner = "lab"

[images.probe]
os = "plain"
provisioner = "lab"

[computers.pc1]
address = "127.0.0.1"
port = {port}
"#,
        dir = s.dir.display(),
    ));
    s.write("key", "not a key\n");
    s.write(
        "ann.pub",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFakeFakeFake ann\n",
    );
    let record = serde_json::json!({
        "command": "provision", "image": "img", "reservation": "r-1", "attempt": 1, "of": 1,
        "phase": "post-load", "result": "done", "message": null, "exit_code": 0,
        "started": "2026-12-06T09:00:00Z", "updated": "2026-12-06T09:01:00Z", "pid": 1
    });
    s.write("state/computers/pc1/last-run.json", &record.to_string());
    s
}

#[test]
fn grant_exit_codes_without_a_guest() {
    let s = offline("grant-codes");
    let grant = |args: &[&str]| {
        Test::with(&s)
            .args(&["grant", "pc1", "--user", "ann", "--from", "192.0.2.1"])
            .args(args)
            .run()
    };
    // Another reservation's computer: 64 unless --force.
    grant(&["--reservation", "r-2"])
        .code(64)
        .stderr_has("last provisioned for reservation r-1, not reservation r-2");
    // Bad names and addresses: 64 before anything runs.
    grant(&["--reservation", "r-1", "--user", "root"]).code(64);
    Test::with(&s)
        .args(&[
            "grant",
            "pc1",
            "--reservation",
            "r-1",
            "--user",
            "ann",
            "--from",
            "any",
        ])
        .run()
        .code(64)
        .stderr_has("not an ADDRESS or ADDRESS/PREFIX");
    // Not answering: 75, so a scheduler tries again; nothing recorded,
    // and the password kept before it was to be set is the one a later
    // grant replaces.
    let key = s.path("ann.pub").display().to_string();
    let r = grant(&["--reservation", "r-1", "--ssh-key", &key]);
    r.code(75);
    assert!(!s.path("state/computers/pc1/grants.json").exists());
    grant(&["--reservation", "r-2", "--force", "--ssh-key", &key]).code(75);
    // Revoke with nothing recorded is done without a login.
    Test::with(&s)
        .args(&["revoke", "pc1", "--reservation", "r-1"])
        .run()
        .code(0);
    // ... and with a user named, it goes to the computer: 75 here.
    Test::with(&s)
        .args(&["revoke", "pc1", "--reservation", "r-1", "--user", "ann"])
        .run()
        .code(75);
    // A family that makes no accounts: 1.
    let record = std::fs::read_to_string(s.path("state/computers/pc1/last-run.json"))
        .expect("record")
        .replace("\"image\":\"img\"", "\"image\":\"probe\"");
    s.write("state/computers/pc1/last-run.json", &record);
    grant(&["--reservation", "r-1"])
        .code(1)
        .stderr_has("makes no accounts");
}

#[test]
fn a_computer_that_is_not_reloaded_keeps_its_grants_until_they_are_revoked() {
    // The lab provisioner loads nothing: the accounts would stay, so the
    // next reservation's provision revokes them on the computer first,
    // and keeps the records when it cannot.
    let s = offline("grant-lab");
    let grant = serde_json::json!([{
        "reservation": "r-1", "user": "ann", "from": ["192.0.2.1"], "admin": false,
        "keys": 1, "address": "127.0.0.1", "port": 22,
        "since": "2026-12-06T09:02:00Z", "updated": "2026-12-06T09:02:00Z"
    }]);
    s.write("state/computers/pc1/grants.json", &grant.to_string());
    let r = Test::with(&s)
        .provision("pc1", "img")
        .args(&["--reservation", "r-2", "--attempts", "1"])
        .run();
    r.event_log_has("revoking the earlier grants first: ann (reservation r-1)")
        .event_log_has("the earlier grants stay recorded");
    assert!(s.path("state/computers/pc1/grants.json").exists());
    // status exits 1: the run it shows failed (the computer did not answer).
    Test::with(&s)
        .args(&["status", "pc1"])
        .run()
        .code(1)
        .stdout_has("pc1: ann (reservation r-1) from 192.0.2.1");
}

#[test]
fn grant_waits_for_no_one_a_locked_computer_is_73() {
    let s = offline("grant-lock");
    let lock = s.path("state/computers/pc1/lock");
    std::fs::write(&lock, "").expect("lock file");
    // --no-fork: the lock is the process's own, and ends with it.
    let mut holder = std::process::Command::new("flock")
        .args(["-x", "--no-fork"])
        .arg(&lock)
        .args(["sleep", "60"])
        .spawn()
        .expect("flock");
    // The holder writes no pid: reimage says locked once it gave it time.
    let r = Test::with(&s)
        .args(&[
            "grant",
            "pc1",
            "--reservation",
            "r-1",
            "--user",
            "ann",
            "--from",
            "192.0.2.1",
        ])
        .run();
    let _ = holder.kill();
    let _ = holder.wait();
    r.code(73);
    Test::with(&s)
        .args(&["revoke", "pc1", "--reservation", "r-1"])
        .run()
        .code(0);
}

/// Windows over WinRM against the stand-in (tests/standins: a German
/// Windows 7, whose groups have German names): a local account in Remote
/// Desktop Users by SID, Administrators only with --admin, RDP by a rule
/// of its own scoped to the user's addresses, every grant a fresh
/// password kept in the state directory and never in a command line; a
/// revoke takes it all back.
#[test]
fn windows_grant_and_revoke_against_the_winrm_standin() {
    use testbed::winrm::Standin;
    let s = Scratch::new("grant-win");
    let held = Port::new();
    // Two interfaces, as a VCL site wires its computers: the user connects
    // to the public one.
    let w = Standin::start(
        &held,
        "Image-Pw-4711",
        &[
            "--locale",
            "de-DE",
            "--interfaces",
            "Ethernet 3=00-50-56-00-08-03,Ethernet 2=00-50-56-00-07-03",
        ],
    );
    let pw = s.write("secrets/winrm-pw", "Image-Pw-4711\n");
    s.config(&format!(
        r#"
[os.win]
family = "windows-6"
channel = "winrm"
port = {port}
user = "Administrator"
password_file = "{pw}"
stable_for = "1s"
timeouts = {{ initial-wait = "0s", response = "20s", login = "20s" }}

[images.w7]
os = "win"
virtual = true

[computers.pcw]
address = "127.0.0.1"
provisioner = "lab"
mac = "00:50:56:00:07:03"
public_mac = "00:50:56:00:08:03"
public_address = "192.0.2.10/24"
public_gateway = "192.0.2.1"
"#,
        port = held.num(),
        pw = pw.display()
    ));
    Test::with(&s)
        .provision("pcw", "w7")
        .args(&["--reservation", "r-9"])
        .run()
        .code(0);
    // The first boot set a fresh Administrator password; grant logs in
    // with it (the kept one) while the login file still holds the image's.
    let admin = std::fs::read_to_string(s.path("state/computers/pcw/administrator-password"))
        .expect("the Administrator password");
    let grant = |args: &[&str]| {
        Test::with(&s)
            .arg("--json")
            .args(&["grant", "pcw", "--reservation", "r-9", "--user", "ann"])
            .args(args)
            .run()
    };
    let pw_file = s.path("state/computers/pcw/users/ann-password");
    let member = |st: &serde_json::Value, sid: &str| {
        st["groups"][sid]["members"]
            .as_array()
            .expect("members")
            .iter()
            .any(|m| m == "ann")
    };
    let rule = |st: &serde_json::Value| {
        st["firewall_rules"]
            .as_array()
            .expect("rules")
            .iter()
            .find(|r| r["name"] == "reimage user ann")
            .cloned()
    };

    let r = grant(&["--from", "192.0.2.0/24"]);
    r.code(0);
    let a = access(&r);
    assert_eq!((&a["protocol"], &a["port"]), (&"rdp".into(), &3389.into()));
    assert_eq!(a["address"], "192.0.2.10", "the public interface's address");
    assert_eq!(a["password_file"], pw_file.display().to_string());
    let first = std::fs::read_to_string(&pw_file).expect("ann's password");
    let st = w.state();
    assert_eq!(st["accounts"]["ann"], first.trim(), "{st}");
    assert_eq!(
        st["groups"]["S-1-5-32-555"]["name"],
        "Remotedesktopbenutzer"
    );
    assert!(member(&st, "S-1-5-32-555"), "{st}");
    assert!(!member(&st, "S-1-5-32-544"), "{st}");
    let r1 = rule(&st).expect("ann's rule");
    assert_eq!(
        (
            &r1["localport"],
            &r1["protocol"],
            &r1["remoteip"],
            &r1["dir"]
        ),
        (
            &"3389".into(),
            &"tcp".into(),
            &"192.0.2.0/24".into(),
            &"in".into()
        )
    );
    // The lockdown's rule stays as it was.
    assert!(
        st["firewall_rules"]
            .as_array()
            .expect("rules")
            .iter()
            .any(|r| r["name"] == "reimage RDP"),
        "{st}"
    );

    // A second grant adds an address, makes ann an administrator, and
    // gives a fresh password.
    let r = grant(&["--from", "198.51.100.7", "--admin"]);
    r.code(0);
    let second = std::fs::read_to_string(&pw_file).expect("ann's password");
    assert_ne!(first, second);
    let st = w.state();
    assert_eq!(st["accounts"]["ann"], second.trim());
    assert!(member(&st, "S-1-5-32-544"), "{st}");
    assert_eq!(
        rule(&st).expect("ann's rule")["remoteip"],
        "192.0.2.0/24,198.51.100.7"
    );
    let commands = st["commands"].to_string();
    for p in [&first, &second, &admin] {
        assert!(!commands.contains(p.trim()), "a password in a command line");
        assert!(!r.stdout.contains(p.trim()));
    }
    assert!(
        !std::fs::read_to_string(w.state_file())
            .expect("state")
            .contains("grant-ann.txt\""),
        "the uploaded password file is gone"
    );
    Test::with(&s)
        .args(&["status", "pcw"])
        .run()
        .code(0)
        .stdout_has("pcw: ann (reservation r-9, admin) from 192.0.2.0/24, 198.51.100.7");

    // Revoke: the rule, the sessions, the account, the password file.
    let r = Test::with(&s)
        .arg("--json")
        .args(&["revoke", "pcw", "--reservation", "r-9"])
        .run();
    r.code(0);
    let st = w.state();
    assert_eq!(st["accounts"]["ann"], serde_json::Value::Null, "{st}");
    assert!(!member(&st, "S-1-5-32-555") && !member(&st, "S-1-5-32-544"));
    assert!(rule(&st).is_none(), "{st}");
    assert_eq!(
        st["logoffs"],
        serde_json::json!([{"user": "ann", "sessions": 0}])
    );
    assert!(!pw_file.exists());
    // Twice: nothing left, on the computer either.
    let r = Test::with(&s)
        .arg("--json")
        .args(&["revoke", "pcw", "--reservation", "r-9", "--user", "ann"])
        .run();
    r.code(0);
    assert_eq!(
        step_messages(&json_events(&r), "revoke-user"),
        ["ok: no user ann: nothing to remove"]
    );
    // Another reservation's computer: 64.
    Test::with(&s)
        .args(&["grant", "pcw", "--reservation", "r-10", "--user", "bob"])
        .args(&["--from", "192.0.2.1"])
        .run()
        .code(64)
        .stderr_has("not reservation r-10");
}
