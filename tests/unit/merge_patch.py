"""RFC 7386 merge patch: what the apiserver does with the status patches the ticks write."""

from __future__ import annotations

import copy


def merge(target: dict, patch: dict) -> None:
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        elif isinstance(v, dict) and isinstance(target.get(k), dict):
            merge(target[k], v)
        else:
            target[k] = copy.deepcopy(v)
