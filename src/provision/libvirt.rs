//! `libvirt`: a libvirt domain through `virsh`. Load stops the domain, gives
//! it a fresh copy-on-write disk over the image's base disk and a fresh
//! definition from a domain XML template (or keeps the one it has), starts
//! it and waits until libvirt says it runs. Every step is one `virsh -c URI`
//! call, so it works against any libvirt URI: `qemu:///system`, a remote
//! `qemu+ssh://host/system`, or the `test:///` driver.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::disk::{Chain, same_file};
use super::{PowerOff, Provisioner, expand, placeholders};
use crate::attempt::Attempt;
use crate::config::{FileUse, KeyError, LocalFile, Plan};
use crate::duration;
use crate::exec::{Cmd, Hints, Output};
use crate::outcome::{Outcome, collapse};
use crate::report::Reporter;
use crate::wait::{self, Limits, Pace, Poll};

/// `[provisioners.NAME] kind = "libvirt"`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct LibvirtConfig {
    /// libvirt connection URI passed to `virsh -c`.
    #[serde(default = "default_uri")]
    pub uri: String,
    /// The `virsh` program (name on PATH or a path).
    #[serde(default = "default_virsh")]
    pub virsh: String,
    /// The `qemu-img` program that creates disk overlays.
    #[serde(default = "default_qemu_img")]
    pub qemu_img: String,
    /// Timeout of one `virsh` or `qemu-img` call; past it the call is killed
    /// and the load asks for a retry.
    #[serde(default = "default_command_timeout", deserialize_with = "duration::de")]
    pub command_timeout: Duration,
    /// How long the domain may take to be `running` after `virsh start`
    /// (grows with the attempt).
    #[serde(default = "default_start_timeout", deserialize_with = "duration::de")]
    pub start_timeout: Duration,
    /// Where disk overlays go: `DISK_DIR/COMPUTER.qcow2`. The hypervisor must
    /// be able to read and write there.
    #[serde(default = "default_disk_dir")]
    pub disk_dir: PathBuf,
    /// Keep an existing domain's definition instead of redefining it from
    /// the image's `domain_xml` (the template is then used only when the
    /// domain does not exist yet).
    #[serde(default)]
    pub reuse_domain: bool,
}

fn default_uri() -> String {
    "qemu:///system".into()
}

fn default_virsh() -> String {
    "virsh".into()
}

fn default_qemu_img() -> String {
    "qemu-img".into()
}

fn default_command_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_start_timeout() -> Duration {
    Duration::from_secs(5 * 60)
}

fn default_disk_dir() -> PathBuf {
    PathBuf::from("/var/lib/libvirt/images")
}

impl Default for LibvirtConfig {
    fn default() -> LibvirtConfig {
        LibvirtConfig {
            uri: default_uri(),
            virsh: default_virsh(),
            qemu_img: default_qemu_img(),
            command_timeout: default_command_timeout(),
            start_timeout: default_start_timeout(),
            disk_dir: default_disk_dir(),
            reuse_domain: false,
        }
    }
}

/// Memory (MiB) of `{memory}` when the image sets none.
pub const DEFAULT_MEMORY_MIB: u32 = 1024;
/// Virtual CPUs of `{cpus}` when the image sets none.
pub const DEFAULT_CPUS: u32 = 1;

impl LibvirtConfig {
    /// Checks serde cannot make.
    pub fn validate(&self) -> Result<(), String> {
        if self.uri.trim().is_empty() {
            return Err("`uri` must not be empty, e.g. \"qemu:///system\"".into());
        }
        if self.virsh.trim().is_empty() {
            return Err("`virsh` must name the virsh program, e.g. \"virsh\"".into());
        }
        if self.qemu_img.trim().is_empty() {
            return Err("`qemu_img` must name the qemu-img program, e.g. \"qemu-img\"".into());
        }
        if self.command_timeout.is_zero() {
            return Err("`command_timeout` must be longer than 0s".into());
        }
        if self.start_timeout.is_zero() {
            return Err("`start_timeout` must be longer than 0s".into());
        }
        if self.disk_dir.as_os_str().is_empty() {
            return Err("`disk_dir` must not be empty".into());
        }
        Ok(())
    }

    /// Lines for `reimage check`.
    pub fn describe(&self, plan: &Plan) -> Vec<String> {
        let mut v = vec![
            format!("libvirt uri: {}", self.uri),
            format!("domain: {}", plan.computer.node),
        ];
        match &plan.image.config.domain_xml {
            None => {
                v.push("template: none: the existing domain is restarted as defined".into());
                v.push("disk overlay: none (no template)".into());
            }
            Some(t) => {
                v.push(format!(
                    "template: {}{}",
                    t.display(),
                    if self.reuse_domain {
                        " (only when the domain does not exist: reuse_domain = true)"
                    } else {
                        " (the domain is redefined on every load)"
                    }
                ));
                v.push(match std::fs::read_to_string(t) {
                    Ok(text) if uses(&text, "disk") => format!(
                        "disk overlay: {} over {}",
                        overlay_path(&self.disk_dir, &plan.computer.name).display(),
                        plan.image.source
                    ),
                    Ok(_) => "disk overlay: none (the template has no {disk})".into(),
                    Err(e) => format!("disk overlay: unknown: cannot read the template: {e}"),
                });
            }
        }
        v.push(format!(
            "start timeout: {}",
            plan.per_attempt(self.start_timeout)
        ));
        v
    }
}

/// The placeholders a domain XML template has beside every provisioner's.
const TEMPLATE_PLACEHOLDERS: [&str; 6] = ["name", "disk", "mac", "public_mac", "memory", "cpus"];

/// The networks a domain template's interfaces are on: every
/// `<source network='NAME'/>` (either quote), each once.
fn template_networks(template: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for (at, _) in template.match_indices("<source") {
        let tag = &template[at..];
        let tag = &tag[..tag.find('>').unwrap_or(tag.len())];
        let Some(i) = tag.find("network=") else {
            continue;
        };
        let rest = &tag[i + "network=".len()..];
        let Some(q) = rest.chars().next().filter(|c| *c == '\'' || *c == '"') else {
            continue;
        };
        if let Some(name) = rest[1..].split(q).next()
            && !name.is_empty()
            && !found.iter().any(|n| n == name)
        {
            found.push(name.to_string());
        }
    }
    found
}

/// True when `template` uses the placeholder `{name}` (not the literal
/// `{{name}}`).
fn uses(template: &str, name: &'static str) -> bool {
    const MARK: &str = "\u{1}reimage-placeholder\u{1}";
    expand(template, &[(name, MARK.to_string())]).contains(MARK)
}

/// `DISK_DIR/COMPUTER.qcow2`, the computer's name made safe for a file name.
fn overlay_path(disk_dir: &Path, computer: &str) -> PathBuf {
    let safe: String = computer
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let safe = safe.trim_start_matches('.');
    disk_dir.join(format!(
        "{}.qcow2",
        if safe.is_empty() { "computer" } else { safe }
    ))
}

/// Fills the template: every value XML-escaped.
fn render(template: &str, values: &[(&'static str, String)]) -> String {
    let escaped: Vec<(&'static str, String)> = values
        .iter()
        .map(|(k, v)| (*k, crate::xml::escape(v)))
        .collect();
    expand(template, &escaped)
}

/// What virsh's error text says went wrong.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// The URI cannot be reached: the daemon is down, the network, a
    /// dropped connection.
    Connect,
    /// No domain of that name.
    NoDomain,
    /// The domain XML was rejected.
    Xml,
    /// Anything else.
    Other,
}

fn classify(text: &str) -> Failure {
    const CONNECT: [&str; 6] = [
        "failed to connect",
        "unable to connect",
        "cannot recv data",
        "end of file while reading data",
        "connection reset",
        "no connection driver available",
    ];
    let t = text.to_lowercase();
    if CONNECT.iter().any(|s| t.contains(s)) {
        Failure::Connect
    } else if t.contains("failed to get domain") || t.contains("domain not found") {
        Failure::NoDomain
    } else if t.contains("xml error") || t.contains("(domain_definition)") {
        Failure::Xml
    } else {
        Failure::Other
    }
}

/// The state `virsh domstate` printed: its first non-empty line.
fn parse_state(stdout: &str) -> String {
    stdout
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("unknown")
        .to_string()
}

/// The libvirt provisioner.
pub struct Libvirt {
    config: LibvirtConfig,
}

/// A rendered definition, ready before anything is stopped.
struct Prepared {
    /// The domain XML to define, when the domain gets (re)defined.
    xml: Option<String>,
    /// The overlay to create over the base disk, when the template has
    /// `{disk}`.
    overlay: Option<(PathBuf, PathBuf)>,
}

impl Libvirt {
    /// A libvirt provisioner.
    pub fn new(config: LibvirtConfig) -> Libvirt {
        Libvirt { config }
    }

    /// Runs `virsh -c URI args...`. `Ok` whatever its exit code; `Err` when
    /// it could not run to the end (missing, timed out, interrupted).
    fn virsh(
        &self,
        plan: &Plan,
        report: &Reporter,
        args: &[&str],
        timeout: Duration,
    ) -> Result<(Output, String), Outcome> {
        let mut argv = vec![self.config.virsh.as_str(), "-c", self.config.uri.as_str()];
        argv.extend_from_slice(args);
        let mut cmd = Cmd::new(&argv, timeout);
        if self.config.uri.contains("/session") {
            // virsh may start the session daemon, which runs the domains:
            // it outlives virsh.
            cmd = cmd.keeps_daemons();
        }
        self.exec(plan, report, cmd, "libvirt-clients")
    }

    fn exec(
        &self,
        plan: &Plan,
        report: &Reporter,
        cmd: Cmd,
        package: &str,
    ) -> Result<(Output, String), Outcome> {
        let shown = cmd.display();
        let who = &plan.computer.name;
        match cmd.run() {
            Ok(out) => {
                report.output(&shown, &out);
                Ok((out, shown))
            }
            Err(e) => {
                if let Some(p) = e.partial() {
                    report.output(&shown, p);
                }
                let spawn = format!(
                    "install {package} (apt-get install {package}) or set the path in the provisioner"
                );
                Err(e.into_outcome(
                    &format!("load of {who}"),
                    &shown,
                    Hints {
                        spawn: &spawn,
                        timeout: "raise command_timeout if the host is just slow",
                    },
                ))
            }
        }
    }

    /// The outcome of a failed virsh call: connection trouble asks for a
    /// retry; otherwise it is of `class` (`Outcome::Fatal` or
    /// `Outcome::Retry`).
    fn failed(
        &self,
        plan: &Plan,
        shown: &str,
        out: &Output,
        what: &str,
        class: fn(anyhow::Error) -> Outcome,
    ) -> Outcome {
        let text = out.text();
        let e = anyhow::anyhow!(
            "`{shown}` exited {}: {}",
            out.status,
            crate::exec::excerpt(&text, 4)
        );
        let who = &plan.computer.name;
        if classify(&text) == Failure::Connect {
            return Outcome::Retry(e.context(format!(
                "load of {who}: cannot reach libvirt at {} to {what}",
                self.config.uri
            )));
        }
        class(e.context(format!("load of {who}: cannot {what}")))
    }

    /// The domain's state, `None` when there is no such domain.
    fn domstate(
        &self,
        plan: &Plan,
        report: &Reporter,
        timeout: Duration,
    ) -> Result<Option<String>, Outcome> {
        let name = plan.computer.node.as_str();
        let (out, shown) = self.virsh(plan, report, &["domstate", name], timeout)?;
        if out.success() {
            return Ok(Some(parse_state(&out.stdout)));
        }
        match classify(&out.text()) {
            Failure::NoDomain => Ok(None),
            _ => Err(self.failed(
                plan,
                &shown,
                &out,
                &format!("get the state of domain `{name}`"),
                Outcome::Retry,
            )),
        }
    }

    /// Reads and fills the template, checks the base disk: everything that
    /// can fail for good is found before the domain is touched.
    fn prepare(
        &self,
        plan: &Plan,
        attempt: Attempt,
        template: &Path,
        report: &Reporter,
    ) -> Result<Prepared, Outcome> {
        let who = &plan.computer.name;
        let text = std::fs::read_to_string(template).map_err(|e| {
            Outcome::Fatal(anyhow::anyhow!(
                "load of {who}: cannot read the domain XML template {} ({e}): check domain_xml in [images.{}]",
                template.display(),
                plan.image.name
            ))
        })?;
        let overlay = if uses(&text, "disk") {
            let base = std::fs::canonicalize(&plan.image.source).map_err(|e| {
                Outcome::Fatal(anyhow::anyhow!(
                    "load of {who}: the base disk {} of image `{}` cannot be used ({e}): set source in [images.{}] to an existing qcow2 file",
                    plan.image.source,
                    plan.image.name,
                    plan.image.name
                ))
            })?;
            if !base.is_file() {
                return Err(Outcome::Fatal(anyhow::anyhow!(
                    "load of {who}: the base disk {} of image `{}` is not a file",
                    base.display(),
                    plan.image.name
                )));
            }
            let overlay = overlay_path(&self.config.disk_dir, &plan.computer.name);
            self.spares(plan, &base, &overlay, report)?;
            Some((base, overlay))
        } else {
            None
        };
        let mac = plan.computer.mac.clone().unwrap_or_default();
        if uses(&text, "mac") && mac.trim().is_empty() {
            return Err(Outcome::Fatal(anyhow::anyhow!(
                "load of {who}: the template {} uses {{mac}} but [computers.{who}] has no mac: set mac = \"52:54:00:...\" or remove {{mac}} from the template",
                template.display()
            )));
        }
        let public_mac = plan
            .computer
            .public
            .as_ref()
            .map(|n| n.mac.clone())
            .unwrap_or_default();
        if uses(&text, "public_mac") && public_mac.is_empty() {
            return Err(Outcome::Fatal(anyhow::anyhow!(
                "load of {who}: the template {} uses {{public_mac}} (a second interface, on the public network) but [computers.{who}] has no public_mac: set public_mac = \"52:54:00:...\" or take that interface out of the template",
                template.display()
            )));
        }
        let mut values = placeholders(plan, attempt);
        let disk = overlay
            .as_ref()
            .map(|(_, o)| o.display().to_string())
            .unwrap_or_default();
        let cfg = &plan.image.config;
        values.extend([
            ("name", plan.computer.node.clone()),
            ("disk", disk),
            ("mac", mac),
            ("public_mac", public_mac),
            (
                "memory",
                cfg.memory.unwrap_or(DEFAULT_MEMORY_MIB).to_string(),
            ),
            ("cpus", cfg.cpus.unwrap_or(DEFAULT_CPUS).to_string()),
        ]);
        Ok(Prepared {
            xml: Some(render(&text, &values)),
            overlay,
        })
    }

    /// Fatal when the overlay a load makes afresh is the base disk, or a
    /// file the base stands on (`qemu-img info --backing-chain`): making
    /// it would destroy the golden disk.
    fn spares(
        &self,
        plan: &Plan,
        base: &Path,
        overlay: &Path,
        report: &Reporter,
    ) -> Result<(), Outcome> {
        let who = &plan.computer.name;
        let refuse = |why: String| {
            Outcome::Fatal(anyhow::anyhow!(
                "load of {who}: refusing to load: {why}, and every load makes the overlay afresh: set disk_dir elsewhere, or move the base disk"
            ))
        };
        if same_file(base, overlay) {
            return Err(refuse(format!(
                "the base disk {} of image `{}` is the computer's overlay {}",
                base.display(),
                plan.image.name,
                overlay.display()
            )));
        }
        let base_s = base.display().to_string();
        let argv = [
            self.config.qemu_img.as_str(),
            "info",
            "-U",
            "--backing-chain",
            "--output=json",
            &base_s,
        ];
        let cmd = Cmd::new(&argv, self.config.command_timeout);
        let (out, shown) = self.exec(plan, report, cmd, "qemu-utils")?;
        if !out.success() {
            return Err(Outcome::Fatal(anyhow::anyhow!(
                "load of {who}: `{shown}` exited {}: the base disk {base_s} of image `{}`, or a file it stands on, cannot be read: {}",
                out.status,
                plan.image.name,
                crate::exec::excerpt(&out.text(), 4)
            )));
        }
        match Chain::parse(&out.stdout).and_then(|c| c.holds(overlay).map(Path::to_path_buf)) {
            Some(hit) => Err(refuse(format!(
                "the base disk {base_s} of image `{}` stands on {}, which is the computer's overlay",
                plan.image.name,
                hit.display()
            ))),
            None => Ok(()),
        }
    }

    fn destroy(&self, plan: &Plan, report: &Reporter, state: &str) -> Result<(), Outcome> {
        let name = plan.computer.node.as_str();
        report.info(&format!("domain {name} is {state}: destroying it"));
        let (out, shown) = self.virsh(
            plan,
            report,
            &["destroy", name],
            self.config.command_timeout,
        )?;
        if out.success() || out.text().contains("domain is not running") {
            return Ok(());
        }
        Err(self.failed(
            plan,
            &shown,
            &out,
            &format!("stop domain `{name}`"),
            Outcome::Retry,
        ))
    }

    fn undefine(&self, plan: &Plan, report: &Reporter) -> Result<(), Outcome> {
        let name = plan.computer.node.as_str();
        report.info(&format!("undefining domain {name}"));
        let t = self.config.command_timeout;
        let mut args = vec!["undefine", "--managed-save", "--snapshots-metadata", name];
        let (mut out, mut shown) = self.virsh(plan, report, &args, t)?;
        if !out.success() && out.text().to_lowercase().contains("nvram") {
            // Domains with UEFI variables need --nvram; not every driver
            // takes the flag, so it is only added when asked for.
            args.insert(1, "--nvram");
            (out, shown) = self.virsh(plan, report, &args, t)?;
        }
        if out.success() || classify(&out.text()) == Failure::NoDomain {
            return Ok(());
        }
        Err(self.failed(
            plan,
            &shown,
            &out,
            &format!("undefine domain `{name}`"),
            Outcome::Fatal,
        ))
    }

    fn create_overlay(
        &self,
        plan: &Plan,
        report: &Reporter,
        base: &Path,
        overlay: &Path,
    ) -> Result<(), Outcome> {
        let who = &plan.computer.name;
        std::fs::create_dir_all(&self.config.disk_dir).map_err(|e| {
            Outcome::Fatal(anyhow::anyhow!(
                "load of {who}: cannot create disk_dir {} ({e}): set disk_dir to a writable directory",
                self.config.disk_dir.display()
            ))
        })?;
        report.info(&format!(
            "new disk overlay {} over {}",
            overlay.display(),
            base.display()
        ));
        let base_s = base.display().to_string();
        let overlay_s = overlay.display().to_string();
        let argv = [
            self.config.qemu_img.as_str(),
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            &base_s,
            "-F",
            "qcow2",
            &overlay_s,
        ];
        let cmd = Cmd::new(&argv, self.config.command_timeout);
        let (out, shown) = self.exec(plan, report, cmd, "qemu-utils")?;
        if out.success() {
            return Ok(());
        }
        let e = anyhow::anyhow!(
            "`{shown}` exited {}: {}",
            out.status,
            crate::exec::excerpt(&out.text(), 4)
        )
        .context(format!(
            "load of {who}: cannot create the disk overlay {}",
            overlay.display()
        ));
        // A lock held by a process that is going away may clear; anything
        // else (a base that is not qcow2, no space, permissions) will not.
        if out.text().contains("lock") {
            Err(Outcome::Retry(e))
        } else {
            Err(Outcome::Fatal(e))
        }
    }

    fn define(
        &self,
        plan: &Plan,
        report: &Reporter,
        xml: &str,
        template: &Path,
    ) -> Result<(), Outcome> {
        let who = &plan.computer.name;
        let file = crate::state::StateDir::new(&plan.state_dir)
            .computer_dir(who)
            .join("domain.xml");
        crate::state::write_atomic(&file, xml.as_bytes()).map_err(|e| {
            Outcome::Fatal(e.context(format!(
                "load of {who}: cannot write the domain XML to {}",
                file.display()
            )))
        })?;
        let name = plan.computer.node.as_str();
        report.info(&format!(
            "defining domain {name} from {} (rendered to {})",
            template.display(),
            file.display()
        ));
        let file_s = file.display().to_string();
        let (out, shown) = self.virsh(
            plan,
            report,
            &["define", &file_s],
            self.config.command_timeout,
        )?;
        if out.success() {
            return Ok(());
        }
        let what = if classify(&out.text()) == Failure::Xml {
            format!(
                "define domain `{name}`: libvirt rejects the XML rendered from {} (fix the template; the rendered file is {})",
                template.display(),
                file.display()
            )
        } else {
            format!(
                "define domain `{name}` from {} (rendered to {})",
                template.display(),
                file.display()
            )
        };
        Err(self.failed(plan, &shown, &out, &what, Outcome::Fatal))
    }

    fn start(&self, plan: &Plan, report: &Reporter) -> Result<(), Outcome> {
        let name = plan.computer.node.as_str();
        report.info(&format!("starting domain {name}"));
        let (out, shown) =
            self.virsh(plan, report, &["start", name], self.config.command_timeout)?;
        if out.success() || out.text().contains("already active") {
            return Ok(());
        }
        Err(self.failed(
            plan,
            &shown,
            &out,
            &format!("start domain `{name}`"),
            Outcome::Retry,
        ))
    }

    /// Waits (step `running`) until libvirt says the domain runs.
    fn wait_running(
        &self,
        plan: &Plan,
        attempt: Attempt,
        report: &Reporter,
    ) -> Result<(), Outcome> {
        let name = plan.computer.node.as_str();
        let who = &plan.computer.name;
        let timeout = attempt.scale(self.config.start_timeout);
        report.step("running", Some(timeout));
        let mut last = String::new();
        let mut error = None;
        let w = wait::poll(
            report,
            Limits {
                timeout,
                stall: None,
            },
            Pace::COSTLY,
            |left| {
                let t = self
                    .config
                    .command_timeout
                    .min(left.max(Duration::from_secs(1)));
                let p = match self.domstate(plan, report, t) {
                    Ok(Some(s)) if s == "running" => Poll::Ready(s),
                    Ok(Some(s)) => Poll::NotYet(format!("domain {name} is {s}")),
                    Ok(None) => Poll::NotYet(format!("domain {name} is gone")),
                    Err(Outcome::Fatal(e)) => Poll::Fatal(e),
                    Err(o) => {
                        let s = o.error().map(|e| format!("{:#}", e)).unwrap_or_default();
                        error = Some(s.clone());
                        Poll::NotYet(s)
                    }
                };
                if let Poll::NotYet(s) = &p {
                    last.clone_from(s);
                }
                p
            },
        );
        match w.into_outcome(
            &format!("waiting for domain {name} to run"),
            timeout,
            report,
        ) {
            Ok(_) => {
                report.step_done(&format!("domain {name} is running"));
                Ok(())
            }
            Err(Outcome::Retry(_)) => Err(Outcome::Retry(anyhow::anyhow!(
                "load of {who}: domain {name} was started but is not running after {} (last seen: {}{})",
                duration::fmt(timeout),
                last,
                error
                    .map(|e| format!("; last error: {e}"))
                    .unwrap_or_default()
            ))),
            Err(o) => Err(o),
        }
    }

    fn load_steps(&self, plan: &Plan, attempt: Attempt, report: &Reporter) -> Result<(), Outcome> {
        let name = plan.computer.node.as_str();
        let who = &plan.computer.name;
        let template = plan.image.config.domain_xml.as_deref();
        let prepared = match template {
            Some(t) => self.prepare(plan, attempt, t, report)?,
            None => Prepared {
                xml: None,
                overlay: None,
            },
        };
        let state = self.domstate(plan, report, self.config.command_timeout)?;
        let define = match (&prepared.xml, &state) {
            (None, None) => {
                return Err(Outcome::Fatal(anyhow::anyhow!(
                    "load of {who}: libvirt at {} has no domain `{name}`: define it (virsh define) or set domain_xml in [images.{}]",
                    self.config.uri,
                    plan.image.name
                )));
            }
            (None, Some(_)) => false,
            (Some(_), None) => true,
            (Some(_), Some(_)) => !self.config.reuse_domain,
        };
        if let Some(s) = &state {
            // Anything but "shut off" has a live process (running, paused,
            // in shutdown, crashed, pmsuspended).
            if s != "shut off" {
                self.destroy(plan, report, s)?;
            } else {
                report.info(&format!("domain {name} is shut off"));
            }
        }
        if define && state.is_some() {
            self.undefine(plan, report)?;
        }
        if let Some((base, overlay)) = &prepared.overlay {
            self.create_overlay(plan, report, base, overlay)?;
        }
        match (&prepared.xml, template) {
            (Some(xml), Some(t)) if define => self.define(plan, report, xml, t)?,
            _ => report.info(&format!("reusing the definition of domain {name}")),
        }
        self.start(plan, report)?;
        self.wait_running(plan, attempt, report)
    }
}

impl Libvirt {
    /// `virsh -c URI dominfo NODE`: the domain a load starts. Without a
    /// template it must be there; with one, a load defines it.
    /// `virsh net-info NAME`: the network is defined, and whether it is
    /// active (a load starts the domain, which fails on an inactive one).
    fn netinfo(&self, name: &str) -> super::Checked {
        let what = format!("libvirt network {name} at {}", self.config.uri);
        let argv = [
            self.config.virsh.as_str(),
            "-c",
            self.config.uri.as_str(),
            "net-info",
            name,
        ];
        let cmd = Cmd::new(&argv, self.config.command_timeout);
        let shown = cmd.display();
        match cmd.run() {
            Ok(out) if out.success() => {
                let active = out
                    .stdout
                    .lines()
                    .find_map(|l| l.strip_prefix("Active:"))
                    .map(str::trim);
                match active {
                    Some("no") => super::Checked::new(
                        what,
                        false,
                        format!(
                            "defined but not active: `virsh net-start {name}` (and net-autostart)"
                        ),
                    ),
                    _ => super::Checked::new(what, true, "active"),
                }
            }
            Ok(out) => super::Checked::new(
                what,
                false,
                format!(
                    "not found ({}): define it, or change the domain template's <source network='{name}'/>",
                    crate::exec::excerpt(&out.text(), 1)
                ),
            ),
            Err(e) => super::Checked::new(what, false, format!("`{shown}`: {e}")),
        }
    }

    fn dominfo(&self, plan: &Plan) -> super::Checked {
        let node = plan.computer.node.as_str();
        let what = format!("libvirt domain {node} at {}", self.config.uri);
        let argv = [
            self.config.virsh.as_str(),
            "-c",
            self.config.uri.as_str(),
            "dominfo",
            node,
        ];
        let cmd = Cmd::new(&argv, self.config.command_timeout);
        let shown = cmd.display();
        let templated = plan.image.config.domain_xml.is_some();
        match cmd.run() {
            Ok(out) if out.success() => {
                let state = out
                    .stdout
                    .lines()
                    .find_map(|l| l.strip_prefix("State:"))
                    .map(str::trim)
                    .unwrap_or("defined");
                super::Checked::new(what, true, format!("defined ({state})"))
            }
            Ok(out) if out.text().contains("failed to get domain") && templated => {
                super::Checked::note(
                    what,
                    "not defined: a load defines it from the image's domain_xml",
                )
            }
            Ok(out) if out.text().contains("failed to get domain") => super::Checked::new(
                what,
                false,
                "not defined, and the image has no domain_xml to define it from: define the domain, fix the computer's `node`, or give the image a domain_xml",
            ),
            Ok(out) => super::Checked::new(
                what,
                false,
                format!(
                    "`{shown}` exited {}: {}",
                    out.status,
                    crate::exec::excerpt(&out.text(), 3)
                ),
            ),
            Err(e) => super::Checked::new(what, false, format!("`{shown}`: {e}")),
        }
    }
}

impl Provisioner for Libvirt {
    /// The domain, and each network the image's domain template puts an
    /// interface on (reimage's disks are files, checked offline: no
    /// storage pool is involved).
    fn online(&self, plan: &Plan) -> Vec<super::Checked> {
        let mut v = vec![self.dominfo(plan)];
        let template = plan
            .image
            .config
            .domain_xml
            .as_ref()
            .and_then(|t| std::fs::read_to_string(t).ok());
        if let Some(text) = template {
            v.extend(template_networks(&text).iter().map(|n| self.netinfo(n)));
        }
        v
    }

    /// The base disk, when the template puts an overlay over it.
    fn local_files(&self, plan: &Plan) -> Vec<LocalFile> {
        let Some(t) = &plan.image.config.domain_xml else {
            return Vec::new();
        };
        if !std::fs::read_to_string(t).is_ok_and(|text| uses(&text, "disk")) {
            return Vec::new();
        }
        vec![LocalFile::new(
            Path::new(&plan.image.source),
            &["images", &plan.image.name, "source"],
            FileUse::Read,
        )]
    }

    fn describe(&self, plan: &Plan) -> Vec<String> {
        self.config.describe(plan)
    }

    fn power_off(&self) -> Option<&dyn PowerOff> {
        Some(self)
    }

    /// The overlay a load makes afresh must not be the base disk.
    fn vet(&self, plan: &Plan) -> Result<(), KeyError> {
        let Some(t) = &plan.image.config.domain_xml else {
            return Ok(());
        };
        let text = std::fs::read_to_string(t).unwrap_or_default();
        if let Some((n, why)) = text.lines().enumerate().find_map(|(n, l)| {
            super::unknown_placeholder(l, &TEMPLATE_PLACEHOLDERS).map(|w| (n, w))
        }) {
            return Err(KeyError {
                path: vec![
                    "images".into(),
                    plan.image.name.clone(),
                    "domain_xml".into(),
                ],
                message: format!(
                    "the domain XML template {}, line {}: {why}",
                    t.display(),
                    n + 1
                ),
            });
        }
        if !uses(&text, "disk") {
            return Ok(());
        }
        let base = Path::new(&plan.image.source);
        let overlay = overlay_path(&self.config.disk_dir, &plan.computer.name);
        if !same_file(base, &overlay) {
            return Ok(());
        }
        let path = if plan.provisioner.table.contains_key("disk_dir") {
            vec!["provisioners", plan.provisioner.name.as_str(), "disk_dir"]
        } else {
            vec!["images", plan.image.name.as_str(), "source"]
        };
        Err(KeyError {
            path: path.into_iter().map(String::from).collect(),
            message: format!(
                "image `{}`'s base disk {} is computer `{}`'s overlay {}, which every load makes afresh: set disk_dir elsewhere, or move the base disk",
                plan.image.name,
                base.display(),
                plan.computer.name,
                overlay.display()
            ),
        })
    }

    fn load(&self, plan: &Plan, attempt: Attempt, report: &Reporter) -> Outcome {
        if let Err(e) = self.vet(plan) {
            return super::refused(plan, e);
        }
        collapse(self.load_steps(plan, attempt, report))
    }

    fn power_reset(&self, plan: &Plan, _attempt: Attempt, report: &Reporter) -> Option<Outcome> {
        let name = plan.computer.node.as_str();
        report.info(&format!("resetting domain {name} (virsh reset)"));
        let r = self
            .virsh(plan, report, &["reset", name], self.config.command_timeout)
            .and_then(|(out, shown)| {
                if out.success() {
                    Ok(())
                } else {
                    let class = if classify(&out.text()) == Failure::NoDomain {
                        Outcome::Fatal
                    } else {
                        Outcome::Retry
                    };
                    Err(self.failed(plan, &shown, &out, &format!("reset domain `{name}`"), class))
                }
            });
        Some(collapse(r))
    }
}

/// `reimage power-off`: `virsh destroy`, libvirt's hard power-off, for a
/// domain with a live process; a domain that is shut off or not defined
/// is off already. The definition and the overlay stay.
impl PowerOff for Libvirt {
    fn off(&self, plan: &Plan, report: &Reporter) -> Outcome {
        let name = plan.computer.node.as_str();
        let r = self
            .domstate(plan, report, self.config.command_timeout)
            .and_then(|state| match state {
                None => {
                    report.info(&format!(
                        "libvirt at {} has no domain {name}: it is off",
                        self.config.uri
                    ));
                    Ok(())
                }
                Some(s) if s == "shut off" => {
                    report.info(&format!("domain {name} is shut off"));
                    Ok(())
                }
                Some(s) => self.destroy(plan, report, &s),
            });
        collapse(r).context(format!("libvirt power-off of {}", plan.computer.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_the_five_xml_specials() {
        assert_eq!(
            crate::xml::escape("a<b>&\"c'"),
            "a&lt;b&gt;&amp;&quot;c&apos;"
        );
        assert_eq!(crate::xml::escape("plain-name_1"), "plain-name_1");
        assert_eq!(crate::xml::escape("&amp;"), "&amp;amp;");
        assert_eq!(crate::xml::escape("ünï"), "ünï");
    }

    #[test]
    fn renders_values_escaped_and_leaves_the_template_alone() {
        let t = "<domain type='kvm'><name>{name}</name><mac address='{mac}'/>{{x}}</domain>";
        let v = vec![
            ("name", "a<&>b".to_string()),
            ("mac", "52:54:00:'\"".to_string()),
        ];
        assert_eq!(
            render(t, &v),
            "<domain type='kvm'><name>a&lt;&amp;&gt;b</name><mac address='52:54:00:&apos;&quot;'/>{x}</domain>"
        );
    }

    #[test]
    fn sees_placeholders_but_not_literal_braces() {
        assert!(uses("<source file='{disk}'/>", "disk"));
        assert!(!uses("<source file='{{disk}}'/>", "disk"));
        assert!(!uses("<name>{name}</name>", "disk"));
        assert!(uses("<mac address='{public_mac}'/>", "public_mac"));
        assert_eq!(
            template_networks(
                "<interface type='network'><source network='default'/></interface>\n\
                 <interface><source  network=\"public\" /></interface>\n\
                 <source file='{disk}'/><source network='default'/>"
            ),
            ["default", "public"]
        );
        assert!(!uses("<mac address='{public_mac}'/>", "mac"));
    }

    #[test]
    fn classifies_virsh_errors() {
        assert_eq!(
            classify("error: failed to connect to the hypervisor\nerror: Connection refused"),
            Failure::Connect
        );
        assert_eq!(
            classify("error: failed to get domain 'vm1'"),
            Failure::NoDomain
        );
        assert_eq!(
            classify(
                "error: Failed to define domain from x.xml\nerror: XML error: Memory size must be specified"
            ),
            Failure::Xml
        );
        assert_eq!(
            classify("error: (domain_definition):1: Couldn't find end of Start Tag"),
            Failure::Xml
        );
        assert_eq!(
            classify("error: internal error: process exited while connecting to monitor"),
            Failure::Other
        );
    }

    #[test]
    fn reads_the_state_line() {
        assert_eq!(parse_state("running\n\n"), "running");
        assert_eq!(parse_state("\nshut off\n"), "shut off");
        assert_eq!(parse_state(""), "unknown");
    }

    #[test]
    fn overlay_names_are_file_names() {
        let d = Path::new("/d");
        assert_eq!(overlay_path(d, "pc7"), Path::new("/d/pc7.qcow2"));
        assert_eq!(overlay_path(d, "../x/y"), Path::new("/d/_x_y.qcow2"));
        assert_eq!(overlay_path(d, ""), Path::new("/d/computer.qcow2"));
    }

    #[test]
    fn validates_and_defaults() {
        let c: LibvirtConfig = toml::from_str("").expect("empty table");
        assert_eq!(c.uri, "qemu:///system");
        assert_eq!(c.start_timeout, Duration::from_secs(300));
        assert!(c.validate().is_ok());
        let c: LibvirtConfig = toml::from_str("uri = \"\"").expect("parses");
        assert!(c.validate().is_err());
        assert!(toml::from_str::<LibvirtConfig>("bogus = 1").is_err());
    }
}
