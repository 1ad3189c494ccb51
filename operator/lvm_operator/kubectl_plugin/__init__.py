"""``kubectl lvm``: the kubectl plugin for LVMRollouts (installed as the ``kubectl-lvm`` script).

kubectl runs any ``kubectl-<name>`` executable on PATH as ``kubectl <name>``, with the same
environment, so the plugin reads the same kubeconfig (``$KUBECONFIG`` or ``~/.kube/config``) and
uses its current context and namespace, like kubectl; ``--context``, ``--kubeconfig`` and
``-n/--namespace`` override them.

Three modules, one job each: :mod:`.cluster` talks to the apiserver (reads rollouts, sets the
one-shot command annotations), :mod:`.views` renders a rollout into text with no I/O, and
:mod:`.commands` holds the verbs (``get [-w]``, ``status``, ``promote|abort|retry|pause|resume``,
``rollback --to``). The console script's entry point stays ``lvm_operator.kubectl_plugin:main``.
"""

from .commands import app, main

__all__ = ["app", "main"]
