"""A flat, small exception set for reading Prometheus; every message quotes the query."""

from __future__ import annotations


class AnalysisError(Exception):
    """Base class: Prometheus could not answer ``query``. Never raised for "no data"."""

    def __init__(self, message: str, query: str) -> None:
        super().__init__(f"{message}; query: {query}")
        self.message = message
        self.query = query


class PrometheusUnavailable(AnalysisError):
    """Connection refused, timed out, or Prometheus answered 5xx (not ready, overloaded)."""


class QueryFailed(AnalysisError):
    """Prometheus rejected or could not run the query (4xx: bad PromQL, execution error)."""

    def __init__(self, message: str, query: str, status_code: int | None = None) -> None:
        super().__init__(message, query)
        self.status_code = status_code


class UnexpectedResponse(AnalysisError):
    """Prometheus answered, but not with the instant vector the query should produce."""
