"""The files the chart ships: copies that must not drift, and dashboards built on the contract.

* ``charts/lvm-rollout/crds/lvmrollout.yaml`` is byte-identical to the generated ``crds/``;
* ``charts/lvm-rollout/files/lvm-alerts.rules.yaml`` is byte-identical to the generated alert
  rules, and the PrometheusRule the chart renders carries exactly those rules;
* the five Grafana dashboards are valid JSON, query only the contract's metrics (counters by
  their one ``_total`` name, never also the legacy exporter's same-named gauge), group by
  rollout/version(/lane), and every PromQL expression parses
  (``promtool check rules`` on a rules file generated from them).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from lvm_operator import metrics as om
from lvm_operator.alerts import RULES_FILE
from lvm_serving.contracts import metrics as mc

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "lvm-rollout"
DASHBOARDS = CHART / "dashboards"

SEED_DASHBOARDS = {
    "LVM performance overview", "LVM lane health", "LVM latency breakdown",
    "LVM error tracking", "LVM A/B comparison",
}

# Grafana's variables, replaced by plain PromQL before promtool parses an expression.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m", "$window": "1h",
    "$rollout": ".*", "$version": ".*", "$lane": ".*",
}


def _dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def _panel_exprs(board: dict) -> list[str]:
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


def _all_dashboard_exprs() -> list[tuple[str, str]]:
    return [(name, e) for name, board in _dashboards().items() for e in _panel_exprs(board)]


def _substitute(expr: str) -> str:
    for var, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unknown Grafana variable left in {expr!r}"
    return expr


def _promtool_parses(tools, exprs: list[str], tmp_path: Path) -> None:
    """Every expression as a recording rule: ``promtool check rules`` parses each one."""
    rules = {"groups": [{"name": "chart-exprs", "rules": [
        {"record": f"chart_check:expr_{i}", "expr": e} for i, e in enumerate(exprs)
    ]}]}
    path = tmp_path / "exprs.rules.yaml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    proc = subprocess.run([str(tools.promtool), "check", "rules", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in proc.stdout, proc.stdout


# --- byte-identical copies ------------------------------------------------------------------


def test_chart_crd_is_the_generated_crd():
    assert (CHART / "crds" / "lvmrollout.yaml").read_bytes() == \
        (REPO_ROOT / "crds" / "lvmrollout.yaml").read_bytes(), (
        "charts/lvm-rollout/crds/lvmrollout.yaml drifted: cp crds/lvmrollout.yaml "
        "charts/lvm-rollout/crds/"
    )


def test_chart_ships_every_crd_of_crds_dir():
    """Whatever crds/ holds (e.g. a Kopf peering CRD added later) ships identically."""
    for src in sorted((REPO_ROOT / "crds").glob("*.yaml")):
        shipped = CHART / "crds" / src.name
        assert shipped.exists(), f"{src.name} is in crds/ but not in charts/lvm-rollout/crds/"
        assert shipped.read_bytes() == src.read_bytes(), f"charts/lvm-rollout/crds/{src.name}"


def test_kopf_peering_crds_are_shipped():
    docs = list(yaml.safe_load_all((CHART / "crds" / "kopf-peering.yaml").read_text()))
    kinds = {d["spec"]["names"]["kind"]: d for d in docs}
    assert set(kinds) == {"KopfPeering", "ClusterKopfPeering"}
    assert kinds["KopfPeering"]["spec"]["scope"] == "Namespaced"
    assert kinds["ClusterKopfPeering"]["spec"]["scope"] == "Cluster"
    for crd in docs:
        assert crd["spec"]["group"] == "kopf.dev"
        status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
        assert status["x-kubernetes-preserve-unknown-fields"] is True


def test_chart_alert_rules_are_the_generated_rules():
    assert (CHART / "files" / "lvm-alerts.rules.yaml").read_bytes() == RULES_FILE.read_bytes(), (
        "charts/lvm-rollout/files/lvm-alerts.rules.yaml drifted: copy "
        "operator/lvm_operator/alerts/lvm-alerts.rules.yaml over it"
    )


# --- dashboards -----------------------------------------------------------------------------


def test_the_seed_five_dashboards_are_valid_json_with_unique_uids():
    boards = _dashboards()
    assert {b["title"] for b in boards.values()} == SEED_DASHBOARDS
    uids = [b["uid"] for b in boards.values()]
    assert len(set(uids)) == len(uids) == 5
    for name, board in boards.items():
        assert name == f"{board['uid']}.json"
        assert board["panels"], name
        ids = [p["id"] for p in board["panels"]]
        assert len(set(ids)) == len(ids), f"{name}: duplicate panel ids"
        assert _panel_exprs(board), f"{name} has no queries"


def test_dashboards_are_read_only_and_every_panel_says_what_it_shows():
    # Provisioned from the chart: an edit in Grafana's UI would be lost on the next sync, so the
    # dashboards say so (editable: false); each panel carries a description (Grafana's "i").
    for name, board in _dashboards().items():
        assert board["editable"] is False, name
        stack = list(board["panels"])
        while stack:
            panel = stack.pop()
            stack.extend(panel.get("panels", []))
            text = panel.get("description", "")
            assert 20 <= len(text) <= 300, f"{name}: panel {panel['title']!r} needs a description"


def test_dashboards_query_only_contract_metrics():
    counters = {mc.exported_series(m) for m in mc.ALL_METRICS if m.kind is mc.MetricKind.COUNTER}
    histogram_series = {
        mc.exported_series(m, s) for m in mc.ALL_METRICS if m.kind is mc.MetricKind.HISTOGRAM
        for s in ("_bucket", "_sum", "_count")
    }
    used: set[str] = set()
    for name, expr in _all_dashboard_exprs():
        for regex in re.findall(r'__name__=~"([^"]+)"', expr):
            assert regex in counters, f"{name}: {regex!r} is not a contract counter"
            assert regex.endswith("_total"), f"{name}: {regex!r}: counters by their _total name"
            used.add(regex)
        for metric in re.findall(r"\b(ray_[a-z0-9_]+)\{", expr):
            assert metric in histogram_series, f"{name}: {metric!r} is not a contract series"
            used.add(metric)
        assert "(_total)?" not in expr, f"{name}: a selector matching the legacy exporter's " \
            "gauge too counts every event twice"
    # Every metric of the contract shows up somewhere.
    for metric in mc.ALL_METRICS:
        wanted = (mc.exported_series(metric) if metric.kind is mc.MetricKind.COUNTER
                  else mc.exported_series(metric, "_bucket"))
        assert wanted in used, f"no dashboard shows {metric.name}"


ROLLOUT_GAUGES = {om.ROLLOUT_INFO, om.ROLLOUT_WEIGHT, om.ROLLOUT_STEP, om.ROLLOUT_CONDITION,
                  om.ROLLOUT_MEASUREMENT}


def test_dashboards_group_by_rollout_and_version():
    lane_grouped = 0
    for name, expr in _all_dashboard_exprs():
        clauses = re.findall(r"\bby \(([^)]*)\)", expr)
        assert clauses, f"{name}: {expr!r} is not grouped"
        for clause in clauses:
            labels = {s.strip() for s in clause.split(",")}
            assert mc.LABEL_ROLLOUT in labels, f"{name}: by ({clause}) lacks rollout"
        outer = {s.strip() for s in clauses[0].split(",")}
        if "lvm_rollout_" in expr:  # the operator's per-rollout gauges: one series a rollout
            assert re.findall(r"\b(lvm_rollout_[a-z_]+)\{", expr)[0] in ROLLOUT_GAUGES, expr
            continue
        assert {mc.LABEL_ROLLOUT, mc.LABEL_VERSION} <= outer, f"{name}: {expr!r}"
        lane_grouped += mc.LABEL_LANE in outer
    assert lane_grouped >= 5, "lane health needs per-lane panels"


def test_dashboards_filter_by_the_rollout_and_version_variables():
    for name, board in _dashboards().items():
        variables = {v["name"] for v in board["templating"]["list"]}
        assert {"datasource", "rollout", "version"} <= variables, name
        for expr in _panel_exprs(board):
            assert 'rollout=~"$rollout"' in expr, f"{name}: {expr!r}"


def test_dashboard_promql_parses(tools, tmp_path):
    exprs = [_substitute(e) for _, e in _all_dashboard_exprs()]
    # The variables' label_values(<selector>, label): the selector must parse too.
    for board in _dashboards().values():
        for var in board["templating"]["list"]:
            if var["type"] == "query":
                m = re.fullmatch(r"label_values\((.*), (\w+)\)", var["definition"])
                assert m, var["definition"]
                exprs.append(_substitute(m.group(1)))
    _promtool_parses(tools, exprs, tmp_path)


# --- the PrometheusRule -----------------------------------------------------------------------


def test_prometheus_rule_carries_the_generated_rules_and_promtool_accepts_them(tools, tmp_path):
    proc = subprocess.run(
        [str(tools.helm), "template", "lvm-rollout", str(CHART), "-n", "ml",
         "--set", "monitoring.prometheusRule.enabled=true"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    rules = [d for d in yaml.safe_load_all(proc.stdout) if d and d["kind"] == "PrometheusRule"]
    assert len(rules) == 1
    spec = rules[0]["spec"]
    assert spec == yaml.safe_load(RULES_FILE.read_text())
    # The annotations keep Prometheus' own templates: Helm did not evaluate them.
    summaries = [r["annotations"]["summary"] for g in spec["groups"] for r in g["rules"]]
    assert all("{{ $labels.version }}" in s or "{{ $labels.rollout }}" in s for s in summaries)
    path = tmp_path / "from-chart.rules.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    check = subprocess.run([str(tools.promtool), "check", "rules", str(path)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 12 rules found" in check.stdout


@pytest.mark.parametrize("expr", ['sum by (rollout (rate(x[5m]))', "rate(x[$window])"])
def test_the_parse_check_rejects_broken_promql(tools, tmp_path, expr):
    """The promtool check above is a real parse: broken PromQL fails it."""
    with pytest.raises(AssertionError):
        _promtool_parses(tools, [expr], tmp_path)
