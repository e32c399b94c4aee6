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

/// An interface with the IPv4 addresses Windows shows on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    /// Its connection name.
    pub name: String,
    /// Its MAC as `aa:bb:cc:dd:ee:ff`, when getmac lists it.
    pub mac: Option<String>,
    /// Its IPv4 addresses, as Windows shows them now.
    pub addresses: Vec<std::net::Ipv4Addr>,
}

/// Every interface's IPv4 addresses in the output of `netsh interface ip
/// show address` without a name: one `Configuration for interface
/// "NAME"` block each, with its `IP Address:` lines (XP through 11).
pub fn parse_show_all(stdout: &str) -> Vec<(String, Vec<std::net::Ipv4Addr>)> {
    let mut out: Vec<(String, Vec<std::net::Ipv4Addr>)> = Vec::new();
    for l in stdout.lines() {
        let t = l.trim();
        if let Some(rest) = t.strip_prefix("Configuration for interface ") {
            out.push((rest.trim().trim_matches('"').to_string(), Vec::new()));
            continue;
        }
        let Some((k, v)) = t.split_once(':') else {
            continue;
        };
        if let (true, Some(last), Ok(ip)) = (
            k.trim().eq_ignore_ascii_case("IP Address"),
            out.last_mut(),
            v.trim().parse::<std::net::Ipv4Addr>(),
        ) {
            last.1.push(ip);
        }
    }
    out
}

/// Every interface with its MAC and the addresses Windows shows on it
/// now: getmac, then `netsh interface ip show address` (both XP through
/// 11), read as step `step`.
pub fn shown(a: &mut Actions, step: &str) -> Result<Vec<Shown>, Outcome> {
    let out = a.run(
        step,
        &argv(&["getmac", "/v", "/fo", "csv", "/nh"]),
        Outcome::Retry,
    )?;
    let nics = parse_getmac(&out.stdout);
    let out = a.run(
        step,
        &argv(&["netsh", "interface", "ip", "show", "address"]),
        Outcome::Retry,
    )?;
    Ok(parse_show_all(&out.stdout)
        .into_iter()
        .map(|(name, addresses)| Shown {
            mac: nics
                .iter()
                .find(|n| n.name.eq_ignore_ascii_case(&name))
                .map(|n| n.mac.clone()),
            name,
            addresses,
        })
        .collect())
}

/// The private side, for a lockdown bound to it: its interfaces' names
/// (XP's `netsh firewall ... interface=`) and their IPv4 addresses (the
/// `localip` of Vista's rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Side {
    /// The interfaces' connection names.
    pub names: Vec<String>,
    /// Their IPv4 addresses.
    pub addresses: Vec<String>,
}

/// The private side among `nics`: the interface with the computer's
/// `mac`; without one, the interface that holds the address the channel
/// connects to; when none does (a NAT, a host name), every interface but
/// the public one. Err: why there is none (no address on it).
pub fn private_side(
    nics: &[Shown],
    mac: Option<&str>,
    public_mac: &str,
    address: &str,
) -> Result<(Side, &'static str), String> {
    let (picked, how): (Vec<&Shown>, &'static str) = match mac {
        Some(m) => (
            nics.iter()
                .filter(|n| n.mac.as_deref() == Some(m))
                .collect(),
            "by `mac`",
        ),
        None => {
            let ip: Option<std::net::Ipv4Addr> = address.parse().ok();
            let hit: Vec<&Shown> = nics
                .iter()
                .filter(|n| ip.is_some_and(|ip| n.addresses.contains(&ip)))
                .collect();
            if hit.is_empty() {
                (
                    nics.iter()
                        .filter(|n| n.mac.as_deref() != Some(public_mac))
                        .collect(),
                    "every interface but the public one (no `mac`, and none holds the computer's address)",
                )
            } else {
                (hit, "the one holding the computer's address")
            }
        }
    };
    let side = Side {
        names: picked.iter().map(|n| n.name.clone()).collect(),
        addresses: picked
            .iter()
            .flat_map(|n| n.addresses.iter().map(|a| a.to_string()))
            .collect(),
    };
    if side.addresses.is_empty() {
        let seen: Vec<String> = nics
            .iter()
            .map(|n| {
                format!(
                    "{} ({}; {})",
                    n.name,
                    n.mac.as_deref().unwrap_or("no MAC"),
                    if n.addresses.is_empty() {
                        "no IPv4 address".to_string()
                    } else {
                        n.addresses
                            .iter()
                            .map(|a| a.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                )
            })
            .collect();
        return Err(format!(
            "no IPv4 address on the private side ({how}) to bind the lockdown to: Windows shows {}",
            if seen.is_empty() {
                "no interface".to_string()
            } else {
                seen.join("; ")
            }
        ));
    }
    if side.names.iter().any(|n| !cmd_safe(n)) {
        return Err(format!(
            "a private interface's name holds characters cmd.exe does not pass inside quotes: {:?}",
            side.names
        ));
    }
    Ok((side, how))
}

/// The interface with `public_mac` among `nics`, with the addresses
/// Windows shows there now (at least one when `need_address`). Err: why
/// there is none to bind to.
pub fn public_nic<'a>(
    nics: &'a [Shown],
    public_mac: &str,
    need_address: bool,
) -> Result<&'a Shown, String> {
    let Some(n) = nics.iter().find(|n| n.mac.as_deref() == Some(public_mac)) else {
        return Err(format!("no interface has the public_mac {public_mac}"));
    };
    if need_address && n.addresses.is_empty() {
        return Err(format!(
            "the public interface `{}` (MAC {public_mac}) shows no IPv4 address",
            n.name
        ));
    }
    if !cmd_safe(&n.name) {
        return Err(format!(
            "the public interface's name {:?} holds characters cmd.exe does not pass inside quotes",
            n.name
        ));
    }
    Ok(n)
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

    fn shown(name: &str, mac: &str, addrs: &[&str]) -> Shown {
        Shown {
            name: name.into(),
            mac: Some(mac.into()),
            addresses: addrs.iter().map(|a| a.parse().expect("ip")).collect(),
        }
    }

    #[test]
    fn reads_every_interfaces_addresses() {
        let out = "\r\nConfiguration for interface \"Ethernet 3\"\r\n    DHCP enabled:   No\r\n    IP Address:   192.0.2.10\r\n    Subnet Prefix:   192.0.2.0/24 (mask 255.255.255.0)\r\n\r\nConfiguration for interface \"Ethernet 2\"\r\n    DHCP enabled:   Yes\r\n    IP Address:   10.0.0.5\r\n    IP Address:   10.0.0.6\r\n\r\nConfiguration for interface \"Loopback Pseudo-Interface 1\"\r\n    DHCP enabled:   No\r\n";
        assert_eq!(
            parse_show_all(out),
            [
                (
                    "Ethernet 3".to_string(),
                    vec!["192.0.2.10".parse().expect("ip")]
                ),
                (
                    "Ethernet 2".to_string(),
                    vec![
                        "10.0.0.5".parse().expect("ip"),
                        "10.0.0.6".parse().expect("ip")
                    ]
                ),
                ("Loopback Pseudo-Interface 1".to_string(), vec![]),
            ]
        );
    }

    #[test]
    fn the_private_side_by_mac_by_address_or_all_but_the_public_one() {
        let (public, private) = ("00:50:56:00:08:03", "00:50:56:00:07:03");
        let nics = [
            shown("Ethernet 3", public, &["192.0.2.10"]),
            shown("Ethernet 2", private, &["10.0.0.5"]),
            shown("Ethernet 4", "00:50:56:00:09:03", &["10.9.0.5"]),
        ];
        let (side, _) = private_side(&nics, Some(private), public, "lab-pc").expect("side");
        assert_eq!(
            (side.names, side.addresses),
            (vec!["Ethernet 2".to_string()], vec!["10.0.0.5".to_string()])
        );
        let (side, how) = private_side(&nics, None, public, "10.9.0.5").expect("side");
        assert_eq!(side.names, ["Ethernet 4"], "{how}");
        let (side, _) = private_side(&nics, None, public, "127.0.0.1").expect("side");
        assert_eq!(side.names, ["Ethernet 2", "Ethernet 4"]);
        assert_eq!(side.addresses, ["10.0.0.5", "10.9.0.5"]);
        let bare = [shown("Ethernet 2", private, &[])];
        assert!(
            private_side(&bare, Some(private), public, "x")
                .unwrap_err()
                .contains("no IPv4 address")
        );
        assert!(public_nic(&nics, public, true).is_ok());
        let bare_public = [shown("Ethernet 3", public, &[])];
        assert!(public_nic(&bare_public, public, true).is_err());
        assert!(
            public_nic(&bare_public, public, false).is_ok(),
            "XP binds by name"
        );
        assert!(public_nic(&bare, public, false).is_err());
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
