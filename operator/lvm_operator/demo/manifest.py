"""The demo's LVMRollout: the fast local example pointed at this stack and these model versions,
with the knobs the demo turns (:class:`DemoOptions`)."""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from lvm_operator.devstack.stack import Stack
from lvm_operator.devstack.tools import REPO_ROOT

from . import artifacts

EXAMPLE = REPO_ROOT / "examples" / "local-fast.yaml"
#: Each version stays on its node pool whatever its role: a promoted candidate that moved to the
#: champion's pool in the next rollout would be redeployed (a new replica, torch and all) while
#: it serves every request, and clients would wait for it (10 s timeouts on a busy machine).
NODE_POOLS = {artifacts.CHAMPION.version: "pool_a10",
              artifacts.GOOD_CANDIDATE.version: "pool_a100",
              artifacts.SLOW_CANDIDATE.version: "pool_a10"}
NAMESPACE = "default"
NAME = "lvm-demo"
APPLICATION = "lvm"


@dataclass(frozen=True)
class DemoOptions:
    step_seconds: int = 8
    weights: tuple[int, ...] = (10, 20, 50, 100)
    rps: float = 20.0
    scenario_timeout_s: float = 300.0
    guardrail_interval: str = "2s"
    quality_interval: str = "4s"
    quality_window: str = "60s"
    min_samples: int = 30


def rollout_manifest(stack: Stack, champion: artifacts.Artifact, candidate: artifacts.Artifact,
                     options: DemoOptions, shared: artifacts.Artifact | None = None) -> dict:
    """The fast local example, pointed at this stack and these model versions.

    The concept bank and the eval set come from ``shared`` (default: the champion) and must stay
    the same across the demo's rollouts: the bank's URI is in every Serve application's args, so
    a new URI, even for the same bytes, makes Serve rebuild the router and the serving champion,
    and with one replica each, clients wait for the new replicas to start.
    """
    shared = shared or champion
    manifest = yaml.safe_load(EXAMPLE.read_text())
    manifest["metadata"] = {"name": NAME, "namespace": NAMESPACE}
    spec = manifest["spec"]
    for role, art in (("champion", champion), ("candidate", candidate)):
        pool = NODE_POOLS.get(art.version, "pool_a10" if role == "champion" else "pool_a100")
        spec[role] = {
            "version": art.version, "checkpoint": art.checkpoint_uri,
            "sha256": art.checkpoint_sha256, "family": art.family,
            "contextLength": artifacts.CONTEXT_LENGTH, "nodePool": pool,
            # One replica each: on two shared cores, starting another replica mid-step (torch
            # import, model load) slows the running one and muddies the latency story.
            "replicas": {"min": 1, "max": 1},
        }
    spec["conceptBank"] = {"uri": shared.bank_uri, "sha256": shared.bank_sha256}
    spec["steps"] = [{"weight": w, "duration": f"{options.step_seconds}s"}
                     for w in options.weights]
    spec["analysis"]["guardrails"]["interval"] = options.guardrail_interval
    # Two breaches in a row, each judged on its own window of at least 30 candidate requests
    # (at 10% of 20 req/s a window grows to ~15 s before it is judged). Latency is judged
    # against the champion (the default): on two busy cores both versions miss the seed's
    # 10 ms, and only a candidate slower than the champion is rolled back for it.
    spec["analysis"]["guardrails"]["consecutiveBreaches"] = 2
    spec["analysis"]["guardrails"]["minSamples"] = options.min_samples
    spec["analysis"]["quality"]["minRequests"] = 40
    spec["analysis"]["quality"]["interval"] = options.quality_interval
    # A minute of evidence (never more than this attempt's): on a loaded machine the load
    # generator falls behind and 10% of it is a few requests a second.
    spec["analysis"]["quality"]["window"] = options.quality_window
    spec["prometheus"] = {"url": stack.prometheus.url}
    spec["serve"] = {"backend": "rayDashboard", "url": stack.ray.dashboard_url,
                     "application": APPLICATION}
    # The pre-rollout gate: the candidate is evaluated on the held-out eval set (the train
    # command wrote it; every version shares it) before it gets any traffic.
    spec["evaluation"] = {"evalSet": {"uri": shared.eval_uri, "sha256": shared.eval_sha256}}
    return manifest
