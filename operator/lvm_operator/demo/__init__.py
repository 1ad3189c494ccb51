"""The README's first command: a real progressive rollout, end to end, on this machine.

1. trains (or reuses) three small model versions: a champion, a better candidate and a candidate
   slower than the rollback trigger (:mod:`.artifacts`);
2. starts kube-apiserver + etcd, a two-node Ray cluster and Prometheus; installs the CRDs;
   starts the operator (``lvm-rollout operator``) as its own process;
3. applies an LVMRollout (steps of seconds, the seed's thresholds): the operator deploys the
   Serve application; a load generator sends traffic with click feedback;
4. shows the rollout live until the candidate is promoted, then rolls out the slow candidate and
   shows it being rolled back, and why;
5. prints a summary and writes a timeline report (PNG + HTML).

Ctrl-C stops everything; a failure names the component and its log. ``--keep`` leaves the stack
and the operator running for ``kubectl`` and ``kubectl lvm``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from lvm_operator.devstack.procs import ComponentError, ManagedProcess, free_ports
from lvm_operator.devstack.stack import Stack, start_stack, stop_recorded, wait_for
from lvm_operator.devstack.tools import REPO_ROOT

from . import artifacts
from .report import Decision, Thresholds, TimelineSample, render_html, render_png

CRDS = (REPO_ROOT / "crds" / "lvmrollout.yaml", REPO_ROOT / "crds" / "kopf-peering.yaml")
EXAMPLE = REPO_ROOT / "examples" / "local-fast.yaml"
NAMESPACE = "default"
NAME = "lvm-demo"
APPLICATION = "lvm"


@dataclass(frozen=True)
class DemoOptions:
    step_seconds: int = 8
    weights: tuple[int, ...] = (10, 20, 50, 100)
    rps: float = 20.0
    scenario_timeout_s: float = 300.0
    guardrail_interval: str = "2s"
    quality_interval: str = "4s"
    min_samples: int = 30


@dataclass
class Recorder:
    """What the live view saw: the report's input."""

    started: float = field(default_factory=time.monotonic)
    samples: list[TimelineSample] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)

    def now(self) -> float:
        return time.monotonic() - self.started


def _kubectl(stack: Stack, *args: str, input: str | None = None) -> str:
    env = {**os.environ, **stack.env()}
    proc = subprocess.run([str(stack.tools.kubectl), *args], capture_output=True, text=True,
                          env=env, timeout=120, input=input)
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return resp.status == 200


def rollout_manifest(stack: Stack, champion: artifacts.Artifact, candidate: artifacts.Artifact,
                     options: DemoOptions) -> dict:
    """The fast local example, pointed at this stack and these model versions."""
    manifest = yaml.safe_load(EXAMPLE.read_text())
    manifest["metadata"] = {"name": NAME, "namespace": NAMESPACE}
    spec = manifest["spec"]
    for role, art, pool in (("champion", champion, "pool_a10"),
                            ("candidate", candidate, "pool_a100")):
        spec[role] = {
            "version": art.version, "checkpoint": art.checkpoint_uri,
            "sha256": art.checkpoint_sha256, "family": art.family,
            "contextLength": artifacts.CONTEXT_LENGTH, "nodePool": pool,
            # One replica each: on two shared cores, starting another replica mid-step (torch
            # import, model load) slows the running one and muddies the latency story.
            "replicas": {"min": 1, "max": 1},
        }
    spec["conceptBank"] = {"uri": champion.bank_uri, "sha256": champion.bank_sha256}
    spec["steps"] = [{"weight": w, "duration": f"{options.step_seconds}s"}
                     for w in options.weights]
    spec["analysis"]["guardrails"]["interval"] = options.guardrail_interval
    # Two breaches in a row, each judged on its own window of at least 30 candidate requests
    # (at 10% of 20 req/s a window grows to ~15 s before it is judged). Latency is judged
    # against the champion (the default): on two busy cores both versions miss the seed's
    # 10 ms, and only a candidate slower than the champion is rolled back for it.
    spec["analysis"]["guardrails"]["consecutiveBreaches"] = 2
    spec["analysis"]["guardrails"]["minSamples"] = options.min_samples
    spec["analysis"]["quality"]["minRequests"] = 40
    spec["analysis"]["quality"]["interval"] = options.quality_interval
    spec["prometheus"] = {"url": stack.prometheus.url}
    spec["serve"] = {"backend": "rayDashboard", "url": stack.ray.dashboard_url,
                     "application": APPLICATION}
    # The pre-rollout gate: the candidate is evaluated on the held-out eval set (the train
    # command wrote it; every version shares it) before it gets any traffic.
    spec["evaluation"] = {"evalSet": {"uri": champion.eval_uri, "sha256": champion.eval_sha256}}
    return manifest


def start_operator(stack: Stack, serve_port: int) -> ManagedProcess:
    liveness, metrics = free_ports(2)
    cli = str(Path(sys.executable).parent / "lvm-rollout")
    env = {**stack.env(), "LVM_RAY_SERVE_HTTP_HOST": "127.0.0.1",
           "LVM_RAY_SERVE_HTTP_PORT": str(serve_port), "PYTHONUNBUFFERED": "1"}
    proc = ManagedProcess(
        "operator",
        [cli, "operator", "--all-namespaces", "--liveness-port", str(liveness),
         "--metrics-port", str(metrics), "--dev"],
        stack.run_dir / "logs" / "operator.log", env=env,
    ).start()
    stack.extra_sessions["operator"] = proc.sid
    proc.wait_ready(lambda: _http_ok(f"http://127.0.0.1:{liveness}/healthz"), 120,
                    what="live (/healthz)")
    return proc


def wait_for_router(router: str, log_path: Path, timeout_s: float = 240) -> None:
    """Until the router answers ``/healthz`` (the operator has deployed the Serve app)."""
    try:
        wait_for(lambda: _http_ok(f"{router}/healthz"), timeout_s, f"{router}/healthz",
                 "ray-serve")
    except ComponentError as exc:
        raise ComponentError("ray-serve", f"router not healthy at {router}/healthz",
                             log_path) from exc


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


def _get_rollout(api) -> dict:
    from lvm_operator.api.rollout import GROUP, PLURAL, VERSION

    return api.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, NAME)


def _fmt(value: float | None, scale: float = 1.0, spec: str = ".2f") -> str:
    return "–" if value is None else format(value * scale, spec)


def _view(obj: dict, observed: dict, scenario: str, recorder: Recorder) -> Group:
    status = obj.get("status") or {}
    spec = obj["spec"]
    steps = spec.get("steps", [])
    step = status.get("currentStep")
    weight = status.get("candidateWeight") or 0
    head = Table.grid(padding=(0, 2))
    head.add_row("[bold]scenario", scenario, "[bold]elapsed", f"{recorder.now():.0f}s")
    head.add_row("[bold]phase", str(status.get("phase", "Pending")),
                 "[bold]step", f"{(step or 0) + 1}/{len(steps)}" if step is not None else "–")
    head.add_row("[bold]candidate weight", f"{weight}%", "[bold]next step",
                 str(status.get("nextStepAt") or "–"))
    head.add_row("[bold]verdict", str((status.get("lastAnalysis") or {}).get("verdict", "–")),
                 "[bold]reason", str((status.get("lastAnalysis") or {}).get("reason")
                                     or status.get("reason") or "–"))
    metrics = Table("version", "role", "req/s", "P95 ms (<5, >10 rolls back)",
                    "Hit@5 proxy (≥.60, <.55)", "errors (<.1%, >1%)", "empty hits (<10%)")
    roles = {spec["champion"]["version"]: "champion", spec["candidate"]["version"]: "candidate"}
    for version, m in sorted(observed.items()):
        metrics.add_row(version, roles.get(version, "warm"), _fmt(m.get("rps"), spec=".1f"),
                        _fmt(m.get("p95_ms")), _fmt(m.get("hit5"), spec=".3f"),
                        _fmt(m.get("error_rate"), 100, ".2f") + "%",
                        _fmt(m.get("empty_rate"), 100, ".1f") + "%")
    return Group(head, ProgressBar(total=100, completed=weight, width=60), metrics)


def _observe(reader, window_s: float = 10.0) -> dict[str, dict[str, float | None]]:
    snap = reader.observe_guardrails(window_s)
    snap_q = reader.observe_quality(window_s)
    out: dict[str, dict[str, float | None]] = {}
    g = snap.for_rollout(f"{NAMESPACE}/{NAME}")
    q = snap_q.for_rollout(f"{NAMESPACE}/{NAME}")
    for version, m in (g.versions or {}).items():
        out[version] = {
            "rps": m.requests / window_s if m.requests else 0.0,
            "p95_ms": m.p95_latency_seconds * 1000 if m.p95_latency_seconds is not None
            else None,
            "error_rate": m.error_rate, "empty_rate": m.empty_hit_rate,
        }
    for version, m in (q.versions or {}).items():
        out.setdefault(version, {})["hit5"] = m.hit5_proxy
    return out


def watch_until(api, reader, recorder: Recorder, scenario: str, done_phases: set[str],
                timeout_s: float, console: Console) -> dict:
    """Live view until the rollout reaches one of ``done_phases``; returns the final object."""
    last_key: tuple | None = None
    deadline = time.monotonic() + timeout_s
    obj: dict = {}
    with Live(console=console, refresh_per_second=2, transient=False) as live:
        while time.monotonic() < deadline:
            obj = _get_rollout(api)
            status = obj.get("status") or {}
            try:
                observed = _observe(reader)
            except Exception:  # the view must not die with a scrape; the operator decides
                observed = {}
            analysis = status.get("lastAnalysis") or {}
            recorder.samples.append(TimelineSample(
                t_s=recorder.now(), scenario=scenario, phase=status.get("phase"),
                step=status.get("currentStep"), weight=status.get("candidateWeight"),
                verdict=analysis.get("verdict"), reason=analysis.get("reason"),
                versions=observed))
            key = (status.get("phase"), status.get("currentStep"))
            if key != last_key and last_key is not None:
                kind = {"Promoted": "Promoted", "RolledBack": "RolledBack"}.get(
                    str(status.get("phase")),
                    "Started" if last_key[0] in ("Promoted", "RolledBack") else "Advanced")
                reason = analysis.get("reason") or status.get("phase") or ""
                recorder.decisions.append(Decision(recorder.now(), scenario, kind, str(reason)))
            last_key = key
            live.update(_view(obj, observed, scenario, recorder))
            if status.get("phase") in done_phases:
                return obj
            time.sleep(1.0)
    raise TimeoutError(f"{scenario}: rollout did not reach {sorted(done_phases)} within "
                       f"{timeout_s:.0f}s (phase {(obj.get('status') or {}).get('phase')})")


def _events(stack: Stack) -> str:
    return _kubectl(stack, "get", "events", "-n", NAMESPACE,
                    "--field-selector", f"involvedObject.name={NAME}",
                    "--sort-by=.lastTimestamp", "-o",
                    "custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message")


#: What a previous run leaves in the run directory and a new one must not inherit: etcd's data
#: (an old rollout would be "configured" instead of created, with a recorded Serve config hash
#: that makes the operator skip deploying to the new Ray cluster), Prometheus' series, logs.
PREVIOUS_RUN = ("etcd-data", "prometheus", "logs", "report", "pki")


def clean_run_dir(run_dir: Path) -> list[str]:
    """Stop whatever an earlier (kept or interrupted) run left running and remove its state, so
    the demo starts from a clean control plane; returns what was removed."""
    stop_recorded(run_dir)
    removed = []
    for name in PREVIOUS_RUN:
        path = run_dir / name
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(name)
    return removed


def run_demo(run_dir: Path, keep: bool, console: Console,
             options: DemoOptions | None = None) -> int:
    options = options or DemoOptions()
    removed = clean_run_dir(run_dir)  # never clash with, or inherit from, an earlier run
    if removed:
        console.print(f"starting from a clean control plane: removed the previous run's "
                      f"{', '.join(removed)} in {run_dir}")
    recorder = Recorder()
    console.rule("[bold]lvm-rollout local demo")

    console.print("training (or reusing) the model versions…")
    champion = artifacts.ensure(artifacts.CHAMPION)
    good = artifacts.ensure(artifacts.GOOD_CANDIDATE)
    slow = artifacts.ensure(artifacts.SLOW_CANDIDATE)
    for art, note in ((champion, "champion"), (good, "better candidate"),
                      (slow, "candidate + 15 ms per request (fault injection)")):
        console.print(f"  {art.version:20} eval Hit@5 proxy {art.hit5_proxy:.3f}  {note}")

    console.print("starting kube-apiserver + etcd, a two-node Ray cluster and Prometheus…")
    try:
        stack = start_stack(run_dir)
    except ComponentError as exc:
        console.print(f"[red]a component failed to start[/]\n{exc}")
        return 1
    load: LoadThread | None = None
    code = 1
    try:
        for key, value in stack.endpoints().items():
            console.print(f"  {key:15} {value}")
        for crd in CRDS:
            print(_kubectl(stack, "apply", "--server-side", "-f", str(crd)).strip())
        _kubectl(stack, "wait", "--for=condition=Established", "--all", "crd", "--timeout=60s")

        serve_port = free_ports(1)[0]
        console.print("starting the operator (lvm-rollout operator)…")
        start_operator(stack, serve_port)
        stack.write_state()

        from kubernetes import client, config

        from lvm_operator.analysis.prometheus import PrometheusReader

        api = client.CustomObjectsApi(config.new_client_from_config(str(stack.kubeconfig)))
        reader = PrometheusReader(stack.prometheus.url)

        # Scenario 1: a better candidate walks every step and is promoted.
        scenario = f"{champion.version} → {good.version}"
        console.rule(f"[bold]scenario 1: {scenario}")
        manifest = rollout_manifest(stack, champion, good, options)
        print(_kubectl(stack, "apply", "-f", "-", input=yaml.safe_dump(manifest)).strip())
        router = f"http://127.0.0.1:{serve_port}/{APPLICATION}"
        console.print(f"waiting for the operator to deploy the Serve app at {router}…")
        wait_for_router(router, stack.run_dir / "logs" / "operator.log")
        load = LoadThread(router, options.rps).start()
        t0 = recorder.now()
        watch_until(api, reader, recorder, scenario, {"Promoted"},
                    options.scenario_timeout_s, console)
        promote_s = recorder.now() - t0
        console.print(f"[green]promoted[/] {good.version} after {promote_s:.0f}s")

        # Scenario 2: a slower candidate is rolled back by the latency guardrail.
        scenario2 = f"{good.version} → {slow.version}"
        console.rule(f"[bold]scenario 2: {scenario2}")
        manifest = rollout_manifest(stack, good, slow, options)
        print(_kubectl(stack, "apply", "-f", "-", input=yaml.safe_dump(manifest)).strip())
        t1 = recorder.now()
        final = watch_until(api, reader, recorder, scenario2, {"RolledBack", "Failed"},
                            options.scenario_timeout_s, console)
        rollback_s = recorder.now() - t1
        phase = final["status"]["phase"]
        why = (final["status"].get("lastAnalysis") or {}).get("reason") or ""
        console.print(f"[red]{phase}[/] {slow.version} after {rollback_s:.0f}s: {why}")

        load.stop()
        stats = load.stats.summary()
        console.rule("summary")
        print(_events(stack))
        summary = {
            "promoted": f"{good.version} in {promote_s:.0f}s",
            "rolled back": f"{slow.version} in {rollback_s:.0f}s: {why}",
            "requests sent": stats["sent"], "requests ok": stats["ok"],
            "requests failed": stats["failed"] or 0,
            "served per version": stats["by_version"],
            "feedback accepted": stats["feedback_ok"],
            "client p50 / p95 ms": f"{stats['p50_ms']:.1f} / {stats['p95_ms']:.1f}",
        }
        for k, v in summary.items():
            console.print(f"  {k:22} {v}")
        report_dir = run_dir / "report"
        png = render_png(recorder.samples, recorder.decisions, Thresholds(),
                         report_dir / "timeline.png")
        page = render_html(png, recorder.decisions, summary, report_dir / "report.html")
        console.print(f"report: {png}\n        {page}")
        code = 0 if phase == "RolledBack" else 1
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: stopping everything[/]")
        code = 130
    except Exception as exc:
        console.print(f"[red]demo failed:[/] {exc}\n  logs: {run_dir / 'logs'}")
        code = 1
    finally:
        if load is not None:
            load.stop()
        if keep and code == 0:
            stack.write_state()
            console.rule("stack and operator kept running")
            console.print(f"export KUBECONFIG={stack.kubeconfig}\n"
                          f"kubectl get lvmrollouts; kubectl lvm status {NAME}\n"
                          "stop with `lvm-rollout dev down`")
        else:
            stack.stop()
            console.print("everything stopped")
    return code


__all__ = ["DemoOptions", "rollout_manifest", "run_demo"]
