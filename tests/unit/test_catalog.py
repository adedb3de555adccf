import json
from pathlib import Path

import msgspec
import pytest

from renderer.catalog import model as catalog
from renderer.catalog import node_dump as node_dump_module
from renderer.catalog import snapshot
from renderer.catalog.from_dump import from_node_dump
from renderer.catalog.model import CRITICAL, PASSING, WARNING, aggregate_status

SEED = Path(__file__).parent / "catalogs" / "seed.json"


def node_dump(services, checks=(), node="n1", address="10.1.1.1"):
    """A one-node dump, through the same decoder as Consul's bytes."""
    entries = [{"Node": node, "Address": address, "Meta": {}, "Services": list(services), "Checks": list(checks)}]
    return node_dump_module.decode(json.dumps(entries).encode())


def svc(service_id, name="web", port=80, address="", tags=("http",), meta=None, index=1):
    return {"ID": service_id, "Service": name, "Port": port, "Address": address, "Tags": list(tags), "Meta": meta,
            "ModifyIndex": index}


def test_worst_check_wins_and_no_check_is_passing():
    assert aggregate_status([]) == PASSING
    assert aggregate_status([PASSING, WARNING]) == WARNING
    assert aggregate_status([WARNING, CRITICAL, PASSING]) == CRITICAL
    assert aggregate_status(["maintenance"]) == CRITICAL


def test_node_dump_address_falls_back_to_the_node():
    built = from_node_dump(node_dump([svc("a"), svc("b", address="10.9.9.9")]))
    assert [(i.id, i.address) for i in built.instances_of("web")] == [("a", "10.1.1.1"), ("b", "10.9.9.9")]


def test_node_checks_and_service_checks_make_the_status():
    checks = [{"ServiceID": "", "Status": "passing"}, {"ServiceID": "a", "Status": "critical"},
              {"ServiceID": "b", "Status": "warning"}]
    built = from_node_dump(node_dump([svc("a"), svc("b"), svc("c")], checks))
    assert {i.id: i.status for i in built.instances} == {"a": CRITICAL, "b": WARNING, "c": PASSING}
    failing_node = from_node_dump(node_dump([svc("c")], [{"ServiceID": "", "Status": "critical"}]))
    assert failing_node.instances[0].status == CRITICAL


def test_hostile_instances_are_rejected_with_their_id_and_reason():
    dump = node_dump([
        svc("good"),
        svc("inject-name", name="web;evil"),
        svc("inject-addr", address="1.2.3.4; include /etc/passwd"),
        svc("bad-port", port=0),
        svc("big-port", port=70000),
    ])
    built = from_node_dump(dump)
    assert [i.id for i in built.instances] == ["good"]
    rejected = {r.service_id: r.reason for r in built.refused}
    assert set(rejected) == {"inject-name", "inject-addr", "bad-port", "big-port"}
    assert "port 0" in rejected["bad-port"] and "name 'web;evil'" in rejected["inject-name"]
    assert all(r.line.startswith("skipped service instance") for r in built.refused)


def test_an_unsafe_tag_or_meta_value_is_withheld_and_the_instance_kept():
    dump = node_dump([
        svc("inject-tag", tags=["http", "x; return 200"]),
        svc("inject-meta", meta={"weight": "1 }", "description": "my app", "version": "2"}),
    ])
    built = from_node_dump(dump)
    by_id = {i.id: i for i in built.instances}
    assert by_id["inject-tag"].tags == ("http",)
    assert dict(by_id["inject-meta"].meta) == {"version": "2"}
    assert by_id["inject-meta"].withheld == ("description", "weight")
    lines = sorted(r.line for r in built.refused)
    assert len(lines) == 3 and all(r.kept for r in built.refused)
    assert "service instance 'inject-tag' on node 'n1': tag 'x; return 200' contains whitespace" in lines[2]
    assert lines[2].endswith("(withheld from templates; the instance is kept)")
    # A snapshot of it withholds alike.
    again = catalog.from_snapshot(built.as_json())
    assert {i.id: i.withheld for i in again.instances} == {"inject-meta": ("description", "weight"),
                                                          "inject-tag": ()}


def test_unsafe_node_is_rejected_whole():
    built = from_node_dump(node_dump([svc("a")], node="evil;node"))
    assert built.instances == () and built.refused[0].service_id == ""


def test_unchanged_instances_are_reused_by_identity():
    first = from_node_dump(node_dump([svc("a"), svc("b")]))
    second = from_node_dump(node_dump([svc("a"), svc("b", port=81, index=2)]), previous=first)
    assert second.instances[0] is first.instances[0]
    assert second.instances[1] is not first.instances[1]
    assert first != second


def test_services_union_their_tags_sorted_by_name():
    built = from_node_dump(node_dump([svc("a", tags=["x"]), svc("b", tags=["y"]),
                                              svc("c", name="alpha", tags=[])]))
    assert built.services() == (("alpha", (), ""), ("web", ("x", "y"), ""))


def test_snapshot_round_trip(tmp_path):
    loaded, kv = snapshot.load(SEED)
    assert [i.status for i in loaded.instances_of("httpfront")] == [PASSING, PASSING, CRITICAL]
    assert loaded.instances_of("tcpfront-9999")[1].address == "192.168.7.2"
    assert kv.get("config/nginx/client_max_body_size") == "10m"
    dumped = tmp_path / "again.json"
    dumped.write_text(snapshot.dump(loaded, kv))
    again, kv_again = snapshot.load(dumped)
    assert again == loaded and kv_again == kv


def test_bad_snapshot_files_name_the_file(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{nope")
    for path, expected in ((broken, "not valid JSON"), (tmp_path / "absent.json", "cannot read")):
        try:
            snapshot.load(path)
        except Exception as error:
            assert expected in str(error) and str(path) in str(error)
        else:
            raise AssertionError("no error")


def test_snapshot_applies_the_same_rules(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"nodes": [{"name": "n", "address": "10.0.0.1"}],
                                "instances": [{"name": "ok", "node": "n", "port": 1},
                                              {"name": "bad", "node": "n", "port": 2, "status": "sleepy"}]}))
    loaded, _ = snapshot.load(path)
    assert [i.name for i in loaded.instances] == ["ok"]
    assert "sleepy" in loaded.refused[0].reason


def test_unchanged_modify_index_reuses_the_instance_and_follows_its_status():
    first = from_node_dump(node_dump([{**svc("a"), "ModifyIndex": 5}]))
    checks = [{"ServiceID": "a", "Status": "critical"}]
    second = from_node_dump(node_dump([{**svc("a"), "ModifyIndex": 5}], checks), previous=first)
    assert second.instances[0].status == CRITICAL and second.instances[0].port == first.instances[0].port
    third = from_node_dump(node_dump([{**svc("a"), "ModifyIndex": 5}]), previous=second)
    assert third.instances[0].status == PASSING


def test_a_new_modify_index_is_parsed_and_checked_again():
    first = from_node_dump(node_dump([{**svc("a"), "ModifyIndex": 5}]))
    hostile = {**svc("a", name="x;y"), "ModifyIndex": 6}
    second = from_node_dump(node_dump([hostile]), previous=first)
    assert second.instances == () and second.refused[0].service_id == "a"
    again = from_node_dump(node_dump([hostile]), previous=second)
    assert again.refused[0].service_id == "a", "a memoised rejection is still reported"


def test_the_node_dump_decoder_keeps_what_the_catalog_reads_and_allows_nulls():
    body = json.dumps([
        {"ID": "", "Node": "n1", "Address": "10.0.0.1", "TaggedAddresses": None, "Meta": None,
         "Services": [{"ID": "a", "Service": "web", "Tags": None, "Address": "", "Meta": None, "Port": 80,
                       "Weights": {"Passing": 1, "Warning": 1}, "Proxy": {"MeshGateway": {}, "Expose": {}},
                       "Connect": {}, "CreateIndex": 7, "ModifyIndex": 9}],
         "Checks": [{"Node": "n1", "CheckID": "serfHealth", "Status": "passing", "ServiceID": "",
                     "Output": "x" * 1000, "Definition": {}}]},
        {"Node": "n2", "Address": "10.0.0.2", "Services": None, "Checks": None},
    ]).encode()
    built = from_node_dump(node_dump_module.decode(body))
    assert [(i.id, i.address, i.port, i.tags, dict(i.meta), i.status) for i in built.instances] == [
        ("a", "10.0.0.1", 80, (), {}, PASSING)]
    assert [n.name for n in built.nodes] == ["n1", "n2"]
    assert node_dump_module.decode(b"null") == []


def test_a_node_dump_that_breaks_consuls_types_is_refused_naming_the_field():
    body = json.dumps([{"Node": "n1", "Address": "a", "Services": [{"ID": "a", "Port": "80"}]}]).encode()
    with pytest.raises(msgspec.DecodeError, match=r"Expected `int`, got `str` - at `\$\[0\]\.Services\[0\]\.Port`"):
        node_dump_module.decode(body)


@pytest.mark.parametrize("address", ["nonexistent.invalid", "1e3", "300.1.1.1", "fe80::1%eth0", "host.example.org"])
def test_an_instance_address_nginx_would_have_to_resolve_or_cannot_take_leaves_the_instance_out(address):
    built = from_node_dump(node_dump([svc("a", address=address), svc("b", address="10.9.9.9")]))
    assert [i.id for i in built.instances] == ["b"]
    (refusal,) = built.refused
    assert refusal.service_id == "a" and refusal.line.startswith("skipped service instance 'a'")
    assert ("not an IP address" in refusal.reason) or ("IPv6 zone" in refusal.reason), refusal.reason


def test_a_node_with_a_host_name_address_keeps_its_instances_that_have_ip_addresses():
    built = from_node_dump(node_dump([svc("a"), svc("b", address="10.9.9.9")], address="n1.example.org"))
    assert [i.id for i in built.instances] == ["b"] and "not an IP address" in built.refused[0].reason
