//! Profiles resolved against the real families: their defaults laid
//! under the `[os.NAME]` keys.

use std::path::Path;
use std::time::Duration;

use crate::config::{self, ChannelSettings, Plan, Probe, Wait, resolve};

/// The plan for computer `pc` and image `img` of a config whose OS
/// profile `p` has `os` keys and whose computer has `computer` keys.
fn plan(os: &str, computer: &str) -> Plan {
    let text = format!(
        "[os.p]\n{os}\n[images.img]\nos = \"p\"\nprovisioner = \"lab\"\n\
         [computers.pc]\naddress = \"10.0.0.7\"\n{computer}\n"
    );
    let l = config::parse(
        Path::new("t.toml"),
        text,
        &["lab", "qemu"],
        super::families(),
    )
    .expect("config parses");
    resolve(&l, "pc", "img", Path::new("/state"), None).expect("plan resolves")
}

#[test]
fn the_channel_port_has_one_default_and_one_override() {
    let cases = [
        ("family = \"linux\"", "", Some(22)),
        ("family = \"windows-6\"", "", Some(5985)),
        ("family = \"windows-6\"\nhttps = true", "", Some(5986)),
        ("family = \"linux\"\nchannel = \"winrm\"", "", Some(5985)),
        ("family = \"windows-10\"\nport = 15985", "", Some(15985)),
        ("family = \"linux\"", "port = 2222", Some(2222)),
        ("family = \"generic\"", "", None),
        ("family = \"generic\"\nport = 80", "", Some(80)),
        ("family = \"generic\"", "port = 8080", Some(8080)),
    ];
    for (os, computer, want) in cases {
        assert_eq!(plan(os, computer).port(), want, "{os} / {computer}");
    }
}

#[test]
fn channel_settings_carry_only_their_channel() {
    let p = plan(
        "family = \"windows-6\"\nhttps = true\ninsecure = true\nuser = \"admin\"",
        "",
    );
    let ChannelSettings::Winrm(w) = &p.profile.channel else {
        panic!("{:?}", p.profile.channel)
    };
    assert!(w.https && w.insecure && w.user == "admin" && w.port == 5986);
    let p = plan("family = \"linux\"\nhost_keys = \"strict\"", "");
    let ChannelSettings::Ssh(s) = &p.profile.channel else {
        panic!("{:?}", p.profile.channel)
    };
    assert_eq!(s.host_keys.as_deref(), Some("strict"));
    assert_eq!(s.known_hosts, Path::new("/state/known_hosts"));
    assert_eq!((s.user.as_str(), s.port), ("root", 22));
}

#[test]
fn steps_resolve_to_their_kind() {
    let p = plan(
        "family = \"linux\"\ncloud_init = true\ntimeouts = { banner = \"7s\" }",
        "",
    );
    let kinds: Vec<&str> = p.profile.steps.iter().map(|s| s.kind().name()).collect();
    assert_eq!(kinds, ["port", "banner", "login", "command"]);
    let Wait::Poll(Probe::Banner { port: None, regex }, limits) = &p.profile.steps[1].wait else {
        panic!("{:?}", p.profile.steps[1])
    };
    assert!(regex.is_match("SSH-2.0-OpenSSH"));
    assert_eq!(limits.timeout, Duration::from_secs(7));
    let Wait::Poll(Probe::Command { command, regex }, _) = &p.profile.steps[3].wait else {
        panic!("{:?}", p.profile.steps[3])
    };
    assert_eq!(command[0], "cloud-init");
    assert!(regex.as_ref().is_some_and(|r| r.is_match("status: done")));
    let p = plan(
        "family = \"generic\"\nsteps = [{ wait = \"sleep\", timeout = \"3s\" }]",
        "",
    );
    assert!(matches!(p.profile.steps[0].wait, Wait::Sleep(d) if d == Duration::from_secs(3)));
}

#[test]
fn every_family_config_resolves_to_is_an_os_family() {
    let families = super::families();
    assert_eq!(
        families.names(),
        "generic, linux, windows-5, windows-6, windows-10"
    );
    for rules in &families.all {
        assert_eq!(super::family(*rules).name(), rules.name());
    }
    assert_eq!(families.default.name(), "generic");
}

#[test]
fn winrm_defaults_to_negotiate_and_carries_its_pin() {
    use crate::control::winrm::auth::Auth;
    use crate::control::winrm::pin::Thumbprint;
    let winrm = |p: &Plan| match &p.profile.channel {
        ChannelSettings::Winrm(w) => w.clone(),
        other => panic!("{other:?}"),
    };
    let summary = |p: &Plan| super::channel::describe(p).join("\n");
    let p = plan("family = \"windows-10\"", "");
    let w = winrm(&p);
    assert_eq!(
        (
            w.auth.as_deref(),
            w.allow_unencrypted,
            w.thumbprint.as_deref()
        ),
        (None, false, None)
    );
    assert_eq!(
        summary(&p),
        "winrm: auth negotiate, HTTP, every message encrypted (MS-WSMV)"
    );
    let p = plan(
        "family = \"windows-10\"\nauth = \"ntlm\"\nhttps = true\nthumbprint = \"accept-new\"",
        "",
    );
    let w = winrm(&p);
    assert_eq!(w.auth.as_deref().map(str::parse), Some(Ok(Auth::Ntlm)));
    assert_eq!(
        w.thumbprint.as_deref().map(str::parse),
        Some(Ok(Thumbprint::AcceptNew))
    );
    assert!(summary(&p).contains("accept-new"), "{}", summary(&p));
    let pin = "ab".repeat(32);
    let p = plan(
        &format!("family = \"windows-6\"\nauth = \"basic\"\nhttps = true\nthumbprint = \"{pin}\""),
        "",
    );
    let w = winrm(&p);
    assert_eq!(
        w.thumbprint.as_deref().map(str::parse),
        Some(Ok(Thumbprint::Pinned([0xAB; 32])))
    );
    assert!(
        summary(&p).contains("auth basic, HTTPS, certificate pinned to SHA-256 AB:AB:"),
        "{}",
        summary(&p)
    );
}

#[test]
fn the_channel_follows_administrator_in_any_spelling_only() {
    let admin = super::first_boot::Account {
        name: "Administrator",
    };
    for user in [
        "Administrator",
        "administrator",
        ".\\Administrator",
        "LAB-PC-0123456789\\ADMINISTRATOR",
        "lab-pc-01234567\\Administrator",
    ] {
        assert!(
            super::channel::is_account(user, &admin, "lab-pc-0123456789"),
            "{user}"
        );
    }
    for user in ["labadmin", "AD\\Administrator", "Administrator2"] {
        assert!(
            !super::channel::is_account(user, &admin, "lab-pc-0123456789"),
            "{user}"
        );
    }
}

#[test]
fn windows_keeps_fifteen_characters_and_refuses_what_rename_refuses() {
    use super::windows::{netbios_name, refused_name};
    assert_eq!(netbios_name("lab-computer-0042-b"), "lab-computer-00");
    assert_eq!(netbios_name("pc7"), "pc7");
    for ok in ["pc7", "LAB-PC-07", "lab-computer-0042-b", "7a"] {
        assert_eq!(refused_name(ok), None, "{ok}");
    }
    for (bad, why) in [
        ("lab.pc7", "`.`"),
        ("lab_pc7", "`_`"),
        ("12345", "all digits"),
        ("abcdefghijklmn-xyz", "end in a hyphen"),
    ] {
        let m = refused_name(bad).unwrap_or_default();
        assert!(m.contains(why), "{bad}: {m}");
    }
}
