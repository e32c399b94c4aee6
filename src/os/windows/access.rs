//! `grant` and `revoke` on Windows, over WinRM: a local account in Remote
//! Desktop Users, in Administrators only for an administrator (Apache
//! VCL's Windows.pm create_user and add_user_to_group, with the groups
//! found by their well-known SIDs instead of their localized names, and
//! the password from an uploaded file instead of a command line), and RDP
//! (with the profile's `ports`) opened to the user's addresses; then all
//! of it taken back, the user's profile folder too (VCL's logoff_users
//! and delete_user). The scripts are VBScript (`grant-user.vbs`,
//! `revoke-user.vbs`): Windows Script Host, ADSI and WMI ship with every
//! Windows since XP.
//!
//! The way in: Vista and later, a `netsh advfirewall` rule of the user's
//! own, scoped to its addresses; on a computer with a public interface
//! bound to the address Windows shows there at grant time (`localip`: a
//! new DHCP address needs a new grant). XP/2003 has only `netsh
//! firewall`, one exception per port with one scope for every user: the
//! port's scope is the union of every grant's addresses on the computer,
//! on the public interface (`interface=`) when there is one, else with
//! the lockdown's `allow_from` in the Remote Desktop exception; a revoke
//! narrows it to the grants that stay, and closes it when none does.

use super::commands::{DIR, Windows, argv, del_command, rdp_service, toolset};
use super::network;
use crate::os::access::{Request, Revoke, WayIn};
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

/// `user`'s rule replaced by one that lets TCP `ports` in from `from`,
/// to the `local` addresses only when given.
fn open_rule(user: &str, ports: &[u16], from: &[String], local: Option<&[String]>) -> Vec<String> {
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
    if let Some(l) = local {
        v.push(format!("localip={}", l.join(",")));
    }
    v
}

/// The name of the XP port exception reimage keeps for `port`'s users.
fn xp_name(port: u16) -> String {
    format!("name=reimage-users-{port}")
}

/// XP/2003's commands that give every port of `ports` the scope `users`
/// (every grant's addresses): on the `public` interface by `interface=`
/// (its own exception, closed there when `users` is empty); without one,
/// RDP through the Remote Desktop exception, whose scope is the
/// lockdown's `allow_from` and `users` together, and the other ports by
/// exceptions for every interface.
fn xp_scopes(
    ports: &[u16],
    users: &[String],
    public: Option<&str>,
    allow_from: &[String],
) -> Vec<Vec<String>> {
    let mut v = Vec::new();
    for &port in ports {
        let iface = public.map(|n| format!("interface=\"{n}\""));
        if public.is_none() && port == WAY_IN.port {
            let mut all = allow_from.to_vec();
            all.extend(users.iter().filter(|u| !allow_from.contains(u)).cloned());
            v.push(rdp_service(&all));
            continue;
        }
        let p = format!("port={port}");
        let mut cmd = if users.is_empty() {
            // Nothing to delete is an error exit: the line exits 0.
            argv(&[
                "cmd",
                "/c",
                "netsh",
                "firewall",
                "delete",
                "portopening",
                "protocol=TCP",
                &p,
            ])
        } else {
            let mut c = argv(&[
                "netsh",
                "firewall",
                "set",
                "portopening",
                "protocol=TCP",
                &p,
            ]);
            c.push(xp_name(port));
            c.extend(argv(&["mode=ENABLE", "scope=CUSTOM"]));
            c.push(format!("addresses={}", users.join(",")));
            c
        };
        cmd.extend(iface);
        if users.is_empty() {
            cmd.extend(argv(&[">nul", "2>&1", "&", "exit", "0"]));
        }
        v.push(cmd);
    }
    v
}

/// The public interface as Windows shows it now, when the computer has
/// one: read at grant time, so a rule is bound to the address it has now.
/// No address there is a retry (a DHCP lease may come) when the rule
/// needs one (`need_address`; XP's exceptions take the interface's name).
fn public_now(a: &mut Actions, need_address: bool) -> Result<Option<network::Shown>, Outcome> {
    let Some(nic) = a.plan.computer.public.clone() else {
        return Ok(None);
    };
    let who = a.plan.computer.name.clone();
    let nics = network::shown(a, "find-public-interface")?;
    match network::public_nic(&nics, &nic.mac, need_address) {
        Ok(n) => Ok(Some(n.clone())),
        Err(why) => Err(Outcome::Retry(anyhow::anyhow!(
            "{who}: {why}: the user's way in is bound to the public interface's address"
        ))),
    }
}

/// XP/2003: every port of `ports` scoped to `users` (every grant's
/// addresses), as [`xp_scopes`] says, as step `step`.
fn xp_way_in(a: &mut Actions, step: &str, ports: &[u16], users: &[String]) -> Result<(), Outcome> {
    let public = public_now(a, false)?;
    let allow_from = if public.is_none() {
        crate::os::first_boot::allow_from(a.plan).map_err(Outcome::Fatal)?
    } else {
        Vec::new()
    };
    for cmd in xp_scopes(
        ports,
        users,
        public.as_ref().map(|n| n.name.as_str()),
        &allow_from,
    ) {
        a.run(step, &cmd, Outcome::Fatal)?;
    }
    Ok(())
}

/// The ports a revoke closes: RDP's, then the profile's `ports`.
fn ports_of(a: &Actions) -> Vec<u16> {
    let mut ports = vec![WAY_IN.port];
    ports.extend(a.plan.profile.ports.iter().filter(|p| **p != WAY_IN.port));
    ports
}

/// VBScript files go up with Windows line ends.
fn vbs(file: &str) -> String {
    file.replace('\n', "\r\n")
}

/// `grant`: the account, then its way in.
pub fn grant(f: Windows, a: &mut Actions, r: &Request) -> Result<(), Outcome> {
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
    if toolset(f).legacy_firewall {
        return xp_way_in(a, "open-rdp", r.ports, r.every_from);
    }
    let public = public_now(a, true)?;
    let local: Option<Vec<String>> =
        public.map(|n| n.addresses.iter().map(|x| x.to_string()).collect());
    a.run(
        "open-rdp",
        &open_rule(r.user, r.ports, r.from, local.as_deref()),
        Outcome::Fatal,
    )?;
    Ok(())
}

/// `revoke` of every user of `r`. XP/2003: the shared scopes narrowed to
/// the grants that stay first, then each account; later Windows: each
/// user's own rule, then its account.
pub fn revoke_all(f: Windows, a: &mut Actions, r: &Revoke) -> Result<(), Outcome> {
    if toolset(f).legacy_firewall {
        let ports = ports_of(a);
        xp_way_in(a, "close-rdp", &ports, r.keep_from)?;
        return r.users.iter().try_for_each(|u| remove_account(f, a, u));
    }
    r.users.iter().try_for_each(|u| revoke(f, a, u))
}

/// `revoke`: the way in closed first, then the account.
pub fn revoke(f: Windows, a: &mut Actions, user: &str) -> Result<(), Outcome> {
    a.run("close-rdp", &delete_rule(user), Outcome::Fatal)?;
    remove_account(f, a, user)
}

/// The account logged off and removed, with its profile folder: through
/// WMI's Win32_UserProfile on Vista and later, through the ProfileList
/// key on XP/2003 (which has no Win32_UserProfile).
fn remove_account(f: Windows, a: &mut Actions, user: &str) -> Result<(), Outcome> {
    let mkdir = format!("if not exist {DIR} mkdir {DIR}");
    a.run("mkdir-state", &argv(&["cmd", "/c", &mkdir]), Outcome::Retry)?;
    let script = format!(r"{DIR}\revoke-user.vbs");
    a.upload(
        "upload-revoke-script",
        vbs(REVOKE_VBS).as_bytes(),
        &script,
        0o600,
    )?;
    let xp = if f == Windows::V5 { "1" } else { "0" };
    a.run(
        "revoke-user",
        &argv(&["cscript", "//nologo", &script, user, xp]),
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
            open_rule("ann", &[3389, 8080], &from, None).join(" "),
            r#"cmd /c netsh advfirewall firewall delete rule name="reimage user ann" dir=in >nul 2>&1 & netsh advfirewall firewall add rule name="reimage user ann" dir=in action=allow enable=yes protocol=TCP localport=3389,8080 remoteip=10.1.0.0/16,192.0.2.5"#
        );
        assert!(
            open_rule("ann", &[3389], &from, Some(&["192.0.2.10".to_string()]))
                .join(" ")
                .ends_with("remoteip=10.1.0.0/16,192.0.2.5 localip=192.0.2.10")
        );
        assert_eq!(
            delete_rule("ann").join(" "),
            r#"cmd /c netsh advfirewall firewall delete rule name="reimage user ann" dir=in >nul 2>&1 & exit 0"#
        );
    }

    #[test]
    fn xp_scopes_are_every_users_addresses_per_port() {
        let users = ["192.0.2.7".to_string(), "10.9.0.0/16".to_string()];
        let allow = ["10.1.0.0/16".to_string()];
        let lines = |users: &[String], public| -> Vec<String> {
            xp_scopes(&[3389, 8080], users, public, &allow)
                .iter()
                .map(|c| c.join(" "))
                .collect()
        };
        assert_eq!(
            lines(&users, Some("Public")),
            [
                r#"netsh firewall set portopening protocol=TCP port=3389 name=reimage-users-3389 mode=ENABLE scope=CUSTOM addresses=192.0.2.7,10.9.0.0/16 interface="Public""#,
                r#"netsh firewall set portopening protocol=TCP port=8080 name=reimage-users-8080 mode=ENABLE scope=CUSTOM addresses=192.0.2.7,10.9.0.0/16 interface="Public""#,
            ]
        );
        assert_eq!(
            lines(&[], Some("Public"))[0],
            r#"cmd /c netsh firewall delete portopening protocol=TCP port=3389 interface="Public" >nul 2>&1 & exit 0"#
        );
        assert_eq!(
            lines(&users, None),
            [
                "netsh firewall set service type=remotedesktop mode=enable scope=custom addresses=10.1.0.0/16,192.0.2.7,10.9.0.0/16",
                "netsh firewall set portopening protocol=TCP port=8080 name=reimage-users-8080 mode=ENABLE scope=CUSTOM addresses=192.0.2.7,10.9.0.0/16",
            ]
        );
        assert_eq!(
            lines(&[], None)[0],
            "netsh firewall set service type=remotedesktop mode=enable scope=custom addresses=10.1.0.0/16"
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
        assert!(REVOKE_VBS.contains("FROM Win32_UserProfile WHERE SID = '"));
        assert!(REVOKE_VBS.contains(r"CurrentVersion\ProfileList\"));
    }
}
