"""docs/openapi.yaml: the OpenAPI description of the HTTP API, held to the code.

- The document validates with openapi-spec-validator (OpenAPI 3.1).
- Its (method, path) set equals the route table in src/auth/matrix.rs plus
  GET /api/v1/openapi.json, both ways; each operation's `x-forgeline-roles`,
  `x-forgeline-rate-class` and `x-forgeline-object-rule` equal the matrix's;
  public routes need no security, every other route the bearer scheme.
- Conventions: unique verb-phrase operationIds, summary, known tags, declared
  path parameters, and the standard error statuses on every /api/v1 route.
- A real release binary is started (FORGELINE_BIN, else
  target/release/forgeline; this test never builds it) on 127.0.0.1 with a
  temporary data dir, rate limits and the executor off, and a scenario drives
  every route: the task, worker, dead-letter, review, audit, health and
  metrics routes, SSE streams bounded by max_events/idle_timeout, guardrail
  flags and blocks at all three stages, a lease expiry and a review SLA
  expiry (all 20 event types), and error cases (400, 401, 403, 404, 409, 413,
  422). A second server with a tiny read bucket and a token-protected
  /metrics gives 429 and the metrics 401. Every response is checked
  against the operation and status the document gives for it: the status must
  be documented, required headers present and well-formed, the content type
  documented, and the JSON body (each SSE event's data for streams) valid
  against the schema. Response schemas are checked strictly: an object
  property the document does not list is a failure (the published document
  leaves response objects open for clients). Request bodies the server
  accepted must validate against the documented request schema, and every
  request schema with `additionalProperties: false` must really be refused
  (422 unknown field) with an unknown field.
- Every operation must be exercised with a documented status, except those in
  NOT_EXERCISED (with a reason).

Needs the PyPI packages `openapi-spec-validator` (which brings
`openapi-schema-validator`) and `jsonschema`, and PyYAML. A missing module
fails the test with the pip command; nothing here skips.

Run: python3 -m unittest tests.ops.test_openapi -v
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.ops.common import DOCS, REPO, Process, load_yaml

SPEC_PATH = DOCS / "openapi.yaml"
MATRIX = REPO / "src" / "auth" / "matrix.rs"
DEFAULT_BIN = REPO / "target" / "release" / "forgeline"

OPENAPI_ROUTE = ("GET", "/api/v1/openapi.json")

# Operations the live scenario may leave unexercised, with the reason.
NOT_EXERCISED: dict[tuple[str, str], str] = {}

# Statuses every authenticated /api/v1 operation documents.
STANDARD_API_STATUSES = {"400", "401", "403", "429", "503"}

ADMIN_REQUEST_ID = "oa-test.req:1"

# The server's config: guardrail policies (on queue `gq` only) and a review
# queue with a 1 s SLA, so that guardrail decisions, flagged tickets, SLA
# expiry and their events show up in the responses checked.
SERVER_CONFIG = """\
[review.queues.sla-q]
sla = "1s"
on_timeout = "requeue"

[[guardrails]]
id = "big-input"
kind = "max_bytes"
stages = ["input"]
verdict = "flag"
queues = ["gq"]
max_bytes = 200

[[guardrails]]
id = "no-rm"
kind = "deny_pattern"
stages = ["input", "tool", "output"]
verdict = "block"
queues = ["gq"]
pattern = "rm -rf"

[[guardrails]]
id = "tools"
kind = "allow_tools"
stages = ["tool"]
verdict = "flag"
queues = ["gq"]
tools = ["bash", "edit"]
"""
NO_SUCH_ULID = "01M80SHEDX1GH4PF1NG7FBSVD0"
START_TIMEOUT = 30.0


def require_module(name: str, pip_name: str):
    """Imports a module; a missing one fails (never skips) with the pip command."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise AssertionError(
            f"missing Python module: {name} (pip install {pip_name}); "
            "the OpenAPI tests need it and do not skip"
        ) from e


def load_spec() -> dict:
    if not SPEC_PATH.is_file():
        raise AssertionError(f"{SPEC_PATH.relative_to(REPO)} is missing")
    spec = load_yaml(SPEC_PATH)
    if not isinstance(spec, dict):
        raise AssertionError(f"{SPEC_PATH.relative_to(REPO)} is not a YAML mapping")
    return spec


# ------------------------------------------------------------------ matrix


def snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def parse_matrix() -> dict[tuple[str, str], dict]:
    """The route table of src/auth/matrix.rs: (method, path) -> roles, rate class."""
    text = MATRIX.read_text()
    role_sets = {
        m.group(1): [snake(r.strip()) for r in m.group(2).split(",") if r.strip()]
        for m in re.finditer(r"^const (\w+): &\[Role\] = &\[([^\]]*)\];", text, re.M)
    }
    class_names = dict(re.findall(r'RateClass::(\w+) => "(\w+)"', text))
    classes = {
        m.group(1): class_names[m.group(2)]
        for m in re.finditer(
            r"^const (\w+): Option<RateClass> = Some\(RateClass::(\w+)\);", text, re.M
        )
    }
    routes = {}
    pattern = re.compile(
        r'^\s*([A-Z_]+)\s*=\s*"([A-Z]+)"\s*"([^"]+)",\s*Access::(Public|Roles\((\w+)\)),'
        r'\s*(\w+),\s*(?:None|Some\("([^"]*)"\));',
        re.M,
    )
    for m in pattern.finditer(text):
        _, method, path, access, role_const, cls, rule = m.groups()
        routes[(method, path)] = {
            "public": access == "Public",
            "roles": role_sets.get(role_const, []) if role_const else [],
            "class": None if cls == "None" else classes[cls],
            "object_rule": rule,
        }
    if len(routes) < 20:
        raise AssertionError(
            f"parsed only {len(routes)} routes from {MATRIX.relative_to(REPO)}; "
            "has the routes! table changed shape?"
        )
    return routes


def spec_operations(spec: dict) -> dict[tuple[str, str], dict]:
    ops = {}
    for path, item in (spec.get("paths") or {}).items():
        for method, op in item.items():
            if method in ("get", "put", "post", "delete", "patch", "head", "options", "trace"):
                ops[(method.upper(), path)] = op
    return ops


# ------------------------------------------------------------------ schemas


def lookup(spec: dict, pointer: str):
    if not pointer.startswith("#/"):
        raise AssertionError(f"only local $refs are supported, got {pointer}")
    node = spec
    for part in pointer[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[part]
    return node


def resolve(spec: dict, node, depth: int = 0):
    """The node with every local $ref inlined (the document has no cycles)."""
    if depth > 60:
        raise AssertionError("$ref nesting too deep (a cycle?)")
    if isinstance(node, dict):
        if "$ref" in node:
            out = resolve(spec, lookup(spec, node["$ref"]), depth + 1)
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            if siblings and isinstance(out, dict):
                out = {**out, **resolve(spec, siblings, depth + 1)}
            return out
        return {k: resolve(spec, v, depth + 1) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve(spec, v, depth + 1) for v in node]
    return node


def _is_object_schema(s) -> bool:
    if not isinstance(s, dict):
        return False
    t = s.get("type")
    types = t if isinstance(t, list) else [t]
    return "object" in types or any(_is_object_schema(x) for x in s.get("allOf", []))


def strict(s, in_allof: bool = False):
    """A copy of a resolved schema in which every object schema that lists its
    properties refuses others (`additionalProperties: false`, or
    `unevaluatedProperties: false` over an allOf). Parts of an allOf are left
    open (the enclosing schema closes them together)."""
    if not isinstance(s, dict):
        return s
    s = dict(s)
    if isinstance(s.get("properties"), dict):
        s["properties"] = {k: strict(v) for k, v in s["properties"].items()}
    for k in ("items", "additionalProperties", "not", "contains"):
        if isinstance(s.get(k), dict):
            s[k] = strict(s[k])
    for k in ("anyOf", "oneOf"):
        if isinstance(s.get(k), list):
            s[k] = [strict(x) for x in s[k]]
    if isinstance(s.get("allOf"), list):
        s["allOf"] = [strict(x, in_allof=True) for x in s["allOf"]]
    if not in_allof and "additionalProperties" not in s and "unevaluatedProperties" not in s:
        t = s.get("type")
        types = t if isinstance(t, list) else [t]
        if isinstance(s.get("allOf"), list) and any(_is_object_schema(x) for x in s["allOf"]):
            s["unevaluatedProperties"] = False
        elif "object" in types and "properties" in s:
            s["additionalProperties"] = False
    return s


def schema_errors(schema: dict, instance, limit: int = 4) -> list[str]:
    """Validation errors of `instance` against a resolved OpenAPI 3.1 schema."""
    osv = require_module("openapi_schema_validator", "openapi-spec-validator")
    jsonschema = require_module("jsonschema", "jsonschema")
    validator = osv.OAS31Validator(schema, format_checker=osv.oas31_format_checker)
    errors = list(validator.iter_errors(instance))
    if not errors:
        return []
    # An unevaluatedProperties error over an allOf names every property of a
    # part that failed; the part's own error says why, so it comes first.
    direct = [e for e in errors if e.validator != "unevaluatedProperties"] or errors
    best = jsonschema.exceptions.best_match(direct)
    out = []
    for e in [best] + [e for e in errors if e is not best][: limit - 1]:
        where = "/".join(str(p) for p in e.absolute_path) or "(root)"
        msg = e.message if len(e.message) < 400 else e.message[:400] + "…"
        out.append(f"at {where}: {msg}")
    return out


# ------------------------------------------------------------------ HTTP


@dataclass
class Exchange:
    method: str
    template: str
    path: str
    status: int
    headers: dict
    body: bytes
    request_body: bytes | None
    request_headers: dict
    note: str = ""

    @property
    def op(self) -> tuple[str, str]:
        return (self.method, self.template)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    @property
    def json(self):
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise AssertionError(
                f"{self.method} {self.path}: body is not JSON: {self.body[:300]!r}"
            ) from e

    def label(self) -> str:
        n = f" [{self.note}]" if self.note else ""
        return f"{self.method} {self.path} -> {self.status}{n}"


def http(method, url, body=None, headers=None, timeout=20.0):
    req = urllib.request.Request(url, data=body, method=method)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def parse_sse(text: str) -> list[dict]:
    """SSE frames as dicts of field -> value (comments dropped)."""
    events = []
    for block in re.split(r"\r?\n\r?\n", text):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            fields[name] = fields[name] + "\n" + value if name in fields else value
        if fields:
            events.append(fields)
    return events


class Server:
    """A real `forgeline serve` on 127.0.0.1:0 with a temporary data dir."""

    def __init__(self, extra_env: dict | None = None) -> None:
        self.bin = Path(os.environ.get("FORGELINE_BIN") or DEFAULT_BIN)
        if not (self.bin.is_file() and os.access(self.bin, os.X_OK)):
            raise AssertionError(
                f"no forgeline binary at {self.bin}: build it (cargo build --release) or set "
                "FORGELINE_BIN; this test does not build it"
            )
        self._tmp = tempfile.TemporaryDirectory(prefix="forgeline-openapi-")
        self.dir = Path(self._tmp.name)
        self.data = self.dir / "data"
        self.config = self.dir / "forgeline.toml"
        self.config.write_text(SERVER_CONFIG)
        self.metrics_token = "oa-metrics-scraper-token"
        (self.dir / "metrics-token").write_text(self.metrics_token + "\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("FORGELINE_")}
        env.pop("RUST_LOG", None)
        env.update(
            FORGELINE_LOG__FORMAT="json",
            FORGELINE_RATELIMIT__ENABLED="false",
            FORGELINE_EXECUTOR__ENABLED="false",
        )
        for k, v in (extra_env or {}).items():
            env[k] = v.replace("{dir}", str(self.dir))
        self.env = env
        self.proc = Process(
            "forgeline",
            [str(self.bin), "serve", "--host", "127.0.0.1", "--port", "0",
             "--data-dir", str(self.data), "--config", str(self.config)],
            self.dir,
            env=env,
        )
        self.url = ""

    def start(self) -> None:
        self.proc.__enter__()
        deadline = time.monotonic() + START_TIMEOUT
        addr = None
        while addr is None:
            if not self.proc.alive():
                raise AssertionError(f"forgeline exited at start; its log:\n{self.proc.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"forgeline did not log 'forgeline listening' within {START_TIMEOUT}s; "
                    f"its log:\n{self.proc.log()}"
                )
            for line in self.proc.log_path.read_text(errors="replace").splitlines():
                try:
                    v = json.loads(line)
                except ValueError:
                    continue
                if v.get("message") == "forgeline listening" and v.get("addr"):
                    addr = v["addr"]
            time.sleep(0.05)
        if addr.rpartition(":")[0] != "127.0.0.1":
            raise AssertionError(f"forgeline listens on {addr}, not on 127.0.0.1")
        self.url = f"http://{addr}"
        while True:
            try:
                status, _, _ = http("GET", self.url + "/health/ready", timeout=2)
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"forgeline not ready within {START_TIMEOUT}s:\n{self.proc.log()}")
            time.sleep(0.05)

    def admin_token(self) -> str:
        return (self.data / "admin-token").read_text().strip()

    def issue_token(self, sub: str, *roles: str) -> str:
        cmd = [str(self.bin), "token", "issue", "--sub", sub, "--ttl", "1h",
               "--data-dir", str(self.data), "--config", str(self.config)]
        for r in roles:
            cmd += ["--role", r]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=self.env)
        if r.returncode != 0:
            raise AssertionError(f"forgeline token issue failed: {r.stderr}")
        return r.stdout.strip()

    def stop(self) -> None:
        try:
            if self.proc.proc is not None:
                self.proc.__exit__(None, None, None)
        finally:
            self._tmp.cleanup()


# ------------------------------------------------------------------ scenario


class Scenario:
    """Drives the API and records every exchange."""

    def __init__(self, server: Server, tokens: dict[str, str]) -> None:
        self.server = server
        self.tokens = tokens
        self.exchanges: list[Exchange] = []

    def call(self, method, template, params=None, query=None, body=None, raw=None,
             token="admin", headers=None, expect=(200,), note="", timeout=20.0) -> Exchange:
        path = template
        for k, v in (params or {}).items():
            path = path.replace("{" + k + "}", urllib.parse.quote(str(v), safe="!@:"))
        url = self.server.url + path
        if query:
            url += "?" + urllib.parse.urlencode(query, doseq=True)
        hdrs = {"Content-Type": "application/json"}
        if token is not None:
            hdrs["Authorization"] = "Bearer " + self.tokens.get(token, token)
        hdrs.update(headers or {})
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        status, rh, rb = http(method, url, data, hdrs, timeout=timeout)
        shown = path + ("?" + url.split("?", 1)[1] if "?" in url else "")
        ex = Exchange(method, template, shown, status, rh, rb, data, hdrs, note)
        self.exchanges.append(ex)
        if expect and status not in expect:
            raise AssertionError(
                f"scenario step {note or ''}: {method} {shown} answered {status}, expected "
                f"{'/'.join(map(str, expect))}: {rb[:600]!r}"
            )
        return ex

    # --- helpers -------------------------------------------------------

    def submit(self, body, token="admin", note="submit") -> dict:
        return self.call("POST", "/api/v1/tasks", body=body, token=token, expect=(201,),
                         note=note).json

    def lease_one(self, queue, worker="agent-1", note="lease") -> dict:
        ex = self.call("POST", "/api/v1/queues/{queue}/lease", {"queue": queue},
                       body={"worker_id": worker, "max": 1, "wait_ms": 2000, "lease_ms": 60000},
                       note=note)
        leases = ex.json["leases"]
        if len(leases) != 1:
            raise AssertionError(f"{note}: expected one lease on {queue}, got {ex.json}")
        return leases[0]

    def complete(self, grant, result=None, expect=(200,), note="complete") -> Exchange:
        return self.call("POST", "/api/v1/leases/{lease_id}/complete",
                         {"lease_id": grant["lease_id"]},
                         body={"token": grant["token"], "result": result}, expect=expect, note=note)

    def ticket_of(self, task_id, queue) -> dict:
        ex = self.call("GET", "/api/v1/reviews", query={"queue": queue}, token="bob",
                       note="find ticket")
        for t in ex.json["reviews"]:
            if t["task_id"] == task_id:
                return t
        raise AssertionError(f"no pending review ticket for task {task_id}: {ex.json}")

    def dossier_hash(self, ticket_id) -> str:
        ex = self.call("GET", "/api/v1/reviews/{id}", {"id": ticket_id}, token="bob",
                       note="review detail")
        return ex.json["dossier"]["dossier_hash"]


def run_scenario(s: Scenario) -> None:
    T = "/api/v1/tasks"
    TID = "/api/v1/tasks/{id}"

    # --- probes and metrics ----------------------------------------------
    s.call("GET", "/health/live", token=None, headers={"X-Request-ID": "abc.DEF:1_2-3"})
    s.call("GET", "/health/startup", token=None)
    s.call("GET", "/health/ready", token=None)
    s.call("GET", "/metrics", token=None)

    # --- the console and who the caller is ---------------------------------
    s.call("GET", "/", token=None, note="the console's page")
    s.call("GET", "/console/{file}", {"file": "app.js"}, token=None, note="the console's script")
    s.call("GET", "/console/{file}", {"file": "style.css"}, token=None, note="the console's style")
    s.call("GET", "/console/{file}", {"file": "nope.js"}, token=None, expect=(404,),
           note="a file the console does not have")
    s.call("GET", "/api/v1/me", note="who the admin is")
    s.call("GET", "/api/v1/queues", note="queues (none yet)")
    s.call("GET", "/api/v1/me", token=None, expect=(401,), note="who, without a token")

    # --- timers, checked at the end: a lease that expires, a review past its SLA
    x = s.submit({"queue": "xq", "max_attempts": 2}, note="submit X (its lease expires)")
    gx = s.call("POST", "/api/v1/queues/{queue}/lease", {"queue": "xq"},
                body={"worker_id": "slow-1", "wait_ms": 2000, "lease_ms": 100},
                note="lease X for 100 ms").json["leases"][0]
    sla = s.submit({"queue": "sla-q", "review": {"required": True}}, note="submit a 1 s SLA task")
    s.complete(s.lease_one("sla-q", note="lease the SLA task"), note="complete the SLA task")

    # --- submit ----------------------------------------------------------
    body_a = {"queue": "agents", "priority": 7, "labels": {"project": "web", "correlation_id": "c-9"},
              "payload": {"repo": "git@example.com:web.git", "ref": "main"},
              "steps": ["npm-ci", "test"], "max_attempts": 2}
    idem = {"Idempotency-Key": "oa-build-42", "X-Request-ID": ADMIN_REQUEST_ID,
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
    a = s.call("POST", T, body=body_a, headers=idem, expect=(201,), note="submit A").json
    s.call("POST", T, body=body_a, headers=idem, expect=(200,), note="idempotent replay")
    s.call("POST", T, body={**body_a, "priority": 6}, headers=idem, expect=(409,),
           note="idempotency key reused")
    s.call("POST", T, body={}, headers={"Idempotency-Key": "has space"}, expect=(400,),
           note="bad Idempotency-Key")
    s.call("POST", T, raw=b'{"queue":', expect=(400,), note="malformed JSON")
    s.call("POST", T, raw=b"", expect=(400,), note="empty body")
    s.call("POST", T, query={"x": "1"}, body={}, expect=(400,), note="unknown query parameter")
    s.call("POST", T, body={"priority": 10}, expect=(422,), note="priority out of range")
    s.call("POST", T, body={"run_at": "2030-01-01T00:00:00Z", "delay": "5s"}, expect=(422,),
           note="run_at and delay")
    s.call("POST", T, body={"review": {"zz_unknown": 1}}, expect=(422,), note="unknown review field")
    s.call("POST", T, body={"payload": "x" * (300 * 1024)}, expect=(413,), note="payload too large")
    s.call("POST", T, body={}, token=None, expect=(401,), note="no token")
    s.call("POST", T, body={}, token="not-a-jwt", expect=(401,), note="bad token")
    s.call("POST", T, body={}, token="obs", expect=(403,), note="observer submits")
    delayed = s.submit({"queue": "later", "delay": "1h", "labels": {"kind": "delayed"},
                        "workdir": "sub/dir"}, note="submit delayed")
    assert delayed["state"] == "scheduled", delayed

    # --- list and read ---------------------------------------------------
    s.call("GET", T, query={"state": "queued", "queue": "agents", "label": "project:web",
                            "limit": "10"}, note="filtered list")
    first = s.call("GET", T, query={"limit": "1"}, token="obs", note="page 1").json
    if first["next_cursor"]:
        s.call("GET", T, query={"limit": "1", "cursor": first["next_cursor"]}, note="page 2")
    for q, note in (({"state": "done"}, "bad state"), ({"label": "project"}, "bad label"),
                    ({"limit": "501"}, "bad limit"), ({"cursor": "nope"}, "bad cursor")):
        s.call("GET", T, query=q, expect=(400,), note=note)
    s.call("GET", T, token=None, expect=(401,), note="list without token")
    s.call("GET", TID, {"id": a["id"]}, query={"events": "5"}, note="get A")
    s.call("GET", TID, {"id": "nope"}, expect=(404,), note="not a ULID")
    s.call("GET", TID, {"id": NO_SUCH_ULID}, expect=(404,), note="no such task")
    s.call("GET", TID, {"id": a["id"]}, query={"events": "5000"}, expect=(400,),
           note="events out of range")

    # --- worker protocol on A --------------------------------------------
    g = s.lease_one("agents", note="lease A")
    lease = {"lease_id": g["lease_id"]}
    s.call("POST", "/api/v1/queues/{queue}/lease", {"queue": "empty-q"},
           body={"worker_id": "agent-1"}, note="lease nothing")
    s.call("POST", "/api/v1/queues/{queue}/lease", {"queue": "bad!q"},
           body={"worker_id": "agent-1"}, expect=(422,), note="bad queue name")
    s.call("POST", "/api/v1/queues/{queue}/lease", {"queue": "agents"}, body={},
           expect=(422,), note="missing worker_id")
    s.call("POST", "/api/v1/queues/{queue}/lease", {"queue": "agents"},
           body={"worker_id": "agent-1", "max": 0}, expect=(422,), note="max 0")
    s.call("POST", "/api/v1/queues/{queue}/lease", {"queue": "agents"}, raw=b"",
           expect=(400,), note="lease with empty body")
    s.call("POST", "/api/v1/queues/{queue}/lease", {"queue": "agents"},
           body={"worker_id": "agent-1"}, token="bob", expect=(403,), note="reviewer leases")
    hb = "/api/v1/leases/{lease_id}/heartbeat"
    s.call("POST", hb, lease, body={"token": g["token"], "lease_ms": 60000}, note="heartbeat")
    s.call("POST", hb, lease, body={"token": g["token"] + 99}, expect=(409,), note="wrong token")
    s.call("POST", hb, lease, body={"token": g["token"], "lease_ms": 5}, expect=(422,),
           note="lease_ms too short")
    s.call("POST", hb, {"lease_id": NO_SUCH_ULID}, body={"token": 1}, expect=(404,),
           note="no such lease")
    s.call("POST", hb, {"lease_id": "nope"}, body={"token": 1}, expect=(404,), note="not a ULID")
    s.call("POST", hb, lease, body={"token": g["token"]}, token="w2", expect=(403,),
           note="another principal's lease")
    ev = "/api/v1/leases/{lease_id}/events"
    s.call("POST", ev, lease, note="report events", body={"token": g["token"], "events": [
        {"type": "agent_started", "agent_name": "coder", "model": "m-1"},
        {"type": "toolInvoked", "toolName": "bash", "agentName": "coder", "toolCallId": "c1",
         "durationMs": 12},
        {"eventType": "tool-invoked", "eventData": {"tool": "edit", "callId": "c2"}},
        {"event": "verification_started",
         "event_data": {"step": "npm-ci", "timestamp": "2026-11-22T04:52:10.000Z"}},
        {"type": "verification_finished", "step": "npm-ci", "exitCode": 0, "durationMs": 4200,
         "output": "added 812 packages"},
        {"type": "agent_finished", "agent": "coder", "status": "ok"},
        {"type": "verification_started", "step": "lint"}]})
    s.call("GET", TID, {"id": a["id"]}, note="A verifying, a step unfinished")
    s.call("GET", "/api/v1/runs/{run_id}", {"run_id": g["run_id"]}, note="run in progress")
    s.call("POST", ev, lease, body={"token": g["token"], "events": []}, expect=(422,),
           note="no events")
    s.call("POST", ev, lease, body={"token": g["token"], "events": [{"type": "teleported"}]},
           expect=(422,), note="unknown event type")
    s.complete(g, {"pr": "https://example.com/pr/17"}, note="complete A")
    s.complete(g, expect=(409,), note="complete twice")
    s.call("POST", ev, lease, body={"token": g["token"], "events": [
        {"type": "agent_started", "agent": "late"}]}, expect=(409,), note="events after the end")
    s.call("GET", "/api/v1/runs/{run_id}", {"run_id": g["run_id"]}, token="obs", note="run of A")
    s.call("GET", "/api/v1/runs/{run_id}", {"run_id": "nope"}, expect=(404,), note="not a ULID")
    s.call("GET", "/api/v1/runs/{run_id}", {"run_id": NO_SUCH_ULID}, expect=(404,),
           note="no such run")
    s.call("GET", "/api/v1/runs/{run_id}", {"run_id": g["run_id"]}, query={"x": "1"},
           expect=(400,), note="run with a query")
    s.call("GET", TID, {"id": a["id"]}, query={"events": "2"}, note="A completed, truncated")
    s.call("GET", TID + "/dossier", {"id": a["id"]}, token="bob", note="dossier of A")
    s.call("GET", TID + "/dossier", {"id": a["id"]}, token="obs", expect=(403,),
           note="observer reads a dossier")
    s.call("GET", TID + "/dossier", {"id": NO_SUCH_ULID}, expect=(404,), note="no such dossier")

    # --- streams ---------------------------------------------------------
    tev = TID + "/events"
    st = s.call("GET", tev, {"id": a["id"]}, query={"max_events": "100", "idle_timeout": "5s"},
                note="A's stream (ends by itself)")
    frames = parse_sse(st.body.decode())
    if len(frames) < 3:
        raise AssertionError(f"A's stream had {len(frames)} events: {st.body[:500]!r}")
    s.call("GET", tev, {"id": a["id"]}, headers={"Last-Event-ID": frames[1]["id"]},
           query={"idle_timeout": "5s"}, note="resume by header")
    s.call("GET", tev, {"id": a["id"]}, query={"last_event_id": "3", "max_events": "2"},
           note="resume by query")
    s.call("GET", tev, {"id": a["id"]}, headers={"Last-Event-ID": "zz"}, expect=(400,),
           note="bad Last-Event-ID")
    s.call("GET", tev, {"id": a["id"]}, query={"max_events": "0"}, expect=(400,),
           note="max_events 0")
    s.call("GET", tev, {"id": NO_SUCH_ULID}, expect=(404,), note="stream of no task")
    s.call("POST", T + "/stream", query={"max_events": "2", "idle_timeout": "3s"},
           body={"queue": "stream-q", "labels": {"via": "stream"}}, note="submit and stream")
    s.call("POST", T + "/stream", query={"foo": "1"}, body={}, expect=(400,),
           note="stream with unknown parameter")
    s.call("POST", T + "/stream", body={"priority": 10}, expect=(422,), note="stream, invalid")
    s.call("GET", "/api/v1/events", query={"type": "task_submitted,task_queued", "max_events": "3"},
           note="firehose by type")
    s.call("GET", "/api/v1/events", query={"queue": "agents", "max_events": "2"},
           note="firehose by queue")
    s.call("GET", "/api/v1/events", query={"type": "nope"}, expect=(400,), note="unknown type")
    s.call("GET", "/api/v1/events", query={"idle_timeout": "0s"}, expect=(400,),
           note="idle_timeout 0")

    # --- fail, retry, dead-letter, requeue ---------------------------------
    b = s.submit({"queue": "fq", "max_attempts": 1, "labels": {"project": "db"}}, note="submit B")
    gb = s.lease_one("fq", note="lease B")
    fail = "/api/v1/leases/{lease_id}/fail"
    dead = s.call("POST", fail, {"lease_id": gb["lease_id"]},
                  body={"token": gb["token"], "error": "database locked"}, note="fail B").json
    assert dead["state"] == "dead", dead
    c = s.submit({"queue": "fq"}, note="submit C")
    gc = s.lease_one("fq", note="lease C")
    s.call("POST", fail, {"lease_id": gc["lease_id"]},
           body={"token": gc["token"], "error": "boom", "retryable": False}, note="fail C for good")
    s.submit({"queue": "fq", "max_attempts": 3}, note="submit D")
    gd = s.lease_one("fq", note="lease D")
    retry = s.call("POST", fail, {"lease_id": gd["lease_id"]},
                   body={"token": gd["token"], "error": "flaky"}, note="fail D, retried").json
    assert retry["state"] == "scheduled", retry
    s.call("POST", fail, {"lease_id": gd["lease_id"]}, body={"token": gd["token"], "error": ""},
           expect=(422,), note="empty error")
    s.call("POST", fail, {"lease_id": gd["lease_id"]}, body={"token": gd["token"], "error": "x"},
           expect=(409,), note="fail an ended lease")
    s.call("POST", fail, {"lease_id": NO_SUCH_ULID}, body={"token": 1, "error": "x"},
           expect=(404,), note="fail no lease")
    rel = "/api/v1/leases/{lease_id}/release"
    s.submit({"queue": "relq", "max_attempts": 2}, note="submit E")
    ge = s.lease_one("relq", note="lease E")
    back = s.call("POST", rel, {"lease_id": ge["lease_id"]}, body={"token": ge["token"]},
                  note="release E").json
    assert back["state"] == "queued" and back["attempts_left"] == 2, back
    s.call("POST", rel, {"lease_id": ge["lease_id"]}, body={"token": ge["token"]},
           expect=(409,), note="release E again")
    s.call("POST", rel, {"lease_id": ge["lease_id"]}, body={}, expect=(422,),
           note="release without a token")
    s.call("POST", rel, {"lease_id": NO_SUCH_ULID}, body={"token": 1}, expect=(404,),
           note="release no lease")
    s.complete(s.lease_one("relq", note="lease E again"), note="complete E")
    # Batched results: one durable call, a result per item.
    many, fails = "/api/v1/leases/complete", "/api/v1/leases/fail"
    for n in range(3):
        s.submit({"queue": "batchq"}, note=f"submit batch {n}")
    b1, b2, b3 = (s.lease_one("batchq", note=f"lease batch {n}") for n in range(3))
    got = s.call("POST", many, body={"items": [
        {"lease_id": b1["lease_id"], "token": b1["token"], "result": {"n": 1}},
        {"lease_id": b1["lease_id"], "token": b1["token"]},
        {"lease_id": NO_SUCH_ULID, "token": 1},
    ]}, note="complete many").json["results"]
    assert [r["status"] for r in got] == [200, 409, 404], got
    assert got[0]["task"]["state"] == "completed" and got[1]["error"]["code"] == "stale_lease", got
    s.call("POST", many, body={"items": []}, expect=(422,), note="complete none")
    s.call("POST", many, body={"items": [{"lease_id": b2["lease_id"]}]}, expect=(422,),
           note="complete many without a token")
    s.call("POST", fails, body={"items": [
        {"lease_id": b2["lease_id"], "token": b2["token"], "error": "boom"},
        {"lease_id": b3["lease_id"], "token": b3["token"], "error": ""},
    ]}, expect=(422,), note="fail many with an empty error: nothing is written")
    got = s.call("POST", fails, body={"items": [
        {"lease_id": b2["lease_id"], "token": b2["token"], "error": "boom", "retryable": False},
        {"lease_id": b3["lease_id"], "token": b3["token"], "error": "x", "retryable": False},
        {"lease_id": b3["lease_id"], "token": b3["token"], "error": "x"},
    ]}, note="fail many").json["results"]
    assert [r["status"] for r in got] == [200, 200, 409], got
    assert got[0]["task"]["state"] == "failed", got
    s.call("GET", "/api/v1/dead-letter", note="dead-letter")
    s.call("GET", "/api/v1/dead-letter", query={"queue": "fq", "limit": "5"}, note="dead-letter fq")
    s.call("GET", "/api/v1/dead-letter", query={"state": "dead"}, expect=(400,),
           note="dead-letter with state")
    s.call("GET", "/api/v1/dead-letter", token="bob", expect=(403,), note="reviewer reads dead-letter")
    rq = "/api/v1/dead-letter/{id}/requeue"
    s.call("POST", rq, {"id": b["id"]}, note="requeue B")
    s.call("POST", rq, {"id": b["id"]}, expect=(409,), note="requeue B again")
    s.call("POST", rq, {"id": c["id"]}, token="bob", expect=(403,), note="reviewer requeues")
    s.call("POST", rq, {"id": NO_SUCH_ULID}, expect=(404,), note="requeue no task")

    # --- cancel ------------------------------------------------------------
    cancel = TID + "/cancel"
    e = s.submit({"queue": "cq"}, token="alice", note="alice submits E")
    f = s.submit({"queue": "cq"}, note="admin submits F")
    s.call("POST", cancel, {"id": f["id"]}, body={}, token="alice", expect=(404,),
           note="alice cancels admin's task (unseen under visibility = own)")
    s.call("POST", cancel, {"id": f["id"]}, body={}, token="sam", expect=(403,),
           note="an observing submitter cancels admin's task")
    s.call("POST", cancel, {"id": e["id"]}, body={}, token="obs", expect=(403,),
           note="observer cancels")
    s.call("POST", cancel, {"id": e["id"]}, body={"reason": "superseded by #18"}, token="alice",
           note="alice cancels E")
    s.call("POST", cancel, {"id": e["id"]}, body={}, token="alice", expect=(409,),
           note="cancel E again")
    s.call("POST", cancel, {"id": f["id"]}, body={"reason": "x" * 1025}, expect=(422,),
           note="reason too long")
    s.call("POST", cancel, {"id": f["id"]}, raw=b"", note="cancel F without a body")
    s.call("GET", "/api/v1/queues", note="queues, several known")
    s.call("POST", cancel, {"id": NO_SUCH_ULID}, body={}, expect=(404,), note="cancel no task")

    # --- workers -----------------------------------------------------------
    ws = "/api/v1/workers/{worker_id}/status"
    s.call("GET", "/api/v1/workers", token="obs", note="workers")
    s.call("GET", "/api/v1/workers", query={"x": "1"}, expect=(400,), note="workers with a query")
    s.call("POST", ws, {"worker_id": "agent-1"}, body={"status": "draining", "detail": "deploy"},
           note="status report")
    s.call("POST", ws, {"worker_id": "agent-2"},
           body={"eventData": {"state": "working", "currentTaskId": a["id"]}},
           note="camelCase nested status report")
    s.call("POST", ws, {"worker_id": "agent-1"}, body={"status": "idle", "current_task": a["id"]},
           expect=(422,), note="idle with a task")
    s.call("POST", ws, {"worker_id": "agent-1"}, body={"status": "busy", "current_task": NO_SUCH_ULID},
           expect=(422,), note="current_task names no task")
    s.call("POST", ws, {"worker_id": "bad!w"}, body={"status": "idle"}, expect=(422,),
           note="bad worker id")
    s.call("POST", ws, {"worker_id": "agent-1"}, body={"status": "idle", "mood": "x"},
           expect=(422,), note="unknown status field")
    s.call("POST", ws, {"worker_id": "agent-1"}, raw=b"[1]", expect=(422,), note="not an object")
    s.call("GET", "/api/v1/workers", note="workers after reports")

    # --- reviews: claim, release, assign, decide ---------------------------
    r1 = s.submit({"queue": "rq", "review": {"required": True}, "steps": ["test"]}, token="alice",
                  note="submit R1 (alice, so admin may review it)")
    g1 = s.lease_one("rq", note="lease R1")
    held = s.complete(g1, {"ok": True}, note="complete R1").json
    assert held["state"] == "awaiting_review", held
    t1 = s.ticket_of(r1["id"], "rq")["id"]
    rid = {"id": t1}
    h1 = s.dossier_hash(t1)
    s.call("GET", "/api/v1/reviews/{id}", {"id": "nope"}, expect=(404,), note="review not a ULID")
    s.call("GET", "/api/v1/reviews/{id}", {"id": NO_SUCH_ULID}, expect=(404,), note="no review")
    s.call("GET", "/api/v1/reviews/{id}", rid, query={"x": "1"}, expect=(400,),
           note="review with a query")
    s.call("GET", "/api/v1/reviews/{id}", rid, token="obs", expect=(403,), note="observer reads review")
    claim, release = "/api/v1/reviews/{id}/claim", "/api/v1/reviews/{id}/release"
    assign, decide = "/api/v1/reviews/{id}/assign", "/api/v1/reviews/{id}/decision"
    s.call("POST", claim, rid, body={"note": "any JSON is ignored"}, note="admin claims")
    s.call("POST", claim, rid, token="bob", expect=(409,), note="bob claims a held ticket")
    s.call("POST", release, rid, token="bob", expect=(403,), note="bob releases admin's claim")
    s.call("POST", release, rid, raw=b"", note="admin releases")
    s.call("POST", release, rid, expect=(409,), note="release an open ticket")
    s.call("POST", release, rid, raw=b"{", expect=(400,), note="release with malformed JSON")
    s.call("POST", claim, {"id": NO_SUCH_ULID}, expect=(404,), note="claim no ticket")
    s.call("POST", assign, rid, body={"reviewer": "bob"}, note="assign to bob")
    s.call("POST", assign, rid, body={"reviewer": ""}, expect=(422,), note="assign to nobody")
    s.call("POST", assign, rid, body={"reviewer": "carol"}, token="bob", expect=(403,),
           note="bob assigns")
    s.call("POST", decide, rid, body={"outcome": "approved", "dossier_hash": "0" * 64},
           token="bob", expect=(409,), note="stale dossier")
    s.call("POST", decide, rid, body={"outcome": "maybe", "dossier_hash": h1}, token="bob",
           expect=(422,), note="bad outcome")
    s.call("POST", decide, rid, body={"outcome": "approved", "dossier_hash": h1}, token="carol",
           expect=(409,), note="carol decides bob's ticket")
    s.call("POST", decide, rid, body={"outcome": "approved", "comment": "lgtm", "dossier_hash": h1},
           token="bob", note="bob approves")
    s.call("POST", claim, rid, expect=(409,), note="claim a decided ticket")
    s.call("POST", assign, rid, body={"reviewer": "carol"}, expect=(409,),
           note="assign a decided ticket")
    s.call("GET", "/api/v1/reviews", query={"state": "decided"}, token="bob", note="decided reviews")
    s.call("GET", "/api/v1/reviews", query={"unassigned": "true", "queue": "rq", "min_age": "1"},
           token="bob", note="unassigned reviews")
    s.call("GET", "/api/v1/reviews", query={"mine": "yes"}, token="bob", expect=(400,),
           note="bad mine")
    s.call("GET", "/api/v1/reviews", query={"state": "done"}, token="bob", expect=(400,),
           note="bad review state")
    s.call("GET", "/api/v1/reviews", token="obs", expect=(403,), note="observer lists reviews")

    # changes_requested, then the next lease carries the feedback
    r2 = s.submit({"queue": "rq2", "review": {"required": True}}, token="alice", note="submit R2")
    s.complete(s.lease_one("rq2", note="lease R2"), {"v": 1}, note="complete R2")
    t2 = s.ticket_of(r2["id"], "rq2")["id"]
    h2 = s.dossier_hash(t2)
    s.call("POST", decide, {"id": t2}, body={"outcome": "changes_requested", "dossier_hash": h2},
           expect=(422,), note="changes_requested without a comment")
    s.call("POST", decide, {"id": t2},
           body={"outcome": "changes_requested", "comment": "use the vault", "dossier_hash": h2},
           note="changes requested")
    g2 = s.lease_one("rq2", note="lease R2 again")
    if not g2.get("review_feedback"):
        raise AssertionError(f"the lease after changes_requested has no review_feedback: {g2}")
    s.complete(g2, {"v": 2}, note="complete R2 again (a new ticket opens)")

    # N of M: a second verdict by the same reviewer is refused
    r3 = s.submit({"queue": "rq3", "review": {"required_approvals": 2}}, note="submit R3")
    s.complete(s.lease_one("rq3", note="lease R3"), note="complete R3")
    t3 = s.ticket_of(r3["id"], "rq3")["id"]
    h3 = s.dossier_hash(t3)
    s.call("POST", decide, {"id": t3}, body={"outcome": "approved", "dossier_hash": h3},
           token="bob", note="first of two approvals")
    s.call("POST", claim, {"id": t3}, token="bob", expect=(409,), note="bob claims after voting")
    s.call("POST", assign, {"id": t3}, body={"reviewer": "bob"}, expect=(409,),
           note="assign to a reviewer who voted")
    s.call("POST", claim, {"id": t3}, token="carol", note="carol claims")
    # Four eyes: admin submitted R3, so it may neither vote on it nor be assigned it.
    s.call("POST", decide, {"id": t3}, body={"outcome": "approved", "dossier_hash": h3},
           expect=(403,), note="admin decides a task it submitted")
    s.call("POST", release, {"id": t3}, token="carol", note="carol releases")
    s.call("POST", claim, {"id": t3}, expect=(403,), note="admin claims a task it submitted")
    s.call("POST", assign, {"id": t3}, body={"reviewer": "admin"}, expect=(403,),
           note="assign to the task's submitter")

    # --- guardrails: input flag and block, tool flag and block, output block
    s.call("POST", T, body={"queue": "gq", "payload": {"cmd": "rm -rf /"}}, expect=(422,),
           note="input-stage block")
    s.call("POST", T + "/stream", body={"queue": "gq", "payload": {"cmd": "rm -rf /"}},
           expect=(422,), note="input-stage block on the stream route")
    gt = s.submit({"queue": "gq", "payload": {"notes": "x" * 300}}, token="alice", note="submit G (flagged)")
    gg = s.lease_one("gq", note="lease G")
    gl = {"lease_id": gg["lease_id"]}
    flagged = s.call("POST", ev, gl, note="tool-stage flag", body={"token": gg["token"], "events": [
        {"type": "agent_started", "agent": "coder"},
        {"type": "tool_invoked", "tool": "curl", "agent": "coder", "callId": "c1"}]}).json
    if not flagged["guardrails"]:
        raise AssertionError(f"the tools policy flagged nothing: {flagged}")
    s.call("POST", ev, gl, body={"token": gg["token"], "events": [
        {"type": "tool_invoked", "tool": "bash", "command": "rm -rf /"}]}, expect=(422,),
        note="tool-stage block")
    s.call("GET", "/api/v1/runs/{run_id}", {"run_id": gg["run_id"]}, note="run with decisions")
    s.complete(gg, {"note": "done"}, note="complete G (to review: flagged)")
    tg = s.ticket_of(gt["id"], "gq")["id"]
    hg = s.dossier_hash(tg)
    s.call("POST", decide, {"id": tg}, body={"outcome": "approved", "dossier_hash": hg},
           note="approve the flagged task")
    s.call("GET", TID, {"id": gt["id"]}, note="task with guardrail decisions")
    g2 = s.submit({"queue": "gq"}, note="submit G2")
    s.complete(s.lease_one("gq", note="lease G2"), {"cmd": "rm -rf /"}, expect=(422,),
               note="output-stage block")
    s.call("GET", TID, {"id": g2["id"]}, note="G2 failed by the output guardrail")

    s.call("GET", "/api/v1/reviews", token="bob", note="pending reviews")
    s.call("GET", "/api/v1/reviews/metrics", token="obs", note="review metrics")
    s.call("GET", "/api/v1/reviews/metrics", query={"window": "1h"}, note="review metrics 1h")
    s.call("GET", "/api/v1/reviews/metrics", query={"window": "30s"}, expect=(400,),
           note="window too short")
    s.call("GET", TID, {"id": r2["id"]}, token="bob", note="task with two tickets")

    # --- audit ---------------------------------------------------------------
    page = s.call("GET", "/api/v1/audit", query={"limit": "5"}, note="audit page 1").json
    if page["next_cursor"]:
        s.call("GET", "/api/v1/audit", query={"limit": "5", "cursor": page["next_cursor"]},
               note="audit page 2")
    s.call("GET", "/api/v1/audit", query={"route": "/api/v1/tasks", "principal": "admin",
                                          "since": "2020-01-01T00:00:00Z"}, note="audit filtered")
    s.call("GET", "/api/v1/audit", query={"cursor": "abc"}, expect=(400,), note="bad audit cursor")
    s.call("GET", "/api/v1/audit", query={"since": "yesterday"}, expect=(400,), note="bad since")
    s.call("GET", "/api/v1/audit", token="bob", expect=(403,), note="reviewer reads audit")
    s.call("GET", "/api/v1/audit/verify", note="verify the chain")
    s.call("GET", "/api/v1/audit/verify", query={"x": "1"}, expect=(400,), note="verify with a query")
    s.call("GET", "/api/v1/store", note="what the store holds")
    s.call("GET", "/api/v1/store", query={"x": "1"}, expect=(400,), note="the store report with a query")
    s.call("GET", "/api/v1/backup", note="an online backup")
    s.call("GET", "/api/v1/backup", query={"x": "1"}, expect=(400,), note="a backup with a query")

    # --- the timers started at the beginning -----------------------------------
    def wait_for_event(task_id, kind, what):
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            events = s.call("GET", TID, {"id": task_id}, query={"events": "50"},
                            note=f"wait for {kind}").json["events"]
            if any(e["type"] == kind for e in events):
                return
            time.sleep(0.3)
        raise AssertionError(f"no {kind} event for {what} within 15 s")

    wait_for_event(x["id"], "lease_expired", "the 100 ms lease")
    s.call("POST", hb, {"lease_id": gx["lease_id"]}, body={"token": gx["token"]}, expect=(409,),
           note="heartbeat an expired lease")
    wait_for_event(sla["id"], "review_expired", "the 1 s SLA")
    s.call("GET", "/api/v1/reviews", query={"state": "expired"}, token="bob", note="expired reviews")
    s.call("GET", "/api/v1/reviews/metrics", query={"window": "1h"}, token="bob",
           note="review metrics after an SLA breach")

    # --- the whole history on the firehose -----------------------------------
    s.call("GET", "/api/v1/events", query={"max_events": "100000", "idle_timeout": "1s"},
           token="obs", note="whole firehose", timeout=60)


def closed_body_probes(s: Scenario, spec: dict) -> list[str]:
    """Sends an unknown field to every operation whose request schema is closed."""
    problems = []
    fill = {"id": NO_SUCH_ULID, "lease_id": NO_SUCH_ULID, "run_id": NO_SUCH_ULID,
            "queue": "agents", "worker_id": "agent-1"}
    for (method, path), op in sorted(spec_operations(spec).items()):
        rb = op.get("requestBody")
        if not rb:
            continue
        schema = resolve(spec, rb["content"]["application/json"]["schema"])
        if schema.get("additionalProperties") is not False:
            continue
        params = {k: v for k, v in fill.items() if "{" + k + "}" in path}
        ex = s.call(method, path, params, body={"zz_not_a_field": 1}, expect=None,
                    note="unknown field in a closed body")
        msg = ex.json.get("error", {}).get("message", "") if ex.status == 422 else ""
        if ex.status != 422 or "unknown field" not in msg:
            problems.append(
                f"{method} {path}: the document closes the body (additionalProperties: false) "
                f"but an unknown field got {ex.status}: {ex.body[:300]!r}"
            )
    return problems


# ------------------------------------------------------------------ checks


def check_header(name: str, hspec: dict, value: str) -> list[str]:
    schema = hspec.get("schema", {})
    t = schema.get("type")
    inst: object = value
    if t == "integer":
        try:
            inst = int(value)
        except ValueError:
            return [f"header {name}: {value!r} is not an integer"]
    return [f"header {name}: {e}" for e in schema_errors(schema, inst)]


def check_exchange(spec: dict, ops: dict, ex: Exchange) -> list[str]:
    """Every way the exchange disagrees with the document."""
    op = ops.get(ex.op)
    if op is None:
        return [f"{ex.label()}: the document has no operation {ex.method} {ex.template}"]
    responses = op.get("responses", {})
    resp = responses.get(str(ex.status)) or responses.get(f"{str(ex.status)[0]}XX")
    if resp is None:
        return [f"{ex.label()}: status {ex.status} is not documented "
                f"(documented: {', '.join(sorted(responses))}); body {ex.body[:200]!r}"]
    resp = resolve(spec, resp)
    out = []
    for name, hspec in (resp.get("headers") or {}).items():
        value = ex.headers.get(name.lower())
        if value is None:
            if hspec.get("required"):
                out.append(f"{ex.label()}: required header {name} is missing")
            continue
        out += [f"{ex.label()}: {m}" for m in check_header(name, hspec, value)]
    rid = ex.request_headers.get("X-Request-ID")
    if rid and re.fullmatch(r"[A-Za-z0-9._:-]{1,64}", rid) and ex.headers.get("x-request-id") != rid:
        out.append(f"{ex.label()}: X-Request-ID {rid!r} was not echoed "
                   f"({ex.headers.get('x-request-id')!r})")
    content = resp.get("content") or {}
    if not content:
        if ex.body.strip():
            out.append(f"{ex.label()}: the document gives no body, the server sent {ex.body[:100]!r}")
        return out
    media = {k.split(";")[0].strip().lower(): v for k, v in content.items()}
    if ex.content_type not in media:
        return out + [f"{ex.label()}: content type {ex.content_type!r} is not documented "
                      f"({', '.join(media)})"]
    m = media[ex.content_type]
    if ex.content_type == "application/json":
        body = ex.json
        out += [f"{ex.label()}: {e}" for e in schema_errors(strict(m["schema"]), body)]
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            if body["error"].get("request_id") != ex.headers.get("x-request-id"):
                out.append(f"{ex.label()}: error.request_id differs from X-Request-ID")
    elif ex.content_type == "text/event-stream":
        item = m.get("x-itemSchema")
        if item is None:
            return out + [f"{ex.label()}: the stream's media type names no x-itemSchema"]
        item = strict(item)
        for i, frame in enumerate(parse_sse(ex.body.decode())):
            try:
                data = json.loads(frame.get("data", ""))
            except ValueError:
                out.append(f"{ex.label()}: event {i} data is not JSON: {frame}")
                continue
            out += [f"{ex.label()}: event {i} ({frame.get('event')}): {e}"
                    for e in schema_errors(item, data)]
            if isinstance(data, dict):
                if frame.get("event") != data.get("type"):
                    out.append(f"{ex.label()}: event {i}: `event:` {frame.get('event')!r} is not "
                               f"the envelope type {data.get('type')!r}")
                if frame.get("id") != data.get("id"):
                    out.append(f"{ex.label()}: event {i}: `id:` {frame.get('id')!r} is not the "
                               f"envelope id {data.get('id')!r}")
    elif ex.content_type == "text/plain":
        if not ex.body.strip():
            out.append(f"{ex.label()}: empty text/plain body")
    return out


def check_request(spec: dict, ops: dict, ex: Exchange) -> list[str]:
    """A body the server accepted (2xx) must fit the documented request schema."""
    op = ops.get(ex.op)
    if op is None or not (200 <= ex.status < 300) or not ex.request_body:
        return []
    rb = op.get("requestBody")
    if rb is None:
        return [f"{ex.label()}: the server accepted a body, the document gives none"]
    try:
        body = json.loads(ex.request_body)
    except ValueError:
        return []
    schema = resolve(spec, rb["content"]["application/json"]["schema"])
    return [f"{ex.label()} request body: {e}" for e in schema_errors(schema, body)]


def json_diff(got, want, where: str = "", out: list | None = None, limit: int = 10) -> list[str]:
    """Where two JSON values differ (at most `limit` places)."""
    out = [] if out is None else out
    if len(out) >= limit:
        return out
    if isinstance(got, dict) and isinstance(want, dict):
        for k in sorted(set(got) | set(want), key=str):
            if k not in got:
                out.append(f"{where}/{k}: missing from the served document")
            elif k not in want:
                out.append(f"{where}/{k}: not in docs/openapi.yaml")
            else:
                json_diff(got[k], want[k], f"{where}/{k}", out, limit)
            if len(out) >= limit:
                break
    elif isinstance(got, list) and isinstance(want, list) and len(got) == len(want):
        for i, (g, w) in enumerate(zip(got, want)):
            json_diff(g, w, f"{where}/{i}", out, limit)
    elif got != want:
        out.append(f"{where or '/'}: served {json.dumps(got)[:120]}, file has {json.dumps(want)[:120]}")
    return out


# ------------------------------------------------------------------ tests


class OpenApiDocumentTest(unittest.TestCase):
    """The document on its own, and against src/auth/matrix.rs."""

    @classmethod
    def setUpClass(cls):
        cls.spec = load_spec()
        cls.ops = spec_operations(cls.spec)
        cls.matrix = parse_matrix()

    def test_spec_validates(self):
        osv = require_module("openapi_spec_validator", "openapi-spec-validator")
        self.assertIn(str(self.spec.get("openapi", "")), ("3.1.0", "3.0.3"))
        try:
            osv.validate(self.spec)
        except Exception as e:  # noqa: BLE001 - show the validator's own message
            self.fail(f"openapi-spec-validator refuses docs/openapi.yaml: {e}")

    def test_routes_equal_the_matrix_both_ways(self):
        want = set(self.matrix)
        got = set(self.ops)
        self.assertEqual(
            sorted(want - got), [], "routes in src/auth/matrix.rs the document lacks"
        )
        self.assertEqual(
            sorted(got - want), [], "operations in the document that src/auth/matrix.rs lacks"
        )

    def test_roles_rate_classes_and_security_follow_the_matrix(self):
        schemes = (self.spec.get("components") or {}).get("securitySchemes", {})
        bearer = schemes.get("bearerAuth", {})
        self.assertEqual((bearer.get("type"), bearer.get("scheme"), bearer.get("bearerFormat")),
                         ("http", "bearer", "JWT"), "components.securitySchemes.bearerAuth")
        for key, op in self.ops.items():
            route = self.matrix.get(key)
            public = route is not None and route["public"]
            name = f"{key[0]} {key[1]}"
            self.assertEqual(op.get("x-forgeline-object-rule"), route and route["object_rule"],
                             f"{name}: x-forgeline-object-rule")
            if public:
                self.assertEqual(op.get("security"), [], f"{name}: public, so `security: []`")
                self.assertNotIn("x-forgeline-roles", op, name)
                continue
            self.assertEqual(op.get("security"), [{"bearerAuth": []}], name)
            self.assertEqual(sorted(op.get("x-forgeline-roles", [])), sorted(route["roles"]),
                             f"{name}: x-forgeline-roles")
            self.assertEqual(op.get("x-forgeline-rate-class"), route["class"],
                             f"{name}: x-forgeline-rate-class")

    def test_operation_conventions(self):
        tags = {t["name"] for t in self.spec.get("tags", [])}
        ids = {}
        for (method, path), op in sorted(self.ops.items()):
            name = f"{method} {path}"
            oid = op.get("operationId", "")
            self.assertRegex(oid, r"^[a-z]+[A-Z][A-Za-z]+$", f"{name}: operationId is a verb phrase")
            self.assertNotIn(oid, ids, f"{name}: operationId {oid} also used by {ids.get(oid)}")
            ids[oid] = name
            self.assertTrue(op.get("summary"), f"{name}: summary")
            self.assertTrue(op.get("description"), f"{name}: description")
            self.assertTrue(op.get("tags"), f"{name}: tags")
            for t in op["tags"]:
                self.assertIn(t, tags, f"{name}: tag {t} is not declared")
            declared = {
                p["name"] for p in (resolve(self.spec, x) for x in op.get("parameters", []))
                if p.get("in") == "path"
            }
            for p in (resolve(self.spec, x) for x in op.get("parameters", [])):
                if p.get("in") == "path":
                    self.assertTrue(p.get("required"), f"{name}: path parameter {p['name']}")
            self.assertEqual(declared, set(re.findall(r"\{(\w+)\}", path)),
                             f"{name}: path parameters")
            statuses = set(op.get("responses", {}))
            public = self.matrix.get((method, path), {}).get("public")
            if path.startswith("/api/") and not public:
                self.assertLessEqual(STANDARD_API_STATUSES, statuses, f"{name}: standard errors")
                if "{" in path and "{queue}" not in path and "{worker_id}" not in path:
                    self.assertIn("404", statuses, f"{name}: a path id can name nothing")
                if op.get("requestBody"):
                    self.assertIn("413", statuses, f"{name}: the body limit")
            for status, r in op.get("responses", {}).items():
                r = resolve(self.spec, r)
                self.assertIn("X-Request-ID", r.get("headers", {}), f"{name} {status}")
                self.assertIn("X-Response-Time", r.get("headers", {}), f"{name} {status}")
                for media in (r.get("content") or {}):
                    if media == "text/event-stream":
                        self.assertIn("x-itemSchema", r["content"][media], f"{name} {status}")

    def test_event_types_are_the_code_s(self):
        text = (REPO / "src" / "model" / "event.rs").read_text()
        kinds = re.findall(r'^\s*\w+ => "(\w+)",', text, re.M)
        self.assertEqual(len(kinds), 20, "event kinds parsed from src/model/event.rs")
        enum = self.spec["components"]["schemas"]["EventType"]["enum"]
        self.assertEqual(enum, kinds)


class OpenApiLiveTest(unittest.TestCase):
    """A real server's responses, checked against the document."""

    @classmethod
    def setUpClass(cls):
        require_module("openapi_schema_validator", "openapi-spec-validator")
        require_module("jsonschema", "jsonschema")
        cls.spec = load_spec()
        cls.ops = spec_operations(cls.spec)
        cls.server = Server()
        cls.addClassCleanup(cls.server.stop)
        cls.server.start()
        srv = cls.server
        tokens = {
            "admin": srv.admin_token(),
            "alice": srv.issue_token("alice", "submitter"),
            "bob": srv.issue_token("bob", "reviewer"),
            "carol": srv.issue_token("carol", "reviewer"),
            "obs": srv.issue_token("obs", "observer"),
            "sam": srv.issue_token("sam", "submitter", "observer"),
            "w2": srv.issue_token("w2", "worker"),
        }
        cls.scenario = Scenario(srv, tokens)
        try:
            run_scenario(cls.scenario)
            cls.probe_problems = closed_body_probes(cls.scenario, cls.spec)
        except AssertionError as e:
            raise AssertionError(f"{e}\nthe server's log ends:\n{srv.proc.log(30)}") from e
        cls.openapi_route = http("GET", srv.url + OPENAPI_ROUTE[1], timeout=10)

    def test_responses_match_the_document(self):
        problems = []
        for ex in self.scenario.exchanges:
            problems += check_exchange(self.spec, self.ops, ex)
        self.assertEqual(problems, [], "\n" + "\n".join(problems))

    def test_accepted_request_bodies_match_the_document(self):
        problems = []
        for ex in self.scenario.exchanges:
            problems += check_request(self.spec, self.ops, ex)
        self.assertEqual(problems, [], "\n" + "\n".join(problems))

    def test_closed_request_bodies_refuse_unknown_fields(self):
        self.assertEqual(self.probe_problems, [], "\n" + "\n".join(self.probe_problems))

    def test_every_operation_is_exercised(self):
        seen: dict[tuple[str, str], set[str]] = {}
        for ex in self.scenario.exchanges:
            op = self.ops.get(ex.op)
            if op is not None and str(ex.status) in op.get("responses", {}):
                seen.setdefault(ex.op, set()).add(str(ex.status))
        status, _, _ = self.openapi_route
        if status == 200:
            seen.setdefault(OPENAPI_ROUTE, set()).add("200")
        lines = []
        for key in sorted(self.ops):
            statuses = sorted(seen.get(key, ()))
            documented = sorted(self.ops[key].get("responses", {}))
            mark = "ok " if statuses else ("-- " if key in NOT_EXERCISED else "!! ")
            lines.append(f"  {mark}{key[0]:4} {key[1]:42} exercised {','.join(statuses) or '-'}"
                         f" of {','.join(documented)}")
        covered = sum(1 for k in self.ops if k in seen)
        total_pairs = sum(len(op.get("responses", {})) for op in self.ops.values())
        seen_pairs = sum(len(v) for v in seen.values())
        print(f"\nOpenAPI coverage: {covered}/{len(self.ops)} operations, "
              f"{seen_pairs}/{total_pairs} documented (operation, status) pairs, "
              f"{len(self.scenario.exchanges)} exchanges\n" + "\n".join(lines), file=sys.stderr)
        missing = sorted(k for k in self.ops if k not in seen and k not in NOT_EXERCISED)
        self.assertEqual(missing, [], "operations never exercised with a documented status")

    def test_openapi_route_serves_this_document(self):
        status, headers, body = self.openapi_route
        self.assertEqual(status, 200, "GET /api/v1/openapi.json")
        ex = Exchange("GET", OPENAPI_ROUTE[1], OPENAPI_ROUTE[1], status, headers, body, None, {})
        problems = check_exchange(self.spec, self.ops, ex)
        self.assertEqual(problems, [], "\n".join(problems))
        diffs = json_diff(ex.json, self.spec)
        self.assertEqual(
            diffs, [],
            "GET /api/v1/openapi.json does not serve docs/openapi.yaml as JSON (the binary "
            "compiles the file in: rebuild it after editing the file); first differences:\n"
            + "\n".join(diffs))



class OpenApiLimitsLiveTest(unittest.TestCase):
    """The statuses the main server cannot give: a second server with a tiny
    read bucket (429 and the X-RateLimit-* headers) and a token-protected
    /metrics (401)."""

    @classmethod
    def setUpClass(cls):
        require_module("openapi_schema_validator", "openapi-spec-validator")
        require_module("jsonschema", "jsonschema")
        cls.spec = load_spec()
        cls.ops = spec_operations(cls.spec)
        cls.server = Server({
            "FORGELINE_RATELIMIT__ENABLED": "true",
            "FORGELINE_RATELIMIT__READ__RATE": "0.01",
            "FORGELINE_RATELIMIT__READ__BURST": "2",
            "FORGELINE_METRICS__ACCESS": "token",
            "FORGELINE_METRICS__TOKEN_FILE": "{dir}/metrics-token",
        })
        cls.addClassCleanup(cls.server.stop)
        cls.server.start()
        s = cls.scenario = Scenario(cls.server, {"admin": cls.server.admin_token()})
        for i in range(2):
            s.call("GET", "/api/v1/workers", note=f"read {i + 1} of a burst of 2")
        s.call("GET", "/api/v1/workers", expect=(429,), note="over the read burst")
        s.call("GET", "/metrics", token=None, expect=(401,), note="metrics without its token")
        s.call("GET", "/metrics", token="wrong", expect=(401,), note="metrics, wrong token")
        s.call("GET", "/metrics", token=cls.server.metrics_token, note="metrics with its token")

    def test_responses_match_the_document(self):
        problems = []
        for ex in self.scenario.exchanges:
            problems += check_exchange(self.spec, self.ops, ex)
        self.assertEqual(problems, [], "\n" + "\n".join(problems))

    def test_rate_limit_headers_are_sent(self):
        for ex in self.scenario.exchanges:
            if ex.template.startswith("/api/"):
                for h in ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"):
                    self.assertIn(h, ex.headers, ex.label())
        limited = [ex for ex in self.scenario.exchanges if ex.status == 429]
        self.assertEqual(len(limited), 1)
        self.assertIn("retry-after", limited[0].headers)


if __name__ == "__main__":
    unittest.main()
