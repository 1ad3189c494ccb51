"""Evaluate one model version on a held-out eval set and print the result as one JSON line.

    python -m lvm_serving.evaluate --checkpoint file:///…/model.pt --sha256 … \\
        --bank file:///…/concept_bank.npz [--bank-sha256 …] \\
        --eval-set file:///…/eval_set.npz [--eval-sha256 …] [--threads 1] [--device cpu]

This is what the operator runs, in a child process, for the pre-rollout gate and the scheduled
drift check (a child process keeps torch out of the operator, lets a crash or an out-of-memory
kill only the evaluation, and lets the operator enforce a timeout). It is also usable by hand.

Output (stdout): one line in the :mod:`lvm_serving.contracts.eval_result` format (Hit@1/5/10
overall and per lane, the digests of what was evaluated). On failure it prints the format's
error line (``error``, ``error_type``) and exits 2; the message says which file and what to do.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from lvm_serving.contracts.eval_result import (
    RESULT_FORMAT,
    RESULT_FORMAT_VERSION,
    compact,
    encode,
    error_result,
    provenance,
)


class EvalSetMismatchError(ValueError):
    """The eval set's concept ids refer to another concept bank than the one given."""


def add_artifact_args(p: argparse.ArgumentParser) -> None:
    """The files an evaluation reads (shared with the daily regression suite)."""
    p.add_argument("--checkpoint", required=True, help="file:// URI or path of the checkpoint")
    p.add_argument("--sha256", help="expected checkpoint sha256 (verified when given)")
    p.add_argument("--bank", required=True, help="concept bank URI or path")
    p.add_argument("--bank-sha256")
    p.add_argument("--eval-set", required=True, help="eval set URI or path (eval_set.npz)")
    p.add_argument("--eval-sha256")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")


def load(args: argparse.Namespace) -> tuple[Any, Any]:
    """``(predictor, eval_set)`` from :func:`add_artifact_args`' options, digests verified and
    the eval set checked against the bank its concept ids refer to."""
    import torch

    from lvm_serving.predictor import Predictor
    from lvm_serving.synthetic import EvalSet

    torch.set_num_threads(max(1, args.threads))
    predictor = Predictor.load(args.checkpoint, args.sha256, args.bank, args.bank_sha256,
                               device=args.device)
    eval_set = EvalSet.load(args.eval_set, args.eval_sha256)
    bank_sha = predictor.bank.sha256 or ""
    if eval_set.bank_sha256 and bank_sha and eval_set.bank_sha256 != bank_sha:
        raise EvalSetMismatchError(
            f"eval set {args.eval_set} refers to concept bank {eval_set.bank_sha256[:12]}… but "
            f"the bank given ({args.bank}) is {bank_sha[:12]}…; evaluate with the bank the eval "
            "set was made from (its concept ids mean nothing in another bank)")
    return predictor, eval_set


def run(args: argparse.Namespace) -> dict[str, Any]:
    from lvm_serving.synthetic import evaluate

    started = time.perf_counter()
    predictor, eval_set = load(args)
    bank_sha = predictor.bank.sha256 or ""
    result = compact(evaluate(predictor, eval_set))
    loaded = predictor.checkpoint
    return {
        "format": RESULT_FORMAT, "format_version": RESULT_FORMAT_VERSION,
        "checkpoint_sha256": loaded.sha256 if loaded is not None else "",
        "eval_set_sha256": eval_set.sha256, "bank_sha256": bank_sha,
        "family": predictor.family, **result,
        "seconds": round(time.perf_counter() - started, 3),
        **({"provenance": provenance(loaded.source_format, loaded.metrics, loaded.meta)}
           if loaded is not None else {}),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lvm_serving.evaluate",
                                description="Evaluate a model version on a held-out eval set.")
    add_artifact_args(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        out = run(args)
        code = 0
    except Exception as exc:  # reported as data: the operator shows it in status and Events
        out = error_result(str(exc), type(exc).__name__)
        code = 2
    sys.stdout.write(encode(out) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
