//! The `libvirt` provisioner over the built binary, against the real `virsh`
//! and libvirt's real test driver (`test:///default` or a `test:///PATH`
//! node file): virsh parses the commands, the test driver parses and checks
//! the domain XML and keeps domain states, exactly as for a real URI.
//!
//! What cannot be real here: the test driver's state lives in one virsh
//! process and is gone when it exits, while reimage runs one virsh process
//! per step (as it must against `qemu:///system`). Tests that need a step to
//! see an earlier one (define, then start, then domstate) set `virsh` to the
//! *journal wrapper* below: it replays the earlier successful state-changing
//! commands in the same virsh process before the new one. Tests that need no
//! persistence call the real virsh directly. Faults the test driver cannot
//! produce (a dropped connection on `start`) come from a *fault injector*
//! wrapper that otherwise runs the real virsh.

use crate::common;
use crate::test::{Output, Test, run};
use common::{LIMIT, Scratch};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use testbed::port::Port;

/// The real virsh, or a test failure saying what to install.
fn require_tools() {
    for (tool, pkg) in [("virsh", "libvirt-clients"), ("qemu-img", "qemu-utils")] {
        let ok = Command::new(tool)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(ok, "`{tool}` is needed: apt-get install {pkg}");
    }
}

/// Journal wrapper (test only, not a stand-in for libvirt): keeps the test
/// driver's state across separate virsh calls by replaying every earlier
/// successful define/undefine/start/destroy/reset in the same virsh process
/// before the new command, printing only the new command's output and
/// exiting with its code. `define FILE` is replayed from a copy of FILE.
fn journal_virsh(s: &Scratch) -> PathBuf {
    let dir = s.path("journal");
    std::fs::create_dir_all(&dir).expect("journal dir");
    let script = r#"#!/bin/sh
dir=__DIR__
[ "$1" = "-c" ] || exec virsh "$@"
uri=$2
shift 2
q() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }
touch "$dir/journal"
sub=$1
line=""
for a in "$@"; do
  if [ "$sub" = define ] && [ -f "$a" ]; then
    n=$(wc -l < "$dir/journal")
    cp "$a" "$dir/define-$n.xml"
    a="$dir/define-$n.xml"
  fi
  line="$line $(q "$a")"
done
virsh -c "$uri" "$(cat "$dir/journal") echo ---journal-mark--- ; $line" > "$dir/out" 2> "$dir/err"
rc=$?
awk 'f { print } /^---journal-mark---$/ { f = 1 }' "$dir/out"
cat "$dir/err" >&2
case $sub in
  define|undefine|start|destroy|reset) [ $rc = 0 ] && echo "$line ;" >> "$dir/journal" ;;
esac
exit $rc
"#
    .replace("__DIR__", &dir.display().to_string());
    s.script("journal-virsh", &script)
}

/// The state-changing commands the journal wrapper saw succeed, in order,
/// as `verb` strings ("destroy", "define", ...).
fn journal(s: &Scratch) -> Vec<String> {
    std::fs::read_to_string(s.path("journal/journal"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split('\'').nth(1).map(str::to_string))
        .collect()
}

/// Runs virsh through the journal wrapper (so it sees what reimage did).
fn virsh_after(s: &Scratch, uri: &str, args: &[&str]) -> String {
    let o = Command::new(s.path("journal-virsh"))
        .arg("-c")
        .arg(uri)
        .args(args)
        .output()
        .expect("run journal wrapper");
    assert!(
        o.status.success(),
        "virsh {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A test driver node file: each `(name, running)` a domain of the given
/// state. The test driver reads it afresh in every virsh process.
fn node_file(s: &Scratch, domains: &[(&str, bool)]) -> String {
    let mut xml = String::from("<node>\n");
    for (name, running) in domains {
        xml.push_str(&format!(
            "  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>\n    <name>{name}</name>\n    <memory unit='MiB'>32</memory>\n    <os><type>hvm</type></os>\n    {}\n  </domain>\n",
            if *running { "" } else { "<test:runstate>5</test:runstate>" }
        ));
    }
    xml.push_str("</node>\n");
    format!("test://{}", s.write("node.xml", &xml).display())
}

/// A 16 MiB qcow2 base disk made by the real qemu-img.
fn base_disk(s: &Scratch) -> PathBuf {
    let p = s.path("base.qcow2");
    let o = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&p)
        .arg("16M")
        .output()
        .expect("qemu-img runs");
    assert!(o.status.success(), "qemu-img create base");
    p
}

/// The shipped example template.
fn example_template() -> PathBuf {
    common::repo("examples/libvirt-domain.xml")
}

struct Setup<'a> {
    uri: &'a str,
    virsh: &'a Path,
    template: Option<&'a Path>,
    extra_provisioner: &'a str,
    node: &'a str,
    mac: &'a str,
    start_timeout: &'a str,
    steps: String,
}

fn toml_str(s: &str) -> String {
    format!("{:?}", s)
}

/// Writes the config: provisioner `lv`, OS profile `none`, image `vm`,
/// computer `vm1`.
fn config(s: &Scratch, base: &Path, c: &Setup) {
    let template = c
        .template
        .map(|t| format!("domain_xml = {}\n", toml_str(&t.display().to_string())))
        .unwrap_or_default();
    s.config(&format!(
        r#"
[provisioners.lv]
kind = "libvirt"
uri = {uri}
virsh = {virsh}
disk_dir = {disks}
command_timeout = "20s"
start_timeout = {start_timeout}
{extra}

[os.none]
family = "generic"
channel = "none"
steps = {steps}

[images.vm]
os = "none"
provisioner = "lv"
source = {base}
{template}memory = 64
cpus = 2

[computers.vm1]
address = "127.0.0.1"
node = {node}
mac = {mac}
public_mac = "52:54:00:00:02:01"
"#,
        uri = toml_str(c.uri),
        virsh = toml_str(&c.virsh.display().to_string()),
        disks = toml_str(&s.path("disks").display().to_string()),
        extra = c.extra_provisioner,
        start_timeout = toml_str(c.start_timeout),
        steps = c.steps,
        base = toml_str(&base.display().to_string()),
        node = toml_str(c.node),
        mac = toml_str(c.mac),
    ));
}

fn setup<'a>(uri: &'a str, virsh: &'a Path, template: Option<&'a Path>) -> Setup<'a> {
    Setup {
        uri,
        virsh,
        template,
        extra_provisioner: "",
        node: "vm1",
        mac: "52:54:00:00:01:01",
        start_timeout: "10s",
        steps: "[]".into(),
    }
}

fn load(s: &Scratch) -> Output {
    Test::with(s).load("vm1", "vm").run()
}

fn real_virsh() -> PathBuf {
    PathBuf::from("virsh")
}

#[test]
fn defines_from_the_template_starts_and_sees_it_running() {
    require_tools();
    let s = Scratch::new("lv-define");
    let base = base_disk(&s);
    let virsh = journal_virsh(&s);
    let t = example_template();
    config(&s, &base, &setup("test:///default", &virsh, Some(&t)));

    let r = load(&s);
    r.code(0);
    // vm1 did not exist: nothing to stop or undefine.
    assert_eq!(journal(&s), ["define", "start"]);

    // The overlay is real: qemu-img made it over the base disk.
    let overlay = s.path("disks/vm1.qcow2");
    let info = Command::new("qemu-img")
        .args(["info", "-U"])
        .arg(&overlay)
        .output()
        .expect("qemu-img info");
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.contains(&format!("backing file: {}", base.display())),
        "{info}"
    );

    // What libvirt made of the rendered example template.
    let xml = virsh_after(&s, "test:///default", &["dumpxml", "vm1"]);
    assert!(xml.contains("<name>vm1</name>"), "{xml}");
    assert!(
        xml.contains(&format!("<source file='{}'", overlay.display())),
        "{xml}"
    );
    assert!(xml.contains("<mac address='52:54:00:00:01:01'/>"), "{xml}");
    // Two networks: the shipped template's second interface gets the
    // public MAC, on the public network (libvirt's own list of them).
    let ifs = virsh_after(&s, "test:///default", &["domiflist", "vm1"]);
    let rows: Vec<Vec<&str>> = ifs
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.len() == 5 && w[1] == "network")
        .collect();
    assert_eq!(
        rows.iter().map(|w| (w[2], w[4])).collect::<Vec<_>>(),
        [
            ("default", "52:54:00:00:01:01"),
            ("public", "52:54:00:00:02:01")
        ],
        "{ifs}"
    );
    assert!(xml.contains("<memory unit='KiB'>65536</memory>"), "{xml}");
    assert!(xml.contains(">2</vcpu>"), "{xml}");
    let state = virsh_after(&s, "test:///default", &["domstate", "vm1"]);
    assert_eq!(state.trim(), "running");

    let events = s.events("vm1");
    assert!(
        common::of_kind(&events, "step-end")
            .iter()
            .any(|e| e["step"] == "running" && e["result"] == "ok"),
        "{events:?}"
    );
}

#[test]
fn redefines_an_existing_running_domain() {
    require_tools();
    let s = Scratch::new("lv-redefine");
    let base = base_disk(&s);
    let virsh = journal_virsh(&s);
    let uri = node_file(&s, &[("vm1", true), ("other", true)]);
    let t = example_template();
    config(&s, &base, &setup(&uri, &virsh, Some(&t)));

    let r = load(&s);
    r.code(0);
    assert_eq!(journal(&s), ["destroy", "undefine", "define", "start"]);
    // The node file's vm1 had 32 MiB; the template's has 64.
    let xml = virsh_after(&s, &uri, &["dumpxml", "vm1"]);
    assert!(xml.contains("<memory unit='KiB'>65536</memory>"), "{xml}");
    // The other domain is left alone.
    let other = virsh_after(&s, &uri, &["domstate", "other"]);
    assert_eq!(other.trim(), "running");
}

#[test]
fn reuses_an_existing_running_domain_without_a_template() {
    require_tools();
    let s = Scratch::new("lv-reuse");
    let base = base_disk(&s);
    let virsh = journal_virsh(&s);
    let uri = node_file(&s, &[("vm1", true)]);
    config(&s, &base, &setup(&uri, &virsh, None));

    let r = load(&s);
    r.code(0);
    // Destroyed, then started again; never redefined, no overlay.
    assert_eq!(journal(&s), ["destroy", "start"]);
    assert!(!s.path("disks/vm1.qcow2").exists());
    let xml = virsh_after(&s, &uri, &["dumpxml", "vm1"]);
    assert!(xml.contains("<memory unit='KiB'>32768</memory>"), "{xml}");
}

#[test]
fn reuse_domain_keeps_the_definition_but_renews_the_disk() {
    require_tools();
    let s = Scratch::new("lv-reuse-disk");
    let base = base_disk(&s);
    let virsh = journal_virsh(&s);
    let uri = node_file(&s, &[("vm1", false)]);
    let t = example_template();
    let mut c = setup(&uri, &virsh, Some(&t));
    c.extra_provisioner = "reuse_domain = true";
    config(&s, &base, &c);

    let r = load(&s);
    r.code(0);
    // Shut off: nothing to destroy; kept: no undefine/define.
    assert_eq!(journal(&s), ["start"]);
    assert!(s.path("disks/vm1.qcow2").is_file());
}

#[test]
fn unknown_domain_without_a_template_is_fatal() {
    require_tools();
    let s = Scratch::new("lv-unknown");
    let base = base_disk(&s);
    // Real virsh, no persistence needed: test:///default has only "test".
    let v = real_virsh();
    config(&s, &base, &setup("test:///default", &v, None));

    let r = load(&s);
    r.code(1);
    assert!(
        r.stderr.contains("no domain `vm1`") && r.stderr.contains("set domain_xml"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_template_libvirt_rejects_is_fatal() {
    require_tools();
    let s = Scratch::new("lv-badxml");
    let base = base_disk(&s);
    let v = real_virsh();
    // No <memory>: libvirt says "XML error: Memory size must be specified".
    let t = s.write(
        "no-memory.xml",
        "<domain type='kvm'><name>{name}</name><os><type>hvm</type></os></domain>\n",
    );
    config(&s, &base, &setup("test:///default", &v, Some(&t)));
    let r = load(&s);
    r.code(1);
    r.stderr_has("rejects the XML");
    r.stderr_has("XML error");

    // Not even well-formed.
    let t = s.write(
        "broken.xml",
        "<domain type='kvm'><name>{name}</name><memory>1</memory><os><type>hvm</type></os>\n",
    );
    config(&s, &base, &setup("test:///default", &v, Some(&t)));
    let r = load(&s);
    r.code(1);
    r.stderr_has("rejects the XML");
}

#[test]
fn a_missing_base_disk_is_fatal_before_anything_is_stopped() {
    require_tools();
    let s = Scratch::new("lv-nobase");
    let virsh = journal_virsh(&s);
    let uri = node_file(&s, &[("vm1", true)]);
    let t = example_template();
    config(&s, &s.path("missing.qcow2"), &setup(&uri, &virsh, Some(&t)));
    let r = load(&s);
    r.code(1);
    r.stderr_has("base disk");
    assert!(journal(&s).is_empty(), "{:?}", journal(&s));
}

#[test]
fn missing_virsh_is_fatal_and_says_what_to_install() {
    let s = Scratch::new("lv-novirsh");
    let base = s.write("base.qcow2", "");
    let v = s.path("no-such-virsh");
    config(&s, &base, &setup("test:///default", &v, None));
    let r = load(&s);
    r.code(1);
    r.stderr_has("libvirt-clients");
}

#[test]
fn an_unreachable_uri_asks_for_a_retry() {
    require_tools();
    let s = Scratch::new("lv-nouri");
    let base = base_disk(&s);
    let v = real_virsh();
    // Real virsh, real failure: the test driver cannot open a missing node
    // file and virsh says "failed to connect to the hypervisor".
    let uri = format!("test://{}", s.path("no-such-node.xml").display());
    config(&s, &base, &setup(&uri, &v, None));
    let r = load(&s);
    r.code(75);
    r.stderr_has("cannot reach libvirt");
}

#[test]
fn a_connection_lost_at_start_asks_for_a_retry() {
    require_tools();
    let s = Scratch::new("lv-fault");
    let base = base_disk(&s);
    // Fault injector: `start` fails as a dropped connection to libvirtd
    // does; every other command is the real virsh.
    let fault = s.script(
        "fault-virsh",
        "#!/bin/sh\ncase \" $* \" in\n  *' start '*)\n    echo 'error: failed to connect to the hypervisor' >&2\n    echo 'error: End of file while reading data: Input/output error' >&2\n    exit 1 ;;\nesac\nexec virsh \"$@\"\n",
    );
    let t = example_template();
    config(&s, &base, &setup("test:///default", &fault, Some(&t)));
    let r = load(&s);
    r.code(75);
    r.stderr_has("start domain `vm1`");
}

#[test]
fn a_domain_that_never_runs_times_out_as_a_retry() {
    require_tools();
    let s = Scratch::new("lv-never");
    let base = base_disk(&s);
    // Real virsh without the journal: `start` succeeds, but the next virsh
    // process reads the node file again and sees vm1 shut off, which is
    // what a domain that dies right after starting looks like.
    let v = real_virsh();
    let uri = node_file(&s, &[("vm1", false)]);
    let mut c = setup(&uri, &v, None);
    // 3 s: room for a few `virsh domstate` answers on a loaded machine.
    c.start_timeout = "3s";
    config(&s, &base, &c);

    let r = load(&s);
    r.code(75);
    assert!(
        r.stderr.contains("not running after 3s") && r.stderr.contains("shut off"),
        "{}",
        r.stderr
    );
    // Ends at the start timeout, not the 20 s command timeout or later.
    assert!(r.took < Duration::from_secs(30), "{:?}", r.took);
}

#[test]
fn values_reach_the_xml_escaped() {
    require_tools();
    let s = Scratch::new("lv-escape");
    let base = base_disk(&s);
    let virsh = journal_virsh(&s);
    let t = s.write(
        "escape.xml",
        "<domain type='test'>\n  <name>{name}</name>\n  <description>{address}</description>\n  <memory unit='MiB'>{memory}</memory>\n  <os><type>hvm</type></os>\n  <devices><disk type='file' device='disk'><source file='{disk}'/><target dev='vda'/></disk></devices>\n</domain>\n",
    );
    let name = "vm&<>\"'1";
    // A MAC is checked (hex bytes), an address only for blanks and a
    // leading '-': the address carries the other specials.
    let address = "h<&\"'>";
    let mut c = setup("test:///default", &virsh, Some(&t));
    c.node = name;
    config(&s, &base, &c);
    let cfg = s.path("reimage.toml");
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(
        &cfg,
        text.replace(
            "address = \"127.0.0.1\"",
            &format!("address = {}", toml_str(address)),
        ),
    )
    .expect("write");

    let r = load(&s);
    r.code(0);
    // The file the template was rendered to.
    let rendered =
        std::fs::read_to_string(s.path("state/computers/vm1/domain.xml")).expect("rendered XML");
    assert!(
        rendered.contains("<name>vm&amp;&lt;&gt;&quot;&apos;1</name>"),
        "{rendered}"
    );
    assert!(
        rendered.contains("<description>h&lt;&amp;&quot;&apos;&gt;</description>"),
        "{rendered}"
    );
    // libvirt parsed it back to the original values.
    let info = virsh_after(&s, "test:///default", &["dominfo", name]);
    assert!(
        info.lines()
            .any(|l| l.starts_with("Name:") && l.trim_end().ends_with(name)),
        "{info}"
    );
    let desc = virsh_after(&s, "test:///default", &["desc", name]);
    assert_eq!(desc.trim(), address);
}

#[test]
fn power_reset_resets_the_domain() {
    require_tools();
    let s = Scratch::new("lv-reset");
    let base = base_disk(&s);
    let virsh = journal_virsh(&s);
    let uri = node_file(&s, &[("vm1", true)]);
    let held = Port::new();
    let port = held.num();
    let mut c = setup(&uri, &virsh, None);
    // A wait that cannot succeed (nothing listens), with a reset on timeout.
    c.steps = format!(
        "[{{ wait = \"port\", port = {port}, timeout = \"300ms\", reset_on_timeout = \"300ms\" }}]"
    );
    config(&s, &base, &c);

    let r = Test::with(&s).post_load("vm1", "vm").run();
    assert_ne!(r.code, 0, "{r:?}");
    assert_eq!(journal(&s), ["reset"], "{r:?}");
}

#[test]
fn check_describes_the_plan() {
    require_tools();
    let s = Scratch::new("lv-check");
    let base = base_disk(&s);
    let v = real_virsh();
    let t = example_template();
    config(&s, &base, &setup("test:///default", &v, Some(&t)));
    let r = Test::with(&s).check("vm1", "vm").run();
    r.code(0);
    let out = format!("{}{}", r.stdout, r.stderr);
    assert!(out.contains("libvirt uri: test:///default"), "{out}");
    assert!(out.contains("domain: vm1"), "{out}");
    assert!(out.contains("disk overlay: "), "{out}");
    assert!(out.contains("vm1.qcow2"), "{out}");
    assert!(out.contains("start timeout: 10s, 15s, 22.5s"), "{out}");
}

#[test]
fn the_example_config_checks() {
    let s = Scratch::new("lv-example");
    let mut cmd = Command::new(common::bin());
    let example = common::site_example(
        &s,
        "libvirt.toml",
        &["/etc/reimage/", "/var/lib/libvirt/images/"],
    );
    cmd.arg("--config")
        .arg(&example)
        .arg("--state-dir")
        .arg(s.path("state"))
        .arg("check")
        .env_remove("REIMAGE_CONFIG");
    let r = run(&mut cmd, LIMIT);
    r.code(0);
}

#[test]
fn a_load_retry_on_the_last_attempt_is_fatal() {
    require_tools();
    let s = Scratch::new("lv-last");
    let base = base_disk(&s);
    let v = real_virsh();
    // The same real failure as an_unreachable_uri_asks_for_a_retry.
    let uri = format!("test://{}", s.path("no-such-node.xml").display());
    config(&s, &base, &setup(&uri, &v, None));
    let r = Test::with(&s).load("vm1", "vm").attempt(2, 2).run();
    r.code(1);
    r.stderr_has("cannot reach libvirt");
    r.stderr_has("no attempts left");
    Test::with(&s)
        .load("vm1", "vm")
        .attempt(1, 2)
        .run()
        .code(75)
        .stderr_lacks("no attempts left");
}

#[test]
fn a_post_load_retry_on_the_last_attempt_is_fatal() {
    require_tools();
    let s = Scratch::new("lv-post-last");
    let base = base_disk(&s);
    let v = real_virsh();
    let held = Port::new();
    let port = held.num();
    let mut c = setup("test:///default", &v, None);
    // A wait that cannot succeed: nothing listens on the port.
    c.steps = format!("[{{ wait = \"port\", port = {port}, timeout = \"300ms\" }}]");
    config(&s, &base, &c);
    Test::with(&s)
        .post_load("vm1", "vm")
        .attempt(2, 2)
        .run()
        .code(1)
        .stderr_has("no attempts left");
    Test::with(&s)
        .post_load("vm1", "vm")
        .attempt(1, 2)
        .run()
        .code(75)
        .stderr_lacks("no attempts left");
}

/// `qemu-img create` of a 16 MiB qcow2 at `p`, on `backing` when given.
fn qcow2(p: &Path, backing: Option<&Path>) {
    let mut cmd = Command::new("qemu-img");
    cmd.args(["create", "-q", "-f", "qcow2"]);
    if let Some(b) = backing {
        cmd.arg("-b").arg(b).args(["-F", "qcow2"]);
    }
    let o = cmd.arg(p).arg("16M").output().expect("qemu-img runs");
    assert!(o.status.success(), "qemu-img create {}", p.display());
}

#[test]
fn a_base_disk_that_is_the_overlay_is_never_overwritten() {
    require_tools();
    let s = Scratch::new("lv-golden");
    let virsh = journal_virsh(&s);
    let uri = node_file(&s, &[("vm1", true)]);
    let t = example_template();
    // The base disk sits where computer vm1's overlay goes.
    std::fs::create_dir_all(s.path("disks")).expect("disks");
    let base = s.path("disks/vm1.qcow2");
    qcow2(&base, None);
    let golden = std::fs::read(&base).expect("the base");
    config(&s, &base, &setup(&uri, &virsh, Some(&t)));
    let line = std::fs::read_to_string(s.path("reimage.toml"))
        .expect("config")
        .lines()
        .position(|l| l.starts_with("disk_dir = "))
        .expect("the disk_dir line")
        + 1;
    // The table sets disk_dir: the key to change.
    let r = Test::with(&s).check("vm1", "vm").run();
    r.code(78);
    r.stderr_has(&format!("reimage.toml:{line}:1:"));
    r.stderr_has("is computer `vm1`'s overlay");
    let r = load(&s);
    r.code(1);
    r.stderr_has("refusing to load image `vm` onto computer `vm1`");
    assert!(
        journal(&s).is_empty(),
        "the domain was touched: {:?}",
        journal(&s)
    );
    assert_eq!(std::fs::read(&base).expect("the base"), golden);

    // Through a symbolic link it is still the one file.
    let link = s.path("golden-link.qcow2");
    std::os::unix::fs::symlink(&base, &link).expect("symlink");
    config(&s, &link, &setup(&uri, &virsh, Some(&t)));
    Test::with(&s).check("vm1", "vm").run().code(78);

    // A base that stands on the overlay (its backing file): only a load
    // reads the chain, and refuses before the domain is touched.
    let over = s.path("golden.qcow2");
    qcow2(&over, Some(&base));
    config(&s, &over, &setup(&uri, &virsh, Some(&t)));
    Test::with(&s).check("vm1", "vm").run().code(0);
    let r = load(&s);
    r.code(1);
    r.stderr_has(&format!(
        "stands on {}, which is the computer's overlay",
        base.display()
    ));
    assert!(journal(&s).is_empty(), "{:?}", journal(&s));
    assert_eq!(std::fs::read(&base).expect("the base"), golden);

    // Elsewhere, the load runs.
    let elsewhere = s.path("base.qcow2");
    qcow2(&elsewhere, None);
    config(&s, &elsewhere, &setup(&uri, &virsh, Some(&t)));
    load(&s).code(0);
}

#[test]
fn power_off_destroys_a_running_domain_and_keeps_its_definition() {
    require_tools();
    let s = Scratch::new("lv-off");
    let base = base_disk(&s);
    let virsh = journal_virsh(&s);
    let uri = node_file(&s, &[("vm1", true)]);
    config(&s, &base, &setup(&uri, &virsh, None));

    Test::with(&s)
        .power_off("vm1")
        .args(&["--image", "vm"])
        .run()
        .code(0)
        .event_log_has("domain vm1 is running: destroying it");
    assert_eq!(journal(&s), ["destroy"]);
    assert_eq!(
        virsh_after(&s, &uri, &["domstate", "vm1"]).trim(),
        "shut off"
    );
    // Off already: nothing to do, still 0; the image comes from the last
    // run's record now.
    Test::with(&s)
        .power_off("vm1")
        .run()
        .code(0)
        .event_log_has("domain vm1 is shut off");
    assert_eq!(journal(&s), ["destroy"]);
}
