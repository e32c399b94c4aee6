"""HTTP authentication and message encryption of the WinRM STAND-IN
(winrm_standin.py), for tests only.

Written from Microsoft's documents, not from any client's code:
- RFC 4559 and [MS-N2HT] (the HTTP `Negotiate` scheme: base64 tokens in
  Authorization / WWW-Authenticate, 401 until the context is complete, the
  acceptor's last token on the 200);
- [MS-WSMV] 2.2.9.1.1 "Negotiate Encrypted Message": a sealed message is a
  `multipart/encrypted;protocol="application/HTTP-SPNEGO-session-encrypted";
  boundary="Encrypted Boundary"` body of two parts, the first with
  `OriginalContent: type=...;Length=N`, the second `application/octet-stream`
  holding a 32-bit little-endian header length, the header (for NTLM its
  [MS-NLMP] message signature) and the sealed bytes; the service answers
  sealed requests sealed;
- the service settings of "Installation and configuration for Windows
  Remote Management" (winrm/config/service): Auth/Basic (false as shipped),
  Auth/Negotiate (true), AllowUnencrypted (false as shipped). The 401 offers
  only the schemes that are on. An authenticated message in clear over HTTP
  while AllowUnencrypted is false is refused with HTTP 500 and no body, as
  users of pywinrm report it (pywinrm issues 129 and 208: "Code 500", the
  event log saying the service received an unencrypted message).

NTLM and SPNEGO themselves are pyspnego's acceptor (`spnego.server`, an
independent implementation: the stand-in does no NTLM cryptography of its
own); it reads the accounts from the file NTLM_USER_FILE names, which this
module rewrites from the simulated machine's accounts before every
handshake, so a changed password takes effect for the next login as on
Windows. A security context belongs to one TCP connection, as with
HTTP.sys: a new connection must authenticate again, and a sealed request on
a connection without a context gets a 401. Accounts with an empty password
cannot log in over the network (Windows' "Limit local account use of blank
passwords to console logon only", on by default).
"""

import base64
import os
import re
import struct
import tempfile
import threading

import spnego
from spnego._ntlm_raw.crypto import lmowfv1, ntowfv1

BOUNDARY = b"--Encrypted Boundary"
PROTOCOL = "application/HTTP-SPNEGO-session-encrypted"
ENCRYPTED_TYPE = f'multipart/encrypted;protocol="{PROTOCOL}";boundary="Encrypted Boundary"'
SOAP_TYPE = "application/soap+xml;charset=UTF-8"


class Request:
    """One POST as the WS-Management layer sees it: the plain body and who
    sent it. `creds`: (user in lower case, password) of a Negotiate login
    (checked), or of a Basic header (claimed: the caller checks it), or
    None; `scheme`: "negotiate", "basic" or None."""

    def __init__(self, body, content_type, creds=None, scheme=None, encrypted=False):
        self.body = body
        self.content_type = content_type
        self.creds = creds
        self.scheme = scheme
        self.encrypted = encrypted


class _Connection:
    """The security context of one TCP connection."""

    def __init__(self):
        self.ctx = None
        self.creds = None
        self.final = None  # the acceptor's last token, for the next 200


class Service:
    """winrm/config/service as far as authentication goes."""

    def __init__(self, basic, negotiate, allow_unencrypted, https, accounts, disabled, machine_name):
        """`accounts()`: {user: password}; `disabled()`: True while logins
        are refused (Sysprep); `machine_name()`: the computer's name."""
        self.basic = basic
        self.negotiate = negotiate
        self.allow_unencrypted = allow_unencrypted
        self.https = https
        self.accounts = accounts
        self.disabled = disabled
        self.machine_name = machine_name
        self.lock = threading.Lock()
        self.dir = tempfile.mkdtemp(prefix="winrm-standin-ntlm-")
        self.user_file = os.path.join(self.dir, "ntlm-users")
        os.environ["NTLM_USER_FILE"] = self.user_file
        self.handshakes = 0
        self.sealed_requests = 0

    # -- the 401 and other refusals -------------------------------------

    def challenge(self, handler, token=None):
        handler.send_response(401)
        if self.negotiate:
            value = "Negotiate" if token is None else "Negotiate " + base64.b64encode(token).decode()
            handler.send_header("WWW-Authenticate", value)
        if self.basic and token is None:
            handler.send_header("WWW-Authenticate", 'Basic realm="WSMAN"')
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def _empty(self, handler, status, conn=None):
        handler.send_response(status)
        if conn is not None and conn.final is not None:
            handler.send_header("WWW-Authenticate", "Negotiate " + base64.b64encode(conn.final).decode())
            conn.final = None
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    # -- accounts for the acceptor ----------------------------------------

    def _write_users(self):
        """smbpasswd lines (USER:UID:LM:NT:FLAGS:LCT) for every account with
        a password, under no domain, `.` and the machine's name."""
        lines = []
        name = self.machine_name()
        for user, password in self.accounts().items():
            if not password:
                continue
            lm, nt = lmowfv1(password).hex().upper(), ntowfv1(password).hex().upper()
            for who in (user, f".\\{user}", f"{name}\\{user}"):
                lines.append(f"{who}:1000:{lm}:{nt}:[U]:LCT-00000000")
        tmp = self.user_file + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(tmp, self.user_file)

    # -- a request ------------------------------------------------------

    def open(self, handler, raw):
        """Authenticates and unseals one POST. Returns a Request, or None
        when this already answered (a 401 leg, a refusal)."""
        conn = handler.__dict__.setdefault("winrm_connection", _Connection())
        scheme, _, data = (handler.headers.get("Authorization") or "").strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "negotiate":
            if not self.negotiate:
                self.challenge(handler)
                return None
            if not self._step(handler, conn, data.strip()):
                return None
        elif scheme == "basic":
            if not self.basic:
                self.challenge(handler)
                return None
            try:
                decoded = base64.b64decode(data.strip(), validate=True).decode("utf-8")
            except ValueError:
                self.challenge(handler)
                return None
            user, _, password = decoded.partition(":")
            return self._plain(handler, raw, (user.lower(), password), "basic")
        elif scheme:
            self.challenge(handler)
            return None

        authed = conn.ctx is not None and conn.ctx.complete
        ctype = handler.headers.get("Content-Type") or ""
        if ctype.lower().startswith("multipart/encrypted"):
            if not authed:
                self.challenge(handler)
                return None
            try:
                body = self._unwrap(conn.ctx, ctype, raw)
            except Exception as e:  # a bad seal: as Windows, refuse the request
                handler.log_message("cannot unseal: %s", e)
                self._empty(handler, 400, conn)
                return None
            self.sealed_requests += 1
            return Request(body, SOAP_TYPE, conn.creds, "negotiate", encrypted=True)
        if authed and not raw:
            # The end of a handshake without a message: nothing to do.
            self._empty(handler, 200, conn)
            return None
        if authed:
            return self._plain(handler, raw, conn.creds, "negotiate", conn)
        return Request(raw, ctype)

    def _plain(self, handler, raw, creds, scheme, conn=None):
        """An authenticated message in clear: over HTTP only when
        AllowUnencrypted is true."""
        if not self.https and not self.allow_unencrypted:
            handler.log_message("refused an unencrypted message (AllowUnencrypted = false)")
            self._empty(handler, 500, conn)
            return None
        return Request(raw, handler.headers.get("Content-Type") or "", creds, scheme)

    def _step(self, handler, conn, data):
        """One Negotiate leg. True when the context is complete and the
        request goes on; False when this answered."""
        try:
            token = base64.b64decode(data, validate=True)
        except ValueError:
            self.challenge(handler)
            return False
        if conn.ctx is None or conn.ctx.complete:
            with self.lock:
                self._write_users()
                self.handshakes += 1
            conn.ctx = spnego.server(hostname=self.machine_name(), service="HTTP", protocol="negotiate")
            conn.creds = None
        try:
            out = conn.ctx.step(token)
        except spnego.exceptions.SpnegoError as e:
            handler.log_message("Negotiate refused: %s", e)
            conn.ctx = None
            self.challenge(handler)
            return False
        if not conn.ctx.complete:
            self.challenge(handler, out)
            return False
        user = (conn.ctx.client_principal or "").rsplit("\\", 1)[-1].lower()
        accounts = {u.lower(): p for u, p in self.accounts().items()}
        if self.disabled() or user not in accounts:
            conn.ctx = None
            self.challenge(handler)
            return False
        conn.creds = (user, accounts[user])
        conn.final = out
        return True

    # -- sealing --------------------------------------------------------

    @staticmethod
    def _unwrap(ctx, ctype, raw):
        if PROTOCOL.lower() not in ctype.lower():
            raise ValueError(f"unknown protocol in {ctype!r}")
        head = BOUNDARY + b"\r\n"
        if not raw.startswith(head):
            raise ValueError("no leading boundary")
        octets = b"\tContent-Type: application/octet-stream\r\n"
        at = raw.index(octets)
        first = raw[len(head):at].decode("ascii")
        m = re.search(r"Length=(\d+)", first)
        if PROTOCOL not in first or not m:
            raise ValueError("first part without protocol or Length")
        length = int(m.group(1))
        rest = raw[at + len(octets):]
        (hlen,) = struct.unpack("<I", rest[:4])
        header = rest[4:4 + hlen]
        sealed = rest[4 + hlen:4 + hlen + length]
        if len(sealed) != length or not rest[4 + hlen + length:].startswith(BOUNDARY):
            raise ValueError("sealed part shorter than OriginalContent Length")
        return ctx.unwrap_winrm(header, sealed)

    def reply(self, handler, request, status, text):
        """Sends a WS-Management answer: sealed when the request was."""
        data = text.encode("utf-8")
        conn = handler.__dict__.get("winrm_connection")
        handler.send_response(status)
        if request is not None and request.encrypted:
            wrapped = conn.ctx.wrap_winrm(data)
            body = (BOUNDARY + b"\r\n"
                    + f"\tContent-Type: {PROTOCOL}\r\n".encode()
                    + f"\tOriginalContent: type={SOAP_TYPE};Length={len(data)}\r\n".encode()
                    + BOUNDARY + b"\r\n"
                    + b"\tContent-Type: application/octet-stream\r\n"
                    + struct.pack("<I", len(wrapped.header)) + wrapped.header + wrapped.data
                    + BOUNDARY + b"--\r\n")
            handler.send_header("Content-Type", ENCRYPTED_TYPE)
        else:
            body = data
            handler.send_header("Content-Type", SOAP_TYPE)
        if conn is not None and conn.final is not None:
            handler.send_header("WWW-Authenticate", "Negotiate " + base64.b64encode(conn.final).decode())
            conn.final = None
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
