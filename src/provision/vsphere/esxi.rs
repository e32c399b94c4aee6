//! The standalone ESXi path (a host agent cannot clone): copy the base
//! disk or, linked, make a child disk on it, then create the VM from a
//! spec built from the image's settings.

use super::soap::Class;
use super::{Load, dc_ref, fail, start_new_vm};
use crate::attempt::Attempt;
use crate::config::Plan;
use crate::outcome::Outcome;
use crate::xml::escape;

/// `[datastore] path` → (datastore, path).
fn split_ds_path(p: &str) -> Option<(&str, &str)> {
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
    mac: Option<&str>,
) -> Result<(), Outcome> {
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
