"""The operator's controller: one pure tick inside a thin I/O shell.

Pure (plain data in, plain data out; an import-linter contract keeps them free of clients):

* :mod:`.adapter` — spec → decision ``Plan``; decision state ↔ status; spec + state →
  Serve ``AppSpec``; the fingerprint that restarts a rollout when its experiment changes.
* :mod:`.transitions` — manual commands, promotion and its history, supersede, rollback --to.
* :mod:`.evaluations` — which offline evaluations are wanted, the gate/drift and lane health.
* :mod:`.status` — the whole new status from one tick, its minimal merge patch, the
  conditions and the Events (with the numbers).
* :mod:`.tick` — one tick: plan what to measure, decide, render, settle the apply.

The shell:

* :mod:`.reconcile` — read → measure → observe serving → tick → apply → write status → emit.
* :mod:`.kube` — the apiserver calls; :mod:`.measurements` — the shared Prometheus cache.
* :mod:`.handlers` — Kopf: a daemon per LVMRollout, create/update/resume handlers that validate
  and wake it, start-up settings (peering, probes, metrics); ``run()`` for ``lvm-rollout
  operator``.
"""
