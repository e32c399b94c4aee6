//! The VM's hardware from the image: firmware (`efi`, the default, or
//! `bios`), UEFI Secure Boot, a virtual TPM, the hardware version and the
//! guest OS id. Set for every image in the provisioner's table and for one
//! image in `[provisioners.NAME.images.IMAGE]`, which this provisioner
//! decodes itself (Packer's Prepare rule: config knows no provisioner's
//! keys).
//!
//! - ESXi (`CreateVM_Task`): the spec carries them (`version`, `guestId`,
//!   `bootOptions.efiSecureBootEnabled`, `firmware`); a vTPM cannot be had
//!   there (it needs a vCenter's key provider).
//! - vCenter (`CloneVM_Task`): the clone keeps the template's firmware,
//!   Secure Boot, hardware version and guest id; a firmware set explicitly
//!   is checked against the template's, and `vtpm` adds a `VirtualTPM` to
//!   a clone of an EFI template of hardware version 14 or later that has
//!   none.

use serde::{Deserialize, Serialize};

use super::soap::Elem;
use crate::provision::config_name;
use crate::xml::escape;

/// A VM's firmware.
#[derive(Debug, Deserialize, Serialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    /// UEFI: every current Windows and most Linux images.
    #[default]
    Efi,
    /// Legacy BIOS: Windows XP / 2003 / 7 images installed that way.
    Bios,
}

impl Firmware {
    /// Its name in the config file and in vSphere (`config.firmware`).
    pub fn name(self) -> String {
        config_name(&self)
    }
}

/// The lowest hardware version vSphere offers UEFI Secure Boot on (6.5).
pub const SECURE_BOOT_VERSION: u32 = 13;
/// The lowest hardware version with a virtual TPM (vSphere 6.7).
pub const VTPM_VERSION: u32 = 14;

/// `[provisioners.NAME.images.IMAGE]`: one image's hardware, over the
/// provisioner's.
#[derive(Debug, Deserialize, Clone, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ImageHardware {
    /// `efi` or `bios`.
    pub firmware: Option<Firmware>,
    /// UEFI Secure Boot.
    pub secure_boot: Option<bool>,
    /// A virtual TPM (vCenter only).
    pub vtpm: Option<bool>,
    /// The hardware version, `vmx-NN` as NN.
    pub hardware_version: Option<u32>,
    /// The guest OS id, e.g. `windows9_64Guest`.
    pub guest_id: Option<String>,
}

/// One image's hardware, its settings merged over the provisioner's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmHardware {
    pub firmware: Firmware,
    /// The firmware was set (by the image or the provisioner), not the
    /// default: on vCenter it is checked against the template's.
    pub firmware_set: bool,
    pub secure_boot: bool,
    pub vtpm: bool,
    /// `None`: the host's default.
    pub version: Option<u32>,
    pub guest_id: String,
}

impl VmHardware {
    /// Checks a combination: `Err` names the key (as the config writes it,
    /// under `prefix`) and what to do.
    pub fn check(&self, prefix: &str, vtpm_possible: bool) -> Result<(), String> {
        if self.secure_boot && self.firmware != Firmware::Efi {
            return Err(format!(
                "`{prefix}secure_boot` needs firmware = \"efi\": Secure Boot is a UEFI feature"
            ));
        }
        if self.vtpm && self.firmware != Firmware::Efi {
            return Err(format!(
                "`{prefix}vtpm` needs firmware = \"efi\": vSphere adds a vTPM to EFI VMs only"
            ));
        }
        if self.vtpm && !vtpm_possible {
            return Err(format!(
                "`{prefix}vtpm` needs a vCenter (its key provider encrypts the VM's vTPM), and endpoint = \"esxi\": remove vtpm, or load through a vCenter"
            ));
        }
        if let Some(v) = self.version {
            if !(4..=99).contains(&v) {
                return Err(format!(
                    "`{prefix}hardware_version` is the NN of vmx-NN (4 to 21 today), not {v}"
                ));
            }
            if self.secure_boot && v < SECURE_BOOT_VERSION {
                return Err(format!(
                    "`{prefix}hardware_version` {v} has no Secure Boot: it needs {SECURE_BOOT_VERSION} or later"
                ));
            }
        }
        if self.guest_id.trim().is_empty() {
            return Err(format!("`{prefix}guest_id` must not be empty"));
        }
        Ok(())
    }

    /// The hardware in words, for `check` and events.
    pub fn words(&self) -> String {
        format!(
            "firmware {}, Secure Boot {}, hardware version {}, guest {}",
            self.firmware.name(),
            if self.secure_boot { "on" } else { "off" },
            self.version
                .map(|v| format!("vmx-{v:02}"))
                .unwrap_or_else(|| "the host's default".into()),
            self.guest_id
        )
    }

    /// The parts of a VirtualMachineConfigSpec (ESXi's CreateVM_Task) this
    /// hardware sets, each in its place in the schema's element order:
    /// after `name`, after `files`' predecessors, after `deviceChange`.
    pub fn spec_parts(&self) -> SpecParts {
        SpecParts {
            version: self
                .version
                .map(|v| format!("<version>vmx-{v:02}</version>"))
                .unwrap_or_default(),
            guest_id: format!("<guestId>{}</guestId>", escape(&self.guest_id)),
            tail: format!(
                "{}<firmware>{}</firmware>",
                if self.secure_boot {
                    "<bootOptions><efiSecureBootEnabled>true</efiSecureBootEnabled></bootOptions>"
                } else {
                    ""
                },
                self.firmware.name()
            ),
        }
    }
}

/// Hardware settings as pieces of the create spec.
pub struct SpecParts {
    /// `<version>`: right after `<name>`.
    pub version: String,
    /// `<guestId>`: before `<files>`.
    pub guest_id: String,
    /// `<bootOptions>` and `<firmware>`: after `<deviceChange>`.
    pub tail: String,
}

/// What a template has, read from its properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateHardware {
    pub firmware: String,
    pub version: Option<u32>,
    pub guest_id: String,
    pub secure_boot: bool,
    pub vtpm: bool,
}

/// The template properties [`TemplateHardware`] is read from.
pub const TEMPLATE_PROPS: [&str; 4] = [
    "config.firmware",
    "config.version",
    "config.guestId",
    "config.bootOptions",
];

impl TemplateHardware {
    /// From the template's properties and its device list.
    pub fn read(prop: impl Fn(&str) -> Option<Elem>, devices: Option<&Elem>) -> TemplateHardware {
        let text = |p: &str| prop(p).map(|e| e.text.trim().to_string());
        TemplateHardware {
            firmware: text("config.firmware").unwrap_or_else(|| "bios".into()),
            version: text("config.version").and_then(|v| parse_version(&v)),
            guest_id: text("config.guestId").unwrap_or_default(),
            secure_boot: prop("config.bootOptions")
                .and_then(|b| {
                    b.text_at("efiSecureBootEnabled")
                        .map(|t| t.trim() == "true")
                })
                .unwrap_or(false),
            vtpm: devices.is_some_and(|d| {
                d.children
                    .iter()
                    .any(|c| c.xsi_type.as_deref() == Some("VirtualTPM"))
            }),
        }
    }

    /// In words.
    pub fn words(&self) -> String {
        format!(
            "firmware {}, Secure Boot {}, hardware version {}, guest {}, {}",
            self.firmware,
            if self.secure_boot { "on" } else { "off" },
            self.version
                .map(|v| format!("vmx-{v:02}"))
                .unwrap_or_else(|| "unknown".into()),
            if self.guest_id.is_empty() {
                "unknown"
            } else {
                &self.guest_id
            },
            if self.vtpm { "a vTPM" } else { "no vTPM" }
        )
    }

    /// Whether a clone of this template can have what the image asks:
    /// `Ok(true)` when a vTPM is to be added, `Err` why not.
    pub fn fits(&self, want: &VmHardware) -> Result<bool, String> {
        if want.firmware_set && self.firmware != want.firmware.name() {
            return Err(format!(
                "the template's firmware is {}, but the image asks for firmware = \"{}\": a clone keeps the template's, so fix the template or the image's firmware",
                self.firmware,
                want.firmware.name()
            ));
        }
        if !want.vtpm || self.vtpm {
            return Ok(false);
        }
        if self.firmware != Firmware::Efi.name() {
            return Err(format!(
                "vtpm = true, but the template's firmware is {}: vSphere adds a vTPM to EFI VMs only",
                self.firmware
            ));
        }
        match self.version {
            Some(v) if v >= VTPM_VERSION => Ok(true),
            v => Err(format!(
                "vtpm = true, but the template's hardware version is {}: a vTPM needs vmx-{VTPM_VERSION} or later (upgrade the template's compatibility)",
                v.map(|v| format!("vmx-{v:02}"))
                    .unwrap_or_else(|| "unknown".into())
            )),
        }
    }
}

/// `vmx-13` → 13.
pub fn parse_version(v: &str) -> Option<u32> {
    v.trim().strip_prefix("vmx-")?.parse().ok()
}

/// The deviceChange that adds a virtual TPM to a clone.
pub fn vtpm_device() -> &'static str {
    "<deviceChange><operation>add</operation><device xsi:type=\"VirtualTPM\"><key>-110</key></device></deviceChange>"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hw() -> VmHardware {
        VmHardware {
            firmware: Firmware::Efi,
            firmware_set: false,
            secure_boot: false,
            vtpm: false,
            version: None,
            guest_id: "otherGuest64".into(),
        }
    }

    #[test]
    fn combinations_that_cannot_be() {
        let mut h = hw();
        h.check("", true).expect("the default");
        h.secure_boot = true;
        h.firmware = Firmware::Bios;
        assert!(
            h.check("", true)
                .unwrap_err()
                .contains("`secure_boot` needs firmware")
        );
        h.secure_boot = false;
        h.vtpm = true;
        assert!(
            h.check("", true)
                .unwrap_err()
                .contains("`vtpm` needs firmware")
        );
        h.firmware = Firmware::Efi;
        h.check("", true).expect("an EFI vTPM on vCenter");
        assert!(
            h.check("images.win11.", false)
                .unwrap_err()
                .starts_with("`images.win11.vtpm` needs a vCenter")
        );
        let mut h = hw();
        h.secure_boot = true;
        h.version = Some(11);
        assert!(h.check("", true).unwrap_err().contains("no Secure Boot"));
        h.version = Some(2);
        assert!(h.check("", true).unwrap_err().contains("vmx-NN"));
    }

    #[test]
    fn the_create_spec_parts() {
        let mut h = hw();
        h.secure_boot = true;
        h.version = Some(15);
        let p = h.spec_parts();
        assert_eq!(p.version, "<version>vmx-15</version>");
        assert_eq!(p.guest_id, "<guestId>otherGuest64</guestId>");
        assert_eq!(
            p.tail,
            "<bootOptions><efiSecureBootEnabled>true</efiSecureBootEnabled></bootOptions><firmware>efi</firmware>"
        );
        let p = hw().spec_parts();
        assert_eq!(
            (p.version.as_str(), p.tail.as_str()),
            ("", "<firmware>efi</firmware>")
        );
    }

    #[test]
    fn a_template_fits_or_says_why_not() {
        let t = TemplateHardware {
            firmware: "efi".into(),
            version: Some(14),
            guest_id: "windows9_64Guest".into(),
            secure_boot: true,
            vtpm: false,
        };
        let mut want = hw();
        assert_eq!(t.fits(&want), Ok(false));
        want.vtpm = true;
        assert_eq!(t.fits(&want), Ok(true), "a vTPM is added");
        let old = TemplateHardware {
            version: Some(13),
            ..t.clone()
        };
        assert!(old.fits(&want).unwrap_err().contains("vmx-14 or later"));
        let bios = TemplateHardware {
            firmware: "bios".into(),
            ..t.clone()
        };
        assert!(bios.fits(&want).unwrap_err().contains("EFI VMs only"));
        let mut want = hw();
        want.firmware_set = true;
        assert!(
            bios.fits(&want)
                .unwrap_err()
                .contains("template's firmware is bios")
        );
        want.firmware = Firmware::Bios;
        assert_eq!(bios.fits(&want), Ok(false));
        assert_eq!(parse_version("vmx-07"), Some(7));
        assert_eq!(parse_version("7"), None);
    }
}
