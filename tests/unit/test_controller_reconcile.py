"""The shell's order of effects: the decision reaches status before traffic moves.

A FAKE apiserver (:class:`FailingKube`) stands in here because the fault under test, one status
write failing between a decision and its Serve apply, cannot be caused on demand against the real
kube-apiserver; the backend is the dry-run NoopBackend (it records what would be served).
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml
from merge_patch import merge

from lvm_operator.backends.live import router_config_of
from lvm_operator.backends.noop import NoopBackend
from lvm_operator.controller.reconcile import Reconciler

RAW = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "local-fast.yaml")
                     .read_text())


class FailingKube:
    """FAKE apiserver for one LVMRollout: ``fail_status_writes`` status patches fail."""

    api_client = None

    def __init__(self, obj: dict) -> None:
        self.obj = obj
        self.fail_status_writes = 0
        self.events: list[str] = []

    def get(self, namespace: str, name: str) -> dict | None:
        return copy.deepcopy(self.obj)

    def patch_status(self, namespace: str, name: str, patch: dict) -> None:
        if self.fail_status_writes:
            self.fail_status_writes -= 1
            raise ConnectionError("FAKE: the apiserver dropped the status write")
        merge(self.obj.setdefault("status", {}), patch)

    def patch_metadata(self, namespace: str, name: str, patch: dict) -> None:
        merge(self.obj["metadata"], patch)

    def post_event(self, obj: dict, event) -> None:
        self.events.append(event.reason)


def test_a_failed_status_write_moves_no_traffic_and_the_next_tick_agrees():
    obj = copy.deepcopy(RAW)
    obj["metadata"].update(namespace="ml", uid="u-1", generation=1)
    kube = FailingKube(obj)
    backend = NoopBackend()
    now = [1_700_000_000.0]
    rec = Reconciler(kube, backend_factory=lambda *a, **k: backend, clock=lambda: now[0])
    kube.fail_status_writes = 1
    try:
        rec.tick("ml", obj["metadata"]["name"])
        raise AssertionError("the failed status write must surface")
    except ConnectionError:
        pass
    assert backend.sent == []  # the decision was not recorded: no traffic moved
    for _ in range(2):  # deploy the candidate with no traffic, then move its weight
        now[0] += 1.0
        rec.tick("ml", obj["metadata"]["name"])
    status = kube.obj["status"]
    live = router_config_of(next(a for a in backend.applications if a["name"] == "lvm"))
    assert live is not None
    assert (live.candidate_weight, status["candidateWeight"]) == (25, 25)
    assert status["serving"]["configHash"]  # recorded once applied and verified
    rec.shutdown()
