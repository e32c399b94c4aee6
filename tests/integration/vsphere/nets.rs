//! Two networks on vSphere (issue 25): the private NIC gets `mac`, the
//! public one `public_mac`. What the VM has is read back from the
//! simulator's inventory (the test's own SOAP client), never from
//! reimage's output.

use super::{MAC, Model, PASSWORD, Sim, config, load};
use crate::common::Scratch;

const PUBLIC_MAC: &str = "00:50:56:01:02:04";

/// The NICs of VM `vm`, in device order: (network backing, MAC, address
/// type).
fn nics(sim: &Sim, vm: &str) -> Vec<(String, String, String)> {
    let r = sim.session(|c| sim.props(c, "VirtualMachine", vm, &["config.hardware.device"]));
    let doc = roxmltree::Document::parse(&r).expect("XML");
    let text = |n: roxmltree::Node, name: &str| {
        n.descendants()
            .find(|c| c.tag_name().name() == name)
            .and_then(|c| c.text())
            .unwrap_or("")
            .to_string()
    };
    doc.descendants()
        .filter(|n| n.tag_name().name() == "VirtualDevice")
        .filter(|n| n.children().any(|c| c.tag_name().name() == "macAddress"))
        .map(|n| {
            (
                text(n, "deviceName"),
                text(n, "macAddress"),
                text(n, "addressType"),
            )
        })
        .collect()
}

/// The moref of the one VM named `name`.
fn moref(sim: &Sim, name: &str) -> String {
    let vms = sim.vms_named(name);
    assert_eq!(vms.len(), 1, "{vms:?}");
    vms[0].moref.clone()
}

/// A NIC added to `vm` on `network`: `address` is the addressType and
/// MAC elements.
fn add_nic(sim: &Sim, vm: &str, network: &str, address: &str) {
    sim.reconfigure(
        vm,
        &format!(
            "<deviceChange><operation>add</operation><device xsi:type=\"VirtualE1000\"><key>-1</key>\
<backing xsi:type=\"VirtualEthernetCardNetworkBackingInfo\"><deviceName>{network}</deviceName></backing>\
{address}</device></deviceChange>"
        ),
    );
}

/// The config of `super::config` with the public MAC too (and `extra`
/// keys for the provisioner).
fn two_nic_config(s: &Scratch, sim: &Sim, source: &str, extra: &str) {
    config(s, sim, source, PASSWORD, None, extra);
    let path = s.path("reimage.toml");
    let text = std::fs::read_to_string(&path).expect("config");
    let mac_line = format!("mac = \"{MAC}\"\n");
    let computer = format!("{mac_line}public_mac = \"{PUBLIC_MAC}\"\n");
    std::fs::write(&path, text.replace(&mac_line, &computer)).expect("config");
}

#[test]
fn vpx_template_with_two_nics_gets_both_macs() {
    let s = Scratch::new("vs-two-nics-vpx");
    let sim = Sim::start(&s, Model::Vpx, None);
    let template = moref(&sim, "DC0_H0_VM0");
    let before = nics(&sim, &template);
    assert_eq!(before.len(), 1, "vcsim's template has one NIC: {before:?}");
    add_nic(
        &sim,
        &template,
        "VM Network",
        "<addressType>generated</addressType>",
    );
    let tmpl = nics(&sim, &template);
    assert_eq!(tmpl.len(), 2, "{tmpl:?}");
    two_nic_config(&s, &sim, "DC0_H0_VM0", "");

    let r = load(&s);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let got = nics(&sim, &moref(&sim, "pc1"));
    let macs: Vec<(&str, &str)> = got.iter().map(|n| (n.1.as_str(), n.2.as_str())).collect();
    assert_eq!(macs, [(MAC, "manual"), (PUBLIC_MAC, "manual")], "{got:?}");
    // Each card keeps its network from the template.
    let raw = sim.session(|c| {
        sim.props(
            c,
            "VirtualMachine",
            &moref(&sim, "pc1"),
            &["config.hardware.device"],
        )
    });
    assert_eq!(
        got.iter().map(|n| n.0.as_str()).collect::<Vec<_>>(),
        tmpl.iter().map(|n| n.0.as_str()).collect::<Vec<_>>(),
        "{raw}"
    );
    // The template keeps its own MACs.
    assert_eq!(nics(&sim, &template), tmpl);
}

#[test]
fn vpx_template_with_one_nic_and_a_public_mac_is_fatal() {
    let s = Scratch::new("vs-one-nic-vpx");
    let sim = Sim::start(&s, Model::Vpx, None);
    two_nic_config(&s, &sim, "DC0_H0_VM0", "");
    let r = load(&s);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "it has no second network card to give `public_mac` 00:50:56:01:02:04 of computer `pc1`"
        ),
        "{}",
        r.stderr
    );
    assert!(sim.vms_named("pc1").is_empty(), "nothing was cloned");
}

#[test]
fn vpx_template_nic_with_a_manual_mac_and_no_mac_is_refused() {
    let s = Scratch::new("vs-manual-mac-vpx");
    let sim = Sim::start(&s, Model::Vpx, None);
    let template = moref(&sim, "DC0_H0_VM0");
    // A second NIC with a manual MAC, as a template made by hand from a
    // VM with a DHCP reservation has, and a computer that names no
    // public_mac.
    add_nic(
        &sim,
        &template,
        "VM Network",
        "<addressType>manual</addressType><macAddress>00:50:56:3f:00:01</macAddress>",
    );
    assert_eq!(nics(&sim, &template)[1].1, "00:50:56:3f:00:01");
    config(&s, &sim, "DC0_H0_VM0", PASSWORD, None, "");
    let r = load(&s);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("its second network card has the manual MAC 00:50:56:3f:00:01, which every clone would copy")
            && r.stderr.contains("set `public_mac` of computer `pc1`"),
        "{}",
        r.stderr
    );
    assert!(sim.vms_named("pc1").is_empty(), "nothing was cloned");
}

#[test]
fn esx_builds_two_nics_on_two_networks() {
    let s = Scratch::new("vs-two-nics-esx");
    let sim = Sim::start(&s, Model::Esx, None);
    let source = sim.source();
    // A second port group on the host: the public network.
    sim.session(|c| {
        let host = sim.objects(c, "HostSystem")[0].0.clone();
        let r = sim.props(c, "HostSystem", &host, &["configManager.networkSystem"]);
        let ns = super::between(&r, "HostNetworkSystem\">", "</val>")
            .expect("the host's network system")
            .to_string();
        let r = sim.soap(
            "AddPortGroup",
            "HostNetworkSystem",
            &ns,
            "<portgrp><name>Public Net</name><vlanId>0</vlanId><vswitchName>vSwitch0</vswitchName><policy/></portgrp>",
            Some(c),
        );
        assert!(!r.contains("Fault>"), "{r}");
    });
    // Without public_network the ESXi path says what to set.
    two_nic_config(&s, &sim, source, "");
    let r = load(&s);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("add public_network = "), "{}", r.stderr);
    assert!(sim.vms_named("pc1").is_empty());

    two_nic_config(&s, &sim, source, "public_network = \"Public Net\"");
    let r = load(&s);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let got = nics(&sim, &moref(&sim, "pc1"));
    assert_eq!(
        got,
        [
            (
                "VM Network".to_string(),
                MAC.to_string(),
                "manual".to_string()
            ),
            (
                "Public Net".to_string(),
                PUBLIC_MAC.to_string(),
                "manual".to_string()
            ),
        ]
    );
}
