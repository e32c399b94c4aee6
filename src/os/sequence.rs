//! Runs a profile's wait sequence step by step, each with its own timeout
//! (grown for the attempt), then the stability window and the image check.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Family, PowerReset};
use crate::attempt::Attempt;
use crate::config::{Plan, Probe, Step, StepLimits, Wait};
use crate::control::{Channel, ChannelError};
use crate::duration;
use crate::outcome::Outcome;
use crate::probe::{self, Seen};
use crate::report::Reporter;
use crate::wait::{self, Limits, Pace, Poll, Waited};

/// How often the sequence may start over when the computer goes away during
/// the stability window (a Sysprep reboot after the first answer).
const MAX_RESTARTS: u32 = 3;

/// One post-load run of a wait sequence.
pub struct Sequence<'a> {
    pub plan: &'a Plan,
    pub attempt: Attempt,
    pub power: &'a dyn PowerReset,
    pub report: &'a Reporter,
    /// The channel (channel none's only probes the port).
    pub channel: &'a mut (dyn Channel + 'static),
    /// Boot id seen before the load, if one was.
    pub boot_before: Option<String>,
    /// The OS family: how it reads its boot id and setup state.
    pub family: &'a dyn Family,
    /// The boot id a reboot step saw before its trigger (`None`: none
    /// read), for its wait after a power reset, which must not trigger
    /// the reboot again.
    pub reboot_from: Option<String>,
}

/// What a failed channel call means for a wait. Over WinRM a rejected
/// login is "not yet" (`auth_waits`): while Sysprep runs, Administrator is
/// disabled or still has the image's password until the oobeSystem pass.
/// The step decides at its timeout (see [`AUTH`]).
fn channel_poll(e: ChannelError, auth_waits: bool) -> Poll {
    match e {
        ChannelError::Auth(e) if auth_waits => Poll::NotYet(format!("{AUTH}{e:#}")),
        e if e.is_fatal() => Poll::Fatal(e.into_inner()),
        e => Poll::NotYet(format!("{}: {e}", e.class())),
    }
}

/// How a wait's status starts when the login was rejected: a step that
/// times out on it is fatal (the credentials are wrong, or the account
/// never came up), not a retry.
const AUTH: &str = "auth: ";

impl Sequence<'_> {
    fn who(&self) -> String {
        self.plan.computer.name.clone()
    }

    /// A rejected login is "not yet" over WinRM (see [`channel_poll`]).
    fn auth_waits(&self) -> bool {
        matches!(
            self.plan.profile.channel,
            crate::config::ChannelSettings::Winrm(_)
        )
    }

    /// Runs the steps, then the stability window; starts over (skipping
    /// sleeps) if the computer stops answering inside the window.
    pub fn run(&mut self) -> Result<(), Outcome> {
        let steps = self.plan.profile.steps.clone();
        let mut restarts = 0;
        let mut skip_sleep = false;
        loop {
            for s in &steps {
                if skip_sleep && matches!(s.wait, Wait::Sleep(_)) {
                    continue;
                }
                self.step(s)?;
            }
            match self.stable()? {
                true => return Ok(()),
                false if restarts < MAX_RESTARTS => {
                    restarts += 1;
                    skip_sleep = true;
                    self.report.info("the computer stopped answering inside the stability window: waiting again from the start");
                }
                false => {
                    return Err(Outcome::Retry(anyhow::anyhow!(
                        "{}: kept going away after answering ({MAX_RESTARTS} times)",
                        self.who()
                    )));
                }
            }
        }
    }

    fn step(&mut self, s: &Step) -> Result<(), Outcome> {
        let started = Instant::now();
        let (w, timeout, reset) = match &s.wait {
            // A sleep is a wait the OS needs, not a timeout: it does not grow.
            Wait::Sleep(d) => {
                self.report.step(&s.name, Some(*d));
                (wait::sleep(self.report, *d), *d, None)
            }
            Wait::Poll(probe, limits) => {
                let timeout = self.attempt.scale(limits.timeout);
                let (w, reset) = self.poll_step(&s.name, probe, limits, timeout);
                (w, timeout, reset)
            }
        };
        let what = format!("{} step `{}`", self.who(), s.name);
        match (w, reset) {
            // The run's end reports the signal; the step is not ended here.
            (Waited::Interrupted(i), _) => Err(Outcome::Fatal(anyhow::Error::new(i).context(what))),
            (Waited::Fatal(e), _) => {
                let m = format!("{e:#}");
                self.report.step_failed(&m);
                Err(Outcome::Fatal(e.context(what)))
            }
            (Waited::TimedOut(last) | Waited::Stalled(last, _), _) if last.starts_with(AUTH) => {
                let m = format!(
                    "{what}: authentication kept failing for {}, check the login user and password_file: {}",
                    duration::fmt(timeout),
                    &last[AUTH.len()..]
                );
                self.report.step_failed(&m);
                Err(Outcome::Fatal(anyhow::anyhow!(m)))
            }
            (w @ (Waited::TimedOut(_) | Waited::Stalled(..)), Some((first, extra))) => {
                // The numbers are the real ones: after a power reset the
                // wait lasted both waits and the reset.
                let m = format!(
                    "{} (reset power after {}, then waited {} more)",
                    wait::describe(&w, &what, started.elapsed()),
                    duration::fmt(first),
                    duration::fmt(extra)
                );
                self.report.step_failed(&m);
                Err(Outcome::Retry(anyhow::anyhow!(m)))
            }
            // Ready, or out of time without a reset: the wait module's one
            // mapping to an outcome.
            (w, _) => {
                let (msg, took) = w.into_outcome(&what, timeout, self.report)?;
                self.report
                    .step_done(&format!("{msg} after {}", duration::fmt(took)));
                Ok(())
            }
        }
    }

    /// Reboots the computer with `trigger` as step `name` and waits up to
    /// `timeout` for it to come back with a new boot id (logged in again).
    pub fn reboot(
        &mut self,
        name: &str,
        trigger: Vec<String>,
        timeout: Duration,
    ) -> Result<(), Outcome> {
        let step = Step {
            name: name.to_string(),
            wait: Wait::Poll(
                Probe::Reboot {
                    trigger: Some(trigger),
                },
                StepLimits::timeout(timeout),
            ),
        };
        // `step` grows the timeout for the attempt: the caller's is final.
        let saved = self.attempt;
        self.attempt = Attempt::new(1, 1, 1.0);
        let r = self.step(&step);
        self.attempt = saved;
        r
    }

    /// Polls `probe` within `limits` grown for the attempt (`timeout`);
    /// on a timeout, resets power and waits longer when the step says so
    /// (a reboot step always does, on a stall too: a reboot that stalls
    /// did not come back either; [`StepLimits::reset_wait`]). After a
    /// reset, also how long the first wait lasted and the second one.
    fn poll_step(
        &mut self,
        name: &str,
        probe: &Probe,
        limits: &StepLimits,
        timeout: Duration,
    ) -> (Waited, Option<(Duration, Duration)>) {
        let stall = limits.stall.map(|d| self.attempt.scale(d));
        self.report.step(name, Some(timeout));
        let started = Instant::now();
        let w = self.wait_for(probe, Limits { timeout, stall });
        let reboot = matches!(probe, Probe::Reboot { .. });
        let (last, first, extra) = match (&w, limits.reset_wait(probe)) {
            (Waited::TimedOut(last), Some(extra)) => (last, timeout, extra),
            (Waited::Stalled(last, _), Some(extra)) if reboot => {
                let took = Duration::from_secs(started.elapsed().as_secs());
                (last, took, extra)
            }
            _ => return (w, None),
        };
        if last.starts_with(AUTH) {
            // It answers and refuses us: a power reset cannot help.
            return (w, None);
        }
        match self.power.power_reset(self.report) {
            Some(Outcome::Done) => {
                let extra = self.attempt.scale(extra);
                let what = if reboot {
                    "the reboot did not come back"
                } else {
                    "not ready"
                };
                self.report.step_failed(&format!(
                    "{what} after {}: power was reset",
                    duration::fmt(first)
                ));
                self.report
                    .step(&format!("{name}-after-reset"), Some(extra));
                let limits = Limits {
                    timeout: extra,
                    stall,
                };
                let w = if reboot {
                    // The reset was the reboot: no trigger again, and the
                    // boot id to leave behind is the one before the first.
                    let from = self.reboot_from.take();
                    self.wait_rebooted(from, true, limits)
                } else {
                    self.wait_for(probe, limits)
                };
                (w, Some((first, extra)))
            }
            Some(o) => {
                self.report.warn(&format!(
                    "power reset failed: {}",
                    o.error().map(|e| format!("{e:#}")).unwrap_or_default()
                ));
                (w, None)
            }
            None => {
                self.report.info(if reboot {
                    "the provisioner cannot reset power: the hung reboot asks for a reload"
                } else {
                    "the provisioner cannot reset power: no second wait"
                });
                (w, None)
            }
        }
    }

    fn wait_for(&mut self, probe: &Probe, limits: Limits) -> Waited {
        let plan = self.plan;
        let connect = plan.profile.connect_timeout;
        match probe {
            Probe::Port { port } => self.wait_port(*port, None, limits),
            Probe::Banner { port, regex } => self.wait_port(*port, Some(regex.clone()), limits),
            Probe::Ping => {
                let host = plan.computer.address.clone();
                let probe: Arc<dyn Fn() -> Poll + Send + Sync> =
                    Arc::new(move || match probe::ping(&host, connect) {
                        Seen::Up(m) => Poll::Ready(m),
                        Seen::Down(m) => Poll::NotYet(m),
                    });
                wait::overlapped(self.report, limits, Pace::COSTLY, 4, probe)
            }
            Probe::Login => self.wait_login(limits),
            Probe::Command { command, regex } => self.wait_command(command, regex.as_ref(), limits),
            Probe::Reboot { trigger } => self.wait_reboot(trigger.as_deref(), limits),
            Probe::SetupDone => self.wait_setup_done(limits),
        }
    }

    /// TCP connect to the step's port (default: the channel's), and read a
    /// line matching `banner` when there is one.
    fn wait_port(
        &mut self,
        port: Option<u16>,
        banner: Option<regex::Regex>,
        limits: Limits,
    ) -> Waited {
        let plan = self.plan;
        let connect = plan.profile.connect_timeout;
        // Config resolution refuses a port step with no port anywhere.
        let Some(port) = port.or(plan.port()) else {
            return Waited::Fatal(anyhow::anyhow!(
                "no port to probe: channel none, and neither the step nor the computer names one"
            ));
        };
        let host = &plan.computer.address;
        // An address is looked up once; a name at most once a second: it may
        // appear in DNS only once the freshly loaded computer registers it.
        let literal = host.parse::<std::net::IpAddr>().ok();
        let mut looked_up: Option<(Result<std::net::SocketAddr, String>, Instant)> = None;
        let target = move || {
            if let Some(ip) = literal {
                return Ok(std::net::SocketAddr::new(ip, port));
            }
            match &looked_up {
                Some((r, at)) if at.elapsed() < Duration::from_secs(1) => r.clone(),
                _ => {
                    let r = probe::resolve(host, port);
                    looked_up = Some((r.clone(), Instant::now()));
                    r
                }
            }
        };
        let want = match &banner {
            Some(re) => wait::Want::Banner(re),
            None => wait::Want::Connect,
        };
        wait::tcp(
            self.report,
            limits,
            wait::Rate {
                answering: plan.profile.probe_interval,
                ..wait::Rate::TCP
            },
            connect,
            want,
            &format!("port {port}"),
            target,
        )
    }

    // Login, setup-done, command and reboot steps log in: config
    // resolution refuses them on channel none.
    fn wait_login(&mut self, limits: Limits) -> Waited {
        let family = self.family;
        let aw = self.auth_waits();
        let cmd_t = self.plan.profile.command_timeout;
        let before = self.boot_before.clone();
        let ch = &mut *self.channel;
        wait::poll(self.report, limits, Pace::COSTLY, |left| {
            let t = left.min(cmd_t).max(Duration::from_secs(1));
            if let Err(e) = ch.login(t) {
                ch.disconnect();
                return channel_poll(e, aw);
            }
            let who = [ch.identity(), ch.login_note()]
                .into_iter()
                .flatten()
                .map(|i| format!(" ({i})"))
                .collect::<String>();
            let Some(old) = &before else {
                return Poll::Ready(format!("logged in{who}"));
            };
            match super::boot_id(ch, family, t) {
                Ok(id) if &id == old => {
                    ch.disconnect();
                    Poll::NotYet(format!(
                        "the old OS answered (boot id {id} unchanged since before the load)"
                    ))
                }
                Ok(id) => Poll::Ready(format!("logged in{who}; new boot id {id}")),
                Err(e) => channel_poll(e, aw),
            }
        })
    }

    /// Polls Windows' own setup state until it says complete; logs in as
    /// needed (Sysprep's reboots in between drop the connection).
    fn wait_setup_done(&mut self, limits: Limits) -> Waited {
        let family = self.family;
        let cmd_t = self.plan.profile.command_timeout;
        let aw = self.auth_waits();
        let Some(cmd) = family.setup_state_command() else {
            return Waited::Fatal(anyhow::anyhow!(
                "family {} has no setup state to wait for",
                family.name()
            ));
        };
        let ch = &mut *self.channel;
        wait::poll(self.report, limits, Pace::COSTLY, |left| {
            let t = left.min(cmd_t).max(Duration::from_secs(1));
            let out = match ch.login(t).and_then(|_| ch.run(&cmd, t)) {
                Ok(o) => o,
                Err(e) => {
                    ch.disconnect();
                    return channel_poll(e, aw);
                }
            };
            match family.setup_state(&out.stdout) {
                Ok(m) => Poll::Ready(m),
                Err(m) => Poll::NotYet(m),
            }
        })
    }

    fn wait_command(
        &mut self,
        argv: &[String],
        re: Option<&regex::Regex>,
        limits: Limits,
    ) -> Waited {
        let cmd_t = self.plan.profile.command_timeout;
        let aw = self.auth_waits();
        let ch = &mut *self.channel;
        wait::poll(self.report, limits, Pace::COSTLY, |left| {
            let t = left.min(cmd_t).max(Duration::from_secs(1));
            match ch.run(argv, t) {
                Ok(out) => {
                    let ok = match re {
                        Some(re) => re.is_match(out.stdout.trim()),
                        None => out.status == 0,
                    };
                    let last = out
                        .stdout
                        .lines()
                        .chain(out.stderr.lines())
                        .rfind(|l| !l.trim().is_empty())
                        .unwrap_or("")
                        .trim()
                        .to_string();
                    if ok {
                        Poll::Ready(format!("`{}` says: {last}", argv.join(" ")))
                    } else {
                        Poll::NotYet(format!("exit {}: {last}", out.status))
                    }
                }
                Err(e) => {
                    ch.disconnect();
                    channel_poll(e, aw)
                }
            }
        })
    }

    /// Reads the boot id, runs `trigger` (if any), and waits for the
    /// computer to come back with another one.
    fn wait_reboot(&mut self, trigger: Option<&[String]>, limits: Limits) -> Waited {
        let t = self.reboot_command_timeout();
        let ch = &mut *self.channel;
        let old = match super::boot_id(ch, self.family, t) {
            Ok(id) => Some(id),
            Err(e) if e.is_fatal() => return Waited::Fatal(e.into_inner()),
            Err(_) => None,
        };
        if let Some(trigger) = trigger {
            self.report
                .info(&format!("triggering the reboot: {}", trigger.join(" ")));
            // The connection drops while the command runs; that is expected.
            let _ = ch.run(trigger, Duration::from_secs(10));
        }
        ch.disconnect();
        self.reboot_from.clone_from(&old);
        self.wait_rebooted(old, false, limits)
    }

    /// How long one boot id read of a reboot wait may take.
    fn reboot_command_timeout(&self) -> Duration {
        self.plan
            .profile
            .command_timeout
            .min(Duration::from_secs(30))
    }

    /// Waits for a boot id other than `old` (with none: for the computer
    /// to come back after it was seen down, or `went_down` already).
    fn wait_rebooted(
        &mut self,
        old: Option<String>,
        mut went_down: bool,
        limits: Limits,
    ) -> Waited {
        let family = self.family;
        let cmd_t = self.reboot_command_timeout();
        let aw = self.auth_waits();
        let ch = &mut *self.channel;
        wait::poll(self.report, limits, Pace::COSTLY, |left| {
            let t = left.min(cmd_t).max(Duration::from_secs(1));
            let r = ch.login(t).and_then(|_| super::boot_id(ch, family, t));
            match (r, &old) {
                (Ok(id), Some(o)) if &id != o => Poll::Ready(format!("back with new boot id {id}")),
                (Ok(id), None) if went_down => Poll::Ready(format!("back up (boot id {id})")),
                (Ok(id), _) => {
                    ch.disconnect();
                    Poll::NotYet(format!("not rebooted yet (boot id {id})"))
                }
                (Err(e), _) => {
                    ch.disconnect();
                    match channel_poll(e, aw) {
                        Poll::NotYet(m) if m.starts_with(AUTH) => Poll::NotYet(m),
                        Poll::NotYet(m) => {
                            went_down = true;
                            Poll::NotYet(format!("down: {m}"))
                        }
                        other => other,
                    }
                }
            }
        })
    }

    /// The stability window (VCL's light check, not a login a poll): the
    /// channel's port every half second, then one command at the end. A
    /// refused or unreachable port, or a last login that cannot reach the
    /// computer, is "gone" (a Sysprep reboot after the first answer); a
    /// slow connect or a slow command is a busy fresh Windows, not gone.
    fn stable(&mut self) -> Result<bool, Outcome> {
        let window = self.plan.profile.stable_for;
        if window.is_zero() {
            return Ok(true);
        }
        self.report.step("stable", Some(window));
        let start = Instant::now();
        let connect = self.plan.profile.connect_timeout;
        let addr = self
            .plan
            .port()
            .and_then(|p| probe::resolve(&self.plan.computer.address, p).ok());
        while start.elapsed() < window {
            crate::signal::check().map_err(|i| Outcome::Fatal(i.into()))?;
            let gone = match addr {
                Some(a) => port_gone(a, connect),
                // No port to probe: the login is the probe.
                None => self.login_gone(connect)?,
            };
            if let Some(why) = gone {
                return Ok(self.unstable(start, &why));
            }
            self.report.progress(&format!(
                "answering for {}",
                duration::fmt(Duration::from_secs(start.elapsed().as_secs()))
            ));
            crate::signal::sleep(
                Duration::from_millis(500).min(window.saturating_sub(start.elapsed())),
            )
            .map_err(|i| Outcome::Fatal(i.into()))?;
        }
        let last = self
            .plan
            .profile
            .command_timeout
            .min(Duration::from_secs(60));
        if let Some(why) = self.login_gone(last.max(connect))? {
            return Ok(self.unstable(start, &why));
        }
        self.report
            .step_done(&format!("kept answering for {}", duration::fmt(window)));
        Ok(true)
    }

    /// Ends the stability step as failed; false.
    fn unstable(&self, start: Instant, why: &str) -> bool {
        self.report.step_failed(&format!(
            "stopped answering after {}: {why}",
            duration::fmt(start.elapsed())
        ));
        false
    }

    /// Logs in (a command): Some(why) when the computer cannot be reached,
    /// None when it answered, also slowly (a timeout); a fatal channel
    /// error is fatal.
    fn login_gone(&mut self, timeout: Duration) -> Result<Option<String>, Outcome> {
        match self.channel.login(timeout) {
            Ok(()) => Ok(None),
            Err(e) if e.is_fatal() => Err(Outcome::Fatal(e.into_inner())),
            Err(ChannelError::Timeout(_)) => Ok(None),
            Err(e) => {
                self.channel.disconnect();
                Ok(Some(e.to_string()))
            }
        }
    }

    /// Runs the image's `image_check` and compares its output.
    pub fn check_image(&mut self) -> Result<(), Outcome> {
        let Some(chk) = self.plan.image.config.image_check.clone() else {
            return Ok(());
        };
        let who = self.who();
        if !self.channel.logs_in() {
            return Err(Outcome::Fatal(anyhow::anyhow!(
                "{who}: image_check needs channel = \"ssh\" or \"winrm\""
            )));
        }
        let ch = &mut *self.channel;
        self.report
            .step("image-check", Some(self.plan.profile.command_timeout));
        let re = regex::Regex::new(&chk.expect).map_err(|e| Outcome::Fatal(e.into()))?;
        let out = ch
            .run(&chk.command, self.plan.profile.command_timeout)
            .map_err(|e| {
                e.into_outcome(format!("{who}: image_check `{}`", chk.command.join(" ")))
            })?;
        if re.is_match(out.stdout.trim()) {
            self.report
                .step_done(&format!("image says `{}`", out.stdout.trim()));
            Ok(())
        } else {
            let m = format!(
                "{who}: the computer answered but is not image `{}`: `{}` printed `{}`, expected /{}/",
                self.plan.image.name,
                chk.command.join(" "),
                out.stdout.trim(),
                chk.expect
            );
            self.report.step_failed(&m);
            Err(Outcome::Retry(anyhow::anyhow!(m)))
        }
    }
}

/// Some(why) when nothing serves at `addr` any more: refused, unreachable,
/// or a connection closed at once (a listener going down, or one that
/// resets every new connection); None when it accepts and keeps the
/// connection (or speaks first, as sshd does), or is only slow to accept
/// (a connect timeout on a busy computer is not "gone").
fn port_gone(addr: std::net::SocketAddr, timeout: Duration) -> Option<String> {
    use std::io::{ErrorKind, Read};
    let mut conn = match std::net::TcpStream::connect_timeout(&addr, timeout) {
        Ok(c) => c,
        Err(e) if e.kind() == ErrorKind::TimedOut => return None,
        Err(e) => return Some(format!("{addr}: {}", probe::io_text(&e))),
    };
    // A listener that is up leaves a silent client's connection open far
    // longer than this.
    let _ = conn.set_read_timeout(Some(Duration::from_millis(50)));
    let mut byte = [0u8; 1];
    match conn.read(&mut byte) {
        Ok(0) => Some(format!("{addr}: closed the connection at once")),
        Ok(_) => None,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
        Err(e) => Some(format!("{addr}: {}", probe::io_text(&e))),
    }
}

#[cfg(test)]
mod stable_tests {
    use super::port_gone;
    use std::net::TcpListener;
    use std::time::Duration;

    #[test]
    fn a_silent_listener_is_up_and_a_closed_port_is_gone() {
        let t = Duration::from_secs(2);
        // Up: accepted (by the kernel's backlog) and kept open, silent.
        let up = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = up.local_addr().expect("addr");
        assert_eq!(port_gone(addr, t), None);
        // (A listener that closes each connection at once is gone too, if
        // it closes within the 50 ms read: a race on a loaded machine, so
        // not asserted here.)
        // Nothing listening: refused.
        drop(up);
        let refused = port_gone(addr, t).expect("refused is gone");
        assert!(refused.contains(&addr.to_string()), "{refused}");
    }
}
