"""Issue 15 #13: one counter is counted once, whichever way Ray exports metrics.

Ray 2.60 exports through OpenTelemetry by default (counters as ``ray_lvm_requests_total``).
Its legacy exporter (``RAY_enable_open_telemetry=0``) also emits each counter as a deprecated
gauge without ``_total`` unless ``RAY_EXPORT_COUNTER_AS_GAUGE=0``. The local stack pins ``0``,
but a cluster someone else set up may not, so the operator's queries select one name
(``..._total``). Real Ray (serving's own metric objects in an actor), real Prometheus, the
operator's own reader: in every mode it reads the counter's increase once. Where the gauge
exists, the old two-name selector (``ray_lvm_requests(_total)?``) fails every query: increase()
drops the metric name, leaving two series with one label set (so every check read "error").
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import wait_for_series

from lvm_operator.analysis.errors import QueryFailed
from lvm_operator.analysis.prometheus import PrometheusReader
from lvm_operator.devstack.ray_cluster import ray_env, start_ray_cluster

pytestmark = pytest.mark.stack

# A driver that increments serving's own request counter once a second, from an actor.
EMITTER = """
import sys, time, ray
from lvm_serving.contracts import metrics as mc
from lvm_serving.serve_common import Metrics

ray.init(address=sys.argv[1])

@ray.remote(num_cpus=0)
class Emitter:
    def __init__(self):
        self.metrics = Metrics()

    def inc(self, tags):
        self.metrics.inc(mc.REQUESTS, tags)

emitter = Emitter.remote()
tags = {"rollout": sys.argv[2], "version": "v1", "lane": "0", "shadow": "false",
        "pinned": "false"}
while True:
    ray.get(emitter.inc.remote(tags))
    time.sleep(1.0)
"""

WINDOW_S = 20.0


def _names(prom, rollout: str) -> set[str]:
    return {s["metric"]["__name__"] for s in prom.query(
        f'{{__name__=~"ray_lvm_requests.*",rollout="{rollout}"}}')}


def _sum(prom, selector: str, at: float) -> float:
    reader = PrometheusReader(prom.url)
    try:
        samples = reader.query(f"sum(increase({selector}[{WINDOW_S:g}s]))", at=at)
    finally:
        reader.close()
    return samples[0].value if samples else 0.0


# mode -> (environment of the Ray cluster, whether the deprecated gauge is exported)
MODES = {
    "opentelemetry": ({}, False),  # Ray 2.60's default exporter (the session's cluster)
    "legacy-counter-as-gauge": ({"RAY_enable_open_telemetry": "0",
                                 "RAY_EXPORT_COUNTER_AS_GAUGE": "1"}, True),
    "legacy-pinned": ({"RAY_enable_open_telemetry": "0",
                       "RAY_EXPORT_COUNTER_AS_GAUGE": "0"}, False),  # what the stack pins
}


@pytest.mark.parametrize("mode", list(MODES))
def test_a_counter_is_counted_once_under_every_exporter_mode(mode, ray_cluster, run_dir,
                                                             prometheus_factory, tmp_path,
                                                             caplog):
    extra_env, gauge = MODES[mode]
    cluster = ray_cluster
    if extra_env:  # a head of its own with that exporter
        cluster = start_ray_cluster(run_dir / f"ray-exporter-{mode}", with_worker=False,
                                    num_cpus_per_node=1, extra_env=extra_env)
    rollout = f"exporter/mode-{mode}"
    env = {**os.environ, **ray_env()}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"),
                                                    os.environ.get("PYTHONPATH")) if p)
    log = Path(tmp_path) / "emitter.log"
    driver = subprocess.Popen([sys.executable, "-c", EMITTER, cluster.gcs_address, rollout],
                              env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        prom = prometheus_factory(cluster.metrics_targets)
        wait_for_series(prom, f'ray_lvm_requests_total{{rollout="{rollout}"}}', timeout_s=90)
        time.sleep(WINDOW_S + 3.0)  # a window full of increments
        at = time.time() - 2.0  # a moment every scrape has reached
        one_name = _sum(prom, f'ray_lvm_requests_total{{rollout="{rollout}"}}', at)
        two_names = f'{{__name__=~"ray_lvm_requests(_total)?",rollout="{rollout}"}}'
        try:
            with caplog.at_level(logging.WARNING, logger="lvm_operator.analysis.prometheus"):
                both_names: float | str = _sum(prom, two_names, at)
        except QueryFailed:  # increase() drops the name: two series, one label set
            both_names = caplog.text  # Prometheus' own words go to the log, not the error
        reader = PrometheusReader(prom.url)
        try:
            snapshot = reader.observe_guardrails(WINDOW_S, at=at)
        finally:
            reader.close()
        read = snapshot.for_rollout(rollout).versions["v1"].requests
        print(f"\nexporter mode {mode}: names {sorted(_names(prom, rollout))}; the operator "
              f"reads {read:.1f} requests in {WINDOW_S:g} s, the _total series "
              f"{one_name:.1f}, the old two-name selector: {str(both_names)[:120]}")
        assert one_name > 5  # about one a second
        assert read == pytest.approx(one_name)
        if gauge:  # the gauge is there: the old selector's every query failed outright
            assert _names(prom, rollout) == {"ray_lvm_requests", "ray_lvm_requests_total"}
            assert "vector cannot contain metrics with the same labelset" in str(both_names)
        else:
            assert _names(prom, rollout) == {"ray_lvm_requests_total"}
            assert both_names == pytest.approx(one_name)
    finally:
        driver.kill()
        driver.wait(10)
        if cluster is not ray_cluster:
            cluster.stop()
