"""What serving promises the operator: the only part of :mod:`lvm_serving` the operator imports.

* :mod:`.metrics` — metric names, labels and buckets the serving app exports and the operator's
  PromQL and alert rules read;
* :mod:`.serve_config` — the Ray Serve application layout the operator renders and the app
  builds from;
* :mod:`.quality` — the offline quality rules (pre-rollout gate, drift, lane health) shared by
  the operator and the daily regression suite;
* :mod:`.eval_result` — the JSON line an evaluation child process prints and the operator reads.

They are small, pure and free of torch and Ray, so the operator can depend on them without
depending on how serving works; an import-linter contract in pyproject.toml keeps it that way.
"""
