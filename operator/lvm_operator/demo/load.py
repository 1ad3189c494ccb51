"""The demo's load generator on its own event loop, stoppable from the main thread."""

from __future__ import annotations

import asyncio
import threading


class LoadThread:
    """The load generator on its own event loop, stoppable from the main thread."""

    def __init__(self, url: str, rps: float) -> None:
        from lvm_serving.loadgen import LoadConfig, LoadStats
        from lvm_serving.synthetic import WorldSpec

        self.stats = LoadStats()
        self.config = LoadConfig(url=url, rps=rps, duration_s=3600, concurrency=8,
                                 context_lengths=(8, 40), world=WorldSpec(d_model=64, seed=0))
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="loadgen", daemon=True)

    def _run(self) -> None:
        from lvm_serving.loadgen import run_load

        asyncio.set_event_loop(self._loop)
        self._stop = asyncio.Event()
        self._loop.run_until_complete(run_load(self.config, self._stop, self.stats))

    def start(self) -> LoadThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)
