"""The reference fleet (tests/support/fleet.py): three Consul servers, three Docker hosts with the registrar
image, nginx and a renderer on two of them. What happens when the leader, a node or an agent dies."""

from __future__ import annotations

import subprocess
import time

import requests

from tests.support.daemon_process import BIN
from tests.support.probe import Probe
from tests.support.waiting import wait_until

DOMAIN = "fleet.test"


def test_both_nginx_nodes_render_the_same_bytes_for_the_same_catalog(fleet, unique):
    node1, node2, node3 = fleet.nodes
    port = fleet.port()
    fleet.web(node3, f"{unique}-a", unique, port, body="on node3")
    fleet.web(node1, f"{unique}-b", unique, port, body="on node1")
    try:
        fleet.serving(f"{unique}.{DOMAIN}", "on node1", "on node3")
        files = [fleet.rendered(node) for node in fleet.nginx_nodes]
        assert files[0] == files[1] and set(files[0]) == {"conf.d/services.conf", "stream.d/services.conf"}
        assert f"upstream {unique} ".encode() in files[0]["conf.d/services.conf"]
    finally:
        fleet.remove(node3, f"{unique}-a")
        fleet.remove(node1, f"{unique}-b")


def test_the_leader_killed_loses_no_request_and_the_next_container_is_routed_on_both(fleet, unique):
    leader = fleet.wait_for_leader()
    # The instance lives on another node: a node whose agent stays dead for long is failed with its services.
    home = next(node for node in reversed(fleet.nodes) if node is not leader)
    port = fleet.port()
    fleet.web(home, f"{unique}-a", unique, port, body="a")
    host = f"{unique}.{DOMAIN}"
    try:
        fleet.serving(host, "a")
        probes = [Probe(80, host, expect="a", address=node.address).__enter__() for node in fleet.nginx_nodes]
        try:
            killed = time.monotonic()
            fleet.kill_consul(leader)
            survivors = [node for node in fleet.nodes if node is not leader]
            successor = fleet.wait_for_leader(among=survivors, not_on=leader)
            gap = time.monotonic() - killed
            for probe in probes:
                probe.cover(10)  # the election measured through both nginx, not assumed
            fleet.restart_consul(leader)  # as systemd would
        finally:
            for probe in probes:
                probe.stop()
        assert all(not probe.failures for probe in probes), [probe.report() for probe in probes]
        assert successor is not leader and gap < 15, f"a new leader after {gap:.1f}s"
        after = next(node for node in fleet.nodes if node is not leader)
        fleet.web(after, f"{unique}-b", unique, port, body="b")
        fleet.serving(host, "a", "b")
    finally:
        fleet.restart_consul(leader)
        fleet.remove(home, f"{unique}-a")
        for node in fleet.nodes:
            fleet.remove(node, f"{unique}-b")


def test_a_whole_node_lost_leaves_both_nginx_and_nothing_else_and_comes_back(fleet, unique):
    node1, node2, node3 = fleet.nodes
    port = fleet.port()
    fleet.web(node3, f"{unique}-3", unique, port, body="node3")
    fleet.web(node1, f"{unique}-1", unique, port, body="node1")
    fleet.web(node2, f"{unique}-other", f"{unique}other", port, body="other")
    host, other = f"{unique}.{DOMAIN}", f"{unique}other.{DOMAIN}"
    fleet.serving(host, "node1", "node3")
    fleet.serving(other, "other")
    instance = f"server {node3.address}:{port} ".encode()
    assert all(instance in fleet.rendered(node)["conf.d/services.conf"] for node in fleet.nginx_nodes)

    def failed() -> bool:
        checks = {c["CheckID"]: c["Status"] for c in node1.consul("/v1/health/node/node3")}
        return checks.get("serfHealth") == "critical"
    try:
        with Probe(80, other, expect="other", address=node1.address) as probe:
            lost = time.monotonic()
            fleet.kill_node(node3)
            wait_until(failed, 60, what="Consul declaring node3 failed")
            declared = time.monotonic() - lost
            wait_until(lambda: all(instance not in fleet.rendered(node)["conf.d/services.conf"]
                                   for node in fleet.nginx_nodes), 30, what="node3's instance out of both nginx")
            fleet.serving(host, "node1")
            probe.cover(5)
        assert not probe.failures, probe.report()
        assert declared < 30, f"node3 declared failed after {declared:.1f}s"
        fleet.restore_node(node3)
        fleet.serving(host, "node1", "node3", timeout=90)  # its containers and registrar came back
    finally:
        if not node3.pids():
            fleet.restore_node(node3)
        fleet.remove(node3, f"{unique}-3")
        fleet.remove(node1, f"{unique}-1")
        fleet.remove(node2, f"{unique}-other")


def test_a_renderer_whose_agent_is_down_keeps_serving_and_converges_when_it_returns(fleet, unique):
    node1, node2, node3 = fleet.nodes
    port = fleet.port()
    fleet.web(node3, f"{unique}-a", unique, port, body="a")
    host = f"{unique}.{DOMAIN}"
    fleet.serving(host, "a")
    try:
        with Probe(80, host, expect="a", address=node1.address) as probe:
            fleet.kill_consul(node1)
            fleet.web(node3, f"{unique}-b", unique, port + 1, body="b")
            wait_until(lambda: fleet.bodies(host, 6)["node2"] == {"a", "b"}, 30,
                       what="node2 routing the instance started while node1's agent is down")
            probe.cover(10)
            assert {node1.get(host).text.strip() for _ in range(6)} == {"a"}, "node1 keeps its last good config"
        assert not probe.failures, probe.report()
        fleet.restart_consul(node1)
        fleet.serving(host, "a", "b")
    finally:
        fleet.restart_consul(node1)
        fleet.remove(node3, f"{unique}-a", f"{unique}-b")


def test_a_registrar_never_touches_another_nodes_services_with_the_same_names_and_ports(fleet, unique):
    node1, node2, node3 = fleet.nodes
    port = fleet.port()
    name = f"{unique}-twin"
    fleet.web(node2, name, f"{unique}twin", port, body="node2")
    fleet.web(node3, name, f"{unique}twin", port, body="node3")

    def instances():
        return sorted((entry["Node"]["Node"], entry["Service"]["ID"])
                      for entry in node1.consul(f"/v1/health/service/{unique}twin"))
    try:
        wait_until(lambda: len(instances()) == 2, 30, what="both twins registered")
        assert instances() == [("node2", f"node2:{name}:{port}"), ("node3", f"node3:{name}:{port}")]
        fleet.remove(node2, name)
        wait_until(lambda: len(instances()) == 1, 30, what="node2's twin deregistered")
        assert instances() == [("node3", f"node3:{name}:{port}")]
        fleet.serving(f"{unique}twin.{DOMAIN}", "node3")
    finally:
        fleet.remove(node2, name)
        fleet.remove(node3, name)


def test_a_fleet_wide_rate_is_shared_by_the_nginx_nodes_and_a_kv_setting_reaches_both(fleet, unique):
    """Two live renderers: a client gets the declared rate from the fleet, not from each node. 1r/m refills
    nothing while the test runs, so what each node admits after the first request is its share of the burst."""
    node1, node2, node3 = fleet.nodes
    port = fleet.port()
    shared, per_node = f"{unique}shared", f"{unique}pernode"
    limits = {"SERVICE_RATE_LIMIT": "1r/m", "SERVICE_RATE_BURST": "10"}
    # Both renderers counted before the services come: the config that first routes them has their final share.
    wait_until(lambda: len(node1.consul("/v1/health/service/consul-nginx-sync-renderer?passing=true")) == 2, 30,
               what="both renderers live in the catalog")
    fleet.web(node3, f"{unique}-shared", shared, port, labels=limits)
    fleet.web(node3, f"{unique}-pernode", per_node, port + 1, labels={**limits, "SERVICE_RATE_LIMIT_SCOPE": "node"})
    try:
        def rendered() -> bool:
            texts = [fleet.rendered(node)["conf.d/services.conf"].decode() for node in fleet.nginx_nodes]
            return all(f"# Service {shared}: 1r/m per client address, across its routes (this node's share of 1r/m "
                       "for the fleet of 2 nginx nodes)" in text and f"# Service {per_node}: 1r/m" in text
                       for text in texts)
        wait_until(rendered, 30, what="both rate-limited services rendered on both nginx nodes")

        # Every request through a limited route takes from its burst, a 502 while the instance starts too:
        # both answer on their own first (asked directly, not through nginx).
        for instance in (port, port + 1):
            url = f"http://{node3.address}:{instance}/"
            wait_until(lambda url=url: requests.get(url, timeout=2).ok, 30, what=f"{url} answering")

        def admitted(node, host: str) -> int:
            # The first request admitted (the settling one) says nginx runs the config with it; the rest must
            # not meet a worker of the previous config, whose default server answers 404.
            node.settled(f"{host}.{DOMAIN}")
            answers = [node.get(f"{host}.{DOMAIN}").status_code for _ in range(16)]
            assert set(answers) <= {200, 429}, answers
            return answers.count(200)
        counts = {host: [admitted(node, host) for node in fleet.nginx_nodes] for host in (shared, per_node)}
        assert counts == {shared: [5, 5], per_node: [10, 10]}  # burst 10 shared by 2 nodes, or on each

        # One route setting written once, through node1's agent: both nginx nodes take it.
        written = subprocess.run([str(BIN / "renderer"), "routes", "set", shared, "maintenance=true",
                                  "--consul-addr", node1.consul_url, "--var", f"domain={DOMAIN}"],
                                 capture_output=True, text=True, timeout=30)
        assert written.returncode == 0, written.stderr
        for node in fleet.nginx_nodes:
            node.settled(f"{shared}.{DOMAIN}", 503)
            assert node.get(f"{shared}.{DOMAIN}").headers.get("Retry-After") == "120"
    finally:
        requests.delete(f"{node1.consul_url}/v1/kv/consul-nginx-sync/routes/{shared}", params={"recurse": "true"},
                        timeout=10)
        fleet.remove(node3, f"{unique}-shared", f"{unique}-pernode")
