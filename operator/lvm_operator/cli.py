"""``lvm-rollout``: the project's command line.

* ``lvm-rollout crd`` prints the LVMRollout CRD generated from the pydantic models.
* ``lvm-rollout dev up|status|down`` runs the local stack (kube-apiserver + etcd, Prometheus, a
  two-node Ray cluster) detached, writes a kubeconfig and prints the endpoints.
* ``lvm-rollout demo`` is the README's first command.
* ``lvm-rollout operator`` runs the operator (:mod:`lvm_operator.controller.handlers`).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="lvm-rollout: progressive delivery of LVM versions on Ray Serve.")
dev = typer.Typer(no_args_is_help=True, help="Run the local stack of real components.")
app.add_typer(dev, name="dev")
console = Console()
err = Console(stderr=True)

RunDir = Annotated[Path | None, typer.Option(
    "--run-dir", help="Where state, logs and the kubeconfig live "
    "(default: $LVM_RUN_DIR or ~/.cache/lvm-rollout/run/dev).")]


def _run_dir(run_dir: Path | None) -> Path:
    from lvm_operator.devstack.stack import default_run_dir

    return (run_dir or default_run_dir()).resolve()


@app.command()
def crd() -> None:
    """Print the LVMRollout CustomResourceDefinition (regenerate crds/ with it)."""
    from lvm_operator.api.crd import render_crd_yaml

    sys.stdout.write(render_crd_yaml())


def _print_endpoints(endpoints: dict[str, str]) -> None:
    # Plain lines, never wrapped: people copy these into other commands.
    width = max(map(len, endpoints), default=0)
    for key, value in endpoints.items():
        print(f"  {key:<{width}}  {value}")


@dev.command("up")
def dev_up(
    run_dir: RunDir = None,
    components: Annotated[str, typer.Option(help="Comma-separated: kube,prometheus,ray")] = (
        "kube,prometheus,ray"),
    scrape_interval: Annotated[float, typer.Option(help="Prometheus scrape interval (s)")] = 1.0,
) -> None:
    """Start the stack detached; it keeps running until `lvm-rollout dev down`."""
    from lvm_operator.devstack.procs import ComponentError
    from lvm_operator.devstack.stack import read_state, recorded_health, start_stack

    directory = _run_dir(run_dir)
    if read_state(directory) and any(recorded_health(directory).values()):
        err.print(f"[yellow]a stack is already running from {directory}[/]; "
                  "`lvm-rollout dev down` stops it")
        raise typer.Exit(1)
    try:
        stack = start_stack(directory, tuple(c.strip() for c in components.split(",") if c),
                            scrape_interval_s=scrape_interval)
    except ComponentError as exc:
        err.print(f"[red]failed to start the stack[/]\n{exc}")
        raise typer.Exit(1) from exc
    console.print(f"[green]stack up[/] (state: {directory / 'state.json'})", soft_wrap=True)
    _print_endpoints(stack.endpoints())
    if stack.kubeconfig:
        print(f"\nexport KUBECONFIG={stack.kubeconfig}")


@dev.command("status")
def dev_status(run_dir: RunDir = None) -> None:
    """Show which recorded components are alive and where they listen."""
    from lvm_operator.devstack.stack import read_state, recorded_health

    directory = _run_dir(run_dir)
    state = read_state(directory)
    if state is None:
        console.print(f"no stack recorded in {directory}")
        raise typer.Exit(1)
    health = recorded_health(directory)
    for name, alive in health.items():
        print(f"  {name:16} {'running' if alive else 'stopped'}")
    _print_endpoints(state["endpoints"])
    if not all(health.values()):
        raise typer.Exit(1)


@dev.command("down")
def dev_down(run_dir: RunDir = None) -> None:
    """Stop every process the stack started (nothing is left behind)."""
    from lvm_operator.devstack.stack import stop_recorded

    stopped = stop_recorded(_run_dir(run_dir))
    console.print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


@dev.command("env")
def dev_env(run_dir: RunDir = None) -> None:
    """Print `export` lines (KUBECONFIG, PATH with kubectl/helm, RAY_ADDRESS...) for a shell."""
    from lvm_operator.devstack.stack import read_state

    state = read_state(_run_dir(run_dir))
    if state is None:
        err.print("no stack recorded; run `lvm-rollout dev up` first")
        raise typer.Exit(1)
    for key, value in state["env"].items():
        print(f"export {key}={json.dumps(value)}")


@app.command()
def demo(
    keep: Annotated[bool, typer.Option(help="Leave the stack running afterwards.")] = False,
    run_dir: RunDir = None,
) -> None:
    """Run the local demo on real components (see README)."""
    from lvm_operator.demo import run_demo

    raise typer.Exit(run_demo(_run_dir(run_dir), keep=keep, console=console))


@app.command()
def operator(
    namespace: Annotated[list[str] | None, typer.Option(
        "--namespace", "-n", help="Watch only this namespace (repeatable).")] = None,
    all_namespaces: Annotated[bool, typer.Option(
        "--all-namespaces", "-A", help="Watch every namespace (the default).")] = False,
    peering: Annotated[str, typer.Option(help="Kopf peering object name.")] = "lvm-rollout",
    standalone: Annotated[bool, typer.Option(help="Run without peering (no HA).")] = False,
    priority: Annotated[int, typer.Option(help="Peering priority; the highest one runs.")] = 0,
    peering_lifetime: Annotated[int | None, typer.Option(
        help="Seconds a silent peer counts as alive (Kopf's default: 60).")] = None,
    liveness_port: Annotated[int, typer.Option(help="Liveness /healthz port; 0: off.")] = 8080,
    metrics_port: Annotated[int, typer.Option(help="Operator /metrics port; 0: off.")] = 9090,
    tick_workers: Annotated[int, typer.Option(
        help="Threads that run reconcile ticks (all rollouts share them).")] = 16,
    dev: Annotated[bool, typer.Option(help="Verbose logs for local runs.")] = False,
    allow_link_local_endpoints: Annotated[bool, typer.Option(
        help="Let spec.prometheus.url / spec.serve.url name link-local addresses and cloud "
             "metadata hosts (refused by default: SSRF).")] = False,
) -> None:
    """Run the operator: reconcile LVMRollouts until interrupted."""
    from lvm_operator.api.endpoints import ALLOW_LINK_LOCAL_ENV
    from lvm_operator.controller.handlers import run

    os.environ[ALLOW_LINK_LOCAL_ENV] = "1" if allow_link_local_endpoints else "0"

    if namespace and all_namespaces:
        err.print("--namespace and --all-namespaces exclude each other")
        raise typer.Exit(2)
    run(namespaces=list(namespace or []), peering=None if standalone else peering,
        priority=priority, liveness_port=liveness_port or None,
        metrics_port=metrics_port or None, dev=dev, peering_lifetime=peering_lifetime,
        tick_workers=tick_workers)


def main() -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    app()


if __name__ == "__main__":
    main()
