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

mod soap;
mod vim;

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Provisioner, expand, placeholders};
use crate::attempt::Attempt;
use crate::config::Plan;
use crate::duration;
use crate::outcome::{Outcome, collapse};
use crate::report::Reporter;
use crate::secret::Secret;
use crate::tls;
use crate::xml::escape;
use soap::{Class, Elem, Error, MoRef};
use vim::{Obj, Vim};

/// Which load path an endpoint gets.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Endpoint {
    /// Whatever the endpoint says it is at load.
    #[default]
    Auto,
    /// A vCenter: clone the template VM.
    Vcenter,
    /// A standalone ESXi host: copy the base disk, create the VM.
    Esxi,
}

/// The virtual NIC of a VM created on an ESXi host.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Nic {
    /// Intel E1000: a driver in every guest, Windows XP included.
    #[default]
    E1000,
    /// Intel 82574 (E1000e): Windows 8 / 2012 and later have the driver.
    E1000e,
    /// VMXNET3: fastest; needs VMware Tools in the guest.
    Vmxnet3,
}

impl Nic {
    fn name(self) -> &'static str {
        match self {
            Nic::E1000 => "e1000",
            Nic::E1000e => "e1000e",
            Nic::Vmxnet3 => "vmxnet3",
        }
    }

    fn xsi_type(self) -> &'static str {
        match self {
            Nic::E1000 => "VirtualE1000",
            Nic::E1000e => "VirtualE1000e",
            Nic::Vmxnet3 => "VirtualVmxnet3",
        }
    }
}

/// The disk controller of a VM created on an ESXi host.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Controller {
    /// LSI Logic SAS: Windows Vista / 2008 and later.
    #[default]
    LsilogicSas,
    /// LSI Logic parallel: Windows 2003/XP (with driver), Linux.
    Lsilogic,
    /// VMware Paravirtual: needs its driver in the guest.
    Pvscsi,
    /// BusLogic: Windows 2000/XP 32-bit.
    Buslogic,
}

impl Controller {
    fn name(self) -> &'static str {
        match self {
            Controller::LsilogicSas => "lsilogic-sas",
            Controller::Lsilogic => "lsilogic",
            Controller::Pvscsi => "pvscsi",
            Controller::Buslogic => "buslogic",
        }
    }

    fn xsi_type(self) -> &'static str {
        match self {
            Controller::LsilogicSas => "VirtualLsiLogicSASController",
            Controller::Lsilogic => "VirtualLsiLogicController",
            Controller::Pvscsi => "ParaVirtualSCSIController",
            Controller::Buslogic => "VirtualBusLogicController",
        }
    }

    /// The adapter type of a disk copied for it.
    fn adapter(self) -> &'static str {
        match self {
            Controller::Buslogic => "busLogic",
            _ => "lsiLogic",
        }
    }
}

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

/// `[provisioners.NAME] kind = "vsphere"`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct VsphereConfig {
    /// The ESXi host's or vCenter's address, `https://vcenter.example`
    /// (`/sdk` is added).
    pub url: String,
    /// The account, e.g. `reimage@vsphere.local` or `root`.
    pub username: String,
    /// File whose first line is the password; never in argv or logs.
    pub password_file: Option<PathBuf>,
    /// PEM file with the CA certificate(s) that signed the endpoint's
    /// certificate (vCenter's VMCA root, usually).
    pub ca_file: Option<PathBuf>,
    /// SHA-256 thumbprint of the endpoint's own certificate, as govc's
    /// `-thumbprint` (an ESXi host's self-signed certificate).
    pub thumbprint: Option<String>,
    /// Skip TLS certificate verification: an explicit opt-out for labs;
    /// every run warns about it.
    #[serde(default)]
    pub insecure: bool,
    /// `auto` (default): the path the endpoint's apiType picks; `vcenter` or
    /// `esxi`: that path, and a fatal error if the endpoint is the other.
    #[serde(default)]
    pub endpoint: Endpoint,
    /// Datacenter name; default: the only one.
    pub datacenter: Option<String>,
    /// VM folder name the VM goes into; default: the datacenter's root VM
    /// folder.
    pub folder: Option<String>,
    /// Resource pool name.
    pub resource_pool: Option<String>,
    /// Cluster name (vCenter): its root resource pool.
    pub cluster: Option<String>,
    /// Host name (vCenter): the VM runs there, in its resource pool unless
    /// one is named.
    pub host: Option<String>,
    /// Datastore name; default: the template's (vCenter) or the base disk's
    /// (ESXi).
    pub datastore: Option<String>,
    /// Network (port group) of the NIC of a VM created on an ESXi host.
    #[serde(default = "default_network")]
    pub network: String,
    /// vCenter: a linked clone from the template's current snapshot; ESXi:
    /// a child disk on the base disk instead of a copy.
    #[serde(default)]
    pub linked: bool,
    /// The VM's name, with placeholders (`{computer}`, `{node}`, `{image}`,
    /// ...); default `{node}` (the computer's name unless `node` is set).
    #[serde(default = "default_vm_name")]
    pub vm_name: String,
    /// Guest OS identifier of a VM created on an ESXi host, e.g.
    /// `windows7_64Guest`.
    #[serde(default = "default_guest_id")]
    pub guest_id: String,
    /// NIC type of a VM created on an ESXi host.
    #[serde(default)]
    pub nic: Nic,
    /// Disk controller of a VM created on an ESXi host.
    #[serde(default)]
    pub disk_controller: Controller,
    /// Limit of each API call.
    #[serde(default = "default_request_timeout", deserialize_with = "duration::de")]
    pub request_timeout: Duration,
    /// Limit of the clone or disk copy, stretched on later attempts.
    #[serde(default = "default_clone_timeout", deserialize_with = "duration::de")]
    pub clone_timeout: Duration,
    /// Limit of every other task (power, destroy, create), stretched on
    /// later attempts.
    #[serde(default = "default_task_timeout", deserialize_with = "duration::de")]
    pub task_timeout: Duration,
}

fn default_network() -> String {
    "VM Network".into()
}

fn default_vm_name() -> String {
    "{node}".into()
}

fn default_guest_id() -> String {
    "otherGuest64".into()
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_clone_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}

fn default_task_timeout() -> Duration {
    Duration::from_secs(10 * 60)
}

impl VsphereConfig {
    /// Checks serde cannot make.
    pub fn validate(&self) -> Result<(), String> {
        let rest = self
            .url
            .strip_prefix("https://")
            .or_else(|| self.url.strip_prefix("http://"))
            .ok_or_else(|| {
                format!(
                    "`url` must start with https:// (or http://), e.g. \"https://vcenter.example\"; got {:?}",
                    self.url
                )
            })?;
        let host = rest.trim_end_matches('/');
        let host = host.strip_suffix("/sdk").unwrap_or(host);
        if host.is_empty() || host.contains(['/', '?', '#', '@', ' ']) {
            return Err(format!(
                "`url` must be the ESXi host's or vCenter's address without a path, e.g. \"https://vcenter.example\"; got {:?}",
                self.url
            ));
        }
        if self.username.trim().is_empty() {
            return Err(
                "`username` must not be empty, e.g. \"reimage@vsphere.local\" or \"root\"".into(),
            );
        }
        if self.password_file.is_none() {
            return Err("`password_file` is required: a file whose first line is the password of `username`".into());
        }
        let trust = [
            self.insecure,
            self.ca_file.is_some(),
            self.thumbprint.is_some(),
        ];
        if trust.iter().filter(|t| **t).count() > 1 {
            return Err(
                "set one of `ca_file`, `thumbprint` and `insecure = true`: they are different ways to trust the endpoint's certificate"
                    .into(),
            );
        }
        if let Some(t) = &self.thumbprint {
            tls::parse_thumbprint(t)?;
        }
        for (key, v) in [
            ("datacenter", &self.datacenter),
            ("folder", &self.folder),
            ("resource_pool", &self.resource_pool),
            ("cluster", &self.cluster),
            ("host", &self.host),
            ("datastore", &self.datastore),
        ] {
            if matches!(v, Some(s) if s.trim().is_empty()) {
                return Err(format!(
                    "`{key}` must not be empty; leave it out for the default"
                ));
            }
        }
        if self.resource_pool.is_some() && self.cluster.is_some() {
            return Err("set `resource_pool` or `cluster`, not both: a cluster stands for its root resource pool".into());
        }
        for (key, v) in [
            ("network", &self.network),
            ("vm_name", &self.vm_name),
            ("guest_id", &self.guest_id),
        ] {
            if v.trim().is_empty() {
                return Err(format!("`{key}` must not be empty"));
            }
        }
        for (key, d) in [
            ("request_timeout", self.request_timeout),
            ("clone_timeout", self.clone_timeout),
            ("task_timeout", self.task_timeout),
        ] {
            if d.is_zero() {
                return Err(format!("`{key}` must be longer than 0s"));
            }
        }
        Ok(())
    }

    /// The SOAP endpoint.
    fn sdk_url(&self) -> String {
        let base = self.url.trim_end_matches('/');
        let base = base.strip_suffix("/sdk").unwrap_or(base);
        format!("{base}/sdk")
    }

    /// Where a load records what the endpoint said it is, for `reimage
    /// check`: `STATE_DIR/vsphere/HOST_PORT.endpoint`.
    fn seen_file(&self, state_dir: &Path) -> PathBuf {
        let host = self
            .url
            .split_once("://")
            .map(|(_, h)| h)
            .unwrap_or(&self.url)
            .trim_end_matches('/')
            .trim_end_matches("/sdk");
        let safe: String = host
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        state_dir.join("vsphere").join(format!("{safe}.endpoint"))
    }

    /// Lines for `reimage check`.
    pub fn describe(&self, plan: &Plan) -> Vec<String> {
        let tls = if !self.url.starts_with("https://") {
            "no TLS (http)".to_string()
        } else if self.insecure {
            "certificate NOT verified (insecure = true)".to_string()
        } else if let Some(ca) = &self.ca_file {
            format!("certificate verified against {}", ca.display())
        } else if let Some(t) = &self.thumbprint {
            format!("certificate pinned to SHA-256 {t}")
        } else {
            "certificate verified against the system's roots".to_string()
        };
        let source = &plan.image.source;
        let vc = format!("vCenter: clone template VM {source:?}");
        let esx = if self.linked {
            format!("ESXi host: a child disk on base disk {source:?}, and create the VM")
        } else {
            format!("ESXi host: copy base disk {source:?} and create the VM")
        };
        let seen = std::fs::read_to_string(self.seen_file(&plan.state_dir)).ok();
        let seen = seen.as_deref().and_then(|t| t.split_once('\n'));
        let path = match (self.endpoint, seen) {
            (Endpoint::Vcenter, _) => format!("path: {vc}"),
            (Endpoint::Esxi, _) => format!("path: {esx}"),
            (Endpoint::Auto, Some((api, name))) if api == "VirtualCenter" || api == "HostAgent" => {
                format!(
                    "path: {} (the endpoint said it is {} at the last connection; decided again at every load)",
                    if api == "VirtualCenter" { &vc } else { &esx },
                    name.trim()
                )
            }
            (Endpoint::Auto, _) => {
                format!("path: decided at load from the endpoint's apiType ({vc}; {esx})")
            }
        };
        let attempt = Attempt::new(1, plan.max_attempts, plan.growth);
        let name = expand(&self.vm_name, &placeholders(plan, attempt));
        let opt = |v: &Option<String>, d: &str| v.clone().unwrap_or_else(|| d.into());
        let cfg = &plan.image.config;
        let mut lines = vec![
            format!("endpoint: {} as {} ({tls})", self.sdk_url(), self.username),
            path,
            format!("VM: {name}"),
            format!(
                "MAC: {}",
                plan.computer
                    .mac
                    .clone()
                    .unwrap_or_else(|| "assigned by vSphere".into())
            ),
            format!(
                "CPUs: {}, memory: {}",
                cfg.cpus
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "the template's (ESXi: 1)".into()),
                cfg.memory
                    .map(|m| format!("{m} MiB"))
                    .unwrap_or_else(|| "the template's (ESXi: 1024 MiB)".into())
            ),
            format!(
                "placement: datacenter {}, folder {}, resource pool {}, host {}, datastore {}",
                opt(&self.datacenter, "the only one"),
                opt(&self.folder, "the root VM folder"),
                match (&self.resource_pool, &self.cluster) {
                    (Some(p), _) => p.clone(),
                    (None, Some(c)) => format!("cluster {c}'s"),
                    (None, None) => "the template's (ESXi: the host's)".into(),
                },
                opt(&self.host, "any"),
                opt(&self.datastore, "the template's or base disk's"),
            ),
            format!(
                "linked: {}",
                if self.linked {
                    "yes (vCenter: from the template's current snapshot; ESXi: a child disk)"
                } else {
                    "no (a full copy)"
                }
            ),
        ];
        if self.endpoint != Endpoint::Vcenter {
            lines.push(format!(
                "ESXi VM: guest {}, {} NIC on {:?}, {} disk controller",
                self.guest_id,
                self.nic.name(),
                self.network,
                self.disk_controller.name()
            ));
        }
        lines.extend([
            format!("request timeout: {}", duration::fmt(self.request_timeout)),
            format!("clone timeout: {}", plan.per_attempt(self.clone_timeout)),
            format!("task timeout: {}", plan.per_attempt(self.task_timeout)),
        ]);
        lines
    }
}

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
        let about = vim.about.clone();
        let vcenter = about.is_vcenter();
        let seen = format!("{}\n{}\n", about.api_type, about.full_name);
        if let Err(e) = crate::state::write_atomic(&cfg.seen_file(&plan.state_dir), seen.as_bytes())
        {
            report.warn(&format!(
                "vSphere: cannot record what {} is for `reimage check`: {e:#}",
                cfg.url
            ));
        }
        if !vcenter && about.api_type != "HostAgent" {
            return Outcome::Fatal(anyhow::anyhow!(
                "vSphere {}: apiType {:?} is neither VirtualCenter nor HostAgent",
                cfg.url,
                about.api_type
            ));
        }
        let wrong = match cfg.endpoint {
            Endpoint::Vcenter if !vcenter => Some("endpoint = \"vcenter\", but it is an ESXi host"),
            Endpoint::Esxi if vcenter => Some("endpoint = \"esxi\", but it is a vCenter"),
            _ => None,
        };
        if let Some(w) = wrong {
            return Outcome::Fatal(anyhow::anyhow!(
                "vSphere {} ({}): {w}; set endpoint = \"auto\" or fix `url`",
                cfg.url,
                about.full_name
            ));
        }
        if let Err(e) = vim.login() {
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
            name: expand(&cfg.vm_name, &placeholders(plan, attempt)),
        };
        let result = f(&load);
        if vim.relogged() {
            report.info(&format!(
                "vSphere: the session on {} had ended (NotAuthenticated); logged in again once",
                cfg.url
            ));
        }
        match vim.logout() {
            Ok(()) => report.info(&format!("vSphere: logged out of {}", cfg.url)),
            Err(e) => report.warn(&format!(
                "vSphere: the session on {} was not logged out: {e}",
                cfg.url
            )),
        }
        collapse(result)
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

    /// Powers the VM off (if on) and destroys it.
    fn remove(&self, vm: &Obj, attempt: Attempt) -> Result<(), Outcome> {
        let timeout = attempt.scale(self.cfg.task_timeout);
        let name = vm.name();
        if vm.text("runtime.powerState") != Some("poweredOff") {
            self.report
                .step(&format!("power off VM {name}"), Some(timeout));
            match self.task(
                &format!("power off VM {name}"),
                "PowerOffVM_Task",
                &vm.moref,
                "",
                timeout,
            ) {
                Ok(_) => self.report.step_end(true, &format!("VM {name} is off")),
                Err(e) if e.fault_type() == Some("InvalidPowerState") => {
                    self.report.step_end(true, &format!("VM {name} was off"))
                }
                Err(e) => {
                    self.report.step_end(false, &e.to_string());
                    return Err(fail(&format!("power off VM {name}"), e));
                }
            }
        }
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
                    .step_end(true, &format!("VM {name} ({}) destroyed", vm.moref.value));
                Ok(())
            }
            Err(e) => {
                self.report.step_end(false, &e.to_string());
                Err(fail(&format!("destroy VM {name}"), e))
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
                    .step_end(true, &format!("VM {} ({}) is on", self.name, vm.value));
                Ok(())
            }
            Err(e) => {
                self.report.step_end(false, &e.to_string());
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
                self.report.step_end(true, &format!("{what}: done"));
                Ok(r)
            }
            Err(e) => {
                self.report.step_end(false, &e.to_string());
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

/// Normalizes a MAC to `aa:bb:cc:dd:ee:ff`.
fn normalize_mac(mac: &str) -> Result<String, String> {
    let parts: Vec<&str> = mac.split([':', '-']).collect();
    if parts.len() != 6
        || parts
            .iter()
            .any(|p| p.len() != 2 || !p.chars().all(|c| c.is_ascii_hexdigit()))
    {
        return Err(format!(
            "`mac` {mac:?} is not a MAC address like \"00:50:56:01:02:03\""
        ));
    }
    Ok(parts.join(":").to_ascii_lowercase())
}

impl Provisioner for Vsphere {
    fn describe(&self, plan: &Plan) -> Vec<String> {
        self.config.describe(plan)
    }

    fn load(&self, plan: &Plan, attempt: Attempt, report: &Reporter) -> Outcome {
        self.with_session(plan, attempt, report, |l| {
            let mac = match &plan.computer.mac {
                Some(m) => Some(normalize_mac(m).map_err(|e| {
                    Outcome::Fatal(anyhow::anyhow!("computer {}: {e}", plan.computer.name))
                })?),
                None => None,
            };
            if l.vim.about.is_vcenter() {
                load_vcenter(l, plan, attempt, mac.as_deref())
            } else {
                load_esxi(l, plan, attempt, mac.as_deref())
            }
        })
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
                    l.report.step_end(true, &format!("{what}: done"));
                    Ok(())
                }
                Err(e) => {
                    l.report.step_end(false, &e.to_string());
                    Err(fail(&what, e))
                }
            }
        }))
    }
}

/// The vCenter path: clone the template.
fn load_vcenter(l: &Load, plan: &Plan, attempt: Attempt, mac: Option<&str>) -> Result<(), Outcome> {
    let cfg = l.cfg;
    let source = plan.image.source.as_str();
    if l.name == source {
        return Err(Outcome::Fatal(anyhow::anyhow!(
            "vSphere: the VM name {:?} is the template's; loading would destroy the template",
            l.name
        )));
    }
    let dc = l.datacenter()?;
    let vm_folder = dc_ref(&dc, "vmFolder")?;
    let host_folder = dc_ref(&dc, "hostFolder")?;
    let mut props: Vec<&str> = VM_PROPS.to_vec();
    props.push("config.hardware.device");
    let template = l.one(&vm_folder, "VirtualMachine", source, &props, "template VM")?;

    // Placement, all resolved before anything is removed.
    let folder = match &cfg.folder {
        Some(f) => l.one(&vm_folder, "Folder", f, &[], "folder")?.moref,
        None => vm_folder.clone(),
    };
    let host = match &cfg.host {
        Some(h) => Some(l.one(&host_folder, "HostSystem", h, &["parent"], "host")?),
        None => None,
    };
    let pool = if let Some(p) = &cfg.resource_pool {
        l.one(&host_folder, "ResourcePool", p, &[], "resource pool")?
            .moref
    } else if let Some(c) = &cfg.cluster {
        l.one(
            &host_folder,
            "ClusterComputeResource",
            c,
            &["resourcePool"],
            "cluster",
        )?
        .moref_of("resourcePool")
        .ok_or_else(|| {
            Outcome::Fatal(anyhow::anyhow!(
                "vSphere: cluster {c:?} has no resource pool"
            ))
        })?
    } else if let Some(h) = &host {
        pool_of_host(l, h)?
    } else if let Some(p) = template.moref_of("resourcePool") {
        p
    } else {
        let h = template.moref_of("runtime.host").ok_or_else(|| {
            Outcome::Fatal(anyhow::anyhow!(
                "vSphere: template {source:?} has no host; set `resource_pool`, `cluster` or `host`"
            ))
        })?;
        let h = l
            .vim
            .get(&h, &["parent"])
            .map_err(|e| fail("read the template's host", e))?
            .ok_or_else(|| {
                Outcome::Retry(anyhow::anyhow!("vSphere: the template's host vanished"))
            })?;
        pool_of_host(l, &h)?
    };
    let datastore = match &cfg.datastore {
        Some(d) => Some(l.one(&dc.moref, "Datastore", d, &[], "datastore")?.moref),
        None => None,
    };
    let snapshot = if cfg.linked {
        Some(template.moref_of("snapshot.currentSnapshot").ok_or_else(|| {
            Outcome::Fatal(anyhow::anyhow!(
                "vSphere: linked = true needs a snapshot of template {source:?}, and it has none; take one or set linked = false"
            ))
        })?)
    } else {
        None
    };
    let nic_edit = match mac {
        Some(m) => Some(nic_mac_edit(&template, m).ok_or_else(|| {
            Outcome::Fatal(anyhow::anyhow!(
                "vSphere: template {source:?} has no network card to give MAC {m}"
            ))
        })?),
        None => None,
    };

    if let Some(old) = l.current_vm(&dc)? {
        if old.moref == template.moref {
            return Err(Outcome::Fatal(anyhow::anyhow!(
                "vSphere: VM {:?} is the template itself; refusing to destroy it",
                l.name
            )));
        }
        l.remove(&old, attempt)?;
    } else {
        l.report
            .info(&format!("vSphere: no VM {:?} to remove", l.name));
    }

    // VirtualMachineCloneSpec, in the schema's element order.
    let mut location = String::new();
    if let Some(d) = &datastore {
        location.push_str(&d.xml("datastore"));
    }
    if snapshot.is_some() {
        location.push_str("<diskMoveType>createNewChildDiskBacking</diskMoveType>");
    }
    location.push_str(&pool.xml("pool"));
    if let Some(h) = &host {
        location.push_str(&h.moref.xml("host"));
    }
    let mut config = String::new();
    if let Some(c) = plan.image.config.cpus {
        config.push_str(&format!("<numCPUs>{c}</numCPUs>"));
    }
    if let Some(m) = plan.image.config.memory {
        config.push_str(&format!("<memoryMB>{m}</memoryMB>"));
    }
    if let Some(edit) = &nic_edit {
        config.push_str(edit);
    }
    let mut spec = format!("<location>{location}</location><template>false</template>");
    if !config.is_empty() {
        spec.push_str(&format!("<config>{config}</config>"));
    }
    spec.push_str("<powerOn>false</powerOn>");
    if let Some(s) = &snapshot {
        spec.push_str(&s.xml("snapshot"));
    }
    let body = format!(
        "{}<name>{}</name><spec>{spec}</spec>",
        folder.xml("folder"),
        escape(&l.name)
    );
    let what = format!(
        "{} clone of {source} to VM {}",
        if cfg.linked { "linked" } else { "full" },
        l.name
    );
    let result = l.long_task(
        &what,
        "CloneVM_Task",
        &template.moref,
        &body,
        attempt.scale(cfg.clone_timeout),
        |_| None,
    )?;
    start_new_vm(l, &what, result, attempt, mac)
}

/// The root resource pool of a host's compute resource.
fn pool_of_host(l: &Load, host: &Obj) -> Result<MoRef, Outcome> {
    let parent = host.moref_of("parent").ok_or_else(|| {
        Outcome::Fatal(anyhow::anyhow!(
            "vSphere: host {:?} has no parent",
            host.name()
        ))
    })?;
    l.vim
        .get(&parent, &["resourcePool"])
        .map_err(|e| fail("read a host's resource pool", e))?
        .and_then(|p| p.moref_of("resourcePool"))
        .ok_or_else(|| {
            Outcome::Fatal(anyhow::anyhow!(
                "vSphere: host {:?} has no resource pool",
                host.name()
            ))
        })
}

/// A deviceChange that gives the template's first NIC the manual MAC `mac`,
/// keeping every other property of the card as the template has it.
fn nic_mac_edit(template: &Obj, mac: &str) -> Option<String> {
    let devices = template.prop("config.hardware.device")?;
    let nic = devices.children.iter().find(|d| {
        d.xsi_type
            .as_deref()
            .is_some_and(|t| NIC_TYPES.contains(&t))
    })?;
    let ty = nic.xsi_type.as_deref()?;
    let mut inner = String::new();
    let mut placed = false;
    for c in &nic.children {
        match c.name.as_str() {
            "addressType" => {
                inner.push_str("<addressType>manual</addressType>");
                inner.push_str(&format!("<macAddress>{}</macAddress>", escape(mac)));
                placed = true;
            }
            "macAddress" => {}
            // These follow macAddress in the schema.
            "wakeOnLanEnabled"
            | "resourceAllocation"
            | "externalId"
            | "uptCompatibilityEnabled"
                if !placed =>
            {
                inner.push_str("<addressType>manual</addressType>");
                inner.push_str(&format!("<macAddress>{}</macAddress>", escape(mac)));
                placed = true;
                inner.push_str(&c.raw);
            }
            _ => inner.push_str(&c.raw),
        }
    }
    if !placed {
        inner.push_str("<addressType>manual</addressType>");
        inner.push_str(&format!("<macAddress>{}</macAddress>", escape(mac)));
    }
    Some(format!(
        "<deviceChange><operation>edit</operation><device xsi:type=\"{ty}\">{inner}</device></deviceChange>"
    ))
}

/// The end of both load paths: the VM the clone or create task made, powered
/// on, its MAC reported.
fn start_new_vm(
    l: &Load,
    what: &str,
    result: Option<Elem>,
    attempt: Attempt,
    mac: Option<&str>,
) -> Result<(), Outcome> {
    let vm = result
        .as_ref()
        .and_then(Elem::moref)
        .ok_or_else(|| Outcome::Retry(anyhow::anyhow!("vSphere: {what}: the task gave no VM")))?;
    l.power_on(&vm, attempt)?;
    report_mac(l, &vm, mac);
    Ok(())
}

/// Reports the new VM's MAC; a configured one that did not stick is worth a
/// warning (the DHCP reservation will not match).
fn report_mac(l: &Load, vm: &MoRef, want: Option<&str>) {
    let got = l
        .vim
        .get(vm, &["config.hardware.device"])
        .ok()
        .flatten()
        .and_then(|o| o.prop("config.hardware.device").cloned())
        .and_then(|d| {
            d.children
                .iter()
                .find(|d| {
                    d.xsi_type
                        .as_deref()
                        .is_some_and(|t| NIC_TYPES.contains(&t))
                })
                .and_then(|n| n.text_at("macAddress").map(str::to_ascii_lowercase))
        });
    match (want, got) {
        (Some(w), Some(g)) if w != g => l.report.warn(&format!(
            "vSphere: VM {} has MAC {g}, not the configured {w}",
            l.name
        )),
        (_, Some(g)) => l.report.info(&format!(
            "vSphere: VM {} ({}) has MAC {g}",
            l.name, vm.value
        )),
        _ => {}
    }
}

/// `[datastore] path` → (datastore, path).
fn split_ds_path(p: &str) -> Option<(&str, &str)> {
    let rest = p.trim().strip_prefix('[')?;
    let (ds, path) = rest.split_once(']')?;
    let path = path.trim();
    (!ds.is_empty() && !path.is_empty()).then_some((ds, path))
}

/// The standalone ESXi path: copy (or link) the base disk, create the VM.
fn load_esxi(l: &Load, plan: &Plan, attempt: Attempt, mac: Option<&str>) -> Result<(), Outcome> {
    let cfg = l.cfg;
    let source = plan.image.source.as_str();
    let Some((src_ds, _)) = split_ds_path(source) else {
        return Err(Outcome::Fatal(anyhow::anyhow!(
            "vSphere: on an ESXi host the image's source is the base disk's datastore path, e.g. \"[datastore1] base/win7.vmdk\"; got {source:?}"
        )));
    };
    let dc = l.datacenter()?;
    let host_folder = dc_ref(&dc, "hostFolder")?;
    let vm_folder = dc_ref(&dc, "vmFolder")?;
    let ds_name = cfg.datastore.as_deref().unwrap_or(src_ds);
    l.one(&dc.moref, "Datastore", src_ds, &[], "datastore")?;
    if ds_name != src_ds {
        l.one(&dc.moref, "Datastore", ds_name, &[], "datastore")?;
    }
    l.one(&dc.moref, "Network", &cfg.network, &[], "network")?;
    let pool = match &cfg.resource_pool {
        Some(p) => {
            l.one(&host_folder, "ResourcePool", p, &[], "resource pool")?
                .moref
        }
        None => {
            let crs = l
                .vim
                .find(&host_folder, "ComputeResource", &["resourcePool"])
                .map_err(|e| fail("look up the host's resource pool", e))?;
            crs.first()
                .and_then(|c| c.moref_of("resourcePool"))
                .ok_or_else(|| {
                    Outcome::Fatal(anyhow::anyhow!("vSphere: the host has no resource pool"))
                })?
        }
    };
    let folder = match &cfg.folder {
        Some(f) => l.one(&vm_folder, "Folder", f, &[], "folder")?.moref,
        None => vm_folder.clone(),
    };
    let dc_xml = |tag: &str| dc.moref.xml(tag);

    // The base disk must be there before the old VM goes.
    let vdm = l
        .vim
        .manager("virtualDiskManager")
        .map_err(|e| fail("read the service content", e))?;
    if let Err(e) = l.vim.invoke(
        "QueryVirtualDiskUuid",
        &vdm,
        &format!("<name>{}</name>{}", escape(source), dc_xml("datacenter")),
    ) {
        return Err(match e.class() {
            Class::Retry => fail(&format!("look at base disk {source}"), e),
            _ => Outcome::Fatal(anyhow::anyhow!(
                "vSphere: base disk {source:?} not found or not readable ({e})"
            )),
        });
    }

    if let Some(old) = l.current_vm(&dc)? {
        l.remove(&old, attempt)?;
    } else {
        l.report
            .info(&format!("vSphere: no VM {:?} to remove", l.name));
    }

    // The VM's directory: a leftover of a failed load goes first.
    let fm = l
        .vim
        .manager("fileManager")
        .map_err(|e| fail("read the service content", e))?;
    let dir = format!("[{ds_name}] {}", l.name);
    let timeout = attempt.scale(cfg.task_timeout);
    match l.task(
        &format!("delete {dir}"),
        "DeleteDatastoreFile_Task",
        &fm,
        &format!("<name>{}</name>{}", escape(&dir), dc_xml("datacenter")),
        timeout,
    ) {
        Ok(_) => l
            .report
            .info(&format!("vSphere: removed the leftover {dir}")),
        Err(e) if matches!(e.fault_type(), Some("FileNotFound")) => {}
        Err(e) => return Err(fail(&format!("delete the leftover {dir}"), e)),
    }
    match l.vim.invoke(
        "MakeDirectory",
        &fm,
        &format!(
            "<name>{}</name>{}<createParentDirectories>true</createParentDirectories>",
            escape(&dir),
            dc_xml("datacenter")
        ),
    ) {
        Ok(_) => {}
        Err(e) if e.fault_type() == Some("FileAlreadyExists") => {}
        Err(e) => return Err(fail(&format!("make directory {dir}"), e)),
    }

    let disk = format!("{dir}/{}.vmdk", l.name);
    if !cfg.linked {
        let body = format!(
            "<sourceName>{}</sourceName>{}<destName>{}</destName>{}\
<destSpec xsi:type=\"VirtualDiskSpec\"><diskType>thin</diskType><adapterType>{}</adapterType></destSpec><force>false</force>",
            escape(source),
            dc_xml("sourceDatacenter"),
            escape(&disk),
            dc_xml("destDatacenter"),
            cfg.disk_controller.adapter()
        );
        l.long_task(
            &format!("copy base disk {source} to {disk}"),
            "CopyVirtualDisk_Task",
            &vdm,
            &body,
            attempt.scale(cfg.clone_timeout),
            |e| {
                matches!(
                    e.fault_type(),
                    Some("FileNotFound" | "NotFound" | "CannotAccessFile")
                )
                .then(|| format!("base disk {source:?} not found"))
            },
        )?;
    }

    // VirtualMachineConfigSpec, in the schema's element order.
    let cfgi = &plan.image.config;
    let mut spec = format!(
        "<name>{}</name><guestId>{}</guestId><files><vmPathName>{}</vmPathName></files>",
        escape(&l.name),
        escape(&cfg.guest_id),
        escape(&format!("{dir}/{}.vmx", l.name))
    );
    spec.push_str(&format!("<numCPUs>{}</numCPUs>", cfgi.cpus.unwrap_or(1)));
    spec.push_str(&format!(
        "<memoryMB>{}</memoryMB>",
        cfgi.memory.unwrap_or(1024)
    ));
    spec.push_str(&format!(
        "<deviceChange><operation>add</operation><device xsi:type=\"{}\"><key>-100</key>\
<busNumber>0</busNumber><sharedBus>noSharing</sharedBus></device></deviceChange>",
        cfg.disk_controller.xsi_type()
    ));
    let parent = if cfg.linked {
        format!(
            "<parent><fileName>{}</fileName><diskMode>persistent</diskMode></parent>",
            escape(source)
        )
    } else {
        String::new()
    };
    spec.push_str(&format!(
        "<deviceChange><operation>add</operation>{}<device xsi:type=\"VirtualDisk\"><key>-101</key>\
<backing xsi:type=\"VirtualDiskFlatVer2BackingInfo\"><fileName>{}</fileName><diskMode>persistent</diskMode>{parent}</backing>\
<controllerKey>-100</controllerKey><unitNumber>0</unitNumber><capacityInKB>0</capacityInKB></device></deviceChange>",
        if cfg.linked { "<fileOperation>create</fileOperation>" } else { "" },
        escape(&disk)
    ));
    let address = match mac {
        Some(m) => format!(
            "<addressType>manual</addressType><macAddress>{}</macAddress>",
            escape(m)
        ),
        None => "<addressType>generated</addressType>".into(),
    };
    spec.push_str(&format!(
        "<deviceChange><operation>add</operation><device xsi:type=\"{}\"><key>-102</key>\
<backing xsi:type=\"VirtualEthernetCardNetworkBackingInfo\"><deviceName>{}</deviceName></backing>\
<connectable><startConnected>true</startConnected><allowGuestControl>true</allowGuestControl><connected>true</connected></connectable>\
{address}</device></deviceChange>",
        cfg.nic.xsi_type(),
        escape(&cfg.network)
    ));
    let body = format!("<config>{spec}</config>{}", pool.xml("pool"));
    let what = format!("create VM {}", l.name);
    let result = l.long_task(&what, "CreateVM_Task", &folder, &body, timeout, |_| None)?;
    start_new_vm(l, &what, result, attempt, mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Result<VsphereConfig, String> {
        let text = format!(
            "url = \"https://vc.example\"\nusername = \"u\"\npassword_file = \"/p\"\n{extra}"
        );
        toml::from_str(&text).map_err(|e| e.to_string())
    }

    #[test]
    fn config_defaults_and_checks() {
        let c = cfg("").expect("parses");
        assert_eq!(c.endpoint, Endpoint::Auto);
        assert_eq!(c.vm_name, "{node}");
        assert_eq!(c.network, "VM Network");
        assert_eq!(c.request_timeout, Duration::from_secs(60));
        assert!(!c.insecure && !c.linked);
        c.validate().expect("valid");
        assert_eq!(c.sdk_url(), "https://vc.example/sdk");

        let c = cfg("endpoint = \"esxi\"\nnic = \"vmxnet3\"\ndisk_controller = \"pvscsi\"")
            .expect("parses");
        assert_eq!(c.endpoint, Endpoint::Esxi);
        assert_eq!(c.nic, Nic::Vmxnet3);
        assert_eq!(c.disk_controller, Controller::Pvscsi);

        assert!(cfg("bogus = 1").is_err(), "unknown keys are errors");
        assert!(cfg("endpoint = \"rest\"").is_err());

        let mut c = cfg("").expect("parses");
        c.url = "vc.example".into();
        assert!(c.validate().unwrap_err().contains("https://"));
        c.url = "https://vc.example/api".into();
        assert!(c.validate().unwrap_err().contains("without a path"));
        c.url = "https://esx1.example/sdk".into();
        c.validate().expect("/sdk is allowed");
        assert_eq!(c.sdk_url(), "https://esx1.example/sdk");
        c.password_file = None;
        assert!(c.validate().unwrap_err().contains("password_file"));

        let c = cfg("insecure = true\nthumbprint = \"AB\"").expect("parses");
        assert!(c.validate().unwrap_err().contains("one of"));
        let c = cfg("thumbprint = \"AB:CD\"").expect("parses");
        assert!(c.validate().unwrap_err().contains("SHA-256"));
        let c = cfg("resource_pool = \"p\"\ncluster = \"c\"").expect("parses");
        assert!(c.validate().unwrap_err().contains("not both"));
        let c = cfg("folder = \"\"").expect("parses");
        assert!(c.validate().unwrap_err().contains("folder"));
    }

    #[test]
    fn macs_and_datastore_paths() {
        assert_eq!(
            normalize_mac("00-50-56-0A-0B-0C").expect("dashes"),
            "00:50:56:0a:0b:0c"
        );
        assert!(normalize_mac("00:50:56:0a:0b").is_err());
        assert!(normalize_mac("00:50:56:0a:0b:zz").is_err());
        assert_eq!(
            split_ds_path("[datastore1] base/win7.vmdk"),
            Some(("datastore1", "base/win7.vmdk"))
        );
        assert_eq!(split_ds_path("win7-template"), None);
        assert_eq!(split_ds_path("[ds]"), None);
    }

    #[test]
    fn nic_edit_keeps_the_card_and_sets_the_mac() {
        let text = r#"<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><R xmlns="urn:vim25"><val><VirtualDevice xsi:type="VirtualIDEController"><key>200</key></VirtualDevice><VirtualDevice xsi:type="VirtualE1000"><key>4000</key><backing xsi:type="VirtualEthernetCardNetworkBackingInfo"><deviceName>VM Network</deviceName></backing><controllerKey>100</controllerKey><unitNumber>7</unitNumber><addressType>generated</addressType><macAddress>00:0c:29:00:00:01</macAddress><wakeOnLanEnabled>true</wakeOnLanEnabled></VirtualDevice></val></R></soapenv:Body></soapenv:Envelope>"#;
        let r = soap::parse_answer("R", 200, text).expect("parses");
        let obj = Obj {
            moref: MoRef::new("VirtualMachine", "vm-1"),
            props: vec![(
                "config.hardware.device".into(),
                r.child("val").expect("val").clone(),
            )],
        };
        let edit = nic_mac_edit(&obj, "00:50:56:01:02:03").expect("a NIC");
        assert!(edit.starts_with(
            "<deviceChange><operation>edit</operation><device xsi:type=\"VirtualE1000\"><key>4000</key>"
        ));
        assert!(edit.contains("<deviceName>VM Network</deviceName>"));
        assert!(edit.contains(
            "<addressType>manual</addressType><macAddress>00:50:56:01:02:03</macAddress><wakeOnLanEnabled>"
        ));
        assert!(!edit.contains("00:0c:29:00:00:01"));
    }
}
