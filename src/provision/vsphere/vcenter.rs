//! The vCenter path: clone the template VM (full, or linked from its
//! current snapshot), placed by folder, resource pool or cluster or host,
//! and datastore; everything looked up before the old VM is removed. The
//! clone keeps the template's hardware; the image's is checked against it
//! and a vTPM added when asked for (`hardware`).

use super::golden;
use super::hardware::{TEMPLATE_PROPS, TemplateHardware, vtpm_device};
use super::soap::MoRef;
use super::vim::Obj;
use super::{Load, Macs, NIC_TYPES, VM_PROPS, dc_ref, fail, start_new_vm};
use crate::attempt::Attempt;
use crate::config::Plan;
use crate::outcome::Outcome;
use crate::xml::escape;

/// The vCenter path: clone the template.
pub(super) fn load_vcenter(
    l: &Load,
    plan: &Plan,
    attempt: Attempt,
    macs: &Macs,
) -> Result<(), Outcome> {
    let source = plan.image.source.as_str();
    if let Some(why) = golden::refusal(l.cfg, source, &l.name) {
        return Err(Outcome::Fatal(anyhow::anyhow!("vSphere: {why}")));
    }
    let dc = l.datacenter()?;
    let template = find_template(l, &dc, source)?;
    // What the clone keeps of the template, checked against the image.
    let kept = TemplateHardware::read(
        |p| template.prop(p).cloned(),
        template.prop("config.hardware.device"),
    );
    let add_vtpm = kept.fits(&l.cfg.hardware(&plan.image.name)).map_err(|e| {
        Outcome::Fatal(anyhow::anyhow!(
            "vSphere: image `{}` on template {source:?}: {e}",
            plan.image.name
        ))
    })?;
    l.report.info(&format!(
        "vSphere: the clone keeps template {source:?}'s hardware: {}{}",
        kept.words(),
        if add_vtpm { "; a vTPM is added" } else { "" }
    ));
    // Placement, all resolved before anything is removed.
    let mut clone = CloneSpec::resolve(l, &dc, &template, plan, macs)?;
    clone.vtpm = add_vtpm;
    let old = l.current_vm(&dc)?;
    if old.as_ref().is_some_and(|o| o.moref == template.moref) {
        return Err(Outcome::Fatal(anyhow::anyhow!(
            "vSphere: VM {:?} is the template itself; refusing to destroy it",
            l.name
        )));
    }
    if let Some(o) = &old {
        let base = golden::template_disks(&template);
        l.check_old(o, |_, disks| {
            disks
                .iter()
                .find(|f| base.iter().any(|b| golden::same_file(f, b)))
                .map(|f| {
                    format!(
                        "its disk {f:?} is a disk of template {source:?}, and destroying the VM deletes it"
                    )
                })
        })?;
    }
    l.remove_if_any(old, attempt)?;
    let what = format!(
        "{} clone of {source} to VM {}",
        if l.cfg.linked { "linked" } else { "full" },
        l.name
    );
    let result = l.long_task(
        &what,
        "CloneVM_Task",
        &template.moref,
        &clone.body(plan, &l.name),
        attempt.scale(l.cfg.clone_timeout),
        |_| None,
    )?;
    start_new_vm(l, &what, result, attempt, macs)
}

/// The template VM, with its devices (for the NIC to give a MAC).
fn find_template(l: &Load, dc: &Obj, source: &str) -> Result<Obj, Outcome> {
    let vm_folder = dc_ref(dc, "vmFolder")?;
    let mut props: Vec<&str> = VM_PROPS.to_vec();
    props.extend(["config.hardware.device", "layoutEx.file"]);
    props.extend(TEMPLATE_PROPS);
    l.one(&vm_folder, "VirtualMachine", source, &props, "template VM")
}

/// Where and how the clone goes: what `CloneVM_Task` is told.
struct CloneSpec {
    folder: MoRef,
    host: Option<Obj>,
    pool: MoRef,
    datastore: Option<MoRef>,
    /// The template's current snapshot, for a linked clone.
    snapshot: Option<MoRef>,
    /// The deviceChanges that give the NICs the computer's MACs.
    nic_edits: Vec<String>,
    /// Add a virtual TPM to the clone.
    vtpm: bool,
}

impl CloneSpec {
    /// Looks up everything the clone needs; a missing piece is fatal.
    fn resolve(
        l: &Load,
        dc: &Obj,
        template: &Obj,
        plan: &Plan,
        macs: &Macs,
    ) -> Result<CloneSpec, Outcome> {
        let cfg = l.cfg;
        let source = plan.image.source.as_str();
        let vm_folder = dc_ref(dc, "vmFolder")?;
        let host_folder = dc_ref(dc, "hostFolder")?;
        let folder = match &cfg.folder {
            Some(f) => l.one(&vm_folder, "Folder", f, &[], "folder")?.moref,
            None => vm_folder.clone(),
        };
        let host = match &cfg.host {
            Some(h) => Some(l.one(&host_folder, "HostSystem", h, &["parent"], "host")?),
            None => None,
        };
        let pool = resource_pool(l, &host_folder, host.as_ref(), template, source)?;
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
        let nic_edits = nic_edits(template, plan, macs).map_err(|why| {
            Outcome::Fatal(anyhow::anyhow!("vSphere: template {source:?}: {why}"))
        })?;
        Ok(CloneSpec {
            folder,
            host,
            pool,
            datastore,
            snapshot,
            nic_edits,
            vtpm: false,
        })
    }

    /// The body of `CloneVM_Task` for VM `name`: the folder, the name and
    /// a VirtualMachineCloneSpec, in the schema's element order.
    fn body(&self, plan: &Plan, name: &str) -> String {
        let mut location = String::new();
        if let Some(d) = &self.datastore {
            location.push_str(&d.xml("datastore"));
        }
        if self.snapshot.is_some() {
            location.push_str("<diskMoveType>createNewChildDiskBacking</diskMoveType>");
        }
        location.push_str(&self.pool.xml("pool"));
        if let Some(h) = &self.host {
            location.push_str(&h.moref.xml("host"));
        }
        let mut config = String::new();
        if let Some(c) = plan.image.config.cpus {
            config.push_str(&format!("<numCPUs>{c}</numCPUs>"));
        }
        if let Some(m) = plan.image.config.memory {
            config.push_str(&format!("<memoryMB>{m}</memoryMB>"));
        }
        for edit in &self.nic_edits {
            config.push_str(edit);
        }
        if self.vtpm {
            config.push_str(vtpm_device());
        }
        let mut spec = format!("<location>{location}</location><template>false</template>");
        if !config.is_empty() {
            spec.push_str(&format!("<config>{config}</config>"));
        }
        spec.push_str("<powerOn>false</powerOn>");
        if let Some(s) = &self.snapshot {
            spec.push_str(&s.xml("snapshot"));
        }
        format!(
            "{}<name>{}</name><spec>{spec}</spec>",
            self.folder.xml("folder"),
            escape(name)
        )
    }
}

/// The resource pool the clone runs in: the named one, the cluster's, the
/// host's, else the template's (or its host's).
fn resource_pool(
    l: &Load,
    host_folder: &MoRef,
    host: Option<&Obj>,
    template: &Obj,
    source: &str,
) -> Result<MoRef, Outcome> {
    let cfg = l.cfg;
    if let Some(p) = &cfg.resource_pool {
        return Ok(l
            .one(host_folder, "ResourcePool", p, &[], "resource pool")?
            .moref);
    }
    if let Some(c) = &cfg.cluster {
        return l
            .one(
                host_folder,
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
            });
    }
    if let Some(h) = host {
        return pool_of_host(l, h);
    }
    if let Some(p) = template.moref_of("resourcePool") {
        return Ok(p);
    }
    let h = template.moref_of("runtime.host").ok_or_else(|| {
        Outcome::Fatal(anyhow::anyhow!(
            "vSphere: template {source:?} has no host; set `resource_pool`, `cluster` or `host`"
        ))
    })?;
    let h = l
        .vim
        .get(&h, &["parent"])
        .map_err(|e| fail("read the template's host", e))?
        .ok_or_else(|| Outcome::Retry(anyhow::anyhow!("vSphere: the template's host vanished")))?;
    pool_of_host(l, &h)
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

/// The edits of the template's NICs for the clone: the first gets the
/// private MAC, the second the public one (VCL's eth0 and eth1). A NIC the
/// computer names no MAC for keeps the template's, unless that is a manual
/// MAC: every clone would copy it (two VMs, one MAC on the network), so
/// the load is refused and says which key to set. Err: why.
fn nic_edits(template: &Obj, plan: &Plan, macs: &Macs) -> Result<Vec<String>, String> {
    let devices = template.prop("config.hardware.device");
    let nics: Vec<&super::soap::Elem> = devices
        .map(|d| {
            d.children
                .iter()
                .filter(|d| {
                    d.xsi_type
                        .as_deref()
                        .is_some_and(|t| NIC_TYPES.contains(&t))
                })
                .collect()
        })
        .unwrap_or_default();
    let who = &plan.computer.name;
    let mut edits = Vec::new();
    for (i, (key, which)) in [("mac", "first"), ("public_mac", "second")]
        .iter()
        .enumerate()
    {
        let Some(nic) = nics.get(i) else {
            if let Some(m) = macs.at(i) {
                return Err(format!(
                    "it has no {which} network card to give `{key}` {m} of computer `{who}`: add one to the template ({} on the {} network)",
                    if i == 0 {
                        "the private NIC"
                    } else {
                        "the public NIC"
                    },
                    if i == 0 { "management" } else { "public" }
                ));
            }
            continue;
        };
        match macs.at(i) {
            Some(m) => edits.push(nic_mac_edit(nic, m)),
            None if nic.text_at("addressType") == Some("manual") => {
                return Err(format!(
                    "its {which} network card has the manual MAC {}, which every clone would copy (one MAC on two VMs): set `{key}` of computer `{who}` to the MAC of its DHCP reservation, or give the template's card a generated MAC",
                    nic.text_at("macAddress").unwrap_or("?")
                ));
            }
            None => {}
        }
    }
    Ok(edits)
}

/// A deviceChange that gives the template's NIC `nic` the manual MAC
/// `mac`, keeping every other property of the card as the template has it.
fn nic_mac_edit(nic: &super::soap::Elem, mac: &str) -> String {
    let ty = nic.xsi_type.as_deref().unwrap_or("VirtualEthernetCard");
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
    format!(
        "<deviceChange><operation>edit</operation><device xsi:type=\"{ty}\">{inner}</device></deviceChange>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provision::vsphere::soap;

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
        let nic = &obj
            .prop("config.hardware.device")
            .expect("devices")
            .children[1];
        let edit = nic_mac_edit(nic, "00:50:56:01:02:03");
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
