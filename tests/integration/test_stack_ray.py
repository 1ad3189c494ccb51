"""The two-node Ray cluster: pools are real scheduling constraints and Prometheus scrapes Ray."""

from __future__ import annotations

import httpx
from helpers import eventually, wait_for_series
from prometheus_api_client import PrometheusConnect

from lvm_operator.devstack.ray_cluster import node_pool_of


def test_two_nodes_with_distinct_pools(ray_cluster):
    nodes = ray_cluster.alive_nodes()
    assert sorted(node_pool_of(n) for n in nodes) == ["pool_a10", "pool_a100"]
    assert all(n["node_ip"] == "127.0.0.1" for n in nodes)


def test_prometheus_scrapes_ray(prometheus):
    # Both nodes' metrics ports are scraped and healthy...
    eventually(lambda: len(prometheus.targets_up()) == 2
               and set(prometheus.targets_up().values()) == {"up"},
               timeout_s=60, what="both Ray metrics targets up")
    # ...and a ray_ series is queryable through the same client the operator uses.
    wait_for_series(prometheus, '{__name__=~"ray_.+"}', timeout_s=60)
    client = PrometheusConnect(url=prometheus.url, disable_ssl=True)
    result = client.custom_query('count by (job) ({__name__=~"ray_.+"})')
    assert result and result[0]["metric"]["job"] == "ray" and int(result[0]["value"][1]) > 0


def test_serve_replicas_land_on_their_pool(ray_cluster, serve_http_port):
    dashboard = ray_cluster.dashboard_url
    http_port = serve_http_port
    config = {
        "proxy_location": "HeadOnly",  # one proxy: both nodes share this host's ports
        "http_options": {"host": "127.0.0.1", "port": http_port},
        "applications": [{
            "name": "probe", "route_prefix": "/probe",
            "import_path": "lvm_serving.placement_probe:app",
            "deployments": [{"name": "PlacementProbe", "num_replicas": 2,
                             "ray_actor_options": {"num_cpus": 0,
                                                   "resources": {"pool_a100": 1}}}],
        }],
    }
    resp = httpx.put(f"{dashboard}/api/serve/applications/", json=config, timeout=60)
    assert resp.status_code == 200, resp.text

    def running():
        body = httpx.get(f"{dashboard}/api/serve/applications/", timeout=10).json()
        app = body["applications"].get("probe")
        return app if app and app["status"] == "RUNNING" else None

    app = eventually(running, timeout_s=120, what="probe app RUNNING")
    a100 = {n["node_id"] for n in ray_cluster.alive_nodes() if node_pool_of(n) == "pool_a100"}
    replicas = app["deployments"]["PlacementProbe"]["replicas"]
    assert len(replicas) == 2
    assert {r["node_id"] for r in replicas} == a100

    answer = httpx.get(f"http://127.0.0.1:{http_port}/probe", timeout=30).json()
    assert answer["node_id"] in a100

    httpx.delete(f"{dashboard}/api/serve/applications/", timeout=60)
