"""The runbooks in docs/runbooks/ against the alerts that link to them.

Every alert's runbook_url must land on a heading of the file it names (GitHub
anchors), every alert has a section of its own, the procedures the alerts
refer to exist, relative links resolve, and the routes, metrics and settings
the runbooks name exist in docs/api.md, docs/metrics.md and
docs/configuration.md.
"""

from __future__ import annotations

import re
import unittest
from pathlib import Path

from tests.ops.common import ALERTS, DOCS, REPO, load_yaml

RUNBOOKS = DOCS / "runbooks"
RULES = ALERTS / "forgeline.rules.yml"
BLOB_PREFIX = "https://github.com/forgeline/forgeline/blob/main/"

# Procedures the alerts point to, besides the per-alert sections.
REQUIRED_SECTIONS = {
    "reviewer operations": "reviewer-operations",
    "queue remediation": "queue-remediation-retries-and-dead-letter",
    "streaming validation": "streaming-validation",
    "staging k6 smoke": "staging-k6-smoke",
    "configuration and secret upgrade matrix": "configuration-and-secret-upgrade-matrix",
}
# What each alert section says.
ALERT_SECTION_PARTS = ("**Meaning.**", "**Impact.**", "**Diagnose.**", "**Mitigate.**")


def slugify(heading: str) -> str:
    """GitHub's anchor for a heading: lower-case, punctuation other than - and _
    removed, spaces turned into hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def headings(path: Path) -> list[tuple[int, str]]:
    """(level, text) of every ATX heading outside fenced code blocks."""
    out, fenced = [], False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        m = None if fenced else re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if m:
            out.append((len(m.group(1)), m.group(2)))
    return out


def anchors(path: Path) -> set[str]:
    """Every anchor GitHub generates for a file; repeated headings get -1, -2…"""
    seen: dict[str, int] = {}
    out = set()
    for _, text in headings(path):
        slug = slugify(text)
        if slug in seen:
            seen[slug] += 1
            out.add(f"{slug}-{seen[slug]}")
        else:
            seen[slug] = 0
            out.add(slug)
    return out


def prose(path: Path) -> str:
    return path.read_text()


def sections(path: Path, level: int = 2) -> dict[str, str]:
    """Heading text -> body, for the headings of `level` (outside code blocks)."""
    out: dict[str, str] = {}
    current, body, fenced = None, [], False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        m = None if fenced else re.match(r"^(#{1,6})\s+(.*?)\s*$", line)
        if m and len(m.group(1)) <= level:
            if current is not None:
                out[current] = "\n".join(body)
            current, body = (m.group(2) if len(m.group(1)) == level else None), []
            continue
        body.append(line)
    if current is not None:
        out[current] = "\n".join(body)
    return out


def alerts():
    return [r for g in load_yaml(RULES)["groups"] for r in g["rules"] if "alert" in r]


def runbook_files() -> list[Path]:
    return sorted(RUNBOOKS.glob("*.md"))


def route_templates() -> list[re.Pattern]:
    """The route templates of the permission matrix in docs/security.md."""
    text = (DOCS / "security.md").read_text()
    table = text.split("<!-- permission-matrix -->", 1)[1]
    routes = re.findall(r"^\| `(?:GET|POST|PUT|DELETE|PATCH) ([^`]+)` \|", table, re.M)
    assert routes, "no routes found in docs/security.md"
    return [re.compile(re.sub(r"\\\{[a-z_]+\\\}", r"[^/]+", re.escape(r))) for r in routes]


def contract_series() -> set[str]:
    text = (DOCS / "metrics.md").read_text().split("<!-- metrics-contract -->", 1)[1]
    text = text.split("\n## ", 1)[0]  # the contract table only, not the label tables after it
    names = set()
    for name, kind in re.findall(r"^\| `([a-z_]+)` \| (\w+) \|", text, re.M):
        names.add(name)
        if kind == "histogram":
            names |= {name + "_bucket", name + "_count", name + "_sum"}
    return names


class RunbookAnchorTest(unittest.TestCase):
    def test_the_anchor_rules_match_github(self):
        self.assertEqual(slugify("ForgelineTargetDown"), "forgelinetargetdown")
        self.assertEqual(slugify("GET /api/v1/dead-letter"), "get-apiv1dead-letter")
        self.assertEqual(slugify("POST /api/v1/queues/{queue}/lease"), "post-apiv1queuesqueuelease")
        self.assertEqual(slugify("Queue remediation: retries and dead-letter"),
                         "queue-remediation-retries-and-dead-letter")
        self.assertEqual(slugify("The envelope: `forgeline.task-event.v1`"), "the-envelope-forgelinetask-eventv1")

    def test_every_runbook_url_resolves_to_a_heading(self):
        for a in alerts():
            url = a["annotations"]["runbook_url"]
            with self.subTest(alert=a["alert"]):
                self.assertTrue(url.startswith(BLOB_PREFIX), url)
                path, _, anchor = url[len(BLOB_PREFIX):].partition("#")
                target = REPO / path
                self.assertTrue(target.is_file(), f"{url}: no file {path}")
                self.assertTrue(anchor, f"{url}: no anchor")
                self.assertIn(anchor, anchors(target), f"{url}: no heading with anchor #{anchor} in {path}")

    def test_every_alert_has_its_own_section(self):
        for a in alerts():
            url = a["annotations"]["runbook_url"]
            target = REPO / url[len(BLOB_PREFIX):].partition("#")[0]
            with self.subTest(alert=a["alert"]):
                body = sections(target).get(a["alert"])
                self.assertIsNotNone(body, f"no '## {a['alert']}' section in {target.relative_to(REPO)}")
                for part in ALERT_SECTION_PARTS:
                    self.assertIn(part, body, f"the section of {a['alert']} has no {part}")

    def test_no_section_describes_an_alert_that_does_not_exist(self):
        names = {a["alert"] for a in alerts()}
        for path in runbook_files():
            for title in sections(path):
                if title.startswith("Forgeline"):
                    self.assertIn(title, names, f"{path.name}: section for unknown alert {title}")

    def test_the_procedures_have_sections(self):
        found = set()
        for path in runbook_files():
            found |= anchors(path)
        for what, anchor in REQUIRED_SECTIONS.items():
            self.assertIn(anchor, found, f"no runbook section for {what} (#{anchor})")


class RunbookLinkTest(unittest.TestCase):
    LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")

    def links(self, path: Path):
        fenced = False
        for line in path.read_text().splitlines():
            if line.lstrip().startswith(("```", "~~~")):
                fenced = not fenced
                continue
            if not fenced:
                yield from self.LINK.findall(line)

    def test_runbooks_exist(self):
        self.assertTrue(runbook_files(), f"no markdown files in {RUNBOOKS}")

    def test_relative_links_point_at_existing_files_and_anchors(self):
        for path in runbook_files():
            for link in self.links(path):
                if re.match(r"^[a-z][a-z0-9+.-]*:", link):
                    continue  # http:, https:, mailto:
                with self.subTest(file=path.name, link=link):
                    target, _, anchor = link.partition("#")
                    file = (path.parent / target).resolve() if target else path
                    self.assertTrue(file.exists(), f"{link}: {file} does not exist")
                    if anchor and file.suffix == ".md":
                        self.assertIn(anchor, anchors(file), f"{link}: no heading #{anchor} in {file.name}")


class RunbookFactsTest(unittest.TestCase):
    """The runbooks name only routes, metrics and settings that exist."""

    def test_routes_exist(self):
        templates = route_templates()
        extra = [re.compile(r"/health/(live|startup|ready)"), re.compile(r"/metrics")]
        for path in runbook_files():
            for route in re.findall(r"(?<![\w.])(/api/v1/[A-Za-z0-9_{}$\-/]*|/health/[a-z]+)", prose(path)):
                route = route.rstrip("/")
                if route == "/api/v1":
                    continue  # the API prefix (route=~"/api/v1/.*"), not a route
                with self.subTest(file=path.name, route=route):
                    self.assertTrue(any(t.fullmatch(route) for t in templates + extra),
                                    f"{route} is no route of docs/security.md's permission matrix")

    def test_metrics_exist(self):
        series = contract_series()
        records = {r["record"] for g in load_yaml(RULES)["groups"] for r in g["rules"] if "record" in r}
        for path in runbook_files():
            text = prose(path)
            for name in set(re.findall(r"(?<![\w:])(forgeline_[a-z0-9_]+)(?![\w:])", text)):
                with self.subTest(file=path.name, metric=name):
                    self.assertIn(name, series, "not a metric of docs/metrics.md")
            for name in set(re.findall(r"(?<![\w:])([a-z_]+:[a-z0-9_]+:[a-z0-9_]+)(?![\w:])", text)):
                with self.subTest(file=path.name, recording_rule=name):
                    self.assertIn(name, records, "not a recording rule of alerts/forgeline.rules.yml")

    def test_settings_exist(self):
        config = (DOCS / "configuration.md").read_text()
        sections = "server|store|tasks|queue|executor|steps|events|log|review|auth|ratelimit|audit|metrics"
        keys = re.compile(rf"`((?:{sections})\.[a-z_<>.A-Z0-9]+)`")
        for path in runbook_files():
            for key in set(keys.findall(prose(path))):
                if re.search(r"\.(md|json|yml|yaml|js|toml)$", key):
                    continue  # a file name, not a setting
                with self.subTest(file=path.name, setting=key):
                    parts = key.split(".")
                    prefixes = [".".join(parts[:i]) for i in range(len(parts), 1, -1)]
                    generic = re.sub(r"<[a-z]+>", "submit", key)  # ratelimit.<class>.rate
                    self.assertTrue(any(f"`{p}" in config for p in prefixes + [generic]),
                                    f"{key} is not in docs/configuration.md")


if __name__ == "__main__":
    unittest.main()
