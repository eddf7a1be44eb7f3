"""alerts/alertmanager.yml, checked by the real Alertmanager 0.25 tools.

- `amtool check-config` accepts the shipped file;
- every row of alerts/alertmanager-routes.tsv resolves to exactly its
  receivers (`amtool config routes test --verify.receivers`), and a wrong
  expectation makes amtool fail, so the table can catch a regression;
- a real Alertmanager on 127.0.0.1, running a copy of the shipped config in
  which only the secret files, the notification URLs and the timings are
  replaced, groups, routes and inhibits alerts posted through the v2 API the
  way the shipped tree says, as seen by a local receiver standing in for Slack
  and PagerDuty.
"""

from __future__ import annotations

import copy
import re
import tempfile
import time
import unittest
from pathlib import Path

from tests.ops.common import (
    ALERTS,
    Process,
    Receiver,
    free_port,
    http_json,
    load_yaml,
    run,
    tool,
    wait_until,
)

CONFIG = ALERTS / "alertmanager.yml"
ROUTES = ALERTS / "alertmanager-routes.tsv"
RULES = ALERTS / "forgeline.rules.yml"
SECRET_DIR = "/etc/forgeline/alertmanager/"

# The receiver integrations this test knows how to point at the local
# receiver. Any other integration added to the shipped config fails the live
# test instead of being contacted for real.
KNOWN_INTEGRATIONS = {"slack_configs", "pagerduty_configs"}

# Secrets that must never be inlined: each has a *_file twin in 0.25.
INLINE_SECRETS = {"api_url", "routing_key", "service_key", "slack_api_url", "pagerduty_url"}


def routing_table() -> list[tuple[list[str], list[str], str]]:
    """Rows of alerts/alertmanager-routes.tsv: (receivers, labels, why)."""
    rows = []
    for n, line in enumerate(ROUTES.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) != 3:
            raise AssertionError(f"{ROUTES.name}:{n}: want 3 tab-separated columns, got {cols!r}")
        receivers = [r for r in cols[0].split(",") if r]
        labels = cols[1].split()
        for label in labels:
            if "=" not in label:
                raise AssertionError(f"{ROUTES.name}:{n}: label {label!r} is not name=value")
        rows.append((receivers, labels, cols[2]))
    return rows


def amtool_routes_test(receivers: list[str], labels: list[str], config: Path = CONFIG):
    return run(
        [
            tool("amtool"),
            "config",
            "routes",
            "test",
            f"--config.file={config}",
            f"--verify.receivers={','.join(receivers)}",
            *labels,
        ],
        timeout=30,
    )


def expected_receiver(labels: dict) -> str:
    """Where the routing contract (DESIGN.md §6) sends an alert."""
    severity, team = labels.get("severity"), labels.get("team")
    if severity == "critical":
        return "oncall-pager"
    if severity == "warning":
        return "review-slack" if team == "review" else "ops-slack"
    if severity == "info":
        return "null"
    return "ops-slack"


def shipped_alerts() -> list[dict]:
    """The alerts of alerts/forgeline.rules.yml as label sets (static labels + alertname)."""
    if not RULES.is_file():
        raise AssertionError(f"{RULES.relative_to(ALERTS.parent)} is missing")
    out = []
    for group in load_yaml(RULES)["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                out.append({"alertname": rule["alert"], **(rule.get("labels") or {})})
    return out


MATCHER = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"(.*)"\s*$')


def matches(matchers: list[str], labels: dict) -> bool:
    """Alertmanager matcher semantics (anchored regexes, missing label = "")."""
    for m in matchers:
        found = MATCHER.match(m)
        if found is None:
            raise AssertionError(f"cannot parse matcher {m!r}")
        name, op, value = found.groups()
        have = labels.get(name, "")
        ok = {
            "=": have == value,
            "!=": have != value,
            "=~": re.fullmatch(value, have) is not None,
            "!~": re.fullmatch(value, have) is None,
        }[op]
        if not ok:
            return False
    return True


def walk_routes(route: dict):
    yield route
    for child in route.get("routes") or []:
        yield from walk_routes(child)


class AlertmanagerConfigTest(unittest.TestCase):
    def test_check_config(self):
        r = run([tool("amtool"), "check-config", str(CONFIG)], timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("SUCCESS", r.stdout)

    def test_secrets_only_through_files(self):
        cfg = load_yaml(CONFIG)

        def visit(node, where):
            if isinstance(node, dict):
                for k, v in node.items():
                    self.assertNotIn(k, INLINE_SECRETS, f"inline secret {where}.{k}: use {k}_file")
                    if k.endswith("_file") and isinstance(v, str):
                        self.assertTrue(
                            v.startswith(SECRET_DIR), f"{where}.{k}={v} is not under {SECRET_DIR}"
                        )
                    visit(v, f"{where}.{k}")
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    visit(v, f"{where}[{i}]")

        visit(cfg, "config")
        # Every receiver that sends something reads its secret from a file.
        for rcv in cfg["receivers"]:
            for c in rcv.get("slack_configs") or []:
                self.assertIn("api_url_file", c, rcv["name"])
            for c in rcv.get("pagerduty_configs") or []:
                self.assertTrue({"routing_key_file", "service_key_file"} & c.keys(), rcv["name"])

    def test_routing_table(self):
        rows = routing_table()
        self.assertGreaterEqual(len(rows), 6)
        cfg = load_yaml(CONFIG)
        declared = {r["name"] for r in cfg["receivers"]}
        reached = set()
        for receivers, labels, why in rows:
            with self.subTest(labels=" ".join(labels), want=receivers):
                self.assertTrue(set(receivers) <= declared, f"unknown receiver in {receivers}")
                r = amtool_routes_test(receivers, labels)
                self.assertEqual(
                    r.returncode, 0, f"{why}: want {receivers}, amtool said: {r.stdout}{r.stderr}"
                )
                self.assertEqual(r.stdout.split(), [",".join(receivers)], r.stdout)
                reached.update(receivers)
        # The table exercises every receiver the config declares.
        self.assertEqual(reached, declared)

    def test_wrong_expectation_fails(self):
        # The table is only worth something if amtool rejects a wrong answer.
        for receivers, labels, _why in routing_table():
            wrong = "review-slack" if receivers != ["review-slack"] else "ops-slack"
            with self.subTest(labels=" ".join(labels), wrong=wrong):
                r = amtool_routes_test([wrong], labels)
                self.assertNotEqual(r.returncode, 0, r.stdout + r.stderr)
                self.assertIn("did not match", r.stdout + r.stderr)

    def test_every_shipped_alert_reaches_its_receiver(self):
        # Each alert of alerts/forgeline.rules.yml, with its static labels,
        # lands where its severity and team say.
        alerts = shipped_alerts()
        self.assertTrue(alerts)
        for labels in alerts:
            want = expected_receiver(labels)
            args = [f"{k}={v}" for k, v in labels.items()] + ["job=forgeline"]
            with self.subTest(alert=labels["alertname"], want=want):
                r = amtool_routes_test([want], args)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_inhibit_rules_pair_shipped_alerts(self):
        # An inhibit rule whose matchers no shipped alert satisfies would be
        # dead: e.g. after a rename in alerts/forgeline.rules.yml.
        alerts = shipped_alerts()
        cfg = load_yaml(CONFIG)
        self.assertTrue(cfg.get("inhibit_rules"))
        for i, rule in enumerate(cfg["inhibit_rules"]):
            self.assertFalse({"source_match", "target_match", "source_match_re",
                              "target_match_re"} & rule.keys(), "use *_matchers")
            sources = [a for a in alerts if matches(rule["source_matchers"], a)]
            targets = [a for a in alerts if matches(rule["target_matchers"], a)]
            with self.subTest(rule=i):
                self.assertTrue(sources, f"inhibit rule {i}: no shipped alert is a source")
                self.assertTrue(targets, f"inhibit rule {i}: no shipped alert is a target")
                # Only criticals inhibit, only warnings are inhibited.
                self.assertEqual({a["severity"] for a in sources}, {"critical"})
                self.assertEqual({a["severity"] for a in targets}, {"warning"})
                # Inhibition needs the same job on both sides.
                self.assertIn("job", rule.get("equal", []))

    def test_burn_rate_pages_inhibit_their_own_tickets(self):
        # The burn-rate alerts are named per window; the SLO rules must pair
        # every page of an SLO with every ticket of the same SLO, and no other.
        cfg = load_yaml(CONFIG)
        alerts = shipped_alerts()
        burn = [a for a in alerts if "BurnRate" in a["alertname"]]
        self.assertTrue(burn)

        def slo(a):
            return a["alertname"].split("BurnRate")[0]

        for page in (a for a in burn if a["severity"] == "critical"):
            for ticket in (a for a in burn if a["severity"] == "warning"):
                inhibits = any(
                    matches(r["source_matchers"], page)
                    and matches(r["target_matchers"], ticket)
                    and all(page.get(l) == ticket.get(l) for l in r.get("equal", []) if l != "job")
                    for r in cfg["inhibit_rules"]
                )
                with self.subTest(page=page["alertname"], ticket=ticket["alertname"]):
                    self.assertEqual(inhibits, slo(page) == slo(ticket))

    def test_timings(self):
        # Pages repeat sooner than tickets; nothing waits longer than a minute
        # before its first notification.
        cfg = load_yaml(CONFIG)
        root = cfg["route"]
        self.assertEqual(root["group_by"][:2], ["alertname", "job"])
        pager = [r for r in root["routes"] if r["receiver"] == "oncall-pager"]
        self.assertEqual(len(pager), 1)

        def seconds(s: str) -> int:
            units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
            return int(s[:-1]) * units[s[-1]]

        self.assertLess(seconds(pager[0]["repeat_interval"]), seconds(root["repeat_interval"]))
        self.assertLess(seconds(pager[0]["group_wait"]), seconds(root["group_wait"]))
        self.assertLessEqual(seconds(root["group_wait"]), 60)


def make_test_config(shipped: dict, receiver_url: str, secrets: Path) -> tuple[dict, dict]:
    """The shipped config with only secrets, URLs and timings replaced.

    Returns (config, {receiver name: local URL path}); each receiver gets its
    own path so the test can tell which one Alertmanager notified.
    """
    cfg = copy.deepcopy(shipped)
    paths = {}
    for rcv in cfg["receivers"]:
        name = rcv["name"]
        integrations = {k for k in rcv if k.endswith("_configs")}
        unknown = integrations - KNOWN_INTEGRATIONS
        if unknown:
            raise AssertionError(f"receiver {name}: the test cannot redirect {sorted(unknown)}")
        for i, c in enumerate(rcv.get("slack_configs") or []):
            path = f"/slack/{name}/{i}"
            f = secrets / f"{name}-{i}-slack-url"
            f.write_text(receiver_url + path)
            c["api_url_file"] = str(f)
            paths[name] = path
        for i, c in enumerate(rcv.get("pagerduty_configs") or []):
            path = f"/pagerduty/{name}/{i}"
            f = secrets / f"{name}-{i}-routing-key"
            f.write_text(f"test-routing-key-{name}")
            c.pop("service_key_file", None)
            c["routing_key_file"] = str(f)
            c["url"] = receiver_url + path
            paths[name] = path
    # Short timings so the test takes seconds; repeat_interval stays as
    # shipped (hours), so nothing repeats during the test.
    for route in walk_routes(cfg["route"]):
        if route is cfg["route"] or "group_wait" in route:
            route["group_wait"] = "1s"
        if route is cfg["route"] or "group_interval" in route:
            route["group_interval"] = "1s"
    return cfg, paths


def alert(name: str, summary: str, **labels) -> dict:
    return {
        "labels": {"alertname": name, **labels},
        "annotations": {
            "summary": summary,
            "description": f"{summary} (posted by test_alertmanager)",
            "runbook_url": "https://github.com/forgeline/forgeline/blob/main/docs/runbooks/alerts.md#"
            + name.lower(),
            "dashboard_url": "http://localhost:3000/d/forgeline-overview",
        },
        "generatorURL": "http://127.0.0.1:9090/graph",
    }


class AlertmanagerLiveTest(unittest.TestCase):
    """A real Alertmanager on loopback, notifying a local receiver."""

    def test_grouping_routing_inhibition(self):
        import yaml

        binary = tool("prometheus-alertmanager")
        shipped = load_yaml(CONFIG)
        started = time.monotonic()
        with tempfile.TemporaryDirectory() as tmp, Receiver() as rx:
            tmp = Path(tmp)
            secrets = tmp / "secrets"
            secrets.mkdir()
            cfg, paths = make_test_config(shipped, rx.url, secrets)
            self.assertEqual(set(paths), {"oncall-pager", "review-slack", "ops-slack"})
            config = tmp / "alertmanager.yml"
            config.write_text(yaml.safe_dump(cfg, sort_keys=False))
            check = run([tool("amtool"), "check-config", str(config)], timeout=30)
            self.assertEqual(check.returncode, 0, check.stdout + check.stderr)

            port = free_port()
            api = f"http://127.0.0.1:{port}/api/v2"
            cmd = [
                binary,
                f"--config.file={config}",
                f"--storage.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                # Links in notifications point here instead of the host name.
                f"--web.external-url=http://127.0.0.1:{port}",
                "--cluster.listen-address=",  # no gossip: a single local instance
                "--log.level=debug",
            ]
            with Process("alertmanager", cmd, tmp) as am:
                try:
                    self._exercise(am, api, rx, paths)
                except BaseException:
                    print("\n--- alertmanager log ---\n" + am.log(80))
                    raise
        self.assertLess(time.monotonic() - started, 60)

    def _exercise(self, am: Process, api: str, rx: Receiver, paths: dict):
        base = api.rsplit("/api/v2", 1)[0]
        wait_until(
            "alertmanager ready",
            lambda: am.alive() and http_json("GET", base + "/-/ready")[0] == 200,
            timeout=20,
        )
        pager, review, ops = paths["oncall-pager"], paths["review-slack"], paths["ops-slack"]

        def post(alerts):
            status, body = http_json("POST", api + "/alerts", alerts)
            self.assertEqual(status, 200, body)

        # Phase 1: grouping and routing, and the criticals that phase 2's
        # warnings are inhibited by.
        post(
            [
                # Same alertname/job/queue: one notification with both.
                alert("ForgelineTestQueueBacklog", "backlog on i1", severity="warning",
                      team="ops", job="forgeline", queue="build", instance="i1"),
                alert("ForgelineTestQueueBacklog", "backlog on i2", severity="warning",
                      team="ops", job="forgeline", queue="build", instance="i2"),
                # Another alertname, same job and queue: its own notification.
                alert("ForgelineTestQueueStalled", "queue stalled", severity="warning",
                      team="ops", job="forgeline", queue="build"),
                alert("ForgelineTestReviewBacklog", "review backlog", severity="warning",
                      team="review", job="forgeline", queue="build"),
                alert("ForgelineTestBudgetBurn", "budget burning fast", severity="critical",
                      team="ops", job="forgeline"),
                # The shipped burn-rate names (alerts/forgeline.rules.yml).
                alert("ForgelineAvailabilityBurnRate1h", "availability budget burning fast",
                      severity="critical", team="ops", job="forgeline"),
                alert("ForgelineTestInfo", "NEVER SENT info", severity="info",
                      team="ops", job="forgeline"),
            ]
        )
        wait_until(
            "phase 1 notifications",
            lambda: len(rx.received(pager)) >= 2
            and len(rx.received(review)) >= 1
            and len(rx.received(ops)) >= 2,
            timeout=20,
        )

        # Phase 2, once the criticals are known to be firing (they were sent).
        post(
            [
                # Same alertname and job as a firing critical: inhibited.
                alert("ForgelineTestBudgetBurn", "NEVER SENT same alertname", severity="warning",
                      team="ops", job="forgeline"),
                # Same alertname, another job: sent.
                alert("ForgelineTestBudgetBurn", "canary budget burning slowly",
                      severity="warning", team="ops", job="forgeline-canary"),
                # Availability ticket while the availability page fires: inhibited.
                alert("ForgelineAvailabilityBurnRate1d", "NEVER SENT availability ticket",
                      severity="warning", team="ops", job="forgeline"),
                # Availability ticket for another job: sent.
                alert("ForgelineAvailabilityBurnRate3d", "canary availability ticket",
                      severity="warning", team="ops", job="forgeline-canary"),
                # Another SLO's ticket is not inhibited by the availability page.
                alert("ForgelineQueueWaitBurnRate1d", "queue wait ticket",
                      severity="warning", team="ops", job="forgeline"),
            ]
        )
        wait_until("phase 2 notifications", lambda: len(rx.received(ops)) >= 5, timeout=20)
        # Give anything unexpected (an inhibited warning, the info alert, a
        # duplicate) time to show up: several group_wait/group_interval periods.
        time.sleep(4)

        # Routing: exactly two pages, one review message, five ops messages.
        self.assertEqual(len(rx.received(pager)), 2, rx.requests)
        self.assertEqual(len(rx.received(review)), 1, rx.requests)
        self.assertEqual(len(rx.received(ops)), 5, rx.requests)
        self.assertEqual(len(rx.requests), 8, [r["path"] for r in rx.requests])
        # Inhibited warnings and info alerts were sent nowhere.
        self.assertNotIn("NEVER SENT", repr(rx.requests))

        pages = {r["body"]["payload"]["class"]: r["body"] for r in rx.received(pager)}
        self.assertEqual(set(pages), {"ForgelineTestBudgetBurn", "ForgelineAvailabilityBurnRate1h"})
        for name, page in pages.items():
            self.assertEqual(page["routing_key"], "test-routing-key-oncall-pager")
            self.assertEqual(page["event_action"], "trigger")
            self.assertEqual(page["payload"]["severity"], "critical")
            self.assertEqual(page["payload"]["group"], "forgeline")
            self.assertIn(name, page["payload"]["summary"])
            self.assertIn(
                "https://github.com/forgeline/forgeline/blob/main/docs/runbooks/alerts.md#"
                + name.lower(),
                [link["href"] for link in page.get("links", [])],
            )

        def slack(path):
            out = {}
            for r in rx.received(path):
                body = r["body"]
                (att,) = body["attachments"]
                # "[FIRING:n] <alertname> (<job>[, queue <queue>])"
                out[att["title"].split("] ", 1)[1]] = (body.get("channel"), att["title"], att["text"])
            return out

        ((channel, title, text),) = slack(review).values()
        self.assertEqual(channel, "#forgeline-reviews")
        self.assertIn("ForgelineTestReviewBacklog", title)
        self.assertIn("review backlog", text)

        by_title = slack(ops)
        self.assertEqual(
            set(by_title),
            {
                "ForgelineTestQueueBacklog (forgeline, queue build)",
                "ForgelineTestQueueStalled (forgeline, queue build)",
                "ForgelineTestBudgetBurn (forgeline-canary)",
                "ForgelineAvailabilityBurnRate3d (forgeline-canary)",
                "ForgelineQueueWaitBurnRate1d (forgeline)",
            },
            by_title,
        )
        for channel, _title, _text in by_title.values():
            self.assertEqual(channel, "#forgeline-ops")
        # Grouping: both instances of the backlog alert in one message.
        _, title, text = by_title["ForgelineTestQueueBacklog (forgeline, queue build)"]
        self.assertTrue(title.startswith("[FIRING:2]"), title)
        self.assertIn("backlog on i1", text)
        self.assertIn("backlog on i2", text)
        self.assertIn("#forgelinetestqueuebacklog", text)  # the runbook link
        _, title, text = by_title["ForgelineTestQueueStalled (forgeline, queue build)"]
        self.assertTrue(title.startswith("[FIRING:1]"), title)
        _, title, text = by_title["ForgelineTestBudgetBurn (forgeline-canary)"]
        self.assertIn("canary budget burning slowly", text)

        # The API agrees: inhibited warnings are suppressed by their critical,
        # the others are active, each alert with the receiver it was routed to.
        status, alerts = http_json("GET", api + "/alerts")
        self.assertEqual(status, 200, alerts)

        def find(name, **labels):
            hits = [
                a for a in alerts
                if a["labels"]["alertname"] == name
                and all(a["labels"].get(k) == v for k, v in labels.items())
            ]
            self.assertEqual(len(hits), 1, (name, labels, alerts))
            return hits[0]

        def receivers(a):
            return [r["name"] for r in a["receivers"]]

        burn_page = find("ForgelineTestBudgetBurn", severity="critical")
        slo_page = find("ForgelineAvailabilityBurnRate1h")
        for inhibited, by in (
            (find("ForgelineTestBudgetBurn", severity="warning", job="forgeline"), burn_page),
            (find("ForgelineAvailabilityBurnRate1d"), slo_page),
        ):
            self.assertEqual(inhibited["status"]["state"], "suppressed", inhibited)
            self.assertEqual(inhibited["status"]["inhibitedBy"], [by["fingerprint"]], inhibited)
            self.assertEqual(receivers(inhibited), ["ops-slack"])
        for active, receiver in (
            (burn_page, "oncall-pager"),
            (slo_page, "oncall-pager"),
            (find("ForgelineTestBudgetBurn", severity="warning", job="forgeline-canary"), "ops-slack"),
            (find("ForgelineAvailabilityBurnRate3d"), "ops-slack"),
            (find("ForgelineQueueWaitBurnRate1d"), "ops-slack"),
            (find("ForgelineTestReviewBacklog"), "review-slack"),
            (find("ForgelineTestInfo"), "null"),
        ):
            self.assertEqual(active["status"]["state"], "active", active)
            self.assertEqual(active["status"]["inhibitedBy"], [], active)
            self.assertEqual(receivers(active), [receiver], active)
        self.assertTrue(am.alive(), am.log())

if __name__ == "__main__":
    unittest.main()
