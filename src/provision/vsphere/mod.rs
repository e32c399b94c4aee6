//! `vsphere` provisioner: the computer's VM, made afresh on every load
//! through the vim25 SOAP API (`/sdk`), which every ESXi host and every
//! vCenter answers.
//!
//! A load is one session. The endpoint says what it is
//! (`ServiceContent.about.apiType`) and that picks the path:
//!
//! - vCenter (`VirtualCenter`): remove the old VM (power off,
//!   `Destroy_Task`), `CloneVM_Task` from the template VM (full, or linked
//!   from the template's current snapshot), placed by folder, resource pool
//!   or cluster or host, and datastore; power on.
//! - standalone ESXi (`HostAgent`, which cannot clone): remove the old VM,
//!   copy the base disk (`CopyVirtualDisk_Task`) or, linked, make a child
//!   disk on it; `CreateVM_Task` from a spec built from the image's
//!   settings; power on.
//!
//! On both, the NIC gets the computer's `mac` when one is configured (the
//! MAC-based DHCP reservations that make `computers.*.address` true), and
//! CPU and memory come from the image when set. Everything a load needs
//! (template, base disk, datastore, network, placement) is looked up before
//! the old VM is removed, so a typo costs the computer nothing.
//!
//! Tasks are waited for through the PropertyCollector (`WaitForUpdatesEx`
//! with a bounded wait), and their progress goes to the spinner and events.
//! The session is logged out on every path, errors and interrupts included.
//! Faults are classified by type (see `soap`): bad credentials, missing
//! privileges and anything missing are fatal; busy, lost hosts, short
//! resources, connection errors and 5xx ask for a retry.
//!
//! Files: `config` (the table and what `check` says), `vcenter` and
//! `esxi` (the two paths), `vim` and `soap` (the API, its envelope and
//! faults); the certificate trust is the shared `crate::tls`; here: the
//! session, the lookups and tasks both paths share, and the provisioner.

mod config;
mod esxi;
mod golden;
mod hardware;
mod online;
mod soap;
mod vcenter;
mod vim;

use std::time::Duration;

use super::{PowerOff, Provisioner, expand, placeholders};
use crate::attempt::Attempt;
use crate::config::{FileUse, KeyError, LocalFile, Plan};
use crate::outcome::{Outcome, collapse};
use crate::report::Reporter;
use crate::secret::Secret;
use crate::tls;
use config::Endpoint;
pub use config::VsphereConfig;
use soap::{Class, Elem, Error, MoRef};
use vim::{About, Obj, Vim};

/// Ethernet card types a template's NIC can have.
const NIC_TYPES: [&str; 8] = [
    "VirtualE1000",
    "VirtualE1000e",
    "VirtualVmxnet3",
    "VirtualVmxnet2",
    "VirtualVmxnet",
    "VirtualPCNet32",
    "VirtualVmxnet3Vrdma",
    "VirtualSriovEthernetCard",
];

/// The vsphere provisioner.
pub struct Vsphere {
    config: VsphereConfig,
}

impl Vsphere {
    /// A vsphere provisioner.
    pub fn new(config: VsphereConfig) -> Vsphere {
        Vsphere { config }
    }

    /// Connects, logs in, runs `f`, logs out whatever `f` returned.
    fn with_session(
        &self,
        plan: &Plan,
        attempt: Attempt,
        report: &Reporter,
        f: impl FnOnce(&Load) -> Result<(), Outcome>,
    ) -> Outcome {
        let cfg = &self.config;
        if cfg.insecure {
            report.warn(&format!(
                "vSphere: TLS certificate verification is off (insecure = true) for {}; set thumbprint (or ca_file) instead",
                cfg.url
            ));
        }
        let vim = match connect(cfg) {
            Ok(v) => v,
            Err(o) => return o,
        };
        let about = &vim.about;
        let path = match path_of(cfg, about, plan, report) {
            Ok(p) => p,
            Err(o) => return o,
        };
        if let Err(e) = vim.login() {
            // An interrupted Login may have opened the session all the
            // same (its answer is still awaited): close it.
            if vim.logged_in() {
                logout(&vim, cfg, report);
            }
            return fail(&format!("log in to {} as {:?}", cfg.url, cfg.username), e);
        }
        report.info(&format!(
            "vSphere: logged in to {} ({}) as {}",
            cfg.url, about.full_name, cfg.username
        ));
        let load = Load {
            vim: &vim,
            cfg,
            report,
            path,
            name: expand(&cfg.vm_name, &placeholders(plan, attempt)),
        };
        let result = f(&load);
        if vim.relogged() {
            report.info(&format!(
                "vSphere: the session on {} had ended (NotAuthenticated); logged in again once",
                cfg.url
            ));
        }
        logout(&vim, cfg, report);
        collapse(result)
    }
}

/// Logs the session out, saying so.
fn logout(vim: &Vim, cfg: &VsphereConfig, report: &Reporter) {
    match vim.logout() {
        Ok(true) => report.info(&format!("vSphere: logged out of {}", cfg.url)),
        Ok(false) => {}
        Err(e) => report.warn(&format!(
            "vSphere: the session on {} was not logged out: {e}",
            cfg.url
        )),
    }
}

/// The load path the endpoint's apiType picks, recorded for `reimage
/// check`; fatal when it is neither, or not the configured one.
fn path_of(
    cfg: &VsphereConfig,
    about: &About,
    plan: &Plan,
    report: &Reporter,
) -> Result<Endpoint, Outcome> {
    let seen = format!("{}\n{}\n", about.api_type, about.full_name);
    if let Err(e) = crate::state::write_atomic(&cfg.seen_file(&plan.state_dir), seen.as_bytes()) {
        report.warn(&format!(
            "vSphere: cannot record what {} is for `reimage check`: {e:#}",
            cfg.url
        ));
    }
    let Some(path) = Endpoint::of_api_type(&about.api_type) else {
        return Err(Outcome::Fatal(anyhow::anyhow!(
            "vSphere {}: apiType {:?} is neither VirtualCenter nor HostAgent",
            cfg.url,
            about.api_type
        )));
    };
    let wrong = match (cfg.endpoint, path) {
        (Endpoint::Vcenter, Endpoint::Esxi) => {
            Some("endpoint = \"vcenter\", but it is an ESXi host")
        }
        (Endpoint::Esxi, Endpoint::Vcenter) => Some("endpoint = \"esxi\", but it is a vCenter"),
        _ => None,
    };
    match wrong {
        Some(w) => Err(Outcome::Fatal(anyhow::anyhow!(
            "vSphere {} ({}): {w}; set endpoint = \"auto\" or fix `url`",
            cfg.url,
            about.full_name
        ))),
        None => Ok(path),
    }
}

/// Reads the password, sets up TLS, reads the service content.
fn connect(cfg: &VsphereConfig) -> Result<Vim, Outcome> {
    let fatal = |m: String| Outcome::Fatal(anyhow::anyhow!("vSphere {}: {m}", cfg.url));
    let Some(pw_path) = &cfg.password_file else {
        return Err(fatal("no password_file is configured".into()));
    };
    let password = Secret::from_file(pw_path, "the vSphere password_file")
        .map_err(|e| fatal(format!("{e:#}")))?;
    let trust = if cfg.insecure {
        tls::Trust::Off
    } else if let Some(ca) = &cfg.ca_file {
        tls::Trust::ca_file(ca, "the vSphere ca_file").map_err(fatal)?
    } else if let Some(t) = &cfg.thumbprint {
        tls::Trust::Pinned(tls::parse_thumbprint(t).map_err(fatal)?)
    } else {
        tls::Trust::System
    };
    let agent = tls::agent(trust, cfg.request_timeout.min(Duration::from_secs(15)));
    let client = soap::Client::new(agent, cfg.sdk_url());
    Vim::connect(
        client,
        &cfg.username,
        password,
        cfg.request_timeout,
    )
    .map_err(|e| {
        let hint = match &e {
            Error::Transport { retry: false, .. } if cfg.thumbprint.is_some() => {
                "; `thumbprint` must be the SHA-256 of the endpoint's certificate (govc about.cert -thumbprint)"
            }
            Error::Transport { retry: false, .. } if cfg.ca_file.is_some() => {
                "; the certificate is not signed by the CA in ca_file, or not issued for this host name"
            }
            Error::Transport { retry: false, .. } => {
                "; set thumbprint to the SHA-256 of the endpoint's certificate (an ESXi host's self-signed one), or ca_file to the CA that signed it (vCenter: https://VCENTER/certs/download.zip)"
            }
            _ => "",
        };
        fail_hint(&format!("connect to {}", cfg.sdk_url()), e, hint)
    })
}

/// An error as the outcome its class says, naming what was being done.
fn fail(what: &str, e: Error) -> Outcome {
    let hint = match e.fault_type() {
        Some("InvalidLogin") => "; check username and password_file",
        Some("NoPermission") => "; the account lacks a privilege: check its role",
        Some("RestrictedVersion") => {
            "; the host's license makes its API read-only (the free vSphere Hypervisor): it cannot be provisioned through the API"
        }
        _ => "",
    };
    fail_hint(what, e, hint)
}

/// `fail` with a hint after the error.
fn fail_hint(what: &str, e: Error, hint: &str) -> Outcome {
    let class = e.class();
    let err = match e {
        Error::Interrupted(s) => {
            return Outcome::Fatal(anyhow::Error::new(crate::signal::Interrupted(s)));
        }
        e => anyhow::anyhow!("vSphere: {what}: {e}{hint}"),
    };
    match class {
        // A session that ended again after the one new login: the next
        // attempt starts a fresh one.
        Class::Retry | Class::Relogin => Outcome::Retry(err),
        Class::Fatal => Outcome::Fatal(err),
    }
}

/// What a load or power reset works with.
struct Load<'a> {
    vim: &'a Vim,
    cfg: &'a VsphereConfig,
    report: &'a Reporter,
    /// The path the endpoint's apiType picked: vCenter or ESXi.
    path: Endpoint,
    /// The VM's name.
    name: String,
}

/// Properties read of every VM looked at.
const VM_PROPS: [&str; 6] = [
    "name",
    "config.template",
    "runtime.powerState",
    "resourcePool",
    "runtime.host",
    "snapshot.currentSnapshot",
];

impl Load<'_> {
    /// Starts a task and waits for it; Ok is its result.
    fn task(
        &self,
        what: &str,
        method: &str,
        this: &MoRef,
        body: &str,
        timeout: Duration,
    ) -> Result<Option<Elem>, Error> {
        let task = self
            .vim
            .invoke(method, this, body)?
            .child("returnval")
            .and_then(Elem::moref)
            .ok_or_else(|| Error::Malformed(format!("{method}: no task in the answer")))?;
        self.vim.wait_task(&task, what, timeout, self.report)
    }

    /// The datacenter: the named one, or the only one.
    fn datacenter(&self) -> Result<Obj, Outcome> {
        let root = self
            .vim
            .manager("rootFolder")
            .map_err(|e| fail("read the service content", e))?;
        let dcs = self
            .vim
            .find(&root, "Datacenter", &["name", "vmFolder", "hostFolder"])
            .map_err(|e| fail("list the datacenters", e))?;
        let names = || {
            dcs.iter()
                .map(|d| d.name().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match &self.cfg.datacenter {
            Some(n) => dcs.iter().find(|d| d.name() == n).cloned().ok_or_else(|| {
                Outcome::Fatal(anyhow::anyhow!(
                    "vSphere: datacenter {n:?} not found (there are: {})",
                    names()
                ))
            }),
            None if dcs.len() == 1 => Ok(dcs[0].clone()),
            None => Err(Outcome::Fatal(anyhow::anyhow!(
                "vSphere: {} datacenters ({}); set `datacenter`",
                dcs.len(),
                names()
            ))),
        }
    }

    /// The one object of `kind` named `name` under `container`; a missing
    /// or ambiguous name is fatal, naming `what` it is.
    fn one(
        &self,
        container: &MoRef,
        kind: &str,
        name: &str,
        props: &[&str],
        what: &str,
    ) -> Result<Obj, Outcome> {
        let mut all = self.named(container, kind, name, props)?;
        match all.len() {
            1 => Ok(all.remove(0)),
            0 => Err(Outcome::Fatal(anyhow::anyhow!(
                "vSphere: {what} {name:?} not found"
            ))),
            n => Err(Outcome::Fatal(anyhow::anyhow!(
                "vSphere: {n} objects are {what} {name:?}; make the name unique"
            ))),
        }
    }

    /// Every object of `kind` named `name` under `container`.
    fn named(
        &self,
        container: &MoRef,
        kind: &str,
        name: &str,
        props: &[&str],
    ) -> Result<Vec<Obj>, Outcome> {
        let what = || format!("look up {kind} {name:?}");
        // Names of all, then the other properties of the matches only: a
        // big vCenter has thousands of VMs with dozens of devices each.
        let matches: Vec<Obj> = self
            .vim
            .find(container, kind, &["name"])
            .map_err(|e| fail(&what(), e))?
            .into_iter()
            .filter(|o| o.name() == name)
            .collect();
        let mut p = vec!["name"];
        p.extend(props.iter().filter(|x| **x != "name"));
        let mut out = Vec::new();
        for m in matches {
            if p.len() == 1 {
                out.push(m);
            } else if let Some(o) = self.vim.get(&m.moref, &p).map_err(|e| fail(&what(), e))? {
                out.push(o);
            }
        }
        Ok(out)
    }

    /// The computer's current VM, if any; more than one of that name is
    /// fatal (which would we remove?).
    fn current_vm(&self, dc: &Obj) -> Result<Option<Obj>, Outcome> {
        let folder = dc_ref(dc, "vmFolder")?;
        let mut vms = self.named(&folder, "VirtualMachine", &self.name, &VM_PROPS)?;
        match vms.len() {
            0 => Ok(None),
            1 => Ok(vms.pop()),
            n => Err(Outcome::Fatal(anyhow::anyhow!(
                "vSphere: {n} VMs are named {:?}; remove all but one",
                self.name
            ))),
        }
    }

    /// Powers the VM off (PowerOffVM_Task) unless it is off already.
    fn power_off_vm(&self, vm: &Obj, timeout: Duration) -> Result<(), Outcome> {
        let name = vm.name();
        if vm.text("runtime.powerState") == Some("poweredOff") {
            self.report.info(&format!("vSphere: VM {name} is off"));
            return Ok(());
        }
        let what = format!("power off VM {name}");
        self.report.step(&what, Some(timeout));
        match self.task(&what, "PowerOffVM_Task", &vm.moref, "", timeout) {
            Ok(_) => self.report.step_done(&format!("VM {name} is off")),
            Err(e) if e.fault_type() == Some("InvalidPowerState") => {
                self.report.step_done(&format!("VM {name} was off"))
            }
            Err(e) => {
                self.report.step_failed(&e.to_string());
                return Err(fail(&what, e));
            }
        }
        Ok(())
    }

    /// Powers the VM off (if on) and destroys it.
    fn remove(&self, vm: &Obj, attempt: Attempt) -> Result<(), Outcome> {
        let timeout = attempt.scale(self.cfg.task_timeout);
        let name = vm.name();
        self.power_off_vm(vm, timeout)?;
        self.report
            .step(&format!("destroy VM {name}"), Some(timeout));
        match self.task(
            &format!("destroy VM {name}"),
            "Destroy_Task",
            &vm.moref,
            "",
            timeout,
        ) {
            Ok(_) => {
                self.report
                    .step_done(&format!("VM {name} ({}) destroyed", vm.moref.value));
                Ok(())
            }
            Err(e) => {
                self.report.step_failed(&e.to_string());
                Err(fail(&format!("destroy VM {name}"), e))
            }
        }
    }

    /// Refuses to remove `old` when it holds what `spares` names: its
    /// directory (`config.files.vmPathName`) and its disks' files go with
    /// it. `spares` gets the VM's directory and disk files and says why
    /// not.
    fn check_old(
        &self,
        old: &Obj,
        spares: impl Fn(Option<String>, Vec<String>) -> Option<String>,
    ) -> Result<(), Outcome> {
        let props = ["config.files.vmPathName", "config.hardware.device"];
        let got = self
            .vim
            .get(&old.moref, &props)
            .map_err(|e| fail(&format!("read VM {}", old.name()), e))?;
        let dir = got
            .as_ref()
            .and_then(|o| o.text("config.files.vmPathName"))
            .and_then(golden::dir_of);
        let disks = got
            .as_ref()
            .and_then(|o| o.prop("config.hardware.device"))
            .map(golden::disk_files)
            .unwrap_or_default();
        match spares(dir, disks) {
            None => Ok(()),
            Some(why) => Err(Outcome::Fatal(anyhow::anyhow!(
                "vSphere: refusing to destroy VM {:?} ({}): {why}",
                old.name(),
                old.moref.value
            ))),
        }
    }

    /// Removes the computer's current VM `old`, if there is one.
    fn remove_if_any(&self, old: Option<Obj>, attempt: Attempt) -> Result<(), Outcome> {
        match old {
            Some(vm) => self.remove(&vm, attempt),
            None => {
                self.report
                    .info(&format!("vSphere: no VM {:?} to remove", self.name));
                Ok(())
            }
        }
    }

    /// Powers the new VM on.
    fn power_on(&self, vm: &MoRef, attempt: Attempt) -> Result<(), Outcome> {
        let timeout = attempt.scale(self.cfg.task_timeout);
        let what = format!("power on VM {}", self.name);
        self.report.step(&what, Some(timeout));
        match self.task(&what, "PowerOnVM_Task", vm, "", timeout) {
            Ok(_) => {
                self.report
                    .step_done(&format!("VM {} ({}) is on", self.name, vm.value));
                Ok(())
            }
            Err(e) => {
                self.report.step_failed(&e.to_string());
                Err(fail(&what, e))
            }
        }
    }

    /// A long task (clone, disk copy) in a step of its own.
    fn long_task(
        &self,
        what: &str,
        method: &str,
        this: &MoRef,
        body: &str,
        timeout: Duration,
        missing: impl Fn(&Error) -> Option<String>,
    ) -> Result<Option<Elem>, Outcome> {
        self.report.step(what, Some(timeout));
        match self.task(what, method, this, body, timeout) {
            Ok(r) => {
                self.report.step_done(&format!("{what}: done"));
                Ok(r)
            }
            Err(e) => {
                self.report.step_failed(&e.to_string());
                if let Some(m) = missing(&e) {
                    return Err(Outcome::Fatal(anyhow::anyhow!(
                        "vSphere: {what}: {m} ({e})"
                    )));
                }
                Err(fail(what, e))
            }
        }
    }
}

/// A reference property of the datacenter.
fn dc_ref(dc: &Obj, prop: &str) -> Result<MoRef, Outcome> {
    dc.moref_of(prop).ok_or_else(|| {
        Outcome::Fatal(anyhow::anyhow!(
            "vSphere: datacenter {} has no {prop}",
            dc.name()
        ))
    })
}

/// The computer's `mac` as the manual MAC vSphere takes, normalized to
/// `aa:bb:cc:dd:ee:ff`: six bytes in hex (`:` or `-` between them), a
/// unicast address that is not all zeros, and within VMware's OUI
/// 00:50:56 only the part kept for manual addresses.
///
/// VMware's vSphere Networking guide (5.5 to 8.0), "Setting a Static MAC
/// Address to a Virtual Machine" and "VMware OUI in Static MAC Addresses"
/// (GUID-ADFECCE5-19E7-4A81-B706-171E279ACBCD): a static address with
/// VMware's OUI must be 00:50:56:XX:YY:ZZ with XX from 00 to 3F, so at most
/// 00:50:56:3F:FF:FF; the rest of the OUI is vCenter's generated addresses
/// and VMkernel adapters', and ESXi refuses it as a static address. Other
/// unique addresses are supported, the guide says (6.5 on), so a site's
/// own OUI passes.
fn manual_mac(mac: &str) -> Result<String, String> {
    let b = crate::config::unicast_mac(mac).map_err(|e| {
        format!("{e}; vSphere takes one in VMware's manual range 00:50:56:00:00:00 to 00:50:56:3f:ff:ff, or a site's own")
    })?;
    let norm = b
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    if b[..3] == [0x00, 0x50, 0x56] && b[3] > 0x3f {
        return Err(format!(
            "`mac` {mac:?} is in VMware's OUI 00:50:56 but above its manual range 00:50:56:00:00:00 to 00:50:56:3f:ff:ff (the rest is kept for the addresses vCenter generates and VMkernel adapters), and vSphere refuses it as a manual MAC; pick one in the range"
        ));
    }
    Ok(norm)
}

/// `vet`'s look at the image's `source`: a template VM's name or a
/// datastore path (`[ds] dir/base.vmdk`), never a file on this machine
/// (a qcow2 for the qemu or libvirt provisioners).
fn vet_source(plan: &Plan) -> Result<(), KeyError> {
    let s = plan.image.source.trim();
    let lower = s.to_ascii_lowercase();
    let local = s.starts_with('/')
        || [".qcow2", ".qcow", ".img", ".raw", ".iso"]
            .iter()
            .any(|e| lower.ends_with(e));
    if !local {
        return Ok(());
    }
    Err(KeyError {
        path: vec!["images".into(), plan.image.name.clone(), "source".into()],
        message: format!(
            "image `{}`: `source` {s:?} is a disk image file on this machine, which vSphere does not load: give the template VM's name (vCenter) or the base disk's datastore path, like \"[datastore1] base/ubuntu.vmdk\" (ESXi host)",
            plan.image.name
        ),
    })
}

/// The MACs a load gives the VM's two NICs: the private one (`mac`, the
/// first NIC) and the public one (`public_mac`, the second), each in the
/// form vSphere takes as a manual MAC; None: vSphere generates it.
#[derive(Debug, Default, Clone)]
pub(super) struct Macs {
    pub private: Option<String>,
    pub public: Option<String>,
}

impl Macs {
    /// The MAC of NIC `index` (0: private, 1: public).
    pub fn at(&self, index: usize) -> Option<&str> {
        match index {
            0 => self.private.as_deref(),
            1 => self.public.as_deref(),
            _ => None,
        }
    }

    /// How many NICs the VM gets: two with a public MAC.
    pub fn count(&self) -> usize {
        if self.public.is_some() { 2 } else { 1 }
    }
}

/// `vet`'s look at the computer's `mac` and `public_mac`: a config error
/// at the key.
fn vet_macs(plan: &Plan) -> Result<Macs, KeyError> {
    let one = |key: &str, m: Option<&str>| -> Result<Option<String>, KeyError> {
        let Some(m) = m else {
            return Ok(None);
        };
        manual_mac(m).map(Some).map_err(|e| KeyError {
            path: vec!["computers".into(), plan.computer.name.clone(), key.into()],
            message: format!(
                "computer `{}`: {}",
                plan.computer.name,
                e.replacen("`mac`", &format!("`{key}`"), 1)
            ),
        })
    };
    let public = plan.computer.public.as_ref().map(|n| n.mac.as_str());
    Ok(Macs {
        private: one("mac", plan.computer.mac.as_deref())?,
        public: one("public_mac", public)?,
    })
}

impl Provisioner for Vsphere {
    fn describe(&self, plan: &Plan) -> Vec<String> {
        self.config.describe(plan)
    }

    fn image_tables(&self) -> Vec<String> {
        self.config.images.keys().cloned().collect()
    }

    fn online(&self, plan: &Plan) -> Vec<super::Checked> {
        self.online_checks(plan)
    }

    /// The password file (a secret) and the CA file.
    fn local_files(&self, plan: &Plan) -> Vec<LocalFile> {
        let name = plan.provisioner.name.as_str();
        [
            ("password_file", &self.config.password_file, FileUse::Secret),
            ("ca_file", &self.config.ca_file, FileUse::Read),
        ]
        .into_iter()
        .filter_map(|(key, p, usage)| {
            Some(LocalFile::new(
                p.as_ref()?,
                &["provisioners", name, key],
                usage,
            ))
        })
        .collect()
    }

    /// The computer's `mac` must be one vSphere takes as a manual MAC;
    /// the VM the load makes must not be where the image's base is.
    fn vet(&self, plan: &Plan) -> Result<(), KeyError> {
        vet_source(plan)?;
        vet_macs(plan)?;
        self.config.vet_public_network(plan)?;
        golden::vet(&self.config, plan)
    }

    fn load(&self, plan: &Plan, attempt: Attempt, report: &Reporter) -> Outcome {
        if let Err(e) = self.vet(plan) {
            return super::refused(plan, e);
        }
        // Checked by vet just now.
        let macs = vet_macs(plan).unwrap_or_default();
        self.with_session(plan, attempt, report, |l| match l.path {
            Endpoint::Vcenter => vcenter::load_vcenter(l, plan, attempt, &macs),
            _ => esxi::load_esxi(l, plan, attempt, &macs),
        })
    }

    fn power_off(&self) -> Option<&dyn PowerOff> {
        Some(self)
    }

    fn power_reset(&self, plan: &Plan, attempt: Attempt, report: &Reporter) -> Option<Outcome> {
        Some(self.with_session(plan, attempt, report, |l| {
            let dc = l.datacenter()?;
            let Some(vm) = l.current_vm(&dc)? else {
                return Err(Outcome::Fatal(anyhow::anyhow!(
                    "vSphere: power reset: no VM named {:?} in datacenter {}",
                    l.name,
                    dc.name()
                )));
            };
            let timeout = attempt.scale(l.cfg.task_timeout);
            let on = vm.text("runtime.powerState") == Some("poweredOn");
            let (what, method) = if on {
                (format!("reset VM {}", l.name), "ResetVM_Task")
            } else {
                (format!("power on VM {}", l.name), "PowerOnVM_Task")
            };
            l.report.step(&what, Some(timeout));
            match l.task(&what, method, &vm.moref, "", timeout) {
                Ok(_) => {
                    l.report.step_done(&format!("{what}: done"));
                    Ok(())
                }
                Err(e) => {
                    l.report.step_failed(&e.to_string());
                    Err(fail(&what, e))
                }
            }
        }))
    }
}

/// `reimage power-off`: the computer's VM powered off (PowerOffVM_Task,
/// vSphere's hard power-off) and kept; no VM of that name, or one that is
/// off, is off already.
impl PowerOff for Vsphere {
    fn off(&self, plan: &Plan, report: &Reporter) -> Outcome {
        let attempt = plan.attempt(1, 1);
        self.with_session(plan, attempt, report, |l| {
            let dc = l.datacenter()?;
            let Some(vm) = l.current_vm(&dc)? else {
                l.report.info(&format!(
                    "vSphere: no VM named {:?} in datacenter {}: it is off",
                    l.name,
                    dc.name()
                ));
                return Ok(());
            };
            l.power_off_vm(&vm, attempt.scale(l.cfg.task_timeout))
        })
    }
}

/// The end of both load paths: the VM the clone or create task made, powered
/// on, its MAC reported.
fn start_new_vm(
    l: &Load,
    what: &str,
    result: Option<Elem>,
    attempt: Attempt,
    macs: &Macs,
) -> Result<(), Outcome> {
    let vm = result
        .as_ref()
        .and_then(Elem::moref)
        .ok_or_else(|| Outcome::Retry(anyhow::anyhow!("vSphere: {what}: the task gave no VM")))?;
    l.power_on(&vm, attempt)?;
    report_macs(l, &vm, macs);
    Ok(())
}

/// The MACs of the NICs in `devices` (a `config.hardware.device`), in
/// their order.
pub(super) fn nic_macs(devices: &Elem) -> Vec<Option<String>> {
    devices
        .children
        .iter()
        .filter(|d| {
            d.xsi_type
                .as_deref()
                .is_some_and(|t| NIC_TYPES.contains(&t))
        })
        .map(|n| n.text_at("macAddress").map(str::to_ascii_lowercase))
        .collect()
}

/// Reports the new VM's MACs; a configured one that did not stick is worth
/// a warning (the DHCP reservation will not match).
fn report_macs(l: &Load, vm: &MoRef, want: &Macs) {
    let got = l
        .vim
        .get(vm, &["config.hardware.device"])
        .ok()
        .flatten()
        .and_then(|o| o.prop("config.hardware.device").cloned())
        .map(|d| nic_macs(&d))
        .unwrap_or_default();
    for (i, g) in got.iter().enumerate().take(want.count()) {
        let which = if i == 0 { "private" } else { "public" };
        match (want.at(i), g) {
            (Some(w), Some(g)) if w != g => l.report.warn(&format!(
                "vSphere: VM {}'s {which} NIC has MAC {g}, not the configured {w}",
                l.name
            )),
            (_, Some(g)) => l.report.info(&format!(
                "vSphere: VM {} ({}) has MAC {g} on its {which} NIC",
                l.name, vm.value
            )),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_macs() {
        assert_eq!(
            manual_mac("00-50-56-0A-0B-0C").expect("dashes"),
            "00:50:56:0a:0b:0c"
        );
        for ok in [
            "00:50:56:00:00:00",
            "00:50:56:3F:FF:FF",
            "00:50:56:00:07:03",
            // Another OUI than VMware's: supported (vSphere 6.5 on).
            "52:54:00:12:34:56",
            "02:00:00:00:00:01",
        ] {
            assert!(manual_mac(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("00:50:56:zz:00:01", "not a MAC address"),
            ("00:50:56:0a:0b", "not a MAC address"),
            ("00:50:56:0a:0b:0c:0d", "not a MAC address"),
            ("0:50:56:0a:0b:0c", "not a MAC address"),
            ("00:50:56:+a:0b:0c", "not a MAC address"),
            ("00:50:56:0a:0b:0c ", "not a MAC address"),
            ("", "not a MAC address"),
            ("00:00:00:00:00:00", "all zeros"),
            ("01:00:5e:00:00:01", "multicast"),
            ("ff:ff:ff:ff:ff:ff", "multicast"),
            ("00:50:56:40:00:00", "above its manual range"),
            ("00:50:56:80:12:34", "above its manual range"),
        ] {
            let e = manual_mac(bad).expect_err(bad);
            assert!(e.starts_with("`mac` "), "the key first: {e}");
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
