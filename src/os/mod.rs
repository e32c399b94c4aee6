//! OS modules: wait for the loaded computer's OS to come up, prove it is the
//! image that was asked for, and do its first configuration. The family
//! (linux, windows-5/6/10, generic) decides the wait sequence, the boot-id
//! command and the first-boot actions; the sequence itself is data.

mod actions;
pub mod channel;
mod linux;
mod sequence;

mod windows;

use std::time::Duration;

use crate::attempt::Attempt;
use crate::config::{Family, Plan};
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
}

/// The OS module of the plan's profile.
pub fn build(plan: &Plan) -> Box<dyn OsModule> {
    Box::new(Module {
        family: plan.profile.family,
    })
}

/// The command that prints the OS's boot id: a new value on every boot.
/// Windows families ask what their stock install ships (wmic before
/// Windows 10, PowerShell from 10 on): see `windows::toolset`.
pub fn boot_id_command(f: Family) -> Vec<String> {
    if f.is_windows() {
        return windows::boot_id_command(f);
    }
    ["cat", "/proc/sys/kernel/random/boot_id"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Reads the boot id over `ch`.
pub fn boot_id(
    ch: &mut dyn Channel,
    f: Family,
    timeout: Duration,
) -> Result<String, crate::control::ChannelError> {
    let out = ch.run(&boot_id_command(f), timeout)?;
    let id = if f.is_windows() {
        windows::boot_id_from(f, &out.stdout)
    } else {
        Some(out.stdout.trim().to_string()).filter(|s| !s.is_empty())
    };
    match id {
        Some(id) if out.status == 0 => Ok(id),
        _ => Err(crate::control::ChannelError::Protocol(anyhow::anyhow!(
            "boot id command exited {}: {}{}",
            out.status,
            out.stdout.trim(),
            out.stderr.trim()
        ))),
    }
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

/// The password first boot sets for Administrator / root: the profile's
/// `admin_password_file` (windows), else a fresh random one written to
/// STATE_DIR/computers/NAME/ (mode 0600, atomically) before it is set, or
/// `None` when the profile keeps the image's. Events name the file, never
/// the value.
pub fn new_password(
    plan: &Plan,
    state: &StateDir,
    report: &Reporter,
) -> Result<Option<crate::secret::Secret>, Outcome> {
    let p = &plan.profile;
    let who = &plan.computer.name;
    if let (Some(f), true) = (&p.admin_password_file, p.family.is_windows()) {
        let s = crate::secret::Secret::from_file(f, "admin_password_file")
            .map_err(|e| Outcome::Fatal(e.context(format!("{who}: first boot"))))?;
        report.info(&format!("new password: from {}", f.display()));
        return Ok(Some(s));
    }
    if !p.fresh_password {
        return Ok(None);
    }
    let s = crate::secret::Secret::random(16).map_err(Outcome::Fatal)?;
    let file = state
        .computer_dir(who)
        .join(crate::config::password_file_name(p.family));
    crate::state::write_private(&file, format!("{}\n", s.expose()).as_bytes())
        .map_err(|e| Outcome::Fatal(e.context(format!("{who}: cannot keep the new password"))))?;
    report.info(&format!(
        "new password: a fresh random one, in {} (mode 0600)",
        file.display()
    ));
    Ok(Some(s))
}

struct Module {
    family: Family,
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
                if id.is_some() && self.family.is_windows() && plan.profile.first_boot {
                    windows::before_load(plan, ch.as_mut(), report);
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
        let mut seq = sequence::Sequence {
            plan,
            attempt,
            power,
            report,
            channel: ch.as_deref_mut(),
            boot_before: before,
        };
        let r = seq.run().and_then(|_| seq.check_image()).and_then(|_| {
            if !plan.profile.first_boot || seq.channel.is_none() {
                return Ok(());
            }
            match self.family {
                Family::Linux => {
                    let Some(ch) = seq.channel.as_deref_mut() else {
                        return Ok(());
                    };
                    linux::first_boot(plan, attempt, ch, state, report)
                }
                f if f.is_windows() => windows::first_boot(plan, attempt, &mut seq, state, report),
                _ => Ok(()),
            }
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
