"""Number formatting for reason lines: units people read (ms, %, 3h 10m), three digits."""

from __future__ import annotations

import math


def _g(x: float) -> str:
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    if math.isnan(x):
        return "NaN"
    return f"{x:.3g}"


def ms(seconds: float) -> str:
    """0.0124 -> '12.4 ms'."""
    return f"{_g(seconds * 1000.0)} ms"


def pct(fraction: float) -> str:
    """0.581 -> '58.1%'."""
    return f"{_g(fraction * 100.0)}%"


def fraction(x: float | None, missing: str = "n/a") -> str:
    """0.581 -> '58.1%' (one decimal, for Hit@K and shares); ``missing`` when unknown."""
    return missing if x is None else f"{x:.1%}"


def count(n: float) -> str:
    """Counts from increase() are extrapolated floats; show them rounded."""
    return str(round(n)) if math.isfinite(n) else _g(n)


def duration(seconds: float) -> str:
    """3725 -> '1h 2m 5s'; 604800 -> '7d'; 0.5 -> '0.5s'."""
    if seconds < 60 and seconds != int(seconds):
        return f"{_g(seconds)}s"
    s = round(seconds)
    if s <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, s = divmod(s, size)
        if n:
            parts.append(f"{n}{unit}")
    return " ".join(parts[:2])
