"""The demo's model versions: real checkpoints trained on the synthetic world, cached by recipe.

Three versions tell the story: a champion, a better candidate that should walk every step and be
promoted, and a candidate that is slower than the rollback trigger (FAULT INJECTION: the
checkpoint carries ``extra_latency_ms``, see ``lvm_serving.models.FaultInjection``) and must be
rolled back by the latency guardrail. Each is trained by ``python -m lvm_serving.train`` in a
subprocess and cached under ``~/.cache/lvm-rollout/demo-artifacts/<recipe hash>/``, so a second
run reuses them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import urllib.parse
from dataclasses import dataclass, replace
from pathlib import Path

from lvm_operator.devstack.tools import cache_dir

#: Shared by every version so they share one concept bank (same world → same bytes).
WORLD_ARGS = ("--d-model", "64", "--world-seed", "0")
CONTEXT_LENGTH = 100


@dataclass(frozen=True)
class Recipe:
    version: str
    steps: int
    extra_args: tuple[str, ...] = ()
    family: str = "memory_gru"

    def argv(self, out: Path) -> list[str]:
        return [sys.executable, "-m", "lvm_serving.train", "--family", self.family,
                "--context-length", str(CONTEXT_LENGTH), "--version", self.version,
                "--steps", str(self.steps), "--eval-size", "256", "--threads", "1",
                *WORLD_ARGS, *self.extra_args, "--out", str(out)]

    def key(self) -> str:
        # bump the number to retrain everything (2: memory_gru became the seed's network)
        text = json.dumps([self.argv(Path("OUT"))[1:], 2])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


CHAMPION = Recipe("v1-baseline", steps=60)
GOOD_CANDIDATE = Recipe("v2-longer-training", steps=150)
SLOW_CANDIDATE = Recipe("v3-slow", steps=150, extra_args=("--extra-latency-ms", "15"))


@dataclass(frozen=True)
class Artifact:
    version: str
    family: str
    checkpoint_uri: str
    checkpoint_sha256: str
    bank_uri: str
    bank_sha256: str
    eval_uri: str
    eval_sha256: str
    hit5_proxy: float
    directory: Path


def _load(recipe: Recipe, directory: Path) -> Artifact:
    m = json.loads((directory / "metrics.json").read_text())
    return Artifact(
        version=recipe.version, family=recipe.family,
        checkpoint_uri=m["checkpoint"]["uri"], checkpoint_sha256=m["checkpoint"]["sha256"],
        bank_uri=m["concept_bank"]["uri"], bank_sha256=m["concept_bank"]["sha256"],
        eval_uri=m["eval_set"]["uri"], eval_sha256=m["eval_set"]["sha256"],
        hit5_proxy=float(m["eval"]["hit@5_proxy"]), directory=directory,
    )


def ensure(recipe: Recipe, root: Path | None = None) -> Artifact:
    """Train ``recipe`` unless a finished result is cached; returns the artifact."""
    root = root or cache_dir() / "demo-artifacts"
    directory = root / f"{recipe.version}-{recipe.key()}"
    if (directory / "metrics.json").exists():
        return _load(recipe, directory)
    tmp = directory.with_name(directory.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    proc = subprocess.run(recipe.argv(tmp), capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"training {recipe.version} failed ({proc.returncode}):\n"
                           f"{proc.stderr[-2000:]}")
    # metrics.json records absolute paths: rewrite them for the final directory.
    metrics = (tmp / "metrics.json").read_text().replace(str(tmp), str(directory))
    (tmp / "metrics.json").write_text(metrics)
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)
    return _load(recipe, directory)


#: The demo's bucket in the local object store.
BUCKET = "lvm-demo"


def publish(art: Artifact, store) -> Artifact:
    """Upload ``art``'s checkpoint, concept bank and eval set to the stack's S3 store (a
    :class:`~lvm_operator.devstack.object_store.SeaweedS3`); the returned artifact names them by
    ``s3://`` URI, with the same digests (checked against the uploaded bytes)."""
    def up(uri: str, digest: str, key: str) -> str:
        s3_uri, uploaded = store.put_file(BUCKET, key, Path(urllib.parse.urlparse(uri).path))
        if uploaded != digest:
            raise RuntimeError(f"{uri} changed since it was trained: sha256 {uploaded}, "
                               f"metrics.json says {digest}; delete {art.directory} to retrain")
        return s3_uri

    return replace(
        art,
        checkpoint_uri=up(art.checkpoint_uri, art.checkpoint_sha256,
                          f"{art.version}/best_val_hit5.pt"),
        bank_uri=up(art.bank_uri, art.bank_sha256, f"concepts/{art.bank_sha256[:12]}.npz"),
        eval_uri=up(art.eval_uri, art.eval_sha256, f"eval/{art.eval_sha256[:12]}.npz"),
    )
