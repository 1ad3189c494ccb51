"""Keep every Ray process of the local stack on loopback.

Ray turns ``127.0.0.1`` into the host's outward-facing address (so other machines could reach the
node) in the CLI, the dashboard's subprocesses and every worker. The local stack is one machine
and must send nothing beyond loopback, so the stack puts this directory on ``PYTHONPATH`` of the
Ray processes it starts; Python imports ``sitecustomize`` at start-up, and this one patches Ray's
address lookup the moment ``ray._private.services`` is imported (and never imports Ray itself).
"""

import importlib.abc
import importlib.machinery
import sys

_TARGET = "ray._private.services"


def _patch(services) -> None:
    services.node_ip_address_from_perspective = lambda address=None: "127.0.0.1"
    services.resolve_ip_for_localhost = lambda host: host


class _PatchOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != _TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        original_exec = spec.loader.exec_module

        def exec_module(module):
            original_exec(module)
            _patch(module)

        spec.loader.exec_module = exec_module
        return spec


if _TARGET in sys.modules:
    _patch(sys.modules[_TARGET])
else:
    sys.meta_path.insert(0, _PatchOnImport())
