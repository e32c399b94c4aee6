//! Windows first-boot configuration over WinRM (or SSH where the image runs
//! an SSH server): computer name, Remote Desktop and ping firewall rules,
//! no sleep, Sysprep answer files removed (they hold passwords), the
//! image's scripts, then the Administrator password from a secret file.
//! Windows 5.x (XP/2003) has the older `netsh firewall` context.

use super::actions::Actions;
use crate::attempt::Attempt;
use crate::config::{Family, Plan};
use crate::control::Channel;
use crate::outcome::Outcome;
use crate::report::Reporter;

/// Where reimage keeps its files on a Windows computer.
pub const DIR: &str = r"C:\Windows\Temp\reimage";

/// Sysprep answer files that may hold clear-text passwords.
pub const ANSWER_FILES: [&str; 5] = [
    r"C:\Windows\Panther\unattend.xml",
    r"C:\Windows\Panther\Unattend\unattend.xml",
    r"C:\Windows\System32\sysprep\unattend.xml",
    r"C:\Windows\System32\sysprep\Panther\unattend.xml",
    r"C:\sysprep\sysprep.inf",
];

fn argv(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A PowerShell command line. The script reaches powershell.exe through
/// cmd.exe (WinRM's shell) and the C runtime's argument splitting: it must
/// hold no `"` (stripped), no `|`, `&`, `<`, `>` or `%` (cmd.exe's), and no
/// runs of spaces inside quotes (joined back with single spaces).
fn ps(script: &str) -> Vec<String> {
    argv(&[
        "powershell",
        "-NoProfile",
        "-NonInteractive",
        "-ExecutionPolicy",
        "Bypass",
        "-Command",
        script,
    ])
}

/// The actions for one family, as (name, argv, fatal-on-failure).
pub fn commands(f: Family, computer: &str) -> Vec<(&'static str, Vec<String>, bool)> {
    let mut v = Vec::new();
    // Renaming is idempotent: only when the name differs (the rename takes
    // effect at the next boot, which the user's first logon may bring).
    v.push((
        "set-computer-name",
        ps(&format!(
            "if ($env:COMPUTERNAME -ne '{n}') {{ Rename-Computer -NewName '{n}' -Force -ErrorAction Stop }}; 'computer name {n}'",
            n = computer.replace('\'', "''")
        )),
        true,
    ));
    v.push((
        "enable-rdp",
        argv(&[
            "reg",
            "add",
            // Windows joins argv with spaces into one command line: an
            // element holding a space needs its own quotes.
            r#""HKLM\SYSTEM\CurrentControlSet\Control\Terminal Server""#,
            "/v",
            "fDenyTSConnections",
            "/t",
            "REG_DWORD",
            "/d",
            "0",
            "/f",
        ]),
        true,
    ));
    if f == Family::Windows5 {
        v.push((
            "firewall-rdp",
            argv(&[
                "netsh",
                "firewall",
                "set",
                "service",
                "type=remotedesktop",
                "mode=enable",
            ]),
            true,
        ));
        v.push((
            "firewall-ping",
            argv(&[
                "netsh",
                "firewall",
                "set",
                "icmpsetting",
                "type=8",
                "mode=enable",
            ]),
            true,
        ));
    } else {
        v.push((
            "firewall-rdp",
            argv(&[
                "netsh",
                "advfirewall",
                "firewall",
                "set",
                "rule",
                r#"group="remote desktop""#,
                "new",
                "enable=yes",
            ]),
            true,
        ));
        // Delete, then add: running twice leaves one rule. Through cmd.exe,
        // not PowerShell: cmd.exe (WinRM's shell) would take a `|` in a
        // PowerShell line as its own pipe, and PowerShell would split the
        // `icmpv4:8,any` argument at the comma. The delete fails when there
        // is no rule yet; `&` goes on regardless.
        v.push((
            "firewall-ping",
            argv(&[
                "cmd",
                "/c",
                "netsh",
                "advfirewall",
                "firewall",
                "delete",
                "rule",
                r#"name="reimage ICMPv4 echo""#,
                ">nul",
                "&",
                "netsh",
                "advfirewall",
                "firewall",
                "add",
                "rule",
                r#"name="reimage ICMPv4 echo""#,
                "protocol=icmpv4:8,any",
                "dir=in",
                "action=allow",
            ]),
            true,
        ));
    }
    v.push((
        "disable-sleep",
        argv(&["powercfg", "/change", "standby-timeout-ac", "0"]),
        false,
    ));
    v.push((
        "disable-hibernate",
        argv(&["powercfg", "/hibernate", "off"]),
        false,
    ));
    let files: Vec<String> = ANSWER_FILES.iter().map(|f| format!("'{f}'")).collect();
    v.push((
        "remove-answer-files",
        ps(&format!(
            "foreach ($f in @({})) {{ if (Test-Path $f) {{ Remove-Item -Force $f; 'removed ' + $f }} }}; 'answer files gone'",
            files.join(",")
        )),
        true,
    ));
    v
}

/// The command that sets the Administrator password from an uploaded file
/// and deletes the file; the password itself never appears in a command.
pub fn password_command(user: &str, file: &str) -> Vec<String> {
    ps(&format!(
        "$p = (Get-Content -Raw '{file}').Trim(); Remove-Item -Force '{file}'; ([adsi]'WinNT://./{u},user').SetPassword($p); 'password of {u} set'",
        u = user.replace('\'', "''")
    ))
}

/// Runs the Windows first-boot configuration.
pub fn first_boot(
    plan: &Plan,
    attempt: Attempt,
    ch: &mut dyn Channel,
    report: &Reporter,
) -> Result<(), Outcome> {
    let mut a = Actions::new(plan, attempt, ch, report);
    a.run(
        "mkdir-state",
        &argv(&["cmd", "/c", &format!("if not exist {DIR} mkdir {DIR}")]),
        Outcome::Retry,
    )?;
    for (name, cmd, fatal) in commands(plan.profile.family, &plan.computer.name) {
        let r = a.run(
            name,
            &cmd,
            if fatal {
                Outcome::Fatal
            } else {
                Outcome::Retry
            },
        );
        match r {
            Ok(_) => {}
            Err(Outcome::Retry(e)) if !fatal => {
                report.warn(&format!("{e:#} (not needed for use: going on)"))
            }
            Err(o) => return Err(o),
        }
    }
    // The image's scripts run before the Administrator password changes:
    // when the channel logs in as Administrator, the new password ends it.
    a.scripts(DIR, '\\', |p| {
        if p.to_ascii_lowercase().ends_with(".ps1") {
            argv(&[
                "powershell",
                "-NoProfile",
                "-NonInteractive",
                "-ExecutionPolicy",
                "Bypass",
                "-File",
                p,
            ])
        } else {
            argv(&["cmd", "/c", p])
        }
    })?;
    if let Some(pf) = &plan.profile.admin_password_file {
        let secret = std::fs::read_to_string(pf).map_err(|e| {
            Outcome::Fatal(anyhow::anyhow!(
                "{}: cannot read admin_password_file {}: {e}",
                plan.computer.name,
                pf.display()
            ))
        })?;
        let pw = secret.lines().next().unwrap_or("").trim_end_matches('\r');
        if pw.is_empty() {
            return Err(Outcome::Fatal(anyhow::anyhow!(
                "admin_password_file {} is empty",
                pf.display()
            )));
        }
        let remote = format!(r"{DIR}\admin-password.txt");
        a.upload("upload-admin-password", pw.as_bytes(), &remote, 0o600)?;
        a.run(
            "set-admin-password",
            &password_command("Administrator", &remote),
            Outcome::Fatal,
        )?;
    }
    Ok(())
}
