//! `provision --reuse`: a preload (a provision for no reservation) stands in
//! for the load of the next reservation only while it still holds. Against
//! a real OpenSSH sshd on 127.0.0.1 with the `lab` provisioner, so a load is
//! visible as a `load` phase in the events and the boot id is this
//! machine's own.

use crate::common::Scratch;
use crate::test::{Output, Test};
use testbed::sshd::Fixture;

/// Computer `box` at the fixture's sshd, image `img` whose image check reads
/// `image-id` in the scratch directory.
fn setup(name: &str) -> (Fixture, testbed::sshd::Sshd, Scratch) {
    let fx = Fixture::new(name);
    let sshd = fx.start(&fx.host_key_a);
    let s = Scratch::new(name);
    s.write("image-id", "img-1\n");
    s.config(&format!(
        r#"
[os.lx]
family = "linux"
user = "{user}"
key_file = "{key}"
known_hosts = "{kh}"
first_boot = false
connect_timeout = "2s"
timeouts = {{ port = "20s", banner = "10s", login = "10s" }}

[images.img]
os = "lx"
provisioner = "lab"
image_check = {{ command = ["cat", "{id}"], expect = "^img-1$" }}

[computers.box]
address = "127.0.0.1"
port = {port}
"#,
        user = fx.user,
        key = fx.client_key.display(),
        kh = s.path("known_hosts").display(),
        id = s.path("image-id").display(),
        port = sshd.port,
    ));
    (fx, sshd, s)
}

/// A provision of `img` on `box` with `args`, events as JSON on stdout.
fn provision(s: &Scratch, args: &[&str]) -> Output {
    Test::with(s)
        .provision("box", "img")
        .args(&["--json"])
        .args(args)
        .run()
}

fn events(r: &Output) -> Vec<serde_json::Value> {
    r.stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// How many loads the run made.
fn loads(r: &Output) -> usize {
    events(r)
        .iter()
        .filter(|e| e["kind"] == "phase" && e["phase"] == "load")
        .count()
}

/// The run's `reuse: ...` message.
fn reuse_message(r: &Output) -> String {
    events(r)
        .iter()
        .filter_map(|e| e["message"].as_str())
        .find(|m| m.starts_with("reuse: "))
        .unwrap_or_default()
        .to_string()
}

fn preload(s: &Scratch) {
    let r = provision(s, &[]);
    r.code(0);
    assert_eq!(loads(&r), 1, "{r:?}");
    assert!(s.path("state/computers/box/preload.json").exists(), "{r:?}");
}

#[test]
fn a_preload_is_reused_once_and_then_never_again() {
    let (_fx, _sshd, s) = setup("reuse-ok");
    preload(&s);
    Test::with(&s)
        .check("box", "img")
        .run()
        .code(0)
        .stdout_has("reuse (provision --reservation ID --reuse)")
        .stdout_has("preload now: image `img`");
    let r = provision(&s, &["--reservation", "r1", "--reuse"]);
    r.code(0);
    assert_eq!(loads(&r), 0, "{r:?}");
    let m = reuse_message(&r);
    assert!(
        m.contains("skipping the load") && m.contains("image check passed"),
        "{m}"
    );
    r.stdout_has("preload reused, no load");
    // Handed to reservation r1: the next reservation gets a load.
    let r = provision(&s, &["--reservation", "r2", "--reuse"]);
    r.code(0);
    assert_eq!(loads(&r), 1, "{r:?}");
    assert!(
        reuse_message(&r).contains("refused") && reuse_message(&r).contains("no preload record"),
        "{r:?}"
    );
}

#[test]
fn a_reservation_in_between_ends_the_preload() {
    let (_fx, _sshd, s) = setup("reuse-reserved");
    preload(&s);
    // A reservation without --reuse has the computer.
    let r = provision(&s, &["--reservation", "r1"]);
    r.code(0);
    assert_eq!(loads(&r), 1, "{r:?}");
    let r = provision(&s, &["--reservation", "r2", "--reuse"]);
    r.code(0);
    assert_eq!(loads(&r), 1, "{r:?}");
    assert!(reuse_message(&r).contains("no preload record"), "{r:?}");
    Test::with(&s)
        .check("box", "img")
        .run()
        .code(0)
        .stdout_has("preload now: none");
}

#[test]
fn a_changed_boot_id_refuses_the_reuse() {
    let (_fx, _sshd, s) = setup("reuse-boot");
    preload(&s);
    // This machine cannot reboot under a test: the record is made to hold
    // the boot id of an earlier boot instead, which is what a reboot of
    // the computer after the preload looks like to the next run.
    let path = s.path("state/computers/box/preload.json");
    let mut rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("record")).expect("JSON");
    let now = rec["boot_id"].as_str().expect("boot id").to_string();
    assert!(!now.is_empty());
    rec["boot_id"] = "00000000-0000-0000-0000-000000000000".into();
    std::fs::write(&path, rec.to_string()).expect("write record");
    let r = provision(&s, &["--reservation", "r1", "--reuse"]);
    r.code(0);
    assert_eq!(loads(&r), 1, "{r:?}");
    let m = reuse_message(&r);
    assert!(m.contains("boot id changed") && m.contains(&now), "{m}");
}

#[test]
fn a_failing_image_check_refuses_the_reuse() {
    let (_fx, _sshd, s) = setup("reuse-image");
    preload(&s);
    s.write("image-id", "something-else\n");
    let r = provision(&s, &["--reservation", "r1", "--reuse", "--attempts", "1"]);
    let m = reuse_message(&r);
    assert!(
        m.contains("refused") && m.contains("image check failed") && m.contains("something-else"),
        "{m}\n{r:?}"
    );
    // It loaded as usual; the lab load changes nothing, so the image check
    // after that load fails too: the run is not ready.
    assert_eq!(loads(&r), 1, "{r:?}");
    r.code(1);
}

#[test]
fn reuse_needs_a_reservation() {
    let (_fx, _sshd, s) = setup("reuse-usage");
    provision(&s, &["--reuse"]).code(64);
}
