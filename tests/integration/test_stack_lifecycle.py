"""The whole stack starts twice in a row without port clashes and leaves no process behind."""

from __future__ import annotations

from lvm_operator.devstack.procs import session_processes
from lvm_operator.devstack.stack import start_stack


def test_stack_starts_twice_and_leaves_nothing(tmp_path):
    for attempt in range(2):
        stack = start_stack(tmp_path / f"run{attempt}")
        sessions = stack.sessions()
        assert set(sessions) == {"etcd", "kube-apiserver", "prometheus", "ray-head", "ray-worker",
                                 "seaweedfs"}
        assert all(session_processes(sid) for sid in sessions.values())
        stack.stop()
        leftovers = {name: [p.pid for p in session_processes(sid)]
                     for name, sid in sessions.items()}
        assert not any(leftovers.values()), f"processes left behind: {leftovers}"
