//! Windows' two sides and a reservation's user, end to end through the
//! built binary against the WinRM STAND-IN (tests/standins: no Windows
//! runs here): the lockdown bound to the private interface (issue 25 item
//! 4), the user's way in bound to the public one (issue 27), XP/2003's
//! shared `netsh firewall` scopes, and the profile folder a revoke
//! removes. The stand-in judges its firewall (its state's `inbound`: per
//! interface, what is open and from where, from the rules and the
//! interfaces' addresses as they are now), so the tests assert the effect
//! across runs, not the command lines.

use crate::common::{self, Scratch};
use crate::test::Test;
use testbed::port::Port;
use testbed::winrm::Standin;

const LOGIN_PW: &str = "Image-Pw-4711";

/// The private interface (MAC 00:50:56:00:07:03) and the public one
/// (00:50:56:00:08:03), named as after a Sysprep on cloned hardware and
/// the public one listed first.
const NICS: &str = "Ethernet 3=00-50-56-00-08-03,Ethernet 2=00-50-56-00-07-03";
const PRIVATE: &str = "Ethernet 2";
const PUBLIC: &str = "Ethernet 3";

/// The computer's keys naming both interfaces.
const TWO_NICS: &str = "mac = \"00:50:56:00:07:03\"\npublic_mac = \"00:50:56:00:08:03\"\n";

/// A config for computer `pcw` (127.0.0.1:`port`, lab provisioner) with
/// image `w` of OS `family` over WinRM, logging in with `login_pw`; the
/// lockdown open to 10.1.0.0/16, the users' way in with TCP 8080 too;
/// `computer` more keys of the computer.
fn config(s: &Scratch, port: u16, family: &str, login_pw: &str, computer: &str) {
    let pw = common::secret(s, "secrets/winrm-pw", &format!("{login_pw}\n"));
    s.config(&format!(
        "[os.win]\nfamily = \"{family}\"\nchannel = \"winrm\"\nport = {port}\n\
         user = \"Administrator\"\npassword_file = \"{}\"\nstable_for = \"1s\"\n\
         allow_from = [\"10.1.0.0/16\"]\nports = [8080]\n\
         timeouts = {{ initial-wait = \"0s\", response = \"20s\", login = \"20s\" }}\n\n\
         [images.w]\nos = \"win\"\nvirtual = true\nsysprep = false\n\n\
         [computers.pcw]\naddress = \"127.0.0.1\"\nprovisioner = \"lab\"\n{computer}\n",
        pw.display()
    ));
}

/// The password the last first boot set, as kept in the state dir.
fn kept_password(s: &Scratch) -> String {
    let f = s.path("state/computers/pcw/administrator-password");
    let text = std::fs::read_to_string(&f).expect("the password file in the state dir");
    text.trim_end().to_string()
}

/// What the stand-in's firewall lets in on interface `nic` to `what`
/// (`tcp/PORT`, `icmpv4:8`): the remote scopes, sorted; empty when closed.
fn open(st: &serde_json::Value, nic: &str, what: &str) -> Vec<String> {
    st["inbound"][nic][what]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect()
}

/// `grant pcw --reservation r-1 --user USER` with `args`.
fn grant(s: &Scratch, user: &str, args: &[&str]) -> crate::test::Output {
    Test::with(s)
        .args(&["grant", "pcw", "--reservation", "r-1", "--user", user])
        .args(args)
        .run()
}

/// `revoke pcw --reservation r-1 --user USER`.
fn revoke(s: &Scratch, user: &str) -> crate::test::Output {
    Test::with(s)
        .args(&["revoke", "pcw", "--reservation", "r-1", "--user", user])
        .run()
}

/// Logs on to the stand-in as `user` with the password reimage kept for
/// it, through pywinrm (a real WinRM client, as a user's own logon): what
/// makes Windows create the user's profile.
fn logon(s: &Scratch, port: u16, user: &str) {
    let pw_file = s.path(&format!("state/computers/pcw/users/{user}-password"));
    let script = "import sys, winrm\n\
        pw = open(sys.argv[3]).read().strip()\n\
        s = winrm.Session('http://127.0.0.1:%s/wsman' % sys.argv[1], auth=(sys.argv[2], pw), transport='basic')\n\
        r = s.run_cmd('hostname')\n\
        sys.exit(r.status_code)\n";
    let out = std::process::Command::new("python3")
        .args(["-c", script, &port.to_string(), user])
        .arg(&pw_file)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{user}'s logon: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The profile folder the stand-in keeps for `user`'s current SID.
fn profile(st: &serde_json::Value, user: &str) -> Option<String> {
    let sid = st["sids"][user].as_str()?;
    st["profiles"][sid].as_str().map(str::to_string)
}

/// Whether the stand-in has folder `path` (its folders are kept in lower
/// case).
fn has_dir(st: &serde_json::Value, path: &str) -> bool {
    let want = path.to_lowercase();
    st["dirs"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|d| d.as_str() == Some(want.as_str()))
}

#[test]
fn the_lockdown_stays_private_and_the_user_gets_the_public_address() {
    // A first boot on a two-NIC windows-6 computer binds RDP, ping and
    // WinRM to the private interface's address; a grant opens RDP and the
    // profile's 8080 on the public one, to the user's addresses only. A
    // later run that gives the public interface another address (DHCP)
    // leaves the grant's rule bound to the old one: the next grant binds
    // it anew.
    let s = Scratch::new("winacc-sides");
    let held = Port::new();
    let port = held.num();
    let w = Standin::start(
        &held,
        LOGIN_PW,
        &["--answer-files", "all", "--interfaces", NICS],
    );
    let static_public =
        format!("{TWO_NICS}public_address = \"192.0.2.10/24\"\npublic_gateway = \"192.0.2.1\"\n");
    config(&s, port, "windows-6", LOGIN_PW, &static_public);
    Test::with(&s)
        .args(&["check", "pcw", "--image", "w"])
        .run()
        .code(0)
        .stdout_has("on the private interface only");
    Test::with(&s)
        .provision("pcw", "w")
        .args(&["--reservation", "r-1"])
        .run()
        .code(0);
    let st = w.state();
    let winrm = format!("tcp/{port}");
    assert_eq!(
        open(&st, PRIVATE, "tcp/3389"),
        ["10.1.0.0/16"],
        "{}",
        st["inbound"]
    );
    assert_eq!(open(&st, PRIVATE, "icmpv4:8"), ["10.1.0.0/16"]);
    assert_eq!(open(&st, PRIVATE, &winrm), ["10.1.0.0/16", "127.0.0.1"]);
    for what in ["tcp/3389", "icmpv4:8", winrm.as_str(), "tcp/8080"] {
        assert!(
            open(&st, PUBLIC, what).is_empty(),
            "{what} open on the public side: {}",
            st["inbound"]
        );
    }

    grant(&s, "ann", &["--from", "203.0.113.0/24"]).code(0);
    let st = w.state();
    assert_eq!(
        open(&st, PUBLIC, "tcp/3389"),
        ["203.0.113.0/24"],
        "{}",
        st["inbound"]
    );
    assert_eq!(open(&st, PUBLIC, "tcp/8080"), ["203.0.113.0/24"]);
    assert_eq!(
        open(&st, PRIVATE, "tcp/3389"),
        ["10.1.0.0/16"],
        "the user's rule is public only"
    );
    assert!(open(&st, PRIVATE, "tcp/8080").is_empty());

    // The next run: DHCP on the public interface, another address. The
    // lockdown is bound anew; ann's rule still names 192.0.2.10.
    config(&s, port, "windows-6", &kept_password(&s), TWO_NICS);
    Test::with(&s).post_load("pcw", "w").run().code(0);
    let st = w.state();
    assert_eq!(
        st["inbound"][PUBLIC].as_object().map(|o| o.len()),
        Some(0),
        "{}",
        st["inbound"]
    );
    assert_eq!(open(&st, PRIVATE, "tcp/3389"), ["10.1.0.0/16"]);
    grant(&s, "ann", &["--from", "198.51.100.77", "--force"]).code(0);
    let st = w.state();
    assert_eq!(
        open(&st, PUBLIC, "tcp/3389"),
        ["198.51.100.77", "203.0.113.0/24"],
        "{}",
        st["inbound"]
    );
}

#[test]
fn revoke_removes_the_profile_so_the_next_user_of_the_name_gets_a_fresh_one() {
    // windows-6: grant, the user logs on (Windows makes C:\Users\ann),
    // revoke (account and profile go, through Win32_UserProfile), grant
    // again: a new account whose logon gets C:\Users\ann again, not
    // C:\Users\ann.PCW beside the old one.
    let s = Scratch::new("winacc-profile");
    let held = Port::new();
    let port = held.num();
    let w = Standin::start(&held, LOGIN_PW, &["--answer-files", "all"]);
    config(&s, port, "windows-6", LOGIN_PW, "");
    Test::with(&s)
        .provision("pcw", "w")
        .args(&["--reservation", "r-1"])
        .run()
        .code(0);
    grant(&s, "ann", &["--from", "192.0.2.7"]).code(0);
    assert_eq!(profile(&w.state(), "ann"), None, "no logon yet");
    logon(&s, port, "ann");
    let st = w.state();
    let first_sid = st["sids"]["ann"].clone();
    assert_eq!(
        profile(&st, "ann").as_deref(),
        Some(r"C:\Users\ann"),
        "{}",
        st["profiles"]
    );
    assert!(has_dir(&st, r"C:\Users\ann"));

    revoke(&s, "ann").code(0);
    let st = w.state();
    assert!(!has_dir(&st, r"C:\Users\ann"), "{}", st["dirs"]);
    assert_eq!(
        st["profiles"].as_object().map(|p| p.len()),
        Some(1),
        "Administrator's only: {}",
        st["profiles"]
    );

    grant(&s, "ann", &["--from", "192.0.2.7"]).code(0);
    logon(&s, port, "ann");
    let st = w.state();
    assert_ne!(st["sids"]["ann"], first_sid, "a new account, a new SID");
    assert_eq!(profile(&st, "ann").as_deref(), Some(r"C:\Users\ann"));
}

#[test]
fn windows_5_scopes_every_grant_on_the_public_interface_and_revoke_narrows_them() {
    // XP/2003: `netsh firewall` only. The first boot puts RDP, ping and
    // WinRM on the private interface (interface=); each port's scope on
    // the public interface is every grant's addresses together; a revoke
    // narrows it to the grants that stay and closes it after the last,
    // and removes the profile folder through the ProfileList key.
    let s = Scratch::new("winacc-xp");
    let held = Port::new();
    let port = held.num();
    let w = Standin::start(
        &held,
        LOGIN_PW,
        &[
            "--answer-files",
            "xp",
            "--no-powershell",
            "--interfaces",
            NICS,
        ],
    );
    let static_public =
        format!("{TWO_NICS}public_address = \"192.0.2.10/24\"\npublic_gateway = \"192.0.2.1\"\n");
    config(&s, port, "windows-5", LOGIN_PW, &static_public);
    Test::with(&s)
        .provision("pcw", "w")
        .args(&["--reservation", "r-1"])
        .run()
        .code(0);
    let st = w.state();
    let winrm = format!("tcp/{port}");
    assert_eq!(
        open(&st, PRIVATE, "tcp/3389"),
        ["10.1.0.0/16"],
        "{}",
        st["inbound"]
    );
    assert_eq!(
        open(&st, PRIVATE, "icmpv4:8"),
        ["any"],
        "XP's echo has no scope"
    );
    assert_eq!(open(&st, PRIVATE, &winrm), ["10.1.0.0/16", "127.0.0.1"]);
    assert_eq!(
        st["inbound"][PUBLIC].as_object().map(|o| o.len()),
        Some(0),
        "{}",
        st["inbound"]
    );

    grant(&s, "ann", &["--from", "203.0.113.0/24"]).code(0);
    grant(&s, "bob", &["--from", "198.51.100.7"]).code(0);
    let st = w.state();
    let both = ["198.51.100.7", "203.0.113.0/24"];
    assert_eq!(open(&st, PUBLIC, "tcp/3389"), both, "{}", st["inbound"]);
    assert_eq!(open(&st, PUBLIC, "tcp/8080"), both);
    assert_eq!(open(&st, PRIVATE, "tcp/3389"), ["10.1.0.0/16"]);
    assert!(st["accounts"]["bob"].is_string(), "{st}");

    logon(&s, port, "ann");
    let home = r"C:\Documents and Settings\ann";
    assert!(has_dir(&w.state(), home));
    revoke(&s, "ann").code(0);
    let st = w.state();
    assert_eq!(
        open(&st, PUBLIC, "tcp/3389"),
        ["198.51.100.7"],
        "{}",
        st["inbound"]
    );
    assert_eq!(open(&st, PUBLIC, "tcp/8080"), ["198.51.100.7"]);
    assert!(st["accounts"]["ann"].is_null());
    assert!(!has_dir(&st, home), "{}", st["dirs"]);

    revoke(&s, "bob").code(0);
    let st = w.state();
    assert_eq!(
        st["inbound"][PUBLIC].as_object().map(|o| o.len()),
        Some(0),
        "{}",
        st["inbound"]
    );
    assert_eq!(
        open(&st, PRIVATE, "tcp/3389"),
        ["10.1.0.0/16"],
        "the lockdown stays"
    );
    // The next reservation's grant starts from nothing.
    grant(&s, "cy", &["--from", "192.0.2.99"]).code(0);
    assert_eq!(open(&w.state(), PUBLIC, "tcp/3389"), ["192.0.2.99"]);
}

#[test]
fn windows_5_without_a_public_interface_shares_the_remote_desktop_scope() {
    // XP/2003 with one interface: the Remote Desktop exception's scope is
    // the lockdown's allow_from and every grant's addresses; a revoke puts
    // it back to allow_from.
    let s = Scratch::new("winacc-xp1");
    let held = Port::new();
    let port = held.num();
    let w = Standin::start(
        &held,
        LOGIN_PW,
        &["--answer-files", "xp", "--no-powershell"],
    );
    config(&s, port, "windows-5", LOGIN_PW, "");
    Test::with(&s)
        .provision("pcw", "w")
        .args(&["--reservation", "r-1"])
        .run()
        .code(0);
    grant(&s, "ann", &["--from", "203.0.113.5"]).code(0);
    let st = w.state();
    for nic in ["Ethernet", "Public"] {
        assert_eq!(
            open(&st, nic, "tcp/3389"),
            ["10.1.0.0/16", "203.0.113.5"],
            "{}",
            st["inbound"]
        );
        assert_eq!(open(&st, nic, "tcp/8080"), ["203.0.113.5"]);
    }
    revoke(&s, "ann").code(0);
    let st = w.state();
    assert_eq!(
        open(&st, "Ethernet", "tcp/3389"),
        ["10.1.0.0/16"],
        "{}",
        st["inbound"]
    );
    assert!(open(&st, "Ethernet", "tcp/8080").is_empty());
}
