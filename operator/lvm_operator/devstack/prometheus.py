"""A Prometheus server run as a plain process with our own config and a throw-away TSDB.

Debian's package also installs a system service; we never use it. The scrape interval is a
parameter because tests compress time (1 s scrapes) while a real deployment would use 15-30 s.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .procs import ManagedProcess, free_port
from .tools import Tools


def _ready(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as resp:
        return resp.status == 200


def render_config(
    jobs: dict[str, list[str]], scrape_interval_s: float, rule_files: list[Path] | None = None
) -> dict:
    # Prometheus durations take integer units only ("1500ms", not "1.5s").
    interval = f"{max(round(scrape_interval_s * 1000), 100)}ms"
    timeout = f"{max(round(scrape_interval_s * 800), 100)}ms"
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval,
                   "scrape_timeout": timeout},
        "rule_files": [str(p) for p in (rule_files or [])],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": sorted(targets)}]}
            for job, targets in sorted(jobs.items())
        ],
    }


@dataclass
class PrometheusServer:
    tools: Tools
    run_dir: Path
    jobs: dict[str, list[str]] = field(default_factory=dict)
    scrape_interval_s: float = 1.0
    rule_files: list[Path] = field(default_factory=list)
    port: int = 0
    process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.run_dir / "prometheus.yml"

    def write_config(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config = render_config(self.jobs, self.scrape_interval_s, self.rule_files)
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def start(self, timeout_s: float = 60) -> PrometheusServer:
        """Start (or restart, on the same port and data) and wait until ready."""
        self.write_config()
        if not self.port:
            self.port = free_port()
        self.process = ManagedProcess(
            "prometheus",
            [
                str(self.tools.prometheus),
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.run_dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",  # POST /-/reload after adding scrape targets
                "--storage.tsdb.retention.time=1d",
                "--log.level=warn",
            ],
            self.run_dir / "prometheus.log",
        ).start()
        try:
            self.process.wait_ready(lambda: _ready(self.url), timeout_s, what="ready")
        except Exception:
            self.process.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def set_targets(self, job: str, targets: list[str]) -> None:
        """Replace one job's static targets and hot-reload the config."""
        self.jobs[job] = list(targets)
        self.write_config()
        if self.process is not None and self.process.running():
            req = urllib.request.Request(f"{self.url}/-/reload", method="POST")
            with urllib.request.urlopen(req, timeout=10):
                pass

    def query(self, promql: str) -> list[dict]:
        """Instant query; a small helper for readiness checks (analysis uses its own client)."""
        from urllib.parse import urlencode

        with urllib.request.urlopen(
            f"{self.url}/api/v1/query?{urlencode({'query': promql})}", timeout=5
        ) as resp:
            body = json.load(resp)
        return body["data"]["result"]

    def targets_up(self) -> dict[str, str]:
        """scrape URL → health ("up"/"down"/"unknown") of every active target."""
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=5) as resp:
            body = json.load(resp)
        return {t["scrapeUrl"]: t["health"] for t in body["data"]["activeTargets"]}
