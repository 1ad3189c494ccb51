"""Metric analysis: PromQL rendered from the metric contract, and a typed Prometheus reader.

``promql`` is pure (what to ask); ``prometheus`` does the asking and turns answers into the
decision core's observations; ``errors`` is the small exception set, each quoting its query.
"""

from .errors import AnalysisError, PrometheusUnavailable, QueryFailed, UnexpectedResponse
from .promql import GUARDRAIL_QUERIES, QUALITY_QUERIES, Query, ShadowFilter, render, render_all

__all__ = [
    "GUARDRAIL_QUERIES",
    "QUALITY_QUERIES",
    "AnalysisError",
    "PrometheusUnavailable",
    "Query",
    "QueryFailed",
    "ShadowFilter",
    "UnexpectedResponse",
    "render",
    "render_all",
]
