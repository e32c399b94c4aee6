#!/usr/bin/env python3
"""Proves the WinRM STAND-IN (winrm_standin.py) is one a real WinRM client
trusts: starts it, drives it with pywinrm (pip install pywinrm) and exits
non-zero on any mismatch. Run from anywhere: python3 check_winrm_standin_with_pywinrm.py

Over Basic, and (ntlm_checks) as Windows ships: Negotiate/NTLM with every
message encrypted (pywinrm's transport='ntlm', message_encryption='always'),
Basic refused, messages in clear refused.
"""

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

import winrm
from winrm.exceptions import InvalidCredentialsError, WinRMError, WinRMTransportError

HERE = os.path.dirname(os.path.abspath(__file__))
FAILURES = []


def check(name, got, want):
    ok = got == want
    print(f"{'ok  ' if ok else 'FAIL'} {name}: got {got!r}" + ("" if ok else f", want {want!r}"))
    if not ok:
        FAILURES.append(name)


def held_port():
    """A port on 127.0.0.1 that no parallel test can take: a socket binds it
    (SO_REUSEADDR) and never listens, so the kernel hands it to no one else
    and connecting is refused, while the stand-in (socketserver sets
    SO_REUSEADDR too) still binds it. Keep the socket while the port is in
    use (testbed's Port does the same for the Rust tests)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    return s, s.getsockname()[1]


def main():
    hold, port = held_port()
    with tempfile.TemporaryDirectory() as tmp:
        pw_file = os.path.join(tmp, "pw")
        with open(pw_file, "w") as f:
            f.write("S3cret&<pw>\n")
        proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "winrm_standin.py"), "--port", str(port),
             "--user", "Administrator", "--password-file", pw_file],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            line = proc.stdout.readline()
            check("stand-in announces it listens", "listening" in line, True)
            run(port)
        finally:
            proc.kill()
            proc.wait()
    ntlm_checks()
    first_boot_checks()
    legacy_checks()
    powershell_2_checks()
    if FAILURES:
        print(f"{len(FAILURES)} check(s) failed: {', '.join(FAILURES)}")
        return 1
    print("pywinrm accepts the stand-in")
    return 0


def run(port):
    url = f"http://127.0.0.1:{port}/wsman"
    s = winrm.Session(url, auth=("Administrator", "S3cret&<pw>"), transport="basic")

    r = s.run_cmd("hostname")
    check("hostname status", r.status_code, 0)
    check("hostname stdout", r.std_out, b"WIN-STANDIN\r\n")

    r = s.run_cmd("cmd", ["/c", "echo", "hi"])
    check("echo status", r.status_code, 0)
    check("echo stdout", r.std_out, b"hi\r\n")
    check("echo stderr", r.std_err, b"")

    r = s.run_cmd("cmd", ["/c", "exit", "3"])
    check("exit 3 status", r.status_code, 3)

    r = s.run_cmd("set-name", ["LAB-PC-07"])
    check("set-name status", r.status_code, 0)
    check("hostname after set-name", s.run_cmd("hostname").std_out, b"LAB-PC-07\r\n")

    r = s.run_cmd("frobnicate")
    check("unknown command status", r.status_code, 1)
    check("unknown command stderr", r.std_err.startswith(b"'frobnicate' is not recognized"), True)

    # Longer than the operation timeout: Receive answers w:TimedOut (code
    # 2150858793); pywinrm turns that into WinRMOperationTimeoutError and
    # polls again, so the command still completes.
    slow = winrm.Session(url, auth=("Administrator", "S3cret&<pw>"), transport="basic",
                         operation_timeout_sec=1, read_timeout_sec=5)
    t0 = time.monotonic()
    r = slow.run_cmd("sleep", ["2.5"])
    took = time.monotonic() - t0
    check("slow command status", r.status_code, 0)
    check("slow command stdout", r.std_out, b"slept 2.5\r\n")
    check("slow command took >= 2.5 s", took >= 2.5, True)

    # The TimedOut fault as pywinrm sees it on a single Receive.
    p = slow.protocol
    shell = p.open_shell()
    cid = p.run_command(shell, "sleep", ["3"])
    try:
        p.get_command_output_raw(shell, cid)
        check("single Receive times out", "no fault", "WinRMOperationTimeoutError")
    except winrm.exceptions.WinRMOperationTimeoutError:
        check("single Receive times out", True, True)
    p.cleanup_command(shell, cid)
    p.close_shell(shell)

    # Upload the way reimage does it: echo base64 chunks, certutil -decode.
    r = s.run_cmd("cmd", ["/c", "type", "nul", ">", '"C:\\Windows\\Temp\\f.b64"'])
    check("truncate status", r.status_code, 0)
    for chunk in ("aGVsbG8g", "d29ybGQK"):
        r = s.run_cmd("cmd", ["/c", "echo", chunk + '>>"C:\\Windows\\Temp\\f.b64"'])
        check("echo chunk status", r.status_code, 0)
    r = s.run_cmd("certutil", ["-f", "-decode", '"C:\\Windows\\Temp\\f.b64"', '"C:\\Windows\\Temp\\f"'])
    check("certutil status", r.status_code, 0)
    check("uploaded content", s.run_cmd("cmd", ["/c", "type", '"C:\\Windows\\Temp\\f"']).std_out, b"hello world\n")

    # Upload the way reimage does it: base64 lines on stdin (Send action) to
    # findstr, then certutil -decode; the data never is in a command line.
    shell = p.open_shell()
    cid = p.run_command(shell, "cmd", ["/c", "findstr", '"^"', ">", '"C:\\Windows\\Temp\\g.b64"'])
    p.send_command_input(shell, cid, b"c2VjcmV0\r\n", end=False)
    p.send_command_input(shell, cid, b"IGRhdGE=\r\n", end=True)
    out, err, code = p.get_command_output(shell, cid)
    check("findstr from stdin status", code, 0)
    p.cleanup_command(shell, cid)
    p.close_shell(shell)
    r = s.run_cmd("certutil", ["-f", "-decode", '"C:\\Windows\\Temp\\g.b64"', '"C:\\Windows\\Temp\\g"'])
    check("certutil (stdin upload) status", r.status_code, 0)
    check("uploaded content (stdin)", s.run_cmd("cmd", ["/c", "type", '"C:\\Windows\\Temp\\g"']).std_out,
          b"secret data")

    # An unknown action is a SOAP fault, as on Windows.
    msg = p.build_wsman_header(action="http://schemas.xmlsoap.org/ws/2004/09/transfer/Get",
                               resource_uri="http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd")
    import xmltodict
    req = {"env:Envelope": msg}
    req["env:Envelope"]["env:Body"] = {}
    try:
        p.send_message(xmltodict.unparse(req))
        check("unknown action faults", "no fault", "WSManFaultError")
    except winrm.exceptions.WSManFaultError as e:
        check("unknown action faults", e.fault_subcode, "a:ActionNotSupported")

    # Unknown programs and PowerShell terms still fail, as on Windows.
    r = s.run_cmd("powershell", ["-NoProfile", "-Command", "Frob-Nicate", "-Now"])
    check("unknown PowerShell term status", r.status_code, 1)
    check("unknown PowerShell term stderr", b"The term 'Frob-Nicate' is not recognized" in r.std_err, True)

    # Wrong password: pywinrm raises InvalidCredentialsError (HTTP 401).
    bad = winrm.Session(url, auth=("Administrator", "wrong"), transport="basic")
    try:
        bad.run_cmd("hostname")
        check("bad password rejected", "accepted", "InvalidCredentialsError")
    except InvalidCredentialsError:
        check("bad password rejected", True, True)
    except WinRMError as e:
        check("bad password rejected", type(e).__name__, "InvalidCredentialsError")


def ntlm_checks():
    """The stand-in with --stock (Auth/Basic false, AllowUnencrypted false):
    pywinrm's NTLM transport with message encryption runs commands, long
    ones included; Basic and NTLM without encryption are refused."""
    hold, port = held_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc, _ = start_standin(tmp, port, ["--stock"])
        try:
            url = f"http://127.0.0.1:{port}/wsman"
            s = winrm.Session(url, auth=("Administrator", "Image-pw1"), transport="ntlm",
                              message_encryption="always")
            r = s.run_cmd("hostname")
            check("ntlm+encryption hostname", (r.status_code, r.std_out), (0, b"WIN-STANDIN\r\n"))
            r = s.run_cmd("cmd", ["/c", "echo", '"sealed & <sent>"'])
            check("ntlm+encryption echo", r.std_out, b'"sealed & <sent>"\r\n')
            check("ntlm+encryption exit 5", s.run_cmd("cmd", ["/c", "exit", "5"]).status_code, 5)
            check("ntlm+encryption is on", s.protocol.transport.encryption is not None, True)

            slow = winrm.Session(url, auth=("Administrator", "Image-pw1"), transport="ntlm",
                                 message_encryption="always", operation_timeout_sec=1, read_timeout_sec=5)
            r = slow.run_cmd("sleep", ["1.5"])
            check("ntlm+encryption slow command", (r.status_code, r.std_out), (0, b"slept 1.5\r\n"))

            p = s.protocol
            shell = p.open_shell()
            cid = p.run_command(shell, "cmd", ["/c", "findstr", '"^"', ">", '"C:\\Windows\\Temp\\n.b64"'])
            p.send_command_input(shell, cid, b"c2VhbGVk\r\n", end=True)
            _, _, code = p.get_command_output(shell, cid)
            check("ntlm+encryption stdin", code, 0)
            p.cleanup_command(shell, cid)
            p.close_shell(shell)
            r = s.run_cmd("certutil", ["-f", "-decode", '"C:\\Windows\\Temp\\n.b64"', '"C:\\Windows\\Temp\\n"'])
            check("ntlm+encryption certutil", r.status_code, 0)
            check("ntlm+encryption upload", s.run_cmd("cmd", ["/c", "type", '"C:\\Windows\\Temp\\n"']).std_out,
                  b"sealed")

            basic = winrm.Session(url, auth=("Administrator", "Image-pw1"), transport="basic")
            try:
                basic.run_cmd("hostname")
                check("basic refused (Auth/Basic false)", "accepted", "InvalidCredentialsError")
            except InvalidCredentialsError:
                check("basic refused (Auth/Basic false)", True, True)

            clear = winrm.Session(url, auth=("Administrator", "Image-pw1"), transport="ntlm",
                                  message_encryption="never")
            try:
                clear.run_cmd("hostname")
                check("clear text refused (AllowUnencrypted false)", "accepted", "HTTP 500")
            except (WinRMError, WinRMTransportError) as e:
                check("clear text refused (AllowUnencrypted false)", "500" in str(e), True)

            bad = winrm.Session(url, auth=("Administrator", "wrong"), transport="ntlm",
                                message_encryption="always")
            try:
                bad.run_cmd("hostname")
                check("ntlm wrong password rejected", "accepted", "InvalidCredentialsError")
            except InvalidCredentialsError:
                check("ntlm wrong password rejected", True, True)
        finally:
            proc.kill()
            proc.wait()


def ps(script):
    return ["-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-Command", script]


ANSWER_FILES = [
    r"C:\Windows\Panther\unattend.xml",
    r"C:\Windows\Panther\Unattend\unattend.xml",
    r"C:\Windows\System32\sysprep\unattend.xml",
    r"C:\Windows\System32\sysprep\Panther\unattend.xml",
    r"C:\sysprep\sysprep.inf",
]
BOOT_ID = ["-NoProfile", "-NonInteractive", "-Command",
           "(Get-CimInstance Win32_OperatingSystem).LastBootUpTime.ToUniversalTime().ToString('o')"]


def first_boot_checks():
    """The Windows first-boot commands exactly as src/os/windows.rs sends
    them (Command + Arguments elements), through pywinrm, with the stand-in's
    state file as the witness; then a simulated Sysprep reboot."""
    hold, port = held_port()
    with tempfile.TemporaryDirectory() as tmp:
        pw_file = os.path.join(tmp, "pw")
        with open(pw_file, "w") as f:
            f.write("Image-pw1\n")
        state_file = os.path.join(tmp, "state.json")
        proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "winrm_standin.py"), "--port", str(port),
             "--user", "Administrator", "--password-file", pw_file, "--state-file", state_file,
             "--answer-files", "all"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            proc.stdout.readline()
            url = f"http://127.0.0.1:{port}/wsman"
            s = winrm.Session(url, auth=("Administrator", "Image-pw1"), transport="basic")

            def state():
                with open(state_file) as f:
                    return json.load(f)

            check("answer files present at start", len(state()["answer_files"]), 8)
            boot0 = s.run_cmd("powershell", BOOT_ID)
            check("boot id status", boot0.status_code, 0)
            check("boot id is an 'o' time", re.fullmatch(rb"\d{4}-\d\d-\d\dT[\d:.]+Z\r\n", boot0.std_out) is not None,
                  True)
            d = r"C:\Windows\Temp\reimage"
            r = s.run_cmd("cmd", ["/c", f"if not exist {d} mkdir {d}"])
            check("mkdir status", r.status_code, 0)
            r = s.run_cmd("cmd", ["/c", f"if not exist {d} mkdir {d}"])
            check("mkdir again status", r.status_code, 0)
            rename = ("if ($env:COMPUTERNAME -ne 'lab-pc-07') { Rename-Computer -NewName 'lab-pc-07' -Force "
                      "-ErrorAction Stop }; 'computer name lab-pc-07'")
            r = s.run_cmd("powershell", ps(rename))
            check("rename status", (r.status_code, r.std_out.endswith(b"computer name lab-pc-07\r\n")), (0, True))
            check("rename pending", (state()["pending_computer_name"], state()["computer_name"]),
                  ("lab-pc-07", "WIN-STANDIN"))
            r = s.run_cmd("reg", ["add", '"HKLM\\SYSTEM\\CurrentControlSet\\Control\\Terminal Server"', "/v",
                                  "fDenyTSConnections", "/t", "REG_DWORD", "/d", "0", "/f"])
            check("reg add status", r.status_code, 0)
            check("fDenyTSConnections", state()["fDenyTSConnections"], 0)
            r = s.run_cmd("reg", ["add", "HKLM\\SYSTEM\\CurrentControlSet\\Control\\Terminal Server", "/v",
                                  "fDenyTSConnections", "/t", "REG_DWORD", "/d", "0", "/f"])
            check("reg add with an unquoted key that holds a space fails", r.status_code, 1)
            r = s.run_cmd("netsh", ["advfirewall", "firewall", "set", "rule", 'group="remote desktop"', "new",
                                    "enable=yes"])
            check("firewall rdp status", r.status_code, 0)
            check("firewall rdp enabled", state()["rdp_firewall_enabled"], True)
            r = s.run_cmd("netsh", ["advfirewall", "firewall", "set", "rule", "group=remote desktop", "new",
                                    "enable=yes"])
            check("firewall rdp with an unquoted group fails", r.status_code, 1)
            ping = ["/c", "netsh", "advfirewall", "firewall", "delete", "rule", 'name="reimage ICMPv4 echo"',
                    ">nul", "&", "netsh", "advfirewall", "firewall", "add", "rule", 'name="reimage ICMPv4 echo"',
                    "protocol=icmpv4:8,any", "dir=in", "action=allow"]
            for k in (1, 2):
                r = s.run_cmd("cmd", ping)
                check(f"firewall ping run {k} status", r.status_code, 0)
            check("one ICMP rule after two runs", state()["icmp_rules"], 1)
            r = s.run_cmd("powershell", ps("netsh advfirewall firewall delete rule name='reimage ICMPv4 echo' | "
                                           "Out-Null; netsh advfirewall firewall add rule name='x' dir=in "
                                           "action=allow"))
            check("a | in a PowerShell line is cmd.exe's pipe", (r.status_code, b"'Out-Null' is not recognized"
                                                                 in r.std_err), (1, True))
            check("powercfg standby", s.run_cmd("powercfg", ["/change", "standby-timeout-ac", "0"]).status_code, 0)
            check("powercfg hibernate", s.run_cmd("powercfg", ["/hibernate", "off"]).status_code, 0)
            check("powercfg state", (state()["powercfg"]["standby-timeout-ac"], state()["powercfg"]["hibernate"]),
                  (0, "off"))
            files = ",".join(f"'{f}'" for f in ANSWER_FILES)
            r = s.run_cmd("powershell", ps(f"foreach ($f in @({files})) {{ if (Test-Path $f) {{ Remove-Item "
                                           f"-Force $f; 'removed ' + $f }} }}; 'answer files gone'"))
            check("answer files status", r.status_code, 0)
            check("answer files output", r.std_out.count(b"removed C:\\"), 5)
            check("answer files left", len(state()["answer_files"]), 3)
            for pat in (r"C:\Windows\Panther\unattend*.xml", r"C:\Windows\Panther\UnattendGC\*",
                        r"C:\Windows\System32\sysprep\*.inf"):
                q = f'"{pat}"'
                r = s.run_cmd("cmd", ["/c", "if", "exist", q, "del", "/f", "/q", q])
                check(f"del {pat}", r.status_code, 0)
                check(f"{pat} gone", s.run_cmd("cmd", ["/c", "if", "exist", q, "exit", "1"]).status_code, 0)
            check("answer files gone", state()["answer_files"], [])
            check("sysprep.exe stays", r"C:\Windows\System32\sysprep\sysprep.exe" in state()["files"], True)
            # Lockdown by port and protocol, whatever the rules' names.
            r = s.run_cmd("cmd", ["/c", "netsh", "advfirewall", "firewall", "delete", "rule", "name=all", "dir=in",
                                  "protocol=TCP", "localport=3389", ">nul", "2>&1", "&", "netsh", "advfirewall",
                                  "firewall", "add", "rule", 'name="reimage RDP"', "dir=in", "action=allow",
                                  "enable=yes", "protocol=TCP", "localport=3389", "remoteip=10.0.0.0/8,192.0.2.5"])
            check("rdp lockdown status", r.status_code, 0)
            rdp = [x for x in state()["firewall_rules"] if x["localport"] == "3389"]
            check("rdp lockdown", [(x["name"], x["remoteip"]) for x in rdp],
                  [("reimage RDP", "10.0.0.0/8,192.0.2.5")])
            r = s.run_cmd("powershell", ps(f'foreach ($f in @({files})) {{ "removed $f" }}'))
            check("double quotes do not reach PowerShell", r.status_code, 1)

            # The password: uploaded through stdin, then set by [adsi].
            p = s.protocol
            shell = p.open_shell()
            target = d + "\\admin-password.txt"
            cid = p.run_command(shell, "cmd", ["/c", "findstr", '"^"', ">", f'"{target}.reimage-b64"'])
            p.send_command_input(shell, cid, b"TmV3LVNlY3JldDk=\r\n", end=True)
            check("password upload", p.get_command_output(shell, cid)[2], 0)
            p.cleanup_command(shell, cid)
            cid = p.run_command(shell, "certutil", ["-f", "-decode", f'"{target}.reimage-b64"', f'"{target}"'])
            check("password decode", p.get_command_output(shell, cid)[2], 0)
            p.cleanup_command(shell, cid)
            p.close_shell(shell)
            r = s.run_cmd("powershell", ps(f"$p = (Get-Content -Raw '{target}').Trim(); Remove-Item -Force "
                                           f"'{target}'; ([adsi]'WinNT://./Administrator,user').SetPassword($p); "
                                           "'password of Administrator set'"))
            check("set password status", r.status_code, 0)
            check("Administrator password", state()["administrator_password"], "New-Secret9")
            check("password file deleted", any("admin-password.txt" == f.rsplit("\\", 1)[-1]
                                               for f in state()["files"]), False)
            try:
                s.run_cmd("hostname")
                check("old password rejected after SetPassword", "accepted", "InvalidCredentialsError")
            except InvalidCredentialsError:
                check("old password rejected after SetPassword", True, True)
            s = winrm.Session(url, auth=("Administrator", "New-Secret9"), transport="basic")
            check("new password accepted", s.run_cmd("hostname").std_out, b"WIN-STANDIN\r\n")

            # Uploaded scripts run; a missing one is not recognized.
            s.run_cmd("cmd", ["/c", "echo", f"exit /b 0>{d}\\setup.cmd"])
            r = s.run_cmd("cmd", ["/c", f"{d}\\setup.cmd"])
            check("script runs", r.status_code, 0)
            check("script recorded", state()["scripts_run"], [f"{d}\\setup.cmd"])
            r = s.run_cmd("cmd", ["/c", f"{d}\\missing.cmd"])
            check("missing script", r.status_code, 1)

            # A reboot (shutdown /r, as reimage sends it): the listener goes
            # down once the client is done with the shell, resets the next
            # two connections (--down-connects 2), and is back on a new boot
            # with the pending name applied.
            proc.kill()
            proc.wait()
            proc = subprocess.Popen(
                [sys.executable, os.path.join(HERE, "winrm_standin.py"), "--port", str(port),
                 "--user", "Administrator", "--password-file", pw_file, "--state-file", state_file],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            proc.stdout.readline()
            s = winrm.Session(url, auth=("Administrator", "Image-pw1"), transport="basic")
            s.run_cmd("powershell", ps(rename))
            before = s.run_cmd("powershell", BOOT_ID).std_out
            r = s.run_cmd("shutdown", ["/r", "/t", "0", "/f"])
            check("shutdown /r status", r.status_code, 0)
            # The stand-in answers the shell's Delete, then goes down (as
            # Windows shuts down after the client is done): wait for it.
            gone = time.monotonic() + 5
            while state()["up"] and time.monotonic() < gone:
                time.sleep(0.05)
            check("down once the shell is closed", state()["up"], False)
            for k in (1, 2):
                reset = False
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                        c.settimeout(5)
                        reset = c.recv(1) == b""
                except ConnectionError:  # reset (or refused): not answering
                    reset = True
                check(f"connection {k} reset while rebooting", reset, True)
            after = s.run_cmd("powershell", BOOT_ID).std_out
            check("new boot time after the reboot", after != before and after != b"", True)
            check("pending name applied at boot", s.run_cmd("hostname").std_out, b"LAB-PC-07\r\n")
            check("boots", state()["boots"], 2)
        finally:
            proc.kill()
            proc.wait()


def start_standin(tmp, port, extra):
    pw_file = os.path.join(tmp, "pw")
    with open(pw_file, "w") as f:
        f.write("Image-pw1\n")
    state_file = os.path.join(tmp, "state.json")
    proc = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "winrm_standin.py"), "--port", str(port),
         "--user", "Administrator", "--password-file", pw_file, "--state-file", state_file] + extra,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    proc.stdout.readline()

    def state():
        with open(state_file) as f:
            return json.load(f)
    return proc, state


def upload(s, target, data):
    """Upload as reimage does: base64 on stdin to findstr, certutil -decode."""
    import base64
    p = s.protocol
    shell = p.open_shell()
    cid = p.run_command(shell, "cmd", ["/c", "findstr", '"^"', ">", f'"{target}.reimage-b64"'])
    p.send_command_input(shell, cid, base64.b64encode(data) + b"\r\n", end=True)
    code = p.get_command_output(shell, cid)[2]
    p.cleanup_command(shell, cid)
    cid = p.run_command(shell, "certutil", ["-f", "-decode", f'"{target}.reimage-b64"', f'"{target}"'])
    code = code or p.get_command_output(shell, cid)[2]
    p.cleanup_command(shell, cid)
    p.close_shell(shell)
    return code


# A VBScript with what the stand-in recognizes as reimage's password script
# (src/os/windows.rs password_script has the full one, error handling too).
PASSWORD_VBS = "\r\n".join([
    "Option Explicit",
    "Dim path, fso, stream, pw, account",
    "path = WScript.Arguments(0)",
    'Set fso = CreateObject("Scripting.FileSystemObject")',
    'Set stream = CreateObject("ADODB.Stream")',
    'stream.Type = 2: stream.Charset = "utf-8": stream.Open: stream.LoadFromFile path',
    "pw = stream.ReadText(-1): stream.Close",
    "fso.DeleteFile path, True",
    'Set account = GetObject("WinNT://./Administrator,user")',
    "account.SetPassword pw",
    "account.SetInfo",
    'WScript.Echo "password of Administrator set"',
    ""]).encode()


def legacy_checks():
    """Windows XP / 2003 as installed (--no-powershell): the commands
    src/os/windows.rs sends to windows-5 (and windows-6), through pywinrm."""
    hold, port = held_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc, state = start_standin(tmp, port, ["--no-powershell", "--answer-files", "xp"])
        try:
            url = f"http://127.0.0.1:{port}/wsman"
            s = winrm.Session(url, auth=("Administrator", "Image-pw1"), transport="basic")
            r = s.run_cmd("powershell", ps("'hi'"))
            check("xp: powershell is not recognized", (r.status_code, r.std_err.startswith(
                b"'powershell' is not recognized")), (1, True))
            r = s.run_cmd("netsh", ["advfirewall", "firewall", "set", "rule", 'group="remote desktop"', "new",
                                    "enable=yes"])
            check("xp: no netsh advfirewall", r.status_code, 1)
            r = s.run_cmd("netsh", ["firewall", "set", "service", "type=remotedesktop", "mode=enable"])
            check("xp: netsh firewall", (r.status_code, state()["legacy_firewall"]["remotedesktop"]), (0, True))
            q = s.run_cmd("powercfg", ["/query"])
            check("xp: powercfg /query names the scheme", (q.status_code, b"Home/Office Desk" in q.std_out),
                  (0, True))
            check("xp: powercfg without the scheme name",
                  s.run_cmd("powercfg", ["/change", "/standby-timeout-ac", "0"]).status_code, 1)
            check("xp: powercfg scheme-name form",
                  s.run_cmd("powercfg", ["/change", '"Home/Office Desk"', "/standby-timeout-ac", "0"]).status_code,
                  0)
            check("xp: powercfg state", state()["powercfg"]["standby-timeout-ac"], 0)
            check("xp: powercfg bare setting is Vista's",
                  s.run_cmd("powercfg", ["/change", "standby-timeout-ac", "0"]).status_code, 1)

            # The boot id: wmic with stdin from nul.
            r = s.run_cmd("cmd", ["/c", "wmic", "os", "get", "lastbootuptime", "/value", "<nul"])
            check("wmic boot id status", r.status_code, 0)
            check("wmic boot id", re.fullmatch(rb"(\r\r\n)*LastBootUpTime=\d{14}\.\d{6}\+000(\r\r\n)*",
                                               r.std_out) is not None, True)
            check("wmic boot id is the boot time", r.std_out.strip().split(b"=")[1].decode(),
                  state()["boot_time_cim"])
            # Without <nul wmic waits for its stdin: a Receive times out
            # until the client closes stdin.
            slow = winrm.Session(url, auth=("Administrator", "Image-pw1"), transport="basic",
                                 operation_timeout_sec=1, read_timeout_sec=5)
            p = slow.protocol
            shell = p.open_shell()
            cid = p.run_command(shell, "wmic", ["os", "get", "lastbootuptime", "/value"])
            try:
                p.get_command_output_raw(shell, cid)
                check("wmic without <nul waits for stdin", "finished", "WinRMOperationTimeoutError")
            except winrm.exceptions.WinRMOperationTimeoutError:
                check("wmic without <nul waits for stdin", True, True)
            p.send_command_input(shell, cid, b"", end=True)
            out, err, code = p.get_command_output(shell, cid)
            check("wmic finishes once stdin is closed", (code, b"LastBootUpTime=" in out), (0, True))
            p.cleanup_command(shell, cid)
            p.close_shell(shell)

            # The rename: Win32_ComputerSystem.Rename behind an if guard.
            def rename(new, where="%COMPUTERNAME%"):
                return s.run_cmd("cmd", ["/c", "if", "/i", "not", f'"%COMPUTERNAME%"=="{new}"', "wmic",
                                         "computersystem", "where", f'name="{where}"', "call", "rename",
                                         f'name="{new}"', "<nul"])
            r = rename("lab-pc-07")
            check("wmic rename", (r.status_code, b"ReturnValue = 0;" in r.std_out), (0, True))
            check("wmic rename pending", (state()["pending_computer_name"], state()["computer_name"]),
                  ("lab-pc-07", "WIN-STANDIN"))
            r = rename("lab-pc-07", where="OTHER")
            check("wmic rename of another name", (r.status_code, r.std_err), (0, b"No Instance(s) Available.\r\n"))
            r = rename("bad_name!")
            check("wmic rename to a bad name", b"ReturnValue = 1210;" in r.std_out, True)
            s.run_cmd("set-name", ["LAB-PC-07"])
            r = rename("lab-pc-07")
            check("wmic rename skipped when the name is right", (r.status_code, r.std_out, r.std_err),
                  (0, b"", b""))

            # The answer files, each checked gone.
            check("xp answer files at start", state()["answer_files"], [r"C:\sysprep\sysprep.inf",
                                                                        r"C:\sysprep\unattend.txt"])
            for f in (r"C:\sysprep\sysprep.inf", r"C:\sysprep\unattend.txt"):
                q = f'"{f}"'
                check(f"{f} there", s.run_cmd("cmd", ["/c", "if", "exist", q, "exit", "1"]).status_code, 1)
                r = s.run_cmd("cmd", ["/c", "if", "exist", q, "del", "/f", "/q", q])
                check(f"{f} del", r.status_code, 0)
                check(f"{f} gone", s.run_cmd("cmd", ["/c", "if", "exist", q, "exit", "1"]).status_code, 0)
                r = s.run_cmd("cmd", ["/c", "if", "exist", q, "del", "/f", "/q", q])
                check(f"{f} del again", (r.status_code, r.std_err), (0, b""))
            check("xp answer files gone", state()["answer_files"], [])

            # The password: VBScript and password file uploaded, cscript.
            d = r"C:\Windows\Temp"
            check("upload vbs", upload(s, d + r"\set-password.vbs", PASSWORD_VBS), 0)
            check("upload password", upload(s, d + r"\admin-password.txt", "Neu-Geheim-9".encode()), 0)
            r = s.run_cmd("cscript", ["//nologo", d + r"\set-password.vbs", d + r"\admin-password.txt"])
            check("cscript password", (r.status_code, r.std_out), (0, b"password of Administrator set\r\n"))
            check("password set from the file", state()["administrator_password"], "Neu-Geheim-9")
            check("password file deleted", any(f.endswith("admin-password.txt") for f in state()["files"]), False)
            s = winrm.Session(url, auth=("Administrator", "Neu-Geheim-9"), transport="basic")
            r = s.run_cmd("cscript", ["//nologo", d + r"\set-password.vbs", d + r"\admin-password.txt"])
            check("cscript password without the file", (r.status_code, b"cannot read" in r.std_err), (1, True))
            r = s.run_cmd("cscript", ["//nologo", d + r"\missing.vbs"])
            check("cscript missing script", (r.status_code, b"Can not find script file" in r.std_out), (1, True))
            s.run_cmd("cmd", ["/c", "echo", "WScript.Quit 3>" + d + r"\other.vbs"])
            r = s.run_cmd("cscript", ["//nologo", d + r"\other.vbs"])
            check("another VBScript runs with its exit code", r.status_code, 3)
            check("the password stays", state()["administrator_password"], "Neu-Geheim-9")
        finally:
            proc.kill()
            proc.wait()


def powershell_2_checks():
    """Stock Windows 7 / 2008 R2 (--powershell-2): PowerShell 2 lacks what
    windows-10's commands use; what windows-6 sends still works."""
    hold, port = held_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc, state = start_standin(tmp, port, ["--powershell-2", "--answer-files", "all"])
        try:
            s = winrm.Session(f"http://127.0.0.1:{port}/wsman", auth=("Administrator", "Image-pw1"),
                              transport="basic")
            r = s.run_cmd("powershell", BOOT_ID)
            check("ps2: no Get-CimInstance", (r.status_code, b"The term 'Get-CimInstance' is not recognized"
                                               in r.std_err), (1, True))
            r = s.run_cmd("powershell", ps("Rename-Computer -NewName 'x' -Force"))
            check("ps2: no Rename-Computer", (r.status_code, b"The term 'Rename-Computer' is not recognized"
                                               in r.std_err), (1, True))
            r = s.run_cmd("powershell", ps(r"(Get-Content -Raw 'C:\Windows\Temp\x').Trim()"))
            check("ps2: no Get-Content -Raw", (r.status_code, b"'Raw'" in r.std_err), (1, True))
            r = s.run_cmd("powershell", ps(r"Test-Path 'C:\Windows\Panther\unattend.xml'"))
            check("ps2: Test-Path", (r.status_code, r.std_out), (0, b"True\r\n"))
            r = s.run_cmd("cmd", ["/c", "wmic", "os", "get", "lastbootuptime", "/value", "<nul"])
            check("ps2: wmic boot id", (r.status_code, b"LastBootUpTime=" in r.std_out), (0, True))
        finally:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    sys.exit(main())
