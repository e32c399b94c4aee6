//! `reimage check` (issue 24): offline, the files a config names and
//! their modes, and `--json`; online (`--online`), the questions it asks
//! the systems a run will drive: the xCAT stand-in, libvirt's test driver,
//! the coordination store (one that is down, and a real PostgreSQL), the
//! SSH key, the channel's port. (vSphere's are in the vsphere module,
//! beside its simulator.) The configs that fail the new offline checks
//! are in the corpus, tests/configs/broken/check-*.toml.

use crate::common::Scratch;
use crate::test::{Output, Test};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};
use testbed::pg::Pg;
use testbed::port::Port;
use testbed::xcat::Xcat;

fn chmod(p: &std::path::Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The 1-based line of the config that starts with `start`.
fn line_of(s: &Scratch, start: &str) -> usize {
    std::fs::read_to_string(s.path("reimage.toml"))
        .expect("config")
        .lines()
        .position(|l| l.starts_with(start))
        .expect("the line is there")
        + 1
}

/// A profile over SSH with key `key`, a command provisioner, and `pc7` on
/// `port` of 127.0.0.1; `extra` is added at the top.
fn ssh_config(s: &Scratch, key: &std::path::Path, port: u16, extra: &str) {
    s.config(&format!(
        r#"{extra}
[os.rocky]
family = "linux"
channel = "ssh"
user = "root"
key_file = "{}"

[provisioners.script]
kind = "command"
load = ["true"]

[images.img]
os = "rocky"
provisioner = "script"

[computers.pc7]
address = "127.0.0.1"
port = {port}
"#,
        key.display()
    ));
}

fn keygen(s: &Scratch, name: &str, passphrase: &str) -> std::path::PathBuf {
    let key = s.path(name);
    let r = crate::test::run(
        std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", passphrase, "-f"])
            .arg(&key),
        Duration::from_secs(30),
    );
    r.code(0);
    key
}

/// Lines of `check --online` output that start with `verdict` and hold
/// `text`.
fn has_line(r: &Output, verdict: &str, text: &str) -> bool {
    r.stdout
        .lines()
        .any(|l| l.starts_with(verdict) && l.contains(text))
}

#[test]
fn a_secret_others_can_read_fails_check_at_its_line_and_passes_once_private() {
    let s = Scratch::new("check-secret");
    let key = keygen(&s, "id_ed25519", "");
    chmod(&key, 0o644);
    ssh_config(&s, &key, 22, "");
    let at = format!("reimage.toml:{}:1:", line_of(&s, "key_file"));
    for args in [&["check"][..], &["check", "pc7", "--image", "img"]] {
        let r = Test::with(&s).args(args).run();
        r.code(78)
            .stderr_has(&at)
            .stderr_has("is a secret but readable by everyone (mode 0644)")
            .stderr_has("chmod go-rwx");
    }
    chmod(&key, 0o640);
    Test::with(&s)
        .args(&["check"])
        .run()
        .code(78)
        .stderr_has("readable by its group");
    chmod(&key, 0o600);
    Test::with(&s).args(&["check"]).run().code(0);
    // --json is JSON, for the file and for a plan.
    for args in [
        &["--json", "check"][..],
        &["--json", "check", "pc7", "--image", "img"],
    ] {
        let r = Test::with(&s).args(args).run();
        r.code(0);
        let v: serde_json::Value =
            serde_json::from_str(r.stdout.trim()).expect("check --json prints one JSON object");
        assert_eq!(v["kind"], "check", "{v}");
        assert_eq!(v["result"], "ok", "{v}");
    }
}

#[test]
fn an_image_file_of_another_image_is_not_a_plans_business() {
    // `check COMPUTER --image IMAGE` looks at that image's files; the
    // whole-file check at every image's.
    let s = Scratch::new("check-other-image");
    s.config(
        r#"
[os.appliance]
family = "generic"
channel = "none"
steps = []

[provisioners.script]
kind = "command"
load = ["true"]

[images.img]
os = "appliance"
provisioner = "script"

[images.other]
os = "appliance"
provisioner = "script"
post_load = ["/nonexistent/reimage-test/after.sh"]

[computers.pc7]
address = "192.0.2.7"
"#,
    );
    Test::with(&s).check("pc7", "img").run().code(0);
    Test::with(&s)
        .args(&["check"])
        .run()
        .code(78)
        .stderr_has("/nonexistent/reimage-test/after.sh: no such file");
}

/// The xCAT stand-in with node `n1` and osimage `rocky9`, and a config
/// whose images name it (`rocky9`) and one it lacks (`gone`).
fn xcat_site(s: &Scratch) -> Xcat {
    let x = Xcat::install(&s.dir);
    x.node("n1");
    x.osimage("rocky9", "install rocky9.4 x86_64 compute");
    s.config(
        r#"
[provisioners.x]
kind = "xcat"

[os.none]
family = "generic"
channel = "none"
steps = []

[images.rocky9]
os = "none"
provisioner = "x"

[images.gone]
os = "none"
provisioner = "x"
source = "no-such-osimage"

[computers.n1]
address = "127.0.0.1"

[computers.n2]
address = "127.0.0.1"
"#,
    );
    x
}

fn with_xcat<'a>(s: &'a Scratch, x: &Xcat) -> Test<'a> {
    let [(k1, v1), (k2, v2)] = x.env();
    Test::with(s).env(k1, v1).env(k2, v2)
}

#[test]
fn online_asks_the_xcat_stand_in_for_the_node_and_the_osimage() {
    let s = Scratch::new("check-online-xcat");
    let x = xcat_site(&s);
    let r = with_xcat(&s, &x)
        .args(&["check", "n1", "--image", "rocky9", "--online"])
        .run();
    r.code(0);
    assert!(has_line(&r, "ok ", "xCAT node n1: defined"), "{}", r.stdout);
    assert!(
        has_line(&r, "ok ", "xCAT osimage rocky9: defined"),
        "{}",
        r.stdout
    );
    // Read-only: lsdef only.
    for call in x.calls().lines() {
        assert!(call.starts_with("lsdef "), "{call}");
    }

    let r = with_xcat(&s, &x)
        .args(&["check", "n2", "--image", "gone", "--online"])
        .run();
    r.code(1);
    assert!(
        has_line(&r, "failed", "xCAT node n2: not defined"),
        "{}",
        r.stdout
    );
    assert!(
        has_line(&r, "failed", "xCAT osimage no-such-osimage: not defined"),
        "{}",
        r.stdout
    );
    r.stdout_has("2 of 2 checks failed");

    // --all asks each question once; with --json a line a check.
    let r = with_xcat(&s, &x)
        .args(&["--json", "check", "--online", "--all"])
        .run();
    r.code(1);
    let lines: Vec<serde_json::Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let whats: Vec<&str> = lines.iter().filter_map(|v| v["what"].as_str()).collect();
    assert_eq!(
        whats,
        [
            "xCAT node n1",
            "xCAT osimage no-such-osimage",
            "xCAT osimage rocky9",
            "xCAT node n2"
        ],
        "{}",
        r.stdout
    );
    let last = lines.last().expect("the summary");
    assert_eq!(last["kind"], "check");
    assert_eq!(last["failed"], 2, "{last}");

    // xcatd down: a clear line, at once.
    x.write("xcatd-down", "");
    let r = with_xcat(&s, &x)
        .args(&["check", "n1", "--image", "rocky9", "--online"])
        .run();
    r.code(1);
    assert!(
        has_line(&r, "failed", "xCAT node n1: `")
            && r.stdout
                .contains("Unable to open socket connection to xcatd"),
        "{}",
        r.stdout
    );
}

#[test]
fn online_asks_libvirt_for_the_domain_and_its_networks() {
    let s = Scratch::new("check-online-libvirt");
    // A template on the test driver's one network and on one it lacks.
    let xml = s.write(
        "domain.xml",
        "<domain type='test'><name>{name}</name><devices>\n\
         <interface type='network'><source network='default'/></interface>\n\
         <interface type='network'><source network='public'/></interface>\n\
         </devices></domain>\n",
    );
    s.config(
        &r#"
[provisioners.lv]
kind = "libvirt"
uri = "test:///default"

[os.none]
family = "generic"
channel = "none"
steps = []

[images.img]
os = "none"
provisioner = "lv"

[images.tmpl]
os = "none"
provisioner = "lv"
domain_xml = "{xml}"

[computers.vm]
address = "192.0.2.7"
node = "test"

[computers.ghost]
address = "192.0.2.8"
node = "no-such-domain"
"#
        .replace("{xml}", &xml.display().to_string()),
    );
    let r = Test::with(&s)
        .args(&["check", "vm", "--image", "img", "--online"])
        .run();
    r.code(0);
    assert!(
        has_line(
            &r,
            "ok ",
            "libvirt domain test at test:///default: defined (running)"
        ),
        "{}",
        r.stdout
    );
    let r = Test::with(&s)
        .args(&["check", "ghost", "--image", "img", "--online"])
        .run();
    r.code(1);
    assert!(
        has_line(
            &r,
            "failed",
            "libvirt domain no-such-domain at test:///default: not defined"
        ),
        "{}",
        r.stdout
    );
    // The template's networks: one there and active, one missing.
    let r = Test::with(&s)
        .args(&["check", "vm", "--image", "tmpl", "--online"])
        .run();
    r.code(1);
    assert!(
        has_line(
            &r,
            "ok ",
            "libvirt network default at test:///default: active"
        ),
        "{}",
        r.stdout
    );
    assert!(
        has_line(
            &r,
            "failed",
            "libvirt network public at test:///default: not found"
        ),
        "{}",
        r.stdout
    );
}

#[test]
fn online_asks_the_ssh_key_the_port_and_a_store_that_is_down() {
    let s = Scratch::new("check-online-ssh");
    let key = keygen(&s, "id_ed25519", "");
    let locked = keygen(&s, "id_locked", "a passphrase");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let open = listener.local_addr().expect("addr").port();
    let down = Port::new();
    let store = format!(
        "[coordination]\nurl = \"postgresql://reimage@127.0.0.1:{}/reimage\"\nlease = \"8s\"\n",
        down.num()
    );

    ssh_config(&s, &key, open, "");
    let r = Test::with(&s)
        .args(&["check", "pc7", "--image", "img", "--online"])
        .run();
    r.code(0);
    assert!(
        has_line(&r, "ok ", "loads without a passphrase"),
        "{}",
        r.stdout
    );
    assert!(
        has_line(
            &r,
            "ok ",
            &format!("ssh port 127.0.0.1:{open} of computer pc7: answers")
        ),
        "{}",
        r.stdout
    );

    // A port that does not answer is a note (the computer may be off); a
    // key that needs a passphrase and a store that is down are failures,
    // said within the store's bound (a quarter lease, at least 2 s).
    drop(listener);
    let closed = Port::new();
    ssh_config(&s, &locked, closed.num(), &store);
    let started = Instant::now();
    let r = Test::with(&s)
        .args(&["check", "pc7", "--image", "img", "--online"])
        .run();
    let took = started.elapsed();
    r.code(1);
    assert!(
        has_line(&r, "failed", "coordination store: "),
        "{}",
        r.stdout
    );
    assert!(
        has_line(&r, "failed", "does not load without a passphrase"),
        "{}",
        r.stdout
    );
    assert!(has_line(&r, "note", "does not answer"), "{}", r.stdout);
    r.stdout_has("2 of 3 checks failed");
    assert!(took < Duration::from_secs(60), "bounded: {took:?}");
}

#[test]
fn online_asks_a_running_store_for_its_schema() {
    let s = Scratch::new("check-online-pg");
    let pg = Pg::start("check-online");
    let key = keygen(&s, "id_ed25519", "");
    let store = format!("[coordination]\nurl = \"{}\"\n", pg.url());
    ssh_config(&s, &key, Port::new().num(), &store);
    let r = Test::with(&s)
        .args(&["check", "pc7", "--image", "img", "--online"])
        .run();
    r.code(0);
    assert!(
        has_line(&r, "note", "answers, no schema yet"),
        "{}",
        r.stdout
    );
    Test::with(&s).args(&["setup-db"]).run().code(0);
    let r = Test::with(&s)
        .args(&["check", "pc7", "--image", "img", "--online"])
        .run();
    r.code(0);
    assert!(
        has_line(&r, "ok ", "answers, schema version"),
        "{}",
        r.stdout
    );
}

#[test]
fn online_needs_a_computer_and_image_or_all() {
    let s = Scratch::new("check-online-usage");
    s.config("");
    Test::with(&s)
        .args(&["check", "--online"])
        .run()
        .code(64)
        .stderr_has("--all");
}
