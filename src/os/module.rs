//! The OS module of one family: what every family goes through (the boot
//! id before the load, the wait sequence, the image check), calling on the
//! family for what differs.

use std::time::Duration;

use super::sequence::Sequence;
use super::{Family, OsModule, PowerReset, boot_id, channel};
use crate::attempt::Attempt;
use crate::config::Plan;
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
        let scratch = state
            .computer_dir(&plan.computer.name)
            .join("known_hosts.before-load");
        let id = match channel::open_with(plan, Some(scratch)) {
            Ok(Some(mut ch)) => {
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
            Ok(None) => None,
            Err(e) => {
                report.warn(&format!("cannot open the channel before the load: {e:#}"));
                None
            }
        };
        match &id {
            Some(id) => report.info(&format!("boot id before load: {id}")),
            None if matches!(
                plan.profile.channel,
                crate::config::ChannelSettings::None { .. }
            ) => {}
            None => report
                .info("no boot id before load (computer not answering): boot-id check skipped"),
        }
        if let Err(e) = state.write_boot_id(&plan.computer.name, id.as_deref()) {
            report.warn(&format!("cannot record the boot id: {e:#}"));
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
        let mut ch = match channel::open(plan) {
            Ok(Some(c)) => c,
            Ok(None) => return Err("channel none: no login to read a boot id over".into()),
            Err(e) => return Err(format!("cannot open the channel: {e:#}")),
        };
        let t = plan.profile.connect_timeout;
        let r = (|| {
            ch.login(t).map_err(|e| format!("no login: {e}"))?;
            let id = boot_id(ch.as_mut(), self.family, t.max(Duration::from_secs(5)))
                .map_err(|e| format!("no boot id: {e}"))?;
            let Some(chk) = chk.as_ref().filter(|_| check_image) else {
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
        })();
        ch.disconnect();
        r
    }

    fn describe(&self, plan: &Plan) -> Vec<String> {
        self.family.first_boot_lines(plan)
    }

    fn post_load(
        &self,
        plan: &Plan,
        attempt: Attempt,
        power: &dyn PowerReset,
        state: &StateDir,
        report: &Reporter,
    ) -> Outcome {
        let mut ch = match channel::open(plan) {
            Ok(c) => c,
            Err(e) => return Outcome::Fatal(e),
        };
        let before = state.read_boot_id(&plan.computer.name);
        let mut seq = Sequence {
            plan,
            attempt,
            power,
            report,
            channel: ch.as_deref_mut(),
            boot_before: before,
            family: self.family,
        };
        let r = seq.run().and_then(|_| seq.check_image()).and_then(|_| {
            if !plan.profile.first_boot || seq.channel.is_none() {
                return Ok(());
            }
            self.family.first_boot(&mut seq, state)
        });
        if let Some(c) = ch.as_deref_mut() {
            c.disconnect();
        }
        match r {
            Ok(()) => Outcome::Done,
            Err(o) => o,
        }
    }
}
