//! A computer's two networks, as Apache VCL sites wire them: the private
//! interface (`mac`, the management network: where reimage's channel runs
//! and the lockdown applies) and the public one (`public_mac`, where the
//! user connects), with a static address or DHCP. The keys are read here
//! into [`PublicNic`]; `validate` turns a refusal into 78 at its key.

use std::net::Ipv4Addr;

use super::model::{ComputerConfig, Config};

/// The public interface of a computer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicNic {
    /// Its MAC, as `aa:bb:cc:dd:ee:ff`: the OS modules find it by this.
    pub mac: String,
    /// Static or DHCP.
    pub addressing: Addressing,
}

/// How the public interface gets its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addressing {
    /// From DHCP (renewed at first boot).
    Dhcp,
    /// Set by the first boot.
    Static(StaticV4),
}

/// A static IPv4 configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticV4 {
    /// The address.
    pub address: Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
    /// The default gateway.
    pub gateway: Option<Ipv4Addr>,
    /// DNS servers, in order.
    pub dns: Vec<Ipv4Addr>,
}

impl StaticV4 {
    /// The subnet mask of the prefix (`255.255.255.0` for 24).
    pub fn netmask(&self) -> Ipv4Addr {
        netmask(self.prefix)
    }

    /// `address/prefix`.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.address, self.prefix)
    }
}

/// The mask of prefix length `prefix` (at most 32).
pub fn netmask(prefix: u8) -> Ipv4Addr {
    let bits = u32::from(prefix.min(32));
    Ipv4Addr::from(u32::MAX.checked_shl(32 - bits).unwrap_or(0))
}

/// A MAC address as `aa:bb:cc:dd:ee:ff` (six bytes in hex, `:` or `-`
/// between them), or None when `s` is not one.
pub fn parse_mac(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    ok.then(|| parts.join(":").to_ascii_lowercase())
}

/// A refusal: the key of `[computers.NAME]` it is at (with an index for
/// `public_dns`), and why.
pub type Refusal = (Vec<String>, String);

fn at(key: &str, why: String) -> Refusal {
    (vec![key.to_string()], why)
}

/// The prefix length of a contiguous subnet mask.
fn mask_prefix(mask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let n = m.leading_ones();
    (m.checked_shl(n).unwrap_or(0) == 0).then_some(n as u8)
}

/// The public interface `comp` names, or why its keys do not fit together.
pub fn public_nic(comp: &ComputerConfig) -> Result<Option<PublicNic>, Refusal> {
    let Some(m) = &comp.public_mac else {
        let set = [
            ("public_address", comp.public_address.is_some()),
            ("public_netmask", comp.public_netmask.is_some()),
            ("public_gateway", comp.public_gateway.is_some()),
            ("public_dns", comp.public_dns.is_some()),
        ];
        if let Some((key, _)) = set.iter().find(|(_, s)| *s) {
            return Err(at(
                key,
                format!(
                    "`{key}` configures the public interface, which the OS finds by its MAC: add public_mac = \"..\""
                ),
            ));
        }
        return Ok(None);
    };
    let mac = parse_mac(m).ok_or_else(|| {
        at(
            "public_mac",
            format!("`public_mac` {m:?} is not a MAC address: six bytes in hex, like \"52:54:00:12:34:57\""),
        )
    })?;
    if comp.mac.as_deref().and_then(parse_mac).as_deref() == Some(mac.as_str()) {
        return Err(at(
            "public_mac",
            format!(
                "`public_mac` {m} is the private interface's `mac` too: the two interfaces need two MACs"
            ),
        ));
    }
    if comp.static_address.is_some() {
        return Err(at(
            "static_address",
            "`static_address` names an interface by name; with public_mac, give public_address (and public_gateway, public_dns) instead".to_string(),
        ));
    }
    let addressing = match &comp.public_address {
        None => {
            for key in ["public_netmask", "public_gateway", "public_dns"] {
                let set = match key {
                    "public_netmask" => comp.public_netmask.is_some(),
                    "public_gateway" => comp.public_gateway.is_some(),
                    _ => comp.public_dns.is_some(),
                };
                if set {
                    return Err(at(
                        key,
                        format!(
                            "`{key}` is for a static public address, and there is no public_address (DHCP gives the rest): add public_address or remove `{key}`"
                        ),
                    ));
                }
            }
            Addressing::Dhcp
        }
        Some(a) => Addressing::Static(static_v4(comp, a)?),
    };
    Ok(Some(PublicNic { mac, addressing }))
}

/// The static configuration of `comp`, its address written as `a`.
fn static_v4(comp: &ComputerConfig, a: &str) -> Result<StaticV4, Refusal> {
    let v4 = |key: &str, s: &str| {
        s.parse::<Ipv4Addr>()
            .map_err(|_| at(key, format!("`{key}` {s:?} is not an IPv4 address")))
    };
    let (addr, prefix) = match (a.split_once('/'), &comp.public_netmask) {
        (Some(_), Some(_)) => {
            return Err(at(
                "public_netmask",
                "public_address has a prefix length already: remove public_netmask".into(),
            ));
        }
        (Some((ad, p)), None) => {
            let n = p.parse::<u8>().ok().filter(|n| (1..=32).contains(n));
            let n = n.ok_or_else(|| {
                at(
                    "public_address",
                    format!("`public_address` {a:?}: the prefix length must be 1 to 32"),
                )
            })?;
            (v4("public_address", ad)?, n)
        }
        (None, Some(mask)) => {
            let m = v4("public_netmask", mask)?;
            let n = mask_prefix(m).filter(|n| *n > 0).ok_or_else(|| {
                at(
                    "public_netmask",
                    format!("`public_netmask` {mask} is not a subnet mask (ones, then zeros)"),
                )
            })?;
            (v4("public_address", a)?, n)
        }
        (None, None) => {
            return Err(at(
                "public_address",
                format!(
                    "`public_address` {a:?} has no prefix length: write it as \"{a}/24\" (its subnet's) or add public_netmask"
                ),
            ));
        }
    };
    let gateway = match &comp.public_gateway {
        Some(g) => Some(v4("public_gateway", g)?),
        None => None,
    };
    if let Some(g) = gateway {
        let m = u32::from(netmask(prefix));
        if u32::from(g) & m != u32::from(addr) & m || g == addr {
            return Err(at(
                "public_gateway",
                format!(
                    "`public_gateway` {g} is not another address of the public subnet {addr}/{prefix}"
                ),
            ));
        }
    }
    let mut dns = Vec::new();
    for (i, d) in comp.public_dns.iter().flatten().enumerate() {
        let ip = d.parse::<Ipv4Addr>().map_err(|_| {
            (
                vec!["public_dns".to_string(), i.to_string()],
                format!("DNS server {d:?} is not an IPv4 address"),
            )
        })?;
        dns.push(ip);
    }
    Ok(StaticV4 {
        address: addr,
        prefix,
        gateway,
        dns,
    })
}

/// The checks of the two networks across the file: every computer's
/// public keys fit together, and no MAC (private or public) and no static
/// public address is given to two interfaces. Err: the computer, the key
/// path under it, and why.
pub fn check(c: &Config) -> Result<(), (String, Refusal)> {
    let mut macs: Vec<(String, &str, String)> = Vec::new();
    let mut addrs: Vec<(String, Ipv4Addr)> = Vec::new();
    for (name, comp) in &c.computers {
        let nic = public_nic(comp).map_err(|r| (name.clone(), r))?;
        let private = comp.mac.as_deref().and_then(parse_mac);
        let public = nic.as_ref().map(|n| n.mac.clone());
        for (key, m) in [("mac", private), ("public_mac", public)] {
            let Some(m) = m else { continue };
            if let Some((other, okey, _)) = macs.iter().find(|(_, _, x)| *x == m) {
                return Err((
                    name.clone(),
                    at(
                        key,
                        format!(
                            "MAC {m} is `{okey}` of computer `{other}` already: every interface needs its own"
                        ),
                    ),
                ));
            }
            macs.push((name.clone(), key, m));
        }
        if let Some(Addressing::Static(s)) = nic.map(|n| n.addressing) {
            if let Some((other, _)) = addrs.iter().find(|(_, a)| *a == s.address) {
                return Err((
                    name.clone(),
                    at(
                        "public_address",
                        format!(
                            "public address {} is computer `{other}`'s already",
                            s.address
                        ),
                    ),
                ));
            }
            addrs.push((name.clone(), s.address));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comp(f: impl FnOnce(&mut ComputerConfig)) -> ComputerConfig {
        let mut c = ComputerConfig {
            address: "10.0.0.7".into(),
            mac: Some("52:54:00:00:00:07".into()),
            public_mac: Some("52-54-00-00-01-07".into()),
            ..ComputerConfig::default()
        };
        f(&mut c);
        c
    }

    #[test]
    fn public_interface_keys() {
        let n = public_nic(&comp(|_| {})).expect("ok").expect("a nic");
        assert_eq!(n.mac, "52:54:00:00:01:07");
        assert_eq!(n.addressing, Addressing::Dhcp);
        let n = public_nic(&comp(|c| {
            c.public_address = Some("192.0.2.10".into());
            c.public_netmask = Some("255.255.255.0".into());
            c.public_gateway = Some("192.0.2.1".into());
            c.public_dns = Some(vec!["192.0.2.53".into()]);
        }))
        .expect("ok")
        .expect("a nic");
        let Addressing::Static(s) = n.addressing else {
            panic!("static")
        };
        assert_eq!(s.cidr(), "192.0.2.10/24");
        assert_eq!(s.netmask().to_string(), "255.255.255.0");
        assert_eq!(netmask(32).to_string(), "255.255.255.255");
        assert_eq!(netmask(1).to_string(), "128.0.0.0");
        for (f, key, why) in [
            (
                Box::new(|c: &mut ComputerConfig| c.public_address = Some("192.0.2.10".into()))
                    as Box<dyn Fn(&mut ComputerConfig)>,
                "public_address",
                "no prefix length",
            ),
            (
                Box::new(|c| c.public_mac = Some("52:54:00:00:00:07".into())),
                "public_mac",
                "private interface's `mac` too",
            ),
            (
                Box::new(|c| c.public_mac = Some("52:54:00:00:07".into())),
                "public_mac",
                "not a MAC address",
            ),
            (
                Box::new(|c| c.public_gateway = Some("192.0.2.1".into())),
                "public_gateway",
                "no public_address",
            ),
            (
                Box::new(|c| {
                    c.public_address = Some("192.0.2.10/24".into());
                    c.public_gateway = Some("198.51.100.1".into());
                }),
                "public_gateway",
                "not another address of the public subnet",
            ),
            (
                Box::new(|c| {
                    c.public_address = Some("192.0.2.10".into());
                    c.public_netmask = Some("255.0.255.0".into());
                }),
                "public_netmask",
                "not a subnet mask",
            ),
            (
                Box::new(|c| {
                    c.public_mac = None;
                    c.public_dns = Some(vec![]);
                }),
                "public_dns",
                "add public_mac",
            ),
        ] {
            let (path, msg) = public_nic(&comp(f)).expect_err(why);
            assert_eq!(path[0], key, "{msg}");
            assert!(msg.contains(why), "{msg}");
        }
    }

    #[test]
    fn macs_and_addresses_are_unique_across_computers() {
        let mut c = Config::default();
        c.computers.insert("a".into(), comp(|_| {}));
        c.computers.insert(
            "b".into(),
            comp(|c| {
                c.mac = Some("52:54:00:00:00:08".into());
                c.public_mac = Some("52:54:00:00:00:07".into());
            }),
        );
        let (who, (path, msg)) = check(&c).expect_err("duplicate");
        assert_eq!((who.as_str(), path[0].as_str()), ("b", "public_mac"));
        assert!(msg.contains("`mac` of computer `a`"), "{msg}");
        c.computers.insert(
            "b".into(),
            comp(|c| {
                c.mac = Some("52:54:00:00:00:08".into());
                c.public_mac = Some("52:54:00:00:01:08".into());
            }),
        );
        assert!(check(&c).is_ok());
    }
}
