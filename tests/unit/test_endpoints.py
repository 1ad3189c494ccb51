"""SSRF: the URLs a rollout's author chooses are refused before any connection when they point
at link-local addresses or cloud metadata services (issue 19 #4)."""

from __future__ import annotations

import pytest

from lvm_operator.api.endpoints import ALLOW_LINK_LOCAL_ENV, check_endpoint, endpoint_problem
from lvm_operator.backends import BackendConfigError
from lvm_operator.backends.factory import backend_for
from lvm_operator.controller.measurements import AnalysisCache
from lvm_operator.decision import Check

W = "spec.prometheus.url"


@pytest.mark.parametrize(("url", "addresses", "says"), [
    ("http://prometheus.monitoring:9090", ["10.0.0.7"], None),
    ("http://127.0.0.1:9090", [], None),  # the local stack: loopback is fine
    ("https://[2001:db8::1]:9090/prom", [], None),
    ("http://169.254.169.254/latest/meta-data/", [], "169.254.169.254 is a link-local address"),
    ("http://[fe80::1%25eth0]:9090", [], "fe80::1 is a link-local address"),
    ("http://[::ffff:169.254.169.254]/", [], "169.254.169.254 is a link-local address"),
    ("http://metadata.google.internal/computeMetadata/v1/", [],
     "names 'metadata.google.internal', a cloud metadata service"),
    ("http://METADATA.google.internal./", [], "a cloud metadata service"),
    # a name whose DNS answer is the metadata address
    ("http://innocent.example:80/", ["10.1.2.3", "169.254.169.254"],
     "'innocent.example' resolves to 169.254.169.254, a link-local address"),
    ("http://0.0.0.0:9090", [], "0.0.0.0 is an unspecified address"),
    ("http://224.0.0.1:9090", [], "224.0.0.1 is a multicast address"),
    ("http://user:secret@prom:9090", [], "must not carry a user or password"),
    ("ftp://prom:21", [], "must be an http:// or https:// URL"),
    ("http://prom:99999", [], "has an invalid port"),
])
def test_endpoint_problems(url, addresses, says):
    problem = endpoint_problem(url, W, addresses=addresses)
    if says is None:
        assert problem is None
    else:
        assert problem is not None and problem.startswith(W) and says in problem, problem
        assert "user:secret" not in problem


def test_the_flag_allows_link_local_and_metadata_but_never_the_rest():
    allow = {"allow_link_local": True}
    assert endpoint_problem("http://169.254.169.254/", W, **allow) is None
    assert endpoint_problem("http://metadata.google.internal/", W, **allow) is None
    assert "unspecified" in endpoint_problem("http://0.0.0.0/", W, **allow)
    assert "user or password" in endpoint_problem("http://a:b@prom/", W, **allow)


def test_check_endpoint_resolves_the_name_and_reads_the_flag(monkeypatch):
    monkeypatch.delenv(ALLOW_LINK_LOCAL_ENV, raising=False)
    assert check_endpoint("http://localhost:9090", W) is None  # resolves to loopback
    assert "link-local" in check_endpoint("http://169.254.169.254/", W)
    monkeypatch.setenv(ALLOW_LINK_LOCAL_ENV, "1")
    assert check_endpoint("http://169.254.169.254/", W) is None


def test_the_analysis_never_connects_to_a_metadata_address(monkeypatch):
    monkeypatch.delenv(ALLOW_LINK_LOCAL_ENV, raising=False)
    cache = AnalysisCache(timeout_s=30.0)  # a connection attempt would hang for 30 s
    snap = cache.snapshot("http://169.254.169.254:80/", Check.GUARDRAIL, 60.0)
    assert snap.error is not None and "link-local" in snap.error
    assert cache._readers == {}  # no client was even built


def test_the_dashboard_backend_is_never_built_for_a_metadata_address(monkeypatch):
    monkeypatch.delenv(ALLOW_LINK_LOCAL_ENV, raising=False)
    with pytest.raises(BackendConfigError,
                       match=r"spec\.serve\.url: 169\.254\.169\.254 is a link-local"):
        backend_for({"backend": "rayDashboard", "url": "http://169.254.169.254:8265"})
    assert backend_for({"backend": "rayDashboard", "url": "http://127.0.0.1:8265"}) is not None
