"""The demo's story: train or reuse the versions, start the stack and the operator, roll out a
better candidate (promoted), then a slower one (rolled back), and report."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from rich.console import Console

from lvm_operator.devstack.procs import ComponentError, free_ports
from lvm_operator.devstack.stack import start_stack
from lvm_serving.contracts.serve_config import ALLOW_FAULT_INJECTION_ENV

from . import artifacts
from .cluster import CRDS, clean_run_dir, events, kubectl, start_operator, wait_for_router
from .live import Recorder, watch_until
from .load import LoadThread
from .manifest import APPLICATION, NAME, DemoOptions, rollout_manifest
from .report import Thresholds, render_html, render_png


def run_demo(run_dir: Path, keep: bool, console: Console,
             options: DemoOptions | None = None) -> int:
    options = options or DemoOptions()
    # the slow candidate is a FAULT INJECTION checkpoint: this demo's evaluator may load it
    os.environ.setdefault(ALLOW_FAULT_INJECTION_ENV, "1")
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

    console.print("starting kube-apiserver + etcd, a two-node Ray cluster, Prometheus and an "
                  "S3 store (SeaweedFS)…")
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
        console.print(f"uploading the versions to the local object store (s3://{artifacts.BUCKET})…")
        champion, good, slow = (artifacts.publish(a, stack.object_store)
                                for a in (champion, good, slow))
        console.print(f"  {champion.checkpoint_uri}  {good.checkpoint_uri}  {slow.checkpoint_uri}")
        for crd in CRDS:
            print(kubectl(stack, "apply", "--server-side", "-f", str(crd)).strip())
        kubectl(stack, "wait", "--for=condition=Established", "--all", "crd", "--timeout=60s")

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
        print(kubectl(stack, "apply", "-f", "-", input=yaml.safe_dump(manifest)).strip())
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
        manifest = rollout_manifest(stack, good, slow, options, shared=champion)
        print(kubectl(stack, "apply", "-f", "-", input=yaml.safe_dump(manifest)).strip())
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
        print(events(stack))
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
