//! The golden disk is never destroyed: a load refuses, before it removes
//! anything, when what it would delete holds the image's own base.
//!
//! - ESXi: a load deletes the VM's directory `[DATASTORE] NAME` (a
//!   leftover) and destroys the computer's old VM, which deletes its files
//!   and directory (the simulator's Destroy_Task deletes the VM's
//!   directory whole). So the base disk must not lie in `[DATASTORE]
//!   NAME`, nor in the old VM's directory, nor be the old VM's disk.
//! - vCenter: a load destroys the old VM: it must not be the template,
//!   nor have a disk of the template's as its own.
//!
//! What the config shows is checked by `vet` (and so by `reimage
//! check`); what only the endpoint knows (the old VM's files), by each
//! load.

use super::config::VsphereConfig;
use super::esxi::split_ds_path;
use super::soap::Elem;
use super::vim::Obj;
use crate::config::{KeyError, Plan};
use crate::provision::{expand, placeholders};

/// True when datastore path `file` (`[ds] a/b.vmdk`) lies in directory
/// `dir` (`[ds] a`). Datastore names and paths compare without case (VMFS
/// does), so a doubt refuses.
pub(super) fn inside(file: &str, dir: &str) -> bool {
    let (Some((fd, fp)), Some((dd, dp))) = (split_ds_path(file), split_dir(dir)) else {
        return false;
    };
    let fp = fp.trim_start_matches('/').to_ascii_lowercase();
    let dp = dp.trim_matches('/').to_ascii_lowercase();
    fd.eq_ignore_ascii_case(dd) && (dp.is_empty() || fp.starts_with(&format!("{dp}/")))
}

/// `[ds] a` → ("ds", "a"); `[ds]` alone is the datastore's root.
fn split_dir(p: &str) -> Option<(&str, &str)> {
    let rest = p.trim().strip_prefix('[')?;
    let (ds, path) = rest.split_once(']')?;
    (!ds.is_empty()).then_some((ds, path.trim()))
}

/// The directory of a datastore path: `[ds] a/b.vmx` → `[ds] a`.
pub(super) fn dir_of(p: &str) -> Option<String> {
    let (ds, path) = split_ds_path(p)?;
    let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
    Some(format!("[{ds}] {dir}"))
}

/// The files of a device list's virtual disks (their own, not their
/// parents: destroying a linked clone deletes its child disk only).
pub(super) fn disk_files(devices: &Elem) -> Vec<String> {
    devices
        .children
        .iter()
        .filter(|d| d.xsi_type.as_deref() == Some("VirtualDisk"))
        .filter_map(|d| d.text_at("backing/fileName"))
        .map(|f| f.trim().to_string())
        .filter(|f| !f.is_empty())
        .collect()
}

/// A template's disk files: the descriptors its `layoutEx.file` lists
/// (its disks and their parents), else (no layoutEx) its disks' own
/// files. The file layout is the VM's own record of its files; the device
/// list can be stale (govmomi's simulator hands a clone the template's
/// device objects and so renames the template's disk with the clone's).
pub(super) fn template_disks(template: &Obj) -> Vec<String> {
    match template.prop("layoutEx.file") {
        Some(files) => files
            .children
            .iter()
            .filter(|f| f.text_at("type").map(str::trim) == Some("diskDescriptor"))
            .filter_map(|f| f.text_at("name"))
            .map(|n| n.trim().to_string())
            .collect(),
        None => template
            .prop("config.hardware.device")
            .map(disk_files)
            .unwrap_or_default(),
    }
}

/// The same datastore file, without regard to case.
pub(super) fn same_file(a: &str, b: &str) -> bool {
    match (split_ds_path(a), split_ds_path(b)) {
        (Some((ad, ap)), Some((bd, bp))) => {
            ad.eq_ignore_ascii_case(bd)
                && ap
                    .trim_start_matches('/')
                    .eq_ignore_ascii_case(bp.trim_start_matches('/'))
        }
        _ => false,
    }
}

/// Why a VM named `name` must not be made for `source`, from the config
/// alone: on ESXi its directory would hold the base disk, on vCenter it is
/// the template.
pub(super) fn refusal(cfg: &VsphereConfig, source: &str, name: &str) -> Option<String> {
    match split_ds_path(source) {
        Some((ds, _)) => {
            let dir = format!("[{}] {name}", cfg.datastore.as_deref().unwrap_or(ds));
            inside(source, &dir).then(|| {
                format!(
                    "the VM's directory {dir} holds the image's base disk {source:?}, and a load deletes that directory before it makes the VM afresh: give the VM another name (vm_name, or the computer's node) or move the base disk out of it"
                )
            })
        }
        None => (name == source).then(|| {
            format!(
                "the VM name {name:?} is the template's, and a load destroys the VM of that name: give the VM another name (vm_name, or the computer's node)"
            )
        }),
    }
}

/// `vet`: the refusal of the VM the first attempt would make, blamed on
/// `vm_name` when the table sets it, else on the computer.
pub(super) fn vet(cfg: &VsphereConfig, plan: &Plan) -> Result<(), KeyError> {
    let name = expand(
        &cfg.vm_name,
        &placeholders(plan, plan.attempt(1, plan.max_attempts)),
    );
    let Some(why) = refusal(cfg, &plan.image.source, &name) else {
        return Ok(());
    };
    let path = if plan.provisioner.table.contains_key("vm_name") {
        vec!["provisioners", &plan.provisioner.name, "vm_name"]
    } else {
        vec!["computers", &plan.computer.name, "node"]
    };
    Err(KeyError {
        path: path.into_iter().map(String::from).collect(),
        message: format!(
            "computer `{}`, image `{}`: {why}",
            plan.computer.name, plan.image.name
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_inside_directories() {
        assert!(inside("[ds1] pc7/base.vmdk", "[ds1] pc7"));
        assert!(inside("[DS1] PC7/sub/base.vmdk", "[ds1] pc7"));
        assert!(
            inside("[ds1] pc7/base.vmdk", "[ds1]"),
            "the datastore's root"
        );
        assert!(!inside("[ds1] pc7/base.vmdk", "[ds2] pc7"));
        assert!(!inside("[ds1] pc70/base.vmdk", "[ds1] pc7"));
        assert!(!inside("[ds1] base.vmdk", "[ds1] pc7"));
        assert_eq!(dir_of("[ds1] pc7/pc7.vmx").as_deref(), Some("[ds1] pc7"));
        assert_eq!(dir_of("[ds1] pc7.vmx").as_deref(), Some("[ds1] "));
        assert!(same_file("[ds1] base/a.vmdk", "[DS1] Base/A.vmdk"));
        assert!(!same_file("[ds1] base/a.vmdk", "[ds1] base/b.vmdk"));
    }

    #[test]
    fn what_the_config_alone_refuses() {
        let cfg: VsphereConfig =
            toml::from_str("url = \"https://h\"\nusername = \"u\"\npassword_file = \"/p\"\n")
                .expect("parses");
        let base = "[LocalDS_0] golden/golden.vmdk";
        assert!(refusal(&cfg, base, "golden").is_some_and(|w| w.contains("[LocalDS_0] golden")));
        assert!(refusal(&cfg, base, "pc7").is_none());
        let other = VsphereConfig {
            datastore: Some("ssd".into()),
            ..cfg.clone()
        };
        assert!(
            refusal(&other, base, "golden").is_none(),
            "the VM goes to another datastore"
        );
        assert!(refusal(&cfg, "tmpl-win11", "tmpl-win11").is_some());
        assert!(refusal(&cfg, "tmpl-win11", "pc7").is_none());
    }
}
