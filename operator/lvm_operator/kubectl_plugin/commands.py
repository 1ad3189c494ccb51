"""The verbs of ``kubectl lvm``: ``get [-w]``, ``status``, and the manual commands.

* ``kubectl lvm get [-n NS | -A] [-w]`` — one row per rollout; ``-w`` prints a new row whenever
  one changes.
* ``kubectl lvm status NAME`` — the whole story: steps (which is current), candidate weight, each
  metric of the last analysis against its threshold with its verdict, the reason line, when the
  next step is due, conditions, the last command and the history.
* ``kubectl lvm promote|abort|retry|pause|resume NAME`` and ``kubectl lvm rollback NAME --to V`` —
  manual control. They never touch the spec (GitOps tools would revert it): they set the one-shot
  command annotations of :mod:`lvm_operator.commands` with a merge patch; the operator carries the
  command out once and records it in ``status.lastCommand``. ``--wait`` waits for that record.

Each verb is thin: it asks :mod:`.cluster` for objects, :mod:`.views` for the text, and prints.
A :class:`~.cluster.ClusterError` becomes ``error: ...`` and its hint on stderr, exit code 1.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from lvm_operator import __version__
from lvm_operator.api.rollout import GROUP, KIND, PLURAL
from lvm_operator.commands import (
    ANNOTATION_COMMAND,
    ANNOTATION_COMMAND_ID,
    Command,
    CommandError,
    Verb,
    bounded_who,
    parse_command,
)

from .cluster import Cluster, ClusterError, connect
from .views import Columns, deleted_row, get_header, get_row, render_status

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


def fail(message: str, hint: str | None = None, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}")
    if hint:
        err.print(f"  {hint}")
    raise typer.Exit(code)


@contextmanager
def reporting() -> Iterator[None]:
    """Turn a :class:`ClusterError` into the user-facing error and exit code 1."""
    try:
        yield
    except ClusterError as exc:
        fail(exc.message, exc.hint)


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
    with reporting():
        cluster = connect(kubeconfig, context)
        ns = None if all_namespaces else cluster.ns(namespace)
        listing = cluster.list(ns)
        items = sorted(listing.get("items") or [],
                       key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        header = get_header(all_namespaces)
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
        func, args = cluster.watch_call(ns)
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
                if event["type"] == "DELETED":
                    row = deleted_row(obj, with_namespace)
                    last.pop(key, None)
                else:
                    row = get_row(obj, with_namespace)
                    if last.get(key) == row:
                        continue
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


@app.command("status")
def status_cmd(
    name: Name, namespace: Namespace = None, context: Context = None,
    kubeconfig: Kubeconfig = None,
    watch: Annotated[bool, typer.Option(
        "--watch", "-w", help="For pipelines: print each change once and exit 0 when Promoted "
        "(or Steady), 1 on RolledBack, Failed, a blocked gate or a pause for a person, 2 on "
        "--timeout.")
    ] = False,
    timeout: Annotated[str, typer.Option(
        "--timeout", help="With --watch: how long to wait, a duration such as 30m.")] = "30m",
    until: Annotated[str | None, typer.Option(
        "--until", help="With --watch: exit 0 once the rollout reaches step:N.")] = None,
) -> None:
    """Show one rollout in detail: steps, weights, analysis vs thresholds, conditions, history."""
    if watch:
        raise typer.Exit(_watch_status(name, namespace, context, kubeconfig, timeout, until))
    with reporting():
        cluster = connect(kubeconfig, context)
        obj = cluster.get(name, cluster.ns(namespace))
    for renderable in render_status(obj):
        console.print(renderable)
        console.print()


def _watch_status(name: str, namespace: str | None, context: str | None,
                  kubeconfig: str | None, timeout: str, until: str | None) -> int:
    from lvm_operator.api.durations import duration_seconds

    from .waiting import TIMED_OUT, change_line, outcome, parse_until

    try:
        limit_s = duration_seconds(timeout)
        until_step = parse_until(until)
    except ValueError as exc:
        fail(str(exc), "e.g. kubectl lvm status NAME --watch --timeout 30m --until step:2")
    deadline = time.monotonic() + limit_s
    last = None
    with reporting():
        cluster = connect(kubeconfig, context)
        ns = cluster.ns(namespace)
        while True:
            obj = cluster.get(name, ns)
            line = change_line(obj)
            if line != last:
                console.print(f"{datetime.now(UTC):%H:%M:%SZ} {line}", markup=False,
                              highlight=False)
                last = line
            result = outcome(obj, until_step)
            if result.code is not None:
                console.print(result.why, markup=False, highlight=False)
                return result.code
            if time.monotonic() >= deadline:
                err.print(f"timed out after {timeout} waiting for {KIND} {ns}/{name} "
                          f"(phase {(obj.get('status') or {}).get('phase') or 'Pending'})")
                return TIMED_OUT
            time.sleep(1.0)


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
    with reporting():
        _send_command(verb, name, namespace, context, kubeconfig, target, force, wait,
                      timeout_s)


def _send_command(verb: Verb, name: str, namespace: str | None, context: str | None,
                  kubeconfig: str | None, target: str | None, force: bool, wait: bool,
                  timeout_s: float) -> None:
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
    command = Command(verb=verb, id=new_command_id(), target_version=target,
                      force=force and verb is Verb.ROLLBACK,
                      requested_by=bounded_who(cluster.user))
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
        "--force", help="Send even if the version is not in status.history, or never served "
        "as champion (a rolled-back candidate); the operator records that it was forced.")] = False,
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
