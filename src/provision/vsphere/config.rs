//! `[provisioners.NAME] kind = "vsphere"`: the keys, their defaults and
//! checks, and what `reimage check` says of a load.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::hardware::{Firmware, ImageHardware, VmHardware};
use crate::config::Plan;
use crate::duration;
use crate::provision::{config_name, expand, placeholders};
use crate::tls;

/// Which load path an endpoint gets.
#[derive(Debug, Deserialize, Serialize, Clone, Copy, PartialEq, Eq, Default)]
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
#[derive(Debug, Deserialize, Serialize, Clone, Copy, PartialEq, Eq, Default)]
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

impl Endpoint {
    /// The path an endpoint's `apiType` picks: `VirtualCenter` is a
    /// vCenter, `HostAgent` an ESXi host; `None` for anything else.
    pub(super) fn of_api_type(api: &str) -> Option<Endpoint> {
        match api {
            "VirtualCenter" => Some(Endpoint::Vcenter),
            "HostAgent" => Some(Endpoint::Esxi),
            _ => None,
        }
    }
}

impl Nic {
    /// Its name in the config file.
    pub(super) fn name(self) -> String {
        config_name(&self)
    }

    pub(super) fn xsi_type(self) -> &'static str {
        match self {
            Nic::E1000 => "VirtualE1000",
            Nic::E1000e => "VirtualE1000e",
            Nic::Vmxnet3 => "VirtualVmxnet3",
        }
    }
}

/// The disk controller of a VM created on an ESXi host.
#[derive(Debug, Deserialize, Serialize, Clone, Copy, PartialEq, Eq, Default)]
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
    /// Its name in the config file.
    pub(super) fn name(self) -> String {
        config_name(&self)
    }

    pub(super) fn xsi_type(self) -> &'static str {
        match self {
            Controller::LsilogicSas => "VirtualLsiLogicSASController",
            Controller::Lsilogic => "VirtualLsiLogicController",
            Controller::Pvscsi => "ParaVirtualSCSIController",
            Controller::Buslogic => "VirtualBusLogicController",
        }
    }

    /// The adapter type of a disk copied for it.
    pub(super) fn adapter(self) -> &'static str {
        match self {
            Controller::Buslogic => "busLogic",
            _ => "lsiLogic",
        }
    }
}

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
    /// Network (port group) of the second NIC of a VM created on an ESXi
    /// host, the public one, for a computer with `public_mac`.
    #[serde(default)]
    pub public_network: Option<String>,
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
    /// Firmware of a VM created on an ESXi host: `efi` (default) or
    /// `bios`. A vCenter clone keeps the template's; set, it is checked
    /// against it.
    #[serde(default)]
    pub firmware: Option<Firmware>,
    /// UEFI Secure Boot of a VM created on an ESXi host.
    #[serde(default)]
    pub secure_boot: bool,
    /// A virtual TPM on the clone (vCenter only: its key provider).
    #[serde(default)]
    pub vtpm: bool,
    /// Hardware version (vmx-NN as NN) of a VM created on an ESXi host;
    /// default: the host's.
    #[serde(default)]
    pub hardware_version: Option<u32>,
    /// One image's hardware over the above:
    /// `[provisioners.NAME.images.IMAGE]`.
    #[serde(default)]
    pub images: BTreeMap<String, ImageHardware>,
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
    /// A computer with a public interface needs `public_network` for the
    /// second NIC of a VM created on an ESXi host (the vCenter path gives
    /// the template's second NIC the public MAC instead).
    pub fn vet_public_network(&self, plan: &Plan) -> Result<(), crate::config::KeyError> {
        if self.endpoint == Endpoint::Esxi
            && plan.computer.public.is_some()
            && self.public_network.is_none()
        {
            return Err(crate::config::KeyError {
                path: vec!["provisioners".into(), plan.provisioner.name.clone()],
                message: format!(
                    "computer `{}` has a public interface (public_mac), and a VM created on an ESXi host gets its second NIC on `public_network`, which provisioner `{}` does not set: add public_network = \"PORT GROUP\"",
                    plan.computer.name, plan.provisioner.name
                ),
            });
        }
        Ok(())
    }

    /// Checks serde cannot make.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(why) = crate::provision::unknown_placeholder(&self.vm_name, &[]) {
            return Err(format!("`vm_name`: {why}"));
        }
        self.validate_url()?;
        self.validate_login()?;
        for (key, v) in [
            ("datacenter", &self.datacenter),
            ("folder", &self.folder),
            ("resource_pool", &self.resource_pool),
            ("cluster", &self.cluster),
            ("host", &self.host),
            ("datastore", &self.datastore),
            ("public_network", &self.public_network),
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
        let vtpm_possible = self.endpoint != Endpoint::Esxi;
        self.hardware("").check("", vtpm_possible)?;
        for name in self.images.keys() {
            self.hardware(name)
                .check(&format!("images.{name}."), vtpm_possible)?;
        }
        Ok(())
    }

    /// `url`: the endpoint's address, without a path.
    fn validate_url(&self) -> Result<(), String> {
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
        Ok(())
    }

    /// The account and how the endpoint's certificate is trusted.
    fn validate_login(&self) -> Result<(), String> {
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
        Ok(())
    }

    /// Image `image`'s hardware: its table's settings over the
    /// provisioner's, over the defaults.
    pub(super) fn hardware(&self, image: &str) -> VmHardware {
        let i = self.images.get(image).cloned().unwrap_or_default();
        VmHardware {
            firmware: i.firmware.or(self.firmware).unwrap_or_default(),
            firmware_set: i.firmware.or(self.firmware).is_some(),
            secure_boot: i.secure_boot.unwrap_or(self.secure_boot),
            vtpm: i.vtpm.unwrap_or(self.vtpm),
            version: i.hardware_version.or(self.hardware_version),
            guest_id: i.guest_id.unwrap_or_else(|| self.guest_id.clone()),
        }
    }

    /// The SOAP endpoint.
    pub(super) fn sdk_url(&self) -> String {
        let base = self.url.trim_end_matches('/');
        let base = base.strip_suffix("/sdk").unwrap_or(base);
        format!("{base}/sdk")
    }

    /// Where a load records what the endpoint said it is, for `reimage
    /// check`: `STATE_DIR/vsphere/HOST_PORT.endpoint`.
    pub(super) fn seen_file(&self, state_dir: &Path) -> PathBuf {
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
        let attempt = plan.attempt(1, plan.max_attempts);
        let name = expand(&self.vm_name, &placeholders(plan, attempt));
        let mut lines = vec![
            format!(
                "endpoint: {} as {} ({})",
                self.sdk_url(),
                self.username,
                self.trust_words()
            ),
            self.path_line(plan),
            format!("VM: {name}"),
            format!(
                "MAC: {}",
                plan.computer
                    .mac
                    .clone()
                    .unwrap_or_else(|| "assigned by vSphere".into())
            ),
            hardware_line(plan),
            self.placement_line(),
            format!(
                "linked: {}",
                if self.linked {
                    "yes (vCenter: from the template's current snapshot; ESXi: a child disk)"
                } else {
                    "no (a full copy)"
                }
            ),
        ];
        let hw = self.hardware(&plan.image.name);
        if self.endpoint != Endpoint::Vcenter {
            let public = match (&plan.computer.public, &self.public_network) {
                (Some(_), Some(n)) => format!(" and one on {n:?} (public)"),
                (Some(_), None) => " and no public_network for the public NIC".into(),
                _ => String::new(),
            };
            lines.push(format!(
                "ESXi VM: {}, {} NIC on {:?}{public}, {} disk controller{}",
                hw.words(),
                self.nic.name(),
                self.network,
                self.disk_controller.name(),
                if hw.vtpm {
                    "; vtpm = true: refused on an ESXi host (a vTPM needs a vCenter)"
                } else {
                    ""
                }
            ));
        }
        if self.endpoint != Endpoint::Esxi {
            lines.push(format!(
                "vCenter clone: the template's firmware, Secure Boot, hardware version and guest id are kept{}; vTPM: {}",
                if hw.firmware_set {
                    format!(
                        " (firmware = \"{}\" is checked against the template's)",
                        hw.firmware.name()
                    )
                } else {
                    String::new()
                },
                if hw.vtpm {
                    "added to the clone unless the template has one (an EFI template of vmx-14 or later)"
                } else {
                    "the template's"
                }
            ));
        }
        lines.extend([
            format!("request timeout: {}", duration::fmt(self.request_timeout)),
            format!("clone timeout: {}", plan.per_attempt(self.clone_timeout)),
            format!("task timeout: {}", plan.per_attempt(self.task_timeout)),
        ]);
        lines
    }

    /// How the endpoint's certificate is trusted, in words.
    fn trust_words(&self) -> String {
        if !self.url.starts_with("https://") {
            "no TLS (http)".to_string()
        } else if self.insecure {
            "certificate NOT verified (insecure = true)".to_string()
        } else if let Some(ca) = &self.ca_file {
            format!("certificate verified against {}", ca.display())
        } else if let Some(t) = &self.thumbprint {
            format!("certificate pinned to SHA-256 {t}")
        } else {
            "certificate verified against the system's roots".to_string()
        }
    }

    /// The load path: the configured one, else the one the endpoint's
    /// apiType picked at the last connection (recorded in the state
    /// directory), else both.
    fn path_line(&self, plan: &Plan) -> String {
        let source = &plan.image.source;
        let vc = format!("vCenter: clone template VM {source:?}");
        let esx = if self.linked {
            format!("ESXi host: a child disk on base disk {source:?}, and create the VM")
        } else {
            format!("ESXi host: copy base disk {source:?} and create the VM")
        };
        let seen = std::fs::read_to_string(self.seen_file(&plan.state_dir)).ok();
        let seen = seen
            .as_deref()
            .and_then(|t| t.split_once('\n'))
            .and_then(|(api, name)| Some((Endpoint::of_api_type(api)?, name.trim())));
        match (self.endpoint, seen) {
            (Endpoint::Vcenter, _) => format!("path: {vc}"),
            (Endpoint::Esxi, _) => format!("path: {esx}"),
            (Endpoint::Auto, Some((path, name))) => {
                format!(
                    "path: {} (the endpoint said it is {name} at the last connection; decided again at every load)",
                    if path == Endpoint::Vcenter { &vc } else { &esx },
                )
            }
            (Endpoint::Auto, _) => {
                format!("path: decided at load from the endpoint's apiType ({vc}; {esx})")
            }
        }
    }

    /// Where the VM goes, each part with its default in words.
    fn placement_line(&self) -> String {
        let opt = |v: &Option<String>, d: &str| v.clone().unwrap_or_else(|| d.into());
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
        )
    }
}

/// The image's CPUs and memory, or whose they are when it sets none.
fn hardware_line(plan: &Plan) -> String {
    let cfg = &plan.image.config;
    format!(
        "CPUs: {}, memory: {}",
        cfg.cpus
            .map(|c| c.to_string())
            .unwrap_or_else(|| "the template's (ESXi: 1)".into()),
        cfg.memory
            .map(|m| format!("{m} MiB"))
            .unwrap_or_else(|| "the template's (ESXi: 1024 MiB)".into())
    )
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
        assert!(
            cfg("[images.x]\nbogus = 1").is_err(),
            "unknown keys of an image's table are errors"
        );
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
    fn an_images_hardware_over_the_provisioners() {
        let c = cfg(
            "secure_boot = true\nhardware_version = 15\n[images.xp]\nfirmware = \"bios\"\nsecure_boot = false\nguest_id = \"winXPProGuest\"\n",
        )
        .expect("parses");
        c.validate().expect("valid");
        let d = c.hardware("win11");
        assert_eq!(
            (d.firmware, d.firmware_set, d.secure_boot, d.version),
            (Firmware::Efi, false, true, Some(15))
        );
        assert_eq!(d.guest_id, "otherGuest64");
        let xp = c.hardware("xp");
        assert_eq!(
            (xp.firmware, xp.firmware_set, xp.secure_boot, xp.version),
            (Firmware::Bios, true, false, Some(15))
        );
        assert_eq!(xp.guest_id, "winXPProGuest");

        let c = cfg("[images.xp]\nfirmware = \"bios\"\nsecure_boot = true\n").expect("parses");
        assert!(
            c.validate()
                .unwrap_err()
                .starts_with("`images.xp.secure_boot` needs firmware")
        );
        let c = cfg("endpoint = \"esxi\"\nvtpm = true").expect("parses");
        assert!(
            c.validate()
                .unwrap_err()
                .starts_with("`vtpm` needs a vCenter")
        );
        let c = cfg("firmware = \"uefi\"");
        assert!(c.is_err(), "efi or bios only");
    }

    #[test]
    fn names_are_the_config_files_and_the_api_types() {
        for n in [Nic::E1000, Nic::E1000e, Nic::Vmxnet3] {
            let c = cfg(&format!("nic = \"{}\"", n.name())).expect("parses");
            assert_eq!(c.nic, n);
        }
        let all = [
            Controller::LsilogicSas,
            Controller::Lsilogic,
            Controller::Pvscsi,
            Controller::Buslogic,
        ];
        for d in all {
            let c = cfg(&format!("disk_controller = \"{}\"", d.name())).expect("parses");
            assert_eq!(c.disk_controller, d);
        }
        assert_eq!(Controller::LsilogicSas.name(), "lsilogic-sas");
        assert_eq!(
            Endpoint::of_api_type("VirtualCenter"),
            Some(Endpoint::Vcenter)
        );
        assert_eq!(Endpoint::of_api_type("HostAgent"), Some(Endpoint::Esxi));
        assert_eq!(Endpoint::of_api_type("Agent"), None);
    }
}
