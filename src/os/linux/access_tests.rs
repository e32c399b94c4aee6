//! `grant`'s and `revoke`'s firewall program against the real nft and
//! iptables, each test in a network namespace of its own, after the first
//! boot's lockdown: the user's rules come before the lockdown's drop, a
//! second grant replaces them, a revoke takes them out (twice: nothing
//! left to take), and the boot's saved rules say the same.

use super::tests::{IPT, in_netns, section};

/// The `dport` rules of section `name` of `out`, trimmed.
fn rules(out: &str, name: &str) -> Vec<String> {
    section(out, name)
        .iter()
        .map(|l| l.trim().to_string())
        .filter(|l| l.contains("dport") || l.contains("--dport"))
        .collect()
}

/// `got` holds `want` in any order, and ends with `last`.
fn holds(got: &[String], want: &[&str], last: &str, out: &str) {
    assert_eq!(got.last().map(String::as_str), Some(last), "{out}");
    let mut g: Vec<&str> = got.iter().map(String::as_str).collect();
    let mut w = want.to_vec();
    w.push(last);
    g.sort_unstable();
    w.sort_unstable();
    assert_eq!(g, w, "{out}");
}

#[test]
fn nftables_grants_open_ssh_per_user_before_the_lockdown_drop_and_revoke_closes_them() {
    let conf = "#!/usr/sbin/nft -f\nflush ruleset\ntable inet filter {\n\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n\t\tiif \"lo\" accept\n\t\ttcp dport 22 accept\n\t}\n}\n";
    let body = r#"
nft -f "$ROOT/etc/nftables.conf"
sh "$FW" 10.0.2.2 >/dev/null
echo "== ann"; sh "$GRANT" 22 reimage-user-ann 198.51.100.0/24
echo "== ann again"; sh "$GRANT" 22 reimage-user-ann 198.51.100.0/24 2001:db8::7
echo "== bob"; sh "$GRANT" 22,8080 reimage-user-bob 192.0.2.77
echo "== granted"; nft list chain inet filter input
nft -f "$ROOT/etc/nftables.conf"
echo "== boot"; nft list chain inet filter input
echo "== revoke"; sh "$GRANT" 22 reimage-user-ann
echo "== revoke again"; sh "$GRANT" 22 reimage-user-ann
echo "== revoked"; nft list chain inet filter input
nft -f "$ROOT/etc/nftables.conf"
echo "== boot after"; nft list chain inet filter input
echo "== end"
"#;
    let root_conf = "etc/nftables.conf";
    let tools = [IPT, &["nft"]].concat();
    let (out, dir) = in_netns("grant-nft", &tools, &[(root_conf, conf)], body);
    let conf_path = dir.join("root").join(root_conf);
    assert_eq!(
        section(&out, "ann again"),
        [format!(
            "nftables: 22/tcp from 198.51.100.0/24 2001:db8::7 (kept in {})",
            conf_path.display()
        )],
        "{out}"
    );
    let drop = "tcp dport 22 drop comment \"reimage-ssh\"";
    let lockdown = "ip saddr 10.0.2.2 tcp dport 22 accept comment \"reimage-ssh\"";
    let ann = [
        "ip saddr 198.51.100.0/24 tcp dport 22 accept comment \"reimage-user-ann\"",
        "ip6 saddr 2001:db8::7 tcp dport 22 accept comment \"reimage-user-ann\"",
    ];
    // A profile's `ports`: one rule for the set.
    let bob = "ip saddr 192.0.2.77 tcp dport { 22, 8080 } accept comment \"reimage-user-bob\"";
    let all = [lockdown, ann[0], ann[1], bob];
    holds(&rules(&out, "granted"), &all, drop, &out);
    holds(&rules(&out, "boot"), &all, drop, &out);
    assert_eq!(
        section(&out, "revoke again"),
        [format!(
            "nftables: 22/tcp from nowhere (kept in {})",
            conf_path.display()
        )],
        "{out}"
    );
    holds(&rules(&out, "revoked"), &[lockdown, bob], drop, &out);
    holds(&rules(&out, "boot after"), &[lockdown, bob], drop, &out);
    let kept = std::fs::read_to_string(&conf_path).expect("conf");
    assert!(!kept.contains("reimage-user-ann"), "{kept}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn iptables_grants_open_ssh_per_user_before_the_lockdown_drop_and_revoke_closes_them() {
    let body = r#"
iptables -A INPUT -i lo -j ACCEPT
iptables -A INPUT -p tcp --dport 22 -j ACCEPT
sh "$FW" 10.0.2.2 >/dev/null
echo "== ann"; sh "$GRANT" 22 reimage-user-ann 198.51.100.0/24 192.0.2.8
echo "== ann again"; sh "$GRANT" 22 reimage-user-ann 198.51.100.0/24 192.0.2.9
echo "== bob"; sh "$GRANT" 22,8080 reimage-user-bob 192.0.2.77
echo "== granted"; iptables -S INPUT
echo "== revoke"; sh "$GRANT" 22 reimage-user-ann
echo "== revoke again"; sh "$GRANT" 22 reimage-user-ann
echo "== revoked"; iptables -S INPUT
echo "== end"
"#;
    let files = [("etc/iptables/rules.v4", ""), ("etc/iptables/rules.v6", "")];
    let (out, dir) = in_netns("grant-ipt", IPT, &files, body);
    let v4 = dir.join("root/etc/iptables/rules.v4");
    assert!(
        section(&out, "ann again")[0]
            .starts_with("iptables: 22/tcp from 198.51.100.0/24 192.0.2.9 (kept in "),
        "{out}"
    );
    let rule = |src: &str, tag: &str, j: &str| {
        format!("-A INPUT -s {src} -p tcp -m tcp --dport 22 -m comment --comment {tag} -j {j}")
    };
    let drop = "-A INPUT -p tcp -m tcp --dport 22 -m comment --comment reimage-ssh -j DROP";
    let lockdown = rule("10.0.2.2/32", "reimage-ssh", "ACCEPT");
    let ann1 = rule("198.51.100.0/24", "reimage-user-ann", "ACCEPT");
    let ann2 = rule("192.0.2.9/32", "reimage-user-ann", "ACCEPT");
    let bob = "-A INPUT -s 192.0.2.77/32 -p tcp -m multiport --dports 22,8080 -m comment --comment reimage-user-bob -j ACCEPT";
    holds(
        &rules(&out, "granted"),
        &[&lockdown, &ann1, &ann2, bob],
        drop,
        &out,
    );
    // The second grant replaced the first's 192.0.2.8.
    assert!(!out.contains("192.0.2.8/32"), "{out}");
    holds(&rules(&out, "revoked"), &[&lockdown, bob], drop, &out);
    let saved = std::fs::read_to_string(&v4).expect("rules.v4");
    assert!(
        saved.contains("reimage-ssh") && !saved.contains("reimage-user-ann"),
        "{saved}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
