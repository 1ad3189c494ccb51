"""Print the argocd-cm entries for LVMRollout (health check and actions) from the .lua files.

    python tools/argocd/render_cm.py > tools/argocd/argocd-cm.yaml

``tests/unit/test_argocd_lua.py`` keeps the checked-in file equal to this output.
"""

from __future__ import annotations

from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
KEY = "lvm.rollout.io_LVMRollout"
VERBS = ("promote", "abort", "retry", "pause", "resume")


class _Literal(str):
    pass


def _literal(dumper: yaml.SafeDumper, value: _Literal) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")


def action_script(verb: str) -> str:
    """The action script for ``verb`` (one template for every command verb)."""
    if verb not in VERBS:
        raise ValueError(f"unknown action {verb!r}; known: {', '.join(VERBS)}")
    return (HERE / "actions" / "command.lua").read_text().replace("{verb}", verb)


def render() -> str:
    yaml.SafeDumper.add_representer(_Literal, _literal)
    actions = {
        "discovery.lua": _Literal((HERE / "actions" / "discovery.lua").read_text()),
        "definitions": [{"name": verb, "action.lua": _Literal(action_script(verb))}
                        for verb in VERBS],
    }
    cm = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "argocd-cm", "namespace": "argocd",
                     "labels": {"app.kubernetes.io/part-of": "argocd"}},
        "data": {
            f"resource.customizations.health.{KEY}": _Literal((HERE / "health.lua").read_text()),
            f"resource.customizations.actions.{KEY}": _Literal(
                yaml.safe_dump(actions, sort_keys=False)),
        },
    }
    header = ("# Merge into Argo CD's argocd-cm (generated from tools/argocd/*.lua by "
              "tools/argocd/render_cm.py).\n")
    return header + yaml.safe_dump(cm, sort_keys=False, width=100)


if __name__ == "__main__":
    print(render(), end="")
