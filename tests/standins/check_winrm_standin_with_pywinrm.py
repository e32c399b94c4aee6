#!/usr/bin/env python3
"""Proves the WinRM STAND-IN (winrm_standin.py) is one a real WinRM client
trusts: starts it, drives it with pywinrm (pip install pywinrm) and exits
non-zero on any mismatch. Run from anywhere: python3 check_winrm_standin_with_pywinrm.py
"""

import os
import socket
import subprocess
import sys
import tempfile
import time

import winrm
from winrm.exceptions import InvalidCredentialsError, WinRMError

HERE = os.path.dirname(os.path.abspath(__file__))
FAILURES = []


def check(name, got, want):
    ok = got == want
    print(f"{'ok  ' if ok else 'FAIL'} {name}: got {got!r}" + ("" if ok else f", want {want!r}"))
    if not ok:
        FAILURES.append(name)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    port = free_port()
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

    # Wrong password: pywinrm raises InvalidCredentialsError (HTTP 401).
    bad = winrm.Session(url, auth=("Administrator", "wrong"), transport="basic")
    try:
        bad.run_cmd("hostname")
        check("bad password rejected", "accepted", "InvalidCredentialsError")
    except InvalidCredentialsError:
        check("bad password rejected", True, True)
    except WinRMError as e:
        check("bad password rejected", type(e).__name__, "InvalidCredentialsError")


if __name__ == "__main__":
    sys.exit(main())
