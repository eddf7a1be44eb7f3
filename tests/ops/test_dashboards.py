"""Lints the Grafana dashboards in dashboards/ (classic JSON model, Grafana 10/11).

Every rule of grafana/dashboard-linter (lint/rule_*.go) is enforced on every
dashboard, none excluded, plus forgeline's own rules. Each rule is a function
in RULES below named after the upstream rule; where ours is stricter than
upstream the docstring says so.

Upstream rules (grafana/dashboard-linter):
  template-datasource-rule, template-job-rule, template-instance-rule,
  template-label-promql-rule, template-on-time-change-reload-rule (refresh 2),
  uneditable-dashboard (a.k.a. uneditable-dashboard-rule,
  template-uneditable-rule),
  panel-datasource-rule, panel-title-description-rule, panel-units-rule,
  panel-no-targets-rule, target-promql-rule, target-rate-interval-rule,
  target-job-rule, target-instance-rule, target-counter-agg-rule,
  target-logql-rule / target-logql-auto-rule (not applicable: Loki targets
  are not allowed, which is what the rule checks here).
forgeline rules:
  forgeline-dashboard-id-null, forgeline-dashboard-uid,
  forgeline-schema-version, forgeline-inputs-requires,
  forgeline-ds-input-placeholder, forgeline-alerts-annotation,
  forgeline-metrics-contract, forgeline-label-values,
  forgeline-grouping-labels, forgeline-histogram-quantile,
  forgeline-panel-layout, forgeline-variables, forgeline-slo-windows.

`promtool check rules` (Prometheus 2.42's own parser) also parses every
expression with the end-to-end test's substitutions (test_promtool_parses_...).

Run: python3 -m unittest tests.ops.test_dashboards -v
"""

from __future__ import annotations

import copy
import json
import re
import tempfile
import unittest
from dataclasses import dataclass
from pathlib import Path

from tests.ops import common
from tests.ops.dashboards_lib import (
    AggregateExpr,
    BinaryExpr,
    Call,
    DASHBOARD_UIDS,
    DASHBOARDS,
    MatrixSelector,
    METRICS_DOC,
    PromQLError,
    SubqueryExpr,
    VectorSelector,
    all_panels,
    default_values,
    load_dashboards,
    load_recording_rules,
    panel_queries,
    parse_metrics_contract,
    parse_promql,
    parse_variable_query,
    referenced_variables,
    selectors,
    substitute,
    template_vars,
    unwrap,
    variable_queries,
    variable_query_text,
    walk,
)

SCHEMA_VERSION = 39
DS = {"type": "prometheus", "uid": "${datasource}"}
ALERTS_EXPR = 'ALERTS{alertstate="firing", job=~"$job"}'
PANEL_TYPES = {"timeseries", "stat", "gauge", "bargauge", "table"}
JOB_QUERY = "label_values(forgeline_build_info, job)"
INSTANCE_QUERY = 'label_values(forgeline_build_info{job=~"$job"}, instance)'
# SLO windows (ops-conventions.md) plus the 30-day SLO period.
SLO_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
SLO_PERIOD = "30d"

# Sample values upstream's expandVariables uses for Grafana's globals, so a
# range of `[$__rate_interval]` is recognisable after expansion.
RATE_INTERVAL_MAGIC = "8869990787ms"
LINT_GLOBALS = {
    "__rate_interval": RATE_INTERVAL_MAGIC,
    "__interval": "4867856611ms",
    "__interval_ms": "7781188786",
    "__range": "6069770749ms",
    "__range_s": "9397795485",
    "__range_ms": "6737667980",
}
GRAFANA_GLOBALS = set(LINT_GLOBALS) | {"__dashboard", "__from", "__to", "__name", "__org", "__user", "__auto"}

# Grafana unit ids (packages/grafana-data/src/valueFormats/categories.ts), the
# categories a service dashboard uses. panel-units-rule fails on anything else.
VALID_UNITS = set(
    """
    none string short percent percentunit humidity dB hex0x hex sci locale pixel
    bytes decbytes bits decbits kbytes deckbytes mbytes decmbytes gbytes decgbytes
    tbytes dectbytes pbytes decpbytes
    pps binBps Bps binbps bps KiBs Kibits KBs Kbits MiBs Mibits MBs Mbits GiBs Gibits
    GBs Gbits TiBs Tibits TBs Tbits PiBs Pibits PBs Pbits
    dateTimeAsIso dateTimeAsIsoNoDateIfToday dateTimeAsUS dateTimeAsUSNoDateIfToday
    dateTimeAsLocal dateTimeAsLocalNoDateIfToday dateTimeAsSystem dateTimeFromNow
    hertz ns µs ms s m h d dtdurationms dtdurations dthms dtdhms timeticks clockms clocks
    cps ops reqps rps wps iops cpm opm rpm wpm mps mpm
    bool bool_yes_no bool_on_off
    celsius fahrenheit kelvin watt kwatt
    """.split()
)


# --------------------------------------------------------------------------
# Lint context
# --------------------------------------------------------------------------


@dataclass
class LintTarget:
    panel: dict
    target: dict
    raw: str
    expanded: str
    node: object  # AST or None
    error: str | None


def expand_for_lint(text: str, values: dict) -> str:
    """Like dashboard-linter's expandVariables: variables outside double-quoted
    strings are replaced by sample values ($__rate_interval by a magic
    duration), variables inside quotes stay as written (so matchers keep
    `"$job"`)."""
    parts = text.split('"')
    for i in range(0, len(parts), 2):
        parts[i] = substitute(parts[i], values)
    return '"'.join(parts)


class Context:
    def __init__(self, filename: str, dashboard: dict, contract: dict, recorded: dict, label_values: dict,
                 buckets: dict):
        self.filename = filename
        self.d = dashboard
        self.contract = contract
        self.recorded = recorded
        self.label_values = label_values
        self.buckets = buckets
        self.panels = all_panels(dashboard)
        self.vars = template_vars(dashboard)
        self.values = {**default_values(dashboard), **LINT_GLOBALS}
        self.targets: list[LintTarget] = []
        for p in self.panels:
            for t in p.get("targets") or []:
                raw = t.get("expr") or ""
                expanded = expand_for_lint(raw, self.values)
                node, err = None, None
                try:
                    node = parse_promql(expanded)
                except PromQLError as e:
                    err = str(e)
                self.targets.append(LintTarget(p, t, raw, expanded, node, err))

    def var(self, name):
        for v in self.vars:
            if v.get("name") == name:
                return v
        return None

    def where(self, p, t=None):
        s = f"{self.filename}: panel {p.get('id')} '{p.get('title', '')}'"
        if t is not None:
            s += f" target {t.get('refId', '?')}"
        return s

    def parsed(self):
        return [lt for lt in self.targets if lt.node is not None]

    def metric(self, name):
        return self.contract.get(name) or self.recorded.get(name)


# --------------------------------------------------------------------------
# Upstream rules (grafana/dashboard-linter)
# --------------------------------------------------------------------------


def template_datasource_rule(c: Context):
    """template-datasource-rule: the dashboard has a templated datasource; with a
    single one it is named `datasource` and labeled `Data source` (upstream makes
    the label a warning; an error here), and it queries `prometheus`."""
    dss = [v for v in c.vars if v.get("type") == "datasource"]
    if not dss:
        yield f"{c.filename}: no templated data source"
        return
    if len(dss) != 1:
        yield f"{c.filename}: {len(dss)} data source variables, want exactly one"
    for v in dss:
        if v.get("name") != "datasource":
            yield f"{c.filename}: data source variable named {v.get('name')!r}, should be 'datasource'"
        if v.get("label") != "Data source":
            yield f"{c.filename}: data source variable labeled {v.get('label')!r}, should be 'Data source'"
        if variable_query_text(v) != "prometheus":
            yield f"{c.filename}: data source variable queries {variable_query_text(v)!r}, want 'prometheus'"


def _check_template(c: Context, name: str, query: str):
    """Upstream checkTemplate (lint/template_utils.go), plus includeAll and
    forgeline's fixed query."""
    t = c.var(name)
    if t is None:
        yield f"{c.filename}: is missing the {name} template"
        return
    uid = (t.get("datasource") or {}).get("uid") if isinstance(t.get("datasource"), dict) else t.get("datasource")
    if uid not in ("$datasource", "${datasource}"):
        yield f"{c.filename}: {name} template should use datasource '$datasource', is currently {uid!r}"
    if t.get("type") != "query":
        yield f"{c.filename}: {name} template should be a Prometheus query, is currently {t.get('type')!r}"
    if t.get("label") != name.title():
        yield f"{c.filename}: {name} template should be labeled {name.title()!r}, is currently {t.get('label')!r}"
    if not t.get("multi"):
        yield f"{c.filename}: {name} template should be a multi select"
    if t.get("allValue") != ".+":
        yield f"{c.filename}: {name} template allValue should be '.+', is currently {t.get('allValue')!r}"
    if not t.get("includeAll"):
        yield f"{c.filename}: {name} template should include the All option (includeAll)"
    if variable_query_text(t) != query:
        yield f"{c.filename}: {name} template query is {variable_query_text(t)!r}, want {query!r}"


def template_job_rule(c: Context):
    """template-job-rule: a `job` query variable on $datasource, label `Job`,
    multi, allValue `.+` (upstream checkTemplate); query
    label_values(forgeline_build_info, job)."""
    yield from _check_template(c, "job", JOB_QUERY)


def template_instance_rule(c: Context):
    """template-instance-rule: an `instance` query variable like the job one;
    query label_values(forgeline_build_info{job=~"$job"}, instance)."""
    yield from _check_template(c, "instance", INSTANCE_QUERY)


def template_label_promql_rule(c: Context):
    """template-label-promql-rule: every query variable is one of Grafana's
    Prometheus variable functions (label_names, label_values, metrics,
    query_result) with a PromQL argument that parses. Stricter than upstream,
    which accepts a partial parse: label_values' selector must be a complete
    series selector and its label a valid label name."""
    for v in c.vars:
        if v.get("type") != "query":
            continue
        q = variable_query_text(v)
        try:
            parse_variable_query(expand_for_lint(q, c.values))
        except PromQLError as e:
            yield f"{c.filename}: template {v.get('name')!r} invalid templated label {q!r}: {e}"


def template_on_time_change_reload_rule(c: Context):
    """template-on-time-change-reload-rule: query variables refresh on time
    range change (refresh = 2)."""
    for v in c.vars:
        if v.get("type") == "query" and v.get("refresh") != 2:
            yield (f"{c.filename}: variable {v.get('name')!r} should be refreshed 'On Time Range Change' "
                   f"(refresh 2), is {v.get('refresh')!r}")


def uneditable_dashboard(c: Context):
    """uneditable-dashboard (upstream code: uneditable-dashboard-rule, docs:
    template-uneditable-rule): `editable` is false (stricter: the key must be
    present, Grafana defaults to editable)."""
    if c.d.get("editable") is not False:
        yield f"{c.filename}: is editable, it should be set to 'editable: false'"


def panel_datasource_rule(c: Context):
    """panel-datasource-rule: every panel uses the templated datasource.
    Stricter than upstream (which checks only singlestat/graph/table/
    timeseries panels and only the uid): every panel and every target has
    exactly {"type": "prometheus", "uid": "${datasource}"}."""
    for p in c.panels:
        if p.get("datasource") != DS:
            yield f"{c.where(p)}: does not use the templated datasource, uses {p.get('datasource')!r}"
        for t in p.get("targets") or []:
            if t.get("datasource") != DS:
                yield f"{c.where(p, t)}: does not use the templated datasource, uses {t.get('datasource')!r}"


def panel_title_description_rule(c: Context):
    """panel-title-description-rule: every panel has a title and a description
    (upstream: stat/singlestat/graph/table/timeseries/gauge; here: all)."""
    for p in c.panels:
        if not str(p.get("title") or "").strip() or not str(p.get("description") or "").strip():
            yield (f"{c.where(p)}: has missing title or description, title {p.get('title')!r}, "
                   f"description {p.get('description')!r}")


def panel_units_rule(c: Context):
    """panel-units-rule: every panel has a valid unit (an override's unit
    first, then fieldConfig.defaults.unit). Stricter than upstream: applies to
    every panel type, fieldConfig.defaults.unit is always required, and the
    value-mapping / non-numeric stat exemptions are not taken."""
    for p in c.panels:
        fc = p.get("fieldConfig") or {}
        unit = (fc.get("defaults") or {}).get("unit")
        if unit not in VALID_UNITS:
            yield f"{c.where(p)}: has no or invalid units defined: {unit!r}"
        for o in fc.get("overrides") or []:
            for prop in o.get("properties") or []:
                if prop.get("id") == "unit" and prop.get("value") not in VALID_UNITS:
                    yield f"{c.where(p)}: override has invalid unit {prop.get('value')!r}"


def panel_no_targets_rule(c: Context):
    """panel-no-targets-rule: every panel has at least one target."""
    for p in c.panels:
        if not p.get("targets"):
            yield f"{c.where(p)}: has no targets"


def target_promql_rule(c: Context):
    """target-promql-rule: every target has a PromQL expression that parses
    (variables expanded like upstream). Also: the expression is an instant
    vector or scalar (Grafana runs range queries), and each refId is unique."""
    for p in c.panels:
        refs = [t.get("refId") for t in p.get("targets") or []]
        if len(refs) != len(set(refs)) or None in refs:
            yield f"{c.where(p)}: targets need unique refIds, got {refs}"
    for lt in c.targets:
        if not lt.raw.strip():
            yield f"{c.where(lt.panel, lt.target)}: has no expression"
        elif lt.error:
            yield f"{c.where(lt.panel, lt.target)}: invalid PromQL query {lt.raw!r}: {lt.error}"
        elif lt.node.type not in ("vector", "scalar"):
            yield f"{c.where(lt.panel, lt.target)}: expression has type {lt.node.type}, want instant vector or scalar"


def target_rate_interval_rule(c: Context):
    """target-rate-interval-rule: a range selector inside rate() or irate()
    uses $__rate_interval; a range selector whose parent is not a function
    call is an error (upstream semantics). forgeline extension: increase()
    also uses $__rate_interval, except in slo.json, where increase() over the
    SLO windows (5m 30m 1h 2h 6h 1d 3d) and the 30-day SLO period is how the
    burn rates and error budgets are computed with the job and instance
    filters applied."""
    for lt in c.parsed():
        problems = []

        def visit(node, parents):
            if not isinstance(node, MatrixSelector):
                return
            if node.range == RATE_INTERVAL_MAGIC or not parents:
                return
            parent = parents[-1]
            if not isinstance(parent, Call):
                problems.append(f"range [{node.range}] used outside a function call")
                return
            if parent.func in ("rate", "irate"):
                problems.append(f"{parent.func}() should use $__rate_interval, uses [{node.range}]")
            elif parent.func == "increase":
                if c.filename == "slo.json" and node.range in SLO_WINDOWS + (SLO_PERIOD,):
                    return
                problems.append(f"increase() should use $__rate_interval, uses [{node.range}]")

        walk(lt.node, visit)
        for msg in problems:
            yield f"{c.where(lt.panel, lt.target)}: invalid PromQL query {lt.raw!r}: {msg}"


def _required_matcher(c: Context, label: str):
    for lt in c.parsed():
        for sel in selectors(lt.node):
            ms = [m for m in sel.matchers if m.name == label]
            if not any(m.op == "=~" and m.value == f"${label}" for m in ms):
                got = ", ".join(f"{m.name}{m.op}{m.value!r}" for m in ms) or "none"
                yield (f"{c.where(lt.panel, lt.target)}: selector {sel} needs {label}=~\"${label}\" "
                       f"(found {got})")


def target_job_rule(c: Context):
    """target-job-rule: every selector of every target has job=~"$job"."""
    yield from _required_matcher(c, "job")


def target_instance_rule(c: Context):
    """target-instance-rule: every selector of every target has
    instance=~"$instance"."""
    yield from _required_matcher(c, "instance")


def target_counter_agg_rule(c: Context):
    """target-counter-agg-rule: a counter is only used as `rate|irate|increase(
    counter[...])`. Upstream recognises counters by the `_total` suffix; here
    also every series the contract types as a counter and every histogram
    series (_bucket, _sum, _count are counters too)."""
    for lt in c.parsed():
        bad = []

        def visit(node, parents):
            if not isinstance(node, VectorSelector):
                return
            name = node.metric_name() or ""
            m = c.contract.get(name)
            if not (name.endswith("_total") or (m is not None and m.counter)):
                return
            ok = (
                len(parents) >= 2
                and isinstance(parents[-1], MatrixSelector)
                and isinstance(parents[-2], Call)
                and parents[-2].func in ("rate", "irate", "increase")
            )
            if not ok:
                bad.append(str(node))

        walk(lt.node, visit)
        for s in bad:
            yield f"{c.where(lt.panel, lt.target)}: counter metric '{s}' is not aggregated with rate, irate, or increase"


def target_logql_rule(c: Context):
    """target-logql-rule / target-logql-auto-rule: these lint Loki targets;
    forgeline's dashboards are Prometheus-only, so here no panel, target,
    variable or annotation may use a Loki datasource."""
    blob = []
    for p in c.panels:
        blob.append((c.where(p), p.get("datasource")))
        for t in p.get("targets") or []:
            blob.append((c.where(p, t), t.get("datasource")))
    for v in c.vars:
        blob.append((f"{c.filename}: variable {v.get('name')!r}", v.get("datasource")))
        if v.get("type") == "datasource" and variable_query_text(v) == "loki":
            yield f"{c.filename}: variable {v.get('name')!r} is a Loki datasource variable"
    for a in (c.d.get("annotations") or {}).get("list") or []:
        blob.append((f"{c.filename}: annotation {a.get('name')!r}", a.get("datasource")))
    for where, ds in blob:
        typ = ds.get("type") if isinstance(ds, dict) else None
        if typ == "loki" or (isinstance(ds, str) and "loki" in ds.lower()):
            yield f"{where}: uses a Loki datasource ({ds!r}); only Prometheus targets are allowed"


# --------------------------------------------------------------------------
# forgeline rules
# --------------------------------------------------------------------------


def forgeline_dashboard_id_null(c: Context):
    """`"id": null`, so an import never overwrites another dashboard by id."""
    if "id" not in c.d or c.d["id"] is not None:
        yield f"{c.filename}: id should be null, is {c.d.get('id', '<missing>')!r}"


def forgeline_dashboard_uid(c: Context):
    """The stable uid from ops-conventions.md, and a title."""
    want = DASHBOARD_UIDS.get(c.filename)
    if c.d.get("uid") != want:
        yield f"{c.filename}: uid is {c.d.get('uid')!r}, want {want!r}"
    if not str(c.d.get("title") or "").strip():
        yield f"{c.filename}: has no title"


def forgeline_schema_version(c: Context):
    """schemaVersion pinned to 39 (Grafana 10.4 / 11)."""
    if c.d.get("schemaVersion") != SCHEMA_VERSION:
        yield f"{c.filename}: schemaVersion is {c.d.get('schemaVersion')!r}, want {SCHEMA_VERSION}"


def forgeline_inputs_requires(c: Context):
    """__inputs declares the DS_PROMETHEUS datasource input; __requires lists
    grafana, the prometheus datasource and exactly the panel types used."""
    inputs = c.d.get("__inputs")
    if not isinstance(inputs, list) or not any(
        i.get("name") == "DS_PROMETHEUS" and i.get("type") == "datasource" and i.get("pluginId") == "prometheus"
        for i in inputs
    ):
        yield f"{c.filename}: __inputs lacks the DS_PROMETHEUS prometheus datasource input"
    req = c.d.get("__requires")
    if not isinstance(req, list):
        yield f"{c.filename}: __requires missing"
        return
    if not any(r.get("type") == "grafana" and r.get("id") == "grafana" and r.get("version") for r in req):
        yield f"{c.filename}: __requires lacks grafana (with a version)"
    if not any(r.get("type") == "datasource" and r.get("id") == "prometheus" for r in req):
        yield f"{c.filename}: __requires lacks the prometheus datasource"
    declared = {r.get("id") for r in req if r.get("type") == "panel"}
    used = {p.get("type") for p in c.panels}
    if declared != used:
        yield (f"{c.filename}: __requires panel types {sorted(declared)} differ from the panel types used "
               f"{sorted(used)}")


def forgeline_ds_input_placeholder(c: Context):
    """${DS_PROMETHEUS} is substituted only by a UI import, never by file
    provisioning: it may appear only in __inputs and as the datasource
    variable's initial value (Grafana falls back to the first Prometheus
    datasource when that value is unknown). Panels and targets go through
    ${datasource}."""
    d = copy.deepcopy(c.d)
    d.pop("__inputs", None)
    for v in (d.get("templating") or {}).get("list") or []:
        if v.get("type") == "datasource":
            v.pop("current", None)
    if "DS_PROMETHEUS" in json.dumps(d):
        yield f"{c.filename}: ${{DS_PROMETHEUS}} used outside __inputs and the datasource variable's current value"


def forgeline_alerts_annotation(c: Context):
    """An enabled annotation from ALERTS on ${datasource}:
    ALERTS{alertstate="firing", job=~"$job"}."""
    found = [
        a for a in (c.d.get("annotations") or {}).get("list") or []
        if a.get("expr") == ALERTS_EXPR and a.get("datasource") == DS and a.get("enable") is True
    ]
    if not found:
        yield f"{c.filename}: no enabled annotation with expr {ALERTS_EXPR} on datasource {DS}"
    for a in found:
        try:
            parse_promql(expand_for_lint(a["expr"], c.values))
        except PromQLError as e:
            yield f"{c.filename}: ALERTS annotation does not parse: {e}"


def forgeline_metrics_contract(c: Context):
    """Every selector names a metric of the docs/metrics.md contract table
    (histograms as _bucket/_sum/_count) or a recording rule of
    alerts/forgeline.rules.yml, and every matcher key is a label of that
    metric (or job/instance; le only on _bucket). Recorded series accept any
    label."""
    for lt in c.parsed():
        for sel in selectors(lt.node):
            name = sel.metric_name()
            if not name:
                yield f"{c.where(lt.panel, lt.target)}: selector {sel} has no metric name"
                continue
            m = c.metric(name)
            if m is None:
                yield (f"{c.where(lt.panel, lt.target)}: metric {name!r} is neither in the docs/metrics.md "
                       f"contract nor a recording rule in alerts/forgeline.rules.yml")
                continue
            if m.labels is None:
                continue
            # Scraped series carry job and instance; a recorded series only
            # the labels its rule keeps (a `by (job)` rule has no instance, so
            # instance=~"$instance" on it would select nothing).
            implicit = {"__name__"} | ({"job", "instance"} if m.type != "recording" else set())
            for mt in sel.matchers:
                if mt.name in implicit or mt.name in m.labels:
                    continue
                yield (f"{c.where(lt.panel, lt.target)}: label {mt.name!r} is not a label of {name} "
                       f"(labels: {sorted(m.labels)})")


def forgeline_label_values(c: Context):
    """Label values of the contract: an `=`/`!=` matcher on an enumerated label
    uses a documented value, a literal `=~` matcher matches at least one
    documented value, and `le` is a bucket boundary of that histogram
    (docs/metrics.md "Label values" and "Buckets" tables)."""
    for lt in c.parsed():
        for sel in selectors(lt.node):
            name = sel.metric_name() or ""
            for mt in sel.matchers:
                if referenced_variables(mt.value):
                    continue  # a dashboard variable; its values come from Prometheus
                if mt.name == "le":
                    base = name[: -len("_bucket")] if name.endswith("_bucket") else None
                    bounds = c.buckets.get(base) if base else None
                    if bounds is not None and (mt.op != "=" or mt.value not in bounds):
                        yield (f"{c.where(lt.panel, lt.target)}: le{mt.op}{mt.value!r} is not a bucket boundary of "
                               f"{base} ({', '.join(sorted(bounds, key=float))})")
                    continue
                values = c.label_values.get((name, mt.name))
                if values is None:
                    continue
                if mt.op in ("=", "!="):
                    if mt.value not in values:
                        yield (f"{c.where(lt.panel, lt.target)}: {name}{{{mt.name}{mt.op}{mt.value!r}}}: value not "
                               f"documented ({', '.join(sorted(values))})")
                else:
                    rx = re.compile(mt.value)
                    if not any(rx.fullmatch(v) for v in values):
                        yield (f"{c.where(lt.panel, lt.target)}: {name}{{{mt.name}{mt.op}{mt.value!r}}}: regex matches "
                               f"no documented value ({', '.join(sorted(values))})")


def _available_labels(c: Context, node) -> set | None:
    labels = {"job", "instance"}
    for sel in selectors(node):
        m = c.metric(sel.metric_name() or "")
        if m is None or m.labels is None:
            return None
        labels |= m.labels
    return labels


def forgeline_grouping_labels(c: Context):
    """`by (...)` labels of an aggregation exist on the series it aggregates
    (catches typos such as `by (queu)` that silently collapse series)."""
    for lt in c.parsed():
        bad = []

        def visit(node, _parents):
            if isinstance(node, AggregateExpr) and node.grouping and not node.without:
                avail = _available_labels(c, node.expr)
                if avail is None:
                    return
                for label in node.grouping:
                    if label not in avail:
                        bad.append(f"{node.op} by ({label}) but {label!r} is not a label of the aggregated series")

        walk(lt.node, visit)
        for msg in bad:
            yield f"{c.where(lt.panel, lt.target)}: {msg}"


def forgeline_histogram_quantile(c: Context):
    """histogram_quantile() gets _bucket series, aggregated `by (..., le)`."""
    for lt in c.parsed():
        bad = []

        def visit(node, _parents):
            if not (isinstance(node, Call) and node.func == "histogram_quantile"):
                return
            arg = unwrap(node.args[1])
            names = [s.metric_name() or "" for s in selectors(arg)]
            if not names or not all(n.endswith("_bucket") for n in names):
                bad.append(f"histogram_quantile() over non-bucket series {names}")
            if isinstance(arg, AggregateExpr):
                if (arg.without and "le" in arg.grouping) or (not arg.without and "le" not in arg.grouping):
                    bad.append("histogram_quantile() needs its aggregation to keep `le`")

        walk(lt.node, visit)
        for msg in bad:
            yield f"{c.where(lt.panel, lt.target)}: {msg}"


def forgeline_panel_layout(c: Context):
    """Panel types are timeseries, stat, gauge, bargauge or table; ids are
    unique integers; titles are unique; every panel has a gridPos inside the
    24 columns and no two panels overlap."""
    ids, titles, cells = [], [], {}
    for p in c.panels:
        if p.get("type") not in PANEL_TYPES:
            yield f"{c.where(p)}: panel type {p.get('type')!r} not in {sorted(PANEL_TYPES)}"
        ids.append(p.get("id"))
        titles.append(p.get("title"))
        g = p.get("gridPos") or {}
        if not all(isinstance(g.get(k), int) for k in ("x", "y", "w", "h")):
            yield f"{c.where(p)}: gridPos needs integer x, y, w, h, got {g}"
            continue
        if g["w"] < 1 or g["h"] < 1 or g["x"] < 0 or g["y"] < 0 or g["x"] + g["w"] > 24:
            yield f"{c.where(p)}: gridPos {g} outside the 24-column grid"
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                if (x, y) in cells:
                    yield f"{c.where(p)}: overlaps panel {cells[(x, y)]}"
                    break
                cells[(x, y)] = p.get("id")
            else:
                continue
            break
    if not all(isinstance(i, int) for i in ids) or len(ids) != len(set(ids)):
        yield f"{c.filename}: panel ids must be unique integers, got {ids}"
    dup = sorted({t for t in titles if titles.count(t) > 1})
    if dup:
        yield f"{c.filename}: duplicate panel titles {dup}"


def forgeline_variables(c: Context):
    """Every variable referenced by a target, variable query or annotation is
    defined (or a Grafana global); every query variable is used by a target
    or by another variable's query; variables are unique."""
    names = [v.get("name") for v in c.vars]
    if len(names) != len(set(names)):
        yield f"{c.filename}: duplicate variable names {names}"
    defined = set(names) | GRAFANA_GLOBALS
    texts = [(c.where(lt.panel, lt.target), lt.raw) for lt in c.targets]
    texts += [(f"{c.filename}: variable {v.get('name')!r}", variable_query_text(v)) for v in c.vars
              if v.get("type") == "query"]
    texts += [(f"{c.filename}: annotation {a.get('name')!r}", a.get("expr") or "")
              for a in (c.d.get("annotations") or {}).get("list") or []]
    for where, text in texts:
        for ref in referenced_variables(text):
            if ref not in defined:
                yield f"{where}: references undefined variable ${ref}"
    for v in c.vars:
        if v.get("type") != "query":
            continue
        name = v.get("name")
        users = [w for w, text in texts if name in referenced_variables(text) and not w.endswith(f"variable {name!r}")]
        if not any(" panel " in w for w in users):
            yield f"{c.filename}: variable ${name} is not used by any panel query"


def forgeline_slo_windows(c: Context):
    """slo.json shows the availability and queue wait burn rates over every
    alert window (5m 30m 1h 2h 6h 1d 3d) and the 30-day error budgets."""
    if c.filename != "slo.json":
        return
    seen = {"availability": set(), "queue wait": set(), "latency": set()}
    for lt in c.parsed():
        def visit(node, parents):
            if isinstance(node, MatrixSelector) and parents and isinstance(parents[-1], Call) \
                    and parents[-1].func == "increase":
                name = node.vector.metric_name() or ""
                if name == "forgeline_http_requests_total":
                    seen["availability"].add(node.range)
                elif name.startswith("forgeline_queue_wait_seconds"):
                    seen["queue wait"].add(node.range)
                elif name.startswith("forgeline_http_request_duration_seconds"):
                    seen["latency"].add(node.range)

        walk(lt.node, visit)
    for slo in ("availability", "queue wait"):
        missing = [w for w in SLO_WINDOWS + (SLO_PERIOD,) if w not in seen[slo]]
        if missing:
            yield f"{c.filename}: {slo} SLO lacks the windows {missing}"
    if SLO_PERIOD not in seen["latency"]:
        yield f"{c.filename}: latency SLO lacks the {SLO_PERIOD} period"


RULES = {
    "template-datasource-rule": template_datasource_rule,
    "template-job-rule": template_job_rule,
    "template-instance-rule": template_instance_rule,
    "template-label-promql-rule": template_label_promql_rule,
    "template-on-time-change-reload-rule": template_on_time_change_reload_rule,
    "uneditable-dashboard": uneditable_dashboard,
    "panel-datasource-rule": panel_datasource_rule,
    "panel-title-description-rule": panel_title_description_rule,
    "panel-units-rule": panel_units_rule,
    "panel-no-targets-rule": panel_no_targets_rule,
    "target-promql-rule": target_promql_rule,
    "target-rate-interval-rule": target_rate_interval_rule,
    "target-job-rule": target_job_rule,
    "target-instance-rule": target_instance_rule,
    "target-counter-agg-rule": target_counter_agg_rule,
    "target-logql-rule": target_logql_rule,
    "forgeline-dashboard-id-null": forgeline_dashboard_id_null,
    "forgeline-dashboard-uid": forgeline_dashboard_uid,
    "forgeline-schema-version": forgeline_schema_version,
    "forgeline-inputs-requires": forgeline_inputs_requires,
    "forgeline-ds-input-placeholder": forgeline_ds_input_placeholder,
    "forgeline-alerts-annotation": forgeline_alerts_annotation,
    "forgeline-metrics-contract": forgeline_metrics_contract,
    "forgeline-label-values": forgeline_label_values,
    "forgeline-grouping-labels": forgeline_grouping_labels,
    "forgeline-histogram-quantile": forgeline_histogram_quantile,
    "forgeline-panel-layout": forgeline_panel_layout,
    "forgeline-variables": forgeline_variables,
    "forgeline-slo-windows": forgeline_slo_windows,
}


# --------------------------------------------------------------------------
# Contract tables
# --------------------------------------------------------------------------

# Rows of the "Label values" table whose metrics column is prose.
_LABEL_VALUE_METRICS = {
    "HTTP": ["forgeline_http_requests_total", "forgeline_http_request_duration_seconds"],
    "review backlog and oldest age": ["forgeline_review_backlog", "forgeline_review_oldest_age_seconds"],
    "review decisions and latency": ["forgeline_review_decisions_total", "forgeline_review_decision_latency_seconds"],
}
# Labels whose values are open-ended (names, config-dependent ranges).
_OPEN_LABELS = {"route", "queue", "step", "policy", "reviewer", "age", "version", "commit"}


def _md_table(lines, start):
    rows = []
    for line in lines[start:]:
        if not line.strip().startswith("|"):
            break
        cells = [x.strip() for x in line.strip().strip("|").split("|")]
        if all(set(x) <= set("-: ") for x in cells):
            continue
        rows.append(cells)
    return rows


def parse_label_values(contract, path: Path = METRICS_DOC) -> dict:
    """{(series name, label): set of documented values} for enumerated labels."""
    lines = path.read_text(encoding="utf-8").splitlines()
    start = next(i for i, l in enumerate(lines) if l.strip() == "## Label values") + 1
    while not lines[start].strip().startswith("|"):
        start += 1
    out = {}
    for label_cell, metrics_cell, values_cell in _md_table(lines, start)[1:]:
        labels = re.findall(r"`([^`]+)`", label_cell)
        bases = re.findall(r"`(forgeline_[a-z_]+|process_[a-z_]+)`", metrics_cell) or \
            _LABEL_VALUE_METRICS.get(metrics_cell.strip(), [])
        values = set(re.findall(r"`([^`]+)`", values_cell))
        for label in labels:
            if label in _OPEN_LABELS or not values:
                continue
            for base in bases:
                series = [base] if base in contract else [base + s for s in ("_bucket", "_sum", "_count")]
                for s in series:
                    if s in contract and label in (contract[s].labels or ()):
                        out.setdefault((s, label), set()).update(values)
    return out


def parse_buckets(path: Path = METRICS_DOC) -> dict:
    """{histogram name: set of `le` values as exported} from the Buckets table."""
    lines = path.read_text(encoding="utf-8").splitlines()
    start = next(i for i, l in enumerate(lines) if l.strip() == "## Buckets") + 1
    while not lines[start].strip().startswith("|"):
        start += 1
    out = {}
    for row in _md_table(lines, start)[1:]:
        names = re.findall(r"`([a-z_]+)`", row[0])
        bounds = {b.strip() for b in row[2].split(",") if b.strip()} | {"+Inf"}
        for n in names:
            out[n] = bounds
    return out


# --------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------


def lint(filename: str, dashboard: dict, rules=None, env=None) -> dict[str, list[str]]:
    """{rule name: [violations]} for one dashboard."""
    env = env or lint_env()
    c = Context(filename, dashboard, *env)
    return {name: list(fn(c)) for name, fn in RULES.items() if rules is None or name in rules}


_ENV = None


def lint_env():
    global _ENV
    if _ENV is None:
        contract = parse_metrics_contract()
        _ENV = (contract, load_recording_rules(contract=contract), parse_label_values(contract), parse_buckets())
    return _ENV


class DashboardLintTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dashboards = load_dashboards()
        cls.env = lint_env()

    def test_dashboard_files(self):
        self.assertEqual(sorted(self.dashboards), sorted(DASHBOARD_UIDS))

    def test_contract_parsed(self):
        contract, _rules, label_values, buckets = self.env
        self.assertIn("forgeline_http_requests_total", contract)
        self.assertIn("forgeline_queue_wait_seconds_bucket", contract)
        self.assertIn("le", contract["forgeline_queue_wait_seconds_bucket"].labels)
        self.assertIn("30", buckets["forgeline_queue_wait_seconds"])
        self.assertIn("0.25", buckets["forgeline_http_request_duration_seconds"])
        self.assertIn("passed", label_values[("forgeline_verification_duration_seconds_count", "outcome")])
        self.assertIn("500", label_values[("forgeline_http_requests_total", "status")])

    def _check_rule(self, rule):
        for filename, d in self.dashboards.items():
            with self.subTest(dashboard=filename, rule=rule):
                problems = lint(filename, d, {rule}, self.env)[rule]
                self.assertEqual([], problems, f"{rule} violations:\n  " + "\n  ".join(problems))


def _make_rule_test(rule):
    def test(self):
        self._check_rule(rule)

    test.__doc__ = (RULES[rule].__doc__ or rule).strip().splitlines()[0]
    return test


for _rule in RULES:
    setattr(DashboardLintTest, "test_rule_" + _rule.replace("-", "_"), _make_rule_test(_rule))


class DashboardQueriesTest(unittest.TestCase):
    """The end-to-end test's view: queries with the variables substituted."""

    def test_substituted_queries_parse(self):
        for filename, d in load_dashboards().items():
            qs = panel_queries(d)
            self.assertTrue(qs, filename)
            for title, expr in qs:
                with self.subTest(dashboard=filename, panel=title):
                    self.assertNotIn("$", expr)
                    parse_promql(expr)
            for name, q in variable_queries(d):
                with self.subTest(dashboard=filename, variable=name):
                    self.assertNotIn("$", q)
                    parse_variable_query(q)

    def test_substitute(self):
        values = {"job": "forgeline", "instance": ".+", "__rate_interval": "1m", "datasource": ""}
        self.assertEqual(
            substitute('rate(x{job=~"$job", instance=~"${instance}"}[$__rate_interval])', values),
            'rate(x{job=~"forgeline", instance=~".+"}[1m])',
        )
        self.assertEqual(substitute("[[job]] ${job:regex} $datasource", values), "forgeline forgeline ")
        self.assertEqual(substitute("$unknown", values), "$unknown")

    def test_promtool_parses_every_expression(self):
        """Prometheus 2.42's parser (promtool check rules) accepts every panel
        expression, every variable query's selector and the ALERTS annotation,
        as the end-to-end test substitutes them."""
        promtool = common.tool("promtool")
        rules = []
        for filename, d in sorted(load_dashboards().items()):
            exprs = [expr for _t, expr in panel_queries(d)]
            for _n, q in variable_queries(d):
                vq = parse_variable_query(q)
                exprs += [x for x in (vq.selector, vq.expr if vq.function == "query_result" else None) if x]
            for a in (d.get("annotations") or {}).get("list") or []:
                if a.get("expr"):
                    exprs.append(substitute(a["expr"], default_values(d)))
            stem = filename.removesuffix(".json")
            rules += [{"record": f"dashboard:{stem}:expr{i}", "expr": e} for i, e in enumerate(exprs)]
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "dashboard-exprs.rules.yml"
            # JSON is YAML; promtool reads it as a rule file.
            path.write_text(json.dumps({"groups": [{"name": "dashboards", "rules": rules}]}, indent=1))
            res = common.run([promtool, "check", "rules", str(path)], timeout=60)
        self.assertEqual(0, res.returncode, res.stdout + res.stderr)
        self.assertIn(f"SUCCESS: {len(rules)} rules found", res.stdout + res.stderr)


class LinterCatchesMistakesTest(unittest.TestCase):
    """Each rule fails on a dashboard broken the way the rule is meant to catch."""

    def mutate(self, filename, fn):
        d = copy.deepcopy(load_dashboards()[filename])
        fn(d)
        return lint(filename, d)

    def assertCaught(self, rule, filename, fn):
        problems = self.mutate(filename, fn)
        self.assertTrue(problems[rule], f"{rule} did not catch the mistake")

    def first(self, d, kind="timeseries"):
        return next(p for p in all_panels(d) if p["type"] == kind)

    def set_expr(self, d, expr, kind="timeseries"):
        self.first(d, kind)["targets"][0]["expr"] = expr

    def test_mistakes_are_caught(self):
        M = 'job=~"$job", instance=~"$instance"'
        cases = [
            ("template-datasource-rule", lambda d: d["templating"]["list"].pop(0)),
            ("template-job-rule", lambda d: d["templating"]["list"][1].update(allValue=".*")),
            ("template-instance-rule", lambda d: d["templating"]["list"][2].update(multi=False)),
            ("template-label-promql-rule", lambda d: d["templating"]["list"][2].update(query="label_values(up{, instance)")),
            ("template-on-time-change-reload-rule", lambda d: d["templating"]["list"][1].update(refresh=1)),
            ("uneditable-dashboard", lambda d: d.update(editable=True)),
            ("panel-datasource-rule", lambda d: self.first(d).update(datasource={"type": "prometheus", "uid": "abc"})),
            ("panel-datasource-rule", lambda d: self.first(d)["targets"][0].pop("datasource")),
            ("panel-title-description-rule", lambda d: self.first(d, "stat").update(description="")),
            ("panel-units-rule", lambda d: self.first(d, "stat")["fieldConfig"]["defaults"].pop("unit")),
            ("panel-units-rule", lambda d: self.first(d, "bargauge")["fieldConfig"]["defaults"].update(unit="tasks")),
            ("panel-no-targets-rule", lambda d: self.first(d).update(targets=[])),
            ("target-promql-rule", lambda d: self.set_expr(d, f"sum(rate(forgeline_http_requests_total{{{M}}}[$__rate_interval])")),
            ("target-promql-rule", lambda d: self.set_expr(d, f"sumz(forgeline_sse_subscribers{{{M}}})")),
            ("target-promql-rule", lambda d: self.set_expr(d, f"forgeline_sse_subscribers{{{M}}}[5m]")),
            ("target-rate-interval-rule", lambda d: self.set_expr(d, f"sum(rate(forgeline_http_requests_total{{{M}}}[5m]))")),
            ("target-rate-interval-rule", lambda d: self.set_expr(d, f"sum(increase(forgeline_http_requests_total{{{M}}}[1h]))")),
            ("target-job-rule", lambda d: self.set_expr(d, 'forgeline_sse_subscribers{instance=~"$instance"}')),
            ("target-job-rule", lambda d: self.set_expr(d, 'forgeline_sse_subscribers{job="forgeline", instance=~"$instance"}')),
            ("target-instance-rule", lambda d: self.set_expr(d, 'forgeline_sse_subscribers{job=~"$job"}')),
            ("target-counter-agg-rule", lambda d: self.set_expr(d, f"sum(forgeline_http_requests_total{{{M}}})")),
            ("target-counter-agg-rule", lambda d: self.set_expr(d, f"sum(forgeline_queue_wait_seconds_count{{{M}}})")),
            ("target-logql-rule", lambda d: self.first(d)["targets"][0].update(datasource={"type": "loki", "uid": "x"})),
            ("forgeline-dashboard-id-null", lambda d: d.update(id=7)),
            ("forgeline-dashboard-uid", lambda d: d.update(uid="overview")),
            ("forgeline-schema-version", lambda d: d.update(schemaVersion=38)),
            ("forgeline-inputs-requires", lambda d: d.pop("__inputs")),
            ("forgeline-inputs-requires", lambda d: d["__requires"].pop()),
            ("forgeline-ds-input-placeholder", lambda d: self.first(d).update(datasource={"type": "prometheus", "uid": "${DS_PROMETHEUS}"})),
            ("forgeline-alerts-annotation", lambda d: d["annotations"]["list"].pop()),
            ("forgeline-metrics-contract", lambda d: self.set_expr(d, f"up{{{M}}}")),
            ("forgeline-metrics-contract", lambda d: self.set_expr(d, f'forgeline_sse_subscribers{{{M}, queue="a"}}')),
            ("forgeline-metrics-contract", lambda d: self.set_expr(d, f"job:forgeline_slo_availability_errors:ratio_rate1h{{{M}}}")),
            ("forgeline-label-values", lambda d: self.set_expr(d, f'sum(rate(forgeline_http_requests_total{{{M}, status="555"}}[$__rate_interval]))')),
            ("forgeline-label-values", lambda d: self.set_expr(d, f'sum(rate(forgeline_http_request_duration_seconds_bucket{{{M}, le="0.3"}}[$__rate_interval]))')),
            ("forgeline-grouping-labels", lambda d: self.set_expr(d, f"sum by (queu) (forgeline_queue_depth{{{M}}})")),
            ("forgeline-histogram-quantile", lambda d: self.set_expr(d, f"histogram_quantile(0.99, sum by (route) (rate(forgeline_http_request_duration_seconds_bucket{{{M}}}[$__rate_interval])))")),
            ("forgeline-panel-layout", lambda d: self.first(d).update(type="graph")),
            ("forgeline-panel-layout", lambda d: self.first(d).update(gridPos=dict(all_panels(d)[0]["gridPos"]))),
            ("forgeline-variables", lambda d: self.set_expr(d, 'forgeline_sse_subscribers{job=~"$job", instance=~"$instance", x=~"$nope"}')),
        ]
        for rule, fn in cases:
            with self.subTest(rule=rule):
                self.assertCaught(rule, "overview.json", fn)
        # Per-dashboard variables and the SLO windows.
        with self.subTest(rule="forgeline-variables (unused)"):
            self.assertCaught("forgeline-variables", "reviews.json",
                              lambda d: [t.update(expr=t["expr"].replace('age=~"$age"', ""))
                                         for p in all_panels(d) for t in p["targets"]])
        with self.subTest(rule="forgeline-slo-windows"):
            self.assertCaught("forgeline-slo-windows", "slo.json",
                              lambda d: d.update(panels=[p for p in d["panels"]
                                                         if not any("[3d]" in t["expr"] for t in p["targets"])]))
        with self.subTest(rule="target-rate-interval-rule (slo window exception is limited)"):
            self.assertCaught("target-rate-interval-rule", "slo.json",
                              lambda d: self.set_expr(d, f"sum(increase(forgeline_http_requests_total{{{M}}}[7h]))"))


class ProvisioningTest(unittest.TestCase):
    def test_dashboard_provider(self):
        data = common.load_yaml(DASHBOARDS / "provisioning" / "dashboards.yaml")
        self.assertEqual(1, data.get("apiVersion"))
        providers = data.get("providers") or []
        self.assertEqual(1, len(providers), providers)
        p = providers[0]
        self.assertEqual("file", p.get("type"))
        self.assertTrue(p.get("name"))
        self.assertTrue(p.get("folder"))
        self.assertTrue((p.get("options") or {}).get("path"))
        self.assertFalse(p.get("allowUiUpdates", False), "dashboards are code: no UI updates")

    def test_datasource(self):
        data = common.load_yaml(DASHBOARDS / "provisioning" / "datasource.yaml")
        self.assertEqual(1, data.get("apiVersion"))
        dss = data.get("datasources") or []
        self.assertEqual(1, len(dss), dss)
        ds = dss[0]
        self.assertEqual("prometheus", ds.get("type"))
        self.assertEqual("http://127.0.0.1:9090", ds.get("url"))
        self.assertEqual("proxy", ds.get("access"))
        self.assertRegex(ds.get("uid") or "", r"^[A-Za-z0-9_-]{1,40}$")
        self.assertTrue(ds.get("isDefault"), "the datasource variable falls back to the default Prometheus")

    def test_readme_explains_both_import_paths(self):
        text = (DASHBOARDS / "README.md").read_text(encoding="utf-8")
        for needle in ["__inputs", "DS_PROMETHEUS", "provisioning/dashboards.yaml", "provisioning/datasource.yaml",
                       *DASHBOARD_UIDS, *DASHBOARD_UIDS.values()]:
            self.assertIn(needle, text)


if __name__ == "__main__":
    unittest.main()
