#!/usr/bin/env python3
"""A stateful fake of Google Compute Engine v1 (the resources spectro's GCP provider uses:
networks, subnetworks, routers with NAT, firewalls, global addresses, health checks, backend
services, target TCP proxies, global forwarding rules, instance groups, instances, images,
regions, operations) for spectro's GCP tests. It runs behind Stoplight Prism in proxy mode
(../shared/peers/spec-peer.sh WORKDIR gce PORT UPSTREAM), which checks every request and
every answer against Compute Engine's own spec: the fake decides what happens, Prism referees
the wire format.

    gce_fake.py [--port 0] [--project P]... [--image projects/P/global/images/NAME[@FAMILY]]...
                [--delay 0.3] [--wait-cap 0.1] [--boot 0.3] [--page-size 50] [--parent PID]

Prints "listening on PORT" once it serves. What it models:
- service accounts: POST /_fake/service-account {"email", "project"} makes an RSA key (openssl)
  and answers the service-account JSON key; API calls need `Authorization: Bearer JWT`, a
  self-signed RS256 JWT of a known key (kid) whose signature verifies (openssl) and that has
  not expired (401 otherwise); a project not in --project is 404, a project other than the
  account's own 403 (the account has roles in its own project only);
- resources by path; inserts answer an operation (zonal, regional or global) that is RUNNING
  until --delay seconds passed; `operations.wait` blocks until the operation is done or
  --wait-cap seconds passed (so a slow operation takes several waits); a repeated `requestId`
  answers the first request's operation and does nothing; an existing name is 409
  alreadyExists; references are checked (404) and deletes of a resource in use refused (400
  resourceInUseByAnotherResource);
- instances by bulkInsert (perInstanceProperties names, count/minCount all or nothing,
  visible when the operation is done; an image or an image family), an address from the
  subnetwork's range, PROVISIONING then RUNNING after --boot seconds; a
  deleted instance leaves its instance groups; unmanaged instance groups with addInstances /
  listInstances;
- lists and aggregated lists page by --page-size (pageToken = the last name), filters
  `labels.K = "V"`, `labels.K:*`, `name eq "REGEX"`, `name = "N"`;
- test hooks (not through Prism): POST /_fake/throttle {"count", "status", "retryAfter",
  "method", "path"}: the next matching requests answer 403/429 rateLimitExceeded;
  POST /_fake/lose {"count", "method", "path"}: applied, answered 503 (a lost answer);
  POST /_fake/fail {"count", "path", "code"}: the operation of the next matching insert ends
  with that error and changes nothing; POST /_fake/slow {"count", "path", "delay"}: the
  operation of the next matching write takes `delay` seconds; GET /_fake/resources; GET /_fake/requests;
  POST /_fake/adopt {"pid"}: a process (Prism) the fake stops when it exits; POST /_fake/seed
  {"path", "resource"} stores a resource as is (a user's own network).
- with --parent PID it exits (stopping what it adopted) once that process is gone.
"""
import argparse
import base64
import copy
import datetime
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

SELF = "https://www.googleapis.com/compute/v1/"
KINDS = {
    "networks": "compute#network", "subnetworks": "compute#subnetwork", "routers": "compute#router",
    "firewalls": "compute#firewall", "addresses": "compute#address", "healthChecks": "compute#healthCheck",
    "backendServices": "compute#backendService", "targetTcpProxies": "compute#targetTcpProxy",
    "forwardingRules": "compute#forwardingRule", "instanceGroups": "compute#instanceGroup",
    "instances": "compute#instance", "images": "compute#image",
}
LIST_KINDS = {
    "networks": "compute#networkList", "subnetworks": "compute#subnetworkList", "routers": "compute#routerList",
    "firewalls": "compute#firewallList", "addresses": "compute#addressList", "healthChecks": "compute#healthCheckList",
    "backendServices": "compute#backendServiceList", "targetTcpProxies": "compute#targetTcpProxyList",
    "forwardingRules": "compute#forwardingRuleList", "instanceGroups": "compute#instanceGroupList",
    "instances": "compute#instanceList",
}
AGG = {"instances": ("compute#instanceAggregatedList", "instances"),
       "instanceGroups": ("compute#instanceGroupAggregatedList", "instanceGroups")}


def now_ts():
    return datetime.datetime.now(datetime.timezone.utc).astimezone(
        datetime.timezone(datetime.timedelta(hours=-8))).isoformat(timespec="milliseconds")


def fingerprint():
    """8 random bytes in base64 that reads the same in both alphabets (the spec's `byte`
    pattern allows `+/`, the client library decodes the URL-safe alphabet): no `+`, `/`, `-`, `_`."""
    while True:
        f = base64.b64encode(os.urandom(8)).decode()
        if not any(c in f for c in "+/"):
            return f


def b64url_dec(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class Fail(Exception):
    def __init__(self, status, reason, message):
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


def error_body(status, reason, message):
    return {"error": {"code": status, "message": message,
                      "errors": [{"message": message, "domain": "global", "reason": reason}]}}


def rel(url):
    """`projects/...` of a full or partial URL."""
    if not isinstance(url, str):
        return ""
    i = url.find("projects/")
    return url[i:] if i >= 0 else url


class State:
    def __init__(self, args):
        self.lock = threading.RLock()
        self.args = args
        self.projects = set(args.project)
        self.keys = {}  # kid -> {"email", "project", "pub"}
        self.verified = {}  # token -> (email, project, exp)
        self.res = {}  # path -> resource
        self.ops = {}  # path -> {"op": dict, "done": t, "then": callable or None, "error": dict or None}
        self.request_ids = {}  # (project, requestId) -> op path
        self.images = {}
        for spec in args.image:
            path, _, family = spec.partition("@")
            name = path.rsplit("/", 1)[1]
            self.images[path] = {"kind": "compute#image", "id": str(abs(hash(path)) % 10**18), "name": name,
                                 "family": family or None, "status": "READY",
                                 "selfLink": SELF + path, "creationTimestamp": now_ts(), "diskSizeGb": "10"}
        self.log = []
        self.throttle, self.lose, self.fail, self.slow = [], [], [], []
        self.adopted = []
        self.seq = 0
        self.next_ip = {}

    def next_id(self):
        self.seq += 1
        return str(4000000000000000000 + self.seq)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    S: State = None

    def log_message(self, *a):
        pass

    def send(self, status, obj=None, headers=None):
        data = b"" if obj is None else json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if data:
            self.wfile.write(data)

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def dispatch(self, method):
        S = self.S
        url = urlsplit(self.path)
        path, query = url.path, {k: v[0] for k, v in parse_qs(url.query).items()}
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        status = 500
        try:
            if path.startswith("/_fake/"):
                status = self.admin(method, path, raw)
                return
            inj = self.injected(S.throttle, method, path)
            if inj:
                status = inj.get("status", 403)
                self.send(status, error_body(status, "rateLimitExceeded",
                                             "Quota exceeded for quota metric 'Queries' and limit 'Queries per minute' of service 'compute.googleapis.com'."),
                          {"Retry-After": str(inj.get("retryAfter", 1))})
                return
            self.authorize(path)
            if path.endswith("/wait") and "/operations/" in path:
                status, obj = self.wait(path)
            else:
                with S.lock:
                    lost = self.injected(S.lose, method, path)
                    status, obj = self.api(method, path, query, raw)
                    if lost:
                        status, obj = 503, error_body(503, "backendError", "The answer was lost (injected).")
            self.send(status, obj)
        except Fail as f:
            status = f.status
            self.send(f.status, error_body(f.status, f.reason, f.message))
        except Exception as e:  # a bug of the fake: say so loudly
            status = 500
            self.send(500, error_body(500, "fakeBug", repr(e)))
            import traceback
            traceback.print_exc()
            print("FAKE BUG", method, path, repr(e), file=sys.stderr, flush=True)
        finally:
            with S.lock:
                S.log.append({"method": method, "path": path, "status": status})

    def injected(self, table, method, path):
        with self.S.lock:
            for rule in table:
                if rule["count"] <= 0:
                    continue
                if rule.get("method") and rule["method"] != method:
                    continue
                if rule.get("path") and rule["path"] not in path:
                    continue
                rule["count"] -= 1
                return rule
        return None

    # --- credentials ----------------------------------------------------------------------
    def authorize(self, path):
        S = self.S
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            raise Fail(401, "required", "Login Required.")
        tok = auth[7:]
        with S.lock:
            hit = S.verified.get(tok)
        if hit is None:
            try:
                h, c, sig = tok.split(".")
                header, claims = json.loads(b64url_dec(h)), json.loads(b64url_dec(c))
            except Exception:
                raise Fail(401, "authError", "Invalid Credentials")
            key = S.keys.get(header.get("kid"))
            if header.get("alg") != "RS256" or key is None or claims.get("iss") != key["email"]:
                raise Fail(401, "authError", "Invalid Credentials")
            with tempfile.TemporaryDirectory() as d:
                open(f"{d}/pub.pem", "w").write(key["pub"])
                open(f"{d}/data", "wb").write(f"{h}.{c}".encode())
                open(f"{d}/sig", "wb").write(b64url_dec(sig))
                ok = subprocess.run(["openssl", "dgst", "-sha256", "-verify", f"{d}/pub.pem", "-signature",
                                     f"{d}/sig", f"{d}/data"], capture_output=True).returncode == 0
            if not ok:
                raise Fail(401, "authError", "Invalid Credentials")
            hit = (key["email"], key["project"], float(claims.get("exp", 0)))
            with S.lock:
                S.verified[tok] = hit
        if hit[2] < time.time():
            raise Fail(401, "authError", "Request had invalid authentication credentials: the token expired.")
        m = re.match(r"/compute/v1/projects/([^/]+)", path)
        if m:
            project = m.group(1)
            if project not in S.projects:
                raise Fail(404, "notFound", f"The resource 'projects/{project}' was not found")
            if project != hit[1] and not any(p == project for p in self.S.args.shared_project):
                raise Fail(403, "forbidden",
                           f"Required 'compute.regions.list' permission for 'projects/{project}'")

    # --- test hooks -----------------------------------------------------------------------
    def admin(self, method, path, raw):
        S = self.S
        with S.lock:
            self.settle()
            if path == "/_fake/resources":
                self.send(200, [dict(r, _path=p) for p, r in S.res.items()])
            elif path == "/_fake/requests":
                self.send(200, S.log)
            elif path == "/_fake/throttle":
                S.throttle.append(json.loads(raw))
                self.send(200, {})
            elif path == "/_fake/lose":
                S.lose.append(json.loads(raw))
                self.send(200, {})
            elif path == "/_fake/fail":
                S.fail.append(json.loads(raw))
                self.send(200, {})
            elif path == "/_fake/slow":
                S.slow.append(json.loads(raw))
                self.send(200, {})
            elif path == "/_fake/adopt":
                S.adopted.append(int(json.loads(raw)["pid"]))
                self.send(200, {})
            elif path == "/_fake/seed":
                d = json.loads(raw)
                S.res[d["path"]] = d["resource"]
                self.send(200, {})
            elif path == "/_fake/service-account":
                d = json.loads(raw)
                with tempfile.TemporaryDirectory() as t:
                    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                                    "-out", f"{t}/k.pem"], check=True, capture_output=True)
                    subprocess.run(["openssl", "pkey", "-in", f"{t}/k.pem", "-pubout", "-out", f"{t}/p.pem"],
                                   check=True, capture_output=True)
                    priv, pub = open(f"{t}/k.pem").read(), open(f"{t}/p.pem").read()
                kid = os.urandom(20).hex()
                if d.get("registered", True):
                    S.keys[kid] = {"email": d["email"], "project": d["project"], "pub": pub}
                self.send(200, {"type": "service_account", "project_id": d["project"], "private_key_id": kid,
                                "private_key": priv, "client_email": d["email"], "client_id": "1" + kid[:20],
                                "auth_uri": "https://accounts.google.com/o/oauth2/auth",
                                "token_uri": "https://oauth2.googleapis.com/token",
                                "universe_domain": "googleapis.com"})
            else:
                self.send(404, error_body(404, "notFound", path))
                return 404
        return 200

    # --- operations -----------------------------------------------------------------------
    def settle(self):
        t = time.time()
        for p, o in self.S.ops.items():
            if o["op"]["status"] != "DONE" and o["done"] <= t:
                if o["error"] is None and o["then"]:
                    o["then"]()
                o["op"]["status"] = "DONE"
                o["op"]["progress"] = 100
                o["op"]["endTime"] = now_ts()
                if o["error"]:
                    o["op"]["error"] = {"errors": [o["error"]]}
                    o["op"]["httpErrorStatusCode"] = 400
                    o["op"]["httpErrorMessage"] = "BAD REQUEST"

    def new_op(self, project, scope, kind, target, op_type, query, then=None, immediate=False):
        S = self.S
        rid = query.get("requestId")
        if rid and (project, rid) in S.request_ids:
            return copy.deepcopy(S.ops[S.request_ids[(project, rid)]]["op"])
        name = "operation-" + str(int(time.time() * 1000)) + "-" + os.urandom(6).hex()
        base = f"projects/{project}/{scope}/operations/{name}" if scope != "global" else f"projects/{project}/global/operations/{name}"
        op = {"kind": "compute#operation", "id": S.next_id(), "name": name, "operationType": op_type,
              "targetLink": SELF + target, "targetId": S.next_id(), "status": "RUNNING", "user": "spectro@fake",
              "progress": 0, "insertTime": now_ts(), "startTime": now_ts(), "selfLink": SELF + base}
        if scope.startswith("zones/"):
            op["zone"] = SELF + f"projects/{project}/{scope}"
        elif scope.startswith("regions/"):
            op["region"] = SELF + f"projects/{project}/{scope}"
        if rid:
            op["clientOperationId"] = rid
        err = None
        for rule in S.fail:
            if rule["count"] > 0 and rule.get("path", "") in target and op_type == rule.get("type", op_type):
                rule["count"] -= 1
                err = {"code": rule.get("code", "RESOURCE_OPERATION_RATE_EXCEEDED"),
                       "message": rule.get("message", "The operation failed (injected).")}
                break
        if err is None and then is not None and immediate:
            then()
            then = None
        delay = S.args.delay
        for rule in S.slow:
            if rule["count"] > 0 and rule.get("path", "") in target:
                rule["count"] -= 1
                delay = float(rule.get("delay", delay))
                break
        S.ops[base] = {"op": op, "done": time.time() + delay,
                       "then": then, "error": err}
        if rid:
            S.request_ids[(project, rid)] = base
        self.settle()
        return copy.deepcopy(op)

    def wait(self, path):
        S = self.S
        base = path[len("/compute/v1/"):-len("/wait")]
        deadline = time.time() + S.args.wait_cap
        while True:
            with S.lock:
                self.settle()
                o = S.ops.get(base)
                if o is None:
                    raise Fail(404, "notFound", f"The resource '{base}' was not found")
                if o["op"]["status"] == "DONE" or time.time() >= deadline:
                    return 200, copy.deepcopy(o["op"])
            time.sleep(0.02)

    # --- the API --------------------------------------------------------------------------
    def api(self, method, path, query, raw):
        S = self.S
        self.settle()
        if not path.startswith("/compute/v1/projects/"):
            raise Fail(404, "notFound", path)
        parts = path[len("/compute/v1/"):].split("/")
        project = parts[1]
        rest = parts[2:]
        body = json.loads(raw) if raw else {}
        if rest == ["regions"] and method == "GET":
            return 200, {"kind": "compute#regionList", "id": f"projects/{project}/regions",
                         "items": [{"kind": "compute#region", "id": "1230", "name": r, "status": "UP",
                                    "selfLink": SELF + f"projects/{project}/regions/{r}"}
                                   for r in ["us-central1", "us-west1"]][: int(query.get("maxResults", 500))],
                         "selfLink": SELF + f"projects/{project}/regions"}
        if rest[:1] == ["aggregated"] and method == "GET":
            return 200, self.aggregated(project, rest[1], query)
        # images (another project's public images, or the project's own)
        if rest[:2] == ["global", "images"] and method == "GET":
            if rest[2] == "family":
                fam = [i for p, i in S.images.items() if p.startswith(f"projects/{project}/") and i.get("family") == rest[3]]
                if not fam:
                    raise Fail(404, "notFound", f"The resource 'projects/{project}/global/images/family/{rest[3]}' was not found")
                return 200, {k: v for k, v in fam[-1].items() if v is not None}
            img = S.images.get(f"projects/{project}/global/images/{rest[2]}")
            if img is None:
                raise Fail(404, "notFound", f"The resource 'projects/{project}/global/images/{rest[2]}' was not found")
            return 200, {k: v for k, v in img.items() if v is not None}
        if rest[0] == "global":
            scope, coll, tail = "global", rest[1], rest[2:]
        else:
            scope, coll, tail = f"{rest[0]}/{rest[1]}", rest[2], rest[3:]
        prefix = f"projects/{project}/{scope}/{coll}"
        if coll == "operations":
            o = S.ops.get(f"{prefix}/{tail[0]}")
            if o is None:
                raise Fail(404, "notFound", f"The resource '{prefix}/{tail[0]}' was not found")
            return 200, copy.deepcopy(o["op"])
        if not tail:
            if method == "GET":
                return 200, self.list(project, prefix, coll, query)
            if method == "POST":
                return 200, self.insert(project, scope, coll, body, query)
        name = tail[0]
        target = f"{prefix}/{name}"
        if coll == "instances" and name == "bulkInsert" and method == "POST":
            return 200, self.bulk_insert(project, scope, body, query)
        if len(tail) == 1:
            if method == "GET":
                r = S.res.get(target)
                if r is None:
                    raise Fail(404, "notFound", f"The resource '{target}' was not found")
                return 200, self.view(r)
            if method == "DELETE":
                return 200, self.delete(project, scope, coll, target, query)
            if method == "PATCH" and coll == "backendServices":
                r = S.res.get(target)
                if r is None:
                    raise Fail(404, "notFound", f"The resource '{target}' was not found")
                for b in body.get("backends", []):
                    self.ref(b.get("group"), "instanceGroups")

                def then():
                    r.update({k: v for k, v in body.items() if k != "name"})
                return 200, self.new_op(project, scope, coll, target, "patch", query, then, immediate=True)
        if coll == "instanceGroups" and len(tail) == 2 and method == "POST":
            g = S.res.get(target)
            if g is None:
                raise Fail(404, "notFound", f"The resource '{target}' was not found")
            if tail[1] == "addInstances":
                add = [rel(i.get("instance")) for i in body.get("instances", [])]
                for i in add:
                    inst = S.res.get(i)
                    if inst is None:
                        raise Fail(404, "notFound", f"The resource '{i}' was not found")
                    if f"{scope}/" not in i:
                        raise Fail(400, "invalid", f"Instance '{i}' is not in the group's zone")

                def then():
                    for i in add:
                        if i not in g["_members"]:
                            g["_members"].append(i)
                    g["size"] = len(g["_members"])
                return 200, self.new_op(project, scope, coll, target, "compute.instanceGroups.addInstances", query, then,
                                        immediate=True)
            if tail[1] == "listInstances":
                items = [{"instance": SELF + i, "status": S.res[i]["status"]} for i in g["_members"] if i in S.res]
                page, token = self.page(items, query, key=lambda x: x["instance"])
                out = {"kind": "compute#instanceGroupsListInstances", "id": target, "items": page,
                       "selfLink": SELF + target + "/listInstances"}
                if token:
                    out["nextPageToken"] = token
                return 200, out
        raise Fail(404, "notFound", f"{method} {path} is not modelled by the fake")

    def view(self, r):
        return {k: v for k, v in r.items() if not k.startswith("_")}

    def ref(self, url, coll):
        p = rel(url)
        if f"/{coll}/" not in p or p not in self.S.res:
            raise Fail(404, "notFound", f"The resource '{p}' was not found")
        return p

    def matches(self, r, flt):
        if not flt:
            return True
        m = re.fullmatch(r'\s*labels\.([a-z0-9_-]+)\s*:\s*\*\s*', flt)
        if m:
            return m.group(1) in r.get("labels", {})
        m = re.fullmatch(r'\s*labels\.([a-z0-9_-]+)\s*=\s*"?([^"]*)"?\s*', flt)
        if m:
            return r.get("labels", {}).get(m.group(1)) == m.group(2)
        m = re.fullmatch(r'\s*name\s+eq\s+"?([^"]*)"?\s*', flt)
        if m:
            return re.fullmatch(m.group(1), r.get("name", "")) is not None
        m = re.fullmatch(r'\s*name\s*=\s*"?([^"]*)"?\s*', flt)
        if m:
            return r.get("name") == m.group(1)
        raise Fail(400, "invalid", f"Invalid value for field 'filter': '{flt}'. Invalid list filter expression.")

    def page(self, items, query, key):
        items = sorted(items, key=key)
        after = query.get("pageToken", "")
        if after:
            items = [i for i in items if key(i) > after]
        size = min(int(query.get("maxResults", 500)), self.S.args.page_size)
        page = items[:size]
        token = key(page[-1]) if len(items) > size else None
        return page, token

    def list(self, project, prefix, coll, query):
        items = [self.view(r) for p, r in self.S.res.items()
                 if p.startswith(prefix + "/") and p.count("/") == prefix.count("/") + 1
                 and self.matches(r, query.get("filter"))]
        page, token = self.page(items, query, key=lambda x: x["name"])
        out = {"kind": LIST_KINDS[coll], "id": prefix, "items": page, "selfLink": SELF + prefix}
        if token:
            out["nextPageToken"] = token
        return out

    def aggregated(self, project, coll, query):
        kind, field = AGG[coll]
        items = []
        for p, r in self.S.res.items():
            parts = p.split("/")
            if p.startswith(f"projects/{project}/zones/") and parts[4] == coll and self.matches(r, query.get("filter")):
                items.append((p, self.view(r)))
        page, token = self.page(items, query, key=lambda x: x[0])
        scoped = {}
        for p, r in page:
            z = "/".join(p.split("/")[2:4])
            scoped.setdefault(z, {field: []})[field].append(r)
        out = {"kind": kind, "id": f"projects/{project}/aggregated/{coll}", "items": scoped,
               "selfLink": SELF + f"projects/{project}/aggregated/{coll}"}
        if token:
            out["nextPageToken"] = token
        return out

    def insert(self, project, scope, coll, body, query):
        S = self.S
        name = body.get("name", "")
        if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name):
            raise Fail(400, "invalid", f"Invalid value for field 'resource.name': '{name}'. Must be a match of regex '(?:[a-z](?:[-a-z0-9]{{0,61}}[a-z0-9])?)'")
        target = f"projects/{project}/{scope}/{coll}/{name}"
        rid = query.get("requestId")
        if rid and (project, rid) in S.request_ids:
            return self.new_op(project, scope, coll, target, "insert", query)
        if target in S.res:
            raise Fail(409, "alreadyExists", f"The resource '{target}' already exists")
        r = copy.deepcopy(body)
        r.update({"kind": KINDS[coll], "id": S.next_id(), "creationTimestamp": now_ts(), "selfLink": SELF + target})
        if scope != "global":
            r["region" if scope.startswith("regions/") else "zone"] = SELF + f"projects/{project}/{scope}"
        if coll == "networks":
            r.setdefault("autoCreateSubnetworks", True)
            r["subnetworks"] = []
        elif coll == "subnetworks":
            net = S.res[self.ref(body.get("network"), "networks")]
            ipaddress.ip_network(body["ipCidrRange"])
            r["network"] = net["selfLink"]
            r["gatewayAddress"] = str(next(ipaddress.ip_network(body["ipCidrRange"]).hosts()))
            r["fingerprint"] = fingerprint()
        elif coll in ("firewalls", "routers"):
            r["network"] = S.res[self.ref(body.get("network"), "networks")]["selfLink"]
        elif coll == "instanceGroups":
            if body.get("network"):
                r["network"] = S.res[self.ref(body.get("network"), "networks")]["selfLink"]
            r["size"] = 0
            r["_members"] = []
            r["fingerprint"] = fingerprint()
        elif coll == "addresses":
            n = sum(1 for p in S.res if "/addresses/" in p) + 10
            r["address"] = f"34.120.{n // 250}.{n % 250 + 1}"
            r["status"] = "RESERVED"
            r["labelFingerprint"] = fingerprint()
        elif coll == "healthChecks":
            if body.get("type") != "TCP" or "tcpHealthCheck" not in body:
                raise Fail(400, "invalid", "Invalid value for field 'resource.type'")
        elif coll == "backendServices":
            for h in body.get("healthChecks", []):
                self.ref(h, "healthChecks")
            for b in body.get("backends", []):
                self.ref(b.get("group"), "instanceGroups")
            r["fingerprint"] = fingerprint()
        elif coll == "targetTcpProxies":
            self.ref(body.get("service"), "backendServices")
        elif coll == "forwardingRules":
            self.ref(body.get("target"), "targetTcpProxies")
            addr = S.res[self.ref(body.get("IPAddress"), "addresses")]
            r["IPAddress"] = addr["address"]
            r["labelFingerprint"] = fingerprint()
        else:
            raise Fail(400, "invalid", f"insert of {coll} is not modelled")

        def then():
            S.res[target] = r
            if coll == "subnetworks":
                S.res[rel(r["network"])]["subnetworks"].append(r["selfLink"])
            if coll == "addresses" or coll == "forwardingRules":
                if coll == "forwardingRules":
                    S.res[rel(body["IPAddress"])]["status"] = "IN_USE"
                    S.res[rel(body["IPAddress"])]["users"] = [r["selfLink"]]
        return self.new_op(project, scope, coll, target, "insert", query, then, immediate=True)

    def users_of(self, target):
        """What refers to `target` (an in-use refusal names the first)."""
        S = self.S
        url = SELF + target
        for p, r in S.res.items():
            if p == target:
                continue
            v = {k: x for k, x in self.view(r).items() if k not in ("users", "subnetworks")}
            blob = json.dumps(v)
            if "/subnetworks/" in target and "/global/networks/" in p:
                continue  # a network lists its subnetworks: not a use
            if f'"{url}"' in blob or f'"{target}"' in blob:
                return p
        return None

    def delete(self, project, scope, coll, target, query):
        S = self.S
        rid = query.get("requestId")
        if rid and (project, rid) in S.request_ids:
            return self.new_op(project, scope, coll, target, "delete", query)
        r = S.res.get(target)
        if r is None:
            raise Fail(404, "notFound", f"The resource '{target}' was not found")
        if coll != "instances":
            user = self.users_of(target)
            if coll == "networks" and user is None and r.get("subnetworks"):
                user = rel(r["subnetworks"][0])
            if coll == "addresses":
                user = rel((r.get("users") or [None])[0]) or None
            if user:
                raise Fail(400, "resourceInUseByAnotherResource",
                           f"The {coll[:-1]} resource '{target}' is already being used by '{user}'")

        def then():
            S.res.pop(target, None)
            if coll == "subnetworks":
                net = S.res.get(rel(r["network"]))
                if net:
                    net["subnetworks"] = [s for s in net["subnetworks"] if rel(s) != target]
            if coll == "forwardingRules":
                a = S.res.get(rel(r.get("_address", "")))
                for p, x in S.res.items():
                    if "/addresses/" in p and x.get("users") == [r["selfLink"]]:
                        x["status"] = "RESERVED"
                        x.pop("users", None)
            if coll == "instances":
                for g in S.res.values():
                    if "_members" in g and target in g["_members"]:
                        g["_members"].remove(target)
                        g["size"] = len(g["_members"])
        if coll == "instances":
            r["status"] = "STOPPING"
        return self.new_op(project, scope, coll, target, "delete", query, then)

    def bulk_insert(self, project, scope, body, query):
        S = self.S
        rid = query.get("requestId")
        zone = scope.split("/")[1]
        if rid and (project, rid) in S.request_ids:
            return self.new_op(project, scope, "instances", f"projects/{project}/{scope}/instances/bulkInsert",
                               "bulkInsert", query)
        props = body.get("instanceProperties") or {}
        names = list((body.get("perInstanceProperties") or {}).keys())
        count = int(body.get("count", 0))
        if count != len(names) or int(body.get("minCount", count)) > count:
            raise Fail(400, "invalid", "Invalid value for field 'resource.count': the fake models perInstanceProperties names only")
        for n in names:
            if f"projects/{project}/{scope}/instances/{n}" in S.res:
                raise Fail(409, "alreadyExists", f"The resource 'projects/{project}/{scope}/instances/{n}' already exists")
        nic = (props.get("networkInterfaces") or [{}])[0]
        sub = S.res[self.ref(nic.get("subnetwork"), "subnetworks")]
        if nic.get("accessConfigs"):
            raise Fail(400, "invalid", "the fake's project forbids external addresses")
        disk = (props.get("disks") or [{}])[0]
        img = rel((disk.get("initializeParams") or {}).get("sourceImage", ""))
        if "/family/" in img:
            fam_project, fam = img.split("/")[1], img.rsplit("/", 1)[1]
            img = next((p for p, i in S.images.items() if p.startswith(f"projects/{fam_project}/") and i.get("family") == fam), img)
        if img not in S.images:
            raise Fail(404, "notFound", f"The resource '{img}' was not found")
        mt = props.get("machineType", "")
        if not re.fullmatch(r"[a-z0-9]+-[a-z0-9-]+", mt):
            raise Fail(400, "invalid", f"Invalid value for field 'resource.instanceProperties.machineType': '{mt}'. Machine type with name '{mt}' does not exist in zone '{zone}'.")
        net_range = ipaddress.ip_network(sub["ipCidrRange"])
        made = []
        for n in names:
            target = f"projects/{project}/{scope}/instances/{n}"
            k = sub["selfLink"]
            S.next_ip[k] = S.next_ip.get(k, 1) + 1
            ip = str(net_range.network_address + S.next_ip[k])
            inst = {"kind": "compute#instance", "id": S.next_id(), "name": n, "creationTimestamp": now_ts(),
                    "zone": SELF + f"projects/{project}/{scope}",
                    "machineType": SELF + f"projects/{project}/{scope}/machineTypes/{mt}",
                    "status": "PROVISIONING", "selfLink": SELF + target,
                    "labels": props.get("labels", {}), "labelFingerprint": fingerprint(),
                    "tags": dict(props.get("tags", {}), fingerprint=fingerprint()),
                    "metadata": dict(props.get("metadata", {}), kind="compute#metadata",
                                     fingerprint=fingerprint()),
                    "networkInterfaces": [{"kind": "compute#networkInterface", "name": "nic0",
                                           "network": rel(nic.get("network")) and SELF + rel(nic.get("network")),
                                           "subnetwork": sub["selfLink"], "networkIP": ip,
                                           "fingerprint": fingerprint()}],
                    "disks": [{"kind": "compute#attachedDisk", "type": "PERSISTENT", "mode": "READ_WRITE",
                               "source": SELF + f"projects/{project}/{scope}/disks/{n}", "deviceName": "persistent-disk-0",
                               "index": 0, "boot": True, "autoDelete": bool(disk.get("autoDelete")),
                               "diskSizeGb": (disk.get("initializeParams") or {}).get("diskSizeGb", "10")}],
                    "description": props.get("description", ""),
                    "scheduling": props.get("scheduling", {}),
                    "_boot": time.time() + S.args.boot}
            made.append((target, inst))

        def then():
            for target, inst in made:
                S.res[target] = inst
        # The instances appear when the operation is done (a batch re-issued while it runs
        # finds nothing by its label: only the request id keeps it from a second create).
        return self.new_op(project, scope, "instances", f"projects/{project}/{scope}/instances/{names[0] if names else 'none'}",
                           "bulkInsert", query, then)


def booter(state):
    while True:
        time.sleep(0.05)
        with state.lock:
            t = time.time()
            for r in state.res.values():
                if r.get("status") == "PROVISIONING" and r.get("_boot", 0) <= t:
                    r["status"] = "RUNNING"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--project", action="append", default=[])
    ap.add_argument("--shared-project", action="append", default=[])
    ap.add_argument("--image", action="append", default=[])
    ap.add_argument("--delay", type=float, default=0.3)
    ap.add_argument("--wait-cap", type=float, default=0.1)
    ap.add_argument("--boot", type=float, default=0.3)
    ap.add_argument("--page-size", type=int, default=50)
    ap.add_argument("--parent", type=int, default=0)
    args = ap.parse_args()
    args.project += [p for p in args.shared_project if p not in args.project]
    state = State(args)
    Handler.S = state
    srv = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    srv.daemon_threads = True
    port = srv.server_address[1]
    print(f"listening on {port}", flush=True)
    threading.Thread(target=booter, args=(state,), daemon=True).start()
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
