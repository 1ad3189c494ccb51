"""The eval-result format: the one JSON line ``python -m lvm_serving.evaluate`` prints.

The operator runs the evaluation in a child process and reads this line back, so the format is
a contract between two processes (and two packages): its name and version, the keys it keeps,
how it is written and how it is read all live here, with no I/O and no torch::

    {"format": "lvm-eval-result", "format_version": 1,
     "checkpoint_sha256": …, "eval_set_sha256": …, "bank_sha256": …, "family": …,
     "n": 512, "hit@1": …, "hit@5": …, "hit@10": …, "hit@5_proxy": …,
     "empty_hit_rate": …, "nan_rate": …, "seconds": …,
     "per_lane": {"0": {"n": 32, "hit@1": …, "hit@5": …, "hit@10": …}, …},
     "provenance": {"source": "seed", "epoch": 7, "hit@1": …, "hit@5": …, "hit@10": …}}

``provenance`` is what the checkpoint itself records about its training (the seed's
``val_results`` and ``epoch``; our trainer's eval): numbers and a format name only.

Hit@K is *exact* (the true next concept among the top K retrieved), as in the seed's eval set
check; fractions in [0, 1]. A failure is ``{"format": …, "format_version": …, "error": "…",
"error_type": "ChecksumMismatchError"}`` (:func:`error_result`); the message says which file and
what to do.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

RESULT_FORMAT = "lvm-eval-result"
RESULT_FORMAT_VERSION = 1
#: Per-lane numbers kept in the result (the operator's status stores these).
LANE_KEYS = ("n", "hit@1", "hit@5", "hit@10")
OVERALL_KEYS = ("n", "hit@1", "hit@5", "hit@10", "hit@5_proxy", "empty_hit_rate", "nan_rate")


#: What the operator keeps of a checkpoint's own training record (see :func:`provenance`).
PROVENANCE_KEYS = ("hit@1", "hit@5", "hit@10")
#: The training arguments kept (numbers only; the seed's ``args`` also hold paths and devices).
PROVENANCE_ARGS = ("epochs", "batch_size", "accumulation_steps", "lr", "weight_decay",
                   "alpha_infonce", "temperature", "min_length", "seed", "steps")


def provenance(source_format: str, metrics: Mapping[str, Any],
               meta: Mapping[str, Any]) -> dict[str, Any]:
    """The checkpoint's recorded validation Hit@K and epoch, numbers only (a seed checkpoint's
    ``val_results``; ours keep their eval under ``metrics["eval"]``)."""
    record = metrics.get("eval") if isinstance(metrics.get("eval"), Mapping) else metrics
    out: dict[str, Any] = {"source": str(source_format)[:63]}
    for key in PROVENANCE_KEYS:
        value = record.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1:
            out[key] = float(value)
    epoch = meta.get("epoch")
    if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0:
        out["epoch"] = epoch
    args = meta.get("args") if isinstance(meta.get("args"), Mapping) else {}
    kept = {k: args[k] for k in PROVENANCE_ARGS if isinstance(args.get(k), int | float)
            and not isinstance(args.get(k), bool) and math.isfinite(args[k])}
    if kept:
        out["args"] = kept
    return out


def compact(result: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers the operator keeps from :func:`lvm_serving.synthetic.evaluate`'s result."""
    out = {key: result[key] for key in OVERALL_KEYS}
    out["per_lane"] = {lane: {key: r[key] for key in LANE_KEYS}
                       for lane, r in sorted(result["per_lane"].items(), key=lambda x: int(x[0]))}
    return out


def error_result(message: str, error_type: str) -> dict[str, Any]:
    """A failed evaluation, in the format (also for failures the evaluation never reported)."""
    return {"format": RESULT_FORMAT, "format_version": RESULT_FORMAT_VERSION,
            "error": message, "error_type": error_type}


def encode(result: Mapping[str, Any]) -> str:
    """The result as its one line (without the newline): compact, keys sorted."""
    return json.dumps(result, separators=(",", ":"), sort_keys=True)


def parse(stdout: str) -> dict[str, Any] | None:
    """The result from an evaluation's stdout: its last non-blank line, when that is a JSON
    object; ``None`` when there is none (the evaluation crashed before printing it)."""
    lines = [x for x in stdout.splitlines() if x.strip()]
    try:
        output = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        return None
    return output if isinstance(output, dict) else None


def error_of(output: Mapping[str, Any]) -> str | None:
    """Why ``output`` is not a usable result (``"<error_type>: <error>"``), or ``None``."""
    if output.get("format") == RESULT_FORMAT and "error" not in output:
        return None
    error = str(output.get("error") or f"unexpected evaluation output: {dict(output)!r:.300}")
    kind = output.get("error_type")
    return f"{kind}: {error}" if kind else error
