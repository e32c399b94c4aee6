#!/usr/bin/env python3
"""A STAND-IN for vCenter's Automation REST API, built from the API reference.

For tests only. No vCenter runs here (and govmomi's vcsim is not packaged
with its /api endpoints), so this stand-in answers the requests reimage's
`vsphere` provisioner makes the way the vSphere Automation API reference
(vSphere 7.0U2 and later, the `/api` paths) documents them: JSON bodies,
identifiers as plain JSON strings, and errors as
`{"error_type": "...", "messages": [{"id", "default_message", "args"}]}`
with the documented HTTP status of each error type. It is not vCenter: the
inventory is a handful of objects in memory and nothing boots.

Usage:
  vsphere_standin.py --port N --user U --password-file F [--host 127.0.0.1]
                     [--log FILE] [--state-file FILE] [--fail MODE]...
                     [--power-on-delay SECONDS] [--template-power STATE]
                     [--existing NAME] [--tls-cert C --tls-key K]

--port 0 picks a free port. Prints "vsphere-standin listening on HOST:PORT"
on stdout (flushed) once it accepts connections.

--log FILE: one JSON line per request: method, path, query, whether the
  `vmware-api-session-id` header was present ("session") and whether it
  named a live session ("session_valid"), the status answered, and for a
  clone the request body. Never a password.
--state-file FILE: the whole inventory as JSON, rewritten after each change.

Inventory: datacenter "Lab" (datacenter-2), VM folder "reimage" (group-v10),
resource pool "Lab-Pool" (resgroup-8), datastore "datastore1" (datastore-11),
VM "win7-template" (vm-100, POWERED_OFF, or --template-power), and a VM
named --existing (default "pc1", vm-101, POWERED_ON; "" for none).

Endpoints (all but POST /api/session need the session header):
  POST   /api/session                   Basic auth -> 201 "session-id"
  DELETE /api/session                   204
  GET    /api/vcenter/datacenter?names=  [{datacenter, name}]
  GET    /api/vcenter/folder?names=&type=&datacenters=   [{folder, name, type}]
  GET    /api/vcenter/resource-pool?names=&datacenters= [{resource_pool, name}]
  GET    /api/vcenter/datastore?names=&datacenters=     [{datastore, name, type, free_space, capacity}]
  GET    /api/vcenter/vm?names=&folders=&datacenters=  [{vm, name, power_state, cpu_count, memory_size_MiB}]
  GET    /api/vcenter/vm/{vm}           {name, power_state, ...}
  DELETE /api/vcenter/vm/{vm}           204; 400 NOT_ALLOWED_IN_CURRENT_STATE when powered on
  GET    /api/vcenter/vm/{vm}/power     {state[, clean_power_off]}
  POST   /api/vcenter/vm/{vm}/power?action=start|stop|reset|suspend
                                        204; 400 ALREADY_IN_DESIRED_STATE (start
                                        when on, stop when off);
                                        400 NOT_ALLOWED_IN_CURRENT_STATE (reset or
                                        suspend when not on)
  POST   /api/vcenter/vm?action=clone   body VM.CloneSpec -> 200 "vm-N"
  POST   /api/vcenter/vm?action=instant-clone
                                        body VM.InstantCloneSpec -> 200 "vm-N";
                                        the source must be powered on and the
                                        clone is powered on, as documented

Failure modes (--fail, repeatable):
  clone-503      clone and instant-clone answer 503 SERVICE_UNAVAILABLE
  stop-500       power stop answers 500 ERROR
  session-503    POST /api/session answers 503 SERVICE_UNAVAILABLE
  delete-busy    DELETE of a VM answers 400 RESOURCE_BUSY
--power-on-delay S: after power start (204), the VM reports POWERED_OFF for
  S more seconds before POWERED_ON (a slow power-on; a large S never comes).
"""

import argparse
import base64
import json
import os
import ssl
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

SESSION_HEADER = "vmware-api-session-id"

# HTTP status of each error type, as the API reference lists them.
STATUS = {
    "ALREADY_EXISTS": 400,
    "ALREADY_IN_DESIRED_STATE": 400,
    "INVALID_ARGUMENT": 400,
    "NOT_ALLOWED_IN_CURRENT_STATE": 400,
    "RESOURCE_BUSY": 400,
    "UNAUTHENTICATED": 401,
    "UNAUTHORIZED": 403,
    "NOT_FOUND": 404,
    "ERROR": 500,
    "SERVICE_UNAVAILABLE": 503,
}


class Inventory:
    """The objects and sessions, behind one lock."""

    def __init__(self, args):
        self.lock = threading.Lock()
        self.args = args
        self.sessions = set()
        self.next_vm = 200
        self.datacenters = {"datacenter-2": {"name": "Lab"}}
        self.folders = {
            "group-v10": {"name": "reimage", "type": "VIRTUAL_MACHINE", "datacenter": "datacenter-2"},
            "group-h4": {"name": "host", "type": "HOST", "datacenter": "datacenter-2"},
        }
        self.pools = {"resgroup-8": {"name": "Lab-Pool", "datacenter": "datacenter-2"}}
        self.datastores = {"datastore-11": {"name": "datastore1", "datacenter": "datacenter-2"}}
        self.vms = {
            "vm-100": self.new_vm("win7-template", args.template_power),
        }
        if args.existing:
            self.vms["vm-101"] = self.new_vm(args.existing, "POWERED_ON")
        self.deleted = []
        self.save()

    @staticmethod
    def new_vm(name, power, folder="group-v10", pool="resgroup-8", datastore="datastore-11"):
        return {
            "name": name,
            "power_state": power,
            "on_at": 0.0,
            "folder": folder,
            "resource_pool": pool,
            "datastore": datastore,
            "cpu_count": 1,
            "memory_size_MiB": 2048,
            "cloned_from": None,
            "clone_kind": None,
        }

    def power(self, vm):
        """The power state now: a started VM is on once its delay passed."""
        v = self.vms[vm]
        if v["power_state"] == "STARTING":
            if time.monotonic() >= v["on_at"]:
                v["power_state"] = "POWERED_ON"
                self.save()
            else:
                return "POWERED_OFF"
        return v["power_state"]

    def save(self):
        path = self.args.state_file
        if not path:
            return
        data = {
            "sessions": len(self.sessions),
            "vms": {
                k: {
                    "name": v["name"],
                    "power_state": "POWERED_OFF" if v["power_state"] == "STARTING" else v["power_state"],
                    "folder": v["folder"],
                    "resource_pool": v["resource_pool"],
                    "datastore": v["datastore"],
                    "cloned_from": v["cloned_from"],
                    "clone_kind": v["clone_kind"],
                }
                for k, v in self.vms.items()
            },
            "deleted": self.deleted,
        }
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)


class ApiError(Exception):
    def __init__(self, error_type, message, status=None):
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.status = status or STATUS.get(error_type, 500)

    def body(self):
        return {
            "error_type": self.error_type,
            "messages": [
                {
                    "id": "vapi.standin." + self.error_type.lower(),
                    "default_message": self.message,
                    "args": [],
                }
            ],
        }


class Handler(BaseHTTPRequestHandler):
    server_version = "vsphere-standin/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *a):  # keep stderr quiet
        pass

    # -- plumbing --------------------------------------------------------

    def record(self, status, extra=None):
        inv = self.server.inv
        path = inv.args.log
        if not path:
            return
        sid = self.headers.get(SESSION_HEADER)
        entry = {
            "method": self.command,
            "path": self.url.path,
            "query": self.url.query,
            "session": sid is not None,
            "session_valid": self.session_valid,
            "status": status,
        }
        if extra:
            entry.update(extra)
        with self.server.log_lock:
            with open(path, "a") as f:
                f.write(json.dumps(entry) + "\n")

    def reply(self, status, body=None):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiError("INVALID_ARGUMENT", "request body is not JSON")

    def handle_any(self):
        self.url = urlsplit(self.path)
        self.query = parse_qs(self.url.query)
        sid = self.headers.get(SESSION_HEADER)
        with self.server.inv.lock:
            # Whether the header named a live session when the request came.
            self.session_valid = sid is not None and sid in self.server.inv.sessions
        extra = {}
        try:
            status, body = self.route(extra)
        except ApiError as e:
            status, body = e.status, e.body()
        self.record(status, extra)
        self.reply(status, body)

    do_GET = do_POST = do_DELETE = do_PATCH = handle_any

    def need_session(self):
        sid = self.headers.get(SESSION_HEADER)
        if sid is None or sid not in self.server.inv.sessions:
            raise ApiError("UNAUTHENTICATED", "This method requires authentication.")
        return sid

    def filt(self, name):
        return self.query.get(name, [])

    # -- routes ----------------------------------------------------------

    def route(self, extra):
        inv = self.server.inv
        args = inv.args
        m, p = self.command, self.url.path.rstrip("/")
        action = (self.query.get("action") or [None])[0]
        if p == "/api/session":
            if m == "POST":
                return self.login()
            if m == "DELETE":
                sid = self.need_session()
                with inv.lock:
                    inv.sessions.discard(sid)
                    inv.save()
                return 204, None
            raise ApiError("INVALID_ARGUMENT", "unsupported method", 405)
        if not p.startswith("/api/"):
            raise ApiError("NOT_FOUND", "no such resource: " + p)
        self.need_session()
        parts = [unquote(x) for x in p.split("/")[2:]]
        with inv.lock:
            if parts == ["vcenter", "datacenter"] and m == "GET":
                return 200, [
                    {"datacenter": k, "name": v["name"]}
                    for k, v in sorted(inv.datacenters.items())
                    if self.match(k, v)
                ]
            if parts == ["vcenter", "folder"] and m == "GET":
                types = self.filt("type")
                return 200, [
                    {"folder": k, "name": v["name"], "type": v["type"]}
                    for k, v in sorted(inv.folders.items())
                    if self.match(k, v) and (not types or v["type"] in types)
                ]
            if parts == ["vcenter", "resource-pool"] and m == "GET":
                return 200, [
                    {"resource_pool": k, "name": v["name"]}
                    for k, v in sorted(inv.pools.items())
                    if self.match(k, v)
                ]
            if parts == ["vcenter", "datastore"] and m == "GET":
                return 200, [
                    {
                        "datastore": k,
                        "name": v["name"],
                        "type": "VMFS",
                        "free_space": 500 << 30,
                        "capacity": 1 << 40,
                    }
                    for k, v in sorted(inv.datastores.items())
                    if self.match(k, v)
                ]
            if parts == ["vcenter", "vm"]:
                if m == "GET":
                    folders = self.filt("folders")
                    return 200, [
                        {
                            "vm": k,
                            "name": v["name"],
                            "power_state": inv.power(k),
                            "cpu_count": v["cpu_count"],
                            "memory_size_MiB": v["memory_size_MiB"],
                        }
                        for k, v in sorted(inv.vms.items())
                        if self.match(k, v, dc_of=lambda v: inv.folders[v["folder"]]["datacenter"])
                        and (not folders or v["folder"] in folders)
                    ]
                if m == "POST" and action in ("clone", "instant-clone"):
                    spec = self.read_body()
                    extra["body"] = spec
                    return self.clone(spec, action)
            if len(parts) == 3 and parts[:2] == ["vcenter", "vm"]:
                vm = parts[2]
                if vm not in inv.vms:
                    raise ApiError("NOT_FOUND", "The virtual machine '%s' was not found." % vm)
                v = inv.vms[vm]
                if m == "GET":
                    return 200, {
                        "name": v["name"],
                        "power_state": inv.power(vm),
                        "cpu": {"count": v["cpu_count"]},
                        "memory": {"size_MiB": v["memory_size_MiB"]},
                    }
                if m == "DELETE":
                    if "delete-busy" in args.fail:
                        raise ApiError("RESOURCE_BUSY", "Another task is in progress.")
                    if inv.power(vm) != "POWERED_OFF":
                        raise ApiError(
                            "NOT_ALLOWED_IN_CURRENT_STATE",
                            "The operation is not allowed in the current state (%s)." % inv.power(vm),
                        )
                    inv.deleted.append({"vm": vm, "name": v["name"]})
                    del inv.vms[vm]
                    inv.save()
                    return 204, None
            if len(parts) == 4 and parts[:2] == ["vcenter", "vm"] and parts[3] == "power":
                vm = parts[2]
                if vm not in inv.vms:
                    raise ApiError("NOT_FOUND", "The virtual machine '%s' was not found." % vm)
                if m == "GET":
                    state = inv.power(vm)
                    body = {"state": state}
                    if state == "POWERED_OFF":
                        body["clean_power_off"] = True
                    return 200, body
                if m == "POST":
                    return self.power(vm, action)
        raise ApiError("NOT_FOUND", "no such operation: %s %s" % (m, p))

    def match(self, key, obj, dc_of=None):
        """`names` and `datacenters` filters, as the list operations take them."""
        names = self.filt("names")
        if names and obj["name"] not in names:
            return False
        dcs = self.filt("datacenters")
        if dcs:
            dc = dc_of(obj) if dc_of else obj.get("datacenter", key)
            if dc not in dcs:
                return False
        return True

    def login(self):
        inv = self.server.inv
        if "session-503" in inv.args.fail:
            raise ApiError("SERVICE_UNAVAILABLE", "The service is not available.")
        auth = self.headers.get("Authorization", "")
        ok = False
        if auth.startswith("Basic "):
            try:
                user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
                ok = user == inv.args.user and pw == inv.password
            except ValueError:
                ok = False
        if not ok:
            raise ApiError("UNAUTHENTICATED", "Authentication required.")
        sid = uuid.uuid4().hex
        with inv.lock:
            inv.sessions.add(sid)
            inv.save()
        return 201, sid

    def power(self, vm, action):
        inv = self.server.inv
        state = inv.power(vm)
        v = inv.vms[vm]
        if action == "stop":
            if "stop-500" in inv.args.fail:
                raise ApiError("ERROR", "A general system error occurred.")
            if state == "POWERED_OFF":
                raise ApiError("ALREADY_IN_DESIRED_STATE", "Virtual machine is already powered off.")
            v["power_state"] = "POWERED_OFF"
        elif action == "start":
            if state == "POWERED_ON" or v["power_state"] == "STARTING":
                raise ApiError("ALREADY_IN_DESIRED_STATE", "Virtual machine is already powered on.")
            delay = inv.args.power_on_delay
            if delay > 0:
                v["power_state"] = "STARTING"
                v["on_at"] = time.monotonic() + delay
            else:
                v["power_state"] = "POWERED_ON"
        elif action == "reset":
            if state != "POWERED_ON":
                raise ApiError("NOT_ALLOWED_IN_CURRENT_STATE", "Virtual machine is not powered on.")
            v["resets"] = v.get("resets", 0) + 1
        elif action == "suspend":
            if state != "POWERED_ON":
                raise ApiError("NOT_ALLOWED_IN_CURRENT_STATE", "Virtual machine is not powered on.")
            v["power_state"] = "SUSPENDED"
        else:
            raise ApiError("INVALID_ARGUMENT", "unknown power action %r" % action)
        inv.save()
        return 204, None

    def clone(self, spec, action):
        inv = self.server.inv
        if "clone-503" in inv.args.fail:
            raise ApiError("SERVICE_UNAVAILABLE", "The service is not available.")
        if not isinstance(spec, dict):
            raise ApiError("INVALID_ARGUMENT", "the clone spec must be a JSON object")
        name, source = spec.get("name"), spec.get("source")
        if not isinstance(name, str) or not name:
            raise ApiError("INVALID_ARGUMENT", "spec.name is required")
        if source not in inv.vms:
            raise ApiError("NOT_FOUND", "The source virtual machine '%s' was not found." % source)
        if any(v["name"] == name for v in inv.vms.values()):
            raise ApiError("ALREADY_EXISTS", "A virtual machine named '%s' already exists." % name)
        placement = spec.get("placement") or {}
        if not isinstance(placement, dict):
            raise ApiError("INVALID_ARGUMENT", "spec.placement must be an object")
        src = inv.vms[source]
        table = {"folder": inv.folders, "resource_pool": inv.pools, "datastore": inv.datastores}
        chosen = {}
        for key, objs in table.items():
            ident = placement.get(key)
            if ident is None:
                chosen[key] = src[key]
            elif ident not in objs:
                raise ApiError("INVALID_ARGUMENT", "placement.%s '%s' does not exist" % (key, ident))
            else:
                chosen[key] = ident
        if action == "instant-clone":
            if inv.power(source) != "POWERED_ON":
                raise ApiError(
                    "NOT_ALLOWED_IN_CURRENT_STATE",
                    "The source virtual machine of an instant clone must be powered on.",
                )
            power = "POWERED_ON"
        else:
            power = "POWERED_ON" if spec.get("power_on") else "POWERED_OFF"
        vm = "vm-%d" % inv.next_vm
        inv.next_vm += 1
        new = inv.new_vm(name, power, chosen["folder"], chosen["resource_pool"], chosen["datastore"])
        new["cloned_from"] = source
        new["clone_kind"] = action
        inv.vms[vm] = new
        inv.save()
        return 200, vm


def main():
    ap = argparse.ArgumentParser(description="vCenter Automation API stand-in (tests only)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password-file", required=True)
    ap.add_argument("--log")
    ap.add_argument("--state-file")
    ap.add_argument("--fail", action="append", default=[],
                    choices=["clone-503", "stop-500", "session-503", "delete-busy"])
    ap.add_argument("--power-on-delay", type=float, default=0.0)
    ap.add_argument("--template-power", default="POWERED_OFF", choices=["POWERED_OFF", "POWERED_ON"])
    ap.add_argument("--existing", default="pc1")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    args = ap.parse_args()

    with open(args.password_file) as f:
        password = f.readline().rstrip("\r\n")

    inv = Inventory(args)
    inv.password = password
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    server.inv = inv
    server.log_lock = threading.Lock()
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    host, port = server.server_address[:2]
    print("vsphere-standin listening on %s:%d" % (host, port), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
