"""Prometheus alert rules for LVM serving, rendered from the metric contract.

The seed plan's "Alerts (PagerDuty/Slack)" table: Hit@5 proxy below 60 %, P95 latency above
10 ms, error rate above 1 %, any lane more than 20 % below the overall Hit@5 proxy, empty-hit
rate above 20 %. They watch production as clients see it, so shadow copies are excluded, and
they are independent of any rollout: they fire for a champion that degrades long after its
rollout finished.

A third group, ``lvm-rollouts``, pages on the rollouts themselves (rolled back, gate blocked,
no data past its limit, stalled), from the operator's ``lvm_rollout_condition``.

A second group, ``lvm-evaluation``, alerts on what the operator measures offline and exports
(:mod:`lvm_operator.metrics`): the seed's weekly drift check (``LVMModelDrift``) and its lane
health check (``LVMLaneUnhealthy``, a lane more than 15 % below its version's overall, from
production metrics or the eval set). The operator judges those against each rollout's own
limits; the alerts fire on its judgement and show the numbers.

The checked-in ``lvm-alerts.rules.yaml`` next to this module is the output of
:func:`render_rules_yaml`; a test fails when they differ. Regenerate with
``python -m lvm_operator.alerts``. ``tests/promtool/`` holds ``promtool test rules`` cases.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lvm_serving.contracts import metrics as mc

from .. import metrics as om
from ..analysis import promql
from ..analysis.promql import BY_LANE, BY_VERSION, ShadowFilter

RULES_FILE = Path(__file__).with_name("lvm-alerts.rules.yaml")
GROUP_NAME = "lvm-serving"
EVAL_GROUP_NAME = "lvm-evaluation"


@dataclass(frozen=True)
class AlertThresholds:
    """The seed's alert thresholds (its "Alert Threshold" column) and the evidence they need."""

    hit5_proxy_min: float = 0.60  # fires when below
    p95_latency_seconds: float = 0.010  # fires when above
    error_rate_max: float = 0.01  # fires when above (server errors: NaN/Inf, exceptions, timeouts)
    empty_hit_rate_max: float = 0.20  # fires when above
    lane_below_overall_max: float = 0.20  # fires when a lane is more than this far below overall
    fast_window_s: float = 300.0  # latency, errors, empty hits
    quality_window_s: float = 3600.0  # Hit@5 proxy and lanes accumulate feedback slowly
    min_requests: int = 100  # per version and fast window, before request-based alerts fire
    min_feedback: int = 100  # per version (and per lane) and quality window
    fast_for_s: float = 300.0
    quality_for_s: float = 900.0
    #: The offline judgements are re-exported on every operator tick; an alert waits this long so
    #: a value that one check flips and the next flips back (or a restart's first export) pages
    #: no one.
    evaluation_for_s: float = 600.0


_X = ShadowFilter.EXCLUDE

#: Every alert's ``runbook_url``: its section of the README's "Runbook" (the chart's home).
RUNBOOK_BASE = "https://github.com/lvm-rollout/lvm-rollout/blob/main/README.md"

def runbook_url(alert: str) -> str:
    return f"{RUNBOOK_BASE}#{alert.lower()}"


def _num(x: float) -> str:
    return f"{x:.10g}"


def _requests(window_s: float, by: tuple[str, ...]) -> str:
    return promql.increase(mc.REQUESTS, window_s, by=by, shadow=_X)


def _feedback(window_s: float, by: tuple[str, ...]) -> str:
    return promql.increase(mc.FEEDBACK, window_s, by=by, shadow=_X)


def _hit5_ratio(window_s: float, by: tuple[str, ...]) -> str:
    return promql.ratio(promql.hit5_proxy_increase(window_s, by=by, shadow=_X),
                        _feedback(window_s, by))


def _at_least(lhs: str, on: tuple[str, ...], count_expr: str, n: int) -> str:
    return f"(\n  {lhs}\n)\nand on ({', '.join(on)})\n(\n  {count_expr} >= {n}\n)"


def alert_rules(t: AlertThresholds = AlertThresholds()) -> list[dict[str, Any]]:
    """The alerting rules as plain dicts (one Prometheus rule each)."""
    fast, slow = t.fast_window_s, t.quality_window_s
    fast_txt, slow_txt = promql.duration(fast), promql.duration(slow)
    where = "{{ $labels.version }} ({{ $labels.rollout }})"

    error_ratio = promql.ratio(
        promql.server_error_increase(fast, by=BY_VERSION, shadow=_X), _requests(fast, BY_VERSION)
    )
    empty_ratio = promql.ratio(
        promql.increase(mc.EMPTY_HITS, fast, by=BY_VERSION, shadow=_X), _requests(fast, BY_VERSION)
    )
    p95 = promql.latency_quantile(0.95, fast, by=BY_VERSION, shadow=_X)
    lane_factor = 1.0 - t.lane_below_overall_max

    def rule(name: str, expr: str, for_s: float, severity: str, summary: str,
             description: str) -> dict[str, Any]:
        return {
            "alert": name,
            "expr": expr,
            "for": promql.duration(for_s),
            "labels": {"severity": severity, "component": "lvm-serving"},
            "annotations": {"summary": summary, "description": description,
                            "runbook_url": runbook_url(name)},
        }

    return [
        rule(
            "LVMHit5ProxyLow",
            _at_least(f"{_hit5_ratio(slow, BY_VERSION)} < {_num(t.hit5_proxy_min)}", BY_VERSION,
                      _feedback(slow, BY_VERSION), t.min_feedback),
            t.quality_for_s, "warning",
            f"LVM {where}: Hit@5 proxy {{{{ $value | humanizePercentage }}}} < "
            f"{_num(t.hit5_proxy_min * 100)}%",
            f"Share of click feedback whose concept had cosine > {mc.HIT_PROXY_COSINE[5]} to the "
            f"prediction, over {slow_txt} (at least {t.min_feedback} feedback events).",
        ),
        rule(
            "LVMLatencyP95High",
            _at_least(f"{p95} > {_num(t.p95_latency_seconds)}", BY_VERSION,
                      _requests(fast, BY_VERSION), t.min_requests),
            t.fast_for_s, "critical",
            f"LVM {where}: P95 latency {{{{ $value | humanizeDuration }}}} > "
            f"{_num(t.p95_latency_seconds * 1000)}ms",
            f"Model + retrieval latency P95 over {fast_txt} "
            f"(at least {t.min_requests} requests).",
        ),
        rule(
            "LVMErrorRateHigh",
            _at_least(f"{error_ratio} > {_num(t.error_rate_max)}", BY_VERSION,
                      _requests(fast, BY_VERSION), t.min_requests),
            t.fast_for_s, "critical",
            f"LVM {where}: error rate {{{{ $value | humanizePercentage }}}} > "
            f"{_num(t.error_rate_max * 100)}%",
            f"Server-side errors ({', '.join(r.value for r in mc.SERVER_ERROR_REASONS)}; NaN/Inf "
            f"outputs included, bad input excluded) per request over {fast_txt}.",
        ),
        rule(
            "LVMLaneBelowOverall",
            _at_least(
                f"{_hit5_ratio(slow, BY_LANE)}\n  < on ({', '.join(BY_VERSION)}) group_left ()\n"
                f"  ({_num(lane_factor)} * {_hit5_ratio(slow, BY_VERSION)})",
                BY_LANE, _feedback(slow, BY_LANE), t.min_feedback,
            ),
            t.quality_for_s, "warning",
            f"LVM {where}: lane {{{{ $labels.lane }}}} Hit@5 proxy "
            f"{{{{ $value | humanizePercentage }}}} is more than "
            f"{_num(t.lane_below_overall_max * 100)}% below the version's overall",
            f"A TMD lane's Hit@5 proxy over {slow_txt} is below {_num(lane_factor)} x the "
            f"version's overall Hit@5 proxy (at least {t.min_feedback} feedback events in the "
            "lane).",
        ),
        rule(
            "LVMEmptyHitRateHigh",
            _at_least(f"{empty_ratio} > {_num(t.empty_hit_rate_max)}", BY_VERSION,
                      _requests(fast, BY_VERSION), t.min_requests),
            t.fast_for_s, "warning",
            f"LVM {where}: empty-hit rate {{{{ $value | humanizePercentage }}}} > "
            f"{_num(t.empty_hit_rate_max * 100)}%",
            f"Share of predictions whose best concept similarity was below "
            f"{mc.EMPTY_HIT_SIMILARITY}, over {fast_txt}.",
        ),
    ]


def evaluation_rules(t: AlertThresholds = AlertThresholds()) -> list[dict[str, Any]]:
    """Alerts on the operator's offline judgements (drift, lane health)."""
    where = "{{ $labels.version }} ({{ $labels.rollout }})"
    return [
        {
            "alert": "LVMModelDrift",
            "expr": (f"max by (rollout, version) (abs({om.EVAL_DRIFT}))\n"
                     f"and on (rollout, version)\n({om.EVAL_DRIFT_DETECTED} == 1)"),
            "for": promql.duration(t.evaluation_for_s),
            "labels": {"severity": "warning", "component": "lvm-evaluation"},
            "annotations": {
                "summary": f"LVM {where}: eval-set drift {{{{ $value | humanizePercentage }}}} "
                           "from its baseline",
                "description": "The scheduled drift check re-evaluated the serving champion on "
                               "the held-out eval set: Hit@1/5/10 overall or a lane's Hit@5 "
                               "moved beyond spec.evaluation.drift.maxRelativeDrift (default "
                               "5%) from the recorded baseline. kubectl lvm status shows the "
                               "numbers.",
                "runbook_url": runbook_url("LVMModelDrift"),
            },
        },
        {
            "alert": "LVMLaneUnhealthy",
            "expr": f"{om.LANE_BELOW_OVERALL} > 0",
            "for": promql.duration(t.evaluation_for_s),
            "labels": {"severity": "warning", "component": "lvm-evaluation"},
            "annotations": {
                "summary": f"LVM {where}: lane {{{{ $labels.lane }}}} is "
                           f"{{{{ $value | humanizePercentage }}}} below the version's overall "
                           "Hit@5 ({{ $labels.source }})",
                "description": "The operator's lane health check (the seed's daily check) "
                               "flagged a TMD lane more than analysis.laneHealth."
                               "maxBelowOverall (default 15%) below its version's overall, on "
                               "production feedback (source=production) or on the eval set "
                               "(source=eval).",
                "runbook_url": runbook_url("LVMLaneUnhealthy"),
            },
        },
    ]


ROLLOUT_GROUP_NAME = "lvm-rollouts"


def rollout_rules() -> list[dict[str, Any]]:
    """Alerts on the rollouts themselves, from the operator's ``lvm_rollout_condition``: each
    state that needs a person (README "Runbook" has a section per alert)."""
    cond = om.ROLLOUT_CONDITION
    who = "{{ $labels.rollout }}"
    look = ("kubectl lvm status <name> -n <namespace> shows the reason, the numbers and the "
            "history")

    def rule(name: str, expr: str, summary: str, description: str) -> dict[str, Any]:
        return {"alert": name, "expr": expr,
                "labels": {"severity": "warning", "component": "lvm-rollout"},
                "annotations": {"summary": summary, "description": f"{description} {look}.",
                                "runbook_url": runbook_url(name)}}

    return [
        rule("LVMRolloutRolledBack", f'{cond}{{type="RolledBack",status="True"}} == 1',
             f"LVMRollout {who} rolled back its candidate",
             "The operator sent all traffic back to the champion (a guardrail or quality "
             "breach, the progress deadline, or a command); it stays so until retried or the "
             "spec names another candidate."),
        rule("LVMRolloutGateBlocked",
             f'{cond}{{type="Stalled",status="True",reason=~"GateBlocked|EvaluationFailed"}} '
             "== 1",
             f"LVMRollout {who} cannot start: {{{{ $labels.reason }}}}",
             "The pre-rollout evaluation blocked the candidate (or could not run); it gets no "
             "traffic."),
        rule("LVMRolloutNoData", f'{cond}{{type="NoData",status="True"}} == 1',
             f"LVMRollout {who} has had no data past analysis.onNoData.maxHold",
             "The checks read no (or too little) candidate traffic, or Prometheus failed, for "
             "longer than the no-data limit; the step holds."),
        rule("LVMRolloutChecksLate",
             f"{om.ROLLOUT_DECISION_LAG} > 3 * {om.ROLLOUT_GUARDRAIL_INTERVAL}",
             f"LVMRollout {who}'s guardrails have not run for "
             "{{ $value | humanizeDuration }}",
             "The operator has not evaluated this rollout's guardrails for three intervals: it "
             "is starved (more rollouts than one operator keeps up with, or a tick that hangs) "
             "and a breach would go unnoticed; lvm_operator_reconcile_delay_seconds and the "
             "operator's log say which."),
        rule("LVMRolloutStalled",
             f'{cond}{{type="Stalled",status="True",'
             f'reason!~"RolledBack|GateBlocked|EvaluationFailed"}} == 1',
             f"LVMRollout {who} is stalled: {{{{ $labels.reason }}}}",
             "The rollout will not move without a person: paused after inconclusive checks "
             "(InconclusiveTimeout), an invalid spec (InvalidSpec), or refused "
             "(ApplicationOwnedElsewhere, ChampionNotServing)."),
    ]


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)

_HEADER = """\
# GENERATED by `python -m lvm_operator.alerts` from serving/lvm_serving/contracts/metrics.py.
# Do not edit: change operator/lvm_operator/alerts/rules.py and regenerate (a test checks it).
# Thresholds are the seed plan's alert column; shadow traffic is excluded.
"""


def render_rules_yaml(t: AlertThresholds = AlertThresholds()) -> str:
    """The full rules file (Prometheus ``rule_files`` format)."""
    doc = {"groups": [{"name": GROUP_NAME, "rules": alert_rules(t)},
                      {"name": EVAL_GROUP_NAME, "rules": evaluation_rules(t)},
                      {"name": ROLLOUT_GROUP_NAME, "rules": rollout_rules()}]}
    return _HEADER + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=200,
                               default_flow_style=False)


def write_rules_file(path: Path = RULES_FILE) -> Path:
    path.write_text(render_rules_yaml())
    return path
