"""The demo's live view: the rollout's phase, step and weight and each version's numbers against
the thresholds, recorded for the timeline report."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from .manifest import NAME, NAMESPACE
from .report import Decision, TimelineSample


@dataclass
class Recorder:
    """What the live view saw: the report's input."""

    started: float = field(default_factory=time.monotonic)
    samples: list[TimelineSample] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)

    def now(self) -> float:
        return time.monotonic() - self.started


def _get_rollout(api) -> dict:
    from lvm_operator.api.rollout import GROUP, PLURAL, VERSION

    return api.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, NAME)


def _fmt(value: float | None, scale: float = 1.0, spec: str = ".2f") -> str:
    return "–" if value is None else format(value * scale, spec)


def _view(obj: dict, observed: dict, scenario: str, recorder: Recorder) -> Group:
    status = obj.get("status") or {}
    spec = obj["spec"]
    steps = spec.get("steps", [])
    step = status.get("currentStep")
    weight = status.get("candidateWeight") or 0
    head = Table.grid(padding=(0, 2))
    head.add_row("[bold]scenario", scenario, "[bold]elapsed", f"{recorder.now():.0f}s")
    head.add_row("[bold]phase", str(status.get("phase", "Pending")),
                 "[bold]step", f"{(step or 0) + 1}/{len(steps)}" if step is not None else "–")
    head.add_row("[bold]candidate weight", f"{weight}%", "[bold]next step",
                 str(status.get("nextStepAt") or "–"))
    head.add_row("[bold]verdict", str((status.get("lastAnalysis") or {}).get("verdict", "–")),
                 "[bold]reason", str((status.get("lastAnalysis") or {}).get("reason")
                                     or status.get("reason") or "–"))
    metrics = Table("version", "role", "req/s", "P95 ms (<5, >10 rolls back)",
                    "Hit@5 proxy (≥.60, <.55)", "errors (<.1%, >1%)", "empty hits (<10%)")
    roles = {spec["champion"]["version"]: "champion", spec["candidate"]["version"]: "candidate"}
    for version, m in sorted(observed.items()):
        metrics.add_row(version, roles.get(version, "warm"), _fmt(m.get("rps"), spec=".1f"),
                        _fmt(m.get("p95_ms")), _fmt(m.get("hit5"), spec=".3f"),
                        _fmt(m.get("error_rate"), 100, ".2f") + "%",
                        _fmt(m.get("empty_rate"), 100, ".1f") + "%")
    return Group(head, ProgressBar(total=100, completed=weight, width=60), metrics)


def _observe(reader, window_s: float = 10.0) -> dict[str, dict[str, float | None]]:
    snap = reader.observe_guardrails(window_s)
    snap_q = reader.observe_quality(window_s)
    out: dict[str, dict[str, float | None]] = {}
    g = snap.for_rollout(f"{NAMESPACE}/{NAME}")
    q = snap_q.for_rollout(f"{NAMESPACE}/{NAME}")
    for version, m in (g.versions or {}).items():
        out[version] = {
            "rps": m.requests / window_s if m.requests else 0.0,
            "p95_ms": m.p95_latency_seconds * 1000 if m.p95_latency_seconds is not None
            else None,
            "error_rate": m.error_rate, "empty_rate": m.empty_hit_rate,
        }
    for version, m in (q.versions or {}).items():
        out.setdefault(version, {})["hit5"] = m.hit5_proxy
    return out


def watch_until(api, reader, recorder: Recorder, scenario: str, done_phases: set[str],
                timeout_s: float, console: Console) -> dict:
    """Live view until the rollout reaches one of ``done_phases``; returns the final object."""
    last_key: tuple | None = None
    deadline = time.monotonic() + timeout_s
    obj: dict = {}
    with Live(console=console, refresh_per_second=2, transient=False) as live:
        while time.monotonic() < deadline:
            obj = _get_rollout(api)
            status = obj.get("status") or {}
            try:
                observed = _observe(reader)
            except Exception:  # the view must not die with a scrape; the operator decides
                observed = {}
            analysis = status.get("lastAnalysis") or {}
            recorder.samples.append(TimelineSample(
                t_s=recorder.now(), scenario=scenario, phase=status.get("phase"),
                step=status.get("currentStep"), weight=status.get("candidateWeight"),
                verdict=analysis.get("verdict"), reason=analysis.get("reason"),
                versions=observed))
            key = (status.get("phase"), status.get("currentStep"))
            if key != last_key and last_key is not None:
                kind = {"Promoted": "Promoted", "RolledBack": "RolledBack"}.get(
                    str(status.get("phase")),
                    "Started" if last_key[0] in ("Promoted", "RolledBack") else "Advanced")
                reason = analysis.get("reason") or status.get("phase") or ""
                recorder.decisions.append(Decision(recorder.now(), scenario, kind, str(reason)))
            last_key = key
            live.update(_view(obj, observed, scenario, recorder))
            if status.get("phase") in done_phases:
                return obj
            time.sleep(1.0)
    raise TimeoutError(f"{scenario}: rollout did not reach {sorted(done_phases)} within "
                       f"{timeout_s:.0f}s (phase {(obj.get('status') or {}).get('phase')})")
