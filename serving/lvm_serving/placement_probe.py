"""A tiny Serve application that reports where its replica runs.

Used to check node-pool placement end to end (a deployment asking for ``pool_a100`` must land on
the node that carries that resource) without loading a model. Deploy it with the Ray dashboard's
REST API: ``import_path: lvm_serving.placement_probe:app``.
"""

from __future__ import annotations

import ray
from ray import serve


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0})
class PlacementProbe:
    async def __call__(self, request) -> dict:
        ctx = ray.get_runtime_context()
        return {"node_id": ctx.get_node_id(), "actor_id": ctx.get_actor_id()}


app = PlacementProbe.bind()
