"""The daily regression suite passes a good model and fails a degraded one, naming the check."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

TRAIN = [sys.executable, "-m", "lvm_serving.train", "--family", "memory_gru",
         "--context-length", "30", "--d-model", "64", "--steps", "150", "--eval-size", "1024",
         "--threads", "1"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("regression")
    good, bad = root / "good", root / "bad"
    subprocess.run([*TRAIN, "--out", str(good)], check=True, capture_output=True, timeout=600)
    # FAULT INJECTION: lanes 3 and 7 answer with the last context vector (degrade strength 1).
    subprocess.run([*TRAIN, "--degrade-lanes", "3,7", "--out", str(bad)], check=True,
                   capture_output=True, timeout=600)
    return good, bad


def suite(directory, tmp_path, *extra):
    m = json.loads((directory / "metrics.json").read_text())
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "lvm_serving.regression",
         "--checkpoint", m["checkpoint"]["uri"], "--sha256", m["checkpoint"]["sha256"],
         "--bank", m["concept_bank"]["uri"], "--bank-sha256", m["concept_bank"]["sha256"],
         "--eval-set", m["eval_set"]["uri"], "--eval-sha256", m["eval_set"]["sha256"],
         "--json", str(report),
         # Shared CI cores make batch-1 wall-clock latency noisy; the latency check is still
         # exercised (and fails below with an impossible limit).
         "--max-p95-ms", "250", *extra],
        capture_output=True, text=True, timeout=600)
    return proc, {r["name"]: r for r in json.loads(report.read_text())}


def test_good_model_passes(models, tmp_path):
    proc, results = suite(models[0], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all checks passed" in proc.stdout
    assert set(results) == {"eval-set performance", "latency (batch 1)", "lane health",
                            "edge cases", "error rate (NaN/Inf)"}
    assert all(r["passed"] for r in results.values())


def test_degraded_lanes_fail_naming_the_check(models, tmp_path):
    proc, results = suite(models[1], tmp_path)
    assert proc.returncode == 1
    assert not results["lane health"]["passed"]
    assert "lane 3" in results["lane health"]["detail"]
    assert "lane 7" in results["lane health"]["detail"]
    assert "FAILED: " in proc.stdout and "lane health" in proc.stdout.split("FAILED: ")[1]


def test_latency_limit_is_enforced(models, tmp_path):
    proc, results = suite(models[0], tmp_path, "--max-p95-ms", "0.001")
    assert proc.returncode == 1
    assert not results["latency (batch 1)"]["passed"]
    assert "latency (batch 1)" in proc.stdout.split("FAILED: ")[1]
