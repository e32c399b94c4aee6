//! Windows first-boot configuration over WinRM (or SSH where the image runs
//! an SSH server): computer name, Remote Desktop and ping firewall rules,
//! no sleep, Sysprep answer files removed (they hold passwords), the
//! image's scripts, then the Administrator password from a secret file.
//!
//! Each family gets only commands its stock install ships; [`toolset`] is
//! the one place that decides. Windows 5.x (XP/2003) has no PowerShell and
//! the older `netsh firewall` context; Windows 6.x has PowerShell 2 at most
//! (none on Vista/2008 by default: no Get-CimInstance, Rename-Computer or
//! `Get-Content -Raw`), so both use wmic, cmd.exe and a VBScript run by
//! cscript; Windows 10 and later use PowerShell.

use std::time::Duration;

use super::actions::Actions;
use crate::attempt::Attempt;
use crate::config::{Family, Plan};
use crate::control::{Channel, CommandOutput};
use crate::outcome::Outcome;
use crate::report::Reporter;

/// Where reimage keeps its files on a Windows computer.
pub const DIR: &str = r"C:\Windows\Temp\reimage";

/// Sysprep answer files of Windows 6.x and later that may hold clear-text
/// passwords (and an XP-era `sysprep.inf` an old image may still carry).
pub const ANSWER_FILES: [&str; 5] = [
    r"C:\Windows\Panther\unattend.xml",
    r"C:\Windows\Panther\Unattend\unattend.xml",
    r"C:\Windows\System32\sysprep\unattend.xml",
    r"C:\Windows\System32\sysprep\Panther\unattend.xml",
    r"C:\sysprep\sysprep.inf",
];

/// Sysprep and unattended-setup answer files of Windows 5.x (XP/2003).
pub const ANSWER_FILES_5: [&str; 2] = [r"C:\sysprep\sysprep.inf", r"C:\sysprep\unattend.txt"];

/// What a family's stock install ships, as far as the first-boot commands
/// care: the one place where the Windows families differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Toolset {
    /// PowerShell 3 or later (Get-CimInstance, Rename-Computer,
    /// `Get-Content -Raw`). Without it: wmic, cmd.exe and cscript.
    pub powershell: bool,
    /// Only the XP/2003 `netsh firewall` context (no `netsh advfirewall`).
    pub legacy_firewall: bool,
    /// XP/2003 powercfg: settings take a slash (`/standby-timeout-ac`).
    pub xp_powercfg: bool,
    /// Answer files to remove.
    pub answer_files: &'static [&'static str],
}

/// The toolset of family `f` (the non-Windows families get the Windows 10
/// one; they never reach this module).
pub fn toolset(f: Family) -> Toolset {
    match f {
        Family::Windows5 => Toolset {
            powershell: false,
            legacy_firewall: true,
            xp_powercfg: true,
            answer_files: &ANSWER_FILES_5,
        },
        Family::Windows6 => Toolset {
            powershell: false,
            legacy_firewall: false,
            xp_powercfg: false,
            answer_files: &ANSWER_FILES,
        },
        _ => Toolset {
            powershell: true,
            legacy_firewall: false,
            xp_powercfg: false,
            answer_files: &ANSWER_FILES,
        },
    }
}

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

/// A wmic command line, through cmd.exe with stdin from `nul`: wmic reads
/// its stdin after the command and waits forever for a pipe that nobody
/// closes (XP, and WinRM's stdin on later versions too).
fn wmic(args: &[&str]) -> Vec<String> {
    let mut v = argv(&["cmd", "/c", "wmic"]);
    v.extend(args.iter().map(|s| s.to_string()));
    v.push("<nul".to_string());
    v
}

/// The command that prints the boot id of family `f`: the last boot time.
pub fn boot_id_command(f: Family) -> Vec<String> {
    if toolset(f).powershell {
        argv(&[
            "powershell",
            "-NoProfile",
            "-NonInteractive",
            "-Command",
            "(Get-CimInstance Win32_OperatingSystem).LastBootUpTime.ToUniversalTime().ToString('o')",
        ])
    } else {
        // wmic ships with XP and later (Windows 10 21H1+ may lack it: that
        // family uses PowerShell). Prints `LastBootUpTime=20261125093012.500000+060`.
        wmic(&["os", "get", "lastbootuptime", "/value"])
    }
}

/// The boot id in the output of [`boot_id_command`]: the PowerShell time,
/// or the value of wmic's `LastBootUpTime=` line (wmic may write UTF-16 and
/// `\r\r\n` line ends: NULs, byte-order marks and blank lines are skipped).
pub fn boot_id_from(f: Family, stdout: &str) -> Option<String> {
    if toolset(f).powershell {
        let t = stdout.trim();
        return (!t.is_empty()).then(|| t.to_string());
    }
    let text: String = stdout
        .chars()
        .filter(|c| !matches!(c, '\0' | '\u{feff}' | '\u{fffd}'))
        .collect();
    text.lines().find_map(|l| {
        let (k, v) = l.trim().split_once('=')?;
        let v = v.trim();
        (k.trim().eq_ignore_ascii_case("LastBootUpTime") && !v.is_empty()).then(|| v.to_string())
    })
}

/// How one first-boot action runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Act {
    /// One command; exit 0 is success.
    Run(Vec<String>),
    /// A `wmic ... call` guarded by a cmd.exe `if`: success is exit 0 and
    /// either no output (the guard skipped it) or `ReturnValue = 0;` (wmic
    /// exits 0 when the method fails, too).
    WmiCall(Vec<String>),
    /// Remove these files with cmd.exe, each checked gone afterwards (`del`
    /// exits 0 when it fails, too).
    RemoveFiles(&'static [&'static str]),
    /// Cannot be done: the reason.
    Refuse(String),
}

/// The computer name in a cmd.exe line: letters, digits and hyphens only,
/// what a Windows (NetBIOS) name may hold and cmd.exe passes as is.
fn cmd_safe_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// The actions for one family, as (name, how, fatal-on-failure).
pub fn actions(f: Family, computer: &str) -> Vec<(&'static str, Act, bool)> {
    let t = toolset(f);
    let mut v = Vec::new();
    // Renaming is idempotent: only when the name differs (the rename takes
    // effect at the next boot, which the user's first logon may bring).
    let rename = if t.powershell {
        Act::Run(ps(&format!(
            "if ($env:COMPUTERNAME -ne '{n}') {{ Rename-Computer -NewName '{n}' -Force -ErrorAction Stop }}; 'computer name {n}'",
            n = computer.replace('\'', "''")
        )))
    } else if cmd_safe_name(computer) {
        // Win32_ComputerSystem.Rename: XP and later, no PowerShell needed.
        let mut cmd = argv(&[
            "cmd",
            "/c",
            "if",
            "/i",
            "not",
            &format!(r#""%COMPUTERNAME%"=="{computer}""#),
        ]);
        cmd.extend(
            wmic(&[
                "computersystem",
                "where",
                r#"name="%COMPUTERNAME%""#,
                "call",
                "rename",
                &format!(r#"name="{computer}""#),
            ])[2..]
                .iter()
                .cloned(),
        );
        Act::WmiCall(cmd)
    } else {
        Act::Refuse(format!(
            "computer name `{computer}` cannot be set through cmd.exe and wmic: \
             use letters, digits and hyphens, or set first_boot = false"
        ))
    };
    v.push(("set-computer-name", rename, true));
    v.push((
        "enable-rdp",
        Act::Run(argv(&[
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
        ])),
        true,
    ));
    if t.legacy_firewall {
        v.push((
            "firewall-rdp",
            Act::Run(argv(&[
                "netsh",
                "firewall",
                "set",
                "service",
                "type=remotedesktop",
                "mode=enable",
            ])),
            true,
        ));
        v.push((
            "firewall-ping",
            Act::Run(argv(&[
                "netsh",
                "firewall",
                "set",
                "icmpsetting",
                "type=8",
                "mode=enable",
            ])),
            true,
        ));
    } else {
        v.push((
            "firewall-rdp",
            Act::Run(argv(&[
                "netsh",
                "advfirewall",
                "firewall",
                "set",
                "rule",
                r#"group="remote desktop""#,
                "new",
                "enable=yes",
            ])),
            true,
        ));
        // Delete, then add: running twice leaves one rule. Through cmd.exe,
        // not PowerShell: cmd.exe (WinRM's shell) would take a `|` in a
        // PowerShell line as its own pipe, and PowerShell would split the
        // `icmpv4:8,any` argument at the comma. The delete fails when there
        // is no rule yet; `&` goes on regardless.
        v.push((
            "firewall-ping",
            Act::Run(argv(&[
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
            ])),
            true,
        ));
    }
    // XP/2003's powercfg (SP2) changes the current scheme with slashed
    // settings; Vista and later take them bare.
    let standby = if t.xp_powercfg {
        "/standby-timeout-ac"
    } else {
        "standby-timeout-ac"
    };
    v.push((
        "disable-sleep",
        Act::Run(argv(&["powercfg", "/change", standby, "0"])),
        false,
    ));
    v.push((
        "disable-hibernate",
        Act::Run(argv(&["powercfg", "/hibernate", "off"])),
        false,
    ));
    let remove = if t.powershell {
        let files: Vec<String> = t.answer_files.iter().map(|f| format!("'{f}'")).collect();
        Act::Run(ps(&format!(
            "foreach ($f in @({})) {{ if (Test-Path $f) {{ Remove-Item -Force $f; 'removed ' + $f }} }}; 'answer files gone'",
            files.join(",")
        )))
    } else {
        Act::RemoveFiles(t.answer_files)
    };
    v.push(("remove-answer-files", remove, true));
    v
}

/// `cmd /c if exist "F" exit 1`: exits 1 when `file` exists.
fn exists_command(file: &str) -> Vec<String> {
    argv(&[
        "cmd",
        "/c",
        "if",
        "exist",
        &format!("\"{file}\""),
        "exit",
        "1",
    ])
}

/// `cmd /c if exist "F" del /f /q "F"`.
fn del_command(file: &str) -> Vec<String> {
    let q = format!("\"{file}\"");
    argv(&["cmd", "/c", "if", "exist", &q, "del", "/f", "/q", &q])
}

/// The VBScript that sets `user`'s password from the file named by its
/// argument and deletes the file. Windows Script Host, ADSI and ADODB ship
/// with every Windows since 2000: no PowerShell needed. The password is
/// read as UTF-8 (as uploaded), up to the first line break.
pub fn password_script(user: &str) -> String {
    let user = user.replace('"', "");
    [
        "' reimage: sets the password of the account below from the file named",
        "' by the first argument, then deletes that file.",
        "Option Explicit",
        "Dim path, fso, stream, pw, account",
        "If WScript.Arguments.Count <> 1 Then",
        "  WScript.StdErr.WriteLine \"usage: cscript //nologo set-password.vbs PASSWORD-FILE\"",
        "  WScript.Quit 2",
        "End If",
        "path = WScript.Arguments(0)",
        "Set fso = CreateObject(\"Scripting.FileSystemObject\")",
        "On Error Resume Next",
        "Set stream = CreateObject(\"ADODB.Stream\")",
        "stream.Type = 2",
        "stream.Charset = \"utf-8\"",
        "stream.Open",
        "stream.LoadFromFile path",
        "pw = stream.ReadText(-1)",
        "stream.Close",
        "If Err.Number <> 0 Then",
        "  WScript.StdErr.WriteLine \"cannot read \" & path & \": \" & Err.Description",
        "  fso.DeleteFile path, True",
        "  WScript.Quit 1",
        "End If",
        "fso.DeleteFile path, True",
        "If Err.Number <> 0 Then",
        "  WScript.StdErr.WriteLine \"cannot delete \" & path & \": \" & Err.Description",
        "  WScript.Quit 1",
        "End If",
        "pw = Replace(pw, vbCr, vbLf)",
        "If InStr(pw, vbLf) > 0 Then pw = Left(pw, InStr(pw, vbLf) - 1)",
        "If Len(pw) = 0 Then",
        "  WScript.StdErr.WriteLine \"the password file was empty\"",
        "  WScript.Quit 1",
        "End If",
        &format!("Set account = GetObject(\"WinNT://./{user},user\")"),
        "If Err.Number <> 0 Then",
        &format!("  WScript.StdErr.WriteLine \"no account {user}: \" & Err.Description"),
        "  WScript.Quit 1",
        "End If",
        "account.SetPassword pw",
        "If Err.Number = 0 Then account.SetInfo",
        "If Err.Number <> 0 Then",
        &format!(
            "  WScript.StdErr.WriteLine \"cannot set the password of {user}: \" & Err.Description"
        ),
        "  WScript.Quit 1",
        "End If",
        &format!("WScript.Echo \"password of {user} set\""),
        "",
    ]
    .join("\r\n")
}

/// The command that sets the Administrator password from an uploaded file
/// and deletes the file; the password itself never appears in a command.
/// Without PowerShell, `script` is the uploaded [`password_script`].
pub fn password_command(f: Family, user: &str, file: &str, script: &str) -> Vec<String> {
    if toolset(f).powershell {
        ps(&format!(
            "$p = (Get-Content -Raw '{file}').Trim(); Remove-Item -Force '{file}'; ([adsi]'WinNT://./{u},user').SetPassword($p); 'password of {u} set'",
            u = user.replace('\'', "''")
        ))
    } else {
        argv(&["cscript", "//nologo", script, file])
    }
}

/// The step message of a finished WMI method call, or why it failed.
fn wmi_result(out: &CommandOutput) -> Result<String, String> {
    let text = format!("{}\n{}", out.stdout, out.stderr).replace('\0', "");
    if text.trim().is_empty() {
        return Ok("already set".to_string());
    }
    let rv = text.lines().find_map(|l| {
        let (k, v) = l.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("ReturnValue")
            .then(|| v.trim().trim_end_matches(';').trim().to_string())
    });
    match rv.as_deref() {
        Some("0") => Ok("done (ReturnValue = 0); takes effect at the next boot".to_string()),
        Some(n) => Err(format!(
            "the WMI method returned {n}: {}",
            crate::exec::excerpt(&text, 5)
        )),
        None => Err(format!(
            "no ReturnValue from wmic: {}",
            crate::exec::excerpt(&text, 5)
        )),
    }
}

/// Runs one command of an action, reporting its output; a channel error
/// becomes an outcome.
fn exec(a: &mut Actions, name: &str, cmd: &[String]) -> Result<CommandOutput, Outcome> {
    let who = a.plan.computer.name.clone();
    let out = a.ch.run(cmd, a.timeout).map_err(|e| {
        a.report.step_end(false, &e.to_string());
        e.into_outcome(format!("{who}: first-boot action `{name}`"))
    })?;
    let o = crate::exec::Output {
        code: out.status,
        stdout: out.stdout.clone(),
        stderr: out.stderr.clone(),
        elapsed: Duration::ZERO,
    };
    a.report.output(&cmd.join(" "), &o);
    Ok(out)
}

/// Runs an action that is more than one plain command, as one step.
fn run_act(
    a: &mut Actions,
    name: &str,
    act: &Act,
    on_fail: fn(anyhow::Error) -> Outcome,
) -> Result<(), Outcome> {
    let who = a.plan.computer.name.clone();
    let failed = |a: &mut Actions, why: String| {
        let m = format!("{who}: first-boot action `{name}`: {why}");
        a.report.step_end(false, &m);
        Err(on_fail(anyhow::anyhow!(m)))
    };
    match act {
        Act::Run(cmd) => a.run(name, cmd, on_fail).map(|_| ()),
        Act::Refuse(why) => {
            a.report.step(name, Some(a.timeout));
            failed(a, why.clone())
        }
        Act::WmiCall(cmd) => {
            a.report.step(name, Some(a.timeout));
            let out = exec(a, name, cmd)?;
            if out.status != 0 {
                let text = format!("{}{}", out.stdout.trim(), out.stderr.trim());
                return failed(
                    a,
                    format!("exited {}: {}", out.status, crate::exec::excerpt(&text, 5)),
                );
            }
            match wmi_result(&out) {
                Ok(m) => {
                    a.report.step_end(true, &m);
                    Ok(())
                }
                Err(why) => failed(a, why),
            }
        }
        Act::RemoveFiles(files) => {
            a.report.step(name, Some(a.timeout));
            let mut removed = Vec::new();
            for f in files.iter() {
                if exec(a, name, &exists_command(f))?.status == 0 {
                    continue;
                }
                let del = exec(a, name, &del_command(f))?;
                if exec(a, name, &exists_command(f))?.status != 0 {
                    let text = format!("{}{}", del.stdout.trim(), del.stderr.trim());
                    return failed(
                        a,
                        format!("{f} is still there: {}", crate::exec::excerpt(&text, 5)),
                    );
                }
                removed.push(*f);
            }
            let m = if removed.is_empty() {
                "answer files gone (none there)".to_string()
            } else {
                format!("answer files gone (removed {})", removed.join(", "))
            };
            a.report.step_end(true, &m);
            Ok(())
        }
    }
}

/// Runs the Windows first-boot configuration.
pub fn first_boot(
    plan: &Plan,
    attempt: Attempt,
    ch: &mut dyn Channel,
    report: &Reporter,
) -> Result<(), Outcome> {
    let family = plan.profile.family;
    let mut a = Actions::new(plan, attempt, ch, report);
    a.run(
        "mkdir-state",
        &argv(&["cmd", "/c", &format!("if not exist {DIR} mkdir {DIR}")]),
        Outcome::Retry,
    )?;
    for (name, act, fatal) in actions(family, &plan.computer.name) {
        let r = run_act(
            &mut a,
            name,
            &act,
            if fatal {
                Outcome::Fatal
            } else {
                Outcome::Retry
            },
        );
        match r {
            Ok(()) => {}
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
        let script = format!(r"{DIR}\set-password.vbs");
        if !toolset(family).powershell {
            a.upload(
                "upload-password-script",
                password_script("Administrator").as_bytes(),
                &script,
                0o600,
            )?;
        }
        let remote = format!(r"{DIR}\admin-password.txt");
        a.upload("upload-admin-password", pw.as_bytes(), &remote, 0o600)?;
        let r = a.run(
            "set-admin-password",
            &password_command(family, "Administrator", &remote, &script),
            Outcome::Fatal,
        );
        if r.is_err() {
            // The command deletes the file first thing; should it not have
            // run at all, no password stays behind on the computer.
            let _ = a.ch.run(&del_command(&remote), a.timeout);
        }
        r?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_id_from_wmic_value_output() {
        let out = "\r\r\n\r\r\nLastBootUpTime=20261125093012.500000+060\r\r\n\r\r\n\r\r\n";
        assert_eq!(
            boot_id_from(Family::Windows5, out).as_deref(),
            Some("20261125093012.500000+060")
        );
        // UTF-16 read as bytes: NULs between the characters.
        let wide: String = "\u{feff}LastBootUpTime=2026\r\n"
            .chars()
            .flat_map(|c| [c, '\0'])
            .collect();
        assert_eq!(
            boot_id_from(Family::Windows6, &wide).as_deref(),
            Some("2026")
        );
        assert_eq!(boot_id_from(Family::Windows6, "LastBootUpTime=\r\n"), None);
        assert_eq!(
            boot_id_from(
                Family::Windows6,
                "Please wait while WMIC is being installed.\r\n"
            ),
            None
        );
        assert_eq!(
            boot_id_from(Family::Windows10, " 2026-11-25T09:30:12.5000000Z\r\n").as_deref(),
            Some("2026-11-25T09:30:12.5000000Z")
        );
    }

    #[test]
    fn families_use_what_they_ship() {
        for f in [Family::Windows5, Family::Windows6] {
            let all: Vec<String> = actions(f, "lab-pc-07")
                .into_iter()
                .flat_map(|(_, act, _)| match act {
                    Act::Run(v) | Act::WmiCall(v) => v,
                    _ => vec![],
                })
                .chain(boot_id_command(f))
                .chain(password_command(f, "Administrator", "F", "S.vbs"))
                .collect();
            assert!(
                !all.iter()
                    .any(|w| w.to_ascii_lowercase().contains("powershell")),
                "{f:?}: {all:?}"
            );
        }
        assert_eq!(boot_id_command(Family::Windows10)[0], "powershell");
        assert!(actions(Family::Windows5, "pc").iter().any(
            |(n, a, _)| *n == "firewall-rdp" && matches!(a, Act::Run(v) if v[1] == "firewall")
        ));
        assert!(
            matches!(&actions(Family::Windows5, "pc")[6], (_, Act::RemoveFiles(f), _) if f.contains(&r"C:\sysprep\unattend.txt"))
        );
    }

    #[test]
    fn rename_goes_through_wmic_with_a_guard() {
        let (_, act, _) = &actions(Family::Windows5, "lab-pc-07")[0];
        let Act::WmiCall(v) = act else {
            panic!("{act:?}")
        };
        assert_eq!(
            v.join(" "),
            r#"cmd /c if /i not "%COMPUTERNAME%"=="lab-pc-07" wmic computersystem where name="%COMPUTERNAME%" call rename name="lab-pc-07" <nul"#
        );
        assert!(matches!(
            &actions(Family::Windows6, "a&b")[0],
            (_, Act::Refuse(_), true)
        ));
    }

    #[test]
    fn wmi_results() {
        let ok = CommandOutput {
            status: 0,
            stdout: "Executing (...)->rename()\r\nMethod execution successful.\r\nOut Parameters:\r\ninstance of __PARAMETERS\r\n{\r\n\tReturnValue = 0;\r\n};\r\n".into(),
            stderr: String::new(),
        };
        assert!(wmi_result(&ok).is_ok());
        let bad = CommandOutput {
            stdout: ok.stdout.replace("= 0;", "= 1210;"),
            ..ok.clone()
        };
        assert!(wmi_result(&bad).unwrap_err().contains("1210"));
        let none = CommandOutput {
            stdout: String::new(),
            stderr: "No Instance(s) Available.\r\n".into(),
            ..ok.clone()
        };
        assert!(wmi_result(&none).is_err());
        let skipped = CommandOutput {
            stdout: String::new(),
            ..ok
        };
        assert!(wmi_result(&skipped).is_ok());
    }

    #[test]
    fn password_script_never_holds_a_password() {
        let s = password_script("Administrator");
        assert!(s.contains(r#"GetObject("WinNT://./Administrator,user")"#));
        assert!(s.contains("SetPassword pw") && s.contains("SetInfo"));
        assert!(s.contains("fso.DeleteFile path, True"));
        assert_eq!(
            password_command(Family::Windows5, "Administrator", "C:\\p.txt", "C:\\s.vbs"),
            argv(&["cscript", "//nologo", "C:\\s.vbs", "C:\\p.txt"])
        );
    }
}
