"""The daily regression suite (seed plan, step 6) as one command.

    python -m lvm_serving.regression --checkpoint file:///…/model.pt --sha256 … \\
        --bank file:///…/concept_bank.npz --eval-set file:///…/eval_set.npz [--min-hit5 0.66] …

Checks, each with its number and its limit:

1. **eval-set performance** — Hit@5 on the held-out eval set ≥ ``--min-hit5`` (seed: 66%);
2. **latency** — P95 of one prediction at batch 1 < ``--max-p95-ms`` (seed: 5 ms);
3. **lane health** — every lane's Hit@5 ≥ ``--min-lane-hit5`` (seed: 60%) and no lane more than
   15% below the overall;
4. **edge cases** — an empty context is refused with a client error; a very long context (5× the
   model's context length) and an all-zero context give a finite answer or a client error —
   never a crash or a NaN (the serving app itself refuses contexts beyond the model's length);
5. **error rate** — NaN/Inf predictions on the eval set < ``--max-error-rate`` (seed: 0.1%).

Prints a readable table and a JSON report (``--json``); exits 1 naming the failed checks.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from lvm_serving.contracts.quality import LANE_HEALTH_MAX_BELOW, lane_health
from lvm_serving.evaluate import add_artifact_args, load
from lvm_serving.models import InputError
from lvm_serving.predictor import Predictor
from lvm_serving.synthetic import EvalSet, evaluate


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    value: str
    limit: str
    detail: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "passed", bool(self.passed))  # numpy bools are not JSON


def check_eval(result: dict, min_hit5: float) -> CheckResult:
    hit5 = result["hit@5"]
    detail = (f"{result['n']} sequences; Hit@1 {result['hit@1']:.1%}, "
              f"Hit@10 {result['hit@10']:.1%}")
    return CheckResult("eval-set performance", hit5 >= min_hit5, f"Hit@5 {hit5:.1%}",
                       f"≥ {min_hit5:.1%}", detail)


def check_latency(predictor: Predictor, eval_set: EvalSet, max_p95_ms: float,
                  samples: int = 100) -> CheckResult:
    bank = predictor.bank
    predictor.warmup(eval_set.context_length)
    timings = []
    for i in range(samples):
        row = i % len(eval_set)
        ctx = bank.vectors_for(eval_set.context_ids[row])
        started = time.perf_counter()
        predictor.predict(ctx, eval_set.tmd[row], k=10)
        timings.append((time.perf_counter() - started) * 1000)
    p50, p95 = np.percentile(timings, [50, 95])
    return CheckResult("latency (batch 1)", p95 < max_p95_ms, f"P95 {p95:.2f} ms",
                       f"< {max_p95_ms:g} ms", f"P50 {p50:.2f} ms over {samples} predictions")


def check_lanes(result: dict, min_lane_hit5: float) -> CheckResult:
    low = {lane: r["hit@5"] for lane, r in result["per_lane"].items() if r["hit@5"] < min_lane_hit5}
    flags = lane_health(result)
    problems = [f"lane {lane} Hit@5 {v:.1%} < {min_lane_hit5:.1%}" for lane, v in sorted(
        low.items(), key=lambda kv: int(kv[0]))]
    problems += [f"lane {f.lane} is {f.below_relative:.0%} below overall" for f in flags]
    worst = min(result["per_lane"].items(), key=lambda kv: kv[1]["hit@5"])
    return CheckResult("lane health", not problems,
                       f"worst lane {worst[0]} Hit@5 {worst[1]['hit@5']:.1%}",
                       f"≥ {min_lane_hit5:.1%} and ≤ {LANE_HEALTH_MAX_BELOW:.0%} below overall",
                       "; ".join(problems) or f"{len(result['per_lane'])} lanes healthy")


def check_edge_cases(predictor: Predictor, context_length: int) -> CheckResult:
    d = predictor.bank.dim
    tmd = np.eye(16, dtype=np.float32)[0]
    unit = np.ones(d, dtype=np.float32) / np.sqrt(d)
    cases = {
        "empty context": (np.zeros((0, d), dtype=np.float32), True),
        f"very long context ({5 * context_length})": (
            np.tile(unit, (5 * context_length, 1)), False),
        "all-zero context": (np.zeros((4, d), dtype=np.float32), False),
    }
    problems: list[str] = []
    for name, (context, must_refuse) in cases.items():
        try:
            p = predictor.predict(context, tmd)
        except InputError:
            continue  # a clear client error is always acceptable
        except Exception as exc:  # the point of the check: anything else is a defect
            problems.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        if must_refuse:
            problems.append(f"{name}: accepted (expected a client error)")
        elif not bool(np.all(p.finite)):
            problems.append(f"{name}: NaN/Inf output")
    handled = len(cases) - len(problems)
    return CheckResult("edge cases", not problems, f"{handled}/{len(cases)} handled",
                       f"{len(cases)}/{len(cases)}",
                       "; ".join(problems) or "empty, very long and all-zero contexts handled")


def check_errors(result: dict, max_error_rate: float) -> CheckResult:
    rate = result["nan_rate"]
    return CheckResult("error rate (NaN/Inf)", rate < max_error_rate, f"{rate:.2%}",
                       f"< {max_error_rate:.2%}")


def run_suite(args: argparse.Namespace) -> list[CheckResult]:
    # --threads 1 by default: batch-1 latency, like one Serve replica's request.
    predictor, eval_set = load(args)
    result = evaluate(predictor, eval_set)
    meta = predictor.checkpoint.meta if predictor.checkpoint else {}
    context_length = int(meta.get("context_length") or eval_set.context_length)
    return [
        check_eval(result, args.min_hit5),
        check_latency(predictor, eval_set, args.max_p95_ms),
        check_lanes(result, args.min_lane_hit5),
        check_edge_cases(predictor, context_length),
        check_errors(result, args.max_error_rate),
    ]


def format_report(results: list[CheckResult]) -> str:
    width = max(len(r.name) for r in results)
    lines = []
    for r in results:
        mark = "PASS" if r.passed else "FAIL"
        lines.append(f"{mark}  {r.name:<{width}}  {r.value:<24} limit {r.limit}")
        if r.detail:
            lines.append(f"      {'':<{width}}  {r.detail}")
    failed = [r.name for r in results if not r.passed]
    lines.append("")
    lines.append(f"FAILED: {', '.join(failed)}" if failed else "all checks passed")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="The daily LVM regression suite.")
    add_artifact_args(p)
    p.add_argument("--min-hit5", type=float, default=0.66)
    p.add_argument("--min-lane-hit5", type=float, default=0.60)
    p.add_argument("--max-p95-ms", type=float, default=5.0)
    p.add_argument("--max-error-rate", type=float, default=0.001)
    p.add_argument("--json", help="also write the results as JSON to this path")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = run_suite(args)
    print(format_report(results))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([asdict(r) for r in results], fh, indent=2)
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
