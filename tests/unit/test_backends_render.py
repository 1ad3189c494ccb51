"""Serve backends without a cluster: deterministic rendering, merges that keep other people's
applications, "unchanged → nothing sent", status folding, backend selection, and the replica
table. HTTP error typing uses httpx.MockTransport as a clearly named fault fixture (a Ray 500 or a
refused connection cannot be caused on demand); the real HTTP paths are in the integration tests.
"""

from __future__ import annotations

import json

import httpx
import pytest

from lvm_operator.api.spec import Serve
from lvm_operator.backends import (
    AppStatus,
    BackendConfigError,
    BackendRejected,
    BackendUnavailable,
    ServeBackend,
    backend_for,
    overall_status,
    router_config_of,
    same_applications,
    version_of,
)
from lvm_operator.backends.noop import NoopBackend
from lvm_operator.backends.ray_dashboard import RayDashboardBackend
from lvm_operator.backends.rayservice import (
    RayServiceBackend,
    dump_serve_config,
    parse_serve_config,
)
from lvm_serving.contracts.serve_config import (
    AppSpec,
    RouterConfig,
    RoutingMode,
    VersionSpec,
    merge_applications,
    render_applications,
    replicas_for_share,
)

SHA = "ab" * 32


def app_spec(weight: int = 10, versions_reversed: bool = False, replicas: int = 1) -> AppSpec:
    versions = (
        VersionSpec("v1", "file:///ckpt/v1.pt", SHA, "memory_gru", 100, node_pool="pool_a10",
                    replicas=replicas),
        VersionSpec("v2", "file:///ckpt/v2.pt", SHA, "memory_gru", 500, node_pool="pool_a100"),
    )
    if versions_reversed:
        versions = versions[::-1]
    return AppSpec(
        application="lvm",
        concept_bank_uri="file:///bank.npz",
        router=RouterConfig(rollout="ml/lvm", champion="v1", candidate="v2",
                            candidate_weight=weight, mode=RoutingMode.WEIGHTED),
        versions=versions,
    )


FOREIGN = {"name": "other", "route_prefix": "/other", "import_path": "x.y:app",
           "deployments": [{"name": "D", "num_replicas": 3}]}
# Shares the prefix but not the separator: not ours.
LOOKALIKE = {"name": "lvm-shadow", "route_prefix": "/lvm-shadow", "import_path": "x.y:app"}


# -- rendering ---------------------------------------------------------------------------------


def test_render_is_deterministic_and_order_insensitive():
    a = render_applications(app_spec())
    b = render_applications(app_spec(versions_reversed=True))
    assert a == b
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert [x["name"] for x in a] == ["lvm", "lvm--v1", "lvm--v2"]
    assert dump_serve_config({"applications": a}) == dump_serve_config({"applications": b})


def test_next_rollout_rebuilds_nothing_that_serves():
    """Serve rebuilds an application (new replicas, old ones stopped first) when its args or
    import path change; only the router's user_config (a live reconfigure) may change when the
    promoted candidate becomes the champion of the next rollout."""
    v2 = VersionSpec("v2", "file:///ckpt/v2.pt", SHA, "memory_gru", 500, node_pool="pool_a100")
    v3 = VersionSpec("v3", "file:///ckpt/v3.pt", SHA, "memory_gru", 100, node_pool="pool_a10")
    before = {a["name"]: a for a in render_applications(app_spec())}
    after = {a["name"]: a for a in render_applications(AppSpec(
        application="lvm", concept_bank_uri="file:///bank.npz",
        router=RouterConfig(rollout="ml/lvm", champion="v2", candidate="v3",
                            candidate_weight=0, mode=RoutingMode.WEIGHTED),
        versions=(v2, v3)))}
    frozen = ("args", "import_path", "route_prefix")
    for name in ("lvm", "lvm--v2"):
        assert {k: before[name][k] for k in frozen} == {k: after[name][k] for k in frozen}
    assert before["lvm--v2"]["deployments"] == after["lvm--v2"]["deployments"]
    assert before["lvm"]["deployments"][0]["user_config"] != \
        after["lvm"]["deployments"][0]["user_config"]


def test_serve_config_dump_is_sorted_and_round_trips():
    config = {"http_options": {"port": 8000}, "applications": render_applications(app_spec())}
    text = dump_serve_config(config)
    assert text.index("applications:") < text.index("http_options:")
    assert parse_serve_config(text, "t") == config
    assert parse_serve_config("", "t") == {} and parse_serve_config(None, "t") == {}


@pytest.mark.parametrize("text", ["applications: [unclosed", "- just\n- a list\n",
                                  "applications: notalist\n"])
def test_bad_serve_config_v2_is_reported(text):
    from lvm_operator.backends import UnexpectedResponse

    with pytest.raises(UnexpectedResponse, match="serveConfigV2"):
        parse_serve_config(text, "RayService ns/x")


def test_router_config_and_version_names_read_back():
    apps = render_applications(app_spec(weight=20))
    assert router_config_of(apps[0]) == app_spec(weight=20).router
    assert router_config_of(apps[1]) is None  # a version app has no Router deployment
    assert router_config_of({"deployments": [{"name": "Router", "user_config": {"bogus": 1}}]}) \
        is None
    assert version_of("lvm", "lvm--v2") == "v2"
    assert version_of("lvm", "lvm") is None
    assert version_of("lvm", "lvm-shadow") is None


# -- merging -----------------------------------------------------------------------------------


def test_merge_keeps_foreign_apps_and_replaces_ours():
    old = render_applications(app_spec(weight=10))
    new = render_applications(app_spec(weight=50))
    merged = merge_applications([FOREIGN, LOOKALIKE, *old], "lvm", new)
    names = [a["name"] for a in merged]
    assert names == ["lvm", "lvm--v1", "lvm--v2", "lvm-shadow", "other"]
    assert FOREIGN in merged and LOOKALIKE in merged
    assert router_config_of(merged[0]).candidate_weight == 50


def test_merge_drops_our_removed_version():
    only_v1 = AppSpec("lvm", "file:///bank.npz", RouterConfig(rollout="ml/lvm", champion="v1"),
                      (app_spec().versions[0],))
    merged = merge_applications([FOREIGN, *render_applications(app_spec())], "lvm",
                                render_applications(only_v1))
    assert [a["name"] for a in merged] == ["lvm", "lvm--v1", "other"]


def test_same_applications_is_exact():
    apps = render_applications(app_spec())
    assert same_applications(list(reversed(apps)), apps)
    changed = json.loads(json.dumps(apps))
    changed[1]["route_prefix"] = "/"  # null (no route) is not the same as "/"
    assert not same_applications(changed, apps)
    floats = json.loads(json.dumps(apps))
    floats[1]["deployments"][0]["num_replicas"] = 1.0  # JSON numbers: 1 == 1.0
    assert same_applications(floats, apps)


# -- unchanged → nothing sent ----------------------------------------------------------------


def test_noop_backend_records_and_skips_unchanged():
    backend = NoopBackend(applications=[FOREIGN])
    assert isinstance(backend, ServeBackend)
    first = backend.apply(app_spec(weight=10))
    assert first.changed and len(backend.sent) == 1
    again = backend.apply(app_spec(weight=10, versions_reversed=True))
    assert not again.changed and len(backend.sent) == 1  # same spec: nothing "sent"
    assert backend.apply(app_spec(weight=20)).changed and len(backend.sent) == 2
    assert FOREIGN in backend.applications

    seen = backend.observe("lvm")
    assert seen.status is AppStatus.RUNNING
    assert seen.router.candidate_weight == 20
    assert seen.version_names() == ["v1", "v2"]
    assert seen.versions["v1"].target_replicas == 1
    assert backend.verify_applied(app_spec(weight=20)) is True
    assert backend.verify_applied(app_spec(weight=50)) is False

    backend.delete("lvm")
    assert backend.applications == [FOREIGN]
    assert backend.observe("lvm").status is AppStatus.NOT_DEPLOYED


def test_apply_config_refuses_applications_it_does_not_own():
    with pytest.raises(ValueError, match="not owned"):
        NoopBackend().apply_config("lvm", [FOREIGN])


class FakeDashboard:
    """Fault fixture: an in-memory stand-in for Ray's REST API, counting the PUTs it receives."""

    def __init__(self, applications: dict | None = None, fail: list[int] | None = None):
        self.applications = applications or {}
        self.puts: list[dict] = []
        self.fail = list(fail or [])  # status codes to answer first, one per request

    def handler(self, request: httpx.Request) -> httpx.Response:
        if self.fail:
            code = self.fail.pop(0)
            if code == 0:
                raise httpx.ConnectError("connection refused", request=request)
            return httpx.Response(code, text=f"fault {code}")
        if request.method == "GET":
            return httpx.Response(200, json={"applications": {
                name: {"name": name, "status": "RUNNING", "message": "",
                       "deployed_app_config": cfg, "deployments": {}}
                for name, cfg in self.applications.items()}})
        if request.method == "PUT":
            body = json.loads(request.content)
            self.puts.append(body)
            self.applications = {a["name"]: a for a in body["applications"]}
            return httpx.Response(200)
        return httpx.Response(405)

    def backend(self, **kw) -> RayDashboardBackend:
        client = httpx.Client(transport=httpx.MockTransport(self.handler))
        return RayDashboardBackend("http://ray.test:8265", client=client, **kw)


def test_dashboard_sends_once_and_keeps_others():
    fake = FakeDashboard({"other": FOREIGN})
    backend = fake.backend(http_host="127.0.0.1", http_port=8000)
    assert backend.apply(app_spec()).changed
    assert not backend.apply(app_spec(versions_reversed=True)).changed
    assert len(fake.puts) == 1
    sent = fake.puts[0]
    assert sent["proxy_location"] == "HeadOnly"
    assert sent["http_options"] == {"host": "127.0.0.1", "port": 8000}
    assert [a["name"] for a in sent["applications"]] == ["lvm", "lvm--v1", "lvm--v2", "other"]
    backend.delete("lvm")
    assert list(fake.applications) == ["other"]
    backend.delete("lvm")  # nothing of ours left: no PUT
    assert len(fake.puts) == 2


def test_dashboard_retries_unavailable_then_succeeds():
    fake = FakeDashboard(fail=[0, 503])
    assert fake.backend(attempts=3).apply(app_spec()).changed


def test_dashboard_errors_are_typed_and_quote_url_and_status():
    with pytest.raises(BackendUnavailable) as exc:
        FakeDashboard(fail=[500, 500]).backend(attempts=2).observe("lvm")
    assert "http://ray.test:8265/api/serve/applications/ answered 500" in str(exc.value)
    with pytest.raises(BackendRejected) as exc:
        FakeDashboard(fail=[400]).backend().apply(app_spec())
    # the answer's body is logged, never put in the message (it reaches status and Events)
    assert exc.value.status_code == 400 and "fault 400" not in str(exc.value)
    assert "the answer is in the operator's log" in str(exc.value)


# -- status folding ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ({}, AppStatus.NOT_DEPLOYED),
        ({"lvm": ("RUNNING", ""), "lvm--v1": ("RUNNING", "")}, AppStatus.RUNNING),
        ({"lvm": ("RUNNING", ""), "lvm--v2": ("DEPLOYING", "")}, AppStatus.DEPLOYING),
        ({"lvm": ("RUNNING", ""), "lvm--v2": ("NOT_STARTED", "")}, AppStatus.DEPLOYING),
        # failed beats deploying and unknown; UNHEALTHY counts as failed
        ({"lvm": ("DEPLOYING", ""), "lvm--v2": ("DEPLOY_FAILED", "boom")},
         AppStatus.DEPLOY_FAILED),
        ({"lvm": ("UNHEALTHY", "")}, AppStatus.DEPLOY_FAILED),
        ({"lvm": (None, "not reported"), "lvm--v1": ("DEPLOYING", "")}, AppStatus.UNKNOWN),
    ],
)
def test_overall_status(statuses, expected):
    assert overall_status(statuses)[0] is expected


def test_overall_status_message_names_app_and_last_traceback_line():
    status, message = overall_status({
        "lvm": ("RUNNING", ""),
        "lvm--v2": ("DEPLOY_FAILED", "Traceback (most recent call last):\n  File x\n"
                                     "ValueError: sha256 mismatch for /ckpt/v2.pt\n"),
    })
    assert status is AppStatus.DEPLOY_FAILED
    assert message == "lvm--v2: DEPLOY_FAILED: ValueError: sha256 mismatch for /ckpt/v2.pt"


# -- choosing a backend ------------------------------------------------------------------------


def test_backend_for_selects_by_spec():
    dash = backend_for({"backend": "rayDashboard", "url": "http://127.0.0.1:8265"},
                       http_port=8123)
    assert isinstance(dash, RayDashboardBackend) and dash.http_port == 8123
    assert dash.endpoint == "http://127.0.0.1:8265/api/serve/applications/"
    svc = backend_for(Serve(backend="rayService", ray_service="lvm-serve"), namespace="ml")
    assert isinstance(svc, RayServiceBackend) and svc.target == "RayService ml/lvm-serve"
    assert isinstance(backend_for({"backend": "rayService", "rayService": "x"}, dry_run=True),
                      NoopBackend)
    with pytest.raises(BackendConfigError, match="namespace"):
        backend_for({"backend": "rayService", "rayService": "x"})


# -- replicas follow the traffic share -------------------------------------------------------


@pytest.mark.parametrize(
    ("share", "bounds", "peak", "expected"),
    [
        (10, (1, 8), 8, 1),    # 8 * 10% = 0.8 → ceil 1
        (20, (1, 8), 8, 2),    # 8 * 20% = 1.6 → ceil 2
        (50, (1, 8), 8, 4),    # 8 * 50% = 4
        (100, (1, 8), 8, 8),   # all traffic: the peak
        (90, (2, 8), 8, 8),    # 8 * 90% = 7.2 → ceil 8
        (0, (0, 8), 8, 0),     # no traffic, min 0: scale to zero
        (0, (2, 8), 8, 2),     # no traffic, min 2: stays warm at 2
        (100, (1, 4), 8, 4),   # capped by max
        (1, (0, 8), 8, 1),     # any traffic gets a replica: 0.08 → ceil 1
        (-5, (0, 8), 8, 0),    # negative share treated as none
    ],
)
def test_replicas_for_share(share, bounds, peak, expected):
    assert replicas_for_share(share, bounds, peak) == expected


def test_replicas_for_share_rejects_inverted_bounds():
    with pytest.raises(ValueError, match="min 5 > max 2"):
        replicas_for_share(50, (5, 2), 8)


def _router_answer(user_config: dict | None, status: str = "HEALTHY", deployed: dict | None = None,
                   app_status: str = "RUNNING") -> dict:
    apps = render_applications(app_spec(weight=10))
    router_entry = deployed or apps[0]
    deployments = {} if user_config is None else {"Router": {
        "status": status, "deployment_config": {"name": "Router", "user_config": user_config},
        "replicas": [{"state": "RUNNING", "replica_id": "r1", "node_id": "n1"}]}}
    return {"applications": {"lvm": {"name": "lvm", "status": app_status, "message": "",
                                     "deployed_app_config": router_entry,
                                     "deployments": deployments}}}


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        # ours, and Ray says HEALTHY: in effect
        (_router_answer(app_spec(weight=10).router.to_dict()), True),
        # ours as target, replicas still reconfiguring: not yet
        (_router_answer(app_spec(weight=10).router.to_dict(), status="UPDATING"), False),
        # another weight live
        (_router_answer(app_spec(weight=30).router.to_dict()), False),
        # the app is being built and lists no Router deployment yet: cannot tell
        (_router_answer(None, app_status="DEPLOYING"), None),
        # nothing of ours is live
        ({"applications": {}}, False),
    ],
)
def test_dashboard_verify_applied(answer, expected):
    def handler(request: httpx.Request) -> httpx.Response:  # a canned GET answer
        return httpx.Response(200, json=answer)

    backend = RayDashboardBackend("http://ray.test:8265",
                                  client=httpx.Client(transport=httpx.MockTransport(handler)))
    assert backend.verify_applied(app_spec(weight=10)) is expected
