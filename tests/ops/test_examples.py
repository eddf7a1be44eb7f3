"""The monitoring examples in packaging/.

- packaging/prometheus.yml: `promtool check config` (Prometheus 2.42) accepts
  it together with the rule file it loads (../alerts/forgeline.rules.yml,
  resolved against the config's directory), and it scrapes job="forgeline".
- packaging/otelcol.yaml: no OpenTelemetry Collector binary is packaged in
  Debian or on PyPI, so it is checked structurally with PyYAML: every
  component a pipeline names is defined, memory_limiter is the first
  processor and batch the last, a sampler is in the traces pipeline, and
  every endpoint is on loopback.
"""

from __future__ import annotations

import ipaddress
import tempfile
import unittest
from pathlib import Path
from urllib.parse import urlsplit

from tests.ops.common import ALERTS, REPO, load_yaml, run, tool

PACKAGING = REPO / "packaging"
PROMETHEUS = PACKAGING / "prometheus.yml"
OTELCOL = PACKAGING / "otelcol.yaml"
RULES = ALERTS / "forgeline.rules.yml"


class PrometheusExampleTest(unittest.TestCase):
    def test_promtool_check_config(self):
        # No skip: the example is only usable with the rule file it names.
        self.assertTrue(
            RULES.is_file(),
            f"{RULES.relative_to(REPO)} is missing; packaging/prometheus.yml loads it",
        )
        r = run([tool("promtool"), "check", "config", str(PROMETHEUS)], timeout=60)
        out = r.stdout + r.stderr
        self.assertEqual(r.returncode, 0, out)
        self.assertIn("SUCCESS: 1 rule files found", out)
        self.assertIn("forgeline.rules.yml", out)

    def test_promtool_check_config_scrape_and_alerting(self):
        # The scrape/alerting part on its own (the rule file replaced by an
        # empty one), so a failure here is this file's, not the rules'.
        cfg = load_yaml(PROMETHEUS)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            (tmp / "empty.rules.yml").write_text("groups: []\n")
            text = PROMETHEUS.read_text().replace(cfg["rule_files"][0], "empty.rules.yml")
            (tmp / "prometheus.yml").write_text(text)
            r = run([tool("promtool"), "check", "config", str(tmp / "prometheus.yml")], timeout=60)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_scrape_job(self):
        cfg = load_yaml(PROMETHEUS)
        self.assertEqual(cfg["global"]["scrape_interval"], "15s")
        jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
        job = jobs["forgeline"]
        self.assertEqual(job.get("metrics_path", "/metrics"), "/metrics")
        self.assertEqual(job.get("scrape_interval", cfg["global"]["scrape_interval"]), "15s")
        targets = [t for sc in job["static_configs"] for t in sc["targets"]]
        self.assertEqual(targets, ["127.0.0.1:7878"])
        am = [
            t
            for a in cfg["alerting"]["alertmanagers"]
            for sc in a["static_configs"]
            for t in sc["targets"]
        ]
        self.assertEqual(am, ["127.0.0.1:9093"])

    def test_rule_files_relative_to_config_dir(self):
        # Prometheus resolves rule_files against the config file's directory.
        cfg = load_yaml(PROMETHEUS)
        self.assertEqual(len(cfg["rule_files"]), 1)
        rel = cfg["rule_files"][0]
        self.assertFalse(Path(rel).is_absolute(), rel)
        self.assertEqual((PROMETHEUS.parent / rel).resolve(), RULES.resolve())


def is_loopback(endpoint: str) -> bool:
    """True for `127.0.0.1:4317`, `localhost:4318`, `[::1]:4317`, `http://127.0.0.1:4318`."""
    url = urlsplit(endpoint if "//" in endpoint else "//" + endpoint)
    host = url.hostname
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OtelcolExampleTest(unittest.TestCase):
    """Structural checks only: there is no collector binary to run here."""

    def setUp(self):
        self.cfg = load_yaml(OTELCOL)
        self.pipelines = self.cfg["service"]["pipelines"]

    def test_says_it_is_checked_structurally(self):
        self.assertIn("structurally", OTELCOL.read_text())

    def test_traces_pipeline(self):
        self.assertIn("traces", self.pipelines)
        traces = self.pipelines["traces"]
        self.assertIn("otlp", traces["receivers"])
        kinds = {p.split("/")[0] for p in traces["processors"]}
        self.assertTrue(kinds & {"probabilistic_sampler", "tail_sampling"}, traces["processors"])

    def test_pipeline_components_are_defined(self):
        for name, pipeline in self.pipelines.items():
            for section in ("receivers", "processors", "exporters"):
                for component in pipeline.get(section) or []:
                    with self.subTest(pipeline=name, component=component):
                        self.assertIn(component, self.cfg.get(section) or {})
            self.assertTrue(pipeline.get("receivers"), name)
            self.assertTrue(pipeline.get("exporters"), name)
        for ext in self.cfg["service"].get("extensions") or []:
            self.assertIn(ext, self.cfg.get("extensions") or {})

    def test_every_defined_component_is_used(self):
        used = {
            (section, c)
            for p in self.pipelines.values()
            for section in ("receivers", "processors", "exporters")
            for c in p.get(section) or []
        }
        for section in ("receivers", "processors", "exporters"):
            for c in self.cfg.get(section) or {}:
                self.assertIn((section, c), used, f"{section}.{c} is defined but unused")

    def test_processor_order(self):
        for name, pipeline in self.pipelines.items():
            procs = [p.split("/")[0] for p in pipeline.get("processors") or []]
            with self.subTest(pipeline=name):
                self.assertGreaterEqual(len(procs), 2, procs)
                self.assertEqual(procs[0], "memory_limiter", procs)
                self.assertEqual(procs[-1], "batch", procs)

    def test_memory_limiter_has_a_limit(self):
        ml = self.cfg["processors"]["memory_limiter"]
        self.assertIn("check_interval", ml)
        self.assertTrue({"limit_mib", "limit_percentage"} & ml.keys(), ml)

    def test_endpoints_are_loopback(self):
        otlp = self.cfg["receivers"]["otlp"]["protocols"]
        self.assertEqual(otlp["grpc"]["endpoint"], "127.0.0.1:4317")
        self.assertEqual(otlp["http"]["endpoint"], "127.0.0.1:4318")
        found = []

        def visit(node, where):
            if isinstance(node, dict):
                for k, v in node.items():
                    if k in ("endpoint", "address") and isinstance(v, str):
                        found.append(where + "." + k)
                        self.assertTrue(is_loopback(v), f"{where}.{k}={v} is not loopback")
                    visit(v, f"{where}.{k}")
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    visit(v, f"{where}[{i}]")

        visit(self.cfg, "config")
        self.assertGreaterEqual(len(found), 3, found)

    def test_is_loopback(self):
        for ok in ("127.0.0.1:4317", "localhost:4318", "[::1]:4317", "http://127.0.0.1:4318"):
            self.assertTrue(is_loopback(ok), ok)
        for bad in ("0.0.0.0:4317", "collector.example:4317", "https://10.0.0.1:4318", ":4317"):
            self.assertFalse(is_loopback(bad), bad)


if __name__ == "__main__":
    unittest.main()
