"""Helpers for the Grafana dashboards in dashboards/ (used by test_dashboards.py
and by the end-to-end test that runs every panel query through a real
Prometheus).

Public API for other tests:

    load_dashboard(path) / load_dashboards() -> dict / {file name: dict}
    panel_queries(dashboard) -> [(panel_title, expr)]   # variables substituted
    variable_queries(dashboard) -> [(name, query)]      # variables substituted
    substitute(expr, values) -> str
    default_values(dashboard) -> {variable name: value}
    parse_variable_query(query) -> VariableQuery(function, selector, label, expr)
    parse_promql(expr) -> AST (raises PromQLError)

Substitution defaults (what the e2e test queries with): `$job` -> `forgeline`,
`$instance` -> `.+`, `$__rate_interval` / `$__interval` -> `1m`, `$__range`
-> `1h`, `$datasource` -> removed, other query variables -> `.+` (their
"All" value), custom variables -> their first value, constants -> their value.

The PromQL parser below is a small recursive-descent parser for the PromQL of
Prometheus 2.42 (selectors, range/subquery/offset/@, function calls with
argument types, aggregations with by/without before or after the arguments,
binary operators with Prometheus precedence, bool, on/ignoring,
group_left/group_right). It produces an AST that the linter walks the way
grafana/dashboard-linter walks the Prometheus parser's AST. test_dashboards.py
additionally runs every expression through `promtool check rules` (the real
Prometheus parser).

Standard library only (PyYAML is needed only to read alerts/forgeline.rules.yml).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
DASHBOARDS = REPO / "dashboards"
METRICS_DOC = REPO / "docs" / "metrics.md"
RULES_FILE = REPO / "alerts" / "forgeline.rules.yml"

# File name -> stable uid (ops-conventions.md).
DASHBOARD_UIDS = {
    "overview.json": "forgeline-overview",
    "queue.json": "forgeline-queue",
    "reviews.json": "forgeline-reviews",
    "slo.json": "forgeline-slo",
}

# What the end-to-end test substitutes for Grafana's global variables.
GLOBAL_DEFAULTS = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__interval_ms": "60000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}


# --------------------------------------------------------------------------
# Loading dashboards
# --------------------------------------------------------------------------


def load_dashboard(path) -> dict:
    with Path(path).open(encoding="utf-8") as f:
        return json.load(f)


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def load_dashboards() -> dict[str, dict]:
    return {p.name: load_dashboard(p) for p in dashboard_files()}


def _as_dashboard(dashboard) -> dict:
    if isinstance(dashboard, (str, Path)):
        return load_dashboard(dashboard)
    return dashboard


def all_panels(dashboard) -> list[dict]:
    """Every panel, including panels nested in rows (like dashboard-linter's
    GetPanels: the deprecated `rows`, top-level `panels`, and nested `panels`)."""
    dashboard = _as_dashboard(dashboard)
    out: list[dict] = []

    def visit(p):
        out.append(p)
        for child in p.get("panels") or []:
            visit(child)

    for row in dashboard.get("rows") or []:
        for p in row.get("panels") or []:
            visit(p)
    for p in dashboard.get("panels") or []:
        visit(p)
    return out


def template_vars(dashboard) -> list[dict]:
    return list((_as_dashboard(dashboard).get("templating") or {}).get("list") or [])


def variable_query_text(var: dict) -> str:
    """The query string of a template variable (string or {query: ...} form)."""
    q = var.get("query", "")
    if isinstance(q, dict):
        q = q.get("query", "")
    return q or ""


# --------------------------------------------------------------------------
# Variable substitution
# --------------------------------------------------------------------------

# $var, ${var}, ${var:format}, [[var]], [[var:format]] (Grafana's syntaxes).
VARIABLE_RE = re.compile(
    r"\$\{(?P<braced>[A-Za-z0-9_.]+)(?::[^}]*)?\}"
    r"|\[\[(?P<bracketed>[A-Za-z0-9_.]+)(?::[^\]]*)?\]\]"
    r"|\$(?P<plain>[A-Za-z0-9_]+)"
)


def referenced_variables(text: str) -> set[str]:
    return {
        m.group("braced") or m.group("bracketed") or m.group("plain")
        for m in VARIABLE_RE.finditer(text)
    }


def substitute(expr: str, values: dict) -> str:
    """Replaces every Grafana variable reference in `expr` with values[name].
    References to names missing from `values` are left untouched (the linter
    rejects undefined variables separately)."""

    def repl(m):
        name = m.group("braced") or m.group("bracketed") or m.group("plain")
        if name in values:
            return str(values[name])
        return m.group(0)

    return VARIABLE_RE.sub(repl, expr)


def default_values(dashboard) -> dict:
    """The values the end-to-end test queries with (see module docstring)."""
    values = dict(GLOBAL_DEFAULTS)
    for var in template_vars(dashboard):
        name, typ = var.get("name"), var.get("type")
        if typ == "datasource":
            values[name] = ""
        elif name == "job":
            values[name] = "forgeline"
        elif name == "instance":
            values[name] = ".+"
        elif typ == "custom":
            opts = [o.get("value") for o in var.get("options") or [] if o.get("value") not in (None, "$__all")]
            if not opts:
                opts = [v.strip() for v in variable_query_text(var).split(",") if v.strip()]
            values[name] = opts[0] if opts else ".+"
        elif typ == "constant":
            values[name] = variable_query_text(var)
        elif typ == "interval":
            opts = [v.strip() for v in variable_query_text(var).split(",") if v.strip()]
            values[name] = opts[0] if opts else "1m"
        else:  # query variables and anything else: the "All" regex
            values[name] = var.get("allValue") or ".+"
    return values


def panel_targets(dashboard) -> list[tuple[dict, dict]]:
    """(panel, target) for every target of every panel."""
    return [(p, t) for p in all_panels(dashboard) for t in p.get("targets") or []]


def panel_queries(dashboard, values: dict | None = None) -> list[tuple[str, str]]:
    """[(panel title, expression with variables substituted)] for every target."""
    dashboard = _as_dashboard(dashboard)
    vals = default_values(dashboard) if values is None else values
    return [
        (p.get("title", ""), substitute(t.get("expr", ""), vals))
        for p, t in panel_targets(dashboard)
        if t.get("expr")
    ]


def variable_queries(dashboard, values: dict | None = None) -> list[tuple[str, str]]:
    """[(variable name, query with variables substituted)] for every query
    variable (e.g. `label_values(forgeline_build_info{job=~"forgeline"}, instance)`)."""
    dashboard = _as_dashboard(dashboard)
    vals = default_values(dashboard) if values is None else values
    return [
        (v.get("name"), substitute(variable_query_text(v), vals))
        for v in template_vars(dashboard)
        if v.get("type") == "query"
    ]


# --------------------------------------------------------------------------
# Grafana variable queries for the Prometheus datasource
# --------------------------------------------------------------------------


@dataclass
class VariableQuery:
    function: str  # label_names | label_values | metrics | query_result
    selector: str | None = None  # label_values' series selector, if any
    label: str | None = None  # label_values' label
    expr: str | None = None  # query_result's expression, metrics' regex


VARIABLE_FUNCS = ("label_names", "label_values", "metrics", "query_result")


def parse_variable_query(query: str) -> VariableQuery:
    """Parses a Prometheus template variable query (Grafana's syntax:
    label_names(), label_values(label), label_values(selector, label),
    metrics(regex), query_result(expr)). Raises PromQLError."""
    m = re.fullmatch(r"\s*([a-z_]+)\((.*)\)\s*", query, re.S)
    if not m:
        raise PromQLError(f"invalid variable query {query!r}")
    func, inner = m.group(1), m.group(2).strip()
    if func not in VARIABLE_FUNCS:
        raise PromQLError(f"invalid variable query function {func!r}")
    if func == "label_names":
        if inner:
            parse_promql(inner)
        return VariableQuery(func, selector=inner or None)
    if func == "metrics":
        return VariableQuery(func, expr=inner)
    if func == "query_result":
        parse_promql(inner)
        return VariableQuery(func, expr=inner)
    # label_values([selector,] label): the label is the last comma-separated
    # part outside of braces and quotes.
    depth, in_str, split = 0, None, -1
    i = 0
    while i < len(inner):
        c = inner[i]
        if in_str:
            if c == "\\" and in_str != "`":
                i += 1
            elif c == in_str:
                in_str = None
        elif c in "\"'`":
            in_str = c
        elif c in "({[":
            depth += 1
        elif c in ")}]":
            depth -= 1
        elif c == "," and depth == 0:
            split = i
        i += 1
    if split < 0:
        selector, label = None, inner
    else:
        selector, label = inner[:split].strip(), inner[split + 1 :].strip()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", label or ""):
        raise PromQLError(f"invalid label name {label!r} in {query!r}")
    if selector is not None:
        node = parse_promql(selector)
        if not isinstance(node, VectorSelector):
            raise PromQLError(f"label_values() needs a series selector, got {selector!r}")
    return VariableQuery(func, selector=selector, label=label)


# --------------------------------------------------------------------------
# The metrics contract (docs/metrics.md) and recording rules
# --------------------------------------------------------------------------


@dataclass
class MetricDef:
    name: str
    type: str  # counter | gauge | histogram | recording
    labels: frozenset | None  # None: unknown (recording rules)
    counter: bool = False  # cumulative: must be wrapped in rate/irate/increase


def parse_metrics_contract(path: Path = METRICS_DOC) -> dict[str, MetricDef]:
    """Series names from the table after `<!-- metrics-contract -->` (up to the
    next blank line). Histograms contribute _bucket (plus `le`), _sum, _count."""
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        start = next(i for i, l in enumerate(lines) if l.strip() == "<!-- metrics-contract -->")
    except StopIteration:
        raise AssertionError(f"{path}: no <!-- metrics-contract --> marker") from None
    rows = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        rows.append(line)
    out: dict[str, MetricDef] = {}
    header = None
    for line in rows:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = [c.lower() for c in cells]
            continue
        if all(set(c) <= set("-: ") for c in cells):
            continue
        row = dict(zip(header, cells))
        name = row["name"].strip("`")
        typ = row["type"].strip("`")
        labels = frozenset(
            l.strip().strip("`") for l in row["labels"].split(",") if l.strip().strip("`") not in ("", "—", "-")
        )
        if typ == "histogram":
            out[name + "_bucket"] = MetricDef(name + "_bucket", "histogram", labels | {"le"}, True)
            out[name + "_sum"] = MetricDef(name + "_sum", "histogram", labels, True)
            out[name + "_count"] = MetricDef(name + "_count", "histogram", labels, True)
        else:
            out[name] = MetricDef(name, typ, labels, typ == "counter")
    return out


def load_recording_rules(path: Path = RULES_FILE, contract: dict | None = None) -> dict[str, MetricDef]:
    """Recorded series names from alerts/forgeline.rules.yml (empty when the
    file does not exist yet). Their labels are derived from the rule's
    expression (the `by` labels of its aggregations, plus the rule's static
    labels); None when they cannot be derived (then any label is accepted)."""
    if not path.exists():
        return {}
    try:
        import yaml  # noqa: PLC0415
    except ModuleNotFoundError as e:
        raise AssertionError("missing Python module: yaml (pip install pyyaml)") from e
    contract = parse_metrics_contract() if contract is None else contract
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    out: dict[str, MetricDef] = {}
    for group in data.get("groups") or []:
        for rule in group.get("rules") or []:
            if "record" not in rule:
                continue
            try:
                labels = result_labels(parse_promql(str(rule.get("expr", ""))), contract, out)
            except PromQLError:
                labels = None
            if labels is not None:
                labels = frozenset(labels | set((rule.get("labels") or {}).keys()))
            out[rule["record"]] = MetricDef(rule["record"], "recording", labels, False)
    return out


def result_labels(node, contract: dict, recorded: dict | None = None) -> set | None:
    """The label names of an expression's result series (None: unknown)."""
    recorded = recorded or {}
    rec = lambda n: result_labels(n, contract, recorded)  # noqa: E731
    if isinstance(node, (ParenExpr, UnaryExpr)):
        return rec(node.expr)
    if isinstance(node, (NumberLiteral, StringLiteral)):
        return set()
    if isinstance(node, VectorSelector):
        m = contract.get(node.metric_name() or "") or recorded.get(node.metric_name() or "")
        if m is None or m.labels is None:
            return None
        return set(m.labels) | ({"job", "instance"} if m.type != "recording" else set())
    if isinstance(node, MatrixSelector):
        return rec(node.vector)
    if isinstance(node, SubqueryExpr):
        return rec(node.expr)
    if isinstance(node, AggregateExpr):
        if node.without:
            inner = rec(node.expr)
            return None if inner is None else inner - set(node.grouping)
        if node.op in ("topk", "bottomk"):
            return rec(node.expr)
        return set(node.grouping)
    if isinstance(node, Call):
        if node.type == "scalar" or node.func in ("vector", "time", "pi"):
            return set()
        vec = next((a for a in node.args if a.type in ("vector", "matrix")), None)
        inner = rec(vec) if vec is not None else set()
        if inner is None:
            return None
        if node.func == "histogram_quantile":
            return inner - {"le"}
        if node.func in ("label_replace", "label_join"):
            return inner | {node.args[1].value}
        return inner
    if isinstance(node, BinaryExpr):
        lhs, rhs = rec(node.lhs), rec(node.rhs)
        if node.lhs.type == "scalar":
            return rhs
        if node.rhs.type == "scalar":
            return lhs
        if node.op == "or":
            return None if lhs is None or rhs is None else lhs | rhs
        if node.group == "group_right":
            return None if rhs is None else rhs | set(node.group_labels)
        return None if lhs is None else lhs | set(node.group_labels)
    return None


# --------------------------------------------------------------------------
# PromQL parser (Prometheus 2.42 grammar subset that dashboards use)
# --------------------------------------------------------------------------


class PromQLError(ValueError):
    pass


# name -> (argument types, number of trailing optional args, variadic, return type)
# Types: "v" instant vector, "m" range vector, "s" scalar, "str" string.
_V, _M, _S, _STR = "vector", "matrix", "scalar", "string"


def _fn(args, ret=_V, optional=0, variadic=False):
    return (tuple(args), optional, variadic, ret)


FUNCTIONS = {
    "abs": _fn([_V]), "absent": _fn([_V]), "absent_over_time": _fn([_M]),
    "acos": _fn([_V]), "acosh": _fn([_V]), "asin": _fn([_V]), "asinh": _fn([_V]),
    "atan": _fn([_V]), "atanh": _fn([_V]), "avg_over_time": _fn([_M]),
    "ceil": _fn([_V]), "changes": _fn([_M]), "clamp": _fn([_V, _S, _S]),
    "clamp_max": _fn([_V, _S]), "clamp_min": _fn([_V, _S]), "cos": _fn([_V]),
    "cosh": _fn([_V]), "count_over_time": _fn([_M]),
    "days_in_month": _fn([_V], optional=1), "day_of_month": _fn([_V], optional=1),
    "day_of_week": _fn([_V], optional=1), "day_of_year": _fn([_V], optional=1),
    "deg": _fn([_V]), "delta": _fn([_M]), "deriv": _fn([_M]), "exp": _fn([_V]),
    "floor": _fn([_V]), "histogram_count": _fn([_V]), "histogram_sum": _fn([_V]),
    "histogram_fraction": _fn([_S, _S, _V]), "histogram_quantile": _fn([_S, _V]),
    "holt_winters": _fn([_M, _S, _S]), "hour": _fn([_V], optional=1),
    "idelta": _fn([_M]), "increase": _fn([_M]), "irate": _fn([_M]),
    "label_join": _fn([_V, _STR, _STR, _STR], variadic=True),
    "label_replace": _fn([_V, _STR, _STR, _STR, _STR]),
    "last_over_time": _fn([_M]), "ln": _fn([_V]), "log10": _fn([_V]), "log2": _fn([_V]),
    "max_over_time": _fn([_M]), "min_over_time": _fn([_M]), "minute": _fn([_V], optional=1),
    "month": _fn([_V], optional=1), "pi": _fn([], ret=_S), "predict_linear": _fn([_M, _S]),
    "present_over_time": _fn([_M]), "quantile_over_time": _fn([_S, _M]), "rad": _fn([_V]),
    "rate": _fn([_M]), "resets": _fn([_M]), "round": _fn([_V, _S], optional=1),
    "scalar": _fn([_V], ret=_S), "sgn": _fn([_V]), "sin": _fn([_V]), "sinh": _fn([_V]),
    "sort": _fn([_V]), "sort_desc": _fn([_V]), "sqrt": _fn([_V]),
    "stddev_over_time": _fn([_M]), "stdvar_over_time": _fn([_M]), "sum_over_time": _fn([_M]),
    "tan": _fn([_V]), "tanh": _fn([_V]), "time": _fn([], ret=_S), "timestamp": _fn([_V]),
    "vector": _fn([_S]), "year": _fn([_V], optional=1),
}

AGGREGATIONS = {
    "sum": None, "min": None, "max": None, "avg": None, "group": None,
    "stddev": None, "stdvar": None, "count": None,
    "count_values": _STR, "bottomk": _S, "topk": _S, "quantile": _S,
}

# Binary operator precedence (higher binds tighter), as in Prometheus' grammar.
BINARY_PRECEDENCE = {
    "or": 1,
    "and": 2, "unless": 2,
    "==": 3, "!=": 3, "<=": 3, "<": 3, ">=": 3, ">": 3,
    "+": 4, "-": 4,
    "*": 5, "/": 5, "%": 5, "atan2": 5,
    "^": 6,
}
COMPARISON_OPS = {"==", "!=", "<=", "<", ">=", ">"}
SET_OPS = {"and", "or", "unless"}
UNARY_PRECEDENCE = 5  # unary +/- binds like * (so -a^b == -(a^b))

DURATION_RE = re.compile(r"(?:[0-9]+(?:ms|s|m|h|d|w|y))+")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def duration_seconds(text: str) -> float:
    if not DURATION_RE.fullmatch(text):
        raise PromQLError(f"invalid duration {text!r}")
    total = 0.0
    for num, unit in re.findall(r"([0-9]+)(ms|s|m|h|d|w|y)", text):
        total += int(num) * _DURATION_UNITS[unit]
    return total


@dataclass
class Node:
    def children(self) -> list:
        return []


@dataclass
class NumberLiteral(Node):
    value: float
    type = _S


@dataclass
class StringLiteral(Node):
    value: str
    type = _STR


@dataclass
class Matcher:
    name: str
    op: str  # = != =~ !~
    value: str


@dataclass
class VectorSelector(Node):
    name: str | None
    matchers: list  # [Matcher], without the metric name
    offset: str | None = None
    at: str | None = None
    type = _V

    def metric_name(self):
        if self.name:
            return self.name
        for m in self.matchers:
            if m.name == "__name__" and m.op == "=":
                return m.value
        return None

    def __str__(self):
        ms = ", ".join(f'{m.name}{m.op}{json.dumps(m.value)}' for m in self.matchers)
        return f"{self.name or ''}{{{ms}}}" if ms else (self.name or "{}")


@dataclass
class MatrixSelector(Node):
    vector: VectorSelector
    range: str
    type = _M

    def children(self):
        return [self.vector]


@dataclass
class SubqueryExpr(Node):
    expr: Node
    range: str
    step: str | None
    offset: str | None = None
    at: str | None = None
    type = _M

    def children(self):
        return [self.expr]


@dataclass
class Call(Node):
    func: str
    args: list
    type: str = _V

    def children(self):
        return list(self.args)


@dataclass
class AggregateExpr(Node):
    op: str
    expr: Node
    param: Node | None
    grouping: list
    without: bool = False
    has_grouping: bool = False
    type = _V

    def children(self):
        return ([self.param] if self.param is not None else []) + [self.expr]


@dataclass
class BinaryExpr(Node):
    op: str
    lhs: Node
    rhs: Node
    return_bool: bool = False
    matching: str | None = None  # "on" | "ignoring"
    matching_labels: list = field(default_factory=list)
    group: str | None = None  # "group_left" | "group_right"
    group_labels: list = field(default_factory=list)
    type: str = _V

    def children(self):
        return [self.lhs, self.rhs]


@dataclass
class UnaryExpr(Node):
    op: str
    expr: Node
    type: str = _V

    def children(self):
        return [self.expr]


@dataclass
class ParenExpr(Node):
    expr: Node
    type: str = _V

    def children(self):
        return [self.expr]


def walk(node: Node, fn, parents=None):
    """Calls fn(node, parents) for every node, depth first (like
    prometheus/promql/parser.Walk: `parents` is the path from the root)."""
    parents = [] if parents is None else parents
    fn(node, parents)
    for child in node.children():
        walk(child, fn, parents + [node])


def selectors(node: Node) -> list[VectorSelector]:
    out = []
    walk(node, lambda n, _p: out.append(n) if isinstance(n, VectorSelector) else None)
    return out


_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+|\#[^\n]*)
  | (?P<duration>(?:[0-9]+(?:ms|s|m|h|d|w|y))+(?![A-Za-z0-9_.]))
  | (?P<number>0[xX][0-9a-fA-F]+|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_:]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`[^`]*`)
  | (?P<op>==|!=|<=|>=|=~|!~|[-+*/%^<>=])
  | (?P<punct>[(){}\[\],:@])
    """,
    re.X,
)

_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


def _unquote(tok: str) -> str:
    q, body = tok[0], tok[1:-1]
    if q == "`":
        return body
    out, i = [], 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        i += 1
        e = body[i]
        if e in _ESCAPES:
            out.append(_ESCAPES[e])
            i += 1
        elif e == q:
            out.append(e)
            i += 1
        elif e == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", body[i + 1 : i + 3]):
            out.append(chr(int(body[i + 1 : i + 3], 16)))
            i += 3
        elif e == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", body[i + 1 : i + 5]):
            out.append(chr(int(body[i + 1 : i + 5], 16)))
            i += 5
        elif e in "01234567" and re.fullmatch(r"[0-7]{3}", body[i : i + 3]):
            out.append(chr(int(body[i : i + 3], 8)))
            i += 3
        else:
            raise PromQLError(f"unknown escape sequence \\{e} in string {tok}")
    return "".join(out)


def tokenize(expr: str) -> list[tuple[str, str, int]]:
    toks, pos = [], 0
    while pos < len(expr):
        m = _TOKEN_RE.match(expr, pos)
        if not m:
            raise PromQLError(f"unexpected character {expr[pos]!r} at {pos} in {expr!r}")
        kind = m.lastgroup
        if kind != "ws":
            toks.append((kind, m.group(0), pos))
        pos = m.end()
    toks.append(("eof", "", len(expr)))
    return toks


class _Parser:
    def __init__(self, expr: str):
        self.expr = expr
        self.toks = tokenize(expr)
        self.i = 0

    # -- token helpers
    def peek(self, k=0):
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def next(self):
        t = self.toks[self.i]
        self.i += 1
        return t

    def error(self, msg, tok=None):
        tok = tok or self.peek()
        raise PromQLError(f"{msg} at position {tok[2]} in {self.expr!r}")

    def accept(self, value, kind=None):
        t = self.peek()
        if t[1] == value and (kind is None or t[0] == kind) and t[0] != "string":
            self.i += 1
            return True
        return False

    def expect(self, value):
        if not self.accept(value):
            self.error(f"expected {value!r}, got {self.peek()[1]!r}")

    # -- grammar
    def parse(self) -> Node:
        if self.peek()[0] == "eof":
            self.error("empty expression")
        node = self.parse_expr(0)
        if self.peek()[0] != "eof":
            self.error(f"unexpected {self.peek()[1]!r}")
        return node

    def binary_op(self):
        t = self.peek()
        if t[0] == "op" and t[1] in BINARY_PRECEDENCE:
            return t[1]
        if t[0] == "ident" and t[1] in ("and", "or", "unless", "atan2"):
            return t[1]
        return None

    def parse_expr(self, min_prec: int) -> Node:
        lhs = self.parse_unary()
        while True:
            op = self.binary_op()
            if op is None:
                return lhs
            prec = BINARY_PRECEDENCE[op]
            if prec < min_prec:
                return lhs
            optok = self.next()
            node = BinaryExpr(op, lhs, None)
            if self.peek()[1] == "bool" and self.peek()[0] == "ident":
                self.next()
                if op not in COMPARISON_OPS:
                    self.error("bool modifier can only be used on comparison operators", optok)
                node.return_bool = True
            if self.peek()[0] == "ident" and self.peek()[1] in ("on", "ignoring"):
                node.matching = self.next()[1]
                node.matching_labels = self.label_list()
                if self.peek()[0] == "ident" and self.peek()[1] in ("group_left", "group_right"):
                    if op in SET_OPS:
                        self.error("no grouping allowed for set operations", optok)
                    node.group = self.next()[1]
                    node.group_labels = self.label_list() if self.peek()[1] == "(" else []
            # ^ is right-associative, everything else left-associative.
            rhs = self.parse_expr(prec if op == "^" else prec + 1)
            node.rhs = rhs
            self.check_binary(node, optok)
            lhs = node

    def check_binary(self, node: BinaryExpr, optok):
        lt, rt = node.lhs.type, node.rhs.type
        for t in (lt, rt):
            if t not in (_S, _V):
                self.error(f"binary expression must contain only scalar and instant vector types, got {t}", optok)
        if node.op in SET_OPS and (lt != _V or rt != _V):
            self.error(f"set operator {node.op!r} not allowed in binary scalar expression", optok)
        if node.op in COMPARISON_OPS and lt == _S and rt == _S and not node.return_bool:
            self.error("comparisons between scalars must use BOOL modifier", optok)
        if (node.matching or node.group) and (lt != _V or rt != _V):
            self.error("vector matching only allowed between instant vectors", optok)
        node.type = _V if _V in (lt, rt) else _S

    def parse_unary(self) -> Node:
        t = self.peek()
        if t[0] == "op" and t[1] in ("+", "-"):
            self.next()
            operand = self.parse_expr(UNARY_PRECEDENCE + 1)
            if operand.type not in (_S, _V):
                self.error(f"unary expression only allowed on expressions of type scalar or instant vector, got {operand.type}", t)
            return UnaryExpr(t[1], operand, type=operand.type)
        return self.parse_postfix(self.parse_primary())

    def parse_postfix(self, node: Node) -> Node:
        while True:
            t = self.peek()
            if t[1] == "[" and t[0] == "punct":
                self.next()
                rng = self.duration()
                if self.accept(":"):
                    step = None
                    if not (self.peek()[1] == "]" and self.peek()[0] == "punct"):
                        step = self.duration()
                    self.expect("]")
                    if node.type != _V:
                        self.error(f"subquery is only allowed on instant vector, got {node.type}", t)
                    node = SubqueryExpr(node, rng, step)
                else:
                    self.expect("]")
                    if not isinstance(node, VectorSelector):
                        self.error("ranges only allowed for vector selectors", t)
                    if node.offset or node.at:
                        self.error("no offset/@ modifiers allowed before range", t)
                    node = MatrixSelector(node, rng)
            elif t[0] == "ident" and t[1] == "offset":
                self.next()
                neg = self.accept("-", "op")
                d = ("-" if neg else "") + self.duration()
                target = self.modifier_target(node, t)
                if target.offset is not None:
                    self.error("offset may not be set multiple times", t)
                target.offset = d
            elif t[1] == "@" and t[0] == "punct":
                self.next()
                nt = self.next()
                if nt[0] == "ident" and nt[1] in ("start", "end"):
                    self.expect("(")
                    self.expect(")")
                    at = nt[1] + "()"
                elif nt[0] == "number":
                    at = nt[1]
                else:
                    self.error("@ modifier needs a timestamp, start() or end()", nt)
                target = self.modifier_target(node, t)
                if target.at is not None:
                    self.error("@ may not be set multiple times", t)
                target.at = at
            else:
                return node

    def modifier_target(self, node, tok):
        if isinstance(node, (VectorSelector, SubqueryExpr)):
            return node
        if isinstance(node, MatrixSelector):
            return node.vector
        self.error("offset/@ modifier must be preceded by a selector or a subquery", tok)

    def duration(self) -> str:
        t = self.next()
        if t[0] != "duration":
            self.error(f"expected a duration, got {t[1]!r}", t)
        if duration_seconds(t[1]) <= 0:
            self.error("duration must be greater than 0", t)
        return t[1]

    def label_list(self) -> list[str]:
        self.expect("(")
        labels = []
        while not self.accept(")"):
            t = self.next()
            if t[0] != "ident" or ":" in t[1]:
                self.error(f"invalid label name {t[1]!r}", t)
            labels.append(t[1])
            if not self.accept(","):
                self.expect(")")
                break
        return labels

    def parse_primary(self) -> Node:
        t = self.peek()
        kind, val = t[0], t[1]
        if kind == "number":
            self.next()
            return NumberLiteral(float(int(val, 16)) if val.lower().startswith("0x") else float(val))
        if kind == "duration":
            self.error(f"unexpected duration {val!r}")
        if kind == "string":
            self.next()
            return StringLiteral(_unquote(val))
        if kind == "punct" and val == "(":
            self.next()
            inner = self.parse_expr(0)
            self.expect(")")
            return ParenExpr(inner, type=inner.type)
        if kind == "punct" and val == "{":
            return self.vector_selector(None)
        if kind == "ident":
            nxt = self.peek(1)
            if val in AGGREGATIONS and (nxt[1] in ("(", "by", "without")):
                return self.aggregation()
            if nxt[1] == "(" and nxt[0] == "punct":
                if val not in FUNCTIONS:
                    self.error(f"unknown function with name {val!r}")
                return self.call()
            if val.lower() in ("inf", "nan"):
                self.next()
                return NumberLiteral(float(val.lower()))
            if val in ("by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"):
                self.error(f"unexpected keyword {val!r}")
            self.next()
            return self.vector_selector(val)
        self.error(f"unexpected {val!r}")

    def vector_selector(self, name) -> VectorSelector:
        matchers = []
        if self.accept("{"):
            while not self.accept("}"):
                lt = self.next()
                if lt[0] != "ident" or ":" in lt[1]:
                    self.error(f"invalid label name {lt[1]!r} in selector", lt)
                ot = self.next()
                if ot[0] != "op" or ot[1] not in ("=", "!=", "=~", "!~"):
                    self.error(f"expected a label matching operator, got {ot[1]!r}", ot)
                st = self.next()
                if st[0] != "string":
                    self.error(f"expected a string for label {lt[1]!r}, got {st[1]!r}", st)
                value = _unquote(st[1])
                if ot[1] in ("=~", "!~"):
                    try:
                        re.compile(value)
                    except re.error as e:
                        self.error(f"invalid regular expression {value!r}: {e}", st)
                matchers.append(Matcher(lt[1], ot[1], value))
                if not self.accept(","):
                    self.expect("}")
                    break
        if name is None:
            if not any(not _matches_empty(m) for m in matchers):
                self.error("vector selector must contain at least one non-empty matcher")
        elif any(m.name == "__name__" for m in matchers):
            self.error("metric name must not be set twice")
        return VectorSelector(name, matchers)

    def call(self) -> Call:
        name = self.next()[1]
        self.expect("(")
        args = []
        if not self.accept(")"):
            while True:
                args.append(self.parse_expr(0))
                if self.accept(","):
                    continue
                self.expect(")")
                break
        types, optional, variadic, ret = FUNCTIONS[name]
        n_min = len(types) - optional
        if len(args) < n_min or (not variadic and len(args) > len(types)):
            self.error(f"function {name!r} expects {n_min}..{len(types)} arguments, got {len(args)}")
        for i, a in enumerate(args):
            want = types[min(i, len(types) - 1)]
            if a.type != want:
                self.error(f"expected type {want} in call to function {name!r}, got {a.type}")
        return Call(name, args, type=ret)

    def aggregation(self) -> AggregateExpr:
        op = self.next()[1]
        grouping, without, has_grouping = [], False, False
        if self.peek()[1] in ("by", "without"):
            without = self.next()[1] == "without"
            grouping = self.label_list()
            has_grouping = True
        self.expect("(")
        args = [self.parse_expr(0)]
        while self.accept(","):
            args.append(self.parse_expr(0))
        self.expect(")")
        if not has_grouping and self.peek()[0] == "ident" and self.peek()[1] in ("by", "without"):
            without = self.next()[1] == "without"
            grouping = self.label_list()
            has_grouping = True
        ptype = AGGREGATIONS[op]
        if ptype is None:
            if len(args) != 1:
                self.error(f"wrong number of arguments for aggregate expression {op!r}")
            param, expr = None, args[0]
        else:
            if len(args) != 2:
                self.error(f"wrong number of arguments for aggregate expression {op!r}")
            param, expr = args
            if param.type != ptype:
                self.error(f"expected type {ptype} in aggregation parameter, got {param.type}")
        if expr.type != _V:
            self.error(f"expected type instant vector in aggregation expression, got {expr.type}")
        return AggregateExpr(op, expr, param, grouping, without, has_grouping)


def _matches_empty(m: Matcher) -> bool:
    if m.op == "=":
        return m.value == ""
    if m.op == "!=":
        return m.value != ""
    rx = re.compile(m.value)
    full = rx.fullmatch("") is not None
    return full if m.op == "=~" else not full


def parse_promql(expr: str) -> Node:
    """Parses a PromQL expression (raises PromQLError)."""
    return _Parser(expr).parse()


def unwrap(node: Node) -> Node:
    while isinstance(node, ParenExpr):
        node = node.expr
    return node
