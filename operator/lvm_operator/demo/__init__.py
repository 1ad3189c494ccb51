"""The README's first command: a real progressive rollout, end to end, on this machine.

1. trains (or reuses) three small model versions: a champion, a better candidate and a candidate
   slower than the rollback trigger (:mod:`.artifacts`);
2. starts kube-apiserver + etcd, a two-node Ray cluster and Prometheus; installs the CRDs;
   starts the operator (``lvm-rollout operator``) as its own process;
3. applies an LVMRollout (steps of seconds, the seed's thresholds): the operator deploys the
   Serve application; a load generator sends traffic with click feedback;
4. shows the rollout live until the candidate is promoted, then rolls out the slow candidate and
   shows it being rolled back, and why;
5. prints a summary and writes a timeline report (PNG + HTML).

Ctrl-C stops everything; a failure names the component and its log. ``--keep`` leaves the stack
and the operator running for ``kubectl`` and ``kubectl lvm``.

The modules: :mod:`.manifest` (the rollout and the demo's options), :mod:`.cluster` (the run
directory, kubectl, the operator process, the router wait), :mod:`.load` (the load generator),
:mod:`.live` (the live view), :mod:`.run` (the story), :mod:`.artifacts` (the model versions) and
:mod:`.report` (the timeline report). The benchmarks reuse the first three.
"""

from __future__ import annotations

from . import artifacts
from .cluster import CRDS, clean_run_dir, kubectl, start_operator, wait_for_router
from .load import LoadThread
from .manifest import DemoOptions, rollout_manifest
from .run import run_demo

__all__ = [
    "CRDS",
    "DemoOptions",
    "LoadThread",
    "artifacts",
    "clean_run_dir",
    "kubectl",
    "rollout_manifest",
    "run_demo",
    "start_operator",
    "wait_for_router",
]
