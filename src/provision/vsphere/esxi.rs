//! The standalone ESXi path (a host agent cannot clone): copy the base
//! disk or, linked, make a child disk on it, then create the VM from a
//! spec built from the image's settings (its hardware: `hardware`).

use super::golden;
use super::soap::{Class, MoRef};
use super::vim::Obj;
use super::{Load, Macs, dc_ref, fail, start_new_vm};
use crate::attempt::Attempt;
use crate::config::Plan;
use crate::outcome::Outcome;
use crate::xml::escape;

/// `[datastore] path` → (datastore, path).
pub(super) fn split_ds_path(p: &str) -> Option<(&str, &str)> {
    let rest = p.trim().strip_prefix('[')?;
    let (ds, path) = rest.split_once(']')?;
    let path = path.trim();
    (!ds.is_empty() && !path.is_empty()).then_some((ds, path))
}

/// The standalone ESXi path: copy (or link) the base disk, create the VM.
pub(super) fn load_esxi(
    l: &Load,
    plan: &Plan,
    attempt: Attempt,
    macs: &Macs,
) -> Result<(), Outcome> {
    let source = plan.image.source.as_str();
    let hw = l.cfg.hardware(&plan.image.name);
    if hw.vtpm {
        return Err(Outcome::Fatal(anyhow::anyhow!(
            "vSphere: image `{}` asks for a vTPM (vtpm = true), but {} is an ESXi host, and a vTPM needs a vCenter (its key provider): load it through a vCenter, or set vtpm = false",
            plan.image.name,
            l.cfg.url
        )));
    }
    let public_network = match (&macs.public, &l.cfg.public_network) {
        (Some(m), None) => {
            return Err(Outcome::Fatal(anyhow::anyhow!(
                "vSphere: {} is an ESXi host, where the VM's public NIC (public_mac {m}) goes on `public_network`, which is not set: add public_network = \"PORT GROUP\" to the provisioner",
                l.cfg.url
            )));
        }
        (Some(_), Some(n)) => Some(n.as_str()),
        (None, _) => None,
    };
    let host = Host::resolve(l, source, public_network)?;
    // The base disk must be there before the old VM goes, and nothing a
    // load deletes may hold it.
    let vdm = host.check_base_disk(l, source)?;
    if let Some(why) = golden::refusal(l.cfg, source, &l.name) {
        return Err(Outcome::Fatal(anyhow::anyhow!("vSphere: {why}")));
    }
    let old = l.current_vm(&host.dc)?;
    if let Some(o) = &old {
        l.check_old(o, |dir, disks| {
            if let Some(d) = dir.filter(|d| golden::inside(source, d)) {
                return Some(format!(
                    "its directory {d} holds the image's base disk {source:?}, and destroying the VM deletes that directory"
                ));
            }
            disks.iter().find(|f| golden::same_file(f, source)).map(|f| {
                format!("the image's base disk {f:?} is its own disk, and destroying the VM deletes it")
            })
        })?;
    }
    l.remove_if_any(old, attempt)?;
    let dir = host.fresh_dir(l, attempt)?;
    let disk = format!("{dir}/{}.vmdk", l.name);
    if !l.cfg.linked {
        host.copy_base_disk(l, &vdm, source, &disk, attempt)?;
    }
    let body = format!(
        "<config>{}</config>{}",
        vm_spec(l, plan, &dir, &disk, macs, public_network),
        host.pool.xml("pool")
    );
    l.report.info(&format!(
        "vSphere: VM {}: {}",
        l.name,
        l.cfg.hardware(&plan.image.name).words()
    ));
    let what = format!("create VM {}", l.name);
    let timeout = attempt.scale(l.cfg.task_timeout);
    let result = l.long_task(&what, "CreateVM_Task", &host.folder, &body, timeout, |_| {
        None
    })?;
    start_new_vm(l, &what, result, attempt, macs)
}

/// What the new VM goes into on the host, all looked up before anything
/// is removed.
struct Host {
    dc: Obj,
    /// The datastore the VM's directory and disk go to.
    datastore: String,
    pool: MoRef,
    folder: MoRef,
}

impl Host {
    /// Looks up the datastores, the network, the resource pool and the
    /// folder; a missing one is fatal.
    fn resolve(l: &Load, source: &str, public_network: Option<&str>) -> Result<Host, Outcome> {
        let cfg = l.cfg;
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
        if let Some(n) = public_network {
            l.one(&dc.moref, "Network", n, &[], "public network")?;
        }
        let pool = match &cfg.resource_pool {
            Some(p) => {
                l.one(&host_folder, "ResourcePool", p, &[], "resource pool")?
                    .moref
            }
            None => host_pool(l, &host_folder)?,
        };
        let folder = match &cfg.folder {
            Some(f) => l.one(&vm_folder, "Folder", f, &[], "folder")?.moref,
            None => vm_folder.clone(),
        };
        Ok(Host {
            datastore: ds_name.to_string(),
            dc,
            pool,
            folder,
        })
    }

    /// Asks the VirtualDiskManager for the base disk: gone or unreadable is
    /// fatal. The manager, for the copy.
    fn check_base_disk(&self, l: &Load, source: &str) -> Result<MoRef, Outcome> {
        let vdm = l
            .vim
            .manager("virtualDiskManager")
            .map_err(|e| fail("read the service content", e))?;
        if let Err(e) = l.vim.invoke(
            "QueryVirtualDiskUuid",
            &vdm,
            &format!(
                "<name>{}</name>{}",
                escape(source),
                self.dc.moref.xml("datacenter")
            ),
        ) {
            return Err(match e.class() {
                Class::Retry => fail(&format!("look at base disk {source}"), e),
                _ => Outcome::Fatal(anyhow::anyhow!(
                    "vSphere: base disk {source:?} not found or not readable ({e})"
                )),
            });
        }
        Ok(vdm)
    }

    /// The VM's directory, `[DATASTORE] NAME`, made afresh: a leftover of a
    /// failed load goes first.
    fn fresh_dir(&self, l: &Load, attempt: Attempt) -> Result<String, Outcome> {
        let fm = l
            .vim
            .manager("fileManager")
            .map_err(|e| fail("read the service content", e))?;
        let dir = format!("[{}] {}", self.datastore, l.name);
        let dc = self.dc.moref.xml("datacenter");
        match l.task(
            &format!("delete {dir}"),
            "DeleteDatastoreFile_Task",
            &fm,
            &format!("<name>{}</name>{dc}", escape(&dir)),
            attempt.scale(l.cfg.task_timeout),
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
                "<name>{}</name>{dc}<createParentDirectories>true</createParentDirectories>",
                escape(&dir)
            ),
        ) {
            Ok(_) => {}
            Err(e) if e.fault_type() == Some("FileAlreadyExists") => {}
            Err(e) => return Err(fail(&format!("make directory {dir}"), e)),
        }
        Ok(dir)
    }

    /// A thin copy of the base disk to `disk`, in a step of its own.
    fn copy_base_disk(
        &self,
        l: &Load,
        vdm: &MoRef,
        source: &str,
        disk: &str,
        attempt: Attempt,
    ) -> Result<(), Outcome> {
        let body = format!(
            "<sourceName>{}</sourceName>{}<destName>{}</destName>{}\
<destSpec xsi:type=\"VirtualDiskSpec\"><diskType>thin</diskType><adapterType>{}</adapterType></destSpec><force>false</force>",
            escape(source),
            self.dc.moref.xml("sourceDatacenter"),
            escape(disk),
            self.dc.moref.xml("destDatacenter"),
            l.cfg.disk_controller.adapter()
        );
        l.long_task(
            &format!("copy base disk {source} to {disk}"),
            "CopyVirtualDisk_Task",
            vdm,
            &body,
            attempt.scale(l.cfg.clone_timeout),
            |e| {
                matches!(
                    e.fault_type(),
                    Some("FileNotFound" | "NotFound" | "CannotAccessFile")
                )
                .then(|| format!("base disk {source:?} not found"))
            },
        )?;
        Ok(())
    }
}

/// The root resource pool of the host's compute resource.
fn host_pool(l: &Load, host_folder: &MoRef) -> Result<MoRef, Outcome> {
    let crs = l
        .vim
        .find(host_folder, "ComputeResource", &["resourcePool"])
        .map_err(|e| fail("look up the host's resource pool", e))?;
    crs.first()
        .and_then(|c| c.moref_of("resourcePool"))
        .ok_or_else(|| Outcome::Fatal(anyhow::anyhow!("vSphere: the host has no resource pool")))
}

/// The VirtualMachineConfigSpec of the new VM, in the schema's element
/// order: its hardware version and guest id, its files in `dir`, the
/// image's CPUs and memory, a disk controller, the disk `disk` (linked: a
/// child of the base disk), a NIC with the computer's MAC (and a second
/// one on the public network with its public MAC), Secure Boot and the
/// firmware.
fn vm_spec(
    l: &Load,
    plan: &Plan,
    dir: &str,
    disk: &str,
    macs: &Macs,
    public_network: Option<&str>,
) -> String {
    let cfg = l.cfg;
    let image = &plan.image.config;
    let hw = cfg.hardware(&plan.image.name).spec_parts();
    let mut spec = format!(
        "<name>{}</name>{}{}<files><vmPathName>{}</vmPathName></files>",
        escape(&l.name),
        hw.version,
        hw.guest_id,
        escape(&format!("{dir}/{}.vmx", l.name))
    );
    spec.push_str(&format!("<numCPUs>{}</numCPUs>", image.cpus.unwrap_or(1)));
    spec.push_str(&format!(
        "<memoryMB>{}</memoryMB>",
        image.memory.unwrap_or(1024)
    ));
    spec.push_str(&format!(
        "<deviceChange><operation>add</operation><device xsi:type=\"{}\"><key>-100</key>\
<busNumber>0</busNumber><sharedBus>noSharing</sharedBus></device></deviceChange>",
        cfg.disk_controller.xsi_type()
    ));
    spec.push_str(&disk_device(cfg.linked, disk, &plan.image.source));
    spec.push_str(&nic_device(
        l,
        -102,
        &l.cfg.network,
        macs.private.as_deref(),
    ));
    if let Some(n) = public_network {
        spec.push_str(&nic_device(l, -103, n, macs.public.as_deref()));
    }
    spec.push_str(&hw.tail);
    spec
}

/// The deviceChange that adds the VM's disk: `disk`, copied already, or
/// (linked) created as a child of `base`.
fn disk_device(linked: bool, disk: &str, base: &str) -> String {
    let parent = if linked {
        format!(
            "<parent><fileName>{}</fileName><diskMode>persistent</diskMode></parent>",
            escape(base)
        )
    } else {
        String::new()
    };
    format!(
        "<deviceChange><operation>add</operation>{}<device xsi:type=\"VirtualDisk\"><key>-101</key>\
<backing xsi:type=\"VirtualDiskFlatVer2BackingInfo\"><fileName>{}</fileName><diskMode>persistent</diskMode>{parent}</backing>\
<controllerKey>-100</controllerKey><unitNumber>0</unitNumber><capacityInKB>0</capacityInKB></device></deviceChange>",
        if linked {
            "<fileOperation>create</fileOperation>"
        } else {
            ""
        },
        escape(disk)
    )
}

/// The deviceChange that adds a NIC (device key `key`) on `network`, with
/// the computer's MAC or one vSphere generates.
fn nic_device(l: &Load, key: i32, network: &str, mac: Option<&str>) -> String {
    let address = match mac {
        Some(m) => format!(
            "<addressType>manual</addressType><macAddress>{}</macAddress>",
            escape(m)
        ),
        None => "<addressType>generated</addressType>".into(),
    };
    format!(
        "<deviceChange><operation>add</operation><device xsi:type=\"{}\"><key>{key}</key>\
<backing xsi:type=\"VirtualEthernetCardNetworkBackingInfo\"><deviceName>{}</deviceName></backing>\
<connectable><startConnected>true</startConnected><allowGuestControl>true</allowGuestControl><connected>true</connected></connectable>\
{address}</device></deviceChange>",
        l.cfg.nic.xsi_type(),
        escape(network)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datastore_paths() {
        assert_eq!(
            split_ds_path("[datastore1] base/win7.vmdk"),
            Some(("datastore1", "base/win7.vmdk"))
        );
        assert_eq!(split_ds_path("win7-template"), None);
        assert_eq!(split_ds_path("[ds]"), None);
    }
}
