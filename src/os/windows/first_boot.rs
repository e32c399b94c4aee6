//! The Windows first boot, step by step, after Apache VCL's Windows
//! modules (Windows.pm, Version_5.pm, Version_6.pm post_load): the computer
//! name (reboot, check), an optional domain join (reboot, check), the
//! settings of [`commands::actions`] (Remote Desktop and the lockdown,
//! power, network, time, the scrub), activation, the image's scripts, then
//! a fresh Administrator password. The command lines and scripts are
//! [`commands`]'; this file runs them and decides what a failure means.

use super::commands::{self, Act, DIR, OnFail, RENAMED, Settings, Windows, argv};
use super::{activation, domain, network};
use crate::config::Plan;
use crate::exec::Output;
use crate::os::actions::Actions;
use crate::os::first_boot::Account;
use crate::os::sequence::Sequence;
use crate::outcome::Outcome;
use crate::state::StateDir;

/// The account whose password the Windows first boot sets.
pub const ADMINISTRATOR: Account = Account {
    name: "Administrator",
};

/// Runs the first boot of Windows `windows` over the channel of `seq`, whose reboot
/// steps it uses: the steps in the order of the module's doc.
pub fn run(windows: Windows, seq: &mut Sequence, state: &StateDir) -> Result<(), Outcome> {
    let allow_from = crate::os::first_boot::allow_from(seq.plan).map_err(Outcome::Fatal)?;
    let mut settings = settings(seq.plan, allow_from);
    let mut fb = FirstBoot {
        family: windows,
        seq,
        state,
    };
    fb.make_dir()?;
    fb.name()?;
    // Kerberos refuses a clock more than 5 minutes off: the time before
    // the domain.
    fb.time()?;
    fb.domain()?;
    settings.private = fb.private_side()?;
    fb.configure(&settings)?;
    if let Some(nic) = &fb.seq.plan.computer.public {
        super::network::configure(&mut fb.actions(), windows, nic)?;
    }
    fb.control_port(settings.private.as_ref())?;
    fb.activation()?;
    fb.scripts()?;
    fb.password()
}

/// The first boot's settings from `plan`, RDP and ping opened to
/// `allow_from`.
fn settings(plan: &Plan, allow_from: Vec<String>) -> Settings {
    Settings {
        allow_from,
        renew_dhcp: plan.computer.renew_dhcp,
        static_address: plan.computer.static_address.as_ref().map(|s| {
            let (addr, prefix) = s.address.split_once('/').unwrap_or((&s.address, "32"));
            let bits: u32 = prefix.parse().unwrap_or(32).min(32);
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            (
                s.interface.clone(),
                addr.to_string(),
                std::net::Ipv4Addr::from(mask).to_string(),
                s.gateway.clone(),
            )
        }),
        private: None,
    }
}

/// How many times the sync is tried before it costs a reload.
const RESYNC_TRIES: u32 = 3;

/// The pause between two tries of the sync.
const RESYNC_PAUSE: std::time::Duration = std::time::Duration::from_secs(2);

/// One Windows first boot in progress.
struct FirstBoot<'a, 'b> {
    /// The wait sequence: its plan, attempt, channel, events and reboots.
    seq: &'b mut Sequence<'a>,
    /// Where a fresh password is kept.
    state: &'b StateDir,
    /// Which Windows.
    family: Windows,
}

impl FirstBoot<'_, '_> {
    fn who(&self) -> String {
        self.seq.plan.computer.name.clone()
    }

    /// Actions over the sequence's channel, at its attempt.
    fn actions(&mut self) -> Actions<'_> {
        let seq = &mut *self.seq;
        Actions::new(seq.plan, seq.attempt, seq.channel, seq.report)
    }

    /// Reboots as step `name` and waits for the new boot: VCL's Windows.pm
    /// `reboot` waits 300 s at attempt 1.
    fn reboot(&mut self, name: &str) -> Result<(), Outcome> {
        let t = self.seq.attempt.scale(commands::REBOOT_TIMEOUT);
        self.seq.reboot(name, commands::reboot_command(), t)
    }

    /// reimage's folder on the computer.
    fn make_dir(&mut self) -> Result<(), Outcome> {
        let mkdir = format!("if not exist {DIR} mkdir {DIR}");
        self.actions()
            .run("mkdir-state", &argv(&["cmd", "/c", &mkdir]), Outcome::Retry)?;
        Ok(())
    }

    /// The name. A rename takes effect at the next boot only: reboot now
    /// and check, as VCL's Windows.pm post_load does after renaming.
    fn name(&mut self) -> Result<(), Outcome> {
        let who = self.who();
        // Windows keeps 15 characters of a longer name (its NetBIOS form):
        // renamed to those, and checked against them.
        let want = super::netbios_name(&who);
        let rename = commands::rename_action(self.family, &want);
        let renamed = run_act(
            &mut self.actions(),
            "set-computer-name",
            &rename,
            Outcome::Fatal,
        )?;
        if renamed {
            self.reboot("rename-reboot")?;
        }
        let out =
            self.actions()
                .run("check-computer-name", &argv(&["hostname"]), Outcome::Retry)?;
        let name = out.stdout.trim().to_string();
        if !name.eq_ignore_ascii_case(&want) {
            return Err(Outcome::Fatal(anyhow::anyhow!(
                "{who}: the computer is still named `{name}` after the rename and a reboot"
            )));
        }
        Ok(())
    }

    /// The domain: left when the profile names none, else joined after
    /// the clock ([`domain`]).
    fn domain(&mut self) -> Result<(), Outcome> {
        domain::leave_unnamed(self.family, self.seq)?;
        domain::join(self.family, self.seq)
    }

    /// The clock ([`commands::time`]), then the sync, tried
    /// [`RESYNC_TRIES`] times within the step before it costs a reload;
    /// the phase-correction limits put back after it.
    fn time(&mut self) -> Result<(), Outcome> {
        let servers = self.seq.plan.profile.time_servers.clone();
        if servers.is_empty() {
            return Ok(());
        }
        self.run_actions(commands::time(&servers))?;
        let mut a = self.actions();
        let mut last = String::new();
        for k in 1..=RESYNC_TRIES {
            let out = a.ask("time-sync", &commands::resync_command())?;
            if out.status == 0 {
                a.report.step_done(&format!("synced (try {k})"));
                let limits = commands::phase_limits(commands::PHASE_LIMIT);
                if let Err(Outcome::Retry(e) | Outcome::Fatal(e)) =
                    a.run("time-limits-restore", &limits, Outcome::Retry)
                {
                    a.report
                        .warn(&format!("{e:#} (not needed for use: going on)"));
                }
                return Ok(());
            }
            last = crate::exec::excerpt(format!("{}{}", out.stdout, out.stderr).trim(), 3);
            a.report
                .step_failed(&format!("try {k} of {RESYNC_TRIES}: {last}"));
            if k < RESYNC_TRIES {
                std::thread::sleep(RESYNC_PAUSE);
            }
        }
        // A server that does not answer may answer after a reload on
        // another network path: retry, never "going on" with a wrong clock.
        Err(Outcome::Retry(anyhow::anyhow!(
            "{}: first-boot action `time-sync`: the clock did not sync after {RESYNC_TRIES} tries: {last}",
            self.who()
        )))
    }

    /// The settings of [`commands::actions`].
    fn configure(&mut self, settings: &Settings) -> Result<(), Outcome> {
        self.run_actions(commands::actions(self.family, settings))
    }

    /// Runs `actions` in order; one that is not needed for use warns and
    /// goes on.
    fn run_actions(&mut self, actions: Vec<commands::Action>) -> Result<(), Outcome> {
        let report = self.seq.report;
        let mut a = self.actions();
        for (name, act, on_fail) in actions {
            match run_act(&mut a, name, &act, on_fail.outcome()) {
                Ok(_) => {}
                Err(Outcome::Retry(e)) if on_fail == OnFail::GoOn => {
                    report.warn(&format!("{e:#} (not needed for use: going on)"))
                }
                Err(o) => return Err(o),
            }
        }
        Ok(())
    }

    /// On a computer with a public interface: the private side the
    /// lockdown is bound to (issue 25), found now by `mac` through the
    /// interfaces Windows shows ([`network::private_side`]); `None`
    /// without a public interface (the lockdown as before: every
    /// interface). No address there is a retry: a DHCP lease may come.
    fn private_side(&mut self) -> Result<Option<network::Side>, Outcome> {
        let plan = self.seq.plan;
        let Some(public) = &plan.computer.public else {
            return Ok(None);
        };
        let who = self.who();
        let mac = plan
            .computer
            .mac
            .as_deref()
            .and_then(crate::config::network::parse_mac);
        let mut a = self.actions();
        let nics = network::shown(&mut a, "find-private-side")?;
        match network::private_side(&nics, mac.as_deref(), &public.mac, &plan.computer.address) {
            Ok((side, how)) => {
                a.report.info(&format!(
                    "{who}: the lockdown is bound to the private side ({how}): {} ({})",
                    side.names.join(", "),
                    side.addresses.join(", ")
                ));
                Ok(Some(side))
            }
            Err(why) => Err(Outcome::Retry(anyhow::anyhow!("{who}: {why}"))),
        }
    }

    /// The lockdown of the channel's own port (WinRM's): open only from
    /// `allow_from` and this node ([`crate::os::first_boot::control_from`]),
    /// on the `private` side when there is one.
    fn control_port(&mut self, private: Option<&network::Side>) -> Result<(), Outcome> {
        let Some(port) = self.seq.plan.port() else {
            return Ok(());
        };
        let from = crate::os::first_boot::control_from(self.seq.plan).map_err(Outcome::Fatal)?;
        let act = commands::control_port_action(self.family, port, &from, private);
        run_act(&mut self.actions(), "firewall-winrm", &act, Outcome::Fatal).map(|_| ())
    }

    /// Activation, when the profile asks for it: [`activation::run`].
    fn activation(&mut self) -> Result<(), Outcome> {
        let Some(act) = self.seq.plan.profile.activation.clone() else {
            return Ok(());
        };
        activation::run(&mut self.actions(), &act)
    }

    /// The image's scripts. They run before the Administrator password
    /// changes: when the channel logs in as Administrator, the new
    /// password ends it.
    fn scripts(&mut self) -> Result<(), Outcome> {
        let mut a = self.actions();
        a.hooks(&commands::hook_shell())?;
        a.scripts(DIR, '\\', commands::hook_command)
    }

    /// The new Administrator password, when the profile sets one: uploaded
    /// as a file the command deletes first thing.
    fn password(&mut self) -> Result<(), Outcome> {
        let (plan, report) = (self.seq.plan, self.seq.report);
        let fixed = plan.profile.admin_password_file.as_deref();
        let new =
            crate::os::first_boot::new_password(plan, ADMINISTRATOR, fixed, self.state, report);
        let Some(pw) = new? else {
            return Ok(());
        };
        let family = self.family;
        let mut a = self.actions();
        let script = format!(r"{DIR}\set-password.vbs");
        if !commands::toolset(family).powershell {
            a.upload(
                "upload-password-script",
                commands::password_script("Administrator").as_bytes(),
                &script,
                0o600,
            )?;
        }
        let remote = format!(r"{DIR}\admin-password.txt");
        a.upload(
            "upload-admin-password",
            pw.expose().as_bytes(),
            &remote,
            0o600,
        )?;
        let cmd = commands::password_command(family, "Administrator", &remote, &script);
        run_removing(&mut a, "set-admin-password", &cmd, Outcome::Fatal, &remote)?;
        crate::os::first_boot::password_taken(plan, ADMINISTRATOR, self.state, report)
    }
}

/// Runs `cmd` as action `name`; the command deletes the uploaded secret
/// `file` first thing, and should it fail (or not run at all) the file is
/// deleted here, so no secret stays behind on the computer.
fn run_removing(
    a: &mut Actions,
    name: &str,
    cmd: &[String],
    on_fail: fn(anyhow::Error) -> Outcome,
    file: &str,
) -> Result<(), Outcome> {
    let r = a.run(name, cmd, on_fail);
    if r.is_err() {
        let _ = a.ch.run(&commands::del_command(file), a.timeout);
    }
    r.map(|_| ())
}

/// Runs one command of an action, reporting its output; a channel error
/// becomes an outcome.
fn exec(a: &mut Actions, name: &str, cmd: &[String]) -> Result<Output, Outcome> {
    let who = a.plan.computer.name.clone();
    let out = a.ch.run(cmd, a.timeout).map_err(|e| {
        a.report.step_failed(&e.to_string());
        e.into_outcome(format!("{who}: first-boot action `{name}`"))
    })?;
    a.report.output(&cmd.join(" "), &out);
    Ok(out)
}

/// Ends step `name` as failed with `why`: the outcome `on_fail` makes.
fn failed(a: &Actions, name: &str, why: String, on_fail: fn(anyhow::Error) -> Outcome) -> Outcome {
    let m = format!(
        "{}: first-boot action `{name}`: {why}",
        a.plan.computer.name
    );
    a.report.step_failed(&m);
    on_fail(anyhow::anyhow!(m))
}

/// `exited N: what it said`, for a command that failed.
fn exited(out: &Output) -> String {
    let text = format!("{}{}", out.stdout.trim(), out.stderr.trim());
    format!("exited {}: {}", out.status, crate::exec::excerpt(&text, 5))
}

/// Runs an action as one step; Ok(true) when it changed something that
/// takes effect at the next boot (a rename).
fn run_act(
    a: &mut Actions,
    name: &str,
    act: &Act,
    on_fail: fn(anyhow::Error) -> Outcome,
) -> Result<bool, Outcome> {
    match act {
        Act::Run(cmd) => a
            .run(name, cmd, on_fail)
            .map(|o| o.stdout.contains(RENAMED)),
        Act::XpPower => xp_power(a, name, on_fail).map(|_| false),
        Act::Refuse(why) => {
            a.report.step(name, Some(a.timeout));
            Err(failed(a, name, why.clone(), on_fail))
        }
        Act::WmiCall(cmd) => wmi_call(a, name, cmd, on_fail),
        Act::RemoveFiles(files) => remove_files(a, name, files, on_fail).map(|_| false),
    }
}

/// XP/2003's sleep settings: the current scheme's name from `powercfg
/// /query`, then each setting of that scheme.
fn xp_power(
    a: &mut Actions,
    name: &str,
    on_fail: fn(anyhow::Error) -> Outcome,
) -> Result<(), Outcome> {
    a.report.step(name, Some(a.timeout));
    let q = exec(a, name, &argv(&["powercfg", "/query"]))?;
    let Some(scheme) = commands::xp_scheme_name(&q.stdout).filter(|_| q.status == 0) else {
        let text = format!("{}{}", q.stdout.trim(), q.stderr.trim());
        let why = format!(
            "no power scheme name in `powercfg /query`: {}",
            crate::exec::excerpt(&text, 5)
        );
        return Err(failed(a, name, why, on_fail));
    };
    let out = exec(a, name, &commands::power_command(Some(&scheme)))?;
    if out.status != 0 {
        return Err(failed(a, name, exited(&out), on_fail));
    }
    a.report
        .step_done(&format!("sleep off in power scheme `{scheme}`"));
    Ok(())
}

/// A guarded `wmic ... call`: Ok(true) when the method ran (and takes
/// effect at the next boot), Ok(false) when the guard skipped it.
fn wmi_call(
    a: &mut Actions,
    name: &str,
    cmd: &[String],
    on_fail: fn(anyhow::Error) -> Outcome,
) -> Result<bool, Outcome> {
    a.report.step(name, Some(a.timeout));
    let out = exec(a, name, cmd)?;
    if out.status != 0 {
        return Err(failed(a, name, exited(&out), on_fail));
    }
    match commands::wmi_result(&out) {
        Ok(m) => {
            a.report.step_done(&m);
            Ok(m.contains("ReturnValue = 0"))
        }
        Err(why) => Err(failed(a, name, why, on_fail)),
    }
}

/// Removes `files` with cmd.exe, each checked gone afterwards (`del`
/// exits 0 when it fails, too).
fn remove_files(
    a: &mut Actions,
    name: &str,
    files: &[&str],
    on_fail: fn(anyhow::Error) -> Outcome,
) -> Result<(), Outcome> {
    a.report.step(name, Some(a.timeout));
    let mut removed = Vec::new();
    for f in files {
        if exec(a, name, &commands::exists_command(f))?.status == 0 {
            continue;
        }
        let del = exec(a, name, &commands::del_command(f))?;
        if exec(a, name, &commands::exists_command(f))?.status != 0 {
            let text = format!("{}{}", del.stdout.trim(), del.stderr.trim());
            let why = format!("{f} is still there: {}", crate::exec::excerpt(&text, 5));
            return Err(failed(a, name, why, on_fail));
        }
        removed.push(*f);
    }
    let m = if removed.is_empty() {
        "answer files gone (none there)".to_string()
    } else {
        format!("answer files gone (removed {})", removed.join(", "))
    };
    a.report.step_done(&m);
    Ok(())
}
