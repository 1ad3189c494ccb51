"""What ``kubectl lvm get`` and ``kubectl lvm status`` show: a rollout object turned into text.

Pure functions of the object as the apiserver returns it (a dict) and of ``now``: no apiserver,
no terminal. ``get`` rows are plain kubectl-style columns; ``status`` is a list of rich
renderables. Keeping them apart from the commands is what lets the unit tests render statuses
built by the operator's own status code and read the text a user would read.

Durations use :func:`lvm_operator.decision.fmt.duration` (the reason lines' formatter), and a
rollout is over when the decision core says so (:attr:`lvm_operator.decision.Phase.finished`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.table import Table
from rich.text import Text

from lvm_operator.commands import CommandError, parse_command
from lvm_operator.decision import Phase, fmt

# ---------------------------------------------------------------------------------------------
# Small formatting
# ---------------------------------------------------------------------------------------------


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def span(seconds: float) -> str:
    """A distance in time in whole seconds, like kubectl's ages: 3725.9 → '1h 2m'."""
    return fmt.duration(int(abs(seconds)))


def relative(value: str | None, now: datetime | None = None) -> str:
    """'in 3m 12s' for the future, '5s ago' for the past, '' when unset."""
    when = parse_time(value)
    if when is None:
        return ""
    delta = (when - (now or datetime.now(UTC))).total_seconds()
    return f"in {span(delta)}" if delta >= 0 else f"{span(delta)} ago"


def age(value: str | None, now: datetime | None = None) -> str:
    when = parse_time(value)
    if when is None:
        return ""
    return span(((now or datetime.now(UTC)) - when).total_seconds())


#: Metrics where a higher value is better (compared with ≥ their threshold).
_HIGHER_IS_BETTER = ("hit1", "hit5", "hit10", "hit")


def comparator(metric: str) -> str:
    return "≥" if metric.lower().startswith(_HIGHER_IS_BETTER) else "≤"


def fmt_metric(metric: str, value: float | None) -> str:
    if value is None:
        return "—"
    name = metric.lower()
    if name.endswith("delta"):  # the sequential judge: candidate − champion, in points
        return f"{value * 100:+.1f} pts"
    if name.endswith("ms"):
        return f"{value:.3g} ms"
    if name.endswith(("rate", "ratemax", "degradation")):
        return f"{value * 100:.3g}%"
    return f"{value:.3g}"


def _pct(x: float | None) -> str:
    return fmt.fraction(x, missing="—")


VERDICT_STYLE = {"pass": "green", "breach": "bold red", "noData": "yellow", "error": "magenta",
                 "inconclusive": "cyan", "blocked": "bold red", "pending": "yellow",
                 "ok": "green", "drifted": "bold red", "healthy": "green",
                 "degraded": "bold red"}
PHASE_STYLE = {Phase.PROGRESSING: "cyan", Phase.PROMOTED: "green", Phase.STEADY: "green",
               Phase.ROLLED_BACK: "red", Phase.FAILED: "bold red", Phase.PAUSED: "yellow"}


def styled(value: Any, styles: dict[str, str]) -> Text:
    text = "" if value is None else str(value)
    return Text(text, style=styles.get(text, ""))


def finished(status: dict) -> bool:
    """The rollout is over (or being wound up): no step is current, nothing is due."""
    try:
        return Phase(status.get("phase")).finished
    except ValueError:
        return False


def next_step_text(status: dict, spec: dict, now: datetime | None = None) -> str:
    if finished(status):
        return "—"
    if status.get("phase") == Phase.PAUSED or spec.get("paused"):
        return "paused"
    due = parse_time(status.get("nextStepAt"))
    if due is None:
        return ""
    delta = (due - (now or datetime.now(UTC))).total_seconds()
    if delta >= 0:
        return f"in {span(delta)}"
    return f"due {span(delta)} ago (waiting for checks)"


def step_text(status: dict, spec: dict) -> str:
    current = status.get("currentStep")
    total = len(spec.get("steps") or [])
    return "" if current is None else f"{current + 1}/{total}"


def candidate_of(obj: dict) -> str:
    serving = (obj.get("status") or {}).get("serving") or {}
    return serving.get("candidate") or ((obj.get("spec") or {}).get("candidate") or {}).get(
        "version", "")


def champion_of(obj: dict) -> str:
    serving = (obj.get("status") or {}).get("serving") or {}
    return serving.get("champion") or ((obj.get("spec") or {}).get("champion") or {}).get(
        "version", "")


# ---------------------------------------------------------------------------------------------
# get
# ---------------------------------------------------------------------------------------------

GET_COLUMNS = ("NAME", "CHAMPION", "CANDIDATE", "PHASE", "STEP", "WEIGHT", "VERDICT",
               "NEXT STEP", "REASON", "AGE")
REASON_WIDTH = 60


def get_header(with_namespace: bool) -> list[str]:
    return ["NAMESPACE", *GET_COLUMNS] if with_namespace else list(GET_COLUMNS)


def get_row(obj: dict, with_namespace: bool, now: datetime | None = None) -> list[str]:
    status = obj.get("status") or {}
    spec = obj.get("spec") or {}
    meta = obj.get("metadata") or {}
    weight = status.get("candidateWeight")
    reason = (status.get("lastAnalysis") or {}).get("reason") or status.get("message") or ""
    if len(reason) > REASON_WIDTH:
        reason = reason[: REASON_WIDTH - 3] + "..."
    row = [meta.get("name", ""), champion_of(obj), candidate_of(obj),
           status.get("phase") or "<none>", step_text(status, spec),
           "" if weight is None else f"{weight}%",
           (status.get("lastAnalysis") or {}).get("verdict") or "",
           next_step_text(status, spec, now), reason,
           age(meta.get("creationTimestamp"), now)]
    return [meta.get("namespace", ""), *row] if with_namespace else row


def deleted_row(obj: dict, with_namespace: bool, now: datetime | None = None) -> list[str]:
    """The row of a rollout the watch saw deleted: its last state, phase ``<deleted>``."""
    row = get_row(obj, with_namespace, now)
    row[header_index(with_namespace, "PHASE")] = "<deleted>"
    return row


def header_index(with_namespace: bool, column: str) -> int:
    return GET_COLUMNS.index(column) + (1 if with_namespace else 0)


class Columns:
    """kubectl-style plain columns: widths fixed by the first rows, so watch rows line up."""

    def __init__(self, header: list[str], rows: list[list[str]]) -> None:
        self.widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
                       for i, h in enumerate(header)]
        self.header = header

    def line(self, row: list[str]) -> str:
        cells = [cell.ljust(w) for cell, w in zip(row[:-1], self.widths[:-1], strict=True)]
        return "   ".join([*cells, row[-1]]).rstrip()


# ---------------------------------------------------------------------------------------------
# status
# ---------------------------------------------------------------------------------------------


def _version_line(v: dict) -> str:
    bits = [v.get("family"), f"{v['contextLength']} ctx" if v.get("contextLength") else None,
            f"pool {v['nodePool']}" if v.get("nodePool") else None]
    return f"{v.get('version', '?')} ({', '.join(b for b in bits if b)})"


def _section(title: str, columns: tuple[str, ...]) -> Table:
    """One titled table of the `status` view."""
    table = Table(title=title, title_justify="left", title_style="bold")
    for col in columns:
        table.add_column(col)
    return table


def render_status(obj: dict, now: datetime | None = None) -> list[Any]:
    """The renderables of ``kubectl lvm status``, top to bottom."""
    now = now or datetime.now(UTC)
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    analysis = status.get("lastAnalysis") or {}
    out: list[Any] = [_head(obj, now), _steps(spec, status)]
    if analysis:
        out.append(_analysis(analysis, now))
    out += _evaluation_sections(status, now)
    conditions = status.get("conditions") or []
    if conditions:
        table = _section("Conditions", ("TYPE", "STATUS", "REASON", "AGE", "MESSAGE"))
        for c in conditions:
            table.add_row(c.get("type", ""), c.get("status", ""), c.get("reason", ""),
                          age(c.get("lastTransitionTime"), now), c.get("message", ""))
        out.append(table)
    out.append(_command_lines(meta, status, now))
    history = status.get("history") or []
    if history:
        table = _section("History", ("VERSION", "OUTCOME", "WHEN", "CHECKPOINT", "REASON"))
        for h in history:
            table.add_row(h.get("version", ""), h.get("outcome", ""),
                          relative(h.get("time"), now), h.get("checkpoint", ""),
                          h.get("reason") or "")
        out.append(table)
    return out


def _head(obj: dict, now: datetime) -> Table:
    """Who, where, how far: the key/value lines at the top."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    phase = status.get("phase") or "<none> (the operator has not reported yet)"
    head.add_row("Rollout", f"{meta.get('namespace')}/{meta.get('name')}")
    head.add_row("Phase", styled(phase, PHASE_STYLE))
    head.add_row("Champion", _version_line(spec.get("champion") or {})
                 + (f" — serving {champion_of(obj)}" if champion_of(obj)
                    != (spec.get("champion") or {}).get("version") else ""))
    head.add_row("Candidate", _version_line(spec["candidate"]) if spec.get("candidate")
                 else "— (none: the champion serves all traffic)")
    weight = status.get("candidateWeight")
    head.add_row("Candidate weight", "—" if weight is None else f"{weight}%")
    routing = spec.get("routing") or {}
    mode = routing.get("mode", "weighted")
    extra = {"userHash": f" (key {routing.get('userKey')})",
             "contextLength": f" (> {routing.get('contextThreshold')} vectors)"}.get(mode, "")
    head.add_row("Routing", mode + extra)
    head.add_row("Step", step_text(status, spec) or "—")
    started = status.get("stepStartedAt")
    if started:
        head.add_row("Step started", f"{relative(started, now)} ({started})")
    nxt = next_step_text(status, spec, now)
    if status.get("nextStepAt") or nxt:
        head.add_row("Next step", f"{nxt} ({status['nextStepAt']})" if status.get("nextStepAt")
                     else nxt)
    guard = (spec.get("analysis") or {}).get("guardrails") or {}
    if status.get("consecutiveBreaches") is not None:
        head.add_row("Guardrail breaches", f"{status['consecutiveBreaches']} in a row "
                     f"(rollback at {guard.get('consecutiveBreaches', 2)})")
    analysis = status.get("lastAnalysis") or {}
    head.add_row("Reason", analysis.get("reason") or status.get("message") or "—")
    if status.get("message") and status.get("message") != analysis.get("reason"):
        head.add_row("Last decision", status["message"])
    git = status.get("gitSpec") or {}
    if git:
        head.add_row("Git", Text(git.get("message", ""), "" if git.get("inSync") else "yellow"))
    generation, observed = meta.get("generation"), status.get("observedGeneration")
    if generation is not None and observed is not None and observed < generation:
        head.add_row("Note", Text(f"status is for generation {observed}; the spec is at "
                                  f"{generation} (the operator has not caught up)", "yellow"))
    return head


def _steps(spec: dict, status: dict) -> Table:
    """The plan's steps, the current one marked."""
    steps = _section("Steps", ("", "#", "WEIGHT", "DURATION", "SHADOW", "STATE"))
    current = status.get("currentStep")
    over = finished(status)
    for i, step in enumerate(spec.get("steps") or []):
        if current is None or over:
            state = "done" if status.get("phase") == Phase.PROMOTED else ""
        else:
            state = "done" if i < current else "current" if i == current else "pending"
        mark = "▶" if state == "current" else ""
        steps.add_row(mark, str(i + 1), f"{step.get('weight')}%", str(step.get("duration", "")),
                      "yes" if step.get("shadow") else "", Text(state, "bold cyan" if
                                                                state == "current" else ""))
    return steps


def _analysis(analysis: dict, now: datetime) -> Table:
    """Each measurement of the last analysis against its threshold, with its verdict."""
    bits = [analysis.get("check"), analysis.get("verdict"), relative(analysis.get("time"), now)]
    title = "Last analysis: " + " · ".join(b for b in bits if b)
    measurements = analysis.get("measurements") or []
    sequential = any("ciLow" in m or "evidencePass" in m for m in measurements)
    table = _section(title, ("VERSION", "LANE", "METRIC", "VALUE", "THRESHOLD", "SAMPLES",
                             "VERDICT", *(("EVIDENCE",) if sequential else ())))
    for m in measurements:
        metric = m.get("metric", "")
        threshold = m.get("threshold")
        table.add_row(
            m.get("version", ""), "all" if m.get("lane") is None else str(m["lane"]),
            metric, fmt_metric(metric, m.get("value")),
            "—" if threshold is None else f"{comparator(metric)} "
            f"{fmt_metric(metric, threshold)}",
            "—" if m.get("samples") is None else str(m["samples"]),
            styled(m.get("verdict"), VERDICT_STYLE), *((_evidence(m),) if sequential else ()))
    if not measurements:
        table.add_row("—", "", "", "", "", "", styled(analysis.get("verdict"), VERDICT_STYLE))
    return table


def _evidence(m: dict) -> str:
    """The sequential judge's interval, e-values and the events a decision still needs."""
    parts = []
    if m.get("ciLow") is not None and m.get("ciHigh") is not None:
        parts.append(f"[{m['ciLow'] * 100:+.1f}, {m['ciHigh'] * 100:+.1f}] pts")
    if m.get("evidenceRollback") is not None:
        parts.append(f"e(rollback) {m['evidenceRollback']:.3g}")
    if m.get("evidencePass") is not None:
        parts.append(f"e(pass) {m['evidencePass']:.3g}")
    if m.get("eventsToDecide"):
        parts.append(f"~{m['eventsToDecide']} more events")
    return " · ".join(parts) or "—"


def _evaluation_sections(status: dict, now: datetime) -> list[Any]:
    """Pre-rollout gate, drift, recent evaluations and lane health, when the status has them."""
    out: list[Any] = []
    ev = status.get("evaluation") or {}
    if ev.get("gate") or ev.get("drift") or ev.get("history"):
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        if ev.get("gate"):
            g = ev["gate"]
            grid.add_row("Pre-rollout gate", Text.assemble(
                styled(g.get("verdict"), VERDICT_STYLE), f" ({g.get('candidate')}): "
                f"{g.get('reason', '')}"))
        if ev.get("drift"):
            d = ev["drift"]
            nxt = f"; next check {relative(d['nextCheckAt'], now)}" if d.get("nextCheckAt") \
                else ""
            grid.add_row("Drift", Text.assemble(styled(d.get("verdict"), VERDICT_STYLE),
                                                f" ({d.get('version')}): {d.get('reason', '')}"
                                                f"{nxt}"))
        if ev.get("baseline"):
            b = ev["baseline"]
            grid.add_row("Baseline", f"{b.get('version')} ({b.get('source')}): Hit@1 "
                         f"{_pct(b.get('hit1'))}, Hit@5 {_pct(b.get('hit5'))}, Hit@10 "
                         f"{_pct(b.get('hit10'))}")
        for r in ev.get("running") or []:
            grid.add_row("Running", f"{r.get('version')} ({r.get('purpose')}) since "
                         f"{relative(r.get('startedAt'), now)}")
        table = _section("Evaluation", ("VERSION", "PURPOSE", "WHEN", "SEQUENCES", "HIT@1",
                                        "HIT@5", "HIT@10", "ERROR"))
        recorded: dict[str, dict] = {}
        for r in (ev.get("history") or [])[-6:]:
            table.add_row(r.get("version", ""), r.get("purpose", ""),
                          relative(r.get("time"), now), str(r.get("sequences") or "—"),
                          _pct(r.get("hit1")), _pct(r.get("hit5")), _pct(r.get("hit10")),
                          r.get("error") or "")
            if r.get("provenance"):
                recorded[r.get("version", "")] = r["provenance"]
        for version, p in sorted(recorded.items()):  # the checkpoint's own record
            epoch = f", epoch {p['epoch']}" if p.get("epoch") is not None else ""
            grid.add_row("Trained", f"{version} ({p.get('source')} checkpoint{epoch}): recorded "
                         f"val Hit@1 {_pct(p.get('hit1'))}, Hit@5 {_pct(p.get('hit5'))}, "
                         f"Hit@10 {_pct(p.get('hit10'))}"
                         + ("; trained with " + ", ".join(
                             f"{k}={v:g}" for k, v in sorted(p["args"].items()))
                            if p.get("args") else ""))
        out += [grid, table]
    lh = status.get("laneHealth")
    if lh:
        title = f"Lane health: {lh.get('verdict')}"
        if lh.get("time"):
            title += f" · production checked {relative(lh['time'], now)}"
        table = _section(title, ("VERSION", "LANE", "SOURCE", "HIT@5", "OVERALL", "BELOW",
                                 "SAMPLES"))
        for f in lh.get("flagged") or []:
            table.add_row(f.get("version", ""), str(f.get("lane")), f.get("source", ""),
                          _pct(f.get("value")), _pct(f.get("overall")),
                          _pct(f.get("belowRelative")),
                          "—" if f.get("samples") is None else f"{f['samples']:g}")
        if not lh.get("flagged"):
            table.add_row("—", "", "", "", "", "", lh.get("reason", ""))
        out.append(table)
    return out


def _command_lines(meta: dict, status: dict, now: datetime) -> Text:
    """The last command the operator recorded, and one still waiting in the annotations."""
    text = Text()
    last = status.get("lastCommand")
    text.append("Last command: ", "bold")
    if last:
        verb = last.get("verb", "?")
        if last.get("targetVersion"):
            verb += f" --to {last['targetVersion']}"
        result = last.get("result", "")
        text.append(f"{verb} ")
        text.append(result, "green" if result == "accepted" else "red")
        text.append(f" {relative(last.get('time'), now)} (id {last.get('id', '?')})")
        if last.get("message"):
            text.append(f": {last['message']}")
    else:
        text.append("none")
    try:
        pending = parse_command(meta.get("annotations"))
    except CommandError as exc:
        text.append(f"\nPending command: malformed ({exc})", "red")
    else:
        if pending is not None:
            text.append(f"\nPending command: {pending.annotation_value()} (id {pending.id}), "
                        "not consumed by the operator yet", "yellow")
    return text
