//! What the families' first boots share: where the lockdown opens to,
//! the new password of the administrator account, and the lines `check`
//! prints for both.

use std::path::Path;

use crate::config::Plan;
use crate::outcome::Outcome;
use crate::report::Reporter;
use crate::secret::Secret;
use crate::state::StateDir;

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
    use std::net::{ToSocketAddrs, UdpSocket};
    if !plan.profile.allow_from.is_empty() {
        return Ok(plan.profile.allow_from.clone());
    }
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
    Ok(vec![local.ip().to_string()])
}

/// The password first boot sets for `account`: the one in `fixed` (the
/// windows profile's `admin_password_file`), else a fresh random one
/// written to the account's [`StateDir::password_file`] (mode 0600,
/// atomically) before it is set, or `None` when the profile keeps the
/// image's. Events name the file, never the value.
pub fn new_password(
    plan: &Plan,
    account: Account,
    fixed: Option<&Path>,
    state: &StateDir,
    report: &Reporter,
) -> Result<Option<Secret>, Outcome> {
    let who = &plan.computer.name;
    if let Some(f) = fixed {
        let s = Secret::from_file(f, "admin_password_file")
            .map_err(|e| Outcome::Fatal(e.context(format!("{who}: first boot"))))?;
        report.info(&format!("new password: from {}", f.display()));
        return Ok(Some(s));
    }
    if !plan.profile.fresh_password {
        return Ok(None);
    }
    let s = Secret::random(16).map_err(Outcome::Fatal)?;
    let file = state.password_file(who, account.name);
    crate::state::write_private(&file, format!("{}\n", s.expose()).as_bytes())
        .map_err(|e| Outcome::Fatal(e.context(format!("{who}: cannot keep the new password"))))?;
    report.info(&format!(
        "new password: a fresh random one, in {} (mode 0600)",
        file.display()
    ));
    Ok(Some(s))
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
        "password: fresh random {name} password, written to {}",
        file.display()
    )
}

/// `check`'s line for the clock, when the profile names time servers.
pub fn time_line(plan: &Plan) -> Option<String> {
    let servers = &plan.profile.time_servers;
    (!servers.is_empty()).then(|| format!("time: synced from {}", servers.join(", ")))
}
