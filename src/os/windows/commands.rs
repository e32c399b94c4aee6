//! Which Windows, and its command lines and what their output means: pure
//! builders and parsers, no channel and no orchestration. The family's
//! boot id and setup state (what the wait sequence asks) and the first
//! boot both use them.
//!
//! Each family gets only commands its stock install ships; [`toolset`] is
//! the one place that decides. Windows 5.x (XP/2003) has no PowerShell and
//! the older `netsh firewall` context; Windows 6.x has PowerShell 2 at most
//! (none on Vista/2008 by default: no Get-CimInstance, Rename-Computer or
//! `Get-Content -Raw`), so both use wmic, cmd.exe and a VBScript run by
//! cscript; Windows 10 and later use PowerShell. The scripts are files of
//! this folder (`*.vbs`, `*.ps1`), filled in by [`fill`].

use std::time::Duration;

use super::network::Side;
use crate::exec::Output;
use crate::outcome::Outcome;

/// Where reimage keeps its files on a Windows computer.
pub const DIR: &str = r"C:\Windows\Temp\reimage";

/// Answer files and Sysprep logs of Windows 6.x and later that may hold
/// clear-text passwords, as cmd.exe wildcards: what VCL's Version_6.pm
/// sanitize_files cleans (everything under System32\sysprep and
/// %SystemRoot%\Panther), by the names Windows Setup reads and writes
/// answer files under (Microsoft, "Windows Setup Automation Overview":
/// Panther\unattend.xml, Panther\Unattend\, sysprep\unattend.xml;
/// Panther\UnattendGC holds the oobeSystem pass's copy and logs), and an
/// XP-era C:\sysprep\*.inf an old image may still carry.
pub const ANSWER_FILES: [&str; 8] = [
    r"C:\Windows\Panther\unattend*.xml",
    r"C:\Windows\Panther\Unattend\*",
    r"C:\Windows\Panther\UnattendGC\*",
    r"C:\Windows\System32\sysprep\*.xml",
    r"C:\Windows\System32\sysprep\*.inf",
    r"C:\Windows\System32\sysprep\Panther\unattend*.xml",
    r"C:\Windows\System32\sysprep\Panther\UnattendGC\*",
    r"C:\sysprep\*.inf",
];

/// Sysprep and unattended-setup answer files of Windows 5.x (XP/2003):
/// VCL's Version_5.pm sanitize_files cleans %SystemDrive%\Sysprep
/// (sysprep.inf, unattend.txt and their kin).
pub const ANSWER_FILES_5: [&str; 2] = [r"C:\sysprep\*.inf", r"C:\sysprep\*.txt"];

/// Which Windows: the family in its versions (what each one's stock
/// install ships is its [`toolset`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Windows {
    /// Windows XP / Server 2003.
    V5,
    /// Windows Vista / 2008 / 7 / 2008 R2 / 8 / 2012.
    V6,
    /// Windows 10 / 11 / Server 2016 and later.
    V10,
}

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

/// The toolset of Windows `w`.
pub fn toolset(w: Windows) -> Toolset {
    match w {
        Windows::V5 => Toolset {
            powershell: false,
            legacy_firewall: true,
            xp_powercfg: true,
            answer_files: &ANSWER_FILES_5,
        },
        Windows::V6 => Toolset {
            powershell: false,
            legacy_firewall: false,
            xp_powercfg: false,
            answer_files: &ANSWER_FILES,
        },
        Windows::V10 => Toolset {
            powershell: true,
            legacy_firewall: false,
            xp_powercfg: false,
            answer_files: &ANSWER_FILES,
        },
    }
}

pub fn argv(v: &[&str]) -> Vec<String> {
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

/// `template` with each `@key@` of `values` replaced by its value, in one
/// pass (a value is never read again as a template). The scripts of this
/// folder take their settings this way; what reaches them is checked, or
/// quoted, by the caller.
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find('@') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        match after.split_once('@').and_then(|(k, tail)| {
            values
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| (*v, tail))
        }) {
            Some((v, tail)) => {
                out.push_str(v);
                rest = tail;
            }
            None => {
                out.push('@');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// A PowerShell file of this folder as the one line [`ps`] passes on.
fn ps_line(file: &str) -> &str {
    file.trim_end_matches(['\r', '\n'])
}

/// A VBScript file of this folder with Windows line ends, as uploaded.
fn vbs(file: &str) -> String {
    file.replace('\n', "\r\n")
}

/// PowerShell: the last boot time, as a round-trip UTC string.
const BOOT_ID_PS1: &str = include_str!("boot-id.ps1");
/// PowerShell: renames the computer unless it has the name already.
const RENAME_PS1: &str = include_str!("rename.ps1");
/// PowerShell: sets a password from a file, deleting the file.
const SET_PASSWORD_PS1: &str = include_str!("set-password.ps1");
/// VBScript: sets a password from a file, deleting the file.
const SET_PASSWORD_VBS: &str = include_str!("set-password.vbs");
/// VBScript: joins a domain with credentials from a file.
const DOMAIN_VBS: &str = include_str!("domain.vbs");
/// VBScript: sets the DNS servers.
const DNS_VBS: &str = include_str!("dns.vbs");
/// PowerShell: the domain and whether the computer is a member.
const DOMAIN_QUERY_PS1: &str = include_str!("domain-query.ps1");
/// PowerShell: leaves the domain.
const UNJOIN_PS1: &str = include_str!("unjoin.ps1");
/// VBScript: installs a product key from a file.
const MAK_VBS: &str = include_str!("mak.vbs");

/// A wmic command line, through cmd.exe with stdin from `nul`: wmic reads
/// its stdin after the command and waits forever for a pipe that nobody
/// closes (XP, and WinRM's stdin on later versions too).
fn wmic(args: &[&str]) -> Vec<String> {
    let mut v = argv(&["cmd", "/c", "wmic"]);
    v.extend(args.iter().map(|s| s.to_string()));
    v.push("<nul".to_string());
    v
}

/// The command that prints the boot id of Windows `f`: the last boot time.
pub fn boot_id_command(f: Windows) -> Vec<String> {
    if toolset(f).powershell {
        argv(&[
            "powershell",
            "-NoProfile",
            "-NonInteractive",
            "-Command",
            ps_line(BOOT_ID_PS1),
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
pub fn boot_id_from(f: Windows, stdout: &str) -> Option<String> {
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

/// The registry key whose `ImageState` says how far Windows setup is, on
/// Vista and later (Microsoft, "Windows Setup States": IMAGE_STATE_COMPLETE
/// once the specialize and oobeSystem passes are done; VCL's Version_6.pm
/// writes that value before Sysprep, too).
const SETUP_STATE_KEY: &str = r"HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Setup\State";

/// XP/2003's setup key: `SystemSetupInProgress` and `MiniSetupInProgress`
/// are 1 while (mini-)setup runs and 0 (or gone) once it is done.
const SETUP_KEY_5: &str = r"HKLM\SYSTEM\Setup";

/// The command that prints Windows' setup state: reg.exe, which every
/// family ships (no PowerShell needed).
pub fn setup_state_command(f: Windows) -> Vec<String> {
    if f == Windows::V5 {
        argv(&["reg", "query", SETUP_KEY_5])
    } else {
        argv(&["reg", "query", SETUP_STATE_KEY, "/v", "ImageState"])
    }
}

/// The value of `name` in reg.exe's query output (`    NAME    TYPE    DATA`).
pub fn reg_value<'a>(out: &'a str, name: &str) -> Option<&'a str> {
    out.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next()?.eq_ignore_ascii_case(name) && w.next()?.starts_with("REG_"))
            .then(|| w.next().unwrap_or(""))
    })
}

/// Ok (what it says) when the output of [`setup_state_command`] says setup
/// is complete; Err (what it says) when not yet.
pub fn setup_state(f: Windows, stdout: &str) -> Result<String, String> {
    if f == Windows::V5 {
        let flag = |n: &str| match reg_value(stdout, n) {
            None => Ok(0),
            Some(v) => u32::from_str_radix(v.trim_start_matches("0x"), 16).map_err(|_| v),
        };
        return match (flag("SystemSetupInProgress"), flag("MiniSetupInProgress")) {
            (Ok(0), Ok(0)) if reg_value(stdout, "SystemSetupInProgress").is_some() => {
                Ok("setup complete (SystemSetupInProgress and MiniSetupInProgress are 0)".into())
            }
            (Ok(s), Ok(m)) if reg_value(stdout, "SystemSetupInProgress").is_some() => Err(format!(
                "setup running (SystemSetupInProgress {s}, MiniSetupInProgress {m})"
            )),
            _ => Err(format!(
                "no SystemSetupInProgress in: {}",
                crate::exec::excerpt(stdout, 3)
            )),
        };
    }
    match reg_value(stdout, "ImageState") {
        Some("IMAGE_STATE_COMPLETE") => Ok("ImageState IMAGE_STATE_COMPLETE".into()),
        Some(s) => Err(format!("ImageState {s}")),
        None => Err(format!(
            "no ImageState in: {}",
            crate::exec::excerpt(stdout, 3)
        )),
    }
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
    /// XP/2003's sleep settings: read the current scheme's name from
    /// `powercfg /query`, then change each setting of that scheme.
    XpPower,
    /// Cannot be done: the reason.
    Refuse(String),
}

/// The computer name in a cmd.exe line: letters, digits and hyphens only,
/// what a Windows (NetBIOS) name may hold and cmd.exe passes as is.
fn cmd_safe_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// What the first boot does beyond the family's defaults: the plan's
/// settings, with `allow_from` resolved (never empty).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Sources RDP and ping are opened to.
    pub allow_from: Vec<String>,
    /// `ipconfig /renew`.
    pub renew_dhcp: bool,
    /// (interface, address, mask, gateway).
    pub static_address: Option<(String, String, String, Option<String>)>,
    /// On a computer with a public interface: the private side the
    /// lockdown is bound to.
    pub private: Option<Side>,
}

/// The rename action of family `f`: renames only when the name differs,
/// and says whether it did (the new name takes effect at the next boot).
pub fn rename_action(f: Windows, computer: &str) -> Act {
    if toolset(f).powershell {
        let name = computer.replace('\'', "''");
        Act::Run(ps(&fill(
            ps_line(RENAME_PS1),
            &[("name", &name), ("renamed", RENAMED)],
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
    }
}

/// What the PowerShell rename prints when it renamed.
pub const RENAMED: &str = "renamed: takes effect at the next boot";

/// The reboot command: VCL's Windows.pm `reboot` runs shutdown.exe /r /t 0
/// /f (XP's shutdown.exe takes the same switches).
pub fn reboot_command() -> Vec<String> {
    argv(&["shutdown", "/r", "/t", "0", "/f"])
}

/// How long a first-boot reboot may take at attempt 1: VCL's Windows.pm
/// `reboot` waits 300 s.
pub const REBOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// `netsh advfirewall` (Vista and later): delete every inbound rule for
/// `filter` (by protocol and port, never by the localized display or group
/// names), then add one rule named `name` that allows it from `from` only,
/// and with `private` to the private side's addresses only (`localip`).
/// VCL's Version_6.pm firewall_enable_rdp/ping do the same delete-then-add.
fn advfirewall(
    name: &str,
    filter: &[&str],
    from: &[String],
    private: Option<&Side>,
) -> Vec<String> {
    let mut v = argv(&[
        "cmd",
        "/c",
        "netsh",
        "advfirewall",
        "firewall",
        "delete",
        "rule",
        "name=all",
        "dir=in",
    ]);
    v.extend(filter.iter().map(|s| s.to_string()));
    // No rule to delete is an error exit; `&` goes on regardless, and the
    // add's exit is the line's.
    v.extend(argv(&[
        ">nul",
        "2>&1",
        "&",
        "netsh",
        "advfirewall",
        "firewall",
        "add",
        "rule",
    ]));
    v.push(format!("name=\"{name}\""));
    v.extend(argv(&["dir=in", "action=allow", "enable=yes"]));
    v.extend(filter.iter().map(|s| s.to_string()));
    v.push(format!("remoteip={}", from.join(",")));
    if let Some(p) = private {
        v.push(format!("localip={}", p.addresses.join(",")));
    }
    v
}

/// XP/2003's `netsh firewall` bound to the private side, as VCL's
/// Windows.pm does it there: `off` (the exception for every interface:
/// the global one) first, its failure ignored, then `on` once per private
/// interface with `interface="NAME"` (an exception of that interface
/// only), all in one cmd.exe line whose exit is the last command's.
fn legacy_on_interfaces(off: &[&str], on: &[String], private: &Side) -> Vec<String> {
    let mut v = argv(&["cmd", "/c"]);
    v.extend(off.iter().map(|s| s.to_string()));
    v.extend(argv(&[">nul", "2>&1"]));
    for name in &private.names {
        v.push("&".into());
        v.extend(on.iter().cloned());
        v.push(format!("interface=\"{name}\""));
    }
    v
}

/// The channel's own port (WinRM's, `port`) open only from `from`, as
/// the lockdown opens RDP: every inbound rule on the port replaced by one
/// of reimage's, in one command line (the delete and the add run on the
/// computer together, so the connection that sends them is not cut in
/// between). XP/2003: the port exception with a custom scope.
pub fn control_port_action(f: Windows, port: u16, from: &[String], private: Option<&Side>) -> Act {
    if toolset(f).legacy_firewall {
        let on = argv(&[
            "netsh",
            "firewall",
            "set",
            "portopening",
            "protocol=TCP",
            &format!("port={port}"),
            "name=reimage-WinRM",
            "mode=ENABLE",
            "scope=CUSTOM",
            &format!("addresses={}", from.join(",")),
        ]);
        return Act::Run(match private {
            None => on,
            Some(p) => {
                let port = format!("port={port}");
                let off = [
                    "netsh",
                    "firewall",
                    "delete",
                    "portopening",
                    "protocol=TCP",
                    &port,
                ];
                legacy_on_interfaces(&off, &on, p)
            }
        });
    }
    Act::Run(advfirewall(
        "reimage WinRM",
        &["protocol=TCP", &format!("localport={port}")],
        from,
        private,
    ))
}

/// The powercfg settings that put a computer to sleep: all of them go to 0
/// (VCL's Version_6.pm / Version_5.pm disable_sleep).
pub const POWER_SETTINGS: [&str; 8] = [
    "monitor-timeout-ac",
    "monitor-timeout-dc",
    "disk-timeout-ac",
    "disk-timeout-dc",
    "standby-timeout-ac",
    "standby-timeout-dc",
    "hibernate-timeout-ac",
    "hibernate-timeout-dc",
];

/// `cmd /c powercfg /change S 0 && ...` for every setting; on XP/2003
/// (`scheme` given) the scheme-name form `powercfg /change "NAME" /S 0`.
pub fn power_command(scheme: Option<&str>) -> Vec<String> {
    let mut v = argv(&["cmd", "/c"]);
    for (i, s) in POWER_SETTINGS.iter().enumerate() {
        if i > 0 {
            v.push("&&".into());
        }
        v.extend(argv(&["powercfg", "/change"]));
        match scheme {
            Some(n) => {
                v.push(format!("\"{n}\""));
                v.push(format!("/{s}"));
            }
            None => v.push(s.to_string()),
        }
        v.push("0".into());
    }
    v
}

/// The power scheme's name in XP's `powercfg /query` output (the `Name`
/// line; VCL's Version_5.pm disable_sleep reads it the same way).
pub fn xp_scheme_name(stdout: &str) -> Option<String> {
    stdout.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("Name")?;
        let n = rest.trim();
        (!n.is_empty() && !n.contains('"') && rest.starts_with(char::is_whitespace))
            .then(|| n.to_string())
    })
}

/// slmgr.vbs through cscript (every activation-capable Windows ships both;
/// VCL's Version_6.pm runs `cscript.exe //NoLogo slmgr.vbs -skms/-ato`).
pub fn slmgr(args: &[&str]) -> Vec<String> {
    let mut v = argv(&[
        "cmd",
        "/c",
        "cscript",
        "//nologo",
        r"%SystemRoot%\System32\slmgr.vbs",
    ]);
    v.extend(args.iter().map(|s| s.to_string()));
    v
}

/// One first-boot action: its step name, how it runs, and what a failure
/// means.
pub type Action = (&'static str, Act, OnFail);

/// The actions for one family, after the rename: Remote Desktop and the
/// lockdown, power, network, time, activation, and the scrub of answer
/// files.
pub fn actions(f: Windows, s: &Settings) -> Vec<Action> {
    let t = toolset(f);
    let mut v = vec![enable_rdp()];
    v.extend(lockdown(t, &s.allow_from, s.private.as_ref()));
    v.extend(power(t));
    v.extend(network(s));
    v.push((
        "remove-answer-files",
        Act::RemoveFiles(t.answer_files),
        OnFail::Fatal,
    ));
    v
}

/// Remote Desktop on (fDenyTSConnections = 0).
fn enable_rdp() -> Action {
    (
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
        OnFail::Fatal,
    )
}

/// XP/2003: the Remote Desktop service's exception (every interface's)
/// open to `from` only, by its type keyword (not a localized name).
pub(super) fn rdp_service(from: &[String]) -> Vec<String> {
    argv(&[
        "netsh",
        "firewall",
        "set",
        "service",
        "type=remotedesktop",
        "mode=enable",
        "scope=custom",
        &format!("addresses={}", from.join(",")),
    ])
}

/// Remote Desktop and ping open only from `from`, and with `private` on
/// the private side only.
fn lockdown(t: Toolset, from: &[String], private: Option<&Side>) -> Vec<Action> {
    if !t.legacy_firewall {
        return vec![
            (
                "firewall-rdp",
                Act::Run(advfirewall(
                    "reimage RDP",
                    &["protocol=TCP", "localport=3389"],
                    from,
                    private,
                )),
                OnFail::Fatal,
            ),
            (
                "firewall-ping",
                Act::Run(advfirewall(
                    "reimage ICMPv4 echo",
                    &["protocol=icmpv4:8,any"],
                    from,
                    private,
                )),
                OnFail::Fatal,
            ),
        ];
    }
    if let Some(p) = private {
        return legacy_lockdown_private(from, p);
    }
    vec![
        // XP/2003: the service's exception by its type keyword (not a
        // localized name), with a custom scope (VCL's Windows.pm sets
        // `scope = CUSTOM addresses = ...` on its port openings).
        ("firewall-rdp", Act::Run(rdp_service(from)), OnFail::Fatal),
        // `netsh firewall set icmpsetting` has no scope on XP/2003: echo is
        // allowed from every source there (in the man page).
        (
            "firewall-ping",
            Act::Run(argv(&[
                "netsh",
                "firewall",
                "set",
                "icmpsetting",
                "type=8",
                "mode=enable",
            ])),
            OnFail::Fatal,
        ),
    ]
}

/// XP/2003 with a public interface: the Remote Desktop service exception
/// (every interface's) off, and TCP 3389 opened as a port on each private
/// interface with the custom scope; echo requests off for every interface,
/// then on for each private one (VCL's Windows.pm firewall_enable_ping and
/// firewall_enable_ssh_private do the same by `interface=`). Echo has no
/// scope on XP: from any source, on the private side only.
fn legacy_lockdown_private(from: &[String], p: &Side) -> Vec<Action> {
    let rdp_on = argv(&[
        "netsh",
        "firewall",
        "set",
        "portopening",
        "protocol=TCP",
        "port=3389",
        "name=reimage-RDP",
        "mode=ENABLE",
        "scope=CUSTOM",
        &format!("addresses={}", from.join(",")),
    ]);
    let rdp_off = [
        "netsh",
        "firewall",
        "set",
        "service",
        "type=remotedesktop",
        "mode=disable",
    ];
    let ping_on = argv(&[
        "netsh",
        "firewall",
        "set",
        "icmpsetting",
        "type=8",
        "mode=enable",
    ]);
    let ping_off = [
        "netsh",
        "firewall",
        "set",
        "icmpsetting",
        "type=8",
        "mode=disable",
        "profile=ALL",
    ];
    vec![
        (
            "firewall-rdp",
            Act::Run(legacy_on_interfaces(&rdp_off, &rdp_on, p)),
            OnFail::Fatal,
        ),
        (
            "firewall-ping",
            Act::Run(legacy_on_interfaces(&ping_off, &ping_on, p)),
            OnFail::Fatal,
        ),
    ]
}

/// Sleep and hibernation off: not needed for use, so a failure goes on.
fn power(t: Toolset) -> [Action; 2] {
    [
        (
            "disable-sleep",
            if t.xp_powercfg {
                Act::XpPower
            } else {
                Act::Run(power_command(None))
            },
            OnFail::GoOn,
        ),
        (
            "disable-hibernate",
            Act::Run(argv(&["powercfg", "/hibernate", "off"])),
            OnFail::GoOn,
        ),
    ]
}

/// The DHCP lease renewed, a static address set: as the computer's table
/// says.
fn network(s: &Settings) -> Vec<Action> {
    let mut v = Vec::new();
    if s.renew_dhcp {
        v.push((
            "renew-dhcp",
            Act::Run(argv(&["ipconfig", "/renew"])),
            OnFail::GoOn,
        ));
    }
    if let Some((iface, addr, mask, gw)) = &s.static_address {
        // The positional form XP through 11 all take (VCL's Windows.pm
        // set_static_public_address uses netsh interface ip set address).
        let mut cmd = argv(&["netsh", "interface", "ip", "set", "address"]);
        cmd.push(format!("name=\"{iface}\""));
        cmd.extend(argv(&["static", addr, mask]));
        if let Some(g) = gw {
            cmd.extend(argv(&[g, "1"]));
        }
        v.push(("static-address", Act::Run(cmd), OnFail::Fatal));
    }
    v
}

/// Where w32time keeps its phase-correction limits (Microsoft, "Windows
/// Time service tools and settings": MaxPosPhaseCorrection and
/// MaxNegPhaseCorrection, in seconds; 0xFFFFFFFF takes any correction).
const W32TIME_CONFIG: &str = r"HKLM\SYSTEM\CurrentControlSet\Services\W32Time\Config";

/// The phase-correction limits after the first sync: 54000 s (15 hours),
/// Microsoft's documented default for a stand-alone computer.
pub const PHASE_LIMIT: &str = "54000";

/// Both phase-correction limits set to `value` (`0xFFFFFFFF`: none).
pub fn phase_limits(value: &str) -> Vec<String> {
    let mut v = argv(&["cmd", "/c"]);
    for (i, name) in ["MaxPosPhaseCorrection", "MaxNegPhaseCorrection"]
        .iter()
        .enumerate()
    {
        if i > 0 {
            v.push("&&".into());
        }
        v.extend(argv(&[
            "reg",
            "add",
            W32TIME_CONFIG,
            "/v",
            name,
            "/t",
            "REG_DWORD",
            "/d",
            value,
            "/f",
        ]));
    }
    v
}

/// The clock pointed at `servers`, the time service set to start with
/// Windows, and the phase-correction limits lifted for the first sync, as
/// VCL's Windows.pm configure_time_synchronization does; nothing when
/// there are no servers. The sync itself is [`resync_command`], retried
/// by the caller.
pub fn time(servers: &[String]) -> Vec<Action> {
    if servers.is_empty() {
        return Vec::new();
    }
    // The service must run before /config (net start exits 2 when it
    // already does: `&` goes on), then /config. Microsoft's w32tm
    // reference: /manualpeerlist takes a space-separated list, /update
    // makes the service read it.
    let mut cmd = argv(&[
        "cmd", "/c", "net", "start", "w32time", ">nul", "2>&1", "&", "w32tm", "/config",
    ]);
    cmd.push(format!("/manualpeerlist:\"{}\"", servers.join(" ")));
    cmd.extend(argv(&["/syncfromflags:manual", "/update"]));
    vec![
        // A clock days off (a dead CMOS battery, an image restored from
        // long ago) is beyond w32time's default limits: lifted here, put
        // back after the sync.
        (
            "time-limits",
            Act::Run(phase_limits("0xFFFFFFFF")),
            OnFail::Fatal,
        ),
        ("time-servers", Act::Run(cmd), OnFail::Fatal),
        // `start= auto` (sc.exe takes the value as the next word): the
        // clock keeps syncing after a reboot. Not needed for use.
        (
            "time-service-auto",
            Act::Run(argv(&["sc", "config", "w32time", "start=", "auto"])),
            OnFail::GoOn,
        ),
    ]
}

/// `w32tm /resync /rediscover`: the sync.
pub fn resync_command() -> Vec<String> {
    argv(&["w32tm", "/resync", "/rediscover"])
}

/// The command that runs one of the image's post-load scripts at `path`:
/// PowerShell for a `.ps1`, cmd.exe for the rest.
pub fn script_command(path: &str) -> Vec<String> {
    if path.to_ascii_lowercase().ends_with(".ps1") {
        argv(&[
            "powershell",
            "-NoProfile",
            "-NonInteractive",
            "-ExecutionPolicy",
            "Bypass",
            "-File",
            path,
        ])
    } else {
        argv(&["cmd", "/c", path])
    }
}

/// VCL's Windows.pm post_load: the image's own script.
pub const VCL_POST_LOAD: &str = r"%SystemRoot%\vcl_post_load.cmd";

/// reimage's folder of the image's own hooks.
pub const HOOK_DIR: &str = r"%SystemRoot%\reimage\post-load.d\";

/// The kinds of hook [`hook_command`] runs, as `dir` patterns.
const HOOK_KINDS: [&str; 5] = ["*.cmd", "*.bat", "*.exe", "*.ps1", "*.vbs"];

/// How the Windows families find and run the image's hooks: cmd.exe's
/// `if exist` and `dir /b` (every family ships them).
pub fn hook_shell() -> crate::os::hooks::HookShell {
    let mut dir = argv(&["cmd", "/c", "dir", "/b", "/a-d", "/on"]);
    dir.extend(HOOK_KINDS.iter().map(|k| format!("{HOOK_DIR}{k}")));
    crate::os::hooks::HookShell {
        vcl: argv(&[
            "cmd",
            "/c",
            "if",
            "exist",
            VCL_POST_LOAD,
            "echo",
            VCL_POST_LOAD,
        ]),
        dir,
        dir_prefix: HOOK_DIR,
        run: hook_command,
    }
}

/// `cmd /c set "K=V" && ... && RUN PATH`: the hook or script at `path`
/// with the environment `env`, run as [`script_command`] runs it (cscript
/// for a `.vbs`). A value cmd.exe would read (quotes, `%`, `^`, `&`, `|`,
/// `<`, `>`, `!`) cannot be passed.
pub fn hook_command(path: &str, env: &crate::os::hooks::Env) -> Result<Vec<String>, String> {
    let mut v = argv(&["cmd", "/c"]);
    for (k, val) in env {
        if val
            .chars()
            .any(|c| c.is_control() || "\"%^&|<>!".contains(c))
        {
            return Err(format!("{k} `{val}` holds a character cmd.exe reads"));
        }
        v.extend(argv(&["set", &format!("\"{k}={val}\""), "&&"]));
    }
    let mut run = if path.to_ascii_lowercase().ends_with(".vbs") {
        argv(&["cscript", "//nologo", path])
    } else {
        script_command(path)
    };
    // The path, last, quoted: a hook's name may hold spaces.
    if let Some(p) = run.last_mut() {
        *p = format!("\"{p}\"");
    }
    v.extend(run);
    Ok(v)
}

/// `cmd /c if exist "F" exit 1`: exits 1 when `file` exists.
pub fn exists_command(file: &str) -> Vec<String> {
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
pub fn del_command(file: &str) -> Vec<String> {
    let q = format!("\"{file}\"");
    argv(&["cmd", "/c", "if", "exist", &q, "del", "/f", "/q", &q])
}

/// The VBScript that sets `user`'s password from the file named by its
/// argument and deletes the file. Windows Script Host, ADSI and ADODB ship
/// with every Windows since 2000: no PowerShell needed. The password is
/// read as UTF-8 (as uploaded), up to the first line break.
pub fn password_script(user: &str) -> String {
    vbs(&fill(SET_PASSWORD_VBS, &[("user", &user.replace('"', ""))]))
}

/// The command that sets the Administrator password from an uploaded file
/// and deletes the file; the password itself never appears in a command.
/// Without PowerShell, `script` is the uploaded [`password_script`].
pub fn password_command(f: Windows, user: &str, file: &str, script: &str) -> Vec<String> {
    if toolset(f).powershell {
        let user = user.replace('\'', "''");
        ps(&fill(
            ps_line(SET_PASSWORD_PS1),
            &[("file", file), ("user", &user)],
        ))
    } else {
        argv(&["cscript", "//nologo", script, file])
    }
}

/// The step message of a finished WMI method call, or why it failed.
pub fn wmi_result(out: &Output) -> Result<String, String> {
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

/// What a failed action means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFail {
    /// Stop; a reload cannot help.
    Fatal,
    /// Ask for a reload: the failure may not happen on a fresh boot (a
    /// DHCP server that did not answer in time).
    Retry,
    /// Warn and go on: not needed for the computer to be used.
    GoOn,
}

impl OnFail {
    /// The outcome a failure stops with (Retry for one that goes on: the
    /// caller warns instead).
    pub fn outcome(self) -> fn(anyhow::Error) -> Outcome {
        match self {
            OnFail::Fatal => Outcome::Fatal,
            OnFail::Retry | OnFail::GoOn => Outcome::Retry,
        }
    }
}

/// The VBScript that joins the domain with the credentials in the file
/// named by its first argument (user on line 1, password on line 2) and
/// deletes the file first thing: Win32_ComputerSystem.JoinDomainOrWorkgroup
/// with NETSETUP_JOIN_DOMAIN | NETSETUP_ACCT_CREATE (1 + 2, as VCL's
/// Windows.pm ad_join_wmic). WMI and Windows Script Host ship with XP and
/// later; the password never reaches a command line. Exits with the
/// method's return value (2691: already joined to a domain, which the
/// caller answers with an unjoin and one more join).
pub fn domain_script() -> String {
    vbs(DOMAIN_VBS)
}

/// The VBScript that sets the DNS servers named by its arguments on every
/// adapter with IP enabled (Win32_NetworkAdapterConfiguration
/// .SetDNSServerSearchOrder, XP and later: no wmic or PowerShell needed).
pub fn dns_script() -> String {
    vbs(DNS_VBS)
}

/// The VBScript that installs the MAK product key in the file named by its
/// argument (deleted first thing) through
/// SoftwareLicensingService.InstallProductKey, what `slmgr /ipk` calls,
/// without the key on a command line.
pub fn mak_script() -> String {
    vbs(MAK_VBS)
}

/// The domain query of family `f`: `wmic computersystem get
/// domain,partofdomain /value` (VCL's Windows.pm ad_get_current_domain),
/// or on Windows 10 and later, where WMIC is an optional feature that is
/// off on current Windows 11, the same two properties through
/// Get-CimInstance, printed in wmic's form.
pub fn domain_query(f: Windows) -> Vec<String> {
    if toolset(f).powershell {
        ps(ps_line(DOMAIN_QUERY_PS1))
    } else {
        wmic(&["computersystem", "get", "domain,partofdomain", "/value"])
    }
}

/// The domain the computer is a member of, from [`domain_query`]'s
/// output; `None` in a workgroup.
pub fn joined_domain(stdout: &str) -> Option<String> {
    let text: String = stdout.chars().filter(|c| *c != '\0').collect();
    let val = |k: &str| {
        text.lines().find_map(|l| {
            let (a, b) = l.trim().split_once('=')?;
            a.trim()
                .eq_ignore_ascii_case(k)
                .then(|| b.trim().to_string())
        })
    };
    match val("PartOfDomain") {
        Some(p) if p.eq_ignore_ascii_case("TRUE") => val("Domain"),
        _ => None,
    }
}

/// Leaves the domain without credentials (FUnjoinOptions=0, as VCL's
/// Windows.pm ad_unjoin): the computer is about to be reloaded, only its
/// membership must not linger.
/// Windows 10 and later: Invoke-CimMethod, printing `ReturnValue = N` as
/// wmic does.
pub fn unjoin_command(f: Windows) -> Vec<String> {
    if toolset(f).powershell {
        return ps(ps_line(UNJOIN_PS1));
    }
    wmic(&[
        "computersystem",
        "where",
        r#"name="%COMPUTERNAME%""#,
        "call",
        "unjoindomainorworkgroup",
        "funjoinoptions=0",
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_id_from_wmic_value_output() {
        let out = "\r\r\n\r\r\nLastBootUpTime=20261125093012.500000+060\r\r\n\r\r\n\r\r\n";
        assert_eq!(
            boot_id_from(Windows::V5, out).as_deref(),
            Some("20261125093012.500000+060")
        );
        // UTF-16 read as bytes: NULs between the characters.
        let wide: String = "\u{feff}LastBootUpTime=2026\r\n"
            .chars()
            .flat_map(|c| [c, '\0'])
            .collect();
        assert_eq!(boot_id_from(Windows::V6, &wide).as_deref(), Some("2026"));
        assert_eq!(boot_id_from(Windows::V6, "LastBootUpTime=\r\n"), None);
        assert_eq!(
            boot_id_from(
                Windows::V6,
                "Please wait while WMIC is being installed.\r\n"
            ),
            None
        );
        assert_eq!(
            boot_id_from(Windows::V10, " 2026-11-25T09:30:12.5000000Z\r\n").as_deref(),
            Some("2026-11-25T09:30:12.5000000Z")
        );
    }

    fn settings() -> Settings {
        Settings {
            allow_from: vec!["10.1.0.0/16".into(), "192.0.2.5".into()],
            renew_dhcp: true,
            static_address: Some((
                "Public".into(),
                "192.0.2.7".into(),
                "255.255.255.0".into(),
                Some("192.0.2.1".into()),
            )),
            private: None,
        }
    }

    fn line(f: Windows, name: &str) -> String {
        match actions(f, &settings())
            .into_iter()
            .find(|(n, _, _)| *n == name)
        {
            Some((_, Act::Run(v), _)) => v.join(" "),
            other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn lockdown_is_by_port_and_protocol_from_the_allowed_sources() {
        let rdp = line(Windows::V10, "firewall-rdp");
        assert_eq!(
            rdp,
            r#"cmd /c netsh advfirewall firewall delete rule name=all dir=in protocol=TCP localport=3389 >nul 2>&1 & netsh advfirewall firewall add rule name="reimage RDP" dir=in action=allow enable=yes protocol=TCP localport=3389 remoteip=10.1.0.0/16,192.0.2.5"#
        );
        assert!(!rdp.to_lowercase().contains("group="), "{rdp}");
        let ping = line(Windows::V6, "firewall-ping");
        assert!(
            ping.contains("delete rule name=all dir=in protocol=icmpv4:8,any"),
            "{ping}"
        );
        assert!(
            ping.ends_with("protocol=icmpv4:8,any remoteip=10.1.0.0/16,192.0.2.5"),
            "{ping}"
        );
        assert_eq!(
            line(Windows::V5, "firewall-rdp"),
            "netsh firewall set service type=remotedesktop mode=enable scope=custom addresses=10.1.0.0/16,192.0.2.5"
        );
    }

    #[test]
    fn lockdown_on_the_private_side_by_local_address_or_xp_interface() {
        let mut s = settings();
        s.private = Some(Side {
            names: vec!["Ethernet 2".into()],
            addresses: vec!["10.0.0.5".into()],
        });
        let find = |f, name: &str| match actions(f, &s).into_iter().find(|(n, _, _)| *n == name) {
            Some((_, Act::Run(v), _)) => v.join(" "),
            other => panic!("{name}: {other:?}"),
        };
        assert!(
            find(Windows::V6, "firewall-rdp")
                .ends_with("localport=3389 remoteip=10.1.0.0/16,192.0.2.5 localip=10.0.0.5")
        );
        assert!(find(Windows::V10, "firewall-ping").ends_with("localip=10.0.0.5"));
        assert_eq!(
            find(Windows::V5, "firewall-rdp"),
            r#"cmd /c netsh firewall set service type=remotedesktop mode=disable >nul 2>&1 & netsh firewall set portopening protocol=TCP port=3389 name=reimage-RDP mode=ENABLE scope=CUSTOM addresses=10.1.0.0/16,192.0.2.5 interface="Ethernet 2""#
        );
        assert_eq!(
            find(Windows::V5, "firewall-ping"),
            r#"cmd /c netsh firewall set icmpsetting type=8 mode=disable profile=ALL >nul 2>&1 & netsh firewall set icmpsetting type=8 mode=enable interface="Ethernet 2""#
        );
        let Act::Run(w) = control_port_action(Windows::V5, 5985, &s.allow_from, s.private.as_ref())
        else {
            panic!()
        };
        assert_eq!(
            w.join(" "),
            r#"cmd /c netsh firewall delete portopening protocol=TCP port=5985 >nul 2>&1 & netsh firewall set portopening protocol=TCP port=5985 name=reimage-WinRM mode=ENABLE scope=CUSTOM addresses=10.1.0.0/16,192.0.2.5 interface="Ethernet 2""#
        );
        let Act::Run(w) = control_port_action(Windows::V6, 5985, &s.allow_from, None) else {
            panic!()
        };
        assert!(!w.join(" ").contains("localip"));
    }

    #[test]
    fn first_boot_command_lines() {
        let time = time(&["ntp1.example.edu".into(), "ntp2.example.edu".into()]);
        let names: Vec<&str> = time.iter().map(|(n, _, _)| *n).collect();
        assert_eq!(names, ["time-limits", "time-servers", "time-service-auto"]);
        let Act::Run(servers) = &time[1].1 else {
            panic!("{time:?}")
        };
        assert_eq!(
            servers.join(" "),
            r#"cmd /c net start w32time >nul 2>&1 & w32tm /config /manualpeerlist:"ntp1.example.edu ntp2.example.edu" /syncfromflags:manual /update"#
        );
        assert_eq!(
            phase_limits("0xFFFFFFFF").join(" "),
            r"cmd /c reg add HKLM\SYSTEM\CurrentControlSet\Services\W32Time\Config /v MaxPosPhaseCorrection /t REG_DWORD /d 0xFFFFFFFF /f && reg add HKLM\SYSTEM\CurrentControlSet\Services\W32Time\Config /v MaxNegPhaseCorrection /t REG_DWORD /d 0xFFFFFFFF /f"
        );
        assert_eq!(
            slmgr(&["/skms", "kms.example.edu:1688"]).join(" "),
            r"cmd /c cscript //nologo %SystemRoot%\System32\slmgr.vbs /skms kms.example.edu:1688"
        );
        assert_eq!(line(Windows::V6, "renew-dhcp"), "ipconfig /renew");
        assert_eq!(
            line(Windows::V6, "static-address"),
            r#"netsh interface ip set address name="Public" static 192.0.2.7 255.255.255.0 192.0.2.1 1"#
        );
        let sleep = line(Windows::V6, "disable-sleep");
        for s in POWER_SETTINGS {
            assert!(
                sleep.contains(&format!("powercfg /change {s} 0")),
                "{sleep}"
            );
        }
        assert!(matches!(
            actions(Windows::V5, &settings())
                .into_iter()
                .find(|(n, _, _)| *n == "disable-sleep"),
            Some((_, Act::XpPower, OnFail::GoOn))
        ));
        assert_eq!(
            power_command(Some("Home/Office Desk"))[2..6].join(" "),
            r#"powercfg /change "Home/Office Desk" /monitor-timeout-ac"#
        );
        let q = "Field Description          Value\r\n-----------------          -----\r\nName                       Home/Office Desk\r\nNumerical ID               0\r\n";
        assert_eq!(xp_scheme_name(q).as_deref(), Some("Home/Office Desk"));
        assert_eq!(xp_scheme_name("Numerical ID 0\r\n"), None);
    }

    #[test]
    fn setup_state_is_read_from_reg_output() {
        let done = "\r\nHKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Setup\\State\r\n    ImageState    REG_SZ    IMAGE_STATE_COMPLETE\r\n\r\n";
        assert!(setup_state(Windows::V6, done).is_ok());
        let running = done.replace("IMAGE_STATE_COMPLETE", "IMAGE_STATE_UNDEPLOYABLE");
        assert_eq!(
            setup_state(Windows::V10, &running).unwrap_err(),
            "ImageState IMAGE_STATE_UNDEPLOYABLE"
        );
        assert!(setup_state(Windows::V6, "ERROR: not found").is_err());
        let xp = "\r\nHKEY_LOCAL_MACHINE\\SYSTEM\\Setup\r\n    SetupType    REG_DWORD    0x0\r\n    SystemSetupInProgress    REG_DWORD    0x1\r\n    MiniSetupInProgress    REG_DWORD    0x1\r\n";
        assert!(setup_state(Windows::V5, xp).is_err());
        let xp_done = xp.replace("0x1", "0x0");
        assert!(setup_state(Windows::V5, &xp_done).is_ok());
        // MiniSetupInProgress gone once mini-setup is over: done.
        let xp_gone = "    SystemSetupInProgress    REG_DWORD    0x0\r\n";
        assert!(setup_state(Windows::V5, xp_gone).is_ok());
        assert!(setup_state(Windows::V5, "").is_err());
    }

    #[test]
    fn domain_membership_from_wmic() {
        let joined = "\r\r\nDomain=ad.example.edu\r\r\nPartOfDomain=TRUE\r\r\n";
        assert_eq!(joined_domain(joined).as_deref(), Some("ad.example.edu"));
        assert_eq!(
            joined_domain("Domain=WORKGROUP\r\nPartOfDomain=FALSE\r\n"),
            None
        );
        let s = domain_script();
        assert!(s.contains("JoinDomainOrWorkgroup(WScript.Arguments(1), pw, user, ou, 3)"));
        assert!(s.contains("fso.DeleteFile WScript.Arguments(0), True"));
    }

    #[test]
    fn families_use_what_they_ship() {
        for f in [Windows::V5, Windows::V6] {
            let all: Vec<String> = actions(f, &settings())
                .into_iter()
                .flat_map(|(_, act, _)| match act {
                    Act::Run(v) | Act::WmiCall(v) => v,
                    _ => vec![],
                })
                .chain(match rename_action(f, "lab-pc-07") {
                    Act::WmiCall(v) => v,
                    other => panic!("{other:?}"),
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
        assert_eq!(boot_id_command(Windows::V10)[0], "powershell");
        assert!(actions(Windows::V5, &settings()).iter().any(
            |(n, a, _)| *n == "firewall-rdp" && matches!(a, Act::Run(v) if v[1] == "firewall")
        ));
        assert!(
            actions(Windows::V5, &settings()).iter().any(
                |(_, a, _)| matches!(a, Act::RemoveFiles(f) if f.contains(&r"C:\sysprep\*.txt"))
            )
        );
    }

    #[test]
    fn rename_goes_through_wmic_with_a_guard() {
        let act = &rename_action(Windows::V5, "lab-pc-07");
        let Act::WmiCall(v) = act else {
            panic!("{act:?}")
        };
        assert_eq!(
            v.join(" "),
            r#"cmd /c if /i not "%COMPUTERNAME%"=="lab-pc-07" wmic computersystem where name="%COMPUTERNAME%" call rename name="lab-pc-07" <nul"#
        );
        assert!(matches!(rename_action(Windows::V6, "a&b"), Act::Refuse(_)));
    }

    #[test]
    fn wmi_results() {
        let ok = Output {
            status: 0,
            stdout: "Executing (...)->rename()\r\nMethod execution successful.\r\nOut Parameters:\r\ninstance of __PARAMETERS\r\n{\r\n\tReturnValue = 0;\r\n};\r\n".into(),
            stderr: String::new(),
            elapsed: Duration::ZERO,
        };
        assert!(wmi_result(&ok).is_ok());
        let bad = Output {
            stdout: ok.stdout.replace("= 0;", "= 1210;"),
            ..ok.clone()
        };
        assert!(wmi_result(&bad).unwrap_err().contains("1210"));
        let none = Output {
            stdout: String::new(),
            stderr: "No Instance(s) Available.\r\n".into(),
            ..ok.clone()
        };
        assert!(wmi_result(&none).is_err());
        let skipped = Output {
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
            password_command(Windows::V5, "Administrator", "C:\\p.txt", "C:\\s.vbs"),
            argv(&["cscript", "//nologo", "C:\\s.vbs", "C:\\p.txt"])
        );
    }

    #[test]
    fn powershell_files_pass_through_cmd_exe_as_one_line() {
        for (name, file) in [
            ("boot-id.ps1", BOOT_ID_PS1),
            ("rename.ps1", RENAME_PS1),
            ("set-password.ps1", SET_PASSWORD_PS1),
            ("domain-query.ps1", DOMAIN_QUERY_PS1),
            ("unjoin.ps1", UNJOIN_PS1),
        ] {
            let line = ps_line(file);
            assert!(!line.contains(['\r', '\n']), "{name}: more than one line");
            assert!(
                !line.contains(['"', '|', '&', '<', '>', '%']),
                "{name}: holds a character cmd.exe reads: {line}"
            );
            assert!(!line.contains("  "), "{name}: a run of spaces: {line}");
        }
    }

    #[test]
    fn hooks_get_the_environment_through_cmd_set() {
        let env = vec![
            ("REIMAGE_COMPUTER", "lab-pc-07".to_string()),
            ("REIMAGE_ATTEMPT", "2".to_string()),
        ];
        assert_eq!(
            hook_command(r"%SystemRoot%\vcl_post_load.cmd", &env)
                .unwrap()
                .join(" "),
            r#"cmd /c set "REIMAGE_COMPUTER=lab-pc-07" && set "REIMAGE_ATTEMPT=2" && cmd /c "%SystemRoot%\vcl_post_load.cmd""#
        );
        let ps1 = hook_command(r"C:\x\10 a.ps1", &env).unwrap().join(" ");
        assert!(ps1.ends_with(r#"-File "C:\x\10 a.ps1""#), "{ps1}");
        let bad = vec![("REIMAGE_IMAGE", "a&b".to_string())];
        assert!(hook_command("x.cmd", &bad).is_err());
    }

    #[test]
    fn fill_replaces_its_keys_once_and_leaves_the_rest() {
        assert_eq!(
            fill("@a@ and @b@ @c@ a@b", &[("a", "@b@"), ("b", "x")]),
            "@b@ and x @c@ a@b"
        );
        // Every placeholder of the scripts is filled.
        for s in [
            password_script("Administrator"),
            domain_script(),
            dns_script(),
            mak_script(),
        ]
        .iter()
        .chain(&rename_action(Windows::V10, "pc").into_iter_words())
        .chain(&password_command(Windows::V10, "Administrator", "F", "S"))
        {
            assert!(!s.contains('@'), "{s}");
        }
    }

    impl Act {
        fn into_iter_words(self) -> Vec<String> {
            match self {
                Act::Run(v) | Act::WmiCall(v) => v,
                other => panic!("{other:?}"),
            }
        }
    }
}
