"""A FAKE serve backend for the operator end-to-end tests: it records, it serves nothing.

The operator subprocess loads it through ``LVM_SERVE_BACKEND_FACTORY=fake_serve_backend:make``
(see :mod:`lvm_operator.backends.factory`). Every ``apply`` appends one JSON line to
``$LVM_FAKE_BACKEND_LOG`` with the wall-clock time and what would be live: the router's
champion, candidate, weight and shadow flag and the replicas per version. The tests read that
file to see *when* traffic changed (e.g. the rollback reaction time), which a real backend
would only tell through Ray's own status. It implements the whole
:class:`~lvm_operator.backends.ServeBackend` protocol: ``observe`` reports what it recorded as
running.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

from lvm_operator.backends import (
    ApplyResult,
    AppStatus,
    ObservedApp,
    ObservedVersion,
    ServeBackend,
)
from lvm_serving.contracts.serve_config import AppSpec, version_app_name

_lock = threading.Lock()


class FakeRecordingBackend:
    def __init__(self, path: str) -> None:
        self.path = path
        self.live: dict[str, AppSpec] = {}

    def apply(self, app: AppSpec) -> ApplyResult:
        changed = self.live.get(app.application) != app
        self.live[app.application] = app
        line = {
            "t": time.time(),
            "application": app.application,
            "rollout": app.router.rollout,
            "champion": app.router.champion,
            "candidate": app.router.candidate,
            "weight": app.router.candidate_weight,
            "shadow": app.router.shadow,
            "replicas": {v.version: v.replicas for v in app.versions},
        }
        with _lock, open(self.path, "a") as f:
            f.write(json.dumps(line) + "\n")
        names = (app.application,
                 *(version_app_name(app.application, v.version) for v in app.versions))
        return ApplyResult(changed, names, f"fake:{self.path}")

    def observe(self, application: str) -> ObservedApp:
        app = self.live.get(application)
        if app is None:
            return ObservedApp(application, AppStatus.NOT_DEPLOYED, "fake: nothing recorded")
        versions = {v.version: ObservedVersion(v.version, target_replicas=v.replicas,
                                               running_replicas=v.replicas, status="RUNNING")
                    for v in app.versions}
        return ObservedApp(application, AppStatus.RUNNING, "fake: recorded, nothing serves",
                           router=app.router, versions=versions)

    def verify_applied(self, app: AppSpec) -> bool | None:
        return self.live.get(app.application) == app

    def delete(self, application: str) -> None:
        self.live.pop(application, None)


def make(serve_spec: Any, *, namespace: str, kube_api_client: Any) -> ServeBackend:
    return FakeRecordingBackend(os.environ["LVM_FAKE_BACKEND_LOG"])
