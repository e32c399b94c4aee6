//! When an xCAT load is done: on evidence that the install ran and ended,
//! never on what the node showed before the load or on a running sshd
//! alone. Pure logic over what the status commands answered.

use super::answers::{Destiny, ImageKind, NodeStat, Status, parse_nodestat};

/// One look at the node; `None` where a command gave no usable answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// `nodestat NODE` value.
    pub nodestat: Option<String>,
    /// `lsdef -i status` value.
    pub status: Option<String>,
    /// `nodeset NODE stat` value.
    pub boot: Option<String>,
}

impl Seen {
    /// One line for progress events. It changes only when an answer
    /// changes: a command without an answer keeps the last one, so a
    /// status command that times out now and then does not count as
    /// progress for the stall timer.
    pub fn line(&self) -> String {
        let f = |o: &Option<String>| o.clone().unwrap_or_else(|| "?".into());
        format!(
            "nodestat: {} · status: {} · nodeset: {}",
            f(&self.nodestat),
            f(&self.status),
            f(&self.boot)
        )
    }

    /// Takes the answers of `new`, keeping the last ones where it has none.
    pub fn merge(&mut self, new: &Seen) {
        for (mine, theirs) in [
            (&mut self.nodestat, &new.nodestat),
            (&mut self.status, &new.status),
            (&mut self.boot, &new.boot),
        ] {
            if theirs.is_some() {
                mine.clone_from(theirs);
            }
        }
    }
}

/// What the monitor makes of a look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// xCAT shows that the install ran and ended (or that the diskless
    /// image booted).
    Loaded(String),
    /// Still going.
    Going(String),
    /// xCAT says the install failed.
    Failed(String),
    /// The node started the system on its disk instead of network-booting
    /// into the install.
    Missed(String),
}

impl Verdict {
    /// What was seen.
    pub fn text(&self) -> &str {
        match self {
            Verdict::Loaded(s) | Verdict::Going(s) | Verdict::Failed(s) | Verdict::Missed(s) => s,
        }
    }
}

/// Decides when a load is done, on evidence that the install ran and
/// ended, never on what the node showed before the load or on a running
/// sshd alone.
#[derive(Debug)]
pub struct Monitor {
    kind: ImageKind,
    /// The install (or diskless boot) was seen running: status
    /// `installing` / `netbooting`, or the installer answered nodestat.
    install_seen: bool,
    /// A status other than `booted` was seen during this load, so a
    /// `booted` now is new, not left from before.
    fresh: bool,
    /// The application ports the node answered on while no install was
    /// seen (for the stall message).
    up_without_install: Option<String>,
}

impl Monitor {
    /// A monitor for an image of `kind`.
    pub fn new(kind: ImageKind) -> Monitor {
        Monitor {
            kind,
            install_seen: false,
            fresh: false,
            up_without_install: None,
        }
    }

    /// True once the install was seen running.
    pub fn install_seen(&self) -> bool {
        self.install_seen
    }

    /// The ports the node answered on while no install had been seen.
    pub fn up_without_install(&self) -> Option<&str> {
        self.up_without_install.as_deref()
    }

    /// Takes one look.
    pub fn observe(&mut self, s: &Seen) -> Verdict {
        let st = s.status.as_deref().and_then(Status::of);
        let boot = s.boot.as_deref().and_then(Destiny::of);
        let ns = s.nodestat.as_deref().map(parse_nodestat);
        if st == Some(Status::Failed) {
            return Verdict::Failed(s.line());
        }
        let running = match self.kind {
            ImageKind::Diskful => st == Some(Status::Installing),
            ImageKind::Diskless => st == Some(Status::Netbooting),
        };
        if running || matches!(ns, Some(NodeStat::Installer(_))) {
            self.install_seen = true;
        }
        let booted = st == Some(Status::Booted);
        if st.is_some() && !booted {
            self.fresh = true;
        }
        if !self.install_seen
            && let Some(NodeStat::Apps(a)) = &ns
        {
            self.up_without_install = Some(a.join(","));
        }
        match self.kind {
            ImageKind::Diskful => {
                // nodeset back at `boot`: the installer's postscript asked
                // for `next` at the end of the install.
                if boot == Some(Destiny::Boot) || (self.install_seen && booted) {
                    return Verdict::Loaded(s.line());
                }
            }
            ImageKind::Diskless => {
                if self.install_seen && booted {
                    return Verdict::Loaded(s.line());
                }
            }
        }
        if booted && self.fresh && !self.install_seen {
            return Verdict::Missed(s.line());
        }
        Verdict::Going(s.line())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(ns: &str, st: &str, boot: &str) -> Seen {
        let o = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Seen {
            nodestat: o(ns),
            status: o(st),
            boot: o(boot),
        }
    }

    const INSTALL: &str = "install rhels7.9-x86_64-compute";

    fn going(v: Verdict) -> bool {
        matches!(v, Verdict::Going(_))
    }

    #[test]
    fn diskful_ends_only_when_nodeset_is_back_at_boot() {
        let mut m = Monitor::new(ImageKind::Diskful);
        // Left from before the load: not an end.
        assert!(going(m.observe(&seen("sshd", "booted", INSTALL))));
        assert!(going(m.observe(&seen("noping", "powering-on", INSTALL))));
        assert!(going(m.observe(&seen(
            "installing prep",
            "installing",
            INSTALL
        ))));
        // xcatdebugmode=2: sshd during the install is not the end.
        assert!(going(m.observe(&seen("sshd", "installing", INSTALL))));
        assert!(m.install_seen());
        assert!(matches!(
            m.observe(&seen("noping", "installing", "boot")),
            Verdict::Loaded(_)
        ));
    }

    #[test]
    fn booted_after_a_seen_install_is_the_end_too() {
        let mut m = Monitor::new(ImageKind::Diskful);
        m.observe(&seen("installing prep", "installing", INSTALL));
        // nodeset stat gave no answer; status says the new system booted.
        assert!(matches!(
            m.observe(&seen("sshd", "booted", "")),
            Verdict::Loaded(_)
        ));
    }

    #[test]
    fn booted_without_an_install_is_a_missed_network_boot() {
        let mut m = Monitor::new(ImageKind::Diskful);
        assert!(going(m.observe(&seen("noping", "powering-on", INSTALL))));
        assert!(matches!(
            m.observe(&seen("https,sshd", "booted", INSTALL)),
            Verdict::Missed(_)
        ));
        assert_eq!(m.up_without_install(), Some("https,sshd"));
    }

    #[test]
    fn diskless_ends_on_booted_after_netbooting() {
        let net = "netboot rhels8-x86_64-compute";
        let mut m = Monitor::new(ImageKind::Diskless);
        assert!(going(m.observe(&seen("sshd", "booted", net))));
        assert!(going(m.observe(&seen("noping", "powering-on", net))));
        assert!(going(m.observe(&seen(net, "netbooting", net))));
        assert!(matches!(
            m.observe(&seen("sshd", "booted", net)),
            Verdict::Loaded(_)
        ));
        assert_eq!(ImageKind::of_state(net), ImageKind::Diskless);
        assert_eq!(ImageKind::of_state("statelite x"), ImageKind::Diskless);
        assert_eq!(ImageKind::of_state(INSTALL), ImageKind::Diskful);
    }

    #[test]
    fn failed_status_fails() {
        let mut m = Monitor::new(ImageKind::Diskful);
        assert!(matches!(
            m.observe(&seen("noping", "failed", INSTALL)),
            Verdict::Failed(_)
        ));
    }

    #[test]
    fn a_look_without_an_answer_keeps_the_last_one() {
        let mut known = seen("installing prep", "installing", INSTALL);
        let before = known.line();
        known.merge(&seen("", "installing", ""));
        assert_eq!(known.line(), before);
        known.merge(&seen("installing bash (42%)", "", ""));
        assert_ne!(known.line(), before);
    }
}
