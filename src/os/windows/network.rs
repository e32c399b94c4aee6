//! The two networks on Windows (issue 25), as Apache VCL's Windows.pm and
//! Version_6.pm set them up on every load: the interfaces are found by
//! their MACs (`getmac /v /fo csv /nh`: connection name and physical
//! address, XP through 11), never by name, since names change after
//! Sysprep or on cloned hardware ("Ethernet 2"); the private interface
//! ignores default routes (Vista and later: `netsh interface ipv4 set
//! interface ... ignoredefaultroutes=enabled`), so the user's traffic
//! never leaves through the management network's gateway; the public one
//! gets its static address, the old default routes go (`route delete
//! 0.0.0.0`), a persistent default gateway (`route -p add`) and static DNS
//! (`netsh interface ip set dns` / `add dns`), or DHCP and a renew
//! (`ipconfig /renew NAME`). Then the address the public interface has is
//! read back (`netsh interface ip show address`) and reported.

use super::commands::{OnFail, Windows, argv};
use crate::config::network::{Addressing, PublicNic, StaticV4};
use crate::os::actions::Actions;
use crate::outcome::Outcome;

/// An interface as getmac lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// Its connection name ("Ethernet 2").
    pub name: String,
    /// Its MAC as `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
}

/// The rows of `getmac /v /fo csv /nh`: `"Connection Name","Network
/// Adapter","Physical Address","Transport Name"`, the address as
/// `AA-BB-CC-DD-EE-FF` (Microsoft's getmac reference). Rows without a MAC
/// (`N/A`) are left out.
pub fn parse_getmac(stdout: &str) -> Vec<Nic> {
    stdout
        .lines()
        .filter_map(|l| {
            let cols = csv_row(l.trim());
            let mac = crate::config::network::parse_mac(cols.get(2)?)?;
            Some(Nic {
                name: cols.first()?.clone(),
                mac,
            })
        })
        .collect()
}

/// The fields of one CSV row, every field in double quotes (`""` inside
/// one is a quote).
fn csv_row(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// A connection name cmd.exe passes as it is inside double quotes.
fn cmd_safe(name: &str) -> bool {
    !name.is_empty() && !name.contains(['"', '%', '&', '|', '<', '>', '^', '\r', '\n'])
}

/// One command of the two networks: (step name, command, what a failure
/// means).
type Cmd = (&'static str, Vec<String>, OnFail);

/// `KEY="NAME"`, an interface named on a netsh line.
fn named(key: &str, name: &str) -> String {
    format!("{key}=\"{name}\"")
}

/// Every default route deleted: the private one, a static gateway's
/// persistent one. No route to delete exits 1, and the next step decides.
fn delete_default_routes() -> Cmd {
    (
        "delete-default-routes",
        argv(&["route", "delete", "0.0.0.0", "mask", "0.0.0.0"]),
        OnFail::GoOn,
    )
}

/// The commands for the two networks, in order. `private` is the private
/// interface's name when the computer names its MAC.
pub fn commands(
    w: Windows,
    private: Option<&str>,
    public: &str,
    addressing: &Addressing,
) -> Vec<Cmd> {
    let mut v = Vec::new();
    // netsh's ipv4 context is Vista's; XP has none of it.
    if let (Some(p), false) = (private, w == Windows::V5) {
        let mut cmd = argv(&["netsh", "interface", "ipv4", "set", "interface"]);
        cmd.push(named("interface", p));
        cmd.extend(argv(&["ignoredefaultroutes=enabled", "store=persistent"]));
        v.push(("private-ignore-default-routes", cmd, OnFail::Fatal));
    }
    match addressing {
        Addressing::Static(s) => v.extend(static_commands(public, s)),
        Addressing::Dhcp => v.extend(dhcp_commands(public)),
    }
    v
}

/// The static address, then the one persistent default route through the
/// gateway (every other goes first), then the DNS servers in order.
fn static_commands(public: &str, s: &StaticV4) -> Vec<Cmd> {
    let mut cmd = argv(&["netsh", "interface", "ip", "set", "address"]);
    cmd.push(named("name", public));
    cmd.extend(argv(&[
        "static",
        &s.address.to_string(),
        &s.netmask().to_string(),
    ]));
    let mut v = vec![("public-address", cmd, OnFail::Fatal)];
    if let Some(g) = s.gateway {
        v.push(delete_default_routes());
        let g = g.to_string();
        let add = [
            "route", "-p", "add", "0.0.0.0", "mask", "0.0.0.0", &g, "metric", "1",
        ];
        v.push(("public-gateway", argv(&add), OnFail::Fatal));
    }
    for (i, d) in s.dns.iter().enumerate() {
        let mut cmd = argv(&["netsh", "interface", "ip"]);
        cmd.extend(argv(if i == 0 {
            &["set", "dns"]
        } else {
            &["add", "dns"]
        }));
        cmd.push(named("name", public));
        if i == 0 {
            cmd.extend(argv(&["static", &d.to_string()]));
        } else {
            cmd.extend([d.to_string(), format!("index={}", i + 1)]);
        }
        v.push(("public-dns", cmd, OnFail::Fatal));
    }
    v
}

/// DHCP for address and DNS ("DHCP is already enabled" exits 1: the renew
/// decides), the old default routes gone, the lease renewed.
fn dhcp_commands(public: &str) -> Vec<Cmd> {
    let mut address = argv(&["netsh", "interface", "ip", "set", "address"]);
    address.extend([named("name", public), "dhcp".into()]);
    let mut dns = argv(&["netsh", "interface", "ip", "set", "dns"]);
    dns.extend([named("name", public), "dhcp".into()]);
    let renew = vec!["ipconfig".into(), "/renew".into(), format!("\"{public}\"")];
    vec![
        ("public-dhcp", address, OnFail::GoOn),
        ("public-dns-dhcp", dns, OnFail::GoOn),
        delete_default_routes(),
        ("public-renew", renew, OnFail::Retry),
    ]
}

/// The command that shows the public interface's address.
fn show_address(public: &str) -> Vec<String> {
    let mut cmd = argv(&["netsh", "interface", "ip", "show", "address"]);
    cmd.push(named("name", public));
    cmd
}

/// The IPv4 address and prefix in `netsh interface ip show address`'s
/// output: `IP Address: A.B.C.D` with `Subnet Prefix: N.N.N.N/P (mask
/// ...)` (Vista and later) or `SubnetMask: M` (XP).
pub fn parse_show_address(stdout: &str) -> Option<String> {
    let field = |key: &str| {
        stdout.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim().eq_ignore_ascii_case(key)).then(|| v.trim().to_string())
        })
    };
    let ip: std::net::Ipv4Addr = field("IP Address")?.parse().ok()?;
    let prefix = match field("Subnet Prefix") {
        Some(p) => p
            .split_whitespace()
            .next()?
            .split_once('/')?
            .1
            .parse::<u8>()
            .ok()?,
        None => {
            let m: std::net::Ipv4Addr = field("SubnetMask")?.parse().ok()?;
            u32::from(m).leading_ones() as u8
        }
    };
    Some(format!("{ip}/{prefix}"))
}

/// The two networks configured on the computer of `a`: the interfaces
/// found by MAC, the commands run, the public address read and reported.
/// An interface the computer does not have, or whose name cmd.exe cannot
/// pass, is fatal: a reload of the same hardware changes neither.
pub fn configure(a: &mut Actions, w: Windows, nic: &PublicNic) -> Result<(), Outcome> {
    let who = a.plan.computer.name.clone();
    let out = a.run(
        "find-interfaces",
        &argv(&["getmac", "/v", "/fo", "csv", "/nh"]),
        Outcome::Retry,
    )?;
    let nics = parse_getmac(&out.stdout);
    let find = |mac: &str, key: &str| -> Result<String, Outcome> {
        let n = nics.iter().find(|n| n.mac == mac).ok_or_else(|| {
            let seen: Vec<String> = nics.iter().map(|n| format!("{} ({})", n.name, n.mac)).collect();
            Outcome::Fatal(anyhow::anyhow!(
                "{who}: no interface has the MAC of `{key}` {mac} (getmac lists {}): check the computer's {key}",
                if seen.is_empty() { "none".to_string() } else { seen.join(", ") }
            ))
        })?;
        if !cmd_safe(&n.name) {
            return Err(Outcome::Fatal(anyhow::anyhow!(
                "{who}: the interface with MAC {mac} is named {:?}, which holds characters cmd.exe does not pass inside quotes: rename it",
                n.name
            )));
        }
        Ok(n.name.clone())
    };
    let public = find(&nic.mac, "public_mac")?;
    let private = match a
        .plan
        .computer
        .mac
        .as_deref()
        .and_then(crate::config::network::parse_mac)
    {
        Some(m) => Some(find(&m, "mac")?),
        None => None,
    };
    a.report.info(&format!(
        "{who}: public interface `{public}` (MAC {}){}",
        nic.mac,
        private
            .as_deref()
            .map(|p| format!(", private interface `{p}`"))
            .unwrap_or_default()
    ));
    for (name, cmd, on_fail) in commands(w, private.as_deref(), &public, &nic.addressing) {
        match a.run(name, &cmd, on_fail.outcome()) {
            Ok(_) => {}
            Err(Outcome::Retry(e)) if on_fail == OnFail::GoOn => a
                .report
                .warn(&format!("{e:#} (the next step decides: going on)")),
            Err(o) => return Err(o),
        }
    }
    let out = a.run(
        "public-address-read",
        &show_address(&public),
        Outcome::Retry,
    )?;
    match parse_show_address(&out.stdout) {
        Some(addr) => a.report.public_address(&addr),
        None => a.report.warn(&format!(
            "{who}: the public interface `{public}` shows no IPv4 address"
        )),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_getmac_csv() {
        let out = "\"Ethernet 2\",\"Intel(R) PRO/1000 MT\",\"00-50-56-00-07-03\",\"\\Device\\Tcpip_{A}\"\r\n\
                   \"Public, \"\"new\"\"\",\"vmxnet3\",\"00-50-56-00-08-03\",\"Media disconnected\"\r\n\
                   \"Bluetooth\",\"BT\",\"N/A\",\"Hardware not present\"\r\n";
        assert_eq!(
            parse_getmac(out),
            [
                Nic {
                    name: "Ethernet 2".into(),
                    mac: "00:50:56:00:07:03".into()
                },
                Nic {
                    name: "Public, \"new\"".into(),
                    mac: "00:50:56:00:08:03".into()
                },
            ]
        );
        assert!(!cmd_safe("Public, \"new\""));
        assert!(cmd_safe("Ethernet 2"));
    }

    #[test]
    fn reads_the_address_netsh_shows() {
        let vista = "\r\nConfiguration for interface \"Ethernet 2\"\r\n    DHCP enabled:                         No\r\n    IP Address:                           192.0.2.10\r\n    Subnet Prefix:                        192.0.2.0/24 (mask 255.255.255.0)\r\n    Default Gateway:                      192.0.2.1\r\n";
        assert_eq!(parse_show_address(vista).as_deref(), Some("192.0.2.10/24"));
        let xp = "Configuration for interface \"Public\"\r\n    DHCP enabled:                         Yes\r\n    IP Address:                           198.51.100.23\r\n    SubnetMask:                           255.255.254.0\r\n";
        assert_eq!(parse_show_address(xp).as_deref(), Some("198.51.100.23/23"));
        assert_eq!(parse_show_address("DHCP enabled: Yes\r\n"), None);
    }

    #[test]
    fn static_and_dhcp_command_lines() {
        let s = Addressing::Static(StaticV4 {
            address: "192.0.2.10".parse().expect("ip"),
            prefix: 24,
            gateway: Some("192.0.2.1".parse().expect("ip")),
            dns: vec![
                "192.0.2.53".parse().expect("ip"),
                "192.0.2.54".parse().expect("ip"),
            ],
        });
        let lines: Vec<String> = commands(Windows::V10, Some("Ethernet"), "Ethernet 2", &s)
            .into_iter()
            .map(|(n, c, _)| format!("{n}: {}", c.join(" ")))
            .collect();
        assert_eq!(
            lines,
            [
                "private-ignore-default-routes: netsh interface ipv4 set interface interface=\"Ethernet\" ignoredefaultroutes=enabled store=persistent",
                "public-address: netsh interface ip set address name=\"Ethernet 2\" static 192.0.2.10 255.255.255.0",
                "delete-default-routes: route delete 0.0.0.0 mask 0.0.0.0",
                "public-gateway: route -p add 0.0.0.0 mask 0.0.0.0 192.0.2.1 metric 1",
                "public-dns: netsh interface ip set dns name=\"Ethernet 2\" static 192.0.2.53",
                "public-dns: netsh interface ip add dns name=\"Ethernet 2\" 192.0.2.54 index=2",
            ]
        );
        // XP: no ipv4 context, no private setting; DHCP renews the public
        // interface only.
        let lines: Vec<String> = commands(Windows::V5, Some("LAN"), "Public", &Addressing::Dhcp)
            .into_iter()
            .map(|(n, c, _)| format!("{n}: {}", c.join(" ")))
            .collect();
        assert_eq!(
            lines,
            [
                "public-dhcp: netsh interface ip set address name=\"Public\" dhcp",
                "public-dns-dhcp: netsh interface ip set dns name=\"Public\" dhcp",
                "delete-default-routes: route delete 0.0.0.0 mask 0.0.0.0",
                "public-renew: ipconfig /renew \"Public\"",
            ]
        );
    }
}
