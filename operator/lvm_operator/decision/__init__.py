"""The decision core: pure functions from (plan, state, observations, now) to a decision.

Nothing here imports Kopf, Kubernetes, Ray, HTTP or Prometheus clients, or the pydantic API
types: the operator maps its spec and status onto these dataclasses, asks :func:`checks_due`
which checks to query, and applies what :func:`decide` returns. Keeping it pure is what lets
every rule have a table test and lets a restarted operator resume exactly from the status.
"""

from . import latency
from .assess import assess_guardrails, assess_quality, combine, judge_lower, judge_upper
from .core import (
    NO_DATA_CONDITION,
    checks_due,
    decide,
    guardrail_window_s,
    next_decision_in_s,
    quality_window_s,
)
from .model import (
    Action,
    Check,
    CheckOutcome,
    Condition,
    Decision,
    GateObservation,
    GateVerdict,
    GuardrailPolicy,
    InconclusiveAction,
    Judge,
    LaneMetrics,
    MetricResult,
    NoDataAction,
    Observations,
    Phase,
    Plan,
    QualityPolicy,
    RolloutState,
    Step,
    Thresholds,
    Verdict,
    VersionMetrics,
    WindowObservation,
)
from .sequential import DifferenceTest

__all__ = [
    "NO_DATA_CONDITION",
    "Action",
    "Check",
    "CheckOutcome",
    "Condition",
    "Decision",
    "DifferenceTest",
    "GateObservation",
    "GateVerdict",
    "GuardrailPolicy",
    "InconclusiveAction",
    "Judge",
    "LaneMetrics",
    "MetricResult",
    "NoDataAction",
    "Observations",
    "Phase",
    "Plan",
    "QualityPolicy",
    "RolloutState",
    "Step",
    "Thresholds",
    "Verdict",
    "VersionMetrics",
    "WindowObservation",
    "assess_guardrails",
    "assess_quality",
    "checks_due",
    "combine",
    "decide",
    "guardrail_window_s",
    "judge_lower",
    "judge_upper",
    "latency",
    "next_decision_in_s",
    "quality_window_s",
]
