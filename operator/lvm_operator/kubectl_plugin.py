"""``kubectl lvm``: the kubectl plugin for LVMRollouts (installed as the ``kubectl-lvm`` script).

kubectl runs any ``kubectl-<name>`` executable on PATH as ``kubectl <name>``, with the same
environment, so the plugin reads the same kubeconfig (``$KUBECONFIG`` or ``~/.kube/config``) and
uses its current context and namespace, like kubectl; ``--context``, ``--kubeconfig`` and
``-n/--namespace`` override them.

* ``kubectl lvm get [-n NS | -A] [-w]`` — one row per rollout; ``-w`` prints a new row whenever
  one changes.
* ``kubectl lvm status NAME`` — the whole story: steps (which is current), candidate weight, each
  metric of the last analysis against its threshold with its verdict, the reason line, when the
  next step is due, conditions, the last command and the history.
* ``kubectl lvm promote|abort|retry|pause|resume NAME`` and ``kubectl lvm rollback NAME --to V`` —
  manual control. They never touch the spec (GitOps tools would revert it): they set the one-shot
  command annotations of :mod:`lvm_operator.commands` with a merge patch; the operator carries the
  command out once and records it in ``status.lastCommand``. ``--wait`` waits for that record.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from lvm_operator import __version__
from lvm_operator.api.rollout import CRD_NAME, GROUP, KIND, PLURAL, VERSION
from lvm_operator.commands import (
    ANNOTATION_COMMAND,
    ANNOTATION_COMMAND_ID,
    Command,
    CommandError,
    Verb,
    parse_command,
)
from lvm_operator.decision import fmt

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Inspect and steer LVMRollouts (kubectl lvm ...).")
console = Console(highlight=False)
err = Console(stderr=True, highlight=False)

Namespace = Annotated[str | None, typer.Option(
    "--namespace", "-n", help="Namespace (default: the kubeconfig context's, else 'default').")]
Context = Annotated[str | None, typer.Option("--context", help="kubeconfig context to use.")]
Kubeconfig = Annotated[str | None, typer.Option(
    "--kubeconfig", help="Path to the kubeconfig (default: $KUBECONFIG or ~/.kube/config).")]
Name = Annotated[str, typer.Argument(help="The LVMRollout's name.")]


# ---------------------------------------------------------------------------------------------
# Talking to the cluster
# ---------------------------------------------------------------------------------------------


def fail(message: str, hint: str | None = None, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}")
    if hint:
        err.print(f"  {hint}")
    raise typer.Exit(code)


@dataclass
class Cluster:
    api: Any  # kubernetes.client.CustomObjectsApi
    namespace: str  # the context's namespace (or 'default')
    server: str

    def ns(self, namespace: str | None) -> str:
        return namespace or self.namespace

    # -- errors that say what to do -------------------------------------------------------------

    def explain(self, exc: Exception, namespace: str | None, name: str | None = None) -> NoReturn:
        from kubernetes.client.exceptions import ApiException

        where = f"namespace {namespace!r}" if namespace else "the cluster"
        if not isinstance(exc, ApiException):
            fail(f"cannot reach the cluster at {self.server}: {type(exc).__name__}: {exc}",
                 "check the kubeconfig's current context: kubectl config current-context")
        try:
            body = json.loads(exc.body or "")
        except (TypeError, ValueError):
            body = {}
        body = body if isinstance(body, dict) else {}
        if exc.status == 404:
            if name and body.get("reason") == "NotFound" and (body.get("details") or {}).get(
                    "name"):
                fail(f"{KIND} {name!r} not found in {where}",
                     f"list the rollouts there with: kubectl lvm get -n {namespace}"
                     if namespace else "list them with: kubectl lvm get -A")
            fail(f"the {KIND} CRD ({CRD_NAME}) is not installed in the cluster at {self.server}",
                 "install it: kubectl apply --server-side -f crds/lvmrollout.yaml "
                 "(or install the Helm chart)")
        if exc.status in (401, 403):
            fail(f"not allowed: {body.get('message') or exc.reason}",
                 f"you need get/list/watch/patch on {CRD_NAME} in {where}")
        fail(f"the apiserver answered {exc.status}: {body.get('message') or exc.reason}")

    # -- calls --------------------------------------------------------------------------------

    def get(self, name: str, namespace: str) -> dict:
        try:
            return self.api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except Exception as exc:
            self.explain(exc, namespace, name)

    def list(self, namespace: str | None) -> dict:
        try:
            if namespace is None:
                return self.api.list_cluster_custom_object(GROUP, VERSION, PLURAL)
            return self.api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        except Exception as exc:
            self.explain(exc, namespace)

    def annotate(self, name: str, namespace: str, annotations: dict[str, str]) -> dict:
        try:
            return self.api.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name,
                {"metadata": {"annotations": annotations}},
                _content_type="application/merge-patch+json")
        except Exception as exc:
            self.explain(exc, namespace, name)


def connect(kubeconfig: str | None, context: str | None) -> Cluster:
    """The kubeconfig's client and namespace, as kubectl would pick them."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    try:
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
        chosen = active
        if context:
            chosen = next((c for c in contexts if c["name"] == context), None)
            if chosen is None:
                names = ", ".join(c["name"] for c in contexts) or "none"
                fail(f"context {context!r} not found in the kubeconfig; contexts: {names}")
        api_client = config.new_client_from_config(config_file=kubeconfig,
                                                   context=chosen["name"])
    except (ConfigException, FileNotFoundError) as exc:
        fail(f"no usable kubeconfig: {exc}",
             "set KUBECONFIG, pass --kubeconfig, or check: kubectl config view")
    namespace = (chosen.get("context") or {}).get("namespace") or "default"
    return Cluster(client.CustomObjectsApi(api_client), namespace,
                   api_client.configuration.host)


# ---------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def human_duration(seconds: float) -> str:
    """3725 → '1h2m'; 59 → '59s'; like kubectl's ages (two units at most)."""
    s = int(abs(seconds))
    if s < 60:
        return f"{s}s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, s = divmod(s, size)
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts[:2])


def relative(value: str | None, now: datetime | None = None) -> str:
    """'in 3m12s' for the future, '5s ago' for the past, '' when unset."""
    when = parse_time(value)
    if when is None:
        return ""
    delta = (when - (now or datetime.now(UTC))).total_seconds()
    return f"in {human_duration(delta)}" if delta >= 0 else f"{human_duration(delta)} ago"


def age(value: str | None, now: datetime | None = None) -> str:
    when = parse_time(value)
    if when is None:
        return ""
    return human_duration(((now or datetime.now(UTC)) - when).total_seconds())


#: Metrics where a higher value is better (compared with ≥ their threshold).
_HIGHER_IS_BETTER = ("hit1", "hit5", "hit10", "hit")


def comparator(metric: str) -> str:
    return "≥" if metric.lower().startswith(_HIGHER_IS_BETTER) else "≤"


def fmt_metric(metric: str, value: float | None) -> str:
    if value is None:
        return "—"
    name = metric.lower()
    if name.endswith("ms"):
        return f"{value:.3g} ms"
    if name.endswith(("rate", "ratemax", "degradation")):
        return f"{value * 100:.3g}%"
    return f"{value:.3g}"


VERDICT_STYLE = {"pass": "green", "breach": "bold red", "noData": "yellow", "error": "magenta",
                 "inconclusive": "cyan", "blocked": "bold red", "pending": "yellow",
                 "ok": "green", "drifted": "bold red", "healthy": "green",
                 "degraded": "bold red"}
PHASE_STYLE = {"Progressing": "cyan", "Promoted": "green", "RolledBack": "red",
               "RollingBack": "red", "Failed": "bold red", "Paused": "yellow"}
TERMINAL_PHASES = {"Promoted", "RolledBack", "Failed", "Aborted"}


def styled(value: Any, styles: dict[str, str]) -> Text:
    text = "" if value is None else str(value)
    return Text(text, style=styles.get(text, ""))


def next_step_text(status: dict, spec: dict, now: datetime | None = None) -> str:
    phase = status.get("phase")
    if phase in TERMINAL_PHASES:
        return "—"
    if phase == "Paused" or spec.get("paused"):
        return "paused"
    due = parse_time(status.get("nextStepAt"))
    if due is None:
        return ""
    delta = (due - (now or datetime.now(UTC))).total_seconds()
    if delta >= 0:
        return f"in {human_duration(delta)}"
    return f"due {human_duration(delta)} ago (waiting for checks)"


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


class Columns:
    """kubectl-style plain columns: widths fixed by the first rows, so watch rows line up."""

    def __init__(self, header: list[str], rows: list[list[str]]) -> None:
        self.widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
                       for i, h in enumerate(header)]
        self.header = header

    def line(self, row: list[str]) -> str:
        cells = [cell.ljust(w) for cell, w in zip(row[:-1], self.widths[:-1], strict=True)]
        return "   ".join([*cells, row[-1]]).rstrip()


def _emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@app.command("get")
def get(
    namespace: Namespace = None,
    all_namespaces: Annotated[bool, typer.Option("--all-namespaces", "-A",
                                                 help="List across all namespaces.")] = False,
    watch: Annotated[bool, typer.Option("--watch", "-w",
                                        help="After listing, print a row on each change.")] = False,
    watch_timeout: Annotated[float | None, typer.Option(
        "--watch-timeout", help="Stop watching after this many seconds.")] = None,
    context: Context = None,
    kubeconfig: Kubeconfig = None,
) -> None:
    """List LVMRollouts: phase, step, weight, verdict, next step, reason, age."""
    cluster = connect(kubeconfig, context)
    ns = None if all_namespaces else cluster.ns(namespace)
    listing = cluster.list(ns)
    items = sorted(listing.get("items") or [],
                   key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
    header = ["NAMESPACE", *GET_COLUMNS] if all_namespaces else list(GET_COLUMNS)
    rows = [get_row(o, all_namespaces) for o in items]
    if not rows and not watch:
        where = 'any namespace' if ns is None else f'namespace {ns}'
        err.print(f"No LVMRollouts found in {where}.")
        return
    columns = Columns(header, rows)
    _emit(columns.line(header))
    last: dict[tuple[str, str], list[str]] = {}
    for obj, row in zip(items, rows, strict=True):
        _emit(columns.line(row))
        last[(obj["metadata"].get("namespace", ""), obj["metadata"]["name"])] = row
    if watch:
        _watch(cluster, ns, all_namespaces, columns, last,
               listing.get("metadata", {}).get("resourceVersion"), watch_timeout)


def _watch(cluster: Cluster, ns: str | None, with_namespace: bool, columns: Columns,
           last: dict[tuple[str, str], list[str]], resource_version: str | None,
           timeout_s: float | None) -> None:
    from kubernetes import watch as kwatch
    from kubernetes.client.exceptions import ApiException

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while deadline is None or time.monotonic() < deadline:
        remaining = None if deadline is None else max(1, int(deadline - time.monotonic()))
        server_timeout = min(remaining or 300, 300)
        kwargs: dict[str, Any] = {"timeout_seconds": server_timeout,
                                  "allow_watch_bookmarks": True}
        if resource_version:
            kwargs["resource_version"] = resource_version
        if ns is None:
            func, args = cluster.api.list_cluster_custom_object, (GROUP, VERSION, PLURAL)
        else:
            func, args = cluster.api.list_namespaced_custom_object, (GROUP, VERSION, ns, PLURAL)
        w = kwatch.Watch()
        try:
            for event in w.stream(func, *args, **kwargs):
                obj = event["object"]
                meta = obj.get("metadata") or {}
                resource_version = meta.get("resourceVersion") or resource_version
                if event["type"] == "BOOKMARK":
                    continue
                if event["type"] == "ERROR":
                    resource_version = None  # expired: start from now
                    break
                key = (meta.get("namespace", ""), meta.get("name", ""))
                row = get_row(obj, with_namespace)
                if event["type"] == "DELETED":
                    row[header_index(with_namespace, "PHASE")] = "<deleted>"
                    last.pop(key, None)
                elif last.get(key) == row:
                    continue
                else:
                    last[key] = row
                _emit(columns.line(row))
                if deadline is not None and time.monotonic() >= deadline:
                    w.stop()
        except ApiException as exc:
            if exc.status == 410:  # resourceVersion too old: continue from now
                resource_version = None
                continue
            cluster.explain(exc, ns)
        except KeyboardInterrupt:
            return


def header_index(with_namespace: bool, column: str) -> int:
    return GET_COLUMNS.index(column) + (1 if with_namespace else 0)


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
    """The renderables of ``kubectl lvm status`` (a list, so tests can render them too)."""
    now = now or datetime.now(UTC)
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    out: list[Any] = []

    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    phase = status.get("phase") or "<none> (the operator has not reported yet)"
    head.add_row("Rollout", f"{meta.get('namespace')}/{meta.get('name')}")
    head.add_row("Phase", styled(phase, PHASE_STYLE))
    head.add_row("Champion", _version_line(spec.get("champion") or {})
                 + (f" — serving {champion_of(obj)}" if champion_of(obj)
                    != (spec.get("champion") or {}).get("version") else ""))
    head.add_row("Candidate", _version_line(spec.get("candidate") or {}))
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
    generation, observed = meta.get("generation"), status.get("observedGeneration")
    if generation is not None and observed is not None and observed < generation:
        head.add_row("Note", Text(f"status is for generation {observed}; the spec is at "
                                  f"{generation} (the operator has not caught up)", "yellow"))
    out.append(head)

    steps = _section("Steps", ("", "#", "WEIGHT", "DURATION", "SHADOW", "STATE"))
    current = status.get("currentStep")
    terminal = status.get("phase") in TERMINAL_PHASES
    for i, step in enumerate(spec.get("steps") or []):
        if current is None or terminal:
            state = "done" if status.get("phase") == "Promoted" else ""
        else:
            state = "done" if i < current else "current" if i == current else "pending"
        mark = "▶" if state == "current" else ""
        steps.add_row(mark, str(i + 1), f"{step.get('weight')}%", str(step.get("duration", "")),
                      "yes" if step.get("shadow") else "", Text(state, "bold cyan" if
                                                                state == "current" else ""))
    out.append(steps)

    if analysis:
        title = "Last analysis"
        bits = [analysis.get("check"), analysis.get("verdict"), relative(analysis.get("time"), now)]
        title += ": " + " · ".join(b for b in bits if b)
        table = _section(title, ("VERSION", "LANE", "METRIC", "VALUE", "THRESHOLD", "SAMPLES",
                                 "VERDICT"))
        for m in analysis.get("measurements") or []:
            metric = m.get("metric", "")
            threshold = m.get("threshold")
            table.add_row(
                m.get("version", ""), "all" if m.get("lane") is None else str(m["lane"]),
                metric, fmt_metric(metric, m.get("value")),
                "—" if threshold is None else f"{comparator(metric)} "
                f"{fmt_metric(metric, threshold)}",
                "—" if m.get("samples") is None else str(m["samples"]),
                styled(m.get("verdict"), VERDICT_STYLE))
        if not analysis.get("measurements"):
            table.add_row("—", "", "", "", "", "", styled(analysis.get("verdict"),
                                                          VERDICT_STYLE))
        out.append(table)

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


def _pct(x: float | None) -> str:
    return fmt.fraction(x, missing="—")


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
        for r in (ev.get("history") or [])[-6:]:
            table.add_row(r.get("version", ""), r.get("purpose", ""),
                          relative(r.get("time"), now), str(r.get("sequences") or "—"),
                          _pct(r.get("hit1")), _pct(r.get("hit5")), _pct(r.get("hit10")),
                          r.get("error") or "")
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


@app.command("status")
def status_cmd(name: Name, namespace: Namespace = None, context: Context = None,
               kubeconfig: Kubeconfig = None) -> None:
    """Show one rollout in detail: steps, weights, analysis vs thresholds, conditions, history."""
    cluster = connect(kubeconfig, context)
    obj = cluster.get(name, cluster.ns(namespace))
    for renderable in render_status(obj):
        console.print(renderable)
        console.print()


# ---------------------------------------------------------------------------------------------
# Manual commands
# ---------------------------------------------------------------------------------------------

Wait = Annotated[bool, typer.Option(
    "--wait", help="Wait until the operator has recorded the command in status.lastCommand.")]
Timeout = Annotated[float, typer.Option("--timeout", help="Seconds to wait with --wait.")]


def new_command_id() -> str:
    """Unique and sortable by time: ``20261125T040102Z-1a2b3c4d``."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def send_command(verb: Verb, name: str, namespace: str | None, context: str | None,
                 kubeconfig: str | None, target: str | None = None, force: bool = False,
                 wait: bool = False, timeout_s: float = 60.0) -> None:
    cluster = connect(kubeconfig, context)
    ns = cluster.ns(namespace)
    obj = cluster.get(name, ns)  # fails with a clear message if it (or the CRD) is missing
    status = obj.get("status") or {}
    if verb is Verb.ROLLBACK and not force:
        known = [h.get("version") for h in status.get("history") or []]
        if target not in known:
            fail(f"{KIND} {ns}/{name} has no version {target!r} in status.history "
                 f"(known: {', '.join(known) or 'none'})",
                 "rollback --to needs a version the rollout has served before; "
                 "--force sends it anyway (the operator will reject it if it cannot)")
    try:
        pending = parse_command((obj.get("metadata") or {}).get("annotations"))
    except CommandError:
        pending = None
    if pending is not None:
        err.print(f"[yellow]warning:[/] replacing the pending command "
                  f"{pending.annotation_value()!r} (id {pending.id}), which the operator has "
                  "not consumed yet")
    command = Command(verb=verb, id=new_command_id(), target_version=target)
    cluster.annotate(name, ns, command.annotations())
    console.print(f"{PLURAL}.{GROUP}/{name} in namespace {ns}: [bold]{command.annotation_value()}"
                  f"[/] requested (command id {command.id})")
    console.print(f"  set {ANNOTATION_COMMAND}={command.annotation_value()} and "
                  f"{ANNOTATION_COMMAND_ID}={command.id}; the spec is unchanged")
    if not wait:
        console.print(f"  the operator carries it out once and records it in status.lastCommand;"
                      f" follow with: kubectl lvm status {name} -n {ns}")
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        last = (cluster.get(name, ns).get("status") or {}).get("lastCommand") or {}
        if last.get("id") == command.id:
            result = last.get("result", "?")
            console.print(f"  operator: {result}" + (f": {last['message']}"
                                                     if last.get("message") else ""))
            if result != "accepted":
                raise typer.Exit(1)
            return
        time.sleep(0.5)
    fail(f"the operator has not recorded command {command.id} on {KIND} {ns}/{name} within "
         f"{timeout_s:g}s", "is the operator running? kubectl get pods -A | grep lvm")


def _simple(verb: Verb, doc: str):
    def command(name: Name, namespace: Namespace = None, wait: Wait = False,
                timeout: Timeout = 60.0, context: Context = None,
                kubeconfig: Kubeconfig = None) -> None:
        send_command(verb, name, namespace, context, kubeconfig, wait=wait, timeout_s=timeout)

    command.__doc__ = doc
    command.__name__ = f"{verb.value}_cmd"
    app.command(verb.value)(command)


_simple(Verb.PROMOTE, "Promote the candidate now, skipping the remaining steps.")
_simple(Verb.ABORT, "Abort: all traffic to the champion; the candidate is kept scaled down.")
_simple(Verb.RETRY, "After a rollback or abort, start again from step 1 with the same candidate.")
_simple(Verb.PAUSE, "Pause: freeze the step timers (guardrail rollbacks stay armed).")
_simple(Verb.RESUME, "Resume a rollout paused with kubectl lvm pause.")


@app.command("rollback")
def rollback_cmd(
    name: Name,
    to: Annotated[str, typer.Option("--to", help="The version (from status.history) to serve.")],
    namespace: Namespace = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Send even if the version is not in status.history.")] = False,
    wait: Wait = False,
    timeout: Timeout = 60.0,
    context: Context = None,
    kubeconfig: Kubeconfig = None,
) -> None:
    """Serve an earlier version from the rollout's history (all traffic to it)."""
    send_command(Verb.ROLLBACK, name, namespace, context, kubeconfig, target=to, force=force,
                 wait=wait, timeout_s=timeout)


@app.command()
def version() -> None:
    """Print the plugin's version."""
    console.print(f"kubectl-lvm {__version__}")


def main() -> None:
    app(prog_name="kubectl lvm")


if __name__ == "__main__":
    main()
