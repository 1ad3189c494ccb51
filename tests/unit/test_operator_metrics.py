"""The operator's own metrics: scraped over real HTTP from serve_metrics and parsed back."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lvm_operator.api.status import Phase
from lvm_operator.metrics import OperatorMetrics, serve_metrics


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture
def scraped():
    metrics = OperatorMetrics()
    server = serve_metrics(0, host="127.0.0.1", metrics=metrics)
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        yield metrics, url
    finally:
        server.shutdown()
        server.server_close()


def test_scrape_shows_every_metric(scraped):
    metrics, url = scraped
    metrics.set_phase("ml/a", Phase.PROGRESSING)
    metrics.set_phase("ml/b", Phase.PROGRESSING)
    metrics.set_phase("ml/c", None)  # no status yet: Pending
    metrics.set_phase("ml/b", Phase.ROLLED_BACK)  # moves, not counted twice
    metrics.record_decision("advance")
    metrics.record_decision("advance")
    metrics.record_decision("rollback")
    metrics.observe_check("guardrail", 0.02)
    with pytest.raises(RuntimeError), metrics.time_check("quality"):
        raise RuntimeError("prometheus down")  # still timed
    metrics.record_error("prometheus")
    metrics.observe_reconcile_delay(1.5)
    metrics.observe_reconcile_delay(-3)  # early counts as on time

    resp = httpx.get(f"{url}/metrics", timeout=5)
    assert resp.status_code == 200
    got = samples(resp.text)

    def phase(p):
        return got[("lvm_operator_rollouts", (("phase", p),))]

    assert phase("Progressing") == 1 and phase("RolledBack") == 1 and phase("Pending") == 1
    assert phase("Promoted") == 0  # every phase is exported, zeros included
    assert got[("lvm_operator_decisions_total", (("action", "advance"),))] == 2
    assert got[("lvm_operator_decisions_total", (("action", "rollback"),))] == 1
    assert got[("lvm_operator_check_duration_seconds_count", (("check", "guardrail"),))] == 1
    assert got[("lvm_operator_check_duration_seconds_bucket",
                (("check", "guardrail"), ("le", "0.025")))] == 1
    assert got[("lvm_operator_check_duration_seconds_count", (("check", "quality"),))] == 1
    assert got[("lvm_operator_errors_total", (("kind", "prometheus"),))] == 1
    assert got[("lvm_operator_reconcile_delay_seconds_count", ())] == 2
    assert got[("lvm_operator_reconcile_delay_seconds_sum", ())] == 1.5

    metrics.forget("ml/a")
    got = samples(httpx.get(f"{url}/metrics", timeout=5).text)
    assert got[("lvm_operator_rollouts", (("phase", "Progressing"),))] == 0


def test_own_registry_and_only_metrics_path(scraped):
    _, url = scraped
    text = httpx.get(f"{url}/metrics", timeout=5).text
    assert "python_gc" not in text and "process_cpu" not in text  # not the global registry
    assert httpx.get(f"{url}/", timeout=5).status_code == 404


def test_rollout_gauges_come_from_the_status_the_tick_wrote():
    """Issue 20 #5: the per-rollout gauges, and the series the lvm-rollouts alerts select, from
    a rolled-back status made by the tick itself."""
    from prometheus_client import CollectorRegistry, generate_latest
    from test_controller_steady import finish
    from test_controller_tick import CANDIDATE, CHAMPION, Rollout

    from lvm_operator.api import parse_status
    from lvm_operator.metrics import OperatorMetrics

    r = Rollout()
    finish(r, bad=True)
    m = OperatorMetrics(CollectorRegistry())
    m.set_quality("ml/lvm-local", parse_status(r.status))
    text = generate_latest(m.registry).decode()
    assert (f'lvm_rollout_info{{candidate="{CANDIDATE}",champion="{CHAMPION}",'
            'namespace="ml",phase="RolledBack",rollout="ml/lvm-local"} 1.0') in text
    assert 'lvm_rollout_candidate_weight_percent{rollout="ml/lvm-local"} 0.0' in text
    assert 'lvm_rollout_current_step{rollout="ml/lvm-local"} 1.0' in text  # rolled back at step 1
    # what LVMRolloutRolledBack selects
    assert ('lvm_rollout_condition{reason="RolledBack",rollout="ml/lvm-local",status="True",'
            'type="RolledBack"} 1.0') in text
    assert 'metric="errorRate",rollout="ml/lvm-local",version="phase2-500ctx"} 0.05' in text
    m.forget("ml/lvm-local")
    assert "lvm_rollout_info{" not in generate_latest(m.registry).decode()


def test_decision_lag_grows_while_a_rollout_is_not_ticked():
    """Issue 22 #2: the lag is measured at scrape time from the last check status recorded,
    so a rollout whose ticks stop running shows it (a histogram of the ticks that ran cannot)."""
    from prometheus_client import CollectorRegistry
    from test_controller_tick import Rollout

    from lvm_operator.api import parse_status
    from lvm_operator.metrics import QualityCollector

    r = Rollout()
    for _ in range(3):  # a few ticks into step 1: guardrails have run
        r.tick()
        r.t += 2.0
    status = parse_status(r.status)
    last = status.decision_state.last_guardrail_at
    assert status.decision_state.phase == "Progressing" and last is not None
    now = [last + 1.0]
    collector = QualityCollector(clock=lambda: now[0])
    registry = CollectorRegistry()
    registry.register(collector)
    collector.set_rollout("ml/lvm-local", status, guardrail_interval_s=2.0)

    def lag() -> float | None:
        return registry.get_sample_value("lvm_rollout_decision_lag_seconds",
                                         {"rollout": "ml/lvm-local"})

    assert lag() == 1.0
    assert registry.get_sample_value("lvm_rollout_guardrail_interval_seconds",
                                     {"rollout": "ml/lvm-local"}) == 2.0
    now[0] = last + 7.0  # no tick ran for 7 s: 3.5 intervals, LVMRolloutChecksLate's side
    assert lag() == 7.0
    # finished: guardrails no longer run, so there is no lag to report
    done = status.model_copy(update={"decision_state": status.decision_state.model_copy(
        update={"phase": Phase.PROMOTED})})
    collector.set_rollout("ml/lvm-local", done, guardrail_interval_s=2.0)
    assert lag() is None
