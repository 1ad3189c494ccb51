"""``kubectl lvm``: the kubectl plugin for LVMRollouts (installed as the ``kubectl-lvm`` script).

kubectl runs any ``kubectl-<name>`` executable on PATH as ``kubectl <name>``. Today it lists
rollouts; manual control (promote, abort, retry, pause, resume, rollback --to) arrives with the
operator.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from lvm_operator import __version__

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Inspect and steer LVMRollouts.")
console = Console()


@app.command()
def version() -> None:
    """Print the plugin's version."""
    console.print(f"kubectl-lvm {__version__}")


@app.command("get")
def get(
    namespace: Annotated[str | None, typer.Option("--namespace", "-n")] = None,
    all_namespaces: Annotated[bool, typer.Option("--all-namespaces", "-A")] = False,
) -> None:
    """List LVMRollouts with their phase, step and candidate weight."""
    from kubernetes import client, config

    from lvm_operator.api.rollout import GROUP, PLURAL, VERSION

    config.load_kube_config()
    api = client.CustomObjectsApi()
    if all_namespaces:
        items = api.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
    else:
        ns = namespace or config.list_kube_config_contexts()[1]["context"].get(
            "namespace", "default")
        items = api.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
    table = Table("NAMESPACE", "NAME", "CHAMPION", "CANDIDATE", "PHASE", "STEP", "WEIGHT")
    for item in items:
        status = item.get("status") or {}
        spec = item["spec"]
        table.add_row(item["metadata"]["namespace"], item["metadata"]["name"],
                      spec["champion"]["version"], spec["candidate"]["version"],
                      str(status.get("phase", "")), str(status.get("currentStep", "")),
                      str(status.get("candidateWeight", "")))
    console.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
