"""The operator's controller: Kopf handlers that wire the API, analysis, decision and serving.

* :mod:`.adapter` (pure) — spec → decision ``Plan``; decision state ↔ status; spec + state →
  Serve ``AppSpec``; the fingerprint that restarts a rollout when its experiment changes.
* :mod:`.status` (pure) — the whole new status from one tick, its minimal merge patch, the
  conditions and the Events (with the numbers).
* :mod:`.reconcile` — one tick: read, command, measure, decide, serve, write status once.
* :mod:`.handlers` — Kopf: a daemon per LVMRollout, create/update/resume handlers that validate
  and wake it, start-up settings (peering, probes, metrics); ``run()`` for ``lvm-rollout
  operator``.
"""
