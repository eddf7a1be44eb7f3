"""The Prometheus rules in alerts/forgeline.rules.yml and their promtool tests.

promtool (Prometheus 2.42) checks the syntax and runs the unit tests in
alerts/tests/. On top of that this module holds the conventions every rule
follows (names, labels, annotations, Prometheus 2.42 syntax), checks that the
rules use only metrics of the contract in docs/metrics.md, and that every rule
is covered: each alert by a test case where it fires and one where it does not
(yet), each recording rule by a promql_expr_test with an expected value.
"""

from __future__ import annotations

import re
import unittest
from pathlib import Path

from tests.ops.common import ALERTS, DOCS, load_yaml, run, tool

RULES = ALERTS / "forgeline.rules.yml"
TESTS_DIR = ALERTS / "tests"

SEVERITIES = {"critical", "warning", "info"}
TEAMS = {"ops", "review"}
ANNOTATIONS = {"summary", "description", "runbook_url", "dashboard_url"}
RUNBOOK_PREFIX = "https://github.com/forgeline/forgeline/blob/main/docs/runbooks/alerts.md#"
DASHBOARD_PREFIX = "http://localhost:3000/d/"
DASHBOARD_UIDS = {"forgeline-overview", "forgeline-queue", "forgeline-reviews", "forgeline-slo"}
ALERT_NAME = re.compile(r"^Forgeline(?:[A-Z][a-z0-9]*)+$")
RECORD_NAME = re.compile(r"^[a-z_]+:[a-z0-9_]+:[a-z0-9_]+$")
# What Prometheus 2.42 accepts in a rule group; `labels` and `query_offset`
# came in later versions and make 2.42 refuse the whole file.
GROUP_KEYS = {"name", "interval", "limit", "rules"}
# Series that exist without being in the forgeline contract.
PROMETHEUS_SERIES = {"up"}


def load_rules():
    """All rules of the rules file, as (group name, rule) pairs."""
    doc = load_yaml(RULES)
    return [(g["name"], r) for g in doc["groups"] for r in g["rules"]]


def alerts():
    return [r for _, r in load_rules() if "alert" in r]


def recording_rules():
    return [r for _, r in load_rules() if "record" in r]


def test_files() -> list[Path]:
    return sorted(TESTS_DIR.glob("*.yml"))


def contract_metrics() -> dict[str, set[str]]:
    """Series names of docs/metrics.md's contract table, with their labels.

    A histogram contributes its _bucket (with `le`), _count and _sum series."""
    text = (DOCS / "metrics.md").read_text()
    table = text.split("<!-- metrics-contract -->", 1)[1]
    metrics: dict[str, set[str]] = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            if metrics and not line.startswith("|"):
                break  # the end of the table
            continue
        name = cells[0].strip("`")
        labels = set(re.findall(r"`([a-z_]+)`", cells[2]))
        if cells[1] == "histogram":
            metrics[name + "_bucket"] = labels | {"le"}
            metrics[name + "_count"] = labels
            metrics[name + "_sum"] = labels
        else:
            metrics[name] = labels
    return metrics


def selectors(expr: str):
    """(metric name, label names matched) for every selector in a PromQL
    expression: identifiers that are not functions, keywords or label names
    of a grouping clause."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # empty every string literal
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    out = []
    for m in re.finditer(r"(?<![\w:.])([a-zA-Z_:][\w:]*)\s*(\{[^}]*\})?\s*(\()?", expr):
        name, braces, call = m.groups()
        if call or name in KEYWORDS:
            continue
        labels = set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", braces or ""))
        out.append((name, labels))
    return out


KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "Inf", "NaN"}


class RuleFileTest(unittest.TestCase):
    def test_promtool_check_rules_accepts_the_rules(self):
        result = run([tool("promtool"), "check", "rules", str(RULES)])
        self.assertEqual(result.returncode, 0, f"promtool check rules failed:\n{result.stdout}\n{result.stderr}")
        self.assertIn("SUCCESS", result.stdout)

    def test_promtool_unit_tests_pass(self):
        files = test_files()
        self.assertTrue(files, f"no promtool test files in {TESTS_DIR}")
        result = run([tool("promtool"), "test", "rules", *map(str, files)], timeout=600)
        self.assertEqual(result.returncode, 0, f"promtool test rules failed:\n{result.stdout}\n{result.stderr}")
        self.assertNotIn("FAILED", result.stdout + result.stderr)

    def test_groups_use_only_prometheus_2_42_syntax(self):
        doc = load_yaml(RULES)
        self.assertEqual(set(doc), {"groups"})
        names = [g["name"] for g in doc["groups"]]
        self.assertEqual(len(names), len(set(names)), f"duplicate group names: {names}")
        for g in doc["groups"]:
            extra = set(g) - GROUP_KEYS
            self.assertFalse(extra, f"group {g['name']} has keys Prometheus 2.42 refuses: {extra}")
            for r in g["rules"]:
                kind = "alert" if "alert" in r else "record"
                allowed = {"alert", "expr", "for", "labels", "annotations"} if kind == "alert" else {"record", "expr", "labels"}
                self.assertFalse(set(r) - allowed, f"{r.get(kind)}: unexpected keys {set(r) - allowed}")

    def test_alert_names_labels_and_annotations_follow_the_conventions(self):
        names = [a["alert"] for a in alerts()]
        self.assertEqual(len(names), len(set(names)), "duplicate alert names")
        for a in alerts():
            name = a["alert"]
            with self.subTest(alert=name):
                self.assertRegex(name, ALERT_NAME, "alert names are CamelCase and start with Forgeline")
                labels = a.get("labels") or {}
                self.assertIn(labels.get("severity"), SEVERITIES)
                self.assertIn(labels.get("team"), TEAMS)
                # review alerts go to the reviewers, everything else to ops
                want_team = "review" if "forgeline_review_" in a["expr"] else "ops"
                self.assertEqual(labels["team"], want_team)
                ann = a.get("annotations") or {}
                self.assertEqual(set(ann), ANNOTATIONS, "exactly summary, description, runbook_url, dashboard_url")
                for key in ("summary", "description"):
                    self.assertTrue(str(ann[key]).strip(), f"{key} is empty")
                # the description names what fired, and how much, from the alert's own data
                self.assertIn("{{ $labels.", ann["description"])
                if "absent(" not in a["expr"] and "== 0" not in a["expr"]:
                    self.assertIn("{{ $value", ann["description"], "the description gives the value")
                self.assertEqual(ann["runbook_url"], RUNBOOK_PREFIX + name.lower())
                self.assertTrue(ann["dashboard_url"].startswith(DASHBOARD_PREFIX), ann["dashboard_url"])
                self.assertIn(ann["dashboard_url"][len(DASHBOARD_PREFIX):], DASHBOARD_UIDS)

    def test_recording_rule_names_follow_level_metric_operations(self):
        names = [r["record"] for r in recording_rules()]
        self.assertEqual(len(names), len(set(names)), "duplicate recording rule names")
        for name in names:
            self.assertRegex(name, RECORD_NAME)
        # the level names the labels the rule keeps: job:… keeps job only
        for r in recording_rules():
            level = r["record"].split(":")[0]
            kept = set(level.split("_"))
            grouped = set()
            for by in re.findall(r"\bby \(([^)]*)\)", r["expr"]):
                grouped |= {x.strip() for x in by.split(",")} - {"le"}
            self.assertEqual(grouped, kept, f"{r['record']}: level {level} but aggregates by {grouped}")

    def test_rules_use_only_metrics_of_the_contract(self):
        contract = contract_metrics()
        self.assertIn("forgeline_http_requests_total", contract)
        records = {r["record"] for r in recording_rules()}
        for _, r in load_rules():
            for name, labels in selectors(r["expr"]):
                if name in records:
                    continue
                with self.subTest(rule=r.get("alert") or r.get("record"), metric=name):
                    if name in PROMETHEUS_SERIES:
                        continue
                    self.assertIn(name, contract, "not a metric of docs/metrics.md")
                    unknown = labels - contract[name] - {"job", "instance"}
                    self.assertFalse(unknown, f"{name} has no label {unknown}")
            # grouping labels must exist on the metrics the rule reads
            raw = [n for n, _ in selectors(r["expr"]) if n in contract]
            if raw:
                available = set().union(*(contract[n] for n in raw)) | {"job", "instance", "le"}
                for clause in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", r["expr"]):
                    grouped = {x.strip() for x in clause.split(",") if x.strip()}
                    with self.subTest(rule=r.get("alert") or r.get("record"), grouping=clause):
                        self.assertFalse(grouped - available, f"no such label on {raw}")


class CoverageTest(unittest.TestCase):
    """Every alert has a firing case and a not-firing case; every recording
    rule has a promql_expr_test with an expected value."""

    @classmethod
    def setUpClass(cls):
        cls.docs = {p: load_yaml(p) for p in test_files()}

    def test_each_test_file_tests_the_rules_file_and_sets_its_intervals(self):
        self.assertTrue(self.docs)
        for path, doc in self.docs.items():
            with self.subTest(file=path.name):
                files = [(path.parent / f).resolve() for f in doc.get("rule_files", [])]
                self.assertEqual(files, [RULES.resolve()])
                self.assertIn("evaluation_interval", doc)
                for group in doc.get("tests", []):
                    self.assertIn("interval", group, f"test group {group.get('name')!r} sets no interval")

    def alert_cases(self):
        """alertname -> list of (file, eval_time, exp_alerts)."""
        cases: dict[str, list] = {}
        for path, doc in self.docs.items():
            for group in doc.get("tests", []):
                for case in group.get("alert_rule_test") or []:
                    cases.setdefault(case["alertname"], []).append(
                        (path.name, case.get("eval_time"), case.get("exp_alerts") or []))
        return cases

    def test_every_alert_has_a_firing_and_a_not_firing_case(self):
        cases = self.alert_cases()
        missing = []
        for a in alerts():
            name = a["alert"]
            mine = cases.get(name, [])
            if not any(exp for _, _, exp in mine):
                missing.append(f"{name}: no case where it fires")
            if not any(not exp for _, _, exp in mine):
                missing.append(f"{name}: no case where it does not fire (yet)")
        self.assertFalse(missing, "uncovered alerts:\n" + "\n".join(missing))

    def test_tests_name_only_existing_alerts(self):
        known = {a["alert"] for a in alerts()}
        self.assertFalse(set(self.alert_cases()) - known, "tests for alerts that do not exist")

    def test_firing_cases_expect_the_full_labels_and_rendered_annotations(self):
        by_name = {a["alert"]: a for a in alerts()}
        for name, cases in self.alert_cases().items():
            rule = by_name.get(name)
            if rule is None:
                continue
            for file, t, exp in cases:
                for alert in exp:
                    with self.subTest(alert=name, file=file, eval_time=t):
                        labels = alert.get("exp_labels") or {}
                        for k, v in rule["labels"].items():
                            self.assertEqual(labels.get(k), v, f"exp_labels lacks {k}={v}")
                        if "absent(" not in rule["expr"]:
                            self.assertIn("job", labels)
                        ann = alert.get("exp_annotations") or {}
                        self.assertEqual(set(ann), set(rule["annotations"]), "every annotation is expected")
                        for k, v in ann.items():
                            self.assertNotIn("{{", v, f"{k} is not rendered")
                        self.assertEqual(ann["runbook_url"], rule["annotations"]["runbook_url"])
                        self.assertEqual(ann["dashboard_url"], rule["annotations"]["dashboard_url"])

    def test_every_recording_rule_has_an_expression_test_with_a_value(self):
        exprs = []
        for doc in self.docs.values():
            for group in doc.get("tests", []):
                for t in group.get("promql_expr_test") or []:
                    if t.get("exp_samples"):
                        exprs.append(t["expr"])
        missing = []
        for r in recording_rules():
            pattern = re.compile(r"(?<![\w:])" + re.escape(r["record"]) + r"(?![\w:])")
            if not any(pattern.search(e) for e in exprs):
                missing.append(r["record"])
        self.assertFalse(missing, "recording rules without a promql_expr_test:\n" + "\n".join(missing))


if __name__ == "__main__":
    unittest.main()
