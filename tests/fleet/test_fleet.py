"""The reference fleet (tests/support/fleet.py): three Consul servers, three Docker hosts with the registrar
image, nginx and a renderer on two of them. What happens when the leader, a node or an agent dies."""

from __future__ import annotations

import time

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
