"""PromQL rendering: exact strings from the metric contract, and every expression parses."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from lvm_operator.analysis import promql
from lvm_operator.analysis.promql import Query, ShadowFilter
from lvm_operator.decision import QualityPolicy
from lvm_serving.contracts import metrics as mc

PROMTOOL = shutil.which("promtool")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (Query.REQUESTS,
         "sum by (rollout, version, lane, namespace) "
         '(increase(ray_lvm_requests_total{pinned!="true"}[30s]))'),
        (Query.SERVER_ERRORS,
         'sum by (rollout, version, lane, namespace) (increase(ray_lvm_request_errors_total{'
         'reason=~"exception|nan_output|timeout", pinned!="true"}[30s]))'),
        (Query.EMPTY_HITS,
         "sum by (rollout, version, lane, namespace) "
         '(increase(ray_lvm_empty_hits_total{pinned!="true"}[30s]))'),
        (Query.FEEDBACK,
         "sum by (rollout, version, lane, namespace) "
         '(increase(ray_lvm_feedback_total{pinned!="true"}[30s]))'),
        (Query.HIT5_PROXY_HITS,
         'sum by (rollout, version, lane, namespace) (increase(ray_lvm_feedback_hits_total{'
         'k="5", kind="proxy", pinned!="true"}[30s]))'),
        (Query.P95_LATENCY,
         "histogram_quantile(0.95, sum by (le, rollout, version, namespace) "
         "(rate(ray_lvm_request_latency_seconds_bucket{pinned!=\"true\"}[30s])))"),
    ],
)
def test_analysis_queries_render_exactly(query, expected):
    assert promql.render(query, 30.0) == expected


def test_pinned_traffic_is_never_judged():
    # QA's x-lvm-version requests carry pinned="true": every judged query leaves them out, and
    # `!=` also keeps an older router's series that have no pinned label at all.
    for text in promql.render_all(list(Query), 60.0).values():
        assert 'pinned!="true"' in text
    for shadow in ShadowFilter:
        assert 'pinned!="true"' in promql.render(Query.FEEDBACK, 60.0, shadow)


def test_one_query_per_metric_for_all_rollouts():
    # No rollout matcher: the query count does not grow with the number of rollouts.
    for text in promql.render_all(list(Query), 60.0).values():
        assert 'rollout="' not in text and "rollout=~" not in text
        assert "by (rollout, version" in text or "by (le, rollout, version" in text
        assert "namespace)" in text  # kept: the reader scopes each series to its namespace


def test_server_errors_follow_the_contract():
    text = promql.render(Query.SERVER_ERRORS, 30.0)
    for reason in mc.SERVER_ERROR_REASONS:
        assert reason.value in text
    assert mc.ErrorReason.BAD_INPUT.value not in text  # the client's fault, not the model's


@pytest.mark.parametrize(
    ("shadow", "fragment"),
    [
        (ShadowFilter.INCLUDE, 'ray_lvm_requests_total{pinned!="true"}'),
        (ShadowFilter.EXCLUDE, 'ray_lvm_requests_total{shadow!="true", pinned!="true"}'),
        (ShadowFilter.ONLY, 'ray_lvm_requests_total{shadow="true", pinned!="true"}'),
    ],
)
def test_shadow_filter(shadow, fragment):
    assert fragment in promql.render(Query.REQUESTS, 30.0, shadow)


def test_histogram_selector_uses_plain_name():
    assert promql.selector(mc.LATENCY, suffix="_bucket", shadow=ShadowFilter.EXCLUDE) == (
        'ray_lvm_request_latency_seconds_bucket{shadow!="true", pinned!="true"}'
    )
    assert promql.selector(mc.LATENCY, suffix="_count") == (
        'ray_lvm_request_latency_seconds_count{pinned!="true"}')


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(30, "30s"), (60, "1m"), (90, "90s"), (3600, "1h"), (86400, "1d"), (1.5, "1500ms"),
     (0.25, "250ms"), (604800, "7d")],
)
def test_duration(seconds, text):
    assert promql.duration(seconds) == text


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), 0.0001])
def test_duration_rejects_bad_windows(bad):
    with pytest.raises(ValueError, match="window_s="):
        promql.duration(bad)


def test_ratio_fills_missing_numerator_with_zero():
    assert promql.ratio("A", "B") == "((A) or ((B) * 0)) / (B)"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"equal": {"nope": "x"}}, "label 'nope' is not on lvm_requests"),
        ({"equal": {"version": 'a"b'}}, "label value 'a\"b' is invalid"),
        ({"suffix": "_bucket"}, "suffix='_bucket' is invalid for counter lvm_requests"),
    ],
)
def test_selector_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        promql.selector(mc.REQUESTS, **kwargs)


def test_selector_with_label_filters():
    assert promql.selector(mc.REQUESTS, equal={"version": "phase2-500ctx"},
                           one_of={"lane": ["3", "1"]}) == (
        'ray_lvm_requests_total{version="phase2-500ctx", lane=~"1|3", pinned!="true"}'
    )


def _every_expression() -> list[str]:
    exprs = []
    for window in (30.0, QualityPolicy().window_s, 1.5):
        for shadow in ShadowFilter:
            exprs += promql.render_all(list(Query), window, shadow).values()
    exprs.append(promql.latency_quantile(0.5, 60.0, by=promql.BY_LANE))
    return exprs


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed")
def test_every_rendered_expression_parses(tmp_path):
    """promtool parses each expression as a recording rule (Prometheus' own parser)."""
    rules = [{"record": f"lvm:test_{i}", "expr": e} for i, e in enumerate(_every_expression())]
    path = tmp_path / "rendered.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "rendered", "rules": rules}]}))
    proc = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rules)} rules found" in proc.stdout
