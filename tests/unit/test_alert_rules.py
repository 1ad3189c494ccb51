"""Alert rules: the checked-in file is the rendered one, promtool accepts it, and its unit tests
in tests/promtool/ (the seed's thresholds, exact boundaries, missing hit series) pass."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from lvm_operator.alerts import RULES_FILE, AlertThresholds, alert_rules, render_rules_yaml
from lvm_operator.alerts.__main__ import main as alerts_main
from lvm_operator.alerts.rules import RUNBOOK_BASE

PROMTOOL = shutil.which("promtool")
PROMTOOL_TESTS = Path(__file__).resolve().parents[1] / "promtool"
REPO_ROOT = Path(__file__).resolve().parents[2]

needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed")


def test_checked_in_rules_match_the_contract():
    assert RULES_FILE.read_text() == render_rules_yaml(), (
        "lvm-alerts.rules.yaml is stale: run `python -m lvm_operator.alerts`"
    )


def test_check_mode_reports_drift(tmp_path):
    stale = tmp_path / "rules.yaml"
    stale.write_text("groups: []\n")
    assert alerts_main(["--check", str(stale)]) == 1
    assert alerts_main([str(stale)]) == 0
    assert alerts_main(["--check", str(stale)]) == 0


def test_seed_alerts_are_all_there():
    rules = {r["alert"]: r for r in alert_rules()}
    assert set(rules) == {"LVMHit5ProxyLow", "LVMLatencyP95High", "LVMErrorRateHigh",
                          "LVMLaneBelowOverall", "LVMEmptyHitRateHigh"}
    assert "< 0.6\n" in rules["LVMHit5ProxyLow"]["expr"]
    assert "> 0.01\n" in rules["LVMLatencyP95High"]["expr"]
    assert "> 0.01\n" in rules["LVMErrorRateHigh"]["expr"]
    assert "(0.8 * " in rules["LVMLaneBelowOverall"]["expr"]
    assert "> 0.2\n" in rules["LVMEmptyHitRateHigh"]["expr"]
    for rule in rules.values():
        assert 'shadow!="true"' in rule["expr"]  # alerts are about what clients received


def test_thresholds_are_parameters():
    rules = {r["alert"]: r for r in alert_rules(AlertThresholds(p95_latency_seconds=0.02))}
    assert "> 0.02\n" in rules["LVMLatencyP95High"]["expr"]
    assert "> 20ms" in rules["LVMLatencyP95High"]["annotations"]["summary"]


def test_rules_file_is_valid_yaml_with_serving_and_evaluation_groups():
    doc = yaml.safe_load(RULES_FILE.read_text())
    assert [g["name"] for g in doc["groups"]] == ["lvm-serving", "lvm-evaluation",
                                                  "lvm-rollouts"]
    evaluation = {r["alert"]: r for r in doc["groups"][1]["rules"]}
    assert set(evaluation) == {"LVMModelDrift", "LVMLaneUnhealthy"}
    # Both fire on the operator's exported judgement (one source of truth for the limits).
    assert "lvm_eval_drift_detected == 1" in evaluation["LVMModelDrift"]["expr"]
    assert evaluation["LVMLaneUnhealthy"]["expr"] == "lvm_lane_below_overall_ratio > 0"


@needs_promtool
def test_promtool_check_rules():
    proc = subprocess.run([PROMTOOL, "check", "rules", str(RULES_FILE)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 12 rules found" in proc.stdout  # 5 serving + 2 evaluation + 5 rollout


@needs_promtool
@pytest.mark.parametrize("test_file", sorted(PROMTOOL_TESTS.glob("*.test.yaml")),
                         ids=lambda p: p.name)
def test_promtool_test_rules(test_file):
    proc = subprocess.run([PROMTOOL, "test", "rules", test_file.name], cwd=test_file.parent,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _every_alert() -> list[dict]:
    doc = yaml.safe_load(RULES_FILE.read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def test_every_alert_links_its_runbook_section_in_the_readme():
    readme = (REPO_ROOT / "README.md").read_text()
    headings = {line.removeprefix("### ").strip().lower()
                for line in readme.splitlines() if line.startswith("### ")}
    chart = yaml.safe_load((REPO_ROOT / "charts" / "lvm-rollout" / "Chart.yaml").read_text())
    assert f"{chart['home']}/blob/main/README.md" == RUNBOOK_BASE
    for rule in _every_alert():
        url = rule["annotations"].get("runbook_url", "")
        assert url == f"{RUNBOOK_BASE}#{rule['alert'].lower()}", rule["alert"]
        assert rule["alert"].lower() in headings, f"README has no '### {rule['alert']}'"


def test_every_alert_waits_before_it_fires_except_the_rollout_states():
    # A serving or evaluation number must hold (for:) before it pages; the rollout alerts fire
    # on a condition the operator set once, on purpose (RolledBack does not flap).
    for rule in _every_alert():
        if rule["labels"]["component"] == "lvm-rollout":
            assert "for" not in rule, rule["alert"]
        else:
            assert rule.get("for") in ("5m", "10m", "15m"), rule["alert"]


@needs_promtool
def test_promtool_lint_all_is_clean():
    proc = subprocess.run([PROMTOOL, "check", "rules", "--lint=all", "--lint-fatal",
                           str(RULES_FILE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
