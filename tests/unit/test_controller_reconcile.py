"""The reconcile tick with in-memory FAKES for the apiserver, Prometheus and the serve backend.

Only what cannot be caused cheaply against the real stack lives here: an invalid object that
admission would reject, a failing backend, a spec change mid-rollout, a clock pushed past a
dwell. The real end-to-end behaviour is in ``tests/integration/test_operator_e2e.py``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml
from decision_fixtures import CHAMP, GOOD

from lvm_operator.analysis.prometheus import Snapshot
from lvm_operator.commands import ANNOTATION_COMMAND, ANNOTATION_COMMAND_ID
from lvm_operator.controller.reconcile import Reconciler
from lvm_operator.decision import Observations, VersionMetrics, WindowObservation

RAW = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "local-fast.yaml")
                     .read_text())
CHAMPION, CANDIDATE = "phase1-baseline", "phase2-500ctx"


def _apply_patch(target: dict, patch: dict) -> None:
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        elif isinstance(v, dict) and isinstance(target.get(k), dict):
            _apply_patch(target[k], v)
        else:
            target[k] = copy.deepcopy(v)


class FakeKube:
    api_client = None

    def __init__(self, obj: dict) -> None:
        self.obj = obj
        self.events: list[tuple[str, str, str]] = []
        self.status_writes = 0

    def get(self, namespace, name):
        return copy.deepcopy(self.obj)

    def patch_status(self, namespace, name, patch):
        self.status_writes += 1
        _apply_patch(self.obj.setdefault("status", {}), patch)

    def patch_metadata(self, namespace, name, metadata):
        _apply_patch(self.obj["metadata"], metadata)

    def post_event(self, obj, event):
        self.events.append((event.type, event.reason, event.message))


class FakeAnalysis:
    def __init__(self) -> None:
        self.candidate = VersionMetrics(**GOOD)

    def observations(self, url, plan, state, due, rollout, now):
        obs = WindowObservation(30.0, {CANDIDATE: self.candidate,
                                       CHAMPION: VersionMetrics(**CHAMP)})
        return Observations(guardrail=obs, quality=obs)

    def snapshot(self, url, check, window_s):  # the daily lane-health check
        obs = self.observations(url, None, None, None, "ml/lvm-local", 0.0).quality
        return Snapshot(window_s, {"ml/lvm-local": obs})


class FakeBackend:
    def __init__(self) -> None:
        self.applied = []
        self.fail: Exception | None = None

    def apply(self, app):
        if self.fail is not None:
            raise self.fail
        self.applied.append(app)


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


def setup(**spec_changes):
    obj = copy.deepcopy(RAW)
    obj["metadata"].update(namespace="ml", uid="u-1", generation=1)
    obj["spec"].update(spec_changes)
    kube, backend, clock = FakeKube(obj), FakeBackend(), Clock()
    r = Reconciler(kube, backend_factory=lambda *a, **k: backend, analysis=FakeAnalysis(),
                   clock=clock)
    return r, kube, backend, clock


def reasons(kube):
    return [r for _, r, _ in kube.events]


def test_invalid_object_is_failed_without_touching_serving():
    r, kube, backend, _ = setup(steps=[{"weight": 50, "duration": "1s"}])  # last step not 100
    r.tick("ml", "lvm-local")
    assert kube.obj["status"]["phase"] == "Failed"
    assert "steps" in kube.obj["status"]["message"]
    assert backend.applied == []
    assert reasons(kube) == ["InvalidSpec"]
    r.tick("ml", "lvm-local")
    assert reasons(kube) == ["InvalidSpec"]  # once, not every tick


def test_walks_the_steps_applying_only_changed_configs():
    r, kube, backend, clock = setup()
    r.tick("ml", "lvm-local")
    assert kube.obj["status"]["candidateWeight"] == 25 and len(backend.applied) == 1
    for _ in range(5):  # checks every 2 s within the 10 s dwell: same config, not re-sent
        clock.t += 2.0
        r.tick("ml", "lvm-local")
    assert kube.obj["status"]["candidateWeight"] == 50
    assert [a.router.candidate_weight for a in backend.applied] == [25, 50]
    writes = kube.status_writes
    r.tick("ml", "lvm-local")  # nothing due at the same instant: no write at all
    assert kube.status_writes == writes


def test_backend_failure_is_a_condition_and_retried():
    r, kube, backend, clock = setup()
    backend.fail = ConnectionError("dashboard refused")
    wait = r.tick("ml", "lvm-local")
    assert wait <= 2.0
    ready = {c["type"]: c for c in kube.obj["status"]["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "ServeApplyFailed")
    assert "dashboard refused" in ready["message"]
    assert sorted(reasons(kube)) == ["ServeApplyFailed", "Started"]
    backend.fail = None
    clock.t += 1.0
    r.tick("ml", "lvm-local")
    ready = {c["type"]: c for c in kube.obj["status"]["conditions"]}["Ready"]
    assert ready["status"] == "True" and len(backend.applied) == 1
    assert "ServeApplyRecovered" in reasons(kube)


def test_spec_change_mid_rollout_restarts_at_step_one():
    r, kube, backend, clock = setup()
    r.tick("ml", "lvm-local")
    for _ in range(6):
        clock.t += 2.0
        r.tick("ml", "lvm-local")
    assert kube.obj["status"]["currentStep"] == 1
    kube.obj["spec"]["candidate"]["version"] = "phase3"
    kube.obj["metadata"]["generation"] = 2
    clock.t += 2.0
    r.tick("ml", "lvm-local")
    s = kube.obj["status"]
    assert s["currentStep"] == 0 and s["candidateWeight"] == 25
    assert s["observedGeneration"] == 2
    assert "Superseded" in reasons(kube)
    assert "spec changed" in s["message"]
    assert s["history"][-1]["version"] == CANDIDATE
    assert s["history"][-1]["outcome"] == "superseded"
    assert backend.applied[-1].router.candidate == "phase3"


def test_breaching_candidate_rolls_back_and_records_it():
    r, kube, backend, clock = setup()
    r.tick("ml", "lvm-local")
    r.analysis.candidate = VersionMetrics(**{**GOOD, "error_rate": 0.05})
    for _ in range(2):
        clock.t += 2.0  # a guardrail window is never shorter than 2 s
        r.tick("ml", "lvm-local")
    s = kube.obj["status"]
    assert s["phase"] == "RolledBack" and s["candidateWeight"] == 0
    assert s["history"][-1]["outcome"] == "rolledBack"
    assert backend.applied[-1].router.candidate is None
    assert {v.version: v.replicas for v in backend.applied[-1].versions}[CANDIDATE] == 1
    assert reasons(kube).count("GuardrailBreach") == 1 and "RolledBack" in reasons(kube)


def test_command_is_consumed_once_and_its_annotations_removed():
    r, kube, _, clock = setup()
    r.tick("ml", "lvm-local")
    kube.obj["metadata"]["annotations"] = {ANNOTATION_COMMAND: "pause",
                                           ANNOTATION_COMMAND_ID: "c1"}
    clock.t += 0.5
    r.tick("ml", "lvm-local")
    s = kube.obj["status"]
    assert s["lastCommand"]["id"] == "c1" and s["lastCommand"]["result"] == "accepted"
    assert s["phase"] == "Paused"
    assert ANNOTATION_COMMAND not in kube.obj["metadata"].get("annotations", {})
    # the same id again (an annotation that came back) is not run twice
    kube.obj["metadata"]["annotations"] = {ANNOTATION_COMMAND: "pause",
                                           ANNOTATION_COMMAND_ID: "c1"}
    r.tick("ml", "lvm-local")
    assert reasons(kube).count("CommandPause") == 1
    assert ANNOTATION_COMMAND not in kube.obj["metadata"].get("annotations", {})


def test_malformed_commands_are_rejected_not_fatal():
    r, kube, _, clock = setup()
    r.tick("ml", "lvm-local")
    for i, value in enumerate(("rollback:Not_A_Version!", "explode", "resume")):
        kube.obj["metadata"]["annotations"] = {ANNOTATION_COMMAND: value,
                                               ANNOTATION_COMMAND_ID: f"x{i}" * 200}
        clock.t += 0.1
        r.tick("ml", "lvm-local")
        last = kube.obj["status"]["lastCommand"]
        assert last["result"] == "rejected" and len(last["id"]) <= 253
    assert reasons(kube).count("CommandRejected") == 3


# --- the pre-rollout gate, with a FAKE evaluation runner --------------------------------------


class FakeRunner:
    """A FAKE evaluation runner: each version's output is set by the test; runs finish when the
    test says so (the real child processes run in test_evaluation_e2e.py)."""

    def __init__(self, outputs: dict[str, dict]) -> None:
        self.outputs = outputs
        self.started: list[str] = []
        self.done: set[str] = set()
        self._running: dict[str, float] = {}

    def submit(self, req, now):
        from lvm_operator.evaluation.runner import Running

        self.started.append(req.version)
        self._running.setdefault(req.key, now)
        return Running(self._running[req.key])

    def poll(self, req):
        from lvm_operator.evaluation.runner import Finished, Running

        if req.key not in self._running:
            return None
        if req.version in self.done:
            return Finished(self.outputs[req.version], self._running[req.key] + 1.0)
        return Running(self._running[req.key])

    def collect(self, req):
        self._running.pop(req.key, None)


def output(hit5: float) -> dict:
    lanes = {str(k): {"n": 32, "hit@1": hit5, "hit@5": hit5, "hit@10": hit5} for k in range(16)}
    return {"format": "lvm-eval-result", "format_version": 1, "n": 512, "hit@1": hit5 - 0.05,
            "hit@5": hit5, "hit@10": hit5 + 0.05, "hit@5_proxy": hit5, "empty_hit_rate": 0.0,
            "nan_rate": 0.0, "eval_set_sha256": "e" * 64, "seconds": 1.0, "per_lane": lanes}


def setup_gate(candidate_hit5: float):
    r, kube, backend, clock = setup(evaluation={"evalSet": {"uri": "file:///e/eval_set.npz"}})
    runner = FakeRunner({CANDIDATE: output(candidate_hit5), CHAMPION: output(0.70)})
    r._evaluator = runner
    return r, kube, backend, clock, runner


def test_gate_holds_the_rollout_until_the_candidate_is_evaluated():
    r, kube, backend, clock, runner = setup_gate(0.72)
    wait = r.tick("ml", "lvm-local")
    s = kube.obj["status"]
    assert sorted(runner.started) == sorted([CANDIDATE, CHAMPION])
    assert s["phase"] == "Pending" and s.get("candidateWeight", 0) == 0
    assert s["evaluation"]["gate"]["verdict"] == "pending" and wait <= 1.0  # polls soon
    assert {c["type"]: c["reason"] for c in s["conditions"]}["GatePassed"] == "Evaluating"
    assert all(a.router.candidate_weight == 0 for a in backend.applied)
    runner.done |= {CANDIDATE, CHAMPION}
    clock.t += 1.0
    r.tick("ml", "lvm-local")
    s = kube.obj["status"]
    assert s["evaluation"]["gate"]["verdict"] == "pass" and s["candidateWeight"] == 25
    assert reasons(kube)[:4] == ["Evaluated", "Evaluated", "GatePassed", "BaselineRecorded"]
    assert "Started" in reasons(kube)
    assert backend.applied[-1].router.candidate_weight == 25


def test_a_blocked_gate_is_retried_by_command_and_the_numbers_are_exported():
    from lvm_operator.metrics import METRICS

    r, kube, _backend, clock, runner = setup_gate(0.41)
    runner.done |= {CANDIDATE, CHAMPION}
    r.tick("ml", "lvm-local")
    clock.t += 1.0
    r.tick("ml", "lvm-local")
    s = kube.obj["status"]
    assert s["evaluation"]["gate"]["verdict"] == "blocked" and s["phase"] == "Pending"
    assert "candidate Hit@5 0.410 < minimum 0.660" in s["message"]
    assert reasons(kube).count("GateBlocked") == 1
    exposition = METRICS.registry.get_sample_value(
        "lvm_eval_gate_passed", {"rollout": "ml/lvm-local", "version": CANDIDATE})
    assert exposition == 0.0
    assert METRICS.registry.get_sample_value(
        "lvm_eval_hit_ratio", {"rollout": "ml/lvm-local", "version": CANDIDATE, "k": "5"}) == 0.41
    # A few more ticks: nothing re-runs, no new Events (the verdict did not change).
    for _ in range(3):
        clock.t += 1.0
        r.tick("ml", "lvm-local")
    assert len(runner.started) == 2 and reasons(kube).count("GateBlocked") == 1
    # retry: the candidate is better now (e.g. the eval set was refreshed in place).
    runner.outputs[CANDIDATE] = output(0.72)
    runner.done.clear()
    kube.obj["metadata"]["annotations"] = {ANNOTATION_COMMAND: "retry",
                                           ANNOTATION_COMMAND_ID: "r1"}
    clock.t += 1.0
    r.tick("ml", "lvm-local")
    s = kube.obj["status"]
    assert s["lastCommand"]["result"] == "accepted" and "re-evaluating" in s["message"]
    assert s["evaluation"]["gate"]["verdict"] == "pending"
    runner.done |= {CANDIDATE, CHAMPION}
    clock.t += 1.0
    r.tick("ml", "lvm-local")
    s = kube.obj["status"]
    assert s["evaluation"]["gate"]["verdict"] == "pass" and s["candidateWeight"] == 25
    assert len(runner.started) == 4
    # retry is refused once the rollout runs.
    kube.obj["metadata"]["annotations"] = {ANNOTATION_COMMAND: "retry",
                                           ANNOTATION_COMMAND_ID: "r2"}
    clock.t += 0.5
    r.tick("ml", "lvm-local")
    assert kube.obj["status"]["lastCommand"]["result"] == "rejected"
