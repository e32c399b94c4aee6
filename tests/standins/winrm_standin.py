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
                   [--delay-start SECONDS] [--tls-cert C --tls-key K]

Serves POST /wsman. Prints "winrm-standin listening on HOST:PORT" on stdout
(flushed) once it accepts connections.

Behaviour:
- Identify (wsmid:Identify body): answered without authentication, as
  Windows does for an unauthenticated Identify (WSMANIDENTIFY header).
- Everything else needs HTTP Basic auth (401 otherwise).
- Shell commands simulated (a leading `cmd /c` is stripped first):
    echo TEXT            stdout "TEXT\\r\\n"          (also `echo TEXT>>FILE`, `>FILE`)
    type nul > FILE      create/truncate FILE (in memory)
    findstr "^" > FILE   copy stdin (Send action, until End="true") to FILE
    type FILE            print FILE
    del [/q] FILE        delete FILE
    certutil -f -decode IN OUT   base64-decode IN into OUT (like certutil)
    hostname             the machine name (default WIN-STANDIN)
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
import re
import ssl
import sys
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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


class Machine:
    """The simulated computer: its name, its files, its shells."""

    def __init__(self):
        self.lock = threading.Lock()
        self.name = "WIN-STANDIN"
        self.files = {}
        self.shells = {}  # shell id -> {command id -> result dict}


def split_line(line):
    """Splits a command line at spaces, keeping "quoted parts" together and
    dropping the quotes (enough of cmd.exe / CommandLineToArgvW for tests)."""
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


def simulate(machine, line):
    """Returns (stdout bytes, stderr bytes, exit code, seconds to run); for
    a command that reads stdin, the last item is instead a function that
    gets all of stdin (under the machine lock) and returns (stdout, stderr,
    exit code)."""
    words = split_line(line)
    if len(words) >= 2 and words[0].lower() in ("cmd", "cmd.exe") and words[1].lower() == "/c":
        line = line.split(None, 2)[2] if len(line.split(None, 2)) > 2 else ""
        words = words[2:]
    if not words:
        return b"", b"", 0, 0.0
    cmd = words[0].lower()
    # Output redirection for echo / type nul: TEXT>>FILE or TEXT>FILE.
    redirect = re.fullmatch(r'(?is)\s*(\S+)\s?(.*?)\s*(>>|>)\s*"?([^"]+?)"?\s*', line)
    with machine.lock:
        if cmd == "echo" and redirect:
            text = redirect.group(2)
            append = redirect.group(3) == ">>"
            path = redirect.group(4).lower()
            prev = machine.files.get(path, b"") if append else b""
            machine.files[path] = prev + text.encode() + b"\r\n"
            return b"", b"", 0, 0.0
        if cmd == "echo":
            text = line.strip()[4:].strip()
            return text.encode() + b"\r\n", b"", 0, 0.0
        if cmd == "findstr" and redirect and len(words) >= 2 and words[1] == "^":
            # Copies stdin to FILE once the client sends stdin with End="true".
            path = redirect.group(4).lower()

            def on_stdin(data, machine=machine, path=path):
                machine.files[path] = data
                return b"", b"", 0

            return b"", b"", 0, on_stdin
        if cmd == "type" and redirect and len(words) >= 2 and words[1].lower() == "nul":
            machine.files[redirect.group(4).lower()] = b""
            return b"", b"", 0, 0.0
        if cmd == "type" and len(words) == 2:
            data = machine.files.get(words[1].lower())
            if data is None:
                return b"", b"The system cannot find the file specified.\r\n", 1, 0.0
            return data, b"", 0, 0.0
        if cmd == "del":
            names = [w for w in words[1:] if not w.startswith("/")]
            for n in names:
                machine.files.pop(n.lower(), None)
            return b"", b"", 0, 0.0
        if cmd in ("certutil", "certutil.exe"):
            args = [w for w in words[1:] if w.lower() != "-f"]
            if len(args) == 3 and args[0].lower() == "-decode":
                src = machine.files.get(args[1].lower())
                if src is None:
                    return (b"CertUtil: -decode command FAILED: 0x80070002 (WIN32: 2 ERROR_FILE_NOT_FOUND)\r\n",
                            b"", 2, 0.0)
                try:
                    data = base64.b64decode(b"".join(src.split()), validate=True)
                except ValueError:
                    return b"CertUtil: -decode command FAILED: 0x80090005 (NTE_BAD_DATA)\r\n", b"", 1, 0.0
                machine.files[args[2].lower()] = data
                msg = (f"Input Length = {len(src)}\r\nOutput Length = {len(data)}\r\n"
                       "CertUtil: -decode command completed successfully.\r\n")
                return msg.encode(), b"", 0, 0.0
            return b"CertUtil: Unknown arguments.\r\n", b"", 87, 0.0
        if cmd == "hostname" and len(words) == 1:
            return machine.name.encode() + b"\r\n", b"", 0, 0.0
        if cmd == "set-name" and len(words) == 2:
            machine.name = words[1]
            return b"", b"", 0, 0.0
        if cmd == "exit":
            try:
                code = int(words[1]) if len(words) > 1 else 0
            except ValueError:
                code = 0
            return b"", b"", code, 0.0
        if cmd == "sleep" and len(words) == 2:
            try:
                secs = float(words[1])
            except ValueError:
                secs = -1
            if secs >= 0:
                return f"slept {words[1]}\r\n".encode(), b"", 0, secs
    msg = (f"'{words[0]}' is not recognized as an internal or external command,\r\n"
           "operable program or batch file.\r\n")
    return b"", msg.encode(), 1, 0.0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Microsoft-HTTPAPI/2.0"
    sys_version = ""

    def log_message(self, fmt, *args):
        sys.stderr.write("winrm-standin: " + (fmt % args) + "\n")

    def send(self, status, text, extra=()):
        data = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.send_response(405)
        self.send_header("Allow", "POST")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def authorized(self):
        cfg = self.server.cfg
        if cfg.user is None:
            return True
        header = self.headers.get("Authorization", "")
        if not header.lower().startswith("basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except ValueError:
            return False
        user, _, password = decoded.partition(":")
        return user == cfg.user and password == cfg.password

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path.split("?")[0].lower() != "/wsman":
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        ctype = (self.headers.get("Content-Type") or "").lower()
        if not ctype.startswith("application/soap+xml"):
            self.send_response(415)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        try:
            root = ET.fromstring(raw)
        except ET.ParseError as e:
            return self.send(400, fault("", "Sender", "w:SchemaValidationError",
                                        f"The SOAP XML in the message does not match the schema: {e}",
                                        2150858817))
        if find(root, "Identify") is not None and find(root, "Identify").tag == f"{{{NS_WSMID}}}Identify":
            return self.send(200, self.identify())
        if not self.authorized():
            self.send_response(401)
            self.send_header("WWW-Authenticate", "Negotiate")
            self.send_header("WWW-Authenticate", 'Basic realm="WSMAN"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        status, text = self.dispatch(root)
        self.send(status, text)

    def identify(self):
        return (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f'<s:Envelope xmlns:s="{NS_S}" xmlns:wsmid="{NS_WSMID}">'
            "<s:Header/><s:Body><wsmid:IdentifyResponse>"
            f"<wsmid:ProtocolVersion>{NS_W}</wsmid:ProtocolVersion>"
            "<wsmid:ProductVendor>Microsoft Corporation</wsmid:ProductVendor>"
            "<wsmid:ProductVersion>OS: 6.1.7601 SP: 1.0 Stack: 3.0</wsmid:ProductVersion>"
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
            return 200, envelope("http://schemas.xmlsoap.org/ws/2004/09/transfer/DeleteResponse", mid, "")

        if action == A_COMMAND:
            cl = find(body, "CommandLine")
            if cl is None or find(cl, "Command") is None:
                return 500, fault(mid, "Sender", "w:SchemaValidationError",
                                  "CommandLine/Command is missing.", 2150858817)
            parts = [(find(cl, "Command").text or "").strip()]
            parts += [(el.text or "") for el in cl if local(el.tag) == "Arguments"]
            line = " ".join(p for p in parts if p != "")
            out, err, code, secs = simulate(machine, line)
            cid = str(uuid.uuid4()).upper()
            entry = {"stdout": out, "stderr": err, "code": code, "line": line,
                     "stdin": b"", "on_stdin": None}
            if callable(secs):
                entry["on_stdin"] = secs
                entry["ready_at"] = float("inf")
            else:
                entry["ready_at"] = time.monotonic() + secs
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

    def finish_request(self, request, client_address):
        if self.tls is not None:
            try:
                request.settimeout(10)
                request = self.tls.wrap_socket(request, server_side=True)
                request.settimeout(None)
            except (ssl.SSLError, OSError) as e:
                sys.stderr.write(f"winrm-standin: TLS handshake with {client_address} failed: {e}\n")
                return
        super().finish_request(request, client_address)


def main():
    p = argparse.ArgumentParser(description="WinRM listener stand-in (MS-WSMV formats), for tests")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--user")
    p.add_argument("--password-file")
    p.add_argument("--delay-start", type=float, default=0.0)
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    a = p.parse_args()

    class Cfg:
        user = a.user
        password = ""

    if a.password_file:
        with open(a.password_file, encoding="utf-8") as f:
            Cfg.password = f.readline().rstrip("\r\n")
    if a.delay_start > 0:
        time.sleep(a.delay_start)

    server = Server((a.host, a.port), Handler)
    server.cfg = Cfg
    server.machine = Machine()
    if a.tls_cert:
        server.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.tls.load_cert_chain(a.tls_cert, a.tls_key)
    print(f"winrm-standin listening on {a.host}:{a.port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
