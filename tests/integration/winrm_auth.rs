//! WinRM authentication and transport security end to end (issue 23):
//! the built binary against the WinRM STAND-IN (tests/standins/
//! winrm_standin.py with winrm_auth.py: NTLM and SPNEGO through pyspnego's
//! acceptor, MS-WSMV message encryption; no Windows runs here), set up with
//! `--stock` as Windows ships its WinRM service: Basic off, AllowUnencrypted
//! false. The computer is a standing (`lab`) machine unless a test reloads
//! it through a command provisioner.

use crate::common::Scratch;
use crate::test::{Output, Test};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use testbed::port::Port;
use testbed::winrm::Standin;

const PW: &str = "Stock-Pw-2319";

/// The stand-in on `port` as Windows ships it (`--stock`),
/// Administrator's password `PW`, with `extra` arguments; once it listens.
fn stock(port: &Port, extra: &[&str]) -> Standin {
    let mut args = vec!["--stock"];
    args.extend(extra);
    Standin::start(port, PW, &args)
}

/// [`stock`] over HTTPS with certificate `cert` and its key `key`.
fn tls(port: &Port, cert: &Path, key: &Path) -> Standin {
    let (c, k) = (cert.display().to_string(), key.display().to_string());
    stock(port, &["--tls-cert", &c, "--tls-key", &k])
}

/// Computer `pcw` at 127.0.0.1:`port` with image `w7` of profile `win`
/// (windows-6, no first boot): only `user` and `password_file` for the
/// login, plus `extra` keys. Loads go through the command provisioner
/// `reload`, whose load runs `load.sh` (absent unless a test writes it).
fn config(s: &Scratch, port: u16, password: &str, login: &str, extra: &str) {
    let pw = crate::common::secret(s, "secrets/winrm-pw", &format!("{password}\n"));
    s.config(&format!(
        "[provisioners.reload]\nkind = \"command\"\nload = [\"{}\"]\ntimeout = \"30s\"\n\n\
         [os.win]\nfamily = \"windows-6\"\nport = {port}\nuser = \"Administrator\"\n\
         password_file = \"{}\"\nfirst_boot = false\nstable_for = \"1s\"\n{extra}\n\
         timeouts = {{ initial-wait = \"0s\", response = \"30s\", login = \"{login}\" }}\n\n\
         [images.w7]\nos = \"win\"\nvirtual = true\nsysprep = false\n\n\
         [computers.pcw]\naddress = \"127.0.0.1\"\nprovisioner = \"reload\"\n",
        s.path("load.sh").display(),
        pw.display(),
    ));
}

fn post_load(s: &Scratch) -> Output {
    Test::with(s).post_load("pcw", "w7").run()
}

/// Everything the run printed.
fn said(r: &Output) -> String {
    format!("{}\n{}", r.stdout, r.stderr)
}

/// A self-signed certificate for 127.0.0.1 (openssl), as a Windows
/// listener's own: (certificate, key, its SHA-256 as govc prints it).
fn certificate(s: &Scratch, tag: &str) -> (PathBuf, PathBuf, String) {
    let (cert, key) = (s.path(&format!("{tag}.crt")), s.path(&format!("{tag}.key")));
    let ok = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=WIN-STANDIN"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl req");
    assert!(ok.success());
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&cert)
        .output()
        .expect("openssl x509");
    let text = String::from_utf8_lossy(&out.stdout);
    let fp = text
        .trim()
        .rsplit('=')
        .next()
        .expect("a fingerprint")
        .to_ascii_uppercase();
    assert_eq!(fp.len(), 95, "{text}");
    (cert, key, fp)
}

#[test]
fn stock_windows_with_only_user_and_password_file() {
    // The default auth (negotiate): NTLM in SPNEGO with every message
    // sealed; the stand-in refuses anything in clear, so "ready" means
    // every request went sealed.
    let s = Scratch::new("winrm-stock");
    let held = Port::new();
    let port = held.num();
    let _w = stock(&held, &[]);
    config(&s, port, PW, "20s", "");
    let r = post_load(&s);
    assert_eq!(r.code, 0, "{}", said(&r));
    assert!(!said(&r).contains(PW));
    assert!(!r.event_log().contains(PW));
    assert!(!said(&r).contains("warning"), "{}", said(&r));
    // check wants the load command there, as a load does.
    s.script("load.sh", "#!/bin/sh\nexit 0\n");
    Test::with(&s)
        .check("pcw", "w7")
        .run()
        .code(0)
        .stdout_has("winrm: auth negotiate, HTTP, every message encrypted");
}

#[test]
fn basic_refused_by_the_listener_is_fatal_at_once() {
    // Basic over HTTP, allowed in the config (and warned), against a
    // listener with Basic off: the 401 offers Negotiate only, a settings
    // error at once instead of a wait through the login timeout.
    let s = Scratch::new("winrm-basic");
    let held = Port::new();
    let port = held.num();
    let _w = stock(&held, &[]);
    config(
        &s,
        port,
        PW,
        "10m",
        "auth = \"basic\"\nallow_unencrypted = true",
    );
    let r = post_load(&s);
    assert_eq!(r.code, 1, "{}", said(&r));
    let all = said(&r);
    assert!(
        all.contains("allow_unencrypted = true"),
        "no warning: {all}"
    );
    assert!(
        all.contains("does not accept Basic authentication (HTTP 401 offering Negotiate)"),
        "{all}"
    );
    assert!(all.contains("leave `auth` out"), "{all}");
    assert!(!all.contains("authentication kept failing"), "{all}");
    // Far below the 10 min login timeout, with room for a loaded machine.
    assert!(r.took < Duration::from_secs(120), "took {:?}", r.took);
    assert!(!all.contains(PW));
}

#[test]
fn a_wrong_password_fails_until_the_login_timeout() {
    // Over Negotiate a wrong password is a 401 for the right scheme: "not
    // yet" (Sysprep keeps Administrator disabled for a while) until the
    // login step times out, then fatal.
    let s = Scratch::new("winrm-wrongpw");
    let held = Port::new();
    let port = held.num();
    let _w = stock(&held, &[]);
    config(&s, port, "Not-The-Pw-1", "3s", "");
    let r = post_load(&s);
    assert_eq!(r.code, 1, "{}", said(&r));
    assert!(r.took >= Duration::from_secs(3), "took {:?}", r.took);
    let all = said(&r);
    assert!(all.contains("authentication kept failing for 3s"), "{all}");
    assert!(all.contains("HTTP 401"), "{all}");
    assert!(!all.contains("Not-The-Pw-1") && !r.event_log().contains("Not-The-Pw-1"));
}

#[test]
fn https_with_a_pinned_thumbprint_and_a_wrong_one() {
    let s = Scratch::new("winrm-pin");
    let held = Port::new();
    let port = held.num();
    let (cert, key, fp) = certificate(&s, "a");
    let (_, _, other) = certificate(&s, "b");
    let _w = tls(&held, &cert, &key);
    // The certificate names WIN-STANDIN, not 127.0.0.1, and no CA signed
    // it: only the pin makes it trusted.
    config(
        &s,
        port,
        PW,
        "20s",
        &format!("https = true\nthumbprint = \"{fp}\""),
    );
    let r = post_load(&s);
    assert_eq!(r.code, 0, "{}", said(&r));
    // check wants the load command there, as a load does.
    s.script("load.sh", "#!/bin/sh\nexit 0\n");
    Test::with(&s)
        .check("pcw", "w7")
        .run()
        .code(0)
        .stdout_has(&format!("certificate pinned to SHA-256 {fp}"));

    config(
        &s,
        port,
        PW,
        "10m",
        &format!("https = true\nthumbprint = \"{other}\""),
    );
    let r = post_load(&s);
    assert_eq!(r.code, 1, "{}", said(&r));
    let all = said(&r);
    assert!(
        all.contains(&format!("the server's SHA-256 is {fp}")),
        "the message shows the server's thumbprint: {all}"
    );
    assert!(all.contains("not the one `thumbprint` pins"), "{all}");
    assert!(r.took < Duration::from_secs(120), "took {:?}", r.took);
}

#[test]
fn accept_new_learns_and_takes_a_new_certificate_only_after_a_load() {
    let s = Scratch::new("winrm-accept-new");
    let held = Port::new();
    let port = held.num();
    let (cert_a, key_a, fp_a) = certificate(&s, "a");
    let (cert_b, key_b, fp_b) = certificate(&s, "b");
    let (cert_c, key_c, fp_c) = certificate(&s, "c");
    let record = s.path("state/computers/pcw/winrm-thumbprint");
    let recorded = || std::fs::read_to_string(&record).expect("the learned thumbprint");
    config(
        &s,
        port,
        PW,
        "20s",
        "https = true\nthumbprint = \"accept-new\"",
    );

    // First use: learned and recorded.
    let w = tls(&held, &cert_a, &key_a);
    let r = post_load(&s);
    assert_eq!(r.code, 0, "{}", said(&r));
    assert!(
        said(&r).contains(&format!("{fp_a} learned (accept-new)")),
        "{}",
        said(&r)
    );
    assert_eq!(recorded(), format!("{fp_a}\n"));
    drop(w);

    // The computer shows another certificate though nothing loaded it:
    // fatal, naming the server's thumbprint and the record.
    let (live_cert, live_key) = (s.path("live.crt"), s.path("live.key"));
    std::fs::copy(&cert_b, &live_cert).expect("copy");
    std::fs::copy(&key_b, &live_key).expect("copy");
    let w = tls(&held, &live_cert, &live_key);
    let r = post_load(&s);
    assert_eq!(r.code, 1, "{}", said(&r));
    let all = said(&r);
    assert!(
        all.contains(&format!("the server's SHA-256 is {fp_b}")),
        "{all}"
    );
    assert!(all.contains("no load ran since"), "{all}");
    assert!(all.contains(&record.display().to_string()), "{all}");
    assert_eq!(recorded(), format!("{fp_a}\n"));

    // A load: it gives the computer certificate c and reboots it (the
    // stand-in reads its certificate again as it comes up). The first
    // connection after it takes c and records it.
    s.script(
        "load.sh",
        &format!(
            "#!/bin/bash\ncp '{}' '{}' && cp '{}' '{}' && kill -USR1 {}\n\
             # back only once the old OS is gone, as a power cycle would\n\
             until grep -q '\"up\": false' '{}'; do sleep 0.05; done\n",
            cert_c.display(),
            live_cert.display(),
            key_c.display(),
            live_key.display(),
            w.pid(),
            w.state_file().display()
        ),
    );
    let r = Test::with(&s).provision("pcw", "w7").run();
    assert_eq!(r.code, 0, "{}", said(&r));
    assert!(
        said(&r).contains(&format!("{fp_c} after the load, replacing {fp_a}")),
        "{}",
        said(&r)
    );
    assert_eq!(recorded(), format!("{fp_c}\n"));

    // And it holds without a load.
    let r = post_load(&s);
    assert_eq!(r.code, 0, "{}", said(&r));
    assert!(
        said(&r).contains(&format!("{fp_c} as recorded")),
        "{}",
        said(&r)
    );
}
