"""Consul 1.13+ in the catalog: peered nodes left out, service kinds exposed, ACL filtering said, stale reads.

Kinds are real (a Connect sidecar on the 1.8.7 agent); peered nodes and the
ACL-filtered header come from ``tests.support.consul_newer`` in front of it.
"""

from __future__ import annotations

from tests.support.consul_newer import NewerConsul, imported_node
from tests.support.renderer_process import run_once
from tests.support.waiting import wait_until


def test_connect_sidecars_are_not_published_and_templates_see_the_kind(scene):
    backend = scene.http_backend("meshed")
    scene.consul.put("/v1/agent/service/register", {
        "Name": "meshed", "ID": f"{scene.unique}-meshed", "Port": backend.port, "Address": "127.0.0.1",
        "Tags": ["http"], "Connect": {"SidecarService": {}}})
    scene.service_ids += [f"{scene.unique}-meshed-sidecar-proxy", f"{scene.unique}-meshed"]
    kinds = scene.nginx.prefix / f"{scene.unique}-kinds.j2"
    kinds.write_text("# {% for i in service('meshed-sidecar-proxy', passing=False) %}{{ i.kind }}{% endfor %}\n")
    defaults = scene.default_templates()
    http_output, kinds_output = scene.outputs[0], scene.output("http", "-kinds")
    result = run_once(*scene.common_args(), *defaults, "--template", f"{kinds}:{kinds_output}")
    assert result.returncode == 0, result.stderr
    http = http_output.read_text()
    # The sidecar inherits the "http" tag; its port speaks mutual TLS, not HTTP.
    assert "server_name meshed.%s;" % scene.domain in http and "meshed-sidecar-proxy" not in http
    assert kinds_output.read_text().strip() == "# connect-proxy"
    scene.settle("meshed")


def test_peered_nodes_are_left_out_and_acl_filtering_is_said_once(scene):
    local = scene.http_backend("local")
    scene.register("shared", local.port, tags=["http"])
    own_node = scene.consul.get("/v1/agent/self")["Config"]["NodeName"]
    # A peer's node with the same name as ours, carrying the same service name at another address.
    peered = [imported_node(own_node, "other-cluster", "shared", "10.99.0.7", 8080)]
    with NewerConsul(scene.consul, peered) as newer:
        args = scene.common_args()
        args[args.index("--consul-addr") + 1] = newer.address
        daemon = scene.daemon(*args, *scene.default_templates(), "--consistency", "stale")
        wait_until(lambda: scene.get("shared").text.strip() == "local", timeout=10, what="local instance served")
        scene.settle("shared")
        assert "10.99.0.7" not in scene.outputs[0].read_text()
        daemon.wait_for_log("X-Consul-Results-Filtered-By-ACLs")
        daemon.wait_for_log("left out 1 node(s) imported from peered clusters")
        later = scene.http_backend("later")
        scene.register("later", later.port, tags=["http"])
        scene.settle("later")
        assert daemon.log.count("X-Consul-Results-Filtered-By-ACLs") == 1, "said once, not per change"
        assert all("stale" in query for query in newer.queries if query.startswith("/v1/internal/ui/nodes"))
        assert any("index=" in query for query in newer.queries), "blocking queries pass through"


def test_default_consistency_sends_no_stale(scene):
    backend = scene.http_backend("fresh")
    scene.register("fresh", backend.port, tags=["http"])
    with NewerConsul(scene.consul, [], filtered_by_acls=False) as newer:
        args = scene.common_args()
        args[args.index("--consul-addr") + 1] = newer.address
        result = run_once(*args, *scene.default_templates())
        assert result.returncode == 0 and "Filtered-By-ACLs" not in result.stderr, result.stderr
        assert newer.queries and not any("stale" in query for query in newer.queries)
