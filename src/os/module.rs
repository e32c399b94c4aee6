//! The OS module of one family: what every family goes through (the boot
//! id before the load, the wait sequence, the image check), calling on the
//! family for what differs.

use std::time::Duration;

use super::access::{self, Request, WayIn};
use super::sequence::Sequence;
use super::{Family, OsModule, PowerReset, boot_id, channel};
use crate::attempt::Attempt;
use crate::config::{ChannelKind, OsLines, Plan};
use crate::control::Channel;
use crate::outcome::Outcome;
use crate::report::Reporter;
use crate::state::StateDir;

/// The OS module of `family`.
pub struct Module {
    /// The family whose module this is.
    pub family: &'static dyn Family,
}

impl OsModule for Module {
    fn before_load(&self, plan: &Plan, state: &StateDir, report: &Reporter) {
        let id = self.old_boot_id(plan, state, report);
        match &id {
            Some(id) => report.info(&format!("boot id before load: {id}")),
            None if plan.profile.channel.kind() == ChannelKind::None => {}
            None => report
                .info("no boot id before load (computer not answering): boot-id check skipped"),
        }
        if let Err(e) = state.write_boot_id(&plan.computer.name, id.as_deref()) {
            report.warn(&format!("cannot record the boot id: {e:#}"));
        }
        // The load brings the image's password back: the one first boot
        // set is tried after it from now on, until a first boot sets one.
        if let Some(a) = self.family.account()
            && let Err(e) = state.password_before_load(&plan.computer.name, a.name)
        {
            report.warn(&format!("cannot set the kept password aside: {e:#}"));
        }
    }

    fn identify(&self, plan: &Plan, check_image: bool) -> Result<String, String> {
        let chk = &plan.image.config.image_check;
        if check_image && chk.is_none() {
            return Err(format!(
                "image `{}` has no image_check, so nothing proves what the computer runs",
                plan.image.name
            ));
        }
        let mut ch = channel::open(plan, self.family.account())
            .map_err(|e| format!("cannot open the channel: {e:#}"))?;
        if !ch.logs_in() {
            return Err("channel none: no login to read a boot id over".into());
        }
        let r = self.identify_over(ch.as_mut(), plan, check_image);
        ch.disconnect();
        r
    }

    fn vet(&self, plan: &Plan) -> Result<(), crate::config::KeyError> {
        self.family.vet(plan)
    }

    fn describe(&self, plan: &Plan) -> OsLines {
        OsLines {
            channel: channel::describe(plan),
            first_boot: self.family.first_boot_lines(plan),
        }
    }

    fn post_load(
        &self,
        plan: &Plan,
        attempt: Attempt,
        power: &dyn PowerReset,
        state: &StateDir,
        report: &Reporter,
    ) -> Outcome {
        let mut ch = match channel::open(plan, self.family.account()) {
            Ok(c) => c,
            Err(e) => return Outcome::Fatal(e),
        };
        let mut seq = Sequence {
            plan,
            attempt,
            power,
            report,
            channel: ch.as_mut(),
            boot_before: state.read_boot_id(&plan.computer.name),
            family: self.family,
            reboot_from: None,
        };
        let r = seq.run().and_then(|_| seq.check_image()).and_then(|_| {
            if !plan.profile.first_boot {
                return Ok(());
            }
            self.family
                .vet(plan)
                .map_err(|e| Outcome::Fatal(anyhow::anyhow!("{}", e.message)))?;
            self.family.first_boot(&mut seq, state)
        });
        ch.disconnect();
        match r {
            Ok(()) => Outcome::Done,
            Err(o) => {
                if let Some(a) = self.family.account() {
                    super::first_boot::note_image_password(plan, a, state, report);
                }
                o
            }
        }
    }

    fn way_in(&self) -> Option<WayIn> {
        self.family.way_in()
    }

    fn grant(&self, plan: &Plan, r: &Request, report: &Reporter) -> Outcome {
        self.access(plan, report, |a| self.family.grant(a, r))
    }

    fn revoke(&self, plan: &Plan, r: &crate::os::Revoke, report: &Reporter) -> Outcome {
        self.access(plan, report, |a| self.family.revoke_all(a, r))
    }
}

impl Module {
    /// `f` over the channel when the family makes accounts.
    fn access(
        &self,
        plan: &Plan,
        report: &Reporter,
        f: impl FnOnce(&mut crate::os::actions::Actions) -> Result<(), Outcome>,
    ) -> Outcome {
        if self.family.way_in().is_none() {
            return access::unsupported(self.family.name(), plan);
        }
        access::over_channel(plan, self.family.account(), report, f)
    }

    /// The running OS's boot id, when it answers quickly; the family's
    /// before-load runs on it. Over a scratch known-hosts file: the old
    /// OS's key must not be trusted for the new one.
    fn old_boot_id(&self, plan: &Plan, state: &StateDir, report: &Reporter) -> Option<String> {
        let scratch = state.known_hosts_before_load(&plan.computer.name);
        let mut ch = match channel::open_with(plan, self.family.account(), Some(scratch)) {
            Ok(ch) if ch.logs_in() => ch,
            Ok(_) => return None,
            Err(e) => {
                report.warn(&format!("cannot open the channel before the load: {e:#}"));
                return None;
            }
        };
        let t = plan.profile.connect_timeout.min(Duration::from_secs(5));
        let id = ch
            .login(t)
            .ok()
            .and_then(|_| boot_id(ch.as_mut(), self.family, t).ok());
        if id.is_some() {
            self.family.before_load(plan, ch.as_mut(), report);
        }
        ch.disconnect();
        id
    }

    /// Logs in over `ch`, reads the boot id and, with `check_image`, runs
    /// the image's check.
    fn identify_over(
        &self,
        ch: &mut dyn Channel,
        plan: &Plan,
        check_image: bool,
    ) -> Result<String, String> {
        let t = plan.profile.connect_timeout;
        ch.login(t).map_err(|e| format!("no login: {e}"))?;
        let id = boot_id(ch, self.family, t.max(Duration::from_secs(5)))
            .map_err(|e| format!("no boot id: {e}"))?;
        let Some(chk) = plan
            .image
            .config
            .image_check
            .as_ref()
            .filter(|_| check_image)
        else {
            return Ok(id);
        };
        let re = regex::Regex::new(&chk.expect).map_err(|e| format!("image_check: {e}"))?;
        let out = ch
            .run(
                &chk.command,
                plan.profile.command_timeout.min(Duration::from_secs(60)),
            )
            .map_err(|e| format!("image_check `{}`: {e}", chk.command.join(" ")))?;
        if out.status == 0 && re.is_match(out.stdout.trim()) {
            Ok(id)
        } else {
            Err(format!(
                "the image check failed: `{}` printed `{}`, expected /{}/",
                chk.command.join(" "),
                out.stdout.trim(),
                chk.expect
            ))
        }
    }
}
