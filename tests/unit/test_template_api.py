from pathlib import Path

from renderer.catalog import snapshot
from renderer.catalog.kv import KvSnapshot, common_prefix
from renderer.render.api import MISSING, Recorder, TemplateData, changed

SEED = Path(__file__).parent / "catalogs" / "seed.json"


def seed_data():
    return TemplateData(*snapshot.load(SEED))


def test_services_lists_names_and_tags_filtered_by_tag():
    api = Recorder(seed_data())
    assert [s["name"] for s in api.services()] == ["canary", "httpbackend", "httpfront", "tcpfront-9999"]
    assert api.services("http") == [{"name": "canary", "tags": ["http", "v2"], "kind": ""},
                                    {"name": "httpfront", "tags": ["http"], "kind": ""}]


def test_service_returns_passing_instances_unless_asked():
    api = Recorder(seed_data())
    passing = api.service("httpfront")
    assert [(i.address, i.port) for i in passing] == [("10.0.0.1", 32768), ("10.0.0.2", 32768)]
    everything = api.service("httpfront", passing=False)
    assert [i.status for i in everything] == ["passing", "passing", "critical"]
    assert api.service("canary", tag="v2")[0].meta["weight"] == "10"
    assert api.service("canary", tag="v1") == []
    assert api.service("nonexistent") == []


def test_instance_fields():
    instance = Recorder(seed_data()).service("tcpfront-9999")[1]
    assert (instance.id, instance.name, instance.address, instance.port, instance.tags, instance.node,
            instance.status) == ("node2:tcpfront:9999", "tcpfront-9999", "192.168.7.2", 32771, ("tcp",),
                                 "node2", "passing")


def test_nodes_and_keys():
    api = Recorder(seed_data())
    assert [n.name for n in api.nodes()] == ["node1", "node2", "node3"]
    assert api.key("config/nginx/client_max_body_size") == "10m"
    assert api.key_or_default("config/nginx/absent", "1m") == "1m"
    assert api.tree("config/nginx/flags") == [{"key": "gzip", "value": "on"}]


def test_an_absent_key_is_an_error_naming_it():
    try:
        Recorder(seed_data()).key("config/absent")
    except KeyError as error:
        assert "config/absent" in str(error)
    else:
        raise AssertionError("no error")


def test_what_a_render_used_is_recorded_with_its_value():
    api = Recorder(seed_data())
    api.services("http")
    api.service("httpfront")
    api.key_or_default("config/x", "d")
    assert set(api.used) == {("services", "http"), ("service", "httpfront", None, True), ("key", "config/x")}
    assert not api.missing


def test_data_not_fetched_is_missing_and_empty():
    api = Recorder(TemplateData(None, KvSnapshot(["app/"], {})))
    assert api.services() == [] and api.service("x") == [] and api.key_or_default("other/k", "d") == "d"
    assert api.missing == {("services", None), ("service", "x", None, True), ("key", "other/k")}


def test_changed_only_when_a_used_value_differs():
    data = seed_data()
    api = Recorder(data)
    api.service("httpfront")
    catalog, kv = snapshot.load(SEED)
    assert not changed(api.used, TemplateData(catalog, kv))
    assert changed(api.used, TemplateData(None, kv))  # data gone: missing differs
    other = Recorder(data)
    other.key("config/nginx/client_max_body_size")
    assert changed(other.used, TemplateData(catalog, KvSnapshot([""], {"config/nginx/client_max_body_size": "1m"})))


def test_evaluate_missing_sentinel():
    assert TemplateData().evaluate(("nodes",)) is MISSING


def test_common_prefix_covers_every_path():
    assert common_prefix(["app/web/a", "app/web/b", "app/db"]) == "app/"
    assert common_prefix(["x"]) == "x"
    assert common_prefix([]) == ""
