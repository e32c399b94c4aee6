//! `grant` and `revoke`: a reservation's user on the computer, through the
//! OS module (which knows how its family makes accounts and opens its way
//! in), with the grants recorded per computer in the state directory. The
//! caller holds the computer's lock and has the run's events open, as for
//! every run; this floor keeps the records and the exit codes (0 done, 75
//! the computer does not answer, 1 the OS refused).

use std::time::SystemTime;

use crate::config::Plan;
use crate::config::network::Addressing;
use crate::error::Error;
use crate::os::{OsModule, Request, Revoke, WayIn};
use crate::outcome::Outcome;
use crate::report::{EventResult, Reporter, rfc3339};
use crate::secret::Secret;
use crate::state::{Grant, StateDir};

/// What one `grant` asks for, checked.
pub struct Ask {
    /// The reservation.
    pub reservation: String,
    /// The account.
    pub user: String,
    /// Public key lines, from every `--ssh-key` file.
    pub keys: Vec<String>,
    /// This grant's addresses.
    pub from: Vec<String>,
    /// An administrator.
    pub admin: bool,
}

/// Where the user connects. A computer with a public interface: the
/// address its OS showed there after the last first boot (the run's
/// record), else its static `public_address`, on the protocol's own port
/// (reimage's NAT forwards are on the private side). Otherwise the
/// computer's address and, for SSH, the port reimage's own channel
/// reaches sshd on (a NAT may forward it); for RDP its port.
fn connect_to(state: &StateDir, plan: &Plan, way: WayIn) -> (String, u16) {
    if let Some(nic) = &plan.computer.public {
        let seen = state
            .read_last_run(&plan.computer.name)
            .and_then(|r| r.public_address)
            .map(|a| a.split('/').next().unwrap_or_default().to_string())
            .filter(|a| !a.is_empty());
        let set = match &nic.addressing {
            Addressing::Static(s) => Some(s.address.to_string()),
            Addressing::Dhcp => None,
        };
        if let Some(a) = seen.or(set) {
            return (a, way.port);
        }
    }
    let port = match way.protocol {
        "ssh" => plan.port().unwrap_or(way.port),
        _ => way.port,
    };
    (plan.computer.address.clone(), port)
}

/// The exit code of an outcome, with its events.
fn finish(report: &Reporter, o: Outcome, done: &str) -> i32 {
    let code = o.exit_code();
    match o {
        Outcome::Done => report.finish(code, EventResult::Done, done),
        Outcome::Retry(e) => report.finish(code, EventResult::Retry, &format!("{e:#}")),
        Outcome::Fatal(e) => report.finish(code, EventResult::Fatal, &format!("{e:#}")),
    }
    code
}

/// `a`'s addresses after `earlier`'s, each once.
fn union(earlier: &[String], new: &[String]) -> Vec<String> {
    let mut all = earlier.to_vec();
    for s in new {
        if !all.contains(s) {
            all.push(s.clone());
        }
    }
    all
}

/// The addresses of every grant in `grants` but `except`'s, then `more`,
/// each once: what a scope shared by every user holds.
fn every_from(grants: &[Grant], except: Option<&str>, more: &[String]) -> Vec<String> {
    let mut all = Vec::new();
    for g in grants.iter().filter(|g| Some(g.user.as_str()) != except) {
        all = union(&all, &g.from);
    }
    union(&all, more)
}

/// The addresses of the grants in `grants` whose users are not in `users`.
fn kept_from(grants: &[Grant], users: &[String]) -> Vec<String> {
    let mut all = Vec::new();
    for g in grants.iter().filter(|g| !users.contains(&g.user)) {
        all = union(&all, &g.from);
    }
    all
}

/// The TCP ports a grant opens: the family's way in, then the profile's
/// `ports`, each once.
fn ports(plan: &Plan, way: WayIn) -> Vec<u16> {
    let mut ports = vec![way.port];
    ports.extend(plan.profile.ports.iter().filter(|p| **p != way.port));
    ports
}

/// `reimage grant`, under the computer's lock.
pub fn grant(
    plan: &Plan,
    os: &dyn OsModule,
    state: &StateDir,
    report: &Reporter,
    ask: &Ask,
) -> Result<i32, Error> {
    let computer = &plan.computer.name;
    let mut grants = state.read_grants(computer).map_err(Error::Fatal)?;
    let earlier = grants.iter().position(|g| g.user == ask.user);
    if let Some(g) = earlier.map(|i| &grants[i])
        && g.reservation != ask.reservation
    {
        return Err(Error::Usage(format!(
            "user `{}` on {computer} has access for reservation {}: revoke it first (reimage revoke {computer} --reservation {})",
            ask.user, g.reservation, g.reservation
        )));
    }
    let Some(way) = os.way_in() else {
        return Ok(finish(
            report,
            Outcome::Fatal(anyhow::anyhow!(
                "{computer}: OS profile `{}` makes no accounts: grant needs a linux or windows profile",
                plan.profile.name
            )),
            "",
        ));
    };
    let from = union(
        earlier.map(|i| grants[i].from.as_slice()).unwrap_or(&[]),
        &ask.from,
    );
    let had_keys = earlier.is_some_and(|i| grants[i].keys > 0);
    let password = if way.password_always || (ask.keys.is_empty() && !had_keys) {
        Some(new_password(state, computer, &ask.user)?)
    } else {
        None
    };
    let ports = ports(plan, way);
    let every_from = every_from(&grants, Some(&ask.user), &from);
    let r = Request {
        reservation: &ask.reservation,
        user: &ask.user,
        keys: &ask.keys,
        from: &from,
        ports: &ports,
        every_from: &every_from,
        admin: ask.admin,
        password: password.as_ref(),
    };
    let o = os.grant(plan, &r, report);
    if !matches!(o, Outcome::Done) {
        return Ok(finish(report, o, ""));
    }
    let g = record(state, plan, way, ask, earlier.map(|i| &grants[i]), from);
    match earlier {
        Some(i) => grants[i] = g.clone(),
        None => grants.push(g.clone()),
    }
    state
        .write_grants(computer, &grants)
        .map_err(|e| Error::Fatal(e.context("cannot record the grant")))?;
    report.access(&g, way.protocol);
    Ok(finish(
        report,
        Outcome::Done,
        &format!(
            "{} may log in to {computer} over {} at {} port {} from {}{}",
            g.user,
            way.protocol,
            g.address,
            g.port,
            g.from.join(", "),
            match &g.password_file {
                Some(f) => format!("; password in {}", f.display()),
                None => String::new(),
            }
        ),
    ))
}

/// The record of a grant that was done: `earlier`'s, updated.
fn record(
    state: &StateDir,
    plan: &Plan,
    way: WayIn,
    ask: &Ask,
    earlier: Option<&Grant>,
    from: Vec<String>,
) -> Grant {
    let computer = &plan.computer.name;
    let now = rfc3339(SystemTime::now());
    let (address, port) = connect_to(state, plan, way);
    let has_pw = state.has_user_password(computer, &ask.user);
    Grant {
        reservation: ask.reservation.clone(),
        user: ask.user.clone(),
        from,
        admin: ask.admin,
        keys: earlier.map_or(0, |g| g.keys) + ask.keys.len(),
        password_file: has_pw.then(|| state.user_password_file(computer, &ask.user)),
        address,
        port,
        since: earlier.map_or(now.clone(), |g| g.since.clone()),
        updated: now,
    }
}

/// A fresh random password for `user`, kept in its file (0600, atomic)
/// before it is set anywhere, so it is never lost.
fn new_password(state: &StateDir, computer: &str, user: &str) -> Result<Secret, Error> {
    let s = Secret::random(16).map_err(Error::Fatal)?;
    state
        .write_user_password(computer, user, format!("{}\n", s.expose()).as_bytes())
        .map_err(|e| Error::Fatal(e.context(format!("cannot keep the password of {user}"))))?;
    Ok(s)
}

/// `reimage revoke`, under the computer's lock: the reservation's users
/// (or `only`), whether recorded or not (a grant cut short is not).
pub fn revoke(
    plan: &Plan,
    os: &dyn OsModule,
    state: &StateDir,
    report: &Reporter,
    reservation: &str,
    only: Option<&str>,
) -> Result<i32, Error> {
    let computer = &plan.computer.name;
    let grants = state.read_grants(computer).map_err(Error::Fatal)?;
    let mut users: Vec<String> = grants
        .iter()
        .filter(|g| g.reservation == reservation && only.is_none_or(|u| u == g.user))
        .map(|g| g.user.clone())
        .collect();
    if let Some(u) = only {
        if let Some(g) = grants
            .iter()
            .find(|g| g.user == u && g.reservation != reservation)
        {
            return Err(Error::Usage(format!(
                "user `{u}` on {computer} has access for reservation {}, not {reservation}",
                g.reservation
            )));
        }
        if users.is_empty() {
            users.push(u.to_string());
        }
    }
    if users.is_empty() {
        return Ok(finish(
            report,
            Outcome::Done,
            &format!("reservation {reservation} has no access on {computer}: nothing to revoke"),
        ));
    }
    let keep_from = kept_from(&grants, &users);
    let r = Revoke {
        users: &users,
        keep_from: &keep_from,
    };
    let o = os.revoke(plan, &r, report);
    if !matches!(o, Outcome::Done) {
        return Ok(finish(report, o, ""));
    }
    forget(state, computer, &users).map_err(Error::Fatal)?;
    Ok(finish(
        report,
        Outcome::Done,
        &format!("access of {} to {computer} revoked", users.join(", ")),
    ))
}

/// Drops `users`' grants and password files.
fn forget(state: &StateDir, computer: &str, users: &[String]) -> anyhow::Result<()> {
    let grants = state.read_grants(computer)?;
    let keep: Vec<Grant> = grants
        .into_iter()
        .filter(|g| !users.contains(&g.user))
        .collect();
    for u in users {
        state.remove_user_password(computer, u)?;
    }
    state.write_grants(computer, &keep)
}

/// Before a `provision` or `load`: every earlier grant goes. A load makes
/// them moot (the accounts go with the old disk), so only the records are
/// dropped; when the computer may keep its disk (`--reuse`, the lab
/// provisioner: `on_computer`) they are revoked on the computer first.
/// False when that failed: the computer must then be loaded, not reused;
/// one that is not loaded (`reloads` false) keeps the records, for a
/// later revoke.
pub fn before_provision(
    plan: &Plan,
    os: &dyn OsModule,
    state: &StateDir,
    report: &Reporter,
    on_computer: bool,
    reloads: bool,
) -> bool {
    let computer = &plan.computer.name;
    let grants = match state.read_grants(computer) {
        Ok(g) => g,
        Err(e) => {
            report.warn(&format!("{e:#}: the earlier grants are not known"));
            return !on_computer;
        }
    };
    if grants.is_empty() {
        return true;
    }
    let users: Vec<String> = grants.iter().map(|g| g.user.clone()).collect();
    let said = grants
        .iter()
        .map(|g| format!("{} (reservation {})", g.user, g.reservation))
        .collect::<Vec<_>>()
        .join(", ");
    let mut ok = true;
    if on_computer {
        report.info(&format!("revoking the earlier grants first: {said}"));
        let r = Revoke {
            users: &users,
            keep_from: &[],
        };
        match os.revoke(plan, &r, report) {
            Outcome::Done => report.info(&format!("earlier grants revoked: {said}")),
            Outcome::Retry(e) | Outcome::Fatal(e) => {
                report.warn(&format!(
                    "cannot revoke the earlier grants ({e:#}): the computer is not reused"
                ));
                ok = false;
            }
        }
    } else {
        report.info(&format!(
            "earlier grants end with this load (their accounts go with the old disk): {said}"
        ));
    }
    if !ok && !reloads {
        report.warn(&format!(
            "the earlier grants stay recorded: revoke them (reimage revoke {computer} --reservation ID) before the computer goes to another user"
        ));
        return false;
    }
    if let Err(e) = forget(state, computer, &users) {
        report.warn(&format!("cannot drop the earlier grants' records: {e:#}"));
    }
    ok
}

/// Checks what `grant` was given: the user name, the addresses, the key
/// files (read whole, public key lines only).
pub fn check_ask(
    reservation: &str,
    user: &str,
    key_files: &[std::path::PathBuf],
    from: &[String],
    admin: bool,
) -> Result<Ask, Error> {
    crate::os::check_user(user).map_err(Error::Usage)?;
    let from = from
        .iter()
        .map(|s| crate::os::check_source(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Error::Usage)?;
    let mut keys = Vec::new();
    for f in key_files {
        let text = std::fs::read_to_string(f)
            .map_err(|e| Error::Usage(format!("cannot read --ssh-key {}: {e}", f.display())))?;
        keys.extend(crate::os::key_lines(&text, &f.display().to_string()).map_err(Error::Usage)?);
    }
    Ok(Ask {
        reservation: reservation.to_string(),
        user: user.to_string(),
        keys,
        from,
        admin,
    })
}
