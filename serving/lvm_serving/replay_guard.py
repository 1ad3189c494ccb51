"""Feedback counts once: a seen-set of feedback tokens shared by every router replica.

A token verifies without server state (:mod:`lvm_serving.feedback`), so without this a client
could send one token a thousand times and be counted a thousand times: the Hit@5 proxy decides
promotions. Each token carries a random nonce, so "this token was used" is "this prediction got
its feedback". The guard answers :meth:`ReplayGuard.first_use` once per token, ever.

Where the seen-set lives, and why: **Ray's GCS key-value store** (``ray.experimental.internal_kv``).
Every router replica of the cluster reaches the same store, a put-if-absent there is atomic (two
replicas racing on one token: one wins), it outlives router replicas and redeploys (a restarted
router still knows every token already used), and it adds no service to run. It does not
outlive the Ray cluster itself (without GCS fault tolerance). So the guard records when its
seen-set began (:attr:`epoch`, itself put-if-absent): a token issued *before* the epoch cannot be
vouched for and is refused as well. After a Ray restart, tokens from before it are refused
(never counted twice); the cost is the clicks in flight at the restart.

Keys expire with the tokens: ``seen/<rollout>/<hour of expiry>/<token id>``; buckets whose hour
has passed are deleted by prefix, at most once a minute per replica.

**Per-user caps** (:meth:`RayKVReplayGuard.claim_user_slot`): one user (the pseudonym a token
carries) counts at most ``cap`` feedback events per version and hour, so a few deliberate
clickers cannot outweigh the other users' evidence. The store has no atomic counter, so the cap is
``cap`` put-if-absent slots ``cap/<rollout>/<hour>/<version>/<user>/<i>``: a feedback event takes
the first free slot (two replicas racing for one slot: one wins, the other tries the next).
A past hour's slots are deleted by prefix with the seen-set's buckets.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

NAMESPACE = "lvm-feedback"
EPOCH_KEY = "epoch"
BUCKET_S = 3600
SWEEP_EVERY_S = 60.0


class ReplayGuard(Protocol):
    epoch: float  # tokens issued before this are refused (the seen-set cannot vouch for them)

    def first_use(self, rollout: str, token_id: str, expires_at: int) -> bool:
        """True exactly once per token: when this call recorded it."""
        ...

    def claim_user_slot(self, rollout: str, version: str, user: str, cap: int) -> bool:
        """True while ``user`` has counted fewer than ``cap`` events this hour (and takes one)."""
        ...


def _seen_key(rollout: str, token_id: str, expires_at: int) -> str:
    return f"seen/{rollout}/{expires_at // BUCKET_S}/{token_id}"


class RayKVReplayGuard:
    """The seen-set in Ray's GCS key-value store (see the module docstring)."""

    def __init__(self, now: float | None = None) -> None:
        from ray.experimental import internal_kv as kv

        self._kv = kv
        # whole seconds, like a token's issue time: a token signed in the guard's first second
        # is vouched for (its iat is that second, floored)
        started = str(int(time.time() if now is None else now))
        kv._internal_kv_put(EPOCH_KEY, started, overwrite=False, namespace=NAMESPACE)
        stored = kv._internal_kv_get(EPOCH_KEY, namespace=NAMESPACE)
        self.epoch = float(stored.decode() if stored else started)
        self._swept_at = 0.0
        self._swept_buckets: dict[str, int] = {}
        self._lock = threading.Lock()
        self._next_slot: dict[str, int] = {}  # a hint per user and hour: skip slots known taken

    def first_use(self, rollout: str, token_id: str, expires_at: int) -> bool:
        existed = self._kv._internal_kv_put(_seen_key(rollout, token_id, expires_at), b"1",
                                            overwrite=False, namespace=NAMESPACE)
        self._sweep(rollout)
        return not existed

    def claim_user_slot(self, rollout: str, version: str, user: str, cap: int,
                        now: float | None = None) -> bool:
        hour = int(time.time() if now is None else now) // BUCKET_S
        prefix = f"cap/{rollout}/{hour}/{version}/{user}/"
        with self._lock:
            start = self._next_slot.get(prefix, 0)
        for i in range(start, cap):
            existed = self._kv._internal_kv_put(f"{prefix}{i}", b"1", overwrite=False,
                                                namespace=NAMESPACE)
            if not existed:
                with self._lock:
                    if len(self._next_slot) > 100_000:  # a bounded hint, never a limit
                        self._next_slot.clear()
                    self._next_slot[prefix] = i + 1
                return True
        with self._lock:
            self._next_slot[prefix] = cap
        return False

    def _sweep(self, rollout: str) -> None:
        now = time.time()
        with self._lock:
            if now - self._swept_at < SWEEP_EVERY_S:
                return
            self._swept_at = now
            current = int(now) // BUCKET_S
            start = self._swept_buckets.get(rollout, current - 26)  # tokens live <= 24 h
            self._swept_buckets[rollout] = current
        for bucket in range(start, current):  # every hour of expiry that has fully passed
            self._kv._internal_kv_del(f"seen/{rollout}/{bucket}/", del_by_prefix=True,
                                      namespace=NAMESPACE)
            self._kv._internal_kv_del(f"cap/{rollout}/{bucket}/", del_by_prefix=True,
                                      namespace=NAMESPACE)

