//! `grant` and `revoke` on Windows, over WinRM: a local account in Remote
//! Desktop Users, in Administrators only for an administrator (Apache
//! VCL's Windows.pm create_user and add_user_to_group, with the groups
//! found by their well-known SIDs instead of their localized names, and
//! the password from an uploaded file instead of a command line), and RDP
//! opened to the user's addresses by a rule of its own; then all of it
//! taken back (VCL's logoff_users and delete_user). The scripts are
//! VBScript (`grant-user.vbs`, `revoke-user.vbs`): Windows Script Host,
//! ADSI and WMI ship with every Windows since XP.

use super::commands::{DIR, Windows, argv, del_command};
use crate::os::access::{Request, WayIn};
use crate::os::actions::Actions;
use crate::outcome::Outcome;

/// Makes or updates the account and its groups.
const GRANT_VBS: &str = include_str!("grant-user.vbs");

/// Disables the account, logs its sessions off, deletes it.
const REVOKE_VBS: &str = include_str!("revoke-user.vbs");

/// RDP; Windows wants a password always.
pub const WAY_IN: WayIn = WayIn {
    protocol: "rdp",
    port: 3389,
    password_always: true,
};

/// The name of `user`'s firewall rule: reimage's own, never a localized
/// one, so it is found by name.
fn rule(user: &str) -> String {
    format!("name=\"reimage user {user}\"")
}

/// `netsh advfirewall firewall delete rule` of `user`'s rule; no such rule
/// is no error.
fn delete_rule(user: &str) -> Vec<String> {
    let mut v = delete_then(user);
    v.extend(argv(&["exit", "0"]));
    v
}

/// `cmd /c netsh ... delete rule` of `user`'s rule, quiet, then `&`: the
/// start of a command line that goes on whatever the delete said.
fn delete_then(user: &str) -> Vec<String> {
    let mut v = argv(&[
        "cmd",
        "/c",
        "netsh",
        "advfirewall",
        "firewall",
        "delete",
        "rule",
    ]);
    v.push(rule(user));
    v.extend(argv(&["dir=in", ">nul", "2>&1", "&"]));
    v
}

/// `user`'s rule replaced by one that lets TCP `ports` in from `from`.
fn open_rule(user: &str, ports: &[u16], from: &[String]) -> Vec<String> {
    let mut v = delete_then(user);
    v.extend(argv(&["netsh", "advfirewall", "firewall", "add", "rule"]));
    v.push(rule(user));
    v.extend(argv(&[
        "dir=in",
        "action=allow",
        "enable=yes",
        "protocol=TCP",
    ]));
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    v.push(format!("localport={}", ports.join(",")));
    v.push(format!("remoteip={}", from.join(",")));
    v
}

/// Windows XP/2003 has `netsh firewall` only, with one scope per port for
/// every user: refused rather than opened wider than asked.
fn refuse_v5(f: Windows, a: &Actions) -> Result<(), Outcome> {
    if f != Windows::V5 {
        return Ok(());
    }
    Err(Outcome::Fatal(anyhow::anyhow!(
        "{}: windows-5 (XP/2003) has only `netsh firewall`, whose port openings have one scope for every user: grant and revoke need windows-6 or windows-10",
        a.plan.computer.name
    )))
}

/// VBScript files go up with Windows line ends.
fn vbs(file: &str) -> String {
    file.replace('\n', "\r\n")
}

/// `grant`: the account, then its way in.
pub fn grant(f: Windows, a: &mut Actions, r: &Request) -> Result<(), Outcome> {
    refuse_v5(f, a)?;
    let who = a.plan.computer.name.clone();
    let Some(pw) = r.password else {
        return Err(Outcome::Fatal(anyhow::anyhow!(
            "{who}: a Windows account needs a password"
        )));
    };
    let mkdir = format!("if not exist {DIR} mkdir {DIR}");
    a.run("mkdir-state", &argv(&["cmd", "/c", &mkdir]), Outcome::Retry)?;
    let script = format!(r"{DIR}\grant-user.vbs");
    a.upload(
        "upload-grant-script",
        vbs(GRANT_VBS).as_bytes(),
        &script,
        0o600,
    )?;
    let file = format!(r"{DIR}\grant-{}.txt", r.user);
    a.upload("upload-password", pw.expose().as_bytes(), &file, 0o600)?;
    let admin = if r.admin { "1" } else { "0" };
    let cmd = argv(&["cscript", "//nologo", &script, r.user, &file, admin]);
    if let Err(o) = a.run("grant-user", &cmd, Outcome::Fatal) {
        // The script deletes it first thing; one that never ran did not.
        let _ = a.ch.run(&del_command(&file), a.timeout);
        return Err(o);
    }
    a.run(
        "open-rdp",
        &open_rule(r.user, r.ports, r.from),
        Outcome::Fatal,
    )?;
    Ok(())
}

/// `revoke`: the way in closed first, then the account.
pub fn revoke(f: Windows, a: &mut Actions, user: &str) -> Result<(), Outcome> {
    refuse_v5(f, a)?;
    a.run("close-rdp", &delete_rule(user), Outcome::Fatal)?;
    let mkdir = format!("if not exist {DIR} mkdir {DIR}");
    a.run("mkdir-state", &argv(&["cmd", "/c", &mkdir]), Outcome::Retry)?;
    let script = format!(r"{DIR}\revoke-user.vbs");
    a.upload(
        "upload-revoke-script",
        vbs(REVOKE_VBS).as_bytes(),
        &script,
        0o600,
    )?;
    a.run(
        "revoke-user",
        &argv(&["cscript", "//nologo", &script, user]),
        Outcome::Fatal,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_is_reimages_own_by_port_and_remote_address() {
        let from = ["10.1.0.0/16".to_string(), "192.0.2.5".to_string()];
        assert_eq!(
            open_rule("ann", &[3389, 8080], &from).join(" "),
            r#"cmd /c netsh advfirewall firewall delete rule name="reimage user ann" dir=in >nul 2>&1 & netsh advfirewall firewall add rule name="reimage user ann" dir=in action=allow enable=yes protocol=TCP localport=3389,8080 remoteip=10.1.0.0/16,192.0.2.5"#
        );
        assert_eq!(
            delete_rule("ann").join(" "),
            r#"cmd /c netsh advfirewall firewall delete rule name="reimage user ann" dir=in >nul 2>&1 & exit 0"#
        );
    }

    #[test]
    fn the_scripts_find_groups_by_sid_and_take_no_password_in_argv() {
        for sid in ["S-1-5-32-555", "S-1-5-32-544"] {
            assert!(GRANT_VBS.contains(sid), "{sid}");
        }
        assert!(GRANT_VBS.contains("FROM Win32_Group WHERE LocalAccount = TRUE AND SID = '"));
        assert!(!GRANT_VBS.contains("WinNT://./Remote Desktop Users"));
        assert!(GRANT_VBS.contains("fso.DeleteFile path"));
        assert!(REVOKE_VBS.contains(".Delete \"user\""));
    }
}
