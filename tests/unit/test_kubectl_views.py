"""``kubectl lvm get`` rows and ``kubectl lvm status`` text, for statuses the operator writes.

Every status here comes from the decision core and :func:`lvm_operator.controller.status.compute`
(the code that writes ``.status``), serialised as the apiserver would return it, so the views are
tested on the shapes they will really meet. The assertions read the rendered text.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime

from decision_fixtures import CANDIDATE, CHAMP, CHAMPION, GOOD, STEPS, good, plan, window
from rich.console import Console

from lvm_operator.api import LaneFlag, LaneHealthStatus, LVMRolloutStatus, Serving
from lvm_operator.api.status import CommandResult, LastCommand
from lvm_operator.commands import Command, Verb
from lvm_operator.controller.status import TickResult, compute
from lvm_operator.decision import Observations, RolloutState, VersionMetrics, decide
from lvm_operator.decision.model import WindowObservation
from lvm_operator.kubectl_plugin import views

T0 = 1_700_000_000.0
GEN = 3
SPEC = {
    "champion": {"version": CHAMPION, "family": "memory_gru", "contextLength": 100,
                 "nodePool": "pool_a10"},
    "candidate": {"version": CANDIDATE, "family": "memory_gru", "contextLength": 500,
                  "nodePool": "pool_a100"},
    "steps": [{"weight": s.weight, "duration": f"{s.duration_s:g}s", "shadow": s.shadow}
              for s in STEPS],
    "analysis": {"guardrails": {"consecutiveBreaches": 2}},
}


def at(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


class Story:
    """A rollout driven through the decision core, its status written by ``compute``."""

    def __init__(self) -> None:
        self.plan = plan()
        self.status = LVMRolloutStatus()
        self.decision = None
        self.now = T0
        self.tick(T0, Observations())

    def tick(self, now: float, obs: Observations, **kw) -> None:
        state = self.decision.state if self.decision else RolloutState()
        self.decision = decide(self.plan, state, obs, now)
        self.now = now
        result = TickResult(now=now, generation=GEN, state=self.decision.state, plan=self.plan,
                            decision=self.decision,
                            serving=Serving(champion=CHAMPION, candidate=CANDIDATE), **kw)
        self.status = compute(self.status, result).status

    def healthy_until(self, end: float) -> None:
        while self.now < end:
            self.tick(self.now + 50.0, Observations(guardrail=good(),
                                                    quality=window({}, {}, window_s=600.0)))

    def breach(self, now: float) -> None:
        bad = VersionMetrics(**{**GOOD, "p95_latency_seconds": 0.0124})
        obs = WindowObservation(30.0, {CANDIDATE: bad, CHAMPION: VersionMetrics(**CHAMP)})
        self.tick(now, Observations(guardrail=obs, quality=obs))

    def obj(self, annotations: dict[str, str] | None = None) -> dict:
        meta = {"name": "lvm", "namespace": "ml", "generation": GEN,
                "creationTimestamp": at(T0).isoformat()}
        if annotations:
            meta["annotations"] = annotations
        return {"metadata": meta, "spec": SPEC, "status": self.status.to_k8s()}


def text(obj: dict, now: float) -> str:
    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None)
    for renderable in views.render_status(obj, at(now)):
        console.print(renderable)
    return out.getvalue()


def head(rendered: str, key: str) -> str:
    """The value on the ``key`` line of the key/value lines at the top."""
    line = next(line for line in rendered.splitlines() if line.startswith(key + "  "))
    return line.removeprefix(key).strip()


def step_states(rendered: str) -> list[str]:
    """The STATE column of the Steps table, one entry per step ('' when blank)."""
    rows = [line for line in rendered.splitlines()
            if any(f"│ {s.weight}%" in line for s in STEPS) and line.count("│") == 7]
    return [row.split("│")[6].strip() for row in rows]


def test_first_step_status_names_the_plan_and_when_the_next_step_is_due():
    story = Story()
    out = text(story.obj(), T0 + 20)
    assert head(out, "Rollout") == "ml/lvm" and head(out, "Phase") == "Progressing"
    assert head(out, "Champion") == "phase1-baseline (memory_gru, 100 ctx, pool pool_a10)"
    assert head(out, "Candidate") == "phase2-500ctx (memory_gru, 500 ctx, pool pool_a100)"
    assert head(out, "Candidate weight") == "10%" and head(out, "Step") == "1/4"
    assert head(out, "Step started").startswith("20s ago (")
    # One duration formatter: decision.fmt.duration, as in the reason lines.
    assert head(out, "Next step").startswith("in 16m 20s (")
    assert head(out, "Reason") == ("started step 1/4: candidate phase2-500ctx at 10% (shadow) "
                                   "for 16m 40s")
    assert "Last command: none" in out and "ServeConfigApplied" in out
    assert step_states(out) == ["current", "pending", "pending", "pending"]
    assert "▶" in next(line for line in out.splitlines() if "│ 10%" in line)


def test_a_breach_shows_each_measurement_against_its_threshold():
    story = Story()
    story.breach(T0 + 10)
    out = text(story.obj(), T0 + 12)
    assert "Last analysis: guardrails · breach · 2s ago" in out
    assert head(out, "Guardrail breaches") == "1 in a row (rollback at 2)"
    assert "12.4 ms" in head(out, "Reason")
    p95 = next(line for line in out.splitlines()
               if "p95LatencyMs" in line and CANDIDATE in line and "all" in line)
    assert "12.4 ms" in p95 and "≤ 10 ms" in p95 and "breach" in p95


def test_the_sequential_judge_shows_its_interval_evidence_and_events_to_decide():
    from lvm_operator.decision import Judge, QualityPolicy
    story = Story()
    story.plan = plan(quality=QualityPolicy(interval_s=100.0, window_s=600.0,
                                            judge=Judge.SEQUENTIAL))
    obs = window({"feedback": 2_000, "hit5_proxy": 0.655}, {"feedback": 18_000,
                                                            "hit5_proxy": 0.665})
    story.tick(T0 + 200, Observations(guardrail=good(), quality=obs))
    out = text(story.obj(), T0 + 201)
    row = next(line for line in out.splitlines() if "hit5Delta" in line)
    # Δ̂ = 65.5% − 66.5% = −1.0 point, judged against "Δ ≥ −1 pt"
    assert "-1.0 pts" in row and "≥ -1.0 pts" in row and "inconclusive" in row, row
    assert "e(rollback)" in row and "e(pass)" in row and "pts ·" in row, row
    assert "Hit@5 Δ -1.0 pts vs champion, anytime 99% interval" in out


def test_rolled_back_is_over_no_current_step_nothing_due():
    story = Story()
    story.breach(T0 + 10)
    story.breach(T0 + 20)
    obj = story.obj()
    assert views.finished(obj["status"])
    assert views.next_step_text(obj["status"], SPEC, at(T0 + 30)) == "—"
    out = text(obj, T0 + 30)
    assert head(out, "Phase") == "RolledBack" and head(out, "Candidate weight") == "0%"
    assert step_states(out) == ["", "", "", ""]


def test_promoted_marks_every_step_done():
    story = Story()
    story.healthy_until(T0 + 4000.0)
    obj = story.obj()
    assert obj["status"]["phase"] == "Promoted"
    out = text(obj, story.now + 65)
    assert step_states(out) == ["done", "done", "done", "done"]
    assert "promoted phase2-500ctx" in out


def test_get_rows_line_up_and_follow_the_status():
    story = Story()
    first = views.get_row(story.obj(), with_namespace=False, now=at(T0 + 3725))
    story.healthy_until(T0 + 1000.0)
    second = views.get_row(story.obj(), with_namespace=True, now=at(T0 + 1000.0))
    assert first[:7] == ["lvm", CHAMPION, CANDIDATE, "Progressing", "1/4", "10%", ""]
    assert first[-1] == "1h 2m"  # AGE: two units at most
    assert second[:8] == ["ml", "lvm", CHAMPION, CANDIDATE, "Progressing", "2/4", "20%", "pass"]
    assert second[views.header_index(True, "NEXT STEP")] == "in 16m 40s"
    assert len(second[views.header_index(True, "REASON")]) == views.REASON_WIDTH
    header = views.get_header(True)
    columns = views.Columns(header, [second])
    assert columns.line(header).index("PHASE") == columns.line(second).index("Progressing")
    gone = views.deleted_row(story.obj(), with_namespace=True)
    assert gone[views.header_index(True, "PHASE")] == "<deleted>"


def test_commands_recorded_and_pending():
    story = Story()
    story.tick(T0 + 5, Observations(), command=LastCommand(
        verb="pause", id="20261125T000000Z-aaaa0000", time=at(T0 + 5),
        result=CommandResult.REJECTED, message="not paused"))
    pending = Command(verb=Verb.ROLLBACK, id="20261125T000100Z-bbbb0000",
                      target_version="phase0-legacy")
    out = text(story.obj(pending.annotations()), T0 + 65)
    assert "Last command: pause rejected 1m ago (id 20261125T000000Z-aaaa0000): not paused" in out
    assert ("Pending command: rollback:phase0-legacy (id 20261125T000100Z-bbbb0000), "
            "not consumed by the operator yet") in out


def test_lane_health_lists_the_flagged_lanes():
    story = Story()
    flags = [LaneFlag(version=CHAMPION, lane=3, source="production", value=0.3, overall=0.7,
                      below_relative=4 / 7, samples=240)]
    story.tick(T0 + 5, Observations(), lane_health=LaneHealthStatus(
        verdict="degraded", reason="lane 3 below overall", flagged=flags, time=at(T0 + 5)))
    out = text(story.obj(), T0 + 65)
    assert "Lane health: degraded · production checked 1m ago" in out
    lane = next(line for line in out.splitlines() if "production" in line and "│" in line)
    for cell in (CHAMPION, "3", "30.0%", "70.0%", "57.1%", "240"):
        assert cell in lane, lane


def test_durations_are_decision_fmt_durations():
    now = at(T0)
    assert views.relative(at(T0 + 192.7).isoformat(), now) == "in 3m 12s"
    assert views.relative(at(T0 - 5).isoformat(), now) == "5s ago"
    assert views.age(at(T0 - 8 * 86400 - 3600).isoformat(), now) == "8d 1h"
    assert views.relative(None, now) == "" and views.age("not a time", now) == ""


def test_a_checkpoints_recorded_training_numbers_are_shown_beside_the_measured_ones():
    story = Story()
    obj = story.obj()
    obj["status"]["evaluation"] = {"history": [{
        "purpose": "gate", "version": CANDIDATE, "time": at(T0).isoformat(), "sequences": 512,
        "hit1": 0.41, "hit5": 0.62, "hit10": 0.7,
        "provenance": {"source": "seed", "epoch": 7, "hit1": 0.5, "hit5": 0.6652,
                       "hit10": 0.7478, "args": {"min_length": 500, "lr": 0.0005}}}]}
    out = text(obj, T0 + 60)
    line = next(x for x in out.splitlines() if x.startswith("Trained"))
    assert f"{CANDIDATE} (seed checkpoint, epoch 7): recorded val Hit@1 50.0%, Hit@5 66.5%" \
        in line, line
    assert line.endswith("trained with lr=0.0005, min_length=500"), line
