//! Windows activation at first boot, after Apache VCL's Version_6.pm
//! `activate` (KMS first, then a MAK): the image's license read with
//! `slmgr /dli`; when it holds no volume key and KMS hosts are configured,
//! the edition's KMS client setup key (GVLK) installed; each KMS host
//! tried in order (`/skms`, `/ato`); then the MAK. What slmgr prints is
//! the result, not its exit code ("Error: product not found." exits 0).
//! Every outcome is an event; a failure warns and the load goes on, unless
//! the profile says `activation = "required"` (VCL ignores the result
//! altogether).

use super::commands::{self, DIR, argv, reg_value};
use crate::config::Activation;
use crate::os::actions::Actions;
use crate::outcome::Outcome;

/// Microsoft's published KMS client setup keys ("Key Management Services
/// (KMS) client activation and product keys", learn.microsoft.com): the
/// registry's `EditionID`, the first and last `CurrentBuildNumber` of the
/// release, and the key. Windows 10 and 11 share their keys.
const GVLKS: &[(&str, u32, u32, &str)] = &[
    // Windows 10 / 11 (every release).
    (
        "Professional",
        10240,
        u32::MAX,
        "W269N-WFGWX-YVC9B-4J6C9-T83GX",
    ),
    (
        "ProfessionalN",
        10240,
        u32::MAX,
        "MH37W-N47XK-V7XM9-C7227-GCQG9",
    ),
    (
        "ProfessionalWorkstation",
        10240,
        u32::MAX,
        "NRG8B-VKK3Q-CXVCJ-9G2XF-6Q84J",
    ),
    (
        "ProfessionalWorkstationN",
        10240,
        u32::MAX,
        "9FNHH-K3HBT-3W4TD-6383H-6XYWF",
    ),
    (
        "ProfessionalEducation",
        10240,
        u32::MAX,
        "6TP4R-GNPTD-KYYHQ-7B7DP-J447Y",
    ),
    (
        "ProfessionalEducationN",
        10240,
        u32::MAX,
        "YVWGF-BXNMC-HTQYQ-CPQ99-66QFC",
    ),
    (
        "Education",
        10240,
        u32::MAX,
        "NW6C2-QMPVW-D7KKK-3GKT6-VCFB2",
    ),
    (
        "EducationN",
        10240,
        u32::MAX,
        "2WH4N-8QGBV-H22JP-CT43Q-MDWWJ",
    ),
    (
        "Enterprise",
        10240,
        u32::MAX,
        "NPPR9-FWDCX-D2C8J-H872K-2YT43",
    ),
    (
        "EnterpriseN",
        10240,
        u32::MAX,
        "DPH2V-TTNVB-4X9Q3-TJR4H-KHJW4",
    ),
    (
        "EnterpriseG",
        10240,
        u32::MAX,
        "YYVX9-NTFWV-6MDM3-9PT4T-4M68B",
    ),
    (
        "EnterpriseGN",
        10240,
        u32::MAX,
        "44RPN-FTY23-9VTTB-MP9BX-T84FV",
    ),
    // Windows Server 2016 (build 14393).
    (
        "ServerStandard",
        14393,
        14393,
        "WC2BQ-8NRM3-FDDYY-2BFGV-KHKQY",
    ),
    (
        "ServerDatacenter",
        14393,
        14393,
        "CB7KF-BWN84-R7R2Y-793K2-8XDDG",
    ),
    (
        "ServerSolution",
        14393,
        14393,
        "JCKRF-N37P4-C2D82-9YXRT-4M63B",
    ),
    // Windows Server 2019 (build 17763).
    (
        "ServerStandard",
        17763,
        17763,
        "N69G4-B89J2-4G8F4-WWYCC-J464C",
    ),
    (
        "ServerDatacenter",
        17763,
        17763,
        "WMDGN-G9PQG-XVVXX-R3X43-63DFG",
    ),
    (
        "ServerSolution",
        17763,
        17763,
        "WVDHN-86M7X-466P6-VHXV7-YY726",
    ),
    // Windows Server 2022 (build 20348).
    (
        "ServerStandard",
        20348,
        20348,
        "VDYBN-27WPP-V4HQT-9VMD4-VMK7H",
    ),
    (
        "ServerDatacenter",
        20348,
        20348,
        "WX4NM-KYWYW-QJJR4-XV3QB-6VM33",
    ),
    // Windows Server 2025 (build 26100).
    (
        "ServerStandard",
        26100,
        26100,
        "TVRH6-WHNXV-R9WG3-9XRFY-MY832",
    ),
    (
        "ServerDatacenter",
        26100,
        26100,
        "D764K-2NDRG-47T6Q-P8T8W-YP6DF",
    ),
    // Windows 8.1 / Server 2012 R2 (build 9600).
    ("Professional", 9600, 9600, "GCRJD-8NW9H-F2CDX-CCM8D-9D6T9"),
    ("Enterprise", 9600, 9600, "MHF9N-XY6XB-WVXMC-BTDCT-MKKG7"),
    (
        "ServerStandard",
        9600,
        9600,
        "D2N9P-3P6X9-2R39C-7RTCD-MDVJX",
    ),
    (
        "ServerDatacenter",
        9600,
        9600,
        "W3GGN-FT8W3-Y4M27-J84CP-Q3VJ9",
    ),
    // Windows 7 / Server 2008 R2 (build 7600, SP1 7601).
    ("Professional", 7600, 7601, "FJ82H-XT6CR-J8D7P-XQJJ2-GPDD4"),
    ("Enterprise", 7600, 7601, "33PXH-7Y6KF-2VJC9-XBBR8-HVTHH"),
    (
        "ServerStandard",
        7600,
        7601,
        "YC6KT-GKW9T-YTKYR-T4X34-R7VHC",
    ),
    (
        "ServerEnterprise",
        7600,
        7601,
        "489J6-VHDMP-X63PK-3K798-CPX3Y",
    ),
    (
        "ServerDatacenter",
        7600,
        7601,
        "74YFP-3QFB3-KQT8W-PMXWJ-7M648",
    ),
];

/// The KMS client setup key of edition `edition` at build `build`.
pub fn gvlk(edition: &str, build: u32) -> Option<&'static str> {
    GVLKS
        .iter()
        .find(|(e, lo, hi, _)| e.eq_ignore_ascii_case(edition) && (*lo..=*hi).contains(&build))
        .map(|(.., k)| *k)
}

/// Where Windows keeps its edition and build.
const VERSION_KEY: &str = r#""HKLM\SOFTWARE\Microsoft\Windows NT\CurrentVersion""#;

/// `reg query` of the version key: every family ships reg.exe.
pub fn edition_command() -> Vec<String> {
    argv(&["reg", "query", VERSION_KEY])
}

/// (EditionID, CurrentBuildNumber) from [`edition_command`]'s output.
pub fn edition_from(stdout: &str) -> Option<(String, u32)> {
    let e = reg_value(stdout, "EditionID")?;
    let b = reg_value(stdout, "CurrentBuildNumber")?.parse().ok()?;
    Some((e.to_string(), b))
}

/// The image's license, from `slmgr /dli`.
#[derive(Debug, PartialEq, Eq)]
pub enum License {
    /// No product key installed: "Error: product not found." (exit 0).
    NoKey,
    /// A volume key (`VOLUME_KMSCLIENT` or `VOLUME_MAK`) is installed.
    Volume { licensed: bool },
    /// Another channel (retail, OEM): its description.
    Other(String),
}

/// What `slmgr /dli` printed, read.
pub fn license(stdout: &str) -> License {
    let low = stdout.to_ascii_lowercase();
    if low.contains("product not found") {
        return License::NoKey;
    }
    let line = |k: &str| {
        stdout.lines().find_map(|l| {
            let (a, b) = l.split_once(':')?;
            a.trim()
                .eq_ignore_ascii_case(k)
                .then(|| b.trim().to_string())
        })
    };
    let desc = line("Description").unwrap_or_default();
    let licensed = line("License Status").is_some_and(|s| s.eq_ignore_ascii_case("Licensed"));
    if desc.contains("VOLUME_KMSCLIENT") || desc.contains("VOLUME_MAK") {
        License::Volume { licensed }
    } else {
        License::Other(if desc.is_empty() {
            crate::exec::excerpt(stdout, 2)
        } else {
            desc
        })
    }
}

/// Whether what `slmgr /ato` printed says Windows is activated: the
/// success line, and no `Error:` line (slmgr's exit code says neither).
pub fn ato_result(text: &str) -> Result<(), String> {
    let err = text.lines().find(|l| l.trim_start().starts_with("Error"));
    match err {
        Some(e) => Err(e.trim().to_string()),
        None if text.to_ascii_lowercase().contains("activated successfully") => Ok(()),
        None => Err(format!(
            "no success line: {}",
            crate::exec::excerpt(text.trim(), 3)
        )),
    }
}

/// `check`'s line for activation `a`.
pub fn describe(a: &Activation) -> String {
    let mut with = Vec::new();
    if !a.kms_hosts.is_empty() {
        with.push(format!(
            "KMS host(s) {} in order (the edition's KMS client key installed when the image has no volume key)",
            a.kms_hosts.join(", ")
        ));
    }
    if let Some(f) = &a.mak_file {
        with.push(format!("then the MAK from {}", f.display()));
    }
    let mode = if a.required {
        "required: a failure fails the load"
    } else {
        "best effort: a failure warns"
    };
    format!("activation: {} ({mode})", with.join(", "))
}

/// Runs activation `act`: Ok once it is done or has failed in best effort
/// (warned); a failure when it is required is fatal, as is a channel that
/// went away (the outcome it makes).
pub fn run(a: &mut Actions, act: &Activation) -> Result<(), Outcome> {
    let mut why = Vec::new();
    if !act.kms_hosts.is_empty() {
        match kms(a, act, &mut why)? {
            Some(host) => {
                a.report
                    .info(&format!("activation: activated against KMS host {host}"));
                return Ok(());
            }
            None => a.report.warn(&format!(
                "activation: no KMS host activated Windows ({})",
                why.join("; ")
            )),
        }
    }
    if let Some(f) = &act.mak_file {
        match mak(a, f)? {
            Ok(()) => {
                a.report.info("activation: activated with the MAK");
                return Ok(());
            }
            Err(e) => {
                a.report.warn(&format!(
                    "activation: the MAK did not activate Windows: {e}"
                ));
                why.push(format!("MAK: {e}"));
            }
        }
    }
    let m = format!(
        "{}: Windows is not activated ({})",
        a.plan.computer.name,
        why.join("; ")
    );
    if act.required {
        return Err(Outcome::Fatal(anyhow::anyhow!(
            "{m}; activation = \"required\""
        )));
    }
    a.report
        .warn(&format!("{m}: going on (activation is best effort)"));
    Ok(())
}

/// A slmgr step: its output's text, the step ended by the caller.
fn slmgr(a: &mut Actions, name: &str, args: &[&str]) -> Result<String, Outcome> {
    let out = a.ask(name, &commands::slmgr(args))?;
    Ok(format!("{}\n{}", out.stdout, out.stderr))
}

/// The KMS hosts in order, after the GVLK where the image needs one: the
/// host that activated Windows, or None (each failure in `why`).
fn kms(
    a: &mut Actions,
    act: &Activation,
    why: &mut Vec<String>,
) -> Result<Option<String>, Outcome> {
    let dli = slmgr(a, "license-status", &["/dli"])?;
    let lic = license(&dli);
    a.report.step_done(&format!("{lic:?}"));
    if !matches!(lic, License::Volume { .. })
        && let Err(e) = install_gvlk(a, &lic)?
    {
        why.push(e);
        return Ok(None);
    }
    for host in &act.kms_hosts {
        let set = slmgr(a, &format!("kms-host {host}"), &["/skms", host])?;
        if let Some(e) = set.lines().find(|l| l.trim_start().starts_with("Error")) {
            a.report.step_failed(e.trim());
            a.report
                .warn(&format!("activation: KMS host {host}: {}", e.trim()));
            why.push(format!("{host}: {}", e.trim()));
            continue;
        }
        a.report.step_done(&format!("KMS host {host} set"));
        let ato = slmgr(a, &format!("activate {host}"), &["/ato"])?;
        match ato_result(&ato) {
            Ok(()) => {
                a.report.step_done("activated");
                return Ok(Some(host.clone()));
            }
            Err(e) => {
                a.report.step_failed(&e);
                a.report.warn(&format!("activation: KMS host {host}: {e}"));
                why.push(format!("{host}: {e}"));
            }
        }
    }
    Ok(None)
}

/// The edition's KMS client setup key, installed (`slmgr /ipk`: the key is
/// public); Err(why) when the edition has none or slmgr refused it.
fn install_gvlk(a: &mut Actions, lic: &License) -> Result<Result<(), String>, Outcome> {
    let out = a.ask("windows-edition", &edition_command())?;
    let Some((edition, build)) = edition_from(&out.stdout) else {
        let e = "cannot read EditionID and CurrentBuildNumber".to_string();
        a.report.step_failed(&e);
        return Ok(Err(e));
    };
    let Some(key) = gvlk(&edition, build) else {
        let e = format!(
            "no KMS client key known for edition {edition} build {build} (license: {lic:?})"
        );
        a.report.step_failed(&e);
        a.report.warn(&format!("activation: {e}"));
        return Ok(Err(e));
    };
    a.report
        .step_done(&format!("{edition} build {build}: KMS client key {key}"));
    let text = slmgr(a, "install-kms-client-key", &["/ipk", key])?;
    if let Some(e) = text.lines().find(|l| l.trim_start().starts_with("Error")) {
        let e = format!("installing the KMS client key {key}: {}", e.trim());
        a.report.step_failed(&e);
        a.report.warn(&format!("activation: {e}"));
        return Ok(Err(e));
    }
    a.report.step_done(&format!("installed {key}"));
    Ok(Ok(()))
}

/// The MAK in file `f` installed through the MAK VBScript (never on a
/// command line), then `/ato`: Err(why) when Windows is not activated.
fn mak(a: &mut Actions, f: &std::path::Path) -> Result<Result<(), String>, Outcome> {
    let key = crate::secret::Secret::from_file(f, "mak_file").map_err(Outcome::Fatal)?;
    let script = format!(r"{DIR}\mak.vbs");
    let file = format!(r"{DIR}\mak.txt");
    a.upload(
        "upload-mak-script",
        commands::mak_script().as_bytes(),
        &script,
        0o600,
    )?;
    a.upload("upload-mak", key.expose().as_bytes(), &file, 0o600)?;
    let cmd = argv(&["cscript", "//nologo", &script, &file]);
    let out = a.ask("install-mak", &cmd)?;
    if out.status != 0 {
        let _ = a.ch.run(&commands::del_command(&file), a.timeout);
        let e = crate::exec::excerpt(format!("{}{}", out.stdout, out.stderr).trim(), 3);
        a.report.step_failed(&e);
        return Ok(Err(e));
    }
    a.report.step_done("product key installed");
    let ato = slmgr(a, "activate-mak", &["/ato"])?;
    let r = ato_result(&ato);
    match &r {
        Ok(()) => a.report.step_done("activated"),
        Err(e) => a.report.step_failed(e),
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kms_client_keys_by_edition_and_build() {
        assert_eq!(
            gvlk("Professional", 22631),
            Some("W269N-WFGWX-YVC9B-4J6C9-T83GX")
        );
        assert_eq!(
            gvlk("professional", 7601),
            Some("FJ82H-XT6CR-J8D7P-XQJJ2-GPDD4")
        );
        assert_eq!(
            gvlk("ServerStandard", 20348),
            Some("VDYBN-27WPP-V4HQT-9VMD4-VMK7H")
        );
        assert_eq!(gvlk("ServerStandard", 22000), None);
        assert_eq!(gvlk("Core", 19045), None);
        let reg = "\r\nHKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\r\n    CurrentBuildNumber    REG_SZ    19045\r\n    EditionID    REG_SZ    Enterprise\r\n";
        assert_eq!(edition_from(reg), Some(("Enterprise".into(), 19045)));
        assert_eq!(edition_from("ERROR: nothing"), None);
    }

    #[test]
    fn slmgr_is_read_by_what_it_prints() {
        assert_eq!(license("Error: product not found.\r\n"), License::NoKey);
        let kms = "Name: Windows(R), Enterprise edition\r\nDescription: Windows(R) Operating System, VOLUME_KMSCLIENT channel\r\nPartial Product Key: 2YT43\r\nLicense Status: Licensed\r\n";
        assert_eq!(license(kms), License::Volume { licensed: true });
        let retail = kms.replace("VOLUME_KMSCLIENT", "RETAIL");
        assert!(matches!(license(&retail), License::Other(d) if d.contains("RETAIL")));
        assert!(
            ato_result("Activating Windows(R) ...\r\nProduct activated successfully.\r\n").is_ok()
        );
        assert_eq!(
            ato_result("Activating ...\r\nError: 0xC004F038 the count is insufficient\r\n")
                .unwrap_err(),
            "Error: 0xC004F038 the count is insufficient"
        );
        // Exit 0 and nothing but the error: not activated.
        assert!(ato_result("Error: product not found.\r\n").is_err());
        assert!(ato_result("").is_err());
    }
}
