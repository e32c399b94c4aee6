//! The firewall script against the real iptables and nft (each test in a
//! network namespace of its own) and against a stand-in for nft.

use super::access::GRANT_FIREWALL;
use super::first_boot::{FIREWALL, program, sh};
use std::path::{Path, PathBuf};

/// Where a system tool lives, for the netns tests' PATH.
fn system_tool(name: &str) -> PathBuf {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("{name} is missing: install iptables and nftables (.ci/run does)")
        })
}

/// Runs `body` (sh) as root in a new network namespace of its own, so
/// the real iptables and nft change nothing outside it. `$FW` is a file
/// holding FIREWALL, `$ROOT` a scratch root (REIMAGE_ROOT), PATH holds
/// only `tools` (linked from the system) and /bin:/usr/bin. Returns
/// stdout; panics with stderr unless it exits 0. `$GRANT` is a file
/// holding GRANT_FIREWALL (`grant`'s and `revoke`'s firewall program).
pub(super) fn in_netns(
    tag: &str,
    tools: &[&str],
    root_files: &[(&str, &str)],
    body: &str,
) -> (String, PathBuf) {
    use std::os::unix::fs::symlink;
    let dir = std::env::temp_dir().join(format!("reimage-fw-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("bin")).expect("temp dir");
    for t in tools {
        symlink(system_tool(t), dir.join("bin").join(t)).expect("symlink");
    }
    std::fs::create_dir_all(dir.join("root")).expect("root dir");
    for (f, text) in root_files {
        let p = dir.join("root").join(f);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("root dir");
        std::fs::write(&p, text).expect("root file");
    }
    std::fs::write(dir.join("fw.sh"), program(FIREWALL)).expect("script");
    std::fs::write(dir.join("grant.sh"), program(GRANT_FIREWALL)).expect("script");
    let out = std::process::Command::new(system_tool("unshare"))
        .args(["--net", "/bin/sh", "-ec", body])
        .env_clear()
        .env(
            "PATH",
            format!("{}:/bin:/usr/bin", dir.join("bin").display()),
        )
        .env("FW", dir.join("fw.sh"))
        .env("GRANT", dir.join("grant.sh"))
        .env("ROOT", dir.join("root"))
        .env("REIMAGE_ROOT", dir.join("root"))
        .env("SSH_CLIENT", "10.0.2.2 40000 22")
        // A firewalld on this host is never the one these scripts see.
        .env(
            "DBUS_SYSTEM_BUS_ADDRESS",
            "unix:path=/nonexistent/reimage-test",
        )
        .output()
        .expect("unshare runs");
    assert!(
        out.status.success(),
        "needs root (unshare --net): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (String::from_utf8_lossy(&out.stdout).into_owned(), dir)
}

/// The rules of `text` (`iptables -S INPUT`) between two markers.
pub(super) fn section<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.split(&format!("== {name}\n"))
        .nth(1)
        .unwrap_or("")
        .lines()
        .take_while(|l| !l.starts_with("== "))
        .collect()
}

pub(super) const IPT: &[&str] = &["iptables", "ip6tables", "iptables-save", "ip6tables-save"];

#[test]
fn iptables_opens_ssh_to_the_sources_only_and_keeps_it_for_the_boot() {
    // The real iptables (Debian's, nf_tables backend) in a namespace of
    // its own; an image that lets SSH in from anywhere and ships
    // iptables-persistent's (empty) rules files. nft is there too, as on
    // Debian, and sees iptables-nft's tables; the saved rules files make
    // it the iptables branch. A source named twice gets one rule.
    let body = r#"
iptables -A INPUT -i lo -j ACCEPT
iptables -A INPUT -p tcp --dport 22 -j ACCEPT
ip6tables -A INPUT -p tcp --dport 22 -j ACCEPT
echo "== first"; sh "$FW" 192.0.2.5 2001:db8::1 @peer 192.0.2.5
echo "== v4"; iptables -S INPUT; echo "== v6"; ip6tables -S INPUT
echo "== second"; sh "$FW" 198.51.100.7
echo "== v4 again"; iptables -S INPUT; echo "== v6 again"; ip6tables -S INPUT
echo "== end"
"#;
    let files = [("etc/iptables/rules.v4", ""), ("etc/iptables/rules.v6", "")];
    let with_nft = [IPT, &["nft"]].concat();
    let (out, dir) = in_netns("ipt", &with_nft, &files, body);
    let root = dir.join("root");
    let v4file = root.join("etc/iptables/rules.v4");
    let v6file = root.join("etc/iptables/rules.v6");
    assert_eq!(
        section(&out, "first"),
        [format!(
            "iptables: 22/tcp from 192.0.2.5 2001:db8::1 10.0.2.2 192.0.2.5 (kept in {} {})",
            v4file.display(),
            v6file.display()
        )],
        "{out}"
    );
    let tag = "-m comment --comment reimage-ssh";
    assert_eq!(
        section(&out, "v4"),
        [
            "-P INPUT ACCEPT".to_string(),
            // @peer: behind QEMU's NAT the computer sees 10.0.2.2.
            format!("-A INPUT -s 10.0.2.2/32 -p tcp -m tcp --dport 22 {tag} -j ACCEPT"),
            format!("-A INPUT -s 192.0.2.5/32 -p tcp -m tcp --dport 22 {tag} -j ACCEPT"),
            "-A INPUT -i lo -j ACCEPT".to_string(),
            // The image's open rule is gone; the rest is dropped.
            format!("-A INPUT -p tcp -m tcp --dport 22 {tag} -j DROP"),
        ],
        "{out}"
    );
    assert_eq!(
        section(&out, "v6"),
        [
            "-P INPUT ACCEPT".to_string(),
            format!("-A INPUT -s 2001:db8::1/128 -p tcp -m tcp --dport 22 {tag} -j ACCEPT"),
            format!("-A INPUT -p tcp -m tcp --dport 22 {tag} -j DROP"),
        ],
        "{out}"
    );
    // A rerun replaces its own rules (the old sources go) and keeps
    // the image's others.
    assert_eq!(
        section(&out, "v4 again"),
        [
            "-P INPUT ACCEPT".to_string(),
            format!("-A INPUT -s 198.51.100.7/32 -p tcp -m tcp --dport 22 {tag} -j ACCEPT"),
            "-A INPUT -i lo -j ACCEPT".to_string(),
            format!("-A INPUT -p tcp -m tcp --dport 22 {tag} -j DROP"),
        ],
        "{out}"
    );
    assert_eq!(
        section(&out, "v6 again"),
        [
            "-P INPUT ACCEPT".to_string(),
            format!("-A INPUT -p tcp -m tcp --dport 22 {tag} -j DROP"),
        ],
        "{out}"
    );
    // What the boot loads (iptables-restore of rules.v4) is the last
    // run's rules.
    let v4 = std::fs::read_to_string(&v4file).expect("rules.v4");
    assert!(
        v4.contains("*filter\n") && v4.contains("\nCOMMIT\n"),
        "{v4}"
    );
    assert!(
        v4.contains(&format!(
            "-A INPUT -s 198.51.100.7/32 -p tcp -m tcp --dport 22 {tag} -j ACCEPT\n"
        )),
        "{v4}"
    );
    assert!(!v4.contains("192.0.2.5"), "{v4}");
    assert!(v4.contains(&format!("--dport 22 {tag} -j DROP\n")), "{v4}");
    let v6 = std::fs::read_to_string(&v6file).expect("rules.v6");
    assert!(v6.contains(&format!("--dport 22 {tag} -j DROP\n")), "{v6}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn iptables_without_a_saved_ruleset_says_the_rules_are_not_kept() {
    let body =
        r#"echo "== run"; sh "$FW" 192.0.2.5; echo "== v4"; iptables -S INPUT; echo "== end""#;
    let (out, dir) = in_netns("ipt-nokeep", IPT, &[], body);
    assert_eq!(
        section(&out, "run"),
        [
            "iptables: 22/tcp from 192.0.2.5 (not kept: no /etc/iptables/rules.v4 (iptables-persistent) or /etc/sysconfig/iptables (iptables-services))"
        ],
        "{out}"
    );
    assert!(
        section(&out, "v4").contains(
            &"-A INPUT -s 192.0.2.5/32 -p tcp -m tcp --dport 22 -m comment --comment reimage-ssh -j ACCEPT"
        ),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn iptables_services_rules_are_kept_in_etc_sysconfig() {
    let body = r#"echo "== run"; sh "$FW" 192.0.2.5; echo "== end""#;
    let (out, dir) = in_netns("ipt-rhel", IPT, &[("etc/sysconfig/iptables", "")], body);
    let file = dir.join("root/etc/sysconfig/iptables");
    assert_eq!(
        section(&out, "run"),
        [format!(
            "iptables: 22/tcp from 192.0.2.5 (kept in {})",
            file.display()
        )],
        "{out}"
    );
    let saved = std::fs::read_to_string(&file).expect("saved");
    assert!(saved.contains("-s 192.0.2.5/32"), "{saved}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn nftables_for_real_opens_ssh_to_the_sources_and_the_boot_config_loads_the_same() {
    // The real nft in a namespace of its own, with Debian's default
    // layout (inet filter, input policy drop) plus an open SSH rule, in
    // the ruleset and in /etc/nftables.conf; then the conf is loaded
    // again as nftables.service does at boot.
    let conf = "#!/usr/sbin/nft -f\nflush ruleset\ntable inet filter {\n\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n\t\tiif \"lo\" accept\n\t\ttcp dport 22 accept\n\t}\n}\n";
    let body = r#"
nft -f "$ROOT/etc/nftables.conf"
echo "== first"; sh "$FW" 192.0.2.5 2001:db8::1 @peer
echo "== second"; sh "$FW" 192.0.2.5 2001:db8::1 @peer
echo "== live"; nft list chain inet filter input
nft -f "$ROOT/etc/nftables.conf"
echo "== boot"; nft list chain inet filter input
echo "== end"
"#;
    let root_conf = "etc/nftables.conf";
    // iptables is there too (no saved rules files): nftables' branch.
    let tools = [IPT, &["nft"]].concat();
    let (out, dir) = in_netns("nft", &tools, &[(root_conf, conf)], body);
    let conf_path = dir.join("root").join(root_conf);
    assert_eq!(
        section(&out, "first"),
        [format!(
            "nftables: 22/tcp from 192.0.2.5 2001:db8::1 10.0.2.2 (kept in {})",
            conf_path.display()
        )],
        "{out}"
    );
    let rules = |name: &str| -> Vec<String> {
        section(&out, name)
            .iter()
            .map(|l| l.trim().to_string())
            .filter(|l| l.contains("dport"))
            .collect()
    };
    let want = [
        "ip saddr 10.0.2.2 tcp dport 22 accept comment \"reimage-ssh\"",
        "ip6 saddr 2001:db8::1 tcp dport 22 accept comment \"reimage-ssh\"",
        "ip saddr 192.0.2.5 tcp dport 22 accept comment \"reimage-ssh\"",
        "tcp dport 22 drop comment \"reimage-ssh\"",
    ];
    // Twice run, once there; the open rule gone; the boot's the same.
    assert_eq!(rules("live"), want, "{out}");
    assert_eq!(rules("boot"), want, "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A stand-in for nft(8) with one table, `inet filter`, whose input
/// chain holds the rules in `chain`: it prints what `list chains` and
/// `-a list chain` print (the formats of nftables 1.0 on Debian 12),
/// logs the commands `-f /dev/stdin` reads, and accepts `-c -f FILE`.
const STUB_NFT: &str = include_str!("stub-nft.sh");

/// Runs FIREWALL with `args` against STUB_NFT and a root holding
/// `conf` as /etc/nftables.conf; the nft commands and the new conf.
fn run_with_stub_nft(args: &[&str], chain: &str, conf: &str) -> (String, String) {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("reimage-nft-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("bin")).expect("temp dir");
    std::fs::create_dir_all(dir.join("root/etc")).expect("temp dir");
    let stub = dir.join("bin/nft");
    std::fs::write(&stub, STUB_NFT).expect("stub");
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(dir.join("bin/chain"), chain).expect("chain");
    std::fs::write(dir.join("root/etc/nftables.conf"), conf).expect("conf");
    let argv = sh(FIREWALL, args);
    let out = std::process::Command::new("/bin/sh")
        .args(&argv[1..])
        .env(
            "PATH",
            format!("{}:/bin:/usr/bin", dir.join("bin").display()),
        )
        .env("REIMAGE_ROOT", dir.join("root"))
        .env("SSH_CLIENT", "10.0.2.2 40000 22")
        // A firewalld on this host is never the one these scripts see.
        .env(
            "DBUS_SYSTEM_BUS_ADDRESS",
            "unix:path=/nonexistent/reimage-test",
        )
        .output()
        .expect("sh runs");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!(
            "nftables: 22/tcp from 192.0.2.5 2001:db8::1 10.0.2.2 (kept in {}/root/etc/nftables.conf)",
            dir.display()
        )
    );
    let log = std::fs::read_to_string(dir.join("bin/log")).unwrap_or_default();
    let conf = std::fs::read_to_string(dir.join("root/etc/nftables.conf")).expect("conf");
    let _ = std::fs::remove_dir_all(&dir);
    (log, conf)
}

#[test]
fn nftables_opens_ssh_to_the_sources_only_in_every_input_chain_and_its_config() {
    let image_conf = "#!/usr/sbin/nft -f\nflush ruleset\ntable inet filter {\n\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n\t\tiif \"lo\" accept\n\t\ttcp dport 22 accept\n\t}\n}\n";
    let chain = "\t\tiif \"lo\" accept # handle 4\n\t\ttcp dport 22 accept # handle 5\n";
    let args = ["192.0.2.5", "2001:db8::1", "@peer"];
    let (log, conf) = run_with_stub_nft(&args, chain, image_conf);
    let cmds: Vec<&str> = log.lines().filter(|l| !l.is_empty()).collect();
    let tag = "comment \"reimage-ssh\"";
    assert_eq!(
        cmds,
        [
            // The image's rule that let SSH in from anywhere goes.
            "delete rule inet filter input handle 5".to_string(),
            format!("add rule inet filter input tcp dport 22 drop {tag}"),
            format!("insert rule inet filter input ip saddr 192.0.2.5 tcp dport 22 accept {tag}"),
            format!(
                "insert rule inet filter input ip6 saddr 2001:db8::1 tcp dport 22 accept {tag}"
            ),
            format!("insert rule inet filter input ip saddr 10.0.2.2 tcp dport 22 accept {tag}"),
        ],
        "{log}"
    );
    // Only the input hook's chain, not output.
    assert!(!log.contains("output"), "{log}");
    assert!(
        conf.contains("# reimage-ssh: \t\ttcp dport 22 accept\n"),
        "{conf}"
    );
    assert!(conf.contains("\t\tiif \"lo\" accept\n"), "{conf}");
    assert!(
        conf.ends_with(&format!(
            "# reimage-ssh begin\n{}\n# reimage-ssh end\n",
            cmds[1..].join("\n")
        )),
        "{conf}"
    );

    // A rerun finds its own rules: they go, and come back once; the
    // config keeps one block.
    let chain2 = format!(
        "\t\tip saddr 10.0.2.2 tcp dport 22 accept {tag} # handle 9\n\t\tiif \"lo\" accept # handle 4\n\t\ttcp dport 22 drop {tag} # handle 8\n"
    );
    let (log2, conf2) = run_with_stub_nft(&args, &chain2, &conf);
    assert!(
        log2.starts_with(
            "delete rule inet filter input handle 9\ndelete rule inet filter input handle 8\n"
        ),
        "{log2}"
    );
    assert_eq!(log2.matches("add rule").count(), 1, "{log2}");
    assert_eq!(conf2, conf);
}

#[test]
fn image_hooks_are_found_in_order_and_run_with_the_environment() {
    use super::first_boot::{POST_LOAD_D, VCL_POST_LOAD, hook_command};
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("reimage-hooks-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = dir.join("out");
    let put = |f: &str, text: &str, mode: u32| {
        let p = dir.join(f);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("dir");
        std::fs::write(&p, text).expect("hook");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("mode");
    };
    let line = |tag: &str| {
        format!(
            "echo \"{tag} $REIMAGE_COMPUTER $REIMAGE_ATTEMPT\" >> {}\n",
            out.display()
        )
    };
    put("etc/init.d/vcl_post_load", &line("init"), 0o644);
    put(
        "usr/local/vcl/vcl_post_load",
        &format!("#!/bin/sh\n{}", line("vcl")),
        0o755,
    );
    put(
        "etc/reimage/post-load.d/20-b",
        &format!("#!/bin/sh\n{}", line("20")),
        0o755,
    );
    put(
        "etc/reimage/post-load.d/10-a",
        &format!("#!/bin/sh\n{}", line("10")),
        0o755,
    );
    put("etc/reimage/post-load.d/README", "not a hook", 0o644);
    let run = |argv: &[String]| {
        let o = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .env("REIMAGE_ROOT", &dir)
            .output()
            .expect("sh runs");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let hooks = crate::os::hooks::order(
        &run(&sh(VCL_POST_LOAD, &[])),
        &run(&sh(POST_LOAD_D, &[])),
        "",
    );
    let env = vec![
        ("REIMAGE_COMPUTER", "pc 7".to_string()),
        ("REIMAGE_ATTEMPT", "2".to_string()),
    ];
    for h in &hooks {
        run(&hook_command(&h.path, &env).expect("a command"));
    }
    let got = std::fs::read_to_string(&out).expect("the hooks wrote");
    assert_eq!(got, "vcl pc 7 2\ninit pc 7 2\n10 pc 7 2\n20 pc 7 2\n");
    let _ = std::fs::remove_dir_all(&dir);
}
