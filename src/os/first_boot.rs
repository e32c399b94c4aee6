//! What the families' first boots share: where the lockdown opens to,
//! the new password of the administrator account, and the lines `check`
//! prints for both.

use std::path::Path;

use crate::config::Plan;
use crate::outcome::Outcome;
use crate::report::Reporter;
use crate::secret::Secret;
use crate::state::{Password, StateDir};

/// The administrator account a family's first boot gives a new password
/// (each family names its own: linux's root, windows' Administrator). The
/// state directory keeps a fresh one under the account's name
/// ([`StateDir::password_file`]).
#[derive(Debug, Clone, Copy)]
pub struct Account {
    /// Its name (root, Administrator).
    pub name: &'static str,
}

/// Where the first boot opens RDP/SSH and ping to: the profile's
/// `allow_from`, or else the address this management node uses toward the
/// computer (the source of its packets there, as the kernel routes them).
pub fn allow_from(plan: &Plan) -> anyhow::Result<Vec<String>> {
    if !plan.profile.allow_from.is_empty() {
        return Ok(plan.profile.allow_from.clone());
    }
    Ok(vec![own_address(plan)?])
}

/// Where the first boot opens the channel's own port to: `allow_from`
/// and this management node's address toward the computer, so that the
/// lockdown never shuts out the next run (behind NAT the computer sees
/// another address: then `allow_from` must name it).
pub fn control_from(plan: &Plan) -> anyhow::Result<Vec<String>> {
    let mut from = plan.profile.allow_from.clone();
    let own = own_address(plan)?;
    if !from.contains(&own) {
        from.push(own);
    }
    Ok(from)
}

/// The address this management node uses toward the computer (the source
/// of its packets there, as the kernel routes them).
fn own_address(plan: &Plan) -> anyhow::Result<String> {
    use std::net::{ToSocketAddrs, UdpSocket};
    let port = plan.port().unwrap_or(22);
    let who = &plan.computer.name;
    let target = (plan.computer.address.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| anyhow::anyhow!("{who}: cannot resolve {}: {e}", plan.computer.address))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{who}: {} has no address", plan.computer.address))?;
    let bind = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    // A UDP connect sends nothing: it only asks the kernel for the route.
    let local = UdpSocket::bind(bind)
        .and_then(|s| s.connect(target).and(s.local_addr()))
        .map_err(|e| {
            anyhow::anyhow!(
                "{who}: cannot tell this node's address toward {target}: {e}; set allow_from in the OS profile"
            )
        })?;
    Ok(local.ip().to_string())
}

/// The password first boot sets for `account`: the one in `fixed` (the
/// windows profile's `admin_password_file`), else a fresh random one, or
/// `None` when the profile keeps the image's. Either is written to the
/// account's pending file ([`Password::Pending`], mode 0600, atomically)
/// before it is set; [`password_taken`] makes it the kept one once the OS
/// took it, so the kept file never holds a password the computer does not
/// have. Events name the files, never the value.
pub fn new_password(
    plan: &Plan,
    account: Account,
    fixed: Option<&Path>,
    state: &StateDir,
    report: &Reporter,
) -> Result<Option<Secret>, Outcome> {
    let who = &plan.computer.name;
    let s = match fixed {
        Some(f) => {
            let s = Secret::from_file(f, "admin_password_file")
                .map_err(|e| Outcome::Fatal(e.context(format!("{who}: first boot"))))?;
            report.info(&format!("new password: from {}", f.display()));
            s
        }
        None if !plan.profile.fresh_password => return Ok(None),
        None => Secret::random(16).map_err(Outcome::Fatal)?,
    };
    let pending = state.password_path(who, account.name, Password::Pending);
    state
        .write_password(who, account.name, Password::Pending, &s)
        .map_err(|e| Outcome::Fatal(e.context(format!("{who}: cannot keep the new password"))))?;
    if fixed.is_none() {
        report.info(&format!(
            "new password: a fresh random one, in {} (mode 0600) until the computer takes it",
            pending.display()
        ));
    }
    Ok(Some(s))
}

/// The OS took the new password of `account`: the pending file becomes
/// the kept one, which later logins use ([`super::channel`]). A failure
/// to rename is fatal: the next run would not know the password.
pub fn password_taken(
    plan: &Plan,
    account: Account,
    state: &StateDir,
    report: &Reporter,
) -> Result<(), Outcome> {
    let who = &plan.computer.name;
    state.commit_password(who, account.name).map_err(|e| {
        Outcome::Fatal(e.context(format!(
            "{who}: {} took its new password, but it cannot be kept: it is in {}",
            account.name,
            state
                .password_path(who, account.name, Password::Pending)
                .display()
        )))
    })?;
    report.info(&format!(
        "{} took its new password, kept in {}",
        account.name,
        state.password_file(who, account.name).display()
    ));
    Ok(())
}

/// `check`'s line for what [`new_password`] will do.
pub fn password_line(plan: &Plan, account: Account, fixed: Option<&Path>) -> String {
    let name = account.name;
    if let Some(f) = fixed {
        return format!("password: {name} set from {}", f.display());
    }
    if !plan.profile.fresh_password {
        return format!("password: {name} keeps the image's");
    }
    let file = StateDir::new(&plan.state_dir).password_file(&plan.computer.name, name);
    format!(
        "password: fresh random {name} password, written to {} once the computer took it (.new until then)",
        file.display()
    )
}

/// `check`'s line for the clock, when the profile names time servers.
pub fn time_line(plan: &Plan) -> Option<String> {
    let servers = &plan.profile.time_servers;
    (!servers.is_empty()).then(|| format!("time: synced from {}", servers.join(", ")))
}

/// After a post-load that failed: when the first boot would have set a
/// new password for `account` and none is kept (a load brought the
/// image's back, or no first boot ever set one), an event says that the
/// image's password is still active, so that an admin knows the
/// computer is open to whoever knows it.
pub fn note_image_password(plan: &Plan, account: Account, state: &StateDir, report: &Reporter) {
    let p = &plan.profile;
    let sets = p.first_boot && (p.fresh_password || p.admin_password_file.is_some());
    let who = &plan.computer.name;
    if !sets
        || !matches!(
            state.read_password(who, account.name, Password::Kept),
            Ok(None)
        )
    {
        return;
    }
    report.warn(&format!(
        "{who}: {} still has the image's password: the run ended before the first boot set a new one (a run to ready sets it)",
        account.name
    ));
}
