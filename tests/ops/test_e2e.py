"""End-to-end check of the ops kit against the real tools.

Starts the forgeline release binary (config tests/ops/forgeline_e2e.toml: a
blocking and two flagging guardrail policies, a review queue with a 2 s SLA,
high rate limits, FORGELINE_JWT_SECRET set) on 127.0.0.1:0 and a real
Prometheus that scrapes it every second as job="forgeline" with the shipped
alerts/forgeline.rules.yml loaded. Runs `k6 run loadtest/smoke.js` against the
server (it must pass: exit 0, every threshold met), waits for a few scrapes,
then asks Prometheus for

- every template variable query of every dashboard (dashboards/*.json): each
  must return values; the values seen are substituted into the panels
  ($job = forgeline, $instance = the scraped target, other query variables
  their first value, $__rate_interval = 1m);
- every panel expression of every dashboard, once with those values and once
  with the variables' "All" values: each must return a non-empty result;
- /api/v1/rules: every rule group evaluated after the run, every rule
  healthy without lastError, every recording rule with a series;
  /api/v1/targets: the forgeline target up.

Every process is stopped at the end. The binary is $FORGELINE_BIN, else
target/release/forgeline (the test never builds it). The whole test takes
about 70 s. FORGELINE_E2E_VERBOSE=1 prints every variable value and
query; FORGELINE_E2E_KEEP=1 keeps the temporary directory (logs, data).

Run: python3 -m unittest tests.ops.test_e2e -v
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import shutil
import tempfile
import time
import tomllib
import unittest
import urllib.parse
from pathlib import Path

from tests.ops import common
from tests.ops.dashboards_lib import (
    default_values,
    load_dashboards,
    panel_queries,
    parse_variable_query,
    substitute,
    template_vars,
    variable_query_text,
)

REPO = common.REPO
CONFIG = Path(__file__).resolve().parent / "forgeline_e2e.toml"
RULES = common.ALERTS / "forgeline.rules.yml"
SMOKE = common.LOADTEST / "smoke.js"

K6_TIMEOUT = 120  # smoke.js runs about 40 s

# What smoke.js must know about the server's policies (it cannot read the
# config); smoke_env() checks them against forgeline_e2e.toml.
BLOCK_TEXT = "rm -rf /"  # a `block` deny_pattern at every stage refuses it
FLAG_TOOL = "curl"  # an allow_tools `flag` policy does not allow it
SMOKE_QUEUE = "agents"  # k6 workers' queue; sorts first, so $queue's first value is it


def smoke_env(cfg: dict) -> dict:
    """smoke.js's server settings, derived from (and checked against) the config."""
    guardrails = cfg.get("guardrails", [])
    stages = {"input", "tool", "output"}
    blocking = [
        g for g in guardrails
        if g["kind"] == "deny_pattern" and g["verdict"] == "block" and stages <= set(g["stages"])
        and re.search(g["pattern"], json.dumps({"cmd": BLOCK_TEXT}))
    ]
    assert blocking, f"{CONFIG.name}: no blocking deny_pattern at every stage matches {BLOCK_TEXT!r}"
    assert any(
        g["kind"] == "allow_tools" and g["verdict"] == "flag" and FLAG_TOOL not in g["tools"] for g in guardrails
    ), f"{CONFIG.name}: no flagging allow_tools policy that refuses {FLAG_TOOL!r}"
    secret = any(g["kind"] == "secret_scan" and g["verdict"] == "flag" and "output" in g["stages"] for g in guardrails)
    executor = cfg.get("executor", {})
    assert SMOKE_QUEUE not in executor.get("queues", ["default"]), "the smoke queue must not be an executor queue"
    sla = [
        (name, q) for name, q in cfg.get("review", {}).get("queues", {}).items()
        if q.get("on_timeout", "escalate") == "escalate" and q.get("escalate_to") and q.get("sla", "").endswith("s")
    ]
    assert sla, f"{CONFIG.name}: no review queue with a seconds-long SLA that escalates"
    env = {
        "QUEUE": SMOKE_QUEUE,
        "EXECUTOR_QUEUE": executor.get("queues", ["default"])[0],
        "EXECUTOR_STEPS": ",".join(cfg.get("steps", {})),
        "BLOCK_TEXT": BLOCK_TEXT,
        "FLAG_TOOL": FLAG_TOOL,
        "SECRET_FLAG": "1" if secret else "0",
        "SLA_QUEUE": sla[0][0],
        "SLA_ESCALATE_TO": sla[0][1]["escalate_to"],
        # Keep review tickets pending: the review gauges need them at scrape time.
        "LEAVE_PENDING": "1",
    }
    return env
RATE_INTERVAL = "1m"  # what $__rate_interval becomes (4x a 15 s scrape in Grafana)
VERBOSE = bool(os.environ.get("FORGELINE_E2E_VERBOSE"))  # print every variable and query


def forgeline_binary() -> Path:
    path = Path(os.environ.get("FORGELINE_BIN") or REPO / "target" / "release" / "forgeline")
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise AssertionError(
            f"missing forgeline binary {path}: build it with `cargo build --release` "
            "or point FORGELINE_BIN at one"
        )
    return path


def listen_addr(log_path: Path) -> str | None:
    """The "addr" of forgeline's JSON log line "forgeline listening", if logged yet."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("message") == "forgeline listening" and rec.get("addr"):
            return rec["addr"]
    return None


class Prometheus:
    """Minimal client of a Prometheus HTTP API on 127.0.0.1."""

    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params):
        query = urllib.parse.urlencode(params, doseq=True)
        status, body = common.http_json("GET", f"{self.url}{path}{'?' + query if query else ''}", timeout=30)
        if status != 200 or not isinstance(body, dict) or body.get("status") != "success":
            raise AssertionError(f"Prometheus {path} {params}: HTTP {status}: {body}")
        return body["data"]

    def query(self, expr: str):
        return self.get("/api/v1/query", query=expr, time=f"{time.time():.3f}")

    def label_values(self, label: str, selector: str | None) -> list[str]:
        """What Grafana's label_values([selector,] label) lists over the last hour."""
        start, end = f"{time.time() - 3600:.3f}", f"{time.time():.3f}"
        if selector is None:
            return sorted(self.get(f"/api/v1/label/{label}/values", start=start, end=end))
        series = self.get("/api/v1/series", **{"match[]": selector, "start": start, "end": end})
        return sorted({s[label] for s in series if label in s})


def rfc3339(text: str) -> float:
    """Seconds since the epoch of a Prometheus time (nanosecond RFC 3339, UTC); 0 when unset."""
    from datetime import datetime, timezone

    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", text or "")
    if not m or text.startswith("0001-"):
        return 0.0
    base = datetime.fromisoformat(m.group(1) + ("+00:00" if m.group(3) == "Z" else m.group(3)))
    return base.astimezone(timezone.utc).timestamp() + float(m.group(2) or 0)


def result_is_empty(data) -> bool:
    if data.get("resultType") in ("scalar", "string"):
        return False
    return not data.get("result")


def all_nan(data) -> bool:
    """True when every sample of a non-empty instant vector is NaN."""
    if data.get("resultType") != "vector" or not data.get("result"):
        return False
    return all(math.isnan(float(s["value"][1])) for s in data["result"])


class EndToEnd(unittest.TestCase):
    """One forgeline + Prometheus + k6 smoke run, shared by the test methods."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.stack = contextlib.ExitStack()
        try:
            cls._start()
        except BaseException:
            cls.stack.close()
            cls._cleanup_tmp()
            raise

    @classmethod
    def _cleanup_tmp(cls) -> None:
        tmp = getattr(cls, "tmp", None)
        if tmp and not os.environ.get("FORGELINE_E2E_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.stack.close()
        cls._cleanup_tmp()

    @classmethod
    def _start(cls) -> None:
        binary = forgeline_binary()
        prometheus = common.tool("prometheus")
        k6 = common.tool("k6")
        cls.tmp = Path(tempfile.mkdtemp(prefix="forgeline-e2e-"))
        cfg = tomllib.loads(CONFIG.read_text())
        auth = cfg.get("auth", {})
        secret = secrets.token_urlsafe(48)

        # forgeline on 127.0.0.1, a free port.
        env = dict(os.environ)
        env.update(FORGELINE_JWT_SECRET=secret, RUST_LOG="info")
        env.pop("FORGELINE_CONFIG", None)
        cls.forgeline = cls.stack.enter_context(
            common.Process(
                "forgeline",
                [str(binary), "serve", "--port", "0", "--data-dir", str(cls.tmp / "data"), "--config", str(CONFIG)],
                cls.tmp,
                env=env,
            )
        )
        addr = common.wait_until(
            "forgeline to log its listening address",
            lambda: listen_addr(cls.forgeline.log_path) or (not cls.forgeline.alive() and cls._died(cls.forgeline)),
            timeout=20,
        )
        host, _, port = addr.rpartition(":")
        if host not in ("127.0.0.1", "[::1]", "::1"):
            raise AssertionError(f"forgeline listens on {addr}, not on loopback")
        cls.instance = f"127.0.0.1:{port}"
        cls.base_url = f"http://{cls.instance}"
        common.wait_until(
            "forgeline /health/ready",
            lambda: common.http_json("GET", f"{cls.base_url}/health/ready", timeout=2)[0] == 200,
            timeout=20,
        )

        # Prometheus scraping it every second, with the shipped rules.
        prom_port = common.free_port()
        prom_cfg = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {
                    "job_name": "forgeline",
                    "metrics_path": "/metrics",
                    "static_configs": [{"targets": [cls.instance]}],
                }
            ],
        }
        prom_yml = cls.tmp / "prometheus.yml"
        prom_yml.write_text(json.dumps(prom_cfg, indent=2))  # JSON is YAML
        cls.prometheus = cls.stack.enter_context(
            common.Process(
                "prometheus",
                [
                    prometheus,
                    f"--config.file={prom_yml}",
                    f"--storage.tsdb.path={cls.tmp / 'prometheus'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                    "--log.level=warn",
                ],
                cls.tmp,
            )
        )
        cls.prom = Prometheus(f"http://127.0.0.1:{prom_port}")
        common.wait_until(
            "Prometheus to be ready",
            lambda: common.http_json("GET", f"{cls.prom.url}/-/ready", timeout=2)[0] == 200
            or (not cls.prometheus.alive() and cls._died(cls.prometheus)),
            timeout=30,
        )
        common.wait_until("the forgeline target to be up", cls._target_up, timeout=20, interval=0.5)

        # The smoke run.
        cls.summary_path = cls.tmp / "smoke-summary.json"
        k6_env = dict(os.environ)
        k6_env.update(
            BASE_URL=cls.base_url,
            FORGELINE_JWT_SECRET=secret,
            SUMMARY=str(cls.summary_path),
            K6_NO_USAGE_REPORT="true",
            # The test command runs on shared, noisy machines: the latency
            # SLO is measured and printed but is not a pass/fail threshold
            # here (it is one in a plain `k6 run`, and `forgeline bench` and
            # stress.js are where latency is judged).
            LATENCY_SLO="0",
        )
        k6_env.update(smoke_env(cfg))
        for key, var in (("issuer", "JWT_ISSUER"), ("audience", "JWT_AUDIENCE")):
            if auth.get(key):
                k6_env[var] = auth[key]
            else:
                k6_env.pop(var, None)
        for var in ("TOKEN", "ALLOW_REMOTE", "DEAD_LETTER", "REVIEWERS"):
            k6_env.pop(var, None)
        started = time.time()
        cls.k6 = common.run([k6, "run", "--quiet", "--no-color", str(SMOKE)], timeout=K6_TIMEOUT, cwd=REPO, env=k6_env)
        cls.k6_seconds = time.time() - started
        cls.k6_ended = time.time()

        # A few scrapes after the run, and every rule group evaluated since
        # the run ended (the recording groups run every 30 s).
        common.wait_until("three scrapes after the k6 run", cls._scraped_after_run, timeout=20, interval=0.5)
        common.wait_until("every rule group to be evaluated after the run", cls._groups_evaluated, timeout=45, interval=1)

    @classmethod
    def _died(cls, proc: common.Process):
        raise AssertionError(f"{proc.name} exited with {proc.proc.returncode}:\n{proc.log()}")

    @classmethod
    def _target_up(cls) -> bool:
        data = cls.prom.get("/api/v1/targets", state="active")
        return any(
            t["labels"].get("job") == "forgeline" and t.get("health") == "up" for t in data["activeTargets"]
        )

    @classmethod
    def _scraped_after_run(cls) -> bool:
        res = cls.prom.query('timestamp(up{job="forgeline"})')["result"]
        return bool(res) and float(res[0]["value"][1]) >= cls.k6_ended + 3

    @classmethod
    def _groups_evaluated(cls) -> bool:
        groups = cls.prom.get("/api/v1/rules")["groups"]
        return bool(groups) and all(rfc3339(g.get("lastEvaluation", "")) >= cls.k6_ended for g in groups)

    def k6_output(self) -> str:
        return f"--- k6 stdout ---\n{self.k6.stdout[-6000:]}\n--- k6 stderr ---\n{self.k6.stderr[-4000:]}"

    # ------------------------------------------------------------------

    def test_k6_smoke_passes(self):
        self.assertEqual(
            0,
            self.k6.returncode,
            f"k6 run loadtest/smoke.js exited {self.k6.returncode} (99: a threshold failed)\n{self.k6_output()}\n"
            f"--- forgeline log ---\n{self.forgeline.log(30)}",
        )
        self.assertLess(self.k6_seconds, 60, "smoke.js must stay under a minute")
        summary = json.loads(self.summary_path.read_text())
        metrics = summary["metrics"]
        api = metrics["http_req_duration{kind:api}"]
        self.assertIn("p(99)", api["values"], "the summary must carry p(99)")
        self.assertGreater(api["values"]["p(99)"], 0)
        self.assertFalse(api.get("thresholds"), "LATENCY_SLO=0 must drop the latency threshold, nothing else")
        self.assertIn("http_req_failed", metrics)
        self.assertTrue(metrics["http_req_failed"].get("thresholds"), "the availability threshold stays")
        for name, metric in metrics.items():
            for expr, result in (metric.get("thresholds") or {}).items():
                self.assertTrue(result["ok"], f"threshold {name}: {expr} failed")
        self.assertIn("p(99)", self.k6.stdout, "the text summary must show p(99)")

    def test_forgeline_target_up(self):
        data = self.prom.get("/api/v1/targets", state="active")
        targets = [t for t in data["activeTargets"] if t["labels"].get("job") == "forgeline"]
        self.assertEqual(1, len(targets), data)
        t = targets[0]
        self.assertEqual("up", t["health"], t)
        self.assertEqual(self.instance, t["labels"]["instance"])
        self.assertEqual("", t.get("lastError", ""))

    def test_rules_evaluated_and_healthy(self):
        groups = self.prom.get("/api/v1/rules")["groups"]
        self.assertTrue(groups, "no rule groups loaded")
        self.assertTrue(all(g["file"] == str(RULES) for g in groups), [g["file"] for g in groups])
        shipped = common.load_yaml(RULES)["groups"]
        self.assertEqual(sorted(g["name"] for g in shipped), sorted(g["name"] for g in groups))
        problems = []
        nrules = 0
        for g in groups:
            if g.get("lastEvaluation", "").startswith("0001-"):
                problems.append(f"group {g['name']}: never evaluated")
            for r in g["rules"]:
                nrules += 1
                name = r.get("name")
                if r.get("health") != "ok" or r.get("lastError"):
                    problems.append(
                        f"group {g['name']} rule {name}: health {r.get('health')!r}, lastError {r.get('lastError')!r}"
                    )
        self.assertEqual(sum(len(g["rules"]) for g in shipped), nrules)
        self.assertEqual([], problems, "\n".join(problems))

    def test_recording_rules_record_series(self):
        """Every recording rule has recorded a series from the smoke run's metrics."""
        problems = []
        for g in self.prom.get("/api/v1/rules", type="record")["groups"]:
            for r in g["rules"]:
                data = self.prom.query(r["name"])
                if result_is_empty(data):
                    problems.append(f"group {g['name']}: {r['name']} has no series\n    expr: {r['query']}")
        self.assertEqual([], problems, "\n".join(problems))

    def _variable_values(self, dashboard: dict) -> tuple[dict, list[str]]:
        """Evaluates the dashboard's query variables in order (each may use
        the ones before it) and returns (values, problems)."""
        values = default_values(dashboard)
        values["__rate_interval"] = RATE_INTERVAL
        problems = []
        for var in template_vars(dashboard):
            if var.get("type") != "query":
                continue
            name = var.get("name")
            query = substitute(variable_query_text(var), values)
            vq = parse_variable_query(query)
            if vq.function == "label_values":
                seen = self.prom.label_values(vq.label, vq.selector)
            elif vq.function == "query_result":
                seen = [json.dumps(s["metric"]) for s in self.prom.query(vq.expr)["result"]]
            elif vq.function == "label_names":
                seen = sorted(self.prom.get("/api/v1/labels"))
            else:  # metrics(regex)
                seen = sorted(self.prom.get("/api/v1/label/__name__/values"))
            if not seen:
                problems.append(f"variable ${name}: {query} returned nothing")
                continue
            if name == "job":
                if "forgeline" not in seen:
                    problems.append(f"variable $job: {query} lists {seen}, not forgeline")
                values[name] = "forgeline"
            elif name == "instance":
                if self.instance not in seen:
                    problems.append(f"variable $instance: {query} lists {seen}, not {self.instance}")
                values[name] = self.instance
            else:
                values[name] = seen[0]
            if VERBOSE:
                print(f"\n[e2e] ${name} = {values[name]!r} (from {query}: {seen[:8]})")
        return values, problems

    def test_variable_queries_return_values(self):
        problems = []
        for fname, db in sorted(load_dashboards().items()):
            _, p = self._variable_values(db)
            problems += [f"{fname}: {x}" for x in p]
        self.assertEqual([], problems, "\n".join(problems))

    def _check_panels(self, use_seen_values: bool):
        problems, nan_only, count = [], [], 0
        for fname, db in sorted(load_dashboards().items()):
            if use_seen_values:
                values, p = self._variable_values(db)
                problems += [f"{fname}: {x}" for x in p]
            else:
                values = default_values(db)
                values.update(job="forgeline", instance=".+", __rate_interval=RATE_INTERVAL)
            for title, expr in panel_queries(db, values):
                count += 1
                try:
                    data = self.prom.query(expr)
                except AssertionError as e:
                    problems.append(f"{fname} panel {title!r}: query failed: {e}\n    expr: {expr}")
                    continue
                if VERBOSE:
                    print(f"[e2e] {fname} {title!r}: {len(data.get('result') or [])} series: {expr}")
                if result_is_empty(data):
                    problems.append(f"{fname} panel {title!r}: no data\n    expr: {expr}")
                elif all_nan(data):
                    nan_only.append(f"{fname} panel {title!r}")
        self.assertGreater(count, 0, "no panel queries found in dashboards/")
        if nan_only:
            # Data, but only NaN (e.g. a ratio of rates that were 0 in the
            # last window): not a failure, shown for whoever reads the log.
            print(f"\n[e2e] panels with only NaN values ({'seen values' if use_seen_values else 'All'}):")
            for n in nan_only:
                print(f"  {n}")
        self.assertEqual([], problems, f"{len(problems)} of {count} panel queries have no data:\n" + "\n".join(problems))

    def test_every_panel_has_data_with_seen_values(self):
        """$job = forgeline, $instance = the target, other variables their first value."""
        self._check_panels(use_seen_values=True)

    def test_every_panel_has_data_with_all_values(self):
        """Every query variable at its "All" value (.+)."""
        self._check_panels(use_seen_values=False)


if __name__ == "__main__":
    unittest.main()
