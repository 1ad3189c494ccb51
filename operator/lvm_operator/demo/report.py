"""The demo's timeline report: candidate weight and the key metrics over time, thresholds drawn,
each decision marked — as a PNG and a small self-contained HTML page.

Pure rendering from recorded samples (no cluster access), so it is tested on its own and the demo
only has to record what it saw.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: files only, never a window
import matplotlib.pyplot as plt


@dataclass(frozen=True)
class TimelineSample:
    t_s: float  # seconds since the demo started
    scenario: str
    phase: str | None = None
    step: int | None = None
    weight: int | None = None  # candidate weight, percent
    verdict: str | None = None
    reason: str | None = None
    #: version → metric → value; metrics: p95_ms, hit5, error_rate, empty_rate, rps
    versions: dict[str, dict[str, float | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    t_s: float
    scenario: str
    kind: str  # e.g. Advanced, Promoted, RolledBack (the Event reason)
    message: str


@dataclass(frozen=True)
class Thresholds:
    success_p95_ms: float = 5.0
    rollback_p95_ms: float = 10.0
    success_hit5: float = 0.60
    rollback_hit5: float = 0.55
    success_error_rate: float = 0.001
    rollback_error_rate: float = 0.01


_DECISION_COLOURS = {"Promoted": "tab:green", "RolledBack": "tab:red", "Advanced": "tab:blue"}


def _series(samples: Sequence[TimelineSample], version: str, metric: str):
    xs, ys = [], []
    for s in samples:
        value = s.versions.get(version, {}).get(metric)
        if value is not None and math.isfinite(value):
            xs.append(s.t_s)
            ys.append(value)
    return xs, ys


def render_png(samples: Sequence[TimelineSample], decisions: Sequence[Decision],
               thresholds: Thresholds, path: Path, title: str = "LVM rollout timeline") -> Path:
    versions = sorted({v for s in samples for v in s.versions})
    fig, axes = plt.subplots(4, 1, figsize=(12, 11), sharex=True,
                             gridspec_kw={"height_ratios": [1.2, 1, 1, 1]})
    ax_w, ax_p95, ax_hit, ax_err = axes

    ax_w.step([s.t_s for s in samples], [s.weight or 0 for s in samples], where="post",
              color="tab:purple", lw=2)
    ax_w.set_ylabel("candidate weight %")
    ax_w.set_ylim(-5, 105)

    for version in versions:
        ax_p95.plot(*_series(samples, version, "p95_ms"), label=version, lw=1.5)
        ax_hit.plot(*_series(samples, version, "hit5"), label=version, lw=1.5)
        ax_err.plot(*_series(samples, version, "error_rate"), label=version, lw=1.5)
    for ax, ok, bad, label in (
        (ax_p95, thresholds.success_p95_ms, thresholds.rollback_p95_ms, "P95 latency (ms)"),
        (ax_hit, thresholds.success_hit5, thresholds.rollback_hit5, "Hit@5 proxy"),
        (ax_err, thresholds.success_error_rate, thresholds.rollback_error_rate, "error rate"),
    ):
        ax.axhline(ok, color="tab:green", ls="--", lw=1, label=f"success {ok:g}")
        ax.axhline(bad, color="tab:red", ls="--", lw=1, label=f"rollback {bad:g}")
        ax.set_ylabel(label)
        ax.legend(loc="upper left", fontsize=7, ncol=4)

    for d in decisions:
        colour = _DECISION_COLOURS.get(d.kind, "grey")
        for ax in axes:
            ax.axvline(d.t_s, color=colour, alpha=0.6, lw=1)
        ax_w.annotate(d.kind, (d.t_s, 100), rotation=90, fontsize=7, color=colour,
                      xytext=(2, -2), textcoords="offset points", va="top")
    scenarios: dict[str, float] = {}
    for s in samples:
        scenarios.setdefault(s.scenario, s.t_s)
    for name, start in scenarios.items():
        ax_w.annotate(name, (start, -4), fontsize=8, fontweight="bold", va="bottom")
    ax_err.set_xlabel("seconds since start")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def render_html(png: Path, decisions: Sequence[Decision], summary: dict[str, object],
                path: Path, title: str = "LVM rollout demo report") -> Path:
    """A single-file page: the timeline picture inline, the decisions and the summary."""
    image = base64.b64encode(png.read_bytes()).decode()
    rows = "\n".join(
        f"<tr><td>{d.t_s:.1f}s</td><td>{html.escape(d.scenario)}</td>"
        f"<td>{html.escape(d.kind)}</td><td>{html.escape(d.message)}</td></tr>"
        for d in decisions
    )
    facts = "\n".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in summary.items()
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}
img{{max-width:100%}}</style></head><body>
<h1>{html.escape(title)}</h1>
<img alt="candidate weight and metrics over time" src="data:image/png;base64,{image}">
<h2>Decisions</h2>
<table><tr><th>time</th><th>scenario</th><th>decision</th><th>why</th></tr>
{rows}
</table>
<h2>Summary</h2>
<table>
{facts}
</table>
</body></html>
"""
    path.write_text(page)
    return path
