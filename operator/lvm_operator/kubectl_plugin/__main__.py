"""``python -m lvm_operator.kubectl_plugin``: the same as the ``kubectl-lvm`` script."""

from . import main

main()
