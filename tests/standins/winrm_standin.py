#!/usr/bin/env python3
"""A STAND-IN for a Windows WinRM listener, for tests only.

No Windows runs here, so this stand-in answers the way a Windows 6.1
(2008 R2 / 7) WinRM 2.0 listener does, built from the documented formats:
MS-WSMV (Web Services Management Protocol Extensions for Windows Vista),
DMTF DSP0226 WS-Management 1.1 (Identify, faults) and the Windows Remote
Shell resource http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd
(Create / Command / Receive / Signal / Delete). It is not Windows: commands
are simulated, deterministically, by a tiny interpreter (see `simulate`).
tests/standins/check_winrm_standin_with_pywinrm.py proves that a real WinRM
client (pywinrm) accepts it.

Usage:
  winrm_standin.py --port N [--host 127.0.0.1] [--user U --password-file F]
                   [--tls-cert C --tls-key K] [--no-powershell | --powershell-2]
                   [--stock | --auth basic,negotiate --no-unencrypted]

--stock: the WinRM service as Windows ships it (Auth/Basic false,
AllowUnencrypted false): Negotiate only, and over HTTP only encrypted
messages. Without it the stand-in takes Basic and Negotiate, and messages
in clear too (a site that enabled both). Authentication and message
encryption live in winrm_auth.py (NTLM/SPNEGO through pyspnego).

--no-powershell: Windows XP / Server 2003 as installed: `powershell` is not
recognized, there is no `netsh advfirewall`, and powercfg takes XP's
scheme-name form (`/change "NAME" /standby-timeout-ac 0`, the name from
`powercfg /query`). --powershell-2: stock Windows 7 /
2008 R2: PowerShell 2, which has no Get-CimInstance, no Rename-Computer and
no `Get-Content -Raw`.

The Windows behaviour the first-boot tests need follows, besides MS-WSMV:
Apache VCL's managementnode/lib/VCL/Module/OS/Windows.pm, Windows/
Version_5.pm and Version_6.pm (the commands VCL runs and the outputs it
parses: netsh advfirewall delete/add rule, netsh firewall set ... scope,
powercfg, w32tm, slmgr, wmic computersystem domain/unjoin, shutdown /r),
and Microsoft's documentation: "Windows Setup States" (ImageState values),
KB Q185739 (SystemSetupInProgress), the netsh advfirewall, w32tm, Slmgr.vbs
and powercfg command references, and Win32_ComputerSystem's
JoinDomainOrWorkgroup / UnjoinDomainOrWorkgroup return codes.

State that moves (for the wait tests). It moves on events, never on a
clock: on what the client does (its reads of the setup state, its requests,
its connections) or on what the test does (a file, a signal), so a slow
machine sees the same sequence as a fast one and no test depends on time:
  --sysprep-polls N    Sysprep's passes end after the client has read the
                       setup state N times (a `reg query` of the State key,
                       XP: of HKLM\SYSTEM\Setup): ImageState reads
                       IMAGE_STATE_SPECIALIZE_RESEAL_TO_OOBE for the first
                       half of them, then IMAGE_STATE_UNDEPLOYABLE, and
                       IMAGE_STATE_COMPLETE from read N+1 on (XP:
                       SystemSetupInProgress and MiniSetupInProgress 1, then
                       0); `never`: it stays in specialize
  --sysprep-reboot-at-poll K   Sysprep's reboot: the machine reboots once the
                       client is done with the shell of its K-th read
  --auth-fails N       the first N requests that need a login get 401, as
                       while Sysprep keeps Administrator disabled
  --auth-fails-until F every login gets 401 until file F exists (a test
                       creates it once it has seen the 401s)
  --down-connects N    a reboot keeps the listener down (every connection is
                       reset at once) for the client's next N connections
                       (default 2), then the machine is up on a new boot
  SIGUSR1              a reboot now (a test's load command); the machine
                       comes up with the certificate --tls-cert names then
  --locale de-DE       Windows' own firewall rules and groups have German
                       names (the localized-group trap)

Accounts and passwords across calls and runs (a lab lives across runs):
  - A password set (reimage's set-password VBScript or PowerShell, IADsUser
    SetPassword + SetInfo) is what the next login needs: the old one gets
    401. Microsoft, "IADsUser::SetPassword method" (Win32 ADSI docs) sets
    the password in the account database at once; the grace period in which
    NTLM still takes the previous password ("New setting modifies NTLM
    network authentication behavior", KB906305, OldPasswordAllowedPeriod)
    is for domain accounts on a domain controller, not for local accounts,
    so a local account has none here. A shell opened before the change
    keeps its logon (its token is made once, at logon).
  - The state stays in the process across reimage runs; SIGUSR2 is a
    reload: the image is written anew (accounts, name, domain membership
    and the token-filter policy back to the image's), then the machine
    boots (SIGUSR1 is a reboot only: what was set stays).
  --local-admin NAME --local-admin-password-file F: a second local account,
    a member of Administrators but not the built-in Administrator (RID
    500). UAC remote restrictions ("User Account Control and remote
    restrictions", Microsoft Learn, troubleshoot/windows-server/windows-
    security/user-account-control-and-remote-restriction; KB951016): a
    network logon of such an account gets a filtered token (Administrators
    deny-only, no elevation) unless HKLM\SOFTWARE\Microsoft\Windows\
    CurrentVersion\Policies\System LocalAccountTokenFilterPolicy = 1
    (REG_DWORD); the built-in Administrator is not filtered (its Admin
    Approval Mode, FilterAdministratorToken, is off by default: "User
    Account Control: Admin Approval Mode for the Built-in Administrator
    account", Microsoft Learn). Stand-in assumption: WinRM lets the
    filtered logon in (a RootSDDL that grants the account), and what needs
    an administrator fails as Windows says it: `netsh advfirewall` "The
    requested operation requires elevation (Run as administrator).", `reg
    add HKLM\...` and a password change "Access is denied.".
  --min-password-length N: the image's password policy refuses a shorter
    password; the account keeps the one it had (see `meets_policy`).
  --image-token-filter-policy 1: the image has LocalAccountTokenFilterPolicy
    = 1 (what Enable-PSRemoting sets on a workgroup computer).

Serves POST /wsman. Prints "winrm-standin listening on HOST:PORT" on stdout
(flushed) once it accepts connections. --state-file: the simulated Windows
state as JSON after every change (with every command line it ran, and how
the state was read and changed: boot_time_reads by tool, renamed_via,
password_set_via, and not_recognized, every program or PowerShell term this
Windows does not have that a client asked for);
--wire-log: every request body as the client wrote it (unsealed).

Behaviour:
- Identify (wsmid:Identify body): answered without authentication, as
  Windows does for an unauthenticated Identify (WSMANIDENTIFY header).
- Everything else needs a login: HTTP Basic or Negotiate (NTLM, SPNEGO),
  as the service settings allow; 401 otherwise, offering what is on.
- Shell commands simulated (a leading `cmd /c` is stripped first):
    echo TEXT            stdout "TEXT\\r\\n"          (also `echo TEXT>>FILE`, `>FILE`)
    type nul > FILE      create/truncate FILE (in memory)
    findstr "^" > FILE   copy stdin (Send action, until End="true") to FILE
    type FILE            print FILE
    del [/q] FILE        delete FILE
    certutil -f -decode IN OUT   base64-decode IN into OUT (like certutil)
    if [/i] [not] exist F CMD / if [/i] [not] "A"=="B" CMD
    wmic os get lastbootuptime /value      `LastBootUpTime=` + the boot time
                         (CIM datetime, UTC); wmic waits for its stdin to
                         close, as on XP: give it `<nul`
    wmic computersystem where name="N" call rename name="NEW"
                         Win32_ComputerSystem.Rename: NEW pending until the
                         next boot; `ReturnValue = 0;` (1210: bad name);
                         "No Instance(s) Available." when N is not the name
    cscript //nologo F.vbs ARGS   runs an uploaded VBScript: the one reimage
                         uploads to set a password (recognized by content:
                         WinNT ADSI GetObject, SetPassword, SetInfo,
                         DeleteFile of WScript.Arguments(0)) is applied;
                         others exit with their first `WScript.Quit N`
    reg query KEY [/v NAME]   values, incl. the setup state above
    netsh advfirewall firewall delete rule name=all dir=in protocol=P
                         [localport=N] / add rule name=.. dir=in action=allow
                         protocol=P [localport=N] remoteip=LIST [localip=LIST]:
                         the rule list in the state file; `set rule
                         group="G"` by the (localized) group name
    netsh firewall set service type=remotedesktop mode=enable|disable
                         [scope=custom addresses=LIST] / set icmpsetting
                         type=8 mode=M [profile=ALL | interface="IF"] / set
                         portopening ... [interface="IF"] / delete
                         portopening protocol=TCP port=N [interface="IF"]
                         (XP: the settings for every interface, or one
                         interface's own, after Microsoft's "Deploying
                         Windows Firewall Settings for Microsoft Windows XP
                         with Service Pack 2" and the netsh firewall
                         context reference; VCL's Windows.pm
                         firewall_enable_ping / _ssh_private use them so)
  What the firewall lets in is judged, not only recorded: the state file's
  `inbound` says, per interface, which TCP ports and echo requests are open
  and from which remote scopes, from the enabled inbound allow rules whose
  `localip` (Microsoft's netsh advfirewall firewall reference: the local
  addresses a rule applies to) takes the interface's address as it is now
  (a rule bound to an address no longer applies when the lease changes),
  or on XP from the settings for every interface plus the interface's own.
    netsh interface ip set address name="IF" static ADDR MASK [GW 1]
    ipconfig /renew      counted
  The interface table (issue 25), after Microsoft's getmac, netsh
  interface ip / ipv4 and route command references and the commands VCL's
  Windows.pm and Version_6.pm run on every load: each interface of
  --interfaces (NAME[=MAC]) starts on DHCP with a lease 198.51.(100+i).23/24
  and a default route through 198.51.(100+i).1; the table and the route
  list are in the state file (network.interfaces, network.routes), and
  persist across reboots as Windows keeps them:
    getmac /v /fo csv /nh    "NAME","ADAPTER","AA-BB-CC-DD-EE-FF","TRANSPORT"
    netsh interface ipv4 set interface interface="IF" ignoredefaultroutes=enabled
                         [store=persistent]: the interface's default routes
                         from DHCP go, and no renew adds one again
    netsh interface ip set address name="IF" static ADDR MASK [GW 1] | dhcp
                         ("DHCP is already enabled on this interface.", exit 1)
    netsh interface ip set dns name="IF" static ADDR | dhcp;
    netsh interface ip add dns name="IF" ADDR index=N
    netsh interface ip show address [name="IF"]   Vista's layout (IP Address,
                         Subnet Prefix ... (mask M), Default Gateway); without
                         a name every interface's block
    route delete 0.0.0.0 mask 0.0.0.0    every default route goes
    route -p add 0.0.0.0 mask 0.0.0.0 GW metric N   a persistent default route
                         through the interface whose subnet holds GW
    ipconfig /renew "IF"     that interface's lease (and its default route)
    powercfg /change SETTING 0, /hibernate off (XP: /query, scheme-name form)
    net start w32time    starts the time service (exit 2 when running)
    w32tm /config /manualpeerlist:"A B" /syncfromflags:manual /update,
    w32tm /resync [/rediscover]   fails when every peer ends in .invalid,
                         for the first --resync-fails tries, and when the
                         clock (--clock-offset) is further off than
                         MaxPos/MaxNegPhaseCorrection allow (reg add under
                         HKLM\SYSTEM\...\W32Time\Config; default 54000 s,
                         Microsoft's "Windows Time service tools and
                         settings"): "the required time change was too big"
    sc config w32time start= auto    the time service's start type
    cscript //nologo %SystemRoot%\System32\slmgr.vbs /dli | /ipk KEY |
                         /skms HOST | /ato (Microsoft's "Slmgr.vbs options
                         for obtaining volume activation information" and
                         "Troubleshoot KMS activation error codes"): the
                         image's key is --product-key (none: /dli and /ato
                         print "Error: product not found." and exit 0);
                         /ipk installs a KMS client setup key; /ato against
                         a KMS host ending in .invalid fails 0xC004F074 (no
                         KMS could be contacted), against one whose count
                         (--kms-count) is below 25, the client threshold,
                         0xC004F038; a MAK (reimage's VBScript) activates
    cscript //nologo mak.vbs FILE / domain.vbs FILE DOMAIN [OU]   reimage's
                         uploaded VBScripts, recognized by what they call
                         (InstallProductKey; JoinDomainOrWorkgroup): the file
                         is read and deleted; the join checks the domain and
                         credentials (--ad-domain, --ad-credentials-file),
                         1355 / 1326 otherwise, and takes effect at the next
                         boot
    cscript //nologo grant-user.vbs USER FILE 0|1 / revoke-user.vbs USER [0|1]
                         reimage's account scripts (`grant`, `revoke`):
                         accounts, groups by SID, logoffs, SIDs and
                         profile folders (made at a logon, removed by
                         revoke: Win32_UserProfile, or on XP the
                         ProfileList key), in winrm_accounts.py (with the
                         documents it follows)
    wmic computersystem get domain,partofdomain /value; ... call
                         unjoindomainorworkgroup funjoinoptions=0; on
                         --no-wmic (current Windows 11: WMIC is an optional
                         feature, off by default) wmic is not recognized,
                         and the same through PowerShell: (Get-CimInstance
                         Win32_ComputerSystem).Domain / .PartOfDomain,
                         Invoke-CimMethod ... UnjoinDomainOrWorkgroup
                         -Arguments @{FUnjoinOptions=0}
                         The membership (a domain: --joined-domain at
                         start) survives reboots; a join or unjoin takes
                         effect at the next boot. JoinDomainOrWorkgroup
                         answers 2691 (NERR_SetupAlreadyJoined) while the
                         computer is a member of any domain, 1398
                         (ERROR_TIME_SKEW) when the clock is more than 5
                         minutes off (Kerberos' default tolerance,
                         "Maximum tolerance for computer clock
                         synchronization")
    cscript //nologo dns.vbs SERVER...   reimage's VBScript
                         (SetDNSServerSearchOrder): the DNS servers
    set "K=V"            the variable for the rest of the line (scripts run
                         after it record their REIMAGE_* variables)
    dir /b /a-d /on PATTERN...   bare file names, by name
    --pending-domain D   a join made before the last boot, pending
    --hooks P,...        the image carries its own post-load hooks at these
                         paths (VCL's %SystemRoot%\vcl_post_load.cmd,
                         reimage's %SystemRoot%\reimage\post-load.d\*)
    shutdown /r /t 0 /f  the listener goes down once the client is done with
                         the shell that ran it (its Delete, or any other
                         request first), and comes back on a new boot (see
                         --down-connects): the pending name and domain apply
                         then
    hostname             the machine name (--computer-name, default WIN-STANDIN)
    set-name NAME        stand-in only: change the machine name
    exit N               exit code N
    sleep SECONDS        stand-in only: finishes after SECONDS; a Receive
                         that waits longer than its OperationTimeout gets the
                         w:TimedOut fault (WSManFault Code 2150858793), like
                         Windows, and the client must Receive again
    anything else        exit 1, stderr "'X' is not recognized as an internal
                         or external command, ..."
- Unknown actions, shells or commands: SOAP faults (HTTP 500), as Windows.
"""

import argparse
import base64
import datetime
import fnmatch
import ipaddress
import json
import os
import re
import signal
import socket
import ssl
import struct
import sys
import threading
import time
import traceback
import uuid
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import winrm_accounts
import winrm_auth

NS_S = "http://www.w3.org/2003/05/soap-envelope"
NS_A = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
NS_W = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"
NS_RSP = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
NS_WSMID = "http://schemas.dmtf.org/wbem/wsman/identity/1/wsmanidentity.xsd"
NS_F = "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault"
NS_X = "http://schemas.xmlsoap.org/ws/2004/09/transfer"

RESOURCE_CMD = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"
A_CREATE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create"
A_DELETE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete"
A_COMMAND = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command"
A_RECEIVE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive"
A_SIGNAL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal"
A_SEND = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Send"
STATE_DONE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done"
STATE_RUNNING = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Running"
CONTENT_TYPE = "application/soap+xml;charset=UTF-8"
TIMED_OUT_CODE = 2150858793


def esc(s):
    return (s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def local(tag):
    return tag.rsplit("}", 1)[-1]


def find(root, name):
    """First element whose local name is `name` (any namespace)."""
    for el in root.iter():
        if local(el.tag) == name:
            return el
    return None


def parse_duration(text, default):
    """xs:duration as WS-Man uses it: PT60S, PT20.500S."""
    m = re.fullmatch(r"\s*PT(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?\s*", text or "")
    if not m or (m.group(1) is None and m.group(2) is None):
        return default
    return int(m.group(1) or 0) * 60 + float(m.group(2) or 0)


def envelope(action, relates_to, body):
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<s:Envelope xml:lang="en-US" xmlns:s="{NS_S}" xmlns:a="{NS_A}" '
        f'xmlns:x="{NS_X}" xmlns:w="{NS_W}" xmlns:rsp="{NS_RSP}" '
        'xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd">'
        "<s:Header>"
        f"<a:Action>{esc(action)}</a:Action>"
        f"<a:MessageID>uuid:{uuid.uuid4()}</a:MessageID>"
        "<a:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To>"
        f"<a:RelatesTo>{esc(relates_to)}</a:RelatesTo>"
        "</s:Header>"
        f"<s:Body>{body}</s:Body></s:Envelope>"
    )


def fault(relates_to, code, subcode, reason, wsman_code):
    body = (
        "<s:Fault><s:Code>"
        f"<s:Value>s:{code}</s:Value>"
        f"<s:Subcode><s:Value>{subcode}</s:Value></s:Subcode>"
        "</s:Code>"
        f'<s:Reason><s:Text xml:lang="en-US">{esc(reason)}</s:Text></s:Reason>'
        "<s:Detail>"
        f'<f:WSManFault xmlns:f="{NS_F}" Code="{wsman_code}" Machine="127.0.0.1">'
        f"<f:Message>{esc(reason)}</f:Message></f:WSManFault>"
        "</s:Detail></s:Fault>"
    )
    return envelope("http://schemas.dmtf.org/wbem/wsman/1/wsman/fault", relates_to, body)


# Where Windows Setup and Sysprep keep answer files and the oobeSystem
# pass's copies (Microsoft, "Windows Setup Automation Overview"; VCL's
# Version_6.pm sanitize_files cleans System32\sysprep and Panther).
ANSWER_FILES = [
    r"C:\Windows\Panther\unattend.xml",
    r"C:\Windows\Panther\unattend-original.xml",
    r"C:\Windows\Panther\Unattend\unattend.xml",
    r"C:\Windows\Panther\UnattendGC\setupact.log",
    r"C:\Windows\System32\sysprep\unattend.xml",
    r"C:\Windows\System32\sysprep\sysprep.inf",
    r"C:\Windows\System32\sysprep\Panther\unattend.xml",
    r"C:\sysprep\sysprep.inf",
]
# Files that hold no password and must stay.
KEEP_FILES = [r"C:\Windows\System32\sysprep\sysprep.exe", r"C:\Windows\Panther\setupact.log"]
# Windows XP / 2003: Sysprep's and unattended setup's answer files.
ANSWER_FILES_XP = [r"C:\sysprep\sysprep.inf", r"C:\sysprep\unattend.txt"]
RDP_KEY = r"HKLM\SYSTEM\CurrentControlSet\Control\Terminal Server"
# Windows' setup state (Microsoft, "Windows Setup States"): ImageState under
# this key, a REG_SZ, IMAGE_STATE_COMPLETE once specialize and oobeSystem
# are done. XP/2003 (KB Q185739 and VCL's Version_5.pm era): HKLM\SYSTEM\Setup
# SystemSetupInProgress / MiniSetupInProgress, REG_DWORD 1 while setup runs.
STATE_KEY = r"HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Setup\State"
SETUP_KEY = r"HKLM\SYSTEM\Setup"
W32TIME_KEY = r"HKLM\SYSTEM\CurrentControlSet\Services\W32Time\Config"
VERSION_KEY = r"HKLM\SOFTWARE\Microsoft\Windows NT\CurrentVersion"
CWD = r"C:\Users\Administrator"
NOT_RECOGNIZED = ("'{0}' is not recognized as an internal or external command,\r\n"
                  "operable program or batch file.\r\n")
POWERCFG_SETTINGS = {f"{k}-timeout-{p}" for k in ("monitor", "disk", "standby", "hibernate")
                     for p in ("ac", "dc")}


def net_time(t):
    """A UTC time as .NET's DateTime.ToString('o') prints it."""
    dt = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond:06d}0Z"


def cim_time(t):
    """A UTC time as WMI's CIM_DATETIME (what wmic prints): yyyymmddHHMMSS.ffffff+UUU,
    UUU the offset from UTC in minutes."""
    dt = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
    return dt.strftime("%Y%m%d%H%M%S.") + f"{dt.microsecond:06d}+000"


# The VBScript reimage uploads to set a password without PowerShell:
# recognized by what it does, not by its exact text.
PASSWORD_SCRIPT = [
    re.compile(r'(?i)GetObject\(\s*"WinNT://\./([^",/]+),user"\s*\)'),
    re.compile(r"(?i)\.SetPassword\b"),
    re.compile(r"(?i)\.SetInfo\b"),
    re.compile(r"(?i)\.DeleteFile\b"),
    re.compile(r"(?i)WScript\.Arguments\(0\)"),
]


# The VBScripts reimage uploads to join a domain and to install a MAK:
# recognized by what they call, not by their exact text.
DOMAIN_SCRIPT = [re.compile(r"(?i)\.JoinDomainOrWorkgroup\("), re.compile(r"(?i)WScript\.Arguments\(0\)"),
                 re.compile(r"(?i)\.DeleteFile\b")]
MAK_SCRIPT = [re.compile(r"(?i)\.InstallProductKey\b"), re.compile(r"(?i)WScript\.Arguments\(0\)"),
              re.compile(r"(?i)\.DeleteFile\b")]
DNS_SCRIPT = [re.compile(r"(?i)\.SetDNSServerSearchOrder\("), re.compile(r"(?i)IPEnabled")]
SLMGR = r"C:\Windows\System32\slmgr.vbs"


def norm(path):
    """A Windows path as a key: no quotes, backslashes, lower case, absolute
    (relative paths are under the shell's working directory)."""
    p = path.strip().strip('"').replace("/", "\\")
    if not re.match(r"(?i)^[a-z]:", p):
        p = CWD + "\\" + p
    p = p.rstrip("\\")
    return p.lower()


def parent(key):
    return key.rsplit("\\", 1)[0] if "\\" in key else key


class Result:
    """What one command did: output, exit code, and for a command that
    reads stdin, `on_stdin(data) -> (stdout, stderr, code)` run once the
    client closes stdin; `secs`: how long it runs."""

    def __init__(self, out=b"", err=b"", code=0, secs=0.0, on_stdin=None):
        self.out, self.err, self.code, self.secs, self.on_stdin = out, err, code, secs, on_stdin


def fail(msg, code=1):
    return Result(b"", msg.encode(), code)


class Machine:
    """The simulated computer: name, boot time, accounts, registry, firewall,
    power settings, files and shells. Every change is dumped to the state
    file (JSON) so tests can assert on it."""

    def __init__(self, cfg):
        self.lock = threading.RLock()
        self.cfg = cfg
        self.up = False
        self.boots = 0
        self.boot_time = None
        self.name = cfg.computer_name
        self.pending_name = None
        self.accounts = image_accounts(cfg)
        self.reloads = 0
        self.denied = []  # command lines refused to a filtered token
        self.registry = {RDP_KEY.lower(): {"fDenyTSConnections": ("REG_DWORD", "1")},
                         POLICIES_SYSTEM.lower(): image_policies(cfg)}
        self.setup_reads = 0  # reads of the setup state (--sysprep-polls)
        self.auth_failures = 0  # 401s given for --auth-fails
        self.refresh_setup()
        self.legacy_firewall = {"remotedesktop": False, "icmp8": False, "remotedesktop_scope": None}
        self.powercfg = {s: 30 for s in sorted(POWERCFG_SETTINGS)}
        self.powercfg["hibernate"] = "on"
        self.files = {}  # norm(path) -> bytes
        self.display = {}  # norm(path) -> path as first written
        self.dirs = set()
        for d in (r"C:\Windows\Temp", r"C:\Windows\System32", CWD):
            self.mkdirs(norm(d))
        for f in cfg.answer_files:
            self.mkdirs(parent(norm(f)))
            self.write(f, b"<unattend><!-- AdministratorPassword: image-secret --></unattend>\r\n")
        for f in KEEP_FILES + [SLMGR]:
            self.mkdirs(parent(norm(f)))
            self.write(f, b"MZ")
        # netsh advfirewall rules: Windows' own, disabled, named and grouped
        # in the install's language (--locale de: German names).
        de = cfg.locale.lower().startswith("de")
        rdp_group = "Remotedesktop" if de else "Remote Desktop"
        self.rules = [
            {"name": f"{rdp_group} - Benutzermodus (TCP eingehend)" if de
             else "Remote Desktop - User Mode (TCP-In)", "group": rdp_group, "dir": "in",
             "protocol": "tcp", "localport": "3389", "remoteip": "any", "enable": "no", "action": "allow"},
            {"name": "Datei- und Druckerfreigabe (Echoanforderung - ICMPv4 eingehend)" if de
             else "File and Printer Sharing (Echo Request - ICMPv4-In)",
             "group": "Datei- und Druckerfreigabe" if de else "File and Printer Sharing", "dir": "in",
             "protocol": "icmpv4:8,any", "localport": "any", "remoteip": "any", "enable": "no",
             "action": "allow"},
        ]
        self.w32time = {"running": False, "peers": None, "synced": 0, "resyncs": 0, "start": "demand",
                        "offset": cfg.clock_offset, "refused_too_big": 0}
        self.activation = {"kms": None, "key_installed": False, "activated": False, "ato_runs": 0,
                           "channel": {"none": None, "retail": "RETAIL", "kmsclient": "VOLUME_KMSCLIENT"}
                           [cfg.product_key], "gvlk": None, "errors": []}
        self.registry[VERSION_KEY.lower()] = {"EditionID": ("REG_SZ", cfg.edition),
                                              "CurrentBuildNumber": ("REG_SZ", str(cfg.build))}
        self.domain = cfg.joined_domain
        self.pending_domain = None  # a join or unjoin the next boot applies
        self.domain_unjoins = 0
        self.domain_joins = []  # (domain, user, ou) as the join method got them
        self.network = {"dhcp_renewed": 0, "static": None, "dns": None,
                        "interfaces": [new_nic(i, n, mac) for i, (n, mac) in enumerate(cfg.interfaces)],
                        "routes": []}
        for n in self.network["interfaces"]:
            nic_lease(self.network, n)
        self.power_scheme = "Home/Office Desk"
        self.scripts_run = []
        self.script_env = []  # {path, REIMAGE_*} of every script run
        for f in cfg.hooks:
            self.mkdirs(parent(norm(f)))
            self.write(f, b"@echo off\r\necho hook %REIMAGE_COMPUTER%\r\n")
        self.commands = []
        self.reboots_requested = 0
        # How the state was read and changed, for tests that check the
        # effect rather than the command line: the tool that read the boot
        # time, the way the computer was renamed and the password set, and
        # every program or PowerShell term this Windows did not recognize.
        self.boot_time_reads = {"wmic": 0, "cim": 0}
        self.renamed_via = None
        self.password_set_via = None
        self.not_recognized = []
        self.current_shell = None  # the shell whose command runs now
        self.reboot_shell = None  # a reboot waits for the client to leave this shell
        self.shells = {}  # shell id -> {command id -> result dict}
        self.shell_logons = {}  # shell id -> (user, password) it was opened with

    def auth_disabled(self):
        """--auth-fails N: the first N logins are rejected (401), as while
        Sysprep keeps Administrator disabled; --auth-fails-until F: every
        login until file F exists."""
        if self.cfg.auth_fails_until and not os.path.exists(self.cfg.auth_fails_until):
            return True
        if self.auth_failures < self.cfg.auth_fails:
            self.auth_failures += 1
            return True
        return False

    def reboot_after_this_shell(self):
        """A reboot (shutdown /r, Sysprep's own): the listener goes down
        once the client is done with the shell the command runs in."""
        self.reboot_shell = self.current_shell

    def refresh_setup(self, read=False):
        """The setup state values after `read` (a client's read of them):
        specialize done, then oobeSystem running (UNDEPLOYABLE) for the
        second half of --sysprep-polls reads, then COMPLETE; Sysprep's
        reboot after the --sysprep-reboot-at-poll-th read."""
        if read:
            self.setup_reads += 1
            if self.setup_reads == self.cfg.sysprep_reboot_at_poll:
                self.reboot_after_this_shell()
        n, r = self.cfg.sysprep_polls, self.setup_reads
        if r > n:
            state, flag = "IMAGE_STATE_COMPLETE", "0"
        elif n == float("inf") or r <= (n + 1) // 2:
            state, flag = "IMAGE_STATE_SPECIALIZE_RESEAL_TO_OOBE", "1"
        else:
            state, flag = "IMAGE_STATE_UNDEPLOYABLE", "1"
        self.registry[STATE_KEY.lower()] = {"ImageState": ("REG_SZ", state)}
        self.registry.setdefault(SETUP_KEY.lower(), {}).update({
            "SystemSetupInProgress": ("REG_DWORD", flag),
            "MiniSetupInProgress": ("REG_DWORD", flag),
            "SetupType": ("REG_DWORD", "0"),
        })

    # -- files --------------------------------------------------------------
    def mkdirs(self, key):
        while key and key not in self.dirs:
            self.dirs.add(key)
            if "\\" not in key:
                break
            key = parent(key)

    def matching(self, path):
        """The files a cmd.exe path names: itself, or with * and ? in its
        last part, every file of that folder whose name matches."""
        k = norm(path)
        if "*" not in k and "?" not in k:
            return [k] if k in self.files else []
        folder, pat = parent(k), k.rsplit("\\", 1)[-1]
        return [f for f in self.files if parent(f) == folder and fnmatch.fnmatchcase(f.rsplit("\\", 1)[-1], pat)]

    def exists(self, path):
        k = norm(path)
        return k in self.dirs or bool(self.matching(path))

    def write(self, path, data, append=False):
        """Writes a file; an error text when its folder does not exist."""
        k = norm(path)
        if k == norm(CWD + r"\nul") or path.strip().strip('"').lower() == "nul":
            return None
        if parent(k) not in self.dirs:
            return "The system cannot find the path specified.\r\n"
        if k in self.dirs:
            return "Access is denied.\r\n"
        self.files[k] = (self.files.get(k, b"") if append else b"") + data
        self.display.setdefault(k, path.strip().strip('"'))
        return None

    def read(self, path):
        return self.files.get(norm(path))

    def remove(self, path):
        found = self.matching(path)
        for k in found:
            self.display.pop(k, None)
            self.files.pop(k, None)
        return bool(found)

    def member_of(self):
        """The domain the computer is a member of as the join and unjoin see
        it: a pending change counts (it needs only the reboot)."""
        return self.domain if self.pending_domain is None else (self.pending_domain or None)

    # -- boots --------------------------------------------------------------
    def boot(self):
        """A (re)boot: a new boot time (not with --wrong-os), the pending
        computer name applied, every shell gone."""
        with self.lock:
            self.boots += 1
            if self.boot_time is None or not self.cfg.wrong_os:
                self.boot_time = time.time()
            if self.pending_name:
                self.name, self.pending_name = self.pending_name.upper(), None
            if self.pending_domain is not None:
                self.domain = self.pending_domain or None
                self.pending_domain = None
            if self.boots == 1 and self.cfg.pending_domain:
                self.pending_domain = self.cfg.pending_domain  # made before this boot
            self.shells = {}
            self.shell_logons = {}
            self.up = True
            self.dump()

    def dump(self):
        if not self.cfg.state_file:
            return
        present = [self.display.get(norm(f), f) for f in ANSWER_FILES + ANSWER_FILES_XP if norm(f) in self.files]
        present = list(dict.fromkeys(present))
        present += [self.display.get(norm(f), f) for f in self.cfg.answer_files
                    if norm(f) in self.files and f not in present]
        state = {
            "up": self.up,
            "boots": self.boots,
            "boot_time": net_time(self.boot_time) if self.boot_time else None,
            "boot_time_cim": cim_time(self.boot_time) if self.boot_time else None,
            "computer_name": self.name,
            "pending_computer_name": self.pending_name,
            "accounts": self.accounts,
            "administrator_password": self.accounts.get("Administrator"),
            "reloads": self.reloads,
            "denied": self.denied,
            "registry": {k: {n: v[1] for n, v in vals.items()} for k, vals in self.registry.items()},
            "fDenyTSConnections": int(self.registry.get(RDP_KEY.lower(), {})
                                      .get("fDenyTSConnections", ("", "1"))[1], 0),
            "legacy_firewall": self.legacy_firewall,
            "firewall_rules": self.rules,
            "inbound": inbound(self),
            "icmp_rules": sum(1 for r in self.rules if r["name"] == "reimage ICMPv4 echo"),
            "rdp_firewall_enabled": any(r["localport"] == "3389" and r["enable"] == "yes" for r in self.rules),
            "w32time": self.w32time,
            "activation": self.activation,
            "domain": self.domain,
            "pending_domain": self.pending_domain,
            "domain_joins": self.domain_joins,
            "domain_unjoins": self.domain_unjoins,
            "network": self.network,
            "powercfg": self.powercfg,
            "answer_files": present,
            "files": sorted(self.display.get(k, k) for k in self.files),
            "dirs": sorted(self.dirs),
            "scripts_run": self.scripts_run,
            "script_env": self.script_env,
            "reboots_requested": self.reboots_requested,
            "setup_reads": self.setup_reads,
            "boot_time_reads": self.boot_time_reads,
            "renamed_via": self.renamed_via,
            "password_set_via": self.password_set_via,
            "not_recognized": self.not_recognized,
            "commands": self.commands,
        }
        state.update(winrm_accounts.dump(self))
        tmp = self.cfg.state_file + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(state, f, indent=1)
        os.replace(tmp, self.cfg.state_file)


def new_nic(i, name, mac):
    """Interface i of the table: on DHCP, its lease in 198.51.(100+i).0/24."""
    return {"name": name, "mac": mac.upper(), "guid": f"5D0C{i:04X}-0000-4000-8000-00155D{i:06X}",
            "dhcp": True, "address": None, "mask": None, "dns": [], "dns_from": "dhcp",
            "lease": f"198.51.{100 + i}.23", "lease_gateway": f"198.51.{100 + i}.1",
            "ignoredefaultroutes": False}


def nic_lease(net, nic):
    """A DHCP lease: the address, and the default route through the lease's
    gateway unless the interface ignores default routes."""
    nic.update({"address": nic["lease"], "mask": "255.255.255.0"})
    net["routes"] = [r for r in net["routes"] if not (r["interface"] == nic["name"] and r["from"] == "dhcp")]
    if not nic["ignoredefaultroutes"]:
        net["routes"].append({"dest": "0.0.0.0", "mask": "0.0.0.0", "gateway": nic["lease_gateway"],
                              "interface": nic["name"], "metric": 25, "persistent": False, "from": "dhcp"})


def find_nic(net, name):
    return next((n for n in net["interfaces"] if n["name"].lower() == name.strip('"').lower()), None)


def in_subnet(ip, addr, mask):
    q = [int(x) for x in ip.split(".")]
    return all((x & int(m)) == (int(y) & int(m)) for x, y, m in zip(q, addr.split("."), mask.split(".")))


def split_line(line):
    """Splits a command line at spaces, keeping "quoted parts" together and
    dropping the quotes (CommandLineToArgvW, without its backslash rules)."""
    out, cur, quoted, has = [], [], False, False
    for ch in line:
        if ch == '"':
            quoted = not quoted
            has = True
        elif ch in " \t" and not quoted:
            if has:
                out.append("".join(cur))
                cur, has = [], False
        else:
            cur.append(ch)
            has = True
    if has:
        out.append("".join(cur))
    return out


# -- cmd.exe ------------------------------------------------------------------
# WinRM runs a command line through cmd.exe (WINRS_SKIP_CMD_SHELL=FALSE):
# %VAR% expands, unquoted & && || | chain commands, > >> 2> redirect, ^
# escapes. The programs get the rest as their command line.

def cmd_split(line):
    """[(operator before, segment)] at unquoted &, &&, ||, |."""
    segs, cur, quoted, op, i = [], [], False, None, 0
    while i < len(line):
        c = line[i]
        if c == '"':
            quoted = not quoted
            cur.append(c)
        elif c == "^" and not quoted and i + 1 < len(line):
            cur.append(line[i + 1])
            i += 1
        elif c == "&" and not quoted and cur and cur[-1] == ">":
            cur.append(c)  # 2>&1: a redirection, not a command separator
        elif c in "&|" and not quoted:
            segs.append((op, "".join(cur)))
            cur = []
            if line[i:i + 2] in ("&&", "||"):
                op = line[i:i + 2]
                i += 1
            else:
                op = c
        else:
            cur.append(c)
        i += 1
    segs.append((op, "".join(cur)))
    return segs


def cmd_redirects(seg):
    """(segment without redirections, [(fd, append, target)]); fd 0 is
    `<FILE` (stdin from FILE); a target `&N` is where fd N goes (2>&1)."""
    out, reds, quoted, i = [], [], False, 0
    while i < len(seg):
        c = seg[i]
        if c == '"':
            quoted = not quoted
        if c == "<" and not quoted:
            i += 1
            while i < len(seg) and seg[i] in " \t":
                i += 1
            m = re.match(r'"[^"]*"|[^\s<>&|]+', seg[i:])
            target = m.group(0) if m else ""
            i += len(target)
            reds.append((0, False, target))
            continue
        if c == ">" and not quoted:
            fd = 1
            if out and out[-1] in "12" and (len(out) == 1 or out[-2] in " \t"):
                fd = int(out.pop())
            append = seg[i:i + 2] == ">>"
            i += 2 if append else 1
            while i < len(seg) and seg[i] in " \t":
                i += 1
            m = re.match(r'&[12]|"[^"]*"|[^\s<>&|]+', seg[i:])
            target = m.group(0) if m else ""
            i += len(target)
            reds.append((fd, append, target))
            continue
        out.append(c)
        i += 1
    return "".join(out), reds


# -- accounts across runs: reloads and UAC remote restrictions -------------
# (see the header: "Accounts and passwords across calls and runs")

POLICIES_SYSTEM = r"HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Policies\System"
BUILTIN_ADMIN = "administrator"
ELEVATION = "The requested operation requires elevation (Run as administrator).\r\n"
ACCESS_DENIED = "Access is denied.\r\n"


def image_accounts(cfg):
    """The local accounts as the image has them."""
    accounts = {"Administrator": ""}
    if cfg.user:
        accounts[cfg.user] = cfg.password
    if cfg.local_admin:
        accounts[cfg.local_admin] = cfg.local_admin_password
    return accounts


def image_policies(cfg):
    """HKLM\...\Policies\System as the image has it."""
    if cfg.token_filter_policy is None:
        return {}
    return {"LocalAccountTokenFilterPolicy": ("REG_DWORD", str(cfg.token_filter_policy))}


def reload_image(m):
    """SIGUSR2: the image written anew over what the runs changed: its
    accounts and passwords, name, domain membership and policies. Counters
    (boots, joins, commands) stay: they count what happened."""
    with m.lock:
        m.accounts = image_accounts(m.cfg)
        m.name = "WIN-STANDIN"
        m.pending_name = None
        m.domain = m.cfg.joined_domain
        m.pending_domain = None
        m.registry[POLICIES_SYSTEM.lower()] = image_policies(m.cfg)
        m.reloads += 1


def filtered_token(m):
    """True when the shell the current command runs in logged on as a
    local administrator other than the built-in one, and the token-filter
    policy is not 1: its token cannot administer."""
    logon = m.shell_logons.get(m.current_shell)
    if not logon or logon[0].lower() == BUILTIN_ADMIN:
        return False
    if not m.cfg.local_admin or logon[0].lower() != m.cfg.local_admin.lower():
        return False
    v = m.registry.get(POLICIES_SYSTEM.lower(), {}).get("LocalAccountTokenFilterPolicy")
    return not (v and v[0] == "REG_DWORD" and int(v[1], 0) == 1)


def meets_policy(m, pw):
    """The image's "Minimum password length" policy (--min-password-length;
    Microsoft Learn, "Minimum password length", security policy settings):
    a shorter password is refused by SetPassword (NERR_PasswordTooShort,
    2245: "The password does not meet the password policy requirements.")
    and the account keeps its old one."""
    return len(pw) >= m.cfg.min_password_length


def legacy_portopening(m, kv, only_pairs):
    """XP/2003's `netsh firewall set portopening protocol=TCP port=N
    name=NAME mode=ENABLE scope=CUSTOM addresses=LIST` (KB 947709, "How to
    use the netsh advfirewall firewall context instead of the netsh
    firewall context", which lists the old syntax): the port exception,
    kept by port, with its scope."""
    ok = (only_pairs and kv.get("protocol") in ("tcp", "udp") and kv.get("port", "").isdigit()
          and kv.get("name") and kv.get("mode") in ("enable", "disable")
          and kv.get("scope", "all") in ("all", "subnet", "custom")
          and (kv.get("scope") != "custom" or kv.get("addresses")))
    if not ok:
        return Result(b"The syntax supplied for this command is not valid. Check help for the correct syntax.\r\n",
                      b"", 1)
    where = legacy_where(m, kv)
    if where is None:
        return LEGACY_NO_INTERFACE
    ports = where.setdefault("ports", {})
    ports[kv["port"]] = {"name": kv["name"], "enable": kv["mode"] == "enable",
                         "scope": kv.get("addresses", kv.get("scope", "all"))}
    return Result(b"\r\nIMPORTANT: Command executed successfully.\r\n"
                  b"However, \"netsh firewall\" is deprecated;\r\nuse \"netsh advfirewall firewall\" "
                  b"instead.\r\n\r\nOk.\r\n\r\n")


LEGACY_NO_INTERFACE = Result(b"The specified interface is not valid.\r\n", b"", 1)


def legacy_where(m, kv):
    """Where an XP `netsh firewall` setting goes: without `interface=`, the
    settings for every interface (the profile's); with it, that
    interface's own (Microsoft's "Deploying Windows Firewall Settings for
    Windows XP with Service Pack 2": port openings and ICMP settings per
    connection; VCL's Windows.pm opens SSH and ping by `interface =` on
    the private interface and closes them by profile). None: no such
    interface."""
    name = kv.get("interface")
    if name is None:
        return m.legacy_firewall
    nic = find_nic(m.network, name)
    if nic is None:
        return None
    per = m.legacy_firewall.setdefault("interfaces", {})
    return per.setdefault(nic["name"], {"ports": {}, "icmp8": False})


def local_match(localip, address):
    """Whether a rule's `localip` (any, or addresses and ADDRESS/PREFIX,
    comma-separated) takes connections to `address`."""
    if localip.lower() == "any":
        return True
    if not address:
        return False
    for part in localip.split(","):
        try:
            if ipaddress.ip_address(address) in ipaddress.ip_network(part, strict=False):
                return True
        except ValueError:
            continue
    return False


def inbound(m):
    """Who may reach what on each interface now, judged as Windows
    Firewall does from the rules and the interfaces' current addresses:
    {interface: {"tcp/PORT" | "icmpv4:8": [remote scopes]}}. Vista and
    later: every enabled inbound allow rule whose `localip` takes the
    interface's address (a rule with localip applies only to connections
    to that local address: the netsh advfirewall reference, `localip`);
    XP/2003: the settings for every interface plus the interface's own."""
    out = {}
    for nic in m.network["interfaces"]:
        seen = out.setdefault(nic["name"], {})

        def add(key, scope):
            seen.setdefault(key, [])
            for x in scope.split(","):
                if x not in seen[key]:
                    seen[key].append(x)
        if m.cfg.no_powershell:
            lf = m.legacy_firewall
            own = lf.get("interfaces", {}).get(nic["name"], {"ports": {}, "icmp8": False})
            if lf["remotedesktop"]:
                add("tcp/3389", lf["remotedesktop_scope"] or "all")
            for where in (lf, own):
                for port, o in where.get("ports", {}).items():
                    if o["enable"]:
                        add(f"tcp/{port}", o["scope"])
                if where["icmp8"]:
                    add("icmpv4:8", "any")
            continue
        for r in m.rules:
            if r["enable"] != "yes" or r["action"] != "allow" or r["dir"] != "in" or \
                    not local_match(r.get("localip", "any"), nic["address"]):
                continue
            if r["protocol"].startswith("icmpv4:8"):
                add("icmpv4:8", r["remoteip"])
            elif r["protocol"] in ("tcp", "udp"):
                for port in r["localport"].split(","):
                    add(f"{r['protocol']}/{port}", r["remoteip"])
    for seen in out.values():
        for v in seen.values():
            v.sort()
    return out


def needs_admin(base, words):
    """What Windows refuses a filtered token, with its message: None when
    the command needs no administrator."""
    low = [w.lower() for w in words[1:]]
    if base == "netsh" and low[:1] == ["advfirewall"]:
        return ELEVATION
    if base == "reg" and low[:1] == ["add"] and len(low) > 1 and re.match(r"(hklm|hkey_local_machine)\\", low[1]):
        return "ERROR: " + ACCESS_DENIED
    if base == "cscript" and any("set-password" in w for w in low):
        return ACCESS_DENIED
    if base == "powershell" and "setpassword" in " ".join(low):
        return ACCESS_DENIED
    return None


class Shell:
    """Runs command lines on a Machine, as cmd.exe and the programs would."""

    def __init__(self, m):
        self.m = m
        self.env = {}  # what `set` put in this command's environment

    def expand(self, line):
        env = {"temp": r"C:\Windows\Temp", "tmp": r"C:\Windows\Temp", "systemroot": r"C:\Windows",
               "windir": r"C:\Windows", "computername": self.m.name, "username": "Administrator"}
        env.update({k.lower(): v for k, v in self.env.items()})
        return re.sub(r"%(\w+)%", lambda mt: env.get(mt.group(1).lower(), mt.group(0)), line)

    def line(self, line, stdin=None):
        """Runs a whole cmd.exe line; `stdin`: bytes when its stdin is
        redirected (from nul or a file), else None (the client's stream)."""
        segs = cmd_split(self.expand(line))
        if len(segs) == 1:
            return self.simple(segs[0][1], True, stdin)
        res, piped = Result(), None
        for op, seg in segs:
            if op == "&&" and res.code != 0 or op == "||" and res.code == 0:
                continue
            r = self.simple(seg, False, piped if op == "|" else None)
            if op == "|":
                r.err = res.err + r.err
            else:
                r.out, r.err = res.out + r.out, res.err + r.err
            piped = r.out if op != "|" else None
            res = r
        return res

    def simple(self, seg, may_read_stdin, stdin=None):
        text, reds = cmd_redirects(seg)
        for fd, _, target in reds:
            if fd == 0:
                if target.strip('"').lower() == "nul":
                    stdin = b""
                else:
                    stdin = self.m.read(target)
                    if stdin is None:
                        return fail("The system cannot find the file specified.\r\n")
        reds = [r for r in reds if r[0] != 0]
        r = self.run(text.strip(), stdin)
        if r.on_stdin is not None and not may_read_stdin:
            r.out, r.err, r.code = r.on_stdin(b"")
            r.on_stdin = None
        return self.redirect(r, reds)

    def redirect(self, r, reds):
        if not reds:
            return r
        for fd, _, target in reds:
            if target.startswith("&"):
                continue
            if target.strip('"').lower() != "nul" and parent(norm(target)) not in self.m.dirs:
                return fail("The system cannot find the path specified.\r\n")

        def apply(out, err, code):
            # Where each stream goes, redirection by redirection (cmd.exe
            # reads them left to right): itself, another stream's place
            # (N>&M), or a file.
            where = {1: ("stream", 1), 2: ("stream", 2)}
            for fd, append, target in reds:
                if target.startswith("&"):
                    where[fd] = where[int(target[1:])]
                else:
                    where[fd] = ("file", target, append)
            streams, opened = {1: b"", 2: b""}, set()
            for fd, data in ((1, out), (2, err)):
                dest = where[fd]
                if dest[0] == "stream":
                    streams[dest[1]] += data
                else:
                    key = norm(dest[1])
                    self.m.write(dest[1], data, dest[2] or key in opened)
                    opened.add(key)
            return streams[1], streams[2], code

        if r.on_stdin is not None:
            inner = r.on_stdin
            r.on_stdin = lambda data: apply(*inner(data))
        else:
            # The target is created (or truncated) even when nothing is written.
            r.out, r.err, r.code = apply(r.out, r.err, r.code)
        return r

    def run(self, text, stdin=None):
        """One simple command (redirections removed)."""
        words = split_line(text)
        if not words:
            return Result()
        # cmd.exe ends a command name at ; , = as well as at a space.
        mt = re.match(r"[^;,=]+", words[0])
        if mt and mt.group(0) != words[0]:
            words[0:1] = [mt.group(0), words[0][len(mt.group(0)):].lstrip(";,=")]
            words = [w for w in words if w]
        prog = words[0].lower()
        base = re.sub(r"\.(exe|com)$", "", prog.rsplit("\\", 1)[-1])
        if base == "cmd" and len(words) >= 2 and words[1].lower() in ("/c", "/s", "/q"):
            rest = re.split(r"(?i)/c\s?", text, 1)
            return self.line(rest[1] if len(rest) > 1 else "", stdin)
        if base == "if":
            return self.cmd_if(text, stdin)
        denied = needs_admin(base, words) if filtered_token(self.m) else None
        if denied is not None:
            self.m.denied.append(text)
            return fail(denied, 5)
        if base == "powershell" and self.m.cfg.no_powershell:
            self.m.not_recognized.append(words[0])
            return fail(NOT_RECOGNIZED.format(words[0]))
        if base == "echo":
            t = text[4:].strip()
            if t == "" or t.lower() in ("on", "off"):
                return Result(b"ECHO is on.\r\n" if t == "" else b"")
            return Result(t.encode() + b"\r\n")
        handler = getattr(self, "p_" + base.replace("-", "_"), None)
        if handler is not None and not self.m.exists(words[0]):
            return handler(words[1:], text, stdin)
        if self.m.read(words[0]) is not None:
            return self.script(words[0], words[1:])
        self.m.not_recognized.append(words[0])
        return fail(NOT_RECOGNIZED.format(words[0]))

    def script(self, path, args):
        """Runs an uploaded script: recorded; exits with the code of its
        first `exit [/b] N` line, else 0."""
        data = self.m.read(path) or b""
        self.m.scripts_run.append(path)
        self.m.script_env.append({"path": path, **{k: v for k, v in self.env.items()
                                                    if k.startswith("REIMAGE_")}})
        code = 0
        for ln in data.decode("utf-8", "replace").splitlines():
            mt = re.match(r"(?i)^\s*exit\s+(?:/b\s+)?(\d+)\s*$", ln)
            if mt:
                code = int(mt.group(1))
                break
        return Result(f"ran {path}\r\n".encode(), b"", code)

    def cmd_if(self, text, stdin=None):
        """if [/i] [not] exist F CMD  and  if [/i] [not] A==B CMD (the
        quotes are part of the compared strings, as in cmd.exe)."""
        mt = re.match(r'(?is)^if\s+(/i\s+)?(not\s+)?exist\s+("[^"]*"|\S+)\s+(.+)$', text)
        if mt:
            cond = self.m.exists(mt.group(3))
        else:
            mt = re.match(r'(?is)^if\s+(/i\s+)?(not\s+)?("[^"]*"|[^\s=]+)\s*==\s*("[^"]*"|[^\s=]+)\s+(.+)$', text)
            if not mt:
                return fail("The syntax of the command is incorrect.\r\n")
            a, b = mt.group(3), mt.group(4)
            cond = a.lower() == b.lower() if mt.group(1) else a == b
        if cond == bool(mt.group(2)):
            return Result()
        return self.line(mt.groups()[-1], stdin)

    # -- programs (words after the program name, quotes removed) -------------
    def p_wmic(self, a, text, stdin):
        """The WMIC forms reimage sends. wmic reads its stdin when the command
        is done and waits until it closes (XP; WinRM's stdin stream on later
        versions too): without `<nul` it finishes only when the client ends
        stdin."""
        if self.m.cfg.no_wmic:
            self.m.not_recognized.append("wmic")
            return fail(NOT_RECOGNIZED.format("wmic"))
        r = self.wmic(a)
        if stdin is None:
            return Result(on_stdin=lambda data: (r.out, r.err, r.code))
        return r

    def wmic(self, a):
        low = [w.lower() for w in a]
        if not low:
            return fail("wmic:root\\cli>: stand-in has no interactive mode\r\n")
        if low == ["os", "get", "lastbootuptime", "/value"]:
            self.m.boot_time_reads["wmic"] += 1
            return Result(f"\r\r\n\r\r\nLastBootUpTime={cim_time(self.m.boot_time)}\r\r\n\r\r\n\r\r\n".encode())
        mt = re.fullmatch(r"""computersystem where name=(['"]?)([^'"]*)\1 call rename name=(['"]?)([^'"]*)\3""",
                          " ".join(a), re.I)
        if mt:
            old, new = mt.group(2), mt.group(4)
            if old.lower() != self.m.name.lower():
                return Result(b"", b"No Instance(s) Available.\r\n", 0)
            code = 0
            if re.fullmatch(r"(?=.*[A-Za-z-])[A-Za-z0-9-]{1,15}", new):
                self.m.pending_name = new
                self.m.renamed_via = "wmic"
            else:
                code = 1210  # ERROR_INVALID_COMPUTERNAME
            out = (f'Executing (\\\\{self.m.name}\\ROOT\\CIMV2:Win32_ComputerSystem.Name="{self.m.name}")'
                   "->rename()\r\nMethod execution successful.\r\nOut Parameters:\r\n"
                   f"instance of __PARAMETERS\r\n{{\r\n\tReturnValue = {code};\r\n}};\r\n\r\n")
            return Result(out.encode())
        if low == ["computersystem", "get", "domain,partofdomain", "/value"]:
            # VCL's Windows.pm ad_get_current_domain reads these two.
            dom = self.m.domain or "WORKGROUP"
            part = "TRUE" if self.m.domain else "FALSE"
            return Result(f"\r\r\n\r\r\nDomain={dom}\r\r\nPartOfDomain={part}\r\r\n\r\r\n".encode())
        mt = re.fullmatch(r"""computersystem where name=(['"]?)([^'"]*)\1 call unjoindomainorworkgroup """
                          r"""funjoinoptions=(\d+)""", " ".join(a), re.I)
        if mt:
            if mt.group(2).lower() != self.m.name.lower():
                return Result(b"", b"No Instance(s) Available.\r\n", 0)
            # 2692: NERR_NotJoined, as Win32_ComputerSystem documents.
            code = 0 if self.m.member_of() else 2692
            if code == 0:
                self.m.pending_domain = ""
                self.m.domain_unjoins += 1
            out = (f'Executing (\\\\{self.m.name}\\ROOT\\CIMV2:Win32_ComputerSystem.Name="{self.m.name}")'
                   "->UnjoinDomainOrWorkgroup()\r\nMethod execution successful.\r\nOut Parameters:\r\n"
                   f"instance of __PARAMETERS\r\n{{\r\n\tReturnValue = {code};\r\n}};\r\n\r\n")
            return Result(out.encode())
        if low[0] not in ("os", "computersystem"):
            return fail(f"{a[0]} - Alias not found.\r\n", 44135)
        return fail("Invalid query\r\n", 44135)

    def p_cscript(self, a, text, stdin):
        """cscript [//nologo] [//B] FILE ARGS: runs an uploaded script."""
        opts = [w.lower() for w in a if w.startswith("//")]
        rest = [w for w in a if not w.startswith("//")]
        banner = b"" if "//nologo" in opts else (b"Microsoft (R) Windows Script Host Version 5.7\r\n"
                                                  b"Copyright (C) Microsoft Corporation. All rights reserved.\r\n\r\n")
        if not rest:
            return Result(banner + b"Usage: CScript scriptname.extension [option...] [arguments...]\r\n", b"", 1)
        path, args = rest[0], rest[1:]
        ext = path.rsplit(".", 1)[-1].lower() if "." in path else ""
        if ext not in ("vbs", "js", "wsf"):
            return Result(banner + f'Input Error: There is no script engine for file extension ".{ext}".\r\n'
                          .encode(), b"", 1)
        data = self.m.read(path)
        if data is None:
            return Result(banner + f'Input Error: Can not find script file "{path}".\r\n'.encode(), b"", 1)
        src = data.decode("utf-8", "replace")
        found = [p.search(src) for p in PASSWORD_SCRIPT]
        if ext == "vbs" and all(found):
            return self.set_password_script(found[0].group(1), args, banner)
        if norm(path) == norm(SLMGR):
            return self.slmgr(args, banner)
        if ext == "vbs" and all(p.search(src) for p in DOMAIN_SCRIPT):
            return self.domain_script(args, banner)
        if ext == "vbs" and all(p.search(src) for p in MAK_SCRIPT):
            return self.mak_script(args, banner)
        if ext == "vbs" and all(p.search(src) for p in DNS_SCRIPT):
            if not args or not all(re.fullmatch(r"[0-9a-fA-F.:]+", x) for x in args):
                return Result(banner, b"SetDNSServerSearchOrder returned 70 on Ethernet\r\n", 70)
            self.m.network["dns"] = list(args)
            self.m.network["dns_set_before_join"] = not self.m.domain_joins
            return Result(banner + f"DNS servers set on {len(self.m.cfg.interfaces)} adapter(s)\r\n".encode())
        if ext == "vbs":
            done = winrm_accounts.cscript(self, src, args, banner, Result)
            if done is not None:
                return done
        self.m.scripts_run.append(path)
        mt = re.search(r"(?im)^\s*WScript\.Quit\s*\(?\s*(\d+)", src)
        return Result(banner + f"ran {path}\r\n".encode(), b"", int(mt.group(1)) if mt else 0)

    # -- activation (Microsoft: "Slmgr.vbs options for obtaining volume
    # activation information", "Key Management Services (KMS) client
    # activation and product keys", "Troubleshoot KMS activation error
    # codes": 0xC004F038 the KMS count is below its threshold, 25 for
    # client editions; 0xC004F074 no KMS could be contacted) ----------------
    def slmgr(self, args, banner):
        """slmgr.vbs /dli, /ipk KEY, /skms HOST[:PORT], /ato. slmgr prints
        its errors (WScript.Echo) and exits 0 for "Error: product not
        found." (no key installed); a failed /ato exits non-zero here
        (stand-in assumption). A KMS host whose name ends in .invalid does
        not answer; one that answers reports --kms-count."""
        low = [w.lower().replace("-", "/", 1) for w in args]
        act = self.m.activation
        if len(low) == 2 and low[0] == "/skms":
            act["kms"] = args[1]
            return Result(banner + f"Key Management Service machine name set to {args[1]} successfully.\r\n"
                          .encode())
        if len(low) == 2 and low[0] == "/ipk":
            # Stand-in: /ipk gets only KMS client setup keys (a MAK goes
            # through reimage's VBScript).
            act.update(channel="VOLUME_KMSCLIENT", gvlk=args[1], activated=False)
            return Result(banner + f"Installed product key {args[1]} successfully.\r\n".encode())
        if low == ["/dli"]:
            return self.slmgr_dli(banner)
        if low == ["/ato"]:
            return self.slmgr_ato(banner)
        return Result(banner, b"Error: 0xC004F025 Access denied: the requested action requires elevated "
                      b"privileges\r\n" if not low else b"Unknown option.\r\n", 1)

    def slmgr_dli(self, banner):
        act = self.m.activation
        if act["channel"] is None:
            return Result(banner + b"Error: product not found.\r\n")
        status = "Licensed" if act["activated"] else "Initial grace period"
        return Result(banner + (f"Name: Windows(R), {self.m.cfg.edition} edition\r\n"
                                f"Description: Windows(R) Operating System, {act['channel']} channel\r\n"
                                f"License Status: {status}\r\n").encode())

    def slmgr_ato(self, banner):
        act = self.m.activation
        act["ato_runs"] += 1
        head = banner + f"Activating Windows(R), {self.m.cfg.edition} edition ...\r\n".encode()
        if act["channel"] is None:
            return Result(banner + b"Error: product not found.\r\n")
        err = None
        if act["channel"] == "VOLUME_KMSCLIENT":
            host = (act["kms"] or "").split(":")[0].lower()
            if not host or host.endswith(".invalid"):
                err = ("0xC004F074 The Software Licensing Service reported that the computer could not be "
                       "activated. No Key Management Service (KMS) could be contacted.")
            elif self.m.cfg.kms_count < 25:
                err = ("0xC004F038 The Software Licensing Service reported that the computer could not be "
                       "activated. The count reported by your Key Management Service (KMS) is insufficient.")
        elif act["channel"] != "VOLUME_MAK":
            err = "0x80072EE7 The server name or address could not be resolved"
        if err:
            act["errors"].append(err.split()[0])
            return Result(head + f"Error: {err}\r\n".encode(), b"", 1)
        act["activated"] = True
        return Result(head + b"Product activated successfully.\r\n")

    def mak_script(self, args, banner):
        """reimage's MAK VBScript: reads the key file, deletes it, installs
        the key (SoftwareLicensingService.InstallProductKey)."""
        data = self.m.read(args[0]) if len(args) == 1 else None
        if data is None:
            return Result(banner, b"cannot read the key file: File not found\r\n", 1)
        self.m.remove(args[0])
        key = data.decode("utf-8-sig", "replace").split("\n")[0].strip()
        if not re.fullmatch(r"([A-Z0-9]{5}-){4}[A-Z0-9]{5}", key):
            return Result(banner, b"InstallProductKey failed: 0xC004F050 The Software Licensing Service "
                          b"reported that the product key is invalid.\r\n", 1)
        self.m.activation.update(key_installed=True, key_last5=key[-5:], channel="VOLUME_MAK",
                                 activated=False)
        return Result(banner + b"product key installed\r\n")

    def domain_script(self, args, banner):
        """reimage's domain VBScript: CREDENTIALS-FILE DOMAIN [OU]. Reads and
        deletes the file, then Win32_ComputerSystem.JoinDomainOrWorkgroup:
        1355 no such domain, 1326 logon failure, 2691 already joined (the
        script counts it as done); the membership starts at the next boot."""
        if len(args) < 2:
            return Result(banner, b"usage\r\n", 2)
        data = self.m.read(args[0])
        if data is None:
            return Result(banner, b"cannot read the credentials file: File not found\r\n", 1)
        self.m.remove(args[0])
        lines = data.decode("utf-8-sig", "replace").replace("\r", "").split("\n")
        user, pw = (lines + ["", ""])[:2]
        domain, ou = args[1], (args[2] if len(args) > 2 else None)
        cfg = self.m.cfg
        if self.m.member_of():
            rc = 2691  # NERR_SetupAlreadyJoined: a member of a domain (this one or another)
        elif cfg.ad_domain is None or domain.lower() != cfg.ad_domain.lower():
            rc = 1355
        elif abs(self.m.w32time["offset"]) > 300:
            rc = 1398  # ERROR_TIME_SKEW: Kerberos refuses the clock
        elif (user, pw) != cfg.ad_credentials:
            rc = 1326
        else:
            rc = 0
            self.m.pending_domain = domain
            self.m.domain_joins.append({"domain": domain, "user": user, "ou": ou})
        if rc:
            return Result(banner, f"JoinDomainOrWorkgroup returned {rc}\r\n".encode(), rc)
        return Result(banner + f"joined {domain}: takes effect at the next boot\r\n".encode())

    def set_password_script(self, user, args, banner):
        """What reimage's password VBScript does: read the file (UTF-8, up to
        the first line break), delete it, SetPassword + SetInfo."""
        if len(args) != 1:
            return Result(banner, b"usage: cscript //nologo set-password.vbs PASSWORD-FILE\r\n", 2)
        data = self.m.read(args[0])
        if data is None:
            return Result(banner, f"cannot read {args[0]}: File could not be opened.\r\n".encode(), 1)
        self.m.remove(args[0])
        pw = re.split(r"[\r\n]", data.decode("utf-8-sig", "replace"), 1)[0]
        if pw == "":
            return Result(banner, b"the password file was empty\r\n", 1)
        if not meets_policy(self.m, pw):
            return Result(banner, b"SetInfo: The password does not meet the password policy requirements.\r\n", 1)
        match = [u for u in self.m.accounts if u.lower() == user.lower()]
        if not match:
            return Result(banner, f"no account {user}: The user name could not be found.\r\n".encode(), 1)
        self.m.accounts[match[0]] = pw
        self.m.password_set_via = "vbscript"
        return Result(banner + f"password of {user} set\r\n".encode())

    def p_shutdown(self, a, text, stdin):
        """shutdown /r /t 0 /f (VCL's Windows.pm reboot; `-r` too): the
        command returns, then the listener goes down (once the client is
        done with this shell), as Windows' does, and comes back on a new
        boot."""
        low = {w.lower().replace("-", "/", 1) for w in a}
        if "/r" not in low:
            return fail("stand-in: only shutdown /r is simulated\r\n")
        self.m.reboots_requested += 1
        self.m.reboot_after_this_shell()
        return Result()

    def p_hostname(self, a, text, stdin):
        if a:
            return fail("sethostname: Use the Network Control Panel Applet to set hostname.\r\n")
        return Result(self.m.name.encode() + b"\r\n")

    def p_set_name(self, a, text, stdin):
        """Stand-in only: changes the machine name now."""
        if len(a) != 1:
            return fail(NOT_RECOGNIZED.format("set-name"))
        self.m.name = a[0]
        return Result()

    def p_exit(self, a, text, stdin):
        a = [w for w in a if w.lower() != "/b"]
        try:
            return Result(code=int(a[0]) if a else 0)
        except ValueError:
            return Result()

    def p_sleep(self, a, text, stdin):
        """Stand-in only: finishes after SECONDS."""
        try:
            secs = float(a[0]) if len(a) == 1 else -1
        except ValueError:
            secs = -1
        if secs < 0:
            return fail(NOT_RECOGNIZED.format("sleep"))
        return Result(f"slept {a[0]}\r\n".encode(), secs=secs)

    def p_type(self, a, text, stdin):
        if len(a) != 1:
            return fail("The syntax of the command is incorrect.\r\n")
        if a[0].lower() == "nul":
            return Result()
        data = self.m.read(a[0])
        if data is None:
            return fail("The system cannot find the file specified.\r\n")
        return Result(data)

    def p_del(self, a, text, stdin):
        names = [w for w in a if not w.startswith("/")]
        if not names:
            return fail("The syntax of the command is incorrect.\r\n")
        err = b""
        for n in names:
            if not self.m.remove(n):
                err += f"Could Not Find {n}\r\n".encode()
        return Result(b"", err, 0)

    p_erase = p_del

    def p_mkdir(self, a, text, stdin):
        if len(a) != 1:
            return fail("The syntax of the command is incorrect.\r\n")
        if self.m.exists(a[0]):
            return fail(f"A subdirectory or file {a[0]} already exists.\r\n")
        self.m.mkdirs(norm(a[0]))
        return Result()

    p_md = p_mkdir

    def p_findstr(self, a, text, stdin):
        # `findstr "^"` copies every line of stdin (a pipe or the Send action).
        if a != ["^"]:
            return fail("FINDSTR: stand-in knows only findstr \"^\"\r\n", 2)
        if stdin is not None:
            return Result(stdin)
        return Result(on_stdin=lambda data: (data, b"", 0))

    def p_certutil(self, a, text, stdin):
        args = [w for w in a if w.lower() != "-f"]
        if len(args) == 3 and args[0].lower() == "-decode":
            src = self.m.read(args[1])
            if src is None:
                return Result(b"CertUtil: -decode command FAILED: 0x80070002 (WIN32: 2 ERROR_FILE_NOT_FOUND)\r\n",
                              b"", 2)
            try:
                data = base64.b64decode(b"".join(src.split()), validate=True)
            except ValueError:
                return Result(b"CertUtil: -decode command FAILED: 0x80090005 (NTE_BAD_DATA)\r\n", b"", 1)
            if self.m.read(args[2]) is not None and "-f" not in [w.lower() for w in a]:
                return Result(b"CertUtil: -decode command FAILED: 0x80070050 (WIN32: 80 ERROR_FILE_EXISTS)\r\n",
                              b"", 1)
            if self.m.write(args[2], data):
                return Result(b"CertUtil: -decode command FAILED: 0x80070003 (WIN32: 3 ERROR_PATH_NOT_FOUND)\r\n",
                              b"", 3)
            msg = (f"Input Length = {len(src)}\r\nOutput Length = {len(data)}\r\n"
                   "CertUtil: -decode command completed successfully.\r\n")
            return Result(msg.encode())
        return Result(b"CertUtil: Unknown arguments.\r\n", b"", 87)

    def p_reg(self, a, text, stdin):
        """reg add KEY /v NAME /t TYPE /d DATA /f  and  reg query KEY /v NAME."""
        if len(a) < 2 or a[0].lower() not in ("add", "query"):
            return fail("ERROR: Invalid syntax.\r\nType \"REG /?\" for usage.\r\n")
        key = re.sub(r"(?i)^HKEY_LOCAL_MACHINE\\", lambda _: "HKLM\\", a[1])
        opts, rest, i = {}, a[2:], 0
        while i < len(rest):
            o = rest[i].lower()
            if o == "/f":
                opts["f"] = True
                i += 1
            elif o in ("/v", "/t", "/d") and i + 1 < len(rest):
                opts[o[1]] = rest[i + 1]
                i += 2
            else:
                return fail("ERROR: Invalid syntax.\r\nType \"REG /?\" for usage.\r\n")
        if not key.lower().startswith("hklm\\"):
            return fail("ERROR: Invalid key name.\r\nType \"REG /?\" for usage.\r\n")
        reads_setup = a[0].lower() == "query" and key.lower() in (STATE_KEY.lower(), SETUP_KEY.lower())
        self.m.refresh_setup(read=reads_setup)
        vals = self.m.registry.get(key.lower())
        if a[0].lower() == "query":
            def show(name, v):
                data = f"0x{int(v[1]):x}" if v[0] == "REG_DWORD" else v[1]
                return f"    {name}    {v[0]}    {data}\r\n"
            if "v" not in opts and vals is not None:
                lines = "".join(show(n, v) for n, v in vals.items())
                return Result(f"\r\n{key}\r\n{lines}\r\n".encode())
            v = (vals or {}).get(opts.get("v", ""))
            if v is None:
                return fail("ERROR: The system was unable to find the specified registry key or value.\r\n")
            return Result(f"\r\n{key}\r\n{show(opts['v'], v)}\r\n".encode())
        if "v" not in opts or "d" not in opts:
            return fail("ERROR: Invalid syntax.\r\nType \"REG /?\" for usage.\r\n")
        typ = opts.get("t", "REG_SZ").upper()
        if typ == "REG_DWORD" and not re.fullmatch(r"\d+|0x[0-9a-fA-F]+", opts["d"]):
            return fail("ERROR: Invalid syntax.\r\n")
        vals = self.m.registry.setdefault(key.lower(), {})
        if opts["v"] in vals and not opts.get("f"):
            # It would ask "Overwrite (Yes/No)?": no console to answer.
            return fail("ERROR: stdin is not a console: cannot ask to overwrite\r\n")
        vals[opts["v"]] = (typ, str(int(opts["d"], 0)) if typ == "REG_DWORD" else opts["d"])
        return Result(b"The operation completed successfully.\r\n\r\n")

    def p_netsh(self, a, text, stdin):
        low = [w.lower() for w in a]
        if low[:2] == ["interface", "ip"] or low[:2] == ["interface", "ipv4"]:
            r = self.netsh_interface(a[2:])
            return r if r is not None else self.netsh_address(a[2:])
        if low[:3] == ["firewall", "delete", "portopening"]:
            kv = dict(w.split("=", 1) for w in low[3:] if "=" in w)
            where = legacy_where(self.m, kv)
            if where is None:
                return LEGACY_NO_INTERFACE
            if where.get("ports", {}).pop(kv.get("port", ""), None) is None:
                return Result(b"\r\nThe system cannot find the file specified.\r\n\r\n", b"", 1)
            return Result(b"\r\nOk.\r\n\r\n")
        if low[:2] == ["firewall", "set"]:
            # XP/2003 (netsh firewall, KB 947709 / VCL's Windows.pm): the
            # service exception by type, with an optional custom scope.
            kv = dict(w.split("=", 1) for w in low[3:] if "=" in w)
            ok_mode = kv.get("mode") in ("enable", "disable")
            scope_ok = kv.get("scope", "all") in ("all", "subnet", "custom") and \
                (kv.get("scope") != "custom" or kv.get("addresses"))
            if low[2:3] == ["service"] and kv.get("type") == "remotedesktop" and ok_mode and scope_ok \
                    and len(kv) == len(low) - 3:
                self.m.legacy_firewall["remotedesktop"] = kv["mode"] == "enable"
                self.m.legacy_firewall["remotedesktop_scope"] = kv.get("addresses", kv.get("scope", "all"))
                return Result(b"\r\nIMPORTANT: Command executed successfully.\r\n"
                              b"However, \"netsh firewall\" is deprecated;\r\nuse \"netsh advfirewall firewall\" "
                              b"instead.\r\n\r\nOk.\r\n\r\n")
            if low[2:3] == ["portopening"]:
                return legacy_portopening(self.m, kv, len(kv) == len(low) - 3)
            if low[2:3] == ["icmpsetting"] and kv.get("type") == "8" and ok_mode and len(kv) == len(low) - 3:
                where = legacy_where(self.m, kv)
                if where is None:
                    return LEGACY_NO_INTERFACE
                where["icmp8"] = kv["mode"] == "enable"
                return Result(b"\r\nOk.\r\n\r\n")
            return Result(b"The syntax supplied for this command is not valid. Check help for the correct syntax.\r\n",
                          b"", 1)
        not_found = Result(f"The following command was not found: {' '.join(a)}.\r\n".encode(), b"", 1)
        if self.m.cfg.no_powershell and low[:1] == ["advfirewall"]:
            # XP/2003: no Windows Firewall with Advanced Security.
            return not_found
        if low[:2] != ["advfirewall", "firewall"] or len(low) < 4 or low[3] != "rule":
            return not_found
        verb, args = low[2], a[4:]
        invalid = Result(b"A specified value is not valid.\r\n\r\nUsage: ...\r\n", b"", 1)
        if [w for w in args if "=" not in w and w.lower() != "new"]:
            return invalid
        if verb == "set":
            # `set rule group="NAME" new enable=yes`: by the group's name,
            # which is in the install's language.
            if "new" not in [w.lower() for w in args]:
                return invalid
            k = [w.lower() for w in args].index("new")
            where = {x.split("=", 1)[0].lower(): x.split("=", 1)[1] for x in args[:k]}
            new = {x.split("=", 1)[0].lower(): x.split("=", 1)[1].lower() for x in args[k + 1:]}
            if set(where) != {"group"} or list(new) != ["enable"] or new["enable"] not in ("yes", "no"):
                return invalid
            hit = [r for r in self.m.rules if r.get("group", "").lower() == where["group"].lower()]
            if not hit:
                return Result(b"\r\nNo rules match the specified criteria.\r\n\r\n", b"", 1)
            for r in hit:
                r["enable"] = new["enable"]
            return Result(f"\r\nUpdated {len(hit)} rule(s).\r\nOk.\r\n\r\n".encode())
        kv = {}
        for w in args:
            k, v = w.split("=", 1)
            kv[k.lower()] = v
        if verb == "delete":
            # name=all with filters deletes every rule that matches them.
            if set(kv) - {"name", "dir", "protocol", "localport", "profile"} or "name" not in kv:
                return invalid

            def match(r):
                if kv["name"].lower() != "all" and r["name"].lower() != kv["name"].lower():
                    return False
                return all(r.get(f, "any").lower() == kv[f].lower() for f in ("dir", "protocol", "localport")
                           if f in kv)
            n = sum(1 for r in self.m.rules if match(r))
            if n == 0:
                return Result(b"\r\nNo rules match the specified criteria.\r\n\r\n", b"", 1)
            self.m.rules = [r for r in self.m.rules if not match(r)]
            return Result(f"\r\nDeleted {n} rule(s).\r\nOk.\r\n\r\n".encode())
        if verb == "add":
            allowed = {"name", "dir", "action", "protocol", "enable", "profile", "localport", "remoteip",
                       "localip", "description"}
            if set(kv) - allowed or not {"name", "dir", "action"} <= set(kv):
                return invalid
            if kv["dir"].lower() not in ("in", "out") or kv["action"].lower() not in ("allow", "block", "bypass"):
                return invalid
            proto = kv.get("protocol", "any").lower()
            if not re.fullmatch(r"any|tcp|udp|\d+|icmpv[46](:(\d+|any),(\d+|any))?", proto):
                return Result(b"A specified protocol value is not valid.\r\n", b"", 1)
            if "localport" in kv and proto not in ("tcp", "udp"):
                return Result(b"A specified port value is not valid.\r\n", b"", 1)
            remote, localip = kv.get("remoteip", "any"), kv.get("localip", "any")
            for part in remote.split(",") + localip.split(","):
                if part.lower() not in ("any", "localsubnet") and \
                        not re.fullmatch(r"[0-9a-fA-F.:]+(/\d{1,3})?", part):
                    return Result(b"A specified IP address or address keyword is not valid.\r\n", b"", 1)
            self.m.rules.append({"name": kv["name"], "dir": kv["dir"].lower(), "protocol": proto,
                                 "localport": kv.get("localport", "any"), "remoteip": remote,
                                 "localip": localip,
                                 "enable": kv.get("enable", "yes").lower(), "action": kv["action"].lower()})
            return Result(b"Ok.\r\n\r\n")
        return not_found

    def netsh_address(self, a):
        """netsh interface ip set address name="IF" static ADDR MASK [GW METRIC]."""
        low = [w.lower() for w in a]
        if low[:2] != ["set", "address"] or len(a) < 5:
            return Result(b"The syntax supplied for this command is not valid.\r\n", b"", 1)
        iface = a[2].split("=", 1)[1] if a[2].lower().startswith("name=") else a[2]
        rest = low[3:]
        ip = r"\d{1,3}(\.\d{1,3}){3}"
        if rest[0] != "static" or len(rest) not in (3, 5) or not all(re.fullmatch(ip, w) for w in rest[1:3]):
            return Result(b"The syntax supplied for this command is not valid.\r\n", b"", 1)
        if iface.lower() not in [i[0].lower() for i in self.m.cfg.interfaces]:
            return Result(b"The filename, directory name, or volume label syntax is incorrect.\r\n\r\n", b"", 1)
        self.m.network["static"] = {"interface": iface, "address": rest[1], "mask": rest[2],
                                    "gateway": rest[3] if len(rest) == 5 else None}
        nic = find_nic(self.m.network, iface)
        net = self.m.network
        net["routes"] = [r for r in net["routes"] if not (r["interface"] == nic["name"] and r["from"] == "dhcp")]
        nic.update({"dhcp": False, "address": rest[1], "mask": rest[2]})
        if len(rest) == 5:
            net["routes"].append({"dest": "0.0.0.0", "mask": "0.0.0.0", "gateway": rest[3],
                                  "interface": nic["name"], "metric": int(rest[4]), "persistent": True,
                                  "from": "netsh"})
        return Result(b"\r\n")

    def netsh_interface(self, a):
        """The interface table's netsh commands (see the header); None: not
        one of them (set address static goes on to netsh_address)."""
        low = [w.lower() for w in a]
        kv = {w.split("=", 1)[0].lower(): w.split("=", 1)[1] for w in a if "=" in w}
        net = self.m.network
        missing = Result(b"The filename, directory name, or volume label syntax is incorrect.\r\n\r\n", b"", 1)
        if low[:2] == ["set", "interface"]:
            nic = find_nic(net, kv.get("interface", a[2] if len(a) > 2 else ""))
            if nic is None:
                return Result(b"Element not found.\r\n\r\n", b"", 1)
            if kv.get("ignoredefaultroutes", "").lower() == "enabled":
                nic["ignoredefaultroutes"] = True
                net["routes"] = [r for r in net["routes"]
                                 if not (r["interface"] == nic["name"] and r["from"] == "dhcp")]
            return Result(b"Ok.\r\n\r\n")
        if low[:2] == ["set", "address"] and "dhcp" in low[3:]:
            nic = find_nic(net, kv.get("name", ""))
            if nic is None:
                return missing
            if nic["dhcp"]:
                return Result(b"DHCP is already enabled on this interface.\r\n\r\n", b"", 1)
            nic.update({"dhcp": True, "address": None, "mask": None})
            return Result(b"\r\n")
        if low[:2] in (["set", "dns"], ["set", "dnsservers"], ["add", "dns"], ["add", "dnsservers"]):
            nic = find_nic(net, kv.get("name", ""))
            if nic is None:
                return missing
            args = [w for w in a[3:] if "=" not in w]
            if low[0] == "set" and args[:1] == ["dhcp"]:
                nic["dns"] = []
                nic["dns_from"] = "dhcp"
            elif low[0] == "set" and len(args) == 2 and args[0].lower() == "static":
                nic["dns"] = [args[1]]
                nic["dns_from"] = "static"
            elif low[0] == "add" and len(args) == 1:
                at = int(kv.get("index", len(nic["dns"]) + 1)) - 1
                nic["dns"].insert(at, args[0])
            else:
                return Result(b"The syntax supplied for this command is not valid.\r\n", b"", 1)
            return Result(b"\r\n")
        if low[:2] == ["show", "address"]:
            if len(a) == 2:
                return Result(b"".join(self.show_address(n) for n in net["interfaces"]) + b"\r\n")
            nic = find_nic(net, kv.get("name", a[2] if len(a) > 2 else ""))
            if nic is None:
                return Result(b"The interface is not known.\r\n", b"", 1)
            return Result(self.show_address(nic) + b"\r\n")
        return None

    def show_address(self, nic):
        """One interface's block of `netsh interface ip show address`."""
        net = self.m.network
        gw = [r["gateway"] for r in net["routes"] if r["interface"] == nic["name"]]
        out = f'\r\nConfiguration for interface "{nic["name"]}"\r\n' \
              f'    DHCP enabled:                         {"Yes" if nic["dhcp"] else "No"}\r\n'
        if nic["address"]:
            bits = bin(int.from_bytes(bytes(int(x) for x in nic["mask"].split(".")), "big")).count("1")
            subnet = ".".join(str(int(x) & int(m)) for x, m in zip(nic["address"].split("."), nic["mask"].split(".")))
            out += f'    IP Address:                           {nic["address"]}\r\n' \
                   f'    Subnet Prefix:                        {subnet}/{bits} (mask {nic["mask"]})\r\n'
        if gw:
            out += f'    Default Gateway:                      {gw[0]}\r\n'
        return out.encode()

    def p_getmac(self, a, text, stdin):
        if [w.lower() for w in a] != ["/v", "/fo", "csv", "/nh"]:
            return fail("ERROR: Invalid argument/option - see GETMAC /?\r\n")
        rows = "".join(f'"{n["name"]}","Intel(R) 82574L Gigabit Network Connection","{n["mac"]}",'
                       f'"\\Device\\Tcpip_{{{n["guid"]}}}"\r\n' for n in self.m.network["interfaces"])
        return Result(rows.encode())

    def p_route(self, a, text, stdin):
        low = [w.lower() for w in a]
        persistent = "-p" in low[:1]
        if persistent:
            low, a = low[1:], a[1:]
        net = self.m.network
        if low == ["delete", "0.0.0.0", "mask", "0.0.0.0"]:
            if not any(r["dest"] == "0.0.0.0" for r in net["routes"]):
                return Result(b"The route deletion failed: Element not found.\r\n\r\n", b"", 1)
            net["routes"] = [r for r in net["routes"] if r["dest"] != "0.0.0.0"]
            return Result(b" OK!\r\n")
        if len(low) == 7 and low[:4] == ["add", "0.0.0.0", "mask", "0.0.0.0"] and low[5] == "metric":
            gw = a[4]
            nic = next((n for n in net["interfaces"] if n["address"] and in_subnet(gw, n["address"], n["mask"])), None)
            if nic is None:
                return Result(b"The route addition failed: The parameter is incorrect.\r\n\r\n", b"", 1)
            net["routes"].append({"dest": "0.0.0.0", "mask": "0.0.0.0", "gateway": gw, "interface": nic["name"],
                                  "metric": int(low[6]), "persistent": persistent, "from": "route"})
            return Result(b" OK!\r\n")
        return fail("Bad argument\r\n")

    def p_powercfg(self, a, text, stdin):
        """Vista and later: /change SETTING N, /hibernate off. XP/2003: the
        scheme-name form `/change "NAME" /SETTING N` (VCL's Version_5.pm
        disable_sleep) and `/query`, which prints the scheme's Name."""
        low = [w.lower().replace("-", "/", 1) if w.startswith("-") else w.lower() for w in a]
        xp = self.m.cfg.no_powershell
        bad = fail("Invalid Parameters -- try \"/?\" for help\r\n")
        if xp and low == ["/query"]:
            rows = [("Field Description", "Value"), ("-----------------", "-----"),
                    ("Name", self.m.power_scheme), ("Numerical ID", "2")]
            rows += [(k, f"After {v} mins" if v else "Never") for k, v in sorted(self.m.powercfg.items())
                     if k != "hibernate"]
            return Result("".join(f"{k:<27}{v}\r\n" for k, v in rows).encode())
        if low[:1] in (["/change"], ["/x"]):
            if xp:
                if len(a) != 4 or a[1].lower() != self.m.power_scheme.lower() or not low[2].startswith("/") \
                        or low[2][1:] not in POWERCFG_SETTINGS or not low[3].isdigit():
                    return bad
                setting, value = low[2][1:], low[3]
            else:
                if len(low) != 3 or low[1] not in POWERCFG_SETTINGS or not low[2].isdigit():
                    return bad
                setting, value = low[1], low[2]
            self.m.powercfg[setting] = int(value)
            return Result()
        if len(low) == 2 and low[0] in ("/hibernate", "/h") and low[1] in ("on", "off"):
            self.m.powercfg["hibernate"] = low[1]
            return Result()
        return bad

    def p_ipconfig(self, a, text, stdin):
        if len(a) == 2 and a[0].lower() == "/renew":
            nic = find_nic(self.m.network, a[1])
            if nic is None or not nic["dhcp"]:
                return fail(f"\r\nWindows IP Configuration\r\n\r\nAn error occurred while renewing interface "
                            f"{a[1]} : The system cannot find the file specified.\r\n")
            self.m.network["dhcp_renewed"] += 1
            nic_lease(self.m.network, nic)
            return Result(f"\r\nWindows IP Configuration\r\n\r\nEthernet adapter {nic['name']}:\r\n\r\n"
                          f"   IPv4 Address. . . . . . . . . . . : {nic['address']}\r\n".encode())
        if [w.lower() for w in a] == ["/renew"]:
            for n in self.m.network["interfaces"]:
                if n["dhcp"]:
                    nic_lease(self.m.network, n)
            self.m.network["dhcp_renewed"] += 1
            return Result(b"\r\nWindows IP Configuration\r\n\r\nEthernet adapter Ethernet:\r\n\r\n"
                          b"   IPv4 Address. . . . . . . . . . . : 192.0.2.7\r\n")
        return fail("Error: unrecognized or incomplete command line.\r\n")

    def p_net(self, a, text, stdin):
        """net start w32time."""
        low = [w.lower() for w in a]
        if low == ["start", "w32time"]:
            if self.m.w32time["running"]:
                return Result(b"", b"The requested service has already been started.\r\n\r\n"
                              b"More help is available by typing NET HELPMSG 2182.\r\n", 2)
            self.m.w32time["running"] = True
            return Result(b"The Windows Time service is starting.\r\nThe Windows Time service was started "
                          b"successfully.\r\n\r\n")
        return fail("The syntax of this command is:\r\n\r\nNET\r\n", 1)

    def p_w32tm(self, a, text, stdin):
        """w32tm /config /manualpeerlist:"A B" /syncfromflags:manual /update,
        and /resync [/rediscover] (Microsoft's w32tm reference). The service
        must run; a peer whose name ends in .invalid never answers."""
        low = [w.lower() for w in a]
        not_running = Result(b"The following error occurred: The service has not been started. (0x80070426)\r\n",
                             b"", 1)
        if low[:1] == ["/config"]:
            opts = dict((w.split(":", 1) + [""])[:2] for w in a[1:])
            opts = {k.lower(): v for k, v in opts.items()}
            if set(opts) - {"/manualpeerlist", "/syncfromflags", "/update", "/reliable"}:
                return Result(b"The following arguments were unexpected:\r\n", b"", 87)
            if not self.m.w32time["running"]:
                return not_running
            if "/manualpeerlist" in opts:
                self.m.w32time["peers"] = opts["/manualpeerlist"].split()
            return Result(b"The command completed successfully.\r\n")
        if low[:1] == ["/resync"] and set(low[1:]) <= {"/rediscover", "/nowait", "/force"}:
            if not self.m.w32time["running"]:
                return not_running
            return self.w32tm_resync()
        return Result(b"The following arguments were unexpected:\r\n", b"", 87)

    # -- the clock (Microsoft, "Windows Time service tools and settings":
    # MaxPosPhaseCorrection / MaxNegPhaseCorrection, 54000 s on a stand-alone
    # computer, 0xFFFFFFFF for any correction; w32tm's "The computer did not
    # resync because the required time change was too big."; "Maximum
    # tolerance for computer clock synchronization": Kerberos refuses a
    # clock more than 5 minutes off, which a join reports as 1398,
    # ERROR_TIME_SKEW) -------------------------------------------------------
    def phase_limit(self, name):
        v = self.m.registry.get(W32TIME_KEY.lower(), {}).get(name)
        return int(v[1]) if v else 54000

    def w32tm_resync(self):
        """/resync: fails while --resync-fails lasts, when every peer ends
        in .invalid, or when the clock is further off than the phase
        limits allow; otherwise the clock is right."""
        t = self.m.w32time
        peers = t["peers"] or []
        t["resyncs"] += 1
        head = b"Sending resync command to local computer\r\n"
        if t["resyncs"] <= self.m.cfg.resync_fails or not peers or \
                all(p.lower().endswith(".invalid") for p in peers):
            return Result(head + b"The computer did not resync because no time data was available.\r\n", b"", 1)
        off = t["offset"]
        if off > self.phase_limit("MaxNegPhaseCorrection") or -off > self.phase_limit("MaxPosPhaseCorrection"):
            t["refused_too_big"] += 1
            return Result(head + b"The computer did not resync because the required time change was too big.\r\n",
                          b"", 1)
        t["offset"] = 0
        t["synced"] += 1
        return Result(head + b"The command completed successfully.\r\n")

    def p_sc(self, a, text, stdin):
        """sc config w32time start= auto (the service's start type)."""
        low = [w.lower() for w in a]
        if low[:2] == ["config", "w32time"] and len(low) == 4 and low[2] == "start=" and \
                low[3] in ("auto", "demand", "disabled", "delayed-auto"):
            self.m.w32time["start"] = low[3]
            return Result(b"[SC] ChangeServiceConfig SUCCESS\r\n")
        return fail("[SC] stand-in: only `sc config w32time start= TYPE` is simulated\r\n", 1639)

    # -- the image's hooks and the environment cmd.exe passes on -----------
    def p_set(self, a, text, stdin):
        """set "NAME=VALUE": the variable for the rest of the line."""
        body = text[3:].strip()
        if body.startswith('"') and body.endswith('"'):
            body = body[1:-1]
        if "=" not in body:
            return fail("Environment variable not defined\r\n")
        k, v = body.split("=", 1)
        self.env[k.upper()] = v
        return Result()

    def p_dir(self, a, text, stdin):
        """dir /b /a-d /on PATTERN...: the bare names of the files that
        match, by name; "File Not Found" (exit 1) when none does."""
        pats = [w for w in a if not w.startswith("/")]
        names = sorted({self.m.display.get(k, k).rsplit("\\", 1)[-1] for p in pats for k in self.m.matching(p)},
                       key=str.lower)
        if not names:
            return Result(b"", b"File Not Found\r\n", 1)
        return Result("".join(n + "\r\n" for n in names).encode())

    def p_powershell(self, a, text, stdin):
        i = 0
        while i < len(a):
            w = a[i].lower()
            if w in ("-noprofile", "-nop", "-noninteractive", "-noni", "-nologo"):
                i += 1
            elif w in ("-executionpolicy", "-ep", "-exec") and i + 1 < len(a):
                i += 2
            elif w in ("-command", "-c"):
                i += 1
                break
            elif w in ("-file", "-f"):
                if i + 1 >= len(a) or self.m.read(a[i + 1]) is None:
                    path = a[i + 1] if i + 1 < len(a) else ""
                    return fail(f"The argument '{path}' to the -File parameter does not exist. Provide the "
                                "path to an existing '.ps1' file as an argument to the -File parameter.\r\n")
                return self.script(a[i + 1], a[i + 2:])
            elif w.startswith("-"):
                return fail(f"-{w[1:]} : The term '{a[i]}' is not recognized as the name of a cmdlet.\r\n")
            else:
                break
        # powershell.exe joins what follows -Command with spaces: the quotes
        # the command line held are gone by now.
        return PowerShell(self).run(" ".join(a[i:]))


# -- PowerShell -----------------------------------------------------------------
# Just the statements reimage sends: if / foreach, string literals and +,
# variables, $env:COMPUTERNAME, Test-Path, Remove-Item, Rename-Computer,
# (Get-Content -Raw F).Trim(), [adsi] SetPassword, the boot-time query.
# Anything else: "The term 'X' is not recognized", exit 1.

class PSError(Exception):
    pass


def ps_split(s, sep):
    parts, cur, depth, q = [], [], 0, None
    for c in s:
        if q:
            if c == q:
                q = None
        elif c in "'\"":
            q = c
        elif c in "({[":
            depth += 1
        elif c in ")}]":
            depth -= 1
        elif c == sep and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
            continue
        cur.append(c)
    if q or depth:
        raise PSError("Missing closing quote or bracket: the string is missing the terminator.")
    parts.append("".join(cur).strip())
    return parts


def ps_group(s, i):
    """s[i] opens a bracket: (inside, index after the closing one)."""
    close = {"(": ")", "{": "}", "[": "]"}[s[i]]
    depth, q = 0, None
    for j in range(i, len(s)):
        c = s[j]
        if q:
            if c == q:
                q = None
        elif c in "'\"":
            q = c
        elif c in "({[":
            depth += 1
        elif c in ")}]":
            depth -= 1
            if depth == 0:
                if c != close:
                    break
                return s[i + 1:j], j + 1
    raise PSError(f"Missing closing '{close}' in statement block or type definition.")


LITERAL = r"'(?:[^']|'')*'"
TERM = re.compile(r"[A-Za-z][\w-]*")


class PowerShell:
    def __init__(self, shell):
        self.sh = shell
        self.m = shell.m
        self.vars = {}
        self.out = []

    def run(self, script):
        try:
            self.block(script)
        except PSError as e:
            out = "".join(f"{o}\r\n" for o in self.out).encode()
            return Result(out, f"{e}\r\n".encode(), 1)
        return Result("".join(f"{o}\r\n" for o in self.out).encode())

    def block(self, text):
        for st in ps_split(text, ";"):
            if st:
                self.statement(st)

    def statement(self, st):
        mt = re.match(r"(?i)^(if|foreach)\s*\(", st)
        if mt:
            head, j = ps_group(st, mt.end() - 1)
            rest = st[j:].lstrip()
            if not rest.startswith("{"):
                raise PSError(f"Missing statement block after {mt.group(1)} ( condition ).")
            body, k = ps_group(rest, 0)
            tail = rest[k:].strip()
            other = None
            em = re.match(r"(?i)else\s*\{", tail)
            if mt.group(1).lower() == "if" and em:
                other, j = ps_group(tail, em.end() - 1)
                tail = tail[j:].strip()
            if tail:
                raise PSError(f"Unexpected token '{tail}' in expression or statement.")
            if mt.group(1).lower() == "if":
                if self.truthy(self.cond(head)):
                    self.block(body)
                elif other is not None:
                    self.block(other)
                return
            fm = re.fullmatch(r"(?s)\s*\$(\w+)\s+in\s+(.+)", head)
            if not fm:
                raise PSError("Missing 'in' after variable in foreach loop.")
            items = self.expr(fm.group(2))
            for item in items if isinstance(items, list) else [items]:
                self.vars[fm.group(1).lower()] = item
                self.block(body)
            return
        mt = re.fullmatch(r"(?s)\$(\w+)\s*=\s*(.+)", st)
        if mt:
            self.vars[mt.group(1).lower()] = self.expr(mt.group(2))
            return
        mt = re.fullmatch(r"(?is)\(\s*\[adsi\]\s*'WinNT://\./([^',/]+),user'\s*\)\s*\.SetPassword\((.*)\)", st)
        if mt:
            user, pw = mt.group(1), self.expr(mt.group(2))
            if not isinstance(pw, str) or pw == "" or not meets_policy(self.m, pw):
                raise PSError('Exception calling "SetPassword" with "1" argument(s): "The password does not meet '
                              'the password policy requirements."')
            match = [u for u in self.m.accounts if u.lower() == user.lower()]
            if not match:
                raise PSError('Exception calling "SetPassword" with "1" argument(s): "The user name could not be '
                              'found."')
            self.m.accounts[match[0]] = pw
            self.m.password_set_via = "powershell"
            return
        mt = TERM.match(st)
        if mt and self.m.cfg.powershell_2 and mt.group(0).lower() == "rename-computer":
            self.not_recognized(mt.group(0))
        if mt and mt.group(0).lower() in ("remove-item", "rename-computer", "write-output"):
            return getattr(self, "c_" + mt.group(0).lower().replace("-", "_"))(self.params(st[mt.end():]))
        v = self.expr(st)
        if v is not None:
            self.out.append(self.show(v))

    def params(self, text):
        """Named (-Name value / -Switch) and positional arguments."""
        words = ps_split(re.sub(r"\s+", " ", text.strip()), " ") if text.strip() else []
        named, pos, i = {}, [], 0
        while i < len(words):
            w = words[i]
            if w.startswith("-") and re.fullmatch(r"-[A-Za-z]+", w):
                name = w[1:].lower()
                if name in ("force", "recurse", "passthru"):
                    named[name] = True
                    i += 1
                else:
                    if i + 1 >= len(words):
                        raise PSError(f"Missing an argument for parameter '{w[1:]}'.")
                    named[name] = words[i + 1]
                    i += 2
            else:
                pos.append(w)
                i += 1
        return named, pos

    def arg(self, w):
        if re.fullmatch(LITERAL, w) or w.startswith("$") or w.startswith("("):
            return self.expr(w)
        return w  # a bare word

    def c_remove_item(self, p):
        named, pos = p
        path = named.get("path") or (pos[0] if pos else None)
        if path is None or set(named) - {"path", "force"} or len(pos) > (0 if "path" in named else 1):
            raise PSError("Remove-Item : A parameter cannot be found that matches the parameter name.")
        path = self.arg(path)
        if not self.m.remove(path):
            raise PSError(f"Remove-Item : Cannot find path '{path}' because it does not exist.")

    def c_rename_computer(self, p):
        named, pos = p
        new = named.get("newname") or (pos[0] if len(pos) == 1 else None)
        if new is None or set(named) - {"newname", "force", "erroraction", "restart"}:
            raise PSError("Rename-Computer : A parameter cannot be found that matches the parameter name.")
        new = self.arg(new)
        if not re.fullmatch(r"(?=.*[A-Za-z-])[A-Za-z0-9-]{1,15}", new):
            raise PSError(f"Rename-Computer : Skip computer '{self.m.name}' with new name '{new}' because "
                          "the new name is not valid.")
        self.m.pending_name = new
        self.m.renamed_via = "Rename-Computer"
        self.out.append("WARNING: The changes will take effect after you restart the computer "
                        f"{self.m.name}.")

    def c_write_output(self, p):
        named, pos = p
        for w in pos:
            self.out.append(self.show(self.arg(w)))

    def cond(self, text):
        parts = re.split(r"(?i)\s+-(ne|eq)\s+", text.strip())
        if len(parts) == 3:
            a, b = self.expr(parts[0]), self.expr(parts[2])
            same = str(a).lower() == str(b).lower()
            return same if parts[1].lower() == "eq" else not same
        return self.expr(text)

    @staticmethod
    def truthy(v):
        return bool(v)

    @staticmethod
    def show(v):
        if isinstance(v, bool):
            return "True" if v else "False"
        if isinstance(v, list):
            return "\r\n".join(PowerShell.show(x) for x in v)
        return str(v)

    def expr(self, text):
        t = text.strip()
        if not t:
            raise PSError("An expression was expected after '('.")
        parts = ps_split(t, "+")
        if len(parts) > 1:
            vals = [self.expr(x) for x in parts]
            return "".join(self.show(v) for v in vals)
        if re.fullmatch(LITERAL, t):
            return t[1:-1].replace("''", "'")
        if t.startswith('"') and t.endswith('"') and len(t) >= 2:
            return re.sub(r"\$(env:)?(\w+)", lambda mt: self.show(self.var(mt.group(0))), t[1:-1])
        if t.startswith("$"):
            return self.var(t)
        if t.startswith("@(") and t.endswith(")"):
            inner, _ = ps_group(t, 1)
            return [self.expr(x) for x in ps_split(inner, ",") if x]
        mt = re.fullmatch(r"(?is)\(\s*Get-Content\s+-Raw\s+(.+?)\s*\)\s*\.Trim\(\)", t)
        if mt and self.m.cfg.powershell_2:
            raise PSError("Get-Content : A parameter cannot be found that matches parameter name 'Raw'.")
        if mt:
            path = self.arg(mt.group(1))
            data = self.m.read(path)
            if data is None:
                raise PSError(f"Get-Content : Cannot find path '{path}' because it does not exist.")
            return data.decode("utf-8-sig", "replace").strip()
        if re.fullmatch(r"(?is)\(\s*Get-CimInstance\s+(-ClassName\s+)?Win32_OperatingSystem\s*\)"
                        r"\.LastBootUpTime\.ToUniversalTime\(\)\.ToString\(\s*'o'\s*\)", t) \
                and not self.m.cfg.powershell_2:
            self.m.boot_time_reads["cim"] += 1
            return net_time(self.m.boot_time)
        if re.fullmatch(r"(?is)\(?\s*Get-CimInstance\s+(-ClassName\s+)?Win32_ComputerSystem\s*\)?", t) \
                and not self.m.cfg.powershell_2:
            return {"Domain": self.m.domain or "WORKGROUP", "PartOfDomain": bool(self.m.domain),
                    "Name": self.m.name}
        mt = re.fullmatch(r"(?is)Invoke-CimMethod\s+-InputObject\s+\((.+?)\)\s+-MethodName\s+(\w+)"
                          r"\s+-Arguments\s+@\{\s*FUnjoinOptions\s*=\s*(\d+)\s*\}", t)
        if mt and not self.m.cfg.powershell_2:
            cs = self.expr(mt.group(1))
            if not isinstance(cs, dict) or mt.group(2).lower() != "unjoindomainorworkgroup":
                raise PSError("Invoke-CimMethod : stand-in: only UnjoinDomainOrWorkgroup on Win32_ComputerSystem")
            # 2692: NERR_NotJoined, as Win32_ComputerSystem documents.
            code = 0 if self.m.member_of() else 2692
            if code == 0:
                self.m.pending_domain = ""
                self.m.domain_unjoins += 1
            return {"ReturnValue": code}
        mt = re.fullmatch(r"(?is)Test-Path\s+(.+)", t)
        if mt:
            return self.m.exists(self.arg(mt.group(1).strip()))
        if t.startswith("(") and t.endswith(")"):
            inner, j = ps_group(t, 0)
            if j == len(t):
                return self.expr(inner)
        word = TERM.search(t)  # the first command name, inside brackets too
        self.not_recognized(word.group(0) if word else t.split()[0])

    def not_recognized(self, name):
        self.m.not_recognized.append(name)
        raise PSError(f"{name} : The term '{name}' is not recognized as the name of a cmdlet, function, "
                      "script file, or operable program. Check the spelling of the name, or if a path was "
                      "included, verify that the path is correct and try again.")

    def var(self, ref):
        if ref.lower() == "$env:computername":
            return self.m.name
        if ref.lower().startswith("$env:"):
            return ""
        if ref.lower() in ("$true", "$false"):
            return ref.lower() == "$true"
        name = ref[1:].lower()
        mt = re.fullmatch(r"(\w+)\.(\w+)", name)
        if mt and isinstance(self.vars.get(mt.group(1)), dict):
            obj = {k.lower(): v for k, v in self.vars[mt.group(1)].items()}
            return obj.get(mt.group(2))
        if not re.fullmatch(r"\w+", name):
            raise PSError(f"Unexpected token '{ref}' in expression or statement.")
        return self.vars.get(name)


def request_shell_id(root):
    """The ShellId selector of a request, or None."""
    shell_id = None
    for sel in root.iter():
        if local(sel.tag) == "Selector" and sel.get("Name") == "ShellId":
            shell_id = (sel.text or "").strip()
    return shell_id


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without TCP_NODELAY the body
    # waits for the client's delayed ACK (~40 ms a request), a cost
    # Windows' HTTP.sys does not have.
    disable_nagle_algorithm = True
    server_version = "Microsoft-HTTPAPI/2.0"
    sys_version = ""

    def log_message(self, fmt, *args):
        sys.stderr.write("winrm-standin: " + (fmt % args) + "\n")

    def do_GET(self):
        self.send_response(405)
        self.send_header("Allow", "POST")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def authorized(self, root, req, shell_id):
        """The request's login against the machine's accounts (winrm_auth
        authenticated a Negotiate login already; a Basic header only claims
        one). A shell keeps the logon it was opened with (stand-in
        assumption): after SetPassword changes the password of the user it
        runs as, its open shell still answers, new shells need the new
        password."""
        cfg = self.server.cfg
        self.creds = None
        if cfg.user is None:
            return True
        if req.creds is None:
            return False
        self.creds = req.creds
        user, password = req.creds
        machine = self.server.machine
        with machine.lock:
            if shell_id and machine.shell_logons.get(shell_id) == self.creds:
                return True
            if req.scheme == "negotiate":
                return True
            if machine.auth_disabled():
                return False
            # Windows user names are case-insensitive; passwords are not.
            return any(u.lower() == user and p == password for u, p in machine.accounts.items())

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path.split("?")[0].lower() != "/wsman":
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        # Authentication and message encryption: winrm_auth.py.
        gate = self.server.gate
        req = gate.open(self, raw)
        if req is None:
            return
        self.server.life.record_wire(req.body)
        if req.scheme is None and not req.body:
            # No login and nothing to identify: the client's first leg.
            gate.challenge(self)
            return
        if not req.content_type.lower().startswith("application/soap+xml"):
            self.send_response(415)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        try:
            root = ET.fromstring(req.body)
        except ET.ParseError as e:
            return gate.reply(self, req, 400, fault("", "Sender", "w:SchemaValidationError",
                                                    f"The SOAP XML in the message does not match the schema: {e}",
                                                    2150858817))
        shell_id = request_shell_id(root)
        if self.server.life.before_request(shell_id):
            # Rebooting: this connection goes with the machine, unanswered.
            self.close_connection = True
            return
        if find(root, "Identify") is not None and find(root, "Identify").tag == f"{{{NS_WSMID}}}Identify":
            return gate.reply(self, req, 200, self.identify())
        if not self.authorized(root, req, shell_id):
            gate.challenge(self)
            return
        status, text = self.dispatch(root)
        self.server.machine_changed()
        gate.reply(self, req, status, text)
        action_el = find(root, "Action")
        self.server.life.after_request((action_el.text or "").strip() if action_el is not None else "", shell_id)

    def identify(self):
        return (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f'<s:Envelope xmlns:s="{NS_S}" xmlns:wsmid="{NS_WSMID}">'
            "<s:Header/><s:Body><wsmid:IdentifyResponse>"
            f"<wsmid:ProtocolVersion>{NS_W}</wsmid:ProtocolVersion>"
            "<wsmid:ProductVendor>Microsoft Corporation</wsmid:ProductVendor>"
            f"<wsmid:ProductVersion>{self.server.cfg.product_version}</wsmid:ProductVersion>"
            "</wsmid:IdentifyResponse></s:Body></s:Envelope>"
        )

    def dispatch(self, root):
        machine = self.server.machine
        header = find(root, "Header")
        body = find(root, "Body")
        if header is None or body is None:
            return 400, fault("", "Sender", "w:SchemaValidationError", "Missing SOAP Header or Body.",
                              2150858817)
        action_el = find(header, "Action")
        action = (action_el.text or "").strip() if action_el is not None else ""
        mid_el = find(header, "MessageID")
        mid = (mid_el.text or "").strip() if mid_el is not None else ""
        res_el = find(header, "ResourceURI")
        resource = (res_el.text or "").strip() if res_el is not None else ""
        op_el = find(header, "OperationTimeout")
        op_timeout = parse_duration(op_el.text if op_el is not None else "", 60.0)
        shell_id = None
        for sel in header.iter():
            if local(sel.tag) == "Selector" and sel.get("Name") == "ShellId":
                shell_id = (sel.text or "").strip()

        known = (A_CREATE, A_DELETE, A_COMMAND, A_RECEIVE, A_SIGNAL, A_SEND)
        if action not in known:
            return 500, fault(mid, "Sender", "a:ActionNotSupported",
                              f"The action is not supported by the service: {action}", 2150858771)
        if resource != RESOURCE_CMD:
            return 500, fault(mid, "Sender", "w:DestinationUnreachable",
                              f"The WS-Management service cannot process the request. The resource URI "
                              f"is not supported: {resource}", 2150858770)

        if action == A_CREATE:
            sid = str(uuid.uuid4()).upper()
            with machine.lock:
                machine.shells[sid] = {}
                machine.shell_logons[sid] = self.creds
                if self.creds:
                    winrm_accounts.logon(machine, self.creds[0])
            body_xml = (
                "<x:ResourceCreated>"
                f"<a:Address>http://127.0.0.1:{self.server.server_address[1]}/wsman</a:Address>"
                "<a:ReferenceParameters>"
                f"<w:ResourceURI>{RESOURCE_CMD}</w:ResourceURI>"
                f'<w:SelectorSet><w:Selector Name="ShellId">{sid}</w:Selector></w:SelectorSet>'
                "</a:ReferenceParameters></x:ResourceCreated>"
                f"<rsp:Shell><rsp:ShellId>{sid}</rsp:ShellId>"
                f"<rsp:ResourceUri>{RESOURCE_CMD}</rsp:ResourceUri>"
                "<rsp:InputStreams>stdin</rsp:InputStreams>"
                "<rsp:OutputStreams>stdout stderr</rsp:OutputStreams></rsp:Shell>"
            )
            return 200, envelope("http://schemas.xmlsoap.org/ws/2004/09/transfer/CreateResponse", mid, body_xml)

        with machine.lock:
            shell = machine.shells.get(shell_id or "")
        if shell is None:
            return 500, fault(mid, "Sender", "w:InvalidSelectors",
                              "The WS-Management service cannot process the request because the request "
                              f"contained invalid selectors for the resource (ShellId {shell_id}).",
                              2150858843)

        if action == A_DELETE:
            with machine.lock:
                machine.shells.pop(shell_id, None)
                machine.shell_logons.pop(shell_id, None)
            return 200, envelope("http://schemas.xmlsoap.org/ws/2004/09/transfer/DeleteResponse", mid, "")

        if action == A_COMMAND:
            cl = find(body, "CommandLine")
            if cl is None or find(cl, "Command") is None:
                return 500, fault(mid, "Sender", "w:SchemaValidationError",
                                  "CommandLine/Command is missing.", 2150858817)
            parts = [(find(cl, "Command").text or "").strip()]
            parts += [(el.text or "") for el in cl if local(el.tag) == "Arguments"]
            line = " ".join(p for p in parts if p != "")
            with machine.lock:
                machine.current_shell = shell_id
                machine.commands.append(line)
                try:
                    r = Shell(machine).line(line)
                except Exception:  # a stand-in bug: say so, loudly, as a failed command
                    traceback.print_exc()
                    r = fail("winrm-standin: internal error simulating this command\r\n", 99)
            cid = str(uuid.uuid4()).upper()
            entry = {"stdout": r.out, "stderr": r.err, "code": r.code, "line": line,
                     "stdin": b"", "on_stdin": r.on_stdin}
            if r.on_stdin is not None:
                entry["ready_at"] = float("inf")
            else:
                entry["ready_at"] = time.monotonic() + r.secs
            with machine.lock:
                shell[cid] = entry
            body_xml = f"<rsp:CommandResponse><rsp:CommandId>{cid}</rsp:CommandId></rsp:CommandResponse>"
            return 200, envelope("http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandResponse",
                                 mid, body_xml)

        if action == A_RECEIVE:
            ds = find(body, "DesiredStream")
            cid = ds.get("CommandId") if ds is not None else None
            with machine.lock:
                cmd = shell.get(cid or "")
            if cmd is None:
                return 500, fault(mid, "Sender", "w:InvalidParameter",
                                  f"The command id {cid} is not valid for this shell.", 2150858882)
            wait = cmd["ready_at"] - time.monotonic()
            if wait > 0:
                time.sleep(min(wait, op_timeout))
                if cmd["ready_at"] > time.monotonic():
                    return 500, fault(mid, "Receiver", "w:TimedOut",
                                      "The WS-Management service cannot complete the operation within "
                                      "the time specified in OperationTimeout.  ", TIMED_OUT_CODE)
            streams = ""
            for name in ("stdout", "stderr"):
                data = cmd[name]
                if data:
                    streams += (f'<rsp:Stream Name="{name}" CommandId="{cid}">'
                                f"{base64.b64encode(data).decode()}</rsp:Stream>")
                streams += f'<rsp:Stream Name="{name}" CommandId="{cid}" End="true"></rsp:Stream>'
            body_xml = (
                '<rsp:ReceiveResponse>'
                f"{streams}"
                f'<rsp:CommandState CommandId="{cid}" State="{STATE_DONE}">'
                f"<rsp:ExitCode>{cmd['code']}</rsp:ExitCode></rsp:CommandState>"
                "</rsp:ReceiveResponse>"
            )
            return 200, envelope("http://schemas.microsoft.com/wbem/wsman/1/windows/shell/ReceiveResponse",
                                 mid, body_xml)

        if action == A_SEND:
            stream = find(body, "Stream")
            cid = stream.get("CommandId") if stream is not None else None
            with machine.lock:
                cmd = shell.get(cid or "")
                if cmd is None or stream.get("Name") != "stdin":
                    return 500, fault(mid, "Sender", "w:InvalidParameter",
                                      f"The command id {cid} or stream is not valid for this shell.",
                                      2150858882)
                try:
                    cmd["stdin"] += base64.b64decode("".join((stream.text or "").split()), validate=True)
                except ValueError:
                    return 500, fault(mid, "Sender", "w:SchemaValidationError",
                                      "The stdin stream is not valid base64.", 2150858817)
                if stream.get("End", "").lower() == "true":
                    if cmd["on_stdin"] is not None:
                        cmd["stdout"], cmd["stderr"], cmd["code"] = cmd["on_stdin"](cmd["stdin"])
                        cmd["on_stdin"] = None
                    cmd["ready_at"] = min(cmd["ready_at"], time.monotonic())
            return 200, envelope("http://schemas.microsoft.com/wbem/wsman/1/windows/shell/SendResponse",
                                 mid, "<rsp:SendResponse/>")

        # A_SIGNAL
        sig = find(body, "Signal")
        cid = sig.get("CommandId") if sig is not None else None
        with machine.lock:
            shell.pop(cid or "", None)
        return 200, envelope("http://schemas.microsoft.com/wbem/wsman/1/windows/shell/SignalResponse",
                             mid, "<rsp:SignalResponse/>")


class Server(ThreadingHTTPServer):
    """One thread per connection; the TLS handshake runs in that thread, so
    a client that rejects our certificate or stalls blocks nobody else."""

    daemon_threads = True
    tls = None
    life = None

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.conns = set()
        self.conns_lock = threading.Lock()

    @property
    def machine(self):
        return self.life.machine

    @property
    def cfg(self):
        return self.life.cfg

    def machine_changed(self):
        with self.machine.lock:
            self.machine.dump()

    def handle_error(self, request, client_address):
        # A simulated reboot cuts connections: no tracebacks for those.
        if self.machine.up:
            super().handle_error(request, client_address)

    def verify_request(self, request, client_address):
        """While the machine is down, every connection is reset at once
        (and counted: the machine comes back after --down-connects)."""
        if self.life.counts_down():
            request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        return True

    def finish_request(self, request, client_address):
        raw = request
        with self.conns_lock:
            self.conns.add(raw)
        try:
            if self.tls is not None:
                try:
                    request.settimeout(10)
                    request = self.tls.wrap_socket(request, server_side=True)
                    request.settimeout(None)
                except (ssl.SSLError, OSError) as e:
                    sys.stderr.write(f"winrm-standin: TLS handshake with {client_address} failed: {e}\n")
                    return
            super().finish_request(request, client_address)
        finally:
            with self.conns_lock:
                self.conns.discard(raw)

    def cut(self):
        """Drops every open connection, as a computer that goes down does.
        The listening socket stays: the port stays the stand-in's."""
        with self.conns_lock:
            for c in list(self.conns):
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class Life:
    """The machine's boots. Up; a reboot (shutdown /r once the client is
    done with its shell, Sysprep's own, SIGUSR1) takes it down: every open
    connection is cut and the next --down-connects connections are reset;
    then it is up again on a new boot. Moves on events only."""

    def __init__(self, args, cfg):
        self.args = args
        self.cfg = cfg
        self.machine = Machine(cfg)
        m = self.machine

        def accounts():
            with m.lock:
                return dict(m.accounts)

        def disabled():
            with m.lock:
                return m.auth_disabled()

        self.gate = winrm_auth.Service(
            basic="basic" in cfg.auth, negotiate="negotiate" in cfg.auth,
            allow_unencrypted=cfg.allow_unencrypted, https=bool(args.tls_cert),
            accounts=accounts, disabled=disabled, machine_name=lambda: m.name)
        self.server = None
        self.down_left = 0
        self.wire_lock = threading.Lock()

    def listen(self):
        server = Server((self.args.host, self.args.port), Handler)
        server.life = self
        server.gate = self.gate
        if self.args.tls_cert:
            server.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            server.tls.load_cert_chain(self.args.tls_cert, self.args.tls_key)
        self.server = server
        self.machine.boot()
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def record_wire(self, body):
        """--wire-log FILE: every request body as the client wrote it (one
        JSON string a line; a sealed message unsealed, as the service reads
        it), so a test can check what the client sent, secrets included,
        where a command line on Windows would show it. Sealing hides a
        message from the network, not from the computer it is for."""
        if not self.args.wire_log:
            return
        with self.wire_lock, open(self.args.wire_log, "a", encoding="utf-8") as f:
            f.write(json.dumps(body.decode("utf-8", "replace")) + "\n")

    def before_request(self, shell_id):
        """A reboot waits for the client to be done with its shell: any
        request about something else takes the machine down first. True
        when this request found it down (it gets no answer)."""
        m = self.machine
        with m.lock:
            if m.up and m.reboot_shell is not None and shell_id != m.reboot_shell:
                self.go_down()
            return not m.up

    def after_request(self, action, shell_id):
        """The Delete of the shell a reboot waited for: down now."""
        m = self.machine
        with m.lock:
            if m.up and action == A_DELETE and m.reboot_shell is not None and shell_id == m.reboot_shell:
                self.go_down()

    def go_down(self):
        m = self.machine
        with m.lock:
            if not m.up:
                return
            sys.stderr.write("winrm-standin: simulated reboot: going down\n")
            m.up = False
            m.reboot_shell = None
            self.down_left = max(self.args.down_connects, 0)
            m.dump()
            self.server.cut()
            if self.down_left == 0:
                self.come_up()

    def counts_down(self):
        """True (and counted) for a connection while the machine is down."""
        m = self.machine
        with m.lock:
            if m.up:
                return False
            self.down_left -= 1
            if self.down_left <= 0:
                self.come_up()
            return True

    def come_up(self):
        if self.args.tls_cert:
            # The certificate as the booting OS finds it (a reload may have
            # put another one there).
            tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tls.load_cert_chain(self.args.tls_cert, self.args.tls_key)
            self.server.tls = tls
        self.machine.boot()
        sys.stderr.write(f"winrm-standin: back up (boot {self.machine.boots})\n")


def polls(text):
    """A count of reads, or 'never'."""
    return float("inf") if text == "never" else int(text)


def main():
    p = argparse.ArgumentParser(description="WinRM listener stand-in (MS-WSMV formats), for tests")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--user")
    p.add_argument("--password-file")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--auth", default="basic,negotiate",
                   help="winrm/config/service/auth: the schemes that are on, of basic and negotiate "
                        "(Windows as shipped: negotiate)")
    p.add_argument("--no-unencrypted", action="store_true",
                   help="AllowUnencrypted = false: over HTTP only encrypted messages (Windows as shipped)")
    p.add_argument("--stock", action="store_true",
                   help="the WinRM service as Windows ships it: --auth negotiate --no-unencrypted")
    p.add_argument("--state-file", help="dump the simulated Windows state here (JSON) after every change")
    p.add_argument("--wire-log", help="append every request body here as the client wrote it, unsealed "
                                      "(JSON lines)")
    p.add_argument("--answer-files", default="",
                   help="comma-separated Sysprep answer files present at start, 'all' (Vista and later) "
                        "or 'xp' (XP/2003)")
    p.add_argument("--down-connects", type=int, default=2,
                   help="a reboot resets the client's next this many connections, then the machine is up")
    p.add_argument("--sysprep-polls", type=polls, default=0,
                   help="Sysprep's passes end after this many reads of the setup state ('never': they "
                        "never do): ImageState (XP: SystemSetupInProgress) says not complete until then")
    p.add_argument("--sysprep-reboot-at-poll", type=int, default=0,
                   help="Sysprep's reboot: after the client's read of the setup state with this number")
    p.add_argument("--auth-fails", type=int, default=0,
                   help="the first this many logins get 401 (Administrator disabled)")
    p.add_argument("--auth-fails-until",
                   help="every login gets 401 until this file exists (Administrator disabled)")
    p.add_argument("--locale", default="en-US",
                   help="the install's language: de-DE names Windows' own firewall rules and groups in German")
    p.add_argument("--interfaces", default="Ethernet,Public",
                   help="comma-separated network interfaces, NAME or NAME=AA-BB-CC-DD-EE-FF")
    p.add_argument("--ad-domain", help="the Active Directory domain a join may reach")
    p.add_argument("--ad-credentials-file",
                   help="file: the domain user on line 1, its password on line 2 (what a join must send)")
    p.add_argument("--joined-domain", help="the computer starts as a member of this domain")
    p.add_argument("--product-key", choices=["none", "retail", "kmsclient"], default="retail",
                   help="the image's product key: none (slmgr: product not found), a retail key, or a KMS "
                        "client setup key")
    p.add_argument("--edition", default="Professional", help="EditionID in the registry")
    p.add_argument("--kms-count", type=int, default=25,
                   help="the activation count the KMS hosts report (below 25: 0xC004F038)")
    p.add_argument("--computer-name", default="WIN-STANDIN", help="the machine's name at start")
    p.add_argument("--pending-domain",
                   help="a join to this domain was made before the last boot: it applies at the next")
    p.add_argument("--clock-offset", type=int, default=0,
                   help="seconds the computer's clock is off (a join refuses more than 300)")
    p.add_argument("--resync-fails", type=int, default=0, help="the first this many w32tm /resync fail")
    p.add_argument("--hooks", default="", help="comma-separated paths of the image's own post-load hooks")
    p.add_argument("--no-wmic", action="store_true",
                   help="WMIC absent, as on current Windows 11 (an optional feature, off by default)")
    p.add_argument("--local-admin", help="a local administrator other than the built-in one")
    p.add_argument("--local-admin-password-file", help="its password (first line)")
    p.add_argument("--image-token-filter-policy", type=int, choices=[0, 1],
                   help="the image's LocalAccountTokenFilterPolicy (unset: absent, which filters)")
    p.add_argument("--min-password-length", type=int, default=0,
                   help="the image's Minimum password length policy")
    p.add_argument("--wrong-os", action="store_true",
                   help="the boot time never changes (a reboot brings back the same OS)")
    shells = p.add_mutually_exclusive_group()
    shells.add_argument("--no-powershell", action="store_true",
                        help="Windows XP / Server 2003 as installed: no powershell, no netsh advfirewall, "
                             "XP's powercfg")
    shells.add_argument("--powershell-2", action="store_true",
                        help="stock Windows 7 / 2008 R2: no Get-CimInstance, Rename-Computer, Get-Content -Raw")
    a = p.parse_args()

    class Cfg:
        user = a.user
        password = ""
        state_file = a.state_file
        wrong_os = a.wrong_os
        sysprep_polls = a.sysprep_polls
        sysprep_reboot_at_poll = a.sysprep_reboot_at_poll
        locale = a.locale
        interfaces = [(i.split("=", 1)[0], i.split("=", 1)[1] if "=" in i else f"00-15-5D-00-00-{k + 1:02X}")
                      for k, i in enumerate(x for x in a.interfaces.split(",") if x)]
        ad_domain = a.ad_domain
        ad_credentials = None
        joined_domain = a.joined_domain
        product_key = a.product_key
        clock_offset = a.clock_offset
        pending_domain = a.pending_domain
        computer_name = a.computer_name
        resync_fails = a.resync_fails
        hooks = [f for f in a.hooks.split(",") if f]
        no_wmic = a.no_wmic
        edition = a.edition
        kms_count = a.kms_count
        build = 3790 if a.no_powershell else 7601 if a.powershell_2 else 19045
        local_admin = a.local_admin
        local_admin_password = ""
        token_filter_policy = a.image_token_filter_policy
        min_password_length = a.min_password_length
        auth_fails = a.auth_fails
        auth_fails_until = a.auth_fails_until
        auth = {x.strip().lower() for x in ("negotiate" if a.stock else a.auth).split(",") if x.strip()}
        allow_unencrypted = not (a.stock or a.no_unencrypted)
        no_powershell = a.no_powershell
        powershell_2 = a.powershell_2
        product_version = ("OS: 5.2.3790 SP: 2.0 Stack: 2.0" if a.no_powershell
                           else "OS: 6.1.7601 SP: 1.0 Stack: 2.0" if a.powershell_2
                           else "OS: 6.1.7601 SP: 1.0 Stack: 3.0")
        answer_files = (ANSWER_FILES if a.answer_files == "all"
                        else ANSWER_FILES_XP if a.answer_files == "xp"
                        else [f for f in a.answer_files.split(",") if f])

    if a.password_file:
        with open(a.password_file, encoding="utf-8") as f:
            Cfg.password = f.readline().rstrip("\r\n")
    if a.local_admin_password_file:
        with open(a.local_admin_password_file, encoding="utf-8") as f:
            Cfg.local_admin_password = f.readline().rstrip("\r\n")
    if a.ad_credentials_file:
        with open(a.ad_credentials_file, encoding="utf-8") as f:
            lines = f.read().splitlines()
        Cfg.ad_credentials = (lines + ["", ""])[0], (lines + ["", ""])[1]
    life = Life(a, Cfg)
    life.listen()
    print(f"winrm-standin listening on {a.host}:{a.port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # SIGUSR1: a reload (by a test's load command): the computer reboots.
    signal.signal(signal.SIGUSR1, lambda *_: life.go_down())
    # SIGUSR2: a reload that writes the image anew, then boots it.
    signal.signal(signal.SIGUSR2, lambda *_: (reload_image(life.machine), life.go_down()))
    try:
        while not stop.wait(3600):
            pass
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
