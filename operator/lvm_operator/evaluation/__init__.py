"""Offline evaluation on a held-out eval set (pre-rollout gate, drift check) and lane health.

:mod:`.policy` holds the pure rules; :mod:`.runner` runs ``python -m lvm_serving.evaluate`` in
child processes of the operator.
"""
