//! `grant` and `revoke` on Linux, over SSH: the account with a home, its
//! keys and password, sudo only for an administrator (Apache VCL's
//! Linux.pm create_user and grant_administrative_access), SSH opened to
//! the user's addresses; then all of it taken back (VCL's delete_user:
//! the sessions ended with pkill, userdel). The programs are files of
//! this folder, run as `sh -c PROGRAM sh ARGS...`.

use crate::os::access::{Request, WayIn};
use crate::os::actions::Actions;
use crate::outcome::Outcome;

use super::first_boot::{run_file, sh};

/// Makes or updates the account (see the file's header).
const GRANT_USER: &str = include_str!("grant-user.sh");

/// Locks the account, ends its processes, removes it and its home.
const REVOKE_USER: &str = include_str!("revoke-user.sh");

/// Replaces the firewall rules tagged for one user with accepts from its
/// sources (none: removed), in the firewall the lockdown used.
/// firewall-common.sh goes first, as in the lockdown's FIREWALL.
pub(super) const GRANT_FIREWALL: &str = concat!(
    include_str!("firewall-common.sh"),
    include_str!("grant-firewall.sh")
);

/// SSH, the port sshd listens on in the computer.
pub const WAY_IN: WayIn = WayIn {
    protocol: "ssh",
    port: 22,
    password_always: false,
};

/// Where the uploaded files go for the programs to read and delete.
const DIR: &str = "/var/lib/reimage";

/// The firewall rules' tag for `user`.
pub fn tag(user: &str) -> String {
    format!("reimage-user-{user}")
}

/// `grant`: the account, then its way in.
pub fn grant(a: &mut Actions, r: &Request) -> Result<(), Outcome> {
    a.run(
        "mkdir-state",
        &sh(r#"mkdir -p "$1""#, &[DIR]),
        Outcome::Retry,
    )?;
    // Named after this run, so two runs never share a file.
    let pid = std::process::id();
    let keys = if r.keys.is_empty() {
        String::new()
    } else {
        let f = format!("{DIR}/grant-keys.{pid}");
        a.upload(
            "upload-keys",
            format!("{}\n", r.keys.join("\n")).as_bytes(),
            &f,
            0o600,
        )?;
        f
    };
    let pw = match r.password {
        None => String::new(),
        Some(p) => {
            let f = format!("{DIR}/grant-password.{pid}");
            let line = format!("{}:{}\n", r.user, p.expose());
            if let Err(o) = a.upload("upload-password", line.as_bytes(), &f, 0o600) {
                remove(a, &[&keys]);
                return Err(o);
            }
            f
        }
    };
    let comment = format!("reimage reservation {}", printable(r.reservation));
    let admin = if r.admin { "1" } else { "0" };
    let argv = sh(GRANT_USER, &[r.user, admin, &comment, &keys, &pw]);
    if let Err(o) = a.run("grant-user", &argv, Outcome::Fatal) {
        // The program deletes them on every exit; a channel that broke
        // before it ran leaves them here.
        remove(a, &[&keys, &pw]);
        return Err(o);
    }
    let ports: Vec<String> = r.ports.iter().map(u16::to_string).collect();
    let mut args = Vec::new();
    // On the public interface when the computer has one.
    if let Some(nic) = &a.plan.computer.public {
        args.extend(["-i".to_string(), nic.mac.clone()]);
    }
    args.extend([ports.join(","), tag(r.user)]);
    args.extend(r.from.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_file(a, "open-ssh", "grant-firewall.sh", GRANT_FIREWALL, &args)?;
    Ok(())
}

/// `revoke`: the way in closed first, then the account. The rules go by
/// their tag whatever interface they are bound to: no `-i`, so a public
/// interface that is gone does not keep them open.
pub fn revoke(a: &mut Actions, user: &str) -> Result<(), Outcome> {
    let port = WAY_IN.port.to_string();
    let t = tag(user);
    run_file(
        a,
        "close-ssh",
        "grant-firewall.sh",
        GRANT_FIREWALL,
        &[&port, &t],
    )?;
    a.run("revoke-user", &sh(REVOKE_USER, &[user]), Outcome::Fatal)?;
    Ok(())
}

/// Best effort: removes the uploaded `files` that are there.
fn remove(a: &mut Actions, files: &[&str]) {
    let files: Vec<&str> = files.iter().copied().filter(|f| !f.is_empty()).collect();
    if !files.is_empty() {
        let _ = a.ch.run(&sh(r#"rm -f "$@""#, &files), a.timeout);
    }
}

/// The reservation id as the account's comment (GECOS) takes it: no `:`
/// or `,`, which split that field.
fn printable(id: &str) -> String {
    id.chars()
        .map(|c| if matches!(c, ':' | ',') { '_' } else { c })
        .collect()
}
