"""Train a real (small) LVM checkpoint on synthetic concept chains, in seconds on a CPU.

    python -m lvm_serving.train --family memory_gru --context-length 100 --out DIR
        [--version NAME] [--steps 200] [--train-window 20] [--batch-size 32] [--lr 3e-3]
        [--seed 0]
        [--d-model 768] [--size hidden=64 --size memory_slots=128 ...] [--full-size]
        [--world-seed 0] [--chain-noise 0.1] [--eval-size 512] [--safetensors]
        [--degrade-lanes 3,7 [--degrade-strength 1.0]] [--nan-lanes 5] [--empty-lanes 9]
        [--extra-latency-ms 20]

Writes into ``DIR``:

* ``model.pt`` (``model.safetensors`` with ``--safetensors``) + ``.sha256`` — the checkpoint
  (see :mod:`lvm_serving.checkpoints`), carrying the fault injection switches;
* ``concept_bank.npz`` + ``.sha256`` — the world's concepts (:mod:`lvm_serving.concept_bank`);
  the same ``--world-seed``/``--d-model``/world options give the same bytes;
* ``eval_set.npz`` + ``.sha256`` — held-out sequences (:mod:`lvm_serving.synthetic`);
* ``metrics.json`` — what stdout prints: paths, ``file://`` URIs and sha256s of the three
  files, training summary, and the eval (Hit@1/5/10 exact, the seed's proxies, empty-hit and NaN
  rates, per lane), measured on the served model, fault switches included.

Making a worse candidate: fewer ``--steps`` (``--steps 0`` is untrained), or the FAULT INJECTION
switches (``--degrade-lanes``, ``--nan-lanes``, ``--empty-lanes``, ``--extra-latency-ms``; see
:class:`lvm_serving.models.FaultInjection`), which act at inference and travel in the checkpoint.
``--degrade-lanes all --degrade-strength S`` grades the whole model; measured on the demo
memory_gru (the seed's network, world defaults), Hit@5 proxy is about 0.91 at S=0, 0.73 at 0.5,
0.61 at 0.6, 0.48 at 0.65, 0.30 at 0.7 and 0.01 at 1.0, with no empty hits.

Timing (2 shared CPU cores, defaults): memory_gru 100 ctx ~5 s in all (3 s training);
hierarchical_gru 1000 ctx ~12 s; tmd_moe 100 ctx 12-30 s (16 experts).

Model sizes default to a small demo size per family (``--full-size``: the seed's sizes);
``--size key=value`` overrides one (``--size expert.hidden=16`` for the mixture's experts).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lvm_serving.checkpoints import save_checkpoint
from lvm_serving.contracts.metrics import NUM_LANES
from lvm_serving.models import (
    FaultInjection,
    LVMModel,
    build_model,
    known_families,
    make_config,
)
from lvm_serving.predictor import Predictor
from lvm_serving.synthetic import EvalSet, SyntheticWorld, WorldSpec, evaluate, one_hot_tmd

_DEMO_MEMORY_GRU = {"hidden": 64, "num_layers": 1, "memory_slots": 128, "fusion_dim": 64,
                    "mlp_dim": 128}
DEMO_SIZES: dict[str, dict[str, Any]] = {
    "memory_gru": dict(_DEMO_MEMORY_GRU),
    # Chunks of 50 instead of the seed's 200: a CPU trains a GRU at a cost that grows with the
    # number of sequential steps, and 1000 vectors are still 20 chunks.
    "hierarchical_gru": {"chunk_size": 50, "chunk_hidden": 64, "summary_hidden": 64,
                         "mlp_dim": 128},
    # the seed's 10 x 10 chunks are its shape (contextLength 100): only the widths shrink
    "seed_hierarchical_gru": {"hidden": 64, "mlp_dim": 128},
    "tmd_moe": {"expert": {"hidden": 32, "num_layers": 1, "memory_slots": 32, "fusion_dim": 32,
                           "mlp_dim": 64}},
}


def _lanes(text: str) -> list[int]:
    """``3,7``, ``all`` or ranges like ``0-7``."""
    if text.strip().lower() == "all":
        return list(range(NUM_LANES))
    lanes: list[int] = []
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            low, _, high = part.partition("-")
            lanes.extend(range(int(low), int(high or low) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected lanes like 3,7 or 0-7 or all; got {text!r}"
        ) from None
    if any(not 0 <= lane < NUM_LANES for lane in lanes):
        raise argparse.ArgumentTypeError(f"lanes must be in 0..{NUM_LANES - 1}; got {text!r}")
    return lanes


def _size(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        parsed: Any = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return key.strip(), parsed


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m lvm_serving.train",
        description="Train a small LVM checkpoint on synthetic concept chains (CPU, seconds).",
    )
    p.add_argument("--family", required=True, choices=known_families())
    p.add_argument("--context-length", type=int, required=True,
                   help="context vectors per request (training and eval)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--version", default=None, help="model version name recorded in the checkpoint")
    p.add_argument("--steps", type=int, default=200, help="training steps (0: untrained)")
    p.add_argument(
        "--train-window", type=int, default=None,
        help="context length of training sequences (default: min(context length, 20), and for "
        "hierarchical_gru at least two chunks); the rule is Markov, so short windows train fast "
        "and the model is evaluated at --context-length",
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0, help="model init and training stream")
    p.add_argument("--infonce-weight", type=float, default=0.1,
                   help="weight of the InfoNCE term over the bank (besides 1 - cosine)")
    p.add_argument("--d-model", type=int, default=768)
    p.add_argument("--full-size", action="store_true", help="the seed's sizes, not demo sizes")
    p.add_argument("--size", type=_size, action="append", default=[], metavar="KEY=VALUE",
                   help="override one model size, e.g. hidden=128 or expert.hidden=16")
    world = p.add_argument_group("synthetic world (same options: same concept bank)")
    world.add_argument("--world-seed", type=int, default=0)
    world.add_argument("--orbits-per-lane", type=int, default=2)
    world.add_argument("--orbit-length", type=int, default=16)
    world.add_argument("--latent-dim", type=int, default=16)
    world.add_argument("--chain-noise", type=float, default=0.1)
    p.add_argument("--eval-size", type=int, default=512)
    p.add_argument("--eval-seed", type=int, default=1)
    p.add_argument("--safetensors", action="store_true", help="write model.safetensors")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    faults = p.add_argument_group("FAULT INJECTION (rollout/guardrail tests only; stored in the "
                                  "checkpoint and applied at inference)")
    faults.add_argument("--degrade-lanes", type=_lanes, default=[],
                        help="predictions on these lanes (3,7 / 0-7 / all) collapse toward the "
                        "last context vector; --degrade-strength in [0, 1] sets how far")
    faults.add_argument("--degrade-strength", type=float, default=1.0)
    faults.add_argument("--nan-lanes", type=_lanes, default=[],
                        help="predictions on these lanes are NaN")
    faults.add_argument("--empty-lanes", type=_lanes, default=[],
                        help="predictions on these lanes point away from every concept")
    faults.add_argument("--extra-latency-ms", type=float, default=0.0,
                        help="the predictor sleeps this long per call")
    args = p.parse_args(argv)
    if args.context_length < 1 or args.steps < 0 or args.batch_size < 1 or args.eval_size < 1:
        p.error("--context-length, --batch-size, --eval-size must be >= 1 and --steps >= 0")
    return args


def model_config(args: argparse.Namespace) -> dict[str, Any]:
    config: dict[str, Any] = {} if args.full_size else json.loads(
        json.dumps(DEMO_SIZES[args.family])
    )
    config["d_model"] = args.d_model
    if args.family == "tmd_moe":
        config.setdefault("expert", {})["d_model"] = args.d_model
    for key, value in args.size:
        target = config
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return make_config(args.family, config).to_dict()


def default_train_window(family: str, config: dict[str, Any], context_length: int) -> int:
    window = min(context_length, 20)
    if family == "seed_hierarchical_gru":  # reads exactly chunks x chunk_size vectors
        return int(config["chunks"]) * int(config["chunk_size"])
    if family == "hierarchical_gru":  # at least two chunks, so the summary GRU learns to combine
        window = min(context_length, max(window, 2 * int(config["chunk_size"])))
    return window


def train_model(
    model: LVMModel,
    world: SyntheticWorld,
    *,
    steps: int,
    batch_size: int,
    context_length: int,
    lr: float,
    seed: int,
    infonce_weight: float = 0.1,
    temperature: float = 0.05,
) -> dict[str, Any]:
    """Train in place on chains from ``world``; returns a summary (loss, seconds)."""
    vectors = torch.from_numpy(world.vectors)
    rng = np.random.default_rng([seed, 0x7EA1])
    model.train()
    if steps == 0:
        model.eval()
        return {"steps": 0, "window": context_length, "batch_size": batch_size, "seconds": 0.0,
                "final_loss": None, "final_cosine": None}
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - 0.9 * s / max(1, steps))
    started = time.perf_counter()
    recent_loss: list[float] = []
    recent_cos: list[float] = []
    for _ in range(steps):
        ctx, target, lanes = world.sample(rng, batch_size, context_length)
        x = vectors[torch.from_numpy(ctx)]
        y_index = torch.from_numpy(target)
        tmd = torch.from_numpy(one_hot_tmd(lanes))
        pred = model(x, tmd)
        cosine = (pred * vectors[y_index]).sum(-1)
        loss = (1 - cosine).mean()
        if infonce_weight:
            loss = loss + infonce_weight * F.cross_entropy(pred @ vectors.t() / temperature,
                                                           y_index)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        recent_loss = [*recent_loss[-19:], float(loss.detach())]
        recent_cos = [*recent_cos[-19:], float(cosine.detach().mean())]
    model.eval()
    return {
        "steps": steps,
        "window": context_length,
        "batch_size": batch_size,
        "seconds": round(time.perf_counter() - started, 3),
        "final_loss": float(np.mean(recent_loss)),
        "final_cosine": float(np.mean(recent_cos)),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    faults = FaultInjection(
        nan_lanes=tuple(args.nan_lanes), degrade_lanes=tuple(args.degrade_lanes),
        degrade_strength=args.degrade_strength, empty_lanes=tuple(args.empty_lanes),
        extra_latency_ms=args.extra_latency_ms,
    )
    spec = WorldSpec(
        d_model=args.d_model, orbits_per_lane=args.orbits_per_lane,
        orbit_length=args.orbit_length, latent_dim=args.latent_dim, noise=args.chain_noise,
        seed=args.world_seed,
    )
    world = SyntheticWorld(spec)
    bank = world.bank()
    bank_path = out / "concept_bank.npz"
    bank_sha = bank.save(bank_path)
    eval_set = EvalSet.generate(world, args.eval_size, args.context_length, seed=args.eval_seed,
                                bank_sha256=bank_sha)
    eval_path = out / "eval_set.npz"
    eval_sha = eval_set.save(eval_path)

    config = model_config(args)
    model = build_model(args.family, config)
    window = args.train_window or default_train_window(args.family, config, args.context_length)
    training = train_model(
        model, world, steps=args.steps, batch_size=args.batch_size, context_length=window,
        lr=args.lr, seed=args.seed, infonce_weight=args.infonce_weight,
    )
    model.faults = faults  # FAULT INJECTION: after training, so only inference is affected
    eval_started = time.perf_counter()
    metrics = evaluate(Predictor(model, bank, device="cpu"), eval_set)
    eval_seconds = time.perf_counter() - eval_started

    ckpt_path = out / ("model.safetensors" if args.safetensors else "model.pt")
    version = args.version or f"{args.family}-{args.context_length}ctx"
    meta = {
        "version": version, "context_length": args.context_length, "seed": args.seed,
        "world": spec.to_dict(), "concept_bank_sha256": bank_sha, "training": training,
        "created_by": "lvm_serving.train",
    }
    ckpt_sha = save_checkpoint(
        ckpt_path, model, metrics={k: v for k, v in metrics.items() if k != "per_lane"}, meta=meta
    )
    report = {
        "version": version,
        "family": args.family,
        "context_length": args.context_length,
        "parameters": model.num_parameters(),
        "config": config,
        "faults": faults.to_dict(),
        "checkpoint": _artifact(ckpt_path, ckpt_sha),
        "concept_bank": {**_artifact(bank_path, bank_sha), "concepts": len(bank),
                         "dim": bank.dim},
        "eval_set": {**_artifact(eval_path, eval_sha), "sequences": len(eval_set)},
        "world": spec.to_dict(),
        "train": training,
        "eval": metrics,
        "eval_seconds": round(eval_seconds, 3),
        "total_seconds": round(time.perf_counter() - started, 3),
    }
    (out / "metrics.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report


def _artifact(path: Path, sha: str) -> dict[str, str]:
    resolved = path.resolve()
    return {"path": str(resolved), "uri": resolved.as_uri(), "sha256": sha}


def main(argv: Sequence[str] | None = None) -> int:
    report = run(parse_args(argv))
    json.dump(report, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
