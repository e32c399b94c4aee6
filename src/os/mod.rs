//! OS modules: wait for the loaded computer's OS to come up, prove it is the
//! image that was asked for, and do its first configuration.
//!
//! One family, one place: [`generic`], [`linux`] and [`windows`] (5, 6 and
//! 10), each a type that owns what reimage knows of that OS: its defaults,
//! wait sequence and the keys it takes (the [`FamilyRules`] config resolves
//! profiles with), the plan `check` prints, its boot id, before-load and
//! first boot ([`Family`]). What every family goes through is in `module`
//! (the boot id before the load, the wait sequence, the image check); the
//! wait sequence itself is data, run by `sequence`; the first boots share
//! `first_boot`, `actions` and `keys`.

mod access;
mod actions;
mod channel;
mod first_boot;
mod generic;
mod hooks;
mod keys;
mod linux;
mod module;
mod sequence;
mod windows;

#[cfg(test)]
mod tests;

/// What a run says every time about the profile's channel: settings that
/// give up a protection on purpose (WinRM Basic in clear, HTTPS unchecked).
pub use channel::warnings as channel_warnings;

/// `grant` and `revoke`: what they ask of a family, and their checks.
pub use access::{Request, Revoke, WayIn, check_source, check_user, key_lines};

use std::time::Duration;

use crate::attempt::Attempt;
use crate::config::{Families, FamilyRules, OsLines, Plan};
use crate::control::Channel;
use crate::outcome::Outcome;
use crate::report::Reporter;
use crate::state::StateDir;

/// The one thing an OS module may ask of the provisioning side: reset the
/// computer's power, within the current attempt. The runner hands it over
/// bound to the real attempt; `None` when the provisioner cannot reset.
pub trait PowerReset {
    /// Resets the computer's power.
    fn power_reset(&self, report: &Reporter) -> Option<Outcome>;
}

/// Brings up the OS on a loaded computer.
pub trait OsModule {
    /// Called before the provisioner loads: remembers the running OS's boot
    /// id, when it answers quickly, so post-load can tell the new OS from the
    /// old one.
    fn before_load(&self, _plan: &Plan, _state: &StateDir, _report: &Reporter) {}

    /// Logs in and reads the boot id, for preload records and `provision
    /// --reuse`; with `check_image`, also runs the image's `image_check`
    /// and wants it to match. Err says why not, in a sentence.
    fn identify(&self, plan: &Plan, check_image: bool) -> Result<String, String>;

    /// Lines for `reimage check`: the channel's settings beyond the login,
    /// and what the first boot will do.
    fn describe(&self, plan: &Plan) -> OsLines;

    /// What the OS would refuse of `plan`, as a key error for `check`
    /// (78); a run's first boot refuses it too.
    fn vet(&self, _plan: &Plan) -> Result<(), crate::config::KeyError> {
        Ok(())
    }

    /// Waits for the OS, checks it, configures it. `power` resets the
    /// computer, for profiles that do so on a failed wait. Retry when a
    /// reload could help: the runner turns a retry on the last attempt into
    /// fatal.
    fn post_load(
        &self,
        plan: &Plan,
        attempt: Attempt,
        power: &dyn PowerReset,
        state: &StateDir,
        report: &Reporter,
    ) -> Outcome;

    /// How this family's users get in (SSH, RDP); `None` when it makes no
    /// accounts.
    fn way_in(&self) -> Option<WayIn>;

    /// Gives a reservation's user access, over the channel: the account
    /// (made when missing), its keys or password, administrator or not,
    /// and its way in opened to `r.from` only. Retry when the computer
    /// does not answer; fatal when the OS refuses.
    fn grant(&self, plan: &Plan, r: &Request, report: &Reporter) -> Outcome;

    /// Takes `users`' access back: the way in closed, their sessions
    /// ended, their accounts removed. Idempotent.
    fn revoke(&self, plan: &Plan, r: &Revoke, report: &Reporter) -> Outcome;
}

/// One OS family: what it tells the configuration ([`FamilyRules`]: its
/// defaults, wait sequence and keys) and what it does on the computer.
trait Family: FamilyRules {
    /// The command that prints the OS's boot id: a new value on every boot.
    fn boot_id_command(&self) -> Vec<String>;

    /// The boot id in the output of [`Family::boot_id_command`].
    fn boot_id_from(&self, stdout: &str) -> Option<String> {
        Some(stdout.trim().to_string()).filter(|s| !s.is_empty())
    }

    /// The command that prints how far the OS's own setup is, for
    /// `setup-done` steps; `None` for a family without one (config refuses
    /// the step there).
    fn setup_state_command(&self) -> Option<Vec<String>> {
        None
    }

    /// Ok (what it says) when the output of
    /// [`Family::setup_state_command`] says setup is complete; Err (what it
    /// says) when not yet.
    fn setup_state(&self, _stdout: &str) -> Result<String, String> {
        Err(format!("family {} has no setup state", self.name()))
    }

    /// Before a load, over a channel logged in to the old OS: what the
    /// family undoes there (best effort).
    fn before_load(&self, _plan: &Plan, _ch: &mut dyn Channel, _report: &Reporter) {}

    /// The account whose password the first boot sets and the channel
    /// logs in with when its user is that account ([`channel::passwords`]);
    /// `None` where the channel does not follow it.
    fn account(&self) -> Option<first_boot::Account> {
        None
    }

    /// Refuses, for `check` (78 at the key) and before a run's first
    /// boot, what this family's OS would refuse of `plan` (a computer
    /// name Windows does not take).
    fn vet(&self, _plan: &Plan) -> Result<(), crate::config::KeyError> {
        Ok(())
    }

    /// What `reimage check` says the first boot will do, one line each.
    fn first_boot_lines(&self, plan: &Plan) -> Vec<String>;

    /// The first configuration, over the channel of `seq` (whose reboot
    /// steps it may use), once the wait sequence and the image check
    /// passed.
    fn first_boot(&self, seq: &mut sequence::Sequence, state: &StateDir) -> Result<(), Outcome>;

    /// How the family's users get in; `None`: it makes no accounts, and
    /// `grant` refuses.
    fn way_in(&self) -> Option<WayIn> {
        None
    }

    /// Grants `r` over the actions' channel (logged in).
    fn grant(&self, a: &mut actions::Actions, _r: &Request) -> Result<(), Outcome> {
        Err(access::unsupported(self.name(), a.plan))
    }

    /// Revokes `user` over the actions' channel (logged in).
    fn revoke(&self, a: &mut actions::Actions, _user: &str) -> Result<(), Outcome> {
        Err(access::unsupported(self.name(), a.plan))
    }

    /// Revokes every user of `r`: one by one, unless the family shares
    /// something between its users (Windows XP's firewall scopes).
    fn revoke_all(&self, a: &mut actions::Actions, r: &Revoke) -> Result<(), Outcome> {
        r.users.iter().try_for_each(|u| self.revoke(a, u))
    }
}

/// Every family, in the order messages list them.
static FAMILIES: [&dyn Family; 5] = [
    &generic::Generic,
    &linux::Linux,
    &windows::Windows::V5,
    &windows::Windows::V6,
    &windows::Windows::V10,
];

/// The families, for the configuration: the top floor hands them to
/// `config::load`. A profile that names no family gets [`generic`].
pub fn families() -> Families {
    Families {
        all: FAMILIES.iter().map(|f| *f as &dyn FamilyRules).collect(),
        default: &generic::Generic,
    }
}

/// The OS module of the plan's profile: its family's.
pub fn build(plan: &Plan) -> Box<dyn OsModule> {
    Box::new(module::Module {
        family: family(plan.profile.family),
    })
}

/// The family the configuration resolved `rules` to.
fn family(rules: &dyn FamilyRules) -> &'static dyn Family {
    FAMILIES
        .iter()
        .copied()
        .find(|f| f.name() == rules.name())
        .expect("the configuration resolves families from os::families()")
}

/// Reads the boot id of `family` over `ch`.
fn boot_id(
    ch: &mut dyn Channel,
    family: &dyn Family,
    timeout: Duration,
) -> Result<String, crate::control::ChannelError> {
    let out = ch.run(&family.boot_id_command(), timeout)?;
    match family.boot_id_from(&out.stdout) {
        Some(id) if out.status == 0 => Ok(id),
        _ => Err(crate::control::ChannelError::Protocol(anyhow::anyhow!(
            "boot id command exited {}: {}{}",
            out.status,
            out.stdout.trim(),
            out.stderr.trim()
        ))),
    }
}
