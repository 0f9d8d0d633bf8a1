#!/usr/bin/env python3
"""A stateful fake of Azure Resource Manager (compute VMs; network VNets, subnets, NSGs, load
balancers, NICs, public IPs, NAT gateways) and of Entra ID's token endpoint, for spectro's
Azure tests. It runs behind Stoplight Prism in proxy mode (../shared/peers/spec-peer.sh),
which checks every request and every answer against Azure's own REST specs: the fake decides
what happens, Prism referees the wire format.

    arm_fake.py [--port 0] [--subscription S]... [--resource-group RG]...
                [--client ID:SECRET]... [--image URN]... [--delay 0.3] [--polls 0] [--page-size 50]
                [--arm-url URL]

Prints "listening on PORT" once it serves. What it models:
- tokens: client-credentials grant at POST /{tenant}/oauth2/v2.0/token; ARM calls need a
  token it issued (401 InvalidAuthenticationToken), a known subscription (404
  SubscriptionNotFound) and an existing resource group (404 ResourceGroupNotFound);
- resources by id; PUT creates (201) or updates (200) and answers with provisioningState
  Creating/Updating and an Azure-AsyncOperation URL (served by the fake itself: operation
  status is not part of the specs) that reports InProgress until --delay seconds passed and
  (network operations) it was polled --polls times (or 2 s more passed: nobody follows it);
  DELETE answers 202 (state Deleting) and removes the resource when its operation ends;
- references checked (subnet, NSG, NAT gateway, public IP, backend pool must exist) and
  in-use refusals on delete (InUseSubnetCannotBeDeleted, PublicIPAddressInUse, ...);
- a VM PUT makes the NIC of its networkInterfaceConfigurations (address from the subnet,
  backend-pool membership) and its OS disk; deleteOption Delete removes them with the VM; an
  image not in --image is 404 PlatformImageNotFound; changing customData of a VM is refused;
- lists page by --page-size with nextLink (through --arm-url, so Prism checks every page);
- test hooks (not through Prism): POST /_fake/throttle {"count", "retryAfter", "method"}
  answers the next matching requests 429; POST /_fake/lose {"count", "method", "path"} applies
  the next matching requests and answers 500 (a lost answer); POST /_fake/fail {"count",
  "path"} makes the operation of the next matching PUT end Failed (the resource too);
  POST /_fake/seed {"id",
  "resource"} stores a resource as is (the user's own network); GET /_fake/resources; GET
  /_fake/requests; POST /_fake/reset-log; POST /_fake/adopt {"pid"}: a process (Prism) the
  fake stops when it exits. A "path" filter matches a substring of the request path.
- with --parent PID it exits (stopping what it adopted) once that process is gone, so a test
  binary that shares one fake between its tests leaves nothing running.
"""
import argparse
import copy
import ipaddress
import json
import os
import re
import secrets
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlsplit

API = {"microsoft.compute": "2024-07-01", "microsoft.network": "2024-03-01"}
TYPES = {
    "virtualmachines": ("Microsoft.Compute", "virtualMachines"),
    "virtualnetworks": ("Microsoft.Network", "virtualNetworks"),
    "networksecuritygroups": ("Microsoft.Network", "networkSecurityGroups"),
    "loadbalancers": ("Microsoft.Network", "loadBalancers"),
    "networkinterfaces": ("Microsoft.Network", "networkInterfaces"),
    "publicipaddresses": ("Microsoft.Network", "publicIPAddresses"),
    "natgateways": ("Microsoft.Network", "natGateways"),
}
RES = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)/providers/"
    r"(?P<ns>microsoft\.(?:compute|network))/(?P<type>[a-z]+)(?:/(?P<name>[^/]+))?$",
    re.I,
)
SUB_LIST = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/providers/(?P<ns>microsoft\.(?:compute|network))/(?P<type>[a-z]+)$",
    re.I,
)
OPS = re.compile(r"^/subscriptions/(?P<sub>[^/]+)/providers/(?P<ns>[^/]+)/locations/(?P<loc>[^/]+)/operations/(?P<op>[^/]+)$", re.I)
VM_SIZES = re.compile(r"^(Standard|Basic)_[A-Za-z0-9_]+$")


class State:
    def __init__(self, args):
        self.lock = threading.RLock()
        self.args = args
        self.subs = set(s.lower() for s in args.subscription)
        self.rgs = set(r.lower() for r in args.resource_group)
        self.clients = dict(c.split(":", 1) for c in args.client)
        self.images = set(i.lower() for i in args.image)
        self.tokens = set()
        self.res = {}  # lower id -> resource
        self.ops = {}  # op id -> {"done": t, "status": ..., "then": callable}
        self.log = []
        self.throttle = []  # [{"count", "retryAfter", "method"}]
        self.lose = []
        self.next_ip = {}
        self.next_pip = 1
        self.self_url = ""
        self.adopted = []
        self.fail = []  # [{"count", "method", "path"}]: the operation of a matching PUT fails

    def arm_url(self):
        return self.args.arm_url or self.self_url


def cloud_error(code, message):
    return {"error": {"code": code, "message": message}}


class Fail(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def canonical_id(sub, rg, ns, typ, name):
    ns_c, typ_c = TYPES[typ.lower()]
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/{ns_c}/{typ_c}/{name}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    S: State = None

    def log_message(self, *a):
        pass

    # --- plumbing -------------------------------------------------------------------------
    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        return raw

    def send(self, status, obj=None, headers=None):
        data = b"" if obj is None else json.dumps(obj).encode()
        self.send_response(status)
        if obj is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if data:
            self.wfile.write(data)

    def do_GET(self):
        self.dispatch("GET")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def do_POST(self):
        self.dispatch("POST")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def dispatch(self, method):
        S = self.S
        url = urlsplit(self.path)
        path, query = url.path, parse_qs(url.query)
        raw = self.body()
        status = 500
        try:
            if path.startswith("/_fake/"):
                status = self.admin(method, path, raw)
                return
            if path.endswith("/oauth2/v2.0/token") and method == "POST":
                status = self.token(raw)
                return
            with S.lock:
                self.settle()
                inj = self.injected(S.throttle, method, path)
                if inj:
                    status = 429
                    self.send(429, cloud_error("TooManyRequests", "The request is being throttled."),
                              {"Retry-After": str(inj.get("retryAfter", 1))})
                    return
                self.authorize()
                lost = self.injected(S.lose, method, path)
                status, obj, headers = self.arm(method, path, query, raw)
                if lost:
                    status, obj, headers = 500, cloud_error("InternalServerError", "The answer was lost (injected)."), {}
            self.send(status, obj, headers)
        except Fail as f:
            status = f.status
            self.send(f.status, cloud_error(f.code, f.message))
        except Exception as e:  # a bug of the fake: say so loudly
            status = 500
            self.send(500, cloud_error("FakeBug", repr(e)))
            print("FAKE BUG", method, path, repr(e), file=sys.stderr, flush=True)
        finally:
            with S.lock:
                S.log.append({"method": method, "path": path, "status": status})

    def injected(self, table, method, path):
        for rule in table:
            if rule["count"] <= 0:
                continue
            if rule.get("method") and rule["method"] != method:
                continue
            if rule.get("path") and rule["path"].lower() not in path.lower():
                continue
            rule["count"] -= 1
            return rule
        return None

    def authorize(self):
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.S.tokens:
            raise Fail(401, "InvalidAuthenticationToken", "The access token is invalid.")

    def token(self, raw):
        form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        cid, secret = form.get("client_id", ""), form.get("client_secret", "")
        if form.get("grant_type") != "client_credentials" or not form.get("scope"):
            self.send(400, {"error": "invalid_request", "error_description": "AADSTS900144: grant_type and scope are required."})
            return 400
        if self.S.clients.get(cid) != secret:
            self.send(401, {"error": "invalid_client",
                            "error_description": f"AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{cid}'.\r\nTrace ID: 0"})
            return 401
        tok = "fake." + secrets.token_urlsafe(24)
        with self.S.lock:
            self.S.tokens.add(tok)
        self.send(200, {"token_type": "Bearer", "expires_in": 3599, "access_token": tok})
        return 200

    # --- test hooks -----------------------------------------------------------------------
    def admin(self, method, path, raw):
        S = self.S
        with S.lock:
            self.settle()
            if path == "/_fake/resources":
                self.send(200, list(S.res.values()))
            elif path == "/_fake/requests":
                self.send(200, S.log)
            elif path == "/_fake/reset-log":
                S.log.clear()
                self.send(200, {})
            elif path == "/_fake/throttle":
                S.throttle.append(json.loads(raw))
                self.send(200, {})
            elif path == "/_fake/lose":
                S.lose.append(json.loads(raw))
                self.send(200, {})
            elif path == "/_fake/fail":
                S.fail.append(json.loads(raw))
                self.send(200, {})
            elif path == "/_fake/adopt":
                S.adopted.append(int(json.loads(raw)["pid"]))
                self.send(200, {})
            elif path == "/_fake/seed":
                d = json.loads(raw)
                S.res[d["id"].lower()] = d["resource"]
                self.send(200, {})
            else:
                self.send(404, cloud_error("NotFound", path))
                return 404
        return 200

    # --- ARM ------------------------------------------------------------------------------
    def settle(self):
        """Ends the operations whose time has come."""
        now = time.monotonic()
        for op in list(self.S.ops.values()):
            # Done after the delay and the polls it needs; an operation nobody follows ends
            # anyway a little later (as on ARM).
            polled = op.get("polls", 0) >= op["need"] or now >= op["done"] + 2.0
            if op["status"] == "InProgress" and now >= op["done"] and polled:
                op["status"] = op.get("end", "Succeeded")
                op["then"]()

    def new_op(self, sub, ns, loc, then, end="Succeeded"):
        oid = secrets.token_hex(8)
        # Network operations also wait for --polls status polls; VM operations end on time
        # (spectro never follows a VM's create: the listing shows it).
        polls = self.S.args.polls if ns.lower() == "microsoft.network" else 0
        self.S.ops[oid] = {"done": time.monotonic() + self.S.args.delay, "status": "InProgress",
                           "then": then, "need": polls, "end": end}
        api = API[ns.lower()]
        return f"{self.S.self_url}/subscriptions/{sub}/providers/{TYPES_NS[ns.lower()]}/locations/{loc}/operations/{oid}?api-version={api}"

    def arm(self, method, path, query, raw):
        S = self.S
        m = OPS.match(path)
        if m and method == "GET":
            op = S.ops.get(m["op"])
            if not op:
                raise Fail(404, "NotFound", "operation not found")
            op["polls"] = op.get("polls", 0) + 1
            self.settle()
            out = {"status": op["status"]}
            if op["status"] == "Failed":
                out["error"] = {"code": "InternalOperationError", "message": "The operation failed (injected)."}
            return 200, out, {}
        m = RES.match(path) or SUB_LIST.match(path)
        if not m:
            raise Fail(404, "InvalidResourceType", f"no such route {path}")
        ns = m["ns"].lower()
        api = (query.get("api-version") or [None])[0]
        if api is None:
            raise Fail(400, "MissingApiVersionParameter", "The api-version query parameter (?api-version=) is required for all requests.")
        if api != API[ns]:
            raise Fail(400, "InvalidApiVersionParameter", f"The api-version '{api}' is invalid for {ns}; this fake serves {API[ns]}.")
        sub = m["sub"]
        if sub.lower() not in S.subs:
            raise Fail(404, "SubscriptionNotFound", f"The subscription '{sub}' could not be found.")
        typ = m["type"].lower()
        if typ not in TYPES:
            raise Fail(404, "InvalidResourceType", f"resource type {typ} is not served by the fake")
        if "rg" not in m.groupdict():
            items = [r for r in S.res.values() if r["type"].lower() == f"{ns}/{typ}" and r["id"].lower().startswith(f"/subscriptions/{sub.lower()}/")]
            return self.page(items, path, query)
        rg = m["rg"]
        if rg.lower() not in S.rgs:
            raise Fail(404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found.")
        name = m["name"]
        if name is None:
            if method != "GET":
                raise Fail(405, "MethodNotAllowed", method)
            prefix = f"/subscriptions/{sub}/resourcegroups/{rg}/providers/{ns}/{typ}/".lower()
            items = [r for k, r in sorted(S.res.items()) if k.startswith(prefix) and "/" not in k[len(prefix):]]
            return self.page(items, path, query)
        rid = canonical_id(sub, rg, ns, typ, name)
        key = rid.lower()
        if method == "GET":
            r = S.res.get(key)
            if not r:
                raise Fail(404, "ResourceNotFound", f"The Resource '{TYPES[typ][0]}/{TYPES[typ][1]}/{name}' under resource group '{rg}' was not found.")
            return 200, self.view(r), {}
        if method == "PUT":
            return self.put(sub, rg, ns, typ, name, rid, json.loads(raw or b"{}"))
        if method == "DELETE":
            return self.delete(sub, ns, typ, rid)
        raise Fail(405, "MethodNotAllowed", method)

    def view(self, r):
        v = copy.deepcopy(r)
        if v["type"] == "Microsoft.Compute/virtualMachines":
            # ARM never returns customData.
            v.get("properties", {}).get("osProfile", {}).pop("customData", None)
        return v

    def page(self, items, path, query):
        """One page, continued after the last id of the previous one (a key, not an offset:
        items made or deleted between two pages never shift the others out of the listing)."""
        size = self.S.args.page_size
        items = sorted(items, key=lambda r: r["id"].lower())
        after = (query.get("$skiptoken") or [""])[0]
        if after:
            items = [r for r in items if r["id"].lower() > after]
        chunk = items[:size]
        out = {"value": [self.view(r) for r in chunk]}
        if len(items) > size:
            api = query.get("api-version")[0]
            token = quote(chunk[-1]["id"].lower(), safe="")
            out["nextLink"] = f"{self.S.arm_url()}{path}?api-version={api}&$skiptoken={token}"
        return 200, out, {}

    def get(self, rid):
        r = self.S.res.get(rid.lower())
        return r

    def ref(self, obj, what):
        if not obj or not obj.get("id"):
            return None
        rid = obj["id"]
        parent = rid
        m = re.match(r"^(.*?/providers/Microsoft\.Network/[A-Za-z]+/[^/]+)(/.*)?$", rid, re.I)
        if m:
            parent = m.group(1)
        r = self.get(parent)
        if not r or r["properties"].get("provisioningState") == "Deleting":
            raise Fail(400, "InvalidResourceReference", f"Resource {rid} referenced by {what} was not found.")
        return r

    def put(self, sub, rg, ns, typ, name, rid, body):
        S = self.S
        old = S.res.get(rid.lower())
        if old and old["properties"].get("provisioningState") == "Deleting":
            raise Fail(409, "OperationNotAllowed", f"{name} is being deleted.")
        loc = body.get("location")
        if not loc:
            raise Fail(400, "LocationRequired", "The location property is required for this definition.")
        ns_c, typ_c = TYPES[typ]
        props = copy.deepcopy(body.get("properties") or {})
        r = {"id": rid, "name": name, "type": f"{ns_c}/{typ_c}", "location": loc,
             "tags": body.get("tags") or {}, "properties": props}
        for k in ("zones", "sku"):
            if k in body:
                r[k] = body[k]
        if ns == "microsoft.network":
            r["etag"] = 'W/"' + secrets.token_hex(8) + '"'
        getattr(self, "shape_" + typ, lambda *a: None)(r, old, sub, rg)
        final = "Succeeded"
        props["provisioningState"] = "Updating" if old else ("Creating" if typ == "virtualmachines" else "Updating")
        S.res[rid.lower()] = r

        if self.injected(S.fail, "PUT", rid):
            final = "Failed"

        def then():
            cur = S.res.get(rid.lower())
            if cur is r:
                cur["properties"]["provisioningState"] = final
                for child in self.children(cur):
                    child.setdefault("properties", {})["provisioningState"] = final
        url = self.new_op(sub, ns_c, loc, then, final)
        return (200 if old else 201), self.view(r), {"Azure-AsyncOperation": url}

    def children(self, r):
        p = r["properties"]
        out = []
        for k in ("subnets", "securityRules", "frontendIPConfigurations", "backendAddressPools",
                  "probes", "loadBalancingRules", "ipConfigurations"):
            out.extend(p.get(k) or [])
        return out

    def delete(self, sub, ns, typ, rid):
        S = self.S
        r = S.res.get(rid.lower())
        if not r:
            return 204, None, {}
        self.check_unused(r)
        ns_c = TYPES[typ][0]
        if r["properties"].get("provisioningState") != "Deleting":
            r["properties"]["provisioningState"] = "Deleting"

            def then():
                self.remove(r)
            url = self.new_op(sub, ns_c, r["location"], then)
            r["_op"] = url
        return 202, None, {"Azure-AsyncOperation": r["_op"], "Location": r["_op"]}

    def check_unused(self, r):
        if r["type"] == "Microsoft.Compute/virtualMachines":
            return  # its NICs and disks go with it (deleteOption) or are detached
        rid = r["id"].lower()
        users = []
        for o in self.S.res.values():
            if o is r or o["type"] == "Microsoft.Compute/disks":
                continue
            text = json.dumps(o["properties"]).lower()
            if f'"{rid}"' in text or f'"{rid}/' in text:
                users.append(o["id"])
        if not users:
            return
        code = {
            "Microsoft.Network/virtualNetworks": "InUseSubnetCannotBeDeleted",
            "Microsoft.Network/networkSecurityGroups": "InUseNetworkSecurityGroupCannotBeDeleted",
            "Microsoft.Network/publicIPAddresses": "PublicIPAddressInUse",
            "Microsoft.Network/natGateways": "InUseNatGatewayCannotBeDeleted",
            "Microsoft.Network/loadBalancers": "LoadBalancerInUseByVirtualMachine",
            "Microsoft.Network/networkInterfaces": "NicInUse",
        }.get(r["type"], "InUse")
        if r["type"] in ("Microsoft.Network/virtualNetworks", "Microsoft.Network/loadBalancers"):
            # Only NICs keep a network or a load balancer (their ipConfigurations).
            users = [u for u in users if "/networkinterfaces/" in u.lower()]
            if not users:
                return
        raise Fail(400, code, f"{r['id']} is in use by {users[0]} and cannot be deleted.")

    def remove(self, r):
        S = self.S
        S.res.pop(r["id"].lower(), None)
        if r["type"] == "Microsoft.Compute/virtualMachines":
            p = r["properties"]
            disk = p.get("storageProfile", {}).get("osDisk", {})
            if disk.get("deleteOption") == "Delete":
                S.res.pop(disk.get("managedDisk", {}).get("id", "").lower(), None)
            for nic in p.get("networkProfile", {}).get("networkInterfaces", []):
                n = S.res.get(nic["id"].lower())
                if not n:
                    continue
                if nic.get("properties", {}).get("deleteOption") == "Delete":
                    self.release_nic(n)
                    S.res.pop(nic["id"].lower(), None)
                else:
                    n["properties"].pop("virtualMachine", None)

    def release_nic(self, nic):
        for ipc in nic["properties"].get("ipConfigurations", []):
            subnet_id = ipc["properties"].get("subnet", {}).get("id", "")
            vnet = self.get(subnet_id.split("/subnets/")[0]) if subnet_id else None
            for sn in (vnet or {}).get("properties", {}).get("subnets", []):
                if sn["id"].lower() == subnet_id.lower():
                    left = [c for c in sn["properties"].get("ipConfigurations", [])
                            if c["id"].lower() != ipc["id"].lower()]
                    if left:
                        sn["properties"]["ipConfigurations"] = left
                    else:
                        sn["properties"].pop("ipConfigurations", None)
            for pool in ipc["properties"].get("loadBalancerBackendAddressPools", []):
                lb = self.get(pool["id"].split("/backendAddressPools/")[0])
                if not lb:
                    continue
                for bp in lb["properties"].get("backendAddressPools", []):
                    bp["properties"]["backendIPConfigurations"] = [
                        c for c in bp["properties"].get("backendIPConfigurations", [])
                        if c["id"].lower() != ipc["id"].lower()]

    # --- per type -------------------------------------------------------------------------
    def shape_publicipaddresses(self, r, old, sub, rg):
        p = r["properties"]
        if old and old["properties"].get("ipAddress"):
            p["ipAddress"] = old["properties"]["ipAddress"]
        else:
            n = self.S.next_pip
            self.S.next_pip += 1
            p["ipAddress"] = f"20.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"
        dns = p.get("dnsSettings")
        if dns and dns.get("domainNameLabel"):
            dns["fqdn"] = f"{dns['domainNameLabel']}.{r['location']}.cloudapp.azure.com"
        p.setdefault("publicIPAllocationMethod", "Static")

    def shape_networksecuritygroups(self, r, old, sub, rg):
        for rule in r["properties"].get("securityRules", []):
            rule["id"] = f"{r['id']}/securityRules/{rule['name']}"
            rule["type"] = "Microsoft.Network/networkSecurityGroups/securityRules"
            rule.setdefault("properties", {})["provisioningState"] = "Updating"

    def shape_natgateways(self, r, old, sub, rg):
        for ip in r["properties"].get("publicIpAddresses", []):
            self.ref(ip, r["id"])

    def shape_virtualnetworks(self, r, old, sub, rg):
        p = r["properties"]
        kept = {s["name"]: s for s in (old or {}).get("properties", {}).get("subnets", [])}
        for s in p.get("subnets", []):
            s["id"] = f"{r['id']}/subnets/{s['name']}"
            s["type"] = "Microsoft.Network/virtualNetworks/subnets"
            sp = s.setdefault("properties", {})
            for k in ("networkSecurityGroup", "natGateway"):
                if sp.get(k):
                    self.ref(sp[k], s["id"])
            if s["name"] in kept and kept[s["name"]]["properties"].get("ipConfigurations"):
                sp["ipConfigurations"] = kept[s["name"]]["properties"]["ipConfigurations"]
            sp["provisioningState"] = "Updating"
        names = {s["name"] for s in p.get("subnets", [])}
        for name, s in kept.items():
            if name not in names and s["properties"].get("ipConfigurations"):
                raise Fail(400, "InUseSubnetCannotBeDeleted", f"Subnet {name} is in use and cannot be deleted.")

    def shape_loadbalancers(self, r, old, sub, rg):
        p = r["properties"]
        olds = {b["name"]: b for b in (old or {}).get("properties", {}).get("backendAddressPools", [])}
        for kind in ("frontendIPConfigurations", "backendAddressPools", "probes", "loadBalancingRules"):
            for c in p.get(kind, []):
                c["id"] = f"{r['id']}/{kind}/{c['name']}"
                c.setdefault("properties", {})["provisioningState"] = "Updating"
        for f in p.get("frontendIPConfigurations", []):
            if f["properties"].get("publicIPAddress"):
                self.ref(f["properties"]["publicIPAddress"], f["id"])
        for b in p.get("backendAddressPools", []):
            if b["name"] in olds:
                b["properties"]["backendIPConfigurations"] = olds[b["name"]]["properties"].get("backendIPConfigurations", [])

    def shape_virtualmachines(self, r, old, sub, rg):
        S = self.S
        p = r["properties"]
        size = (p.get("hardwareProfile") or {}).get("vmSize", "")
        if not VM_SIZES.match(size) or "nope" in size.lower():
            raise Fail(400, "InvalidParameter", f"The value {size} provided for the VM size is not valid.")
        img = (p.get("storageProfile") or {}).get("imageReference") or {}
        key = (img.get("id") or ":".join(img.get(k, "") for k in ("publisher", "offer", "sku", "version"))).lower()
        if key not in S.images:
            raise Fail(404, "PlatformImageNotFound", f"The platform image '{key}' is not available.")
        osp = p.get("osProfile") or {}
        if old:
            if (old["properties"].get("osProfile") or {}).get("customData") != osp.get("customData"):
                raise Fail(409, "PropertyChangeNotAllowed", "Changing property 'customData' is not allowed.")
            # An update keeps what the create made.
            p["networkProfile"] = old["properties"]["networkProfile"]
            p["storageProfile"]["osDisk"] = old["properties"]["storageProfile"]["osDisk"]
            p["vmId"] = old["properties"]["vmId"]
            p["timeCreated"] = old["properties"]["timeCreated"]
            return
        if len(osp.get("customData", "")) > 65535:
            raise Fail(400, "InvalidParameter", "customData is longer than 65535 characters.")
        p["vmId"] = secrets.token_hex(16)
        p["timeCreated"] = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
        net = p.get("networkProfile") or {}
        confs = net.get("networkInterfaceConfigurations") or []
        if not confs:
            raise Fail(400, "InvalidParameter", "networkProfile needs networkInterfaceConfigurations in this fake.")
        if not net.get("networkApiVersion"):
            raise Fail(400, "InvalidParameter", "networkApiVersion is required with networkInterfaceConfigurations.")
        nics = []
        made = []
        for conf in confs:
            cp = conf.get("properties") or {}
            nic_id = canonical_id(sub, rg, "microsoft.network", "networkinterfaces", conf["name"])
            if nic_id.lower() in S.res:
                raise Fail(409, "NicInUse", f"NIC {conf['name']} exists already.")
            if cp.get("networkSecurityGroup"):
                self.ref(cp["networkSecurityGroup"], nic_id)
            ipcs = []
            for ipc in cp.get("ipConfigurations") or []:
                ip = ipc.get("properties") or {}
                subnet_ref = ip.get("subnet")
                if not subnet_ref:
                    raise Fail(400, "InvalidParameter", "subnet is required")
                vnet_id = subnet_ref["id"].split("/subnets/")[0]
                vnet = self.get(vnet_id)
                sub_obj = None
                for s in (vnet or {}).get("properties", {}).get("subnets", []):
                    if s["id"].lower() == subnet_ref["id"].lower():
                        sub_obj = s
                if not sub_obj:
                    raise Fail(400, "InvalidResourceReference", f"Subnet {subnet_ref['id']} was not found.")
                net4 = ipaddress.ip_network(sub_obj["properties"].get("addressPrefix") or "10.255.0.0/24")
                k = sub_obj["id"].lower()
                S.next_ip[k] = S.next_ip.get(k, 3) + 1
                addr = str(net4.network_address + S.next_ip[k])
                ipc_id = f"{nic_id}/ipConfigurations/{ipc['name']}"
                pools = ip.get("loadBalancerBackendAddressPools") or []
                for pool in pools:
                    lb = self.ref(pool, ipc_id)
                    bp = next((b for b in lb["properties"].get("backendAddressPools", []) if b["id"].lower() == pool["id"].lower()), None)
                    if not bp:
                        raise Fail(400, "InvalidResourceReference", f"Backend pool {pool['id']} was not found.")
                    made.append((bp, ipc_id))
                made.append((sub_obj, ipc_id))
                ipcs.append({"id": ipc_id, "name": ipc["name"], "properties": {
                    "privateIPAddress": addr, "privateIPAllocationMethod": "Dynamic",
                    "primary": ip.get("primary", True), "subnet": {"id": sub_obj["id"]},
                    "loadBalancerBackendAddressPools": pools, "provisioningState": "Succeeded"}})
            nic = {"id": nic_id, "name": conf["name"], "type": "Microsoft.Network/networkInterfaces",
                   "location": r["location"], "etag": 'W/"1"',
                   "properties": {"ipConfigurations": ipcs, "virtualMachine": {"id": r["id"]},
                                  "primary": cp.get("primary", True), "provisioningState": "Succeeded"}}
            if cp.get("networkSecurityGroup"):
                nic["properties"]["networkSecurityGroup"] = cp["networkSecurityGroup"]
            nics.append(nic)
            S.res[nic_id.lower()] = nic
            cp_ = {"primary": cp.get("primary", True), "deleteOption": cp.get("deleteOption", "Detach")}
            net.setdefault("networkInterfaces", []).append({"id": nic_id, "properties": cp_})
        for target, ipc_id in made:
            key_ = "backendIPConfigurations" if "/backendAddressPools/" in target["id"] else "ipConfigurations"
            target["properties"].setdefault(key_, []).append({"id": ipc_id})
        disk = p["storageProfile"].setdefault("osDisk", {})
        dname = disk.get("name") or f"{r['name']}_OsDisk"
        did = f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/disks/{dname}"
        disk.setdefault("managedDisk", {})["id"] = did
        disk["osType"] = "Linux"
        S.res[did.lower()] = {"id": did, "name": dname, "type": "Microsoft.Compute/disks", "location": r["location"],
                              "tags": {}, "properties": {"diskSizeGB": disk.get("diskSizeGB", 30),
                                                         "sku": disk.get("managedDisk", {}).get("storageAccountType", "Premium_LRS")}}


TYPES_NS = {"microsoft.compute": "Microsoft.Compute", "microsoft.network": "Microsoft.Network"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--subscription", action="append", default=[])
    ap.add_argument("--resource-group", action="append", default=[])
    ap.add_argument("--client", action="append", default=[])
    ap.add_argument("--image", action="append", default=[])
    ap.add_argument("--delay", type=float, default=0.3)
    ap.add_argument("--polls", type=int, default=0)
    ap.add_argument("--page-size", type=int, default=50)
    ap.add_argument("--arm-url", default="")
    ap.add_argument("--parent", type=int, default=0)
    args = ap.parse_args()
    state = State(args)
    Handler.S = state
    srv = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    srv.daemon_threads = True
    port = srv.server_address[1]
    state.self_url = f"http://127.0.0.1:{port}"
    print(f"listening on {port}", flush=True)
    if args.parent:
        def watch():
            while True:
                time.sleep(0.5)
                try:
                    os.kill(args.parent, 0)
                except OSError:
                    break
            for pid in state.adopted:
                try:
                    os.kill(pid, signal.SIGTERM)
                except OSError:
                    pass
            os._exit(0)
        threading.Thread(target=watch, daemon=True).start()
    srv.serve_forever()


if __name__ == "__main__":
    main()
