"""The load generator's requests: every lane, both context lengths, clicks on the true successor."""

from __future__ import annotations

import base64

import numpy as np

from lvm_serving.loadgen import LoadConfig, binary_request, build_requests
from lvm_serving.synthetic import SyntheticWorld, WorldSpec


def context_of(payload: dict) -> np.ndarray:
    raw = base64.b64decode(payload["context_b64"])
    return np.frombuffer(raw, dtype="<f4").reshape(-1, 64)


def test_requests_cover_lanes_lengths_and_click_the_true_next_concept():
    world_spec = WorldSpec(d_model=64, noise=0.0)  # no jumps: the target is the successor
    config = LoadConfig(url="http://127.0.0.1:1/lvm", world=world_spec, context_lengths=(4, 12),
                        pool_size=400, users=50)
    pool = build_requests(config)
    world = SyntheticWorld(world_spec)
    assert len(pool) == 400
    lanes = {int(np.argmax(p["tmd"])) for p, _ in pool}
    assert lanes == set(range(16))
    contexts = [context_of(p) for p, _ in pool]
    assert {c.shape for c in contexts} == {(4, 64), (12, 64)}
    assert len({p["user_id"] for p, _ in pool}) > 25
    for payload, clicked in pool[:50]:
        last = context_of(payload)[-1]
        last_id = int(np.argmax(world.vectors @ last))
        assert clicked == int(world.successor[last_id])
        assert world.lanes[clicked] == int(np.argmax(payload["tmd"]))


def test_binary_form_parses_to_the_same_request():
    from lvm_serving.router import parse_binary_request, parse_predict_request

    world_spec = WorldSpec(d_model=64, seed=3)
    pool = build_requests(LoadConfig(url="http://127.0.0.1:1/lvm", world=world_spec,
                                     context_lengths=(5,), pool_size=8))
    for payload, _ in pool:
        body, headers = binary_request(payload)
        a = parse_binary_request(body, headers, dim=64)
        b = parse_predict_request(payload, dim=64)
        assert (a.lane, a.k, a.user_key) == (b.lane, b.k, b.user_key)
        assert (a.context == b.context).all() and (a.tmd == b.tmd).all()
