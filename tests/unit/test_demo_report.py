"""The demo report renders a real PNG and an HTML page that carries every decision."""

from __future__ import annotations

import html

from lvm_operator.demo.report import Decision, Thresholds, TimelineSample, render_html, render_png


def test_report_png_and_html(tmp_path):
    samples = [
        TimelineSample(t_s=t, scenario="good candidate" if t < 20 else "bad candidate",
                       phase="Progressing", step=t // 5, weight=min(100, 10 * (t // 5 + 1)),
                       versions={"v1": {"p95_ms": 2.0, "hit5": 0.8, "error_rate": 0.0},
                                 "v2": {"p95_ms": 3.0 if t < 20 else 14.0, "hit5": 0.9,
                                        "error_rate": None}})
        for t in range(0, 30)
    ]
    decisions = [Decision(5, "good candidate", "Advanced", "step 2: weight 20%"),
                 Decision(19, "good candidate", "Promoted", "v2 promoted"),
                 Decision(24, "bad candidate", "RolledBack", "P95 14.0 ms > 10 ms for 2 checks")]
    png = render_png(samples, decisions, Thresholds(), tmp_path / "timeline.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    page = render_html(png, decisions, {"requests": 1234}, tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in page
    for d in decisions:
        assert html.escape(d.message) in page
    assert "<td>1234</td>" in page
