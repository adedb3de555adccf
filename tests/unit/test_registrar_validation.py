"""Broken labels: a bad key costs that key, an unusable name, ID, port or check costs the service (one warning)."""

from __future__ import annotations

import pytest

from registrar.labels import services_for
from registrar.model import MappingSettings
from tests.unit.test_registrar_labels import HOST, inspect


def refused(labels=None, env=None, **kwargs):
    mapping = services_for(inspect(labels=labels, env=env, **kwargs), HOST)
    assert mapping.services == (), mapping.services
    assert len(mapping.warnings) == 1, mapping.warnings
    return mapping.warnings[0]


def registered(labels=None, env=None, **kwargs):
    mapping = services_for(inspect(labels=labels, env=env, **kwargs), HOST)
    assert len(mapping.services) == 1, mapping.warnings
    return mapping.services[0], mapping.warnings


@pytest.mark.parametrize("value", ["two words", "semi;colon", "brace{", "brace}", "new\nline", "tab\t",
                                   "-leading", "trailing-", "x" * 129, "ünicode", "", "a$b"])
def test_names_nginx_and_consul_cannot_both_carry_are_refused(value):
    warning = refused(labels={"SERVICE_NAME": value})
    assert "container web (0123456789ab)" in warning and "label SERVICE_NAME=" in warning
    assert "is not a valid service name" in warning
    assert "\n" not in warning and "\t" not in warning  # control characters are escaped, not logged raw


@pytest.mark.parametrize("value", ["my_svc", "api.v2", "x" * 64])
def test_names_consul_dns_will_not_resolve_register_with_a_warning(value):
    service, warnings = registered(labels={"SERVICE_NAME": value})
    assert service.name == value
    assert warnings == (f"container web (0123456789ab): service {value}: Consul's DNS interface will not resolve "
                        f"{value}.service.consul (it takes letters, digits and '-' only, at most 63)",)


@pytest.mark.parametrize("tag", ["a b", "a;b", "a{b", "a}b", "a#b", "a\x00b", "a\x1bb", "a\u00a0b", "a\u2028b",
                                 "traefik.http.routers.x.rule=Host(`a`)"])
def test_tags_nginx_must_not_see_are_registered_with_a_warning(tag):
    service, warnings = registered(labels={"SERVICE_TAGS": f"ok,{tag}"})
    assert service.tags == ("ok", tag)
    assert len(warnings) == 1 and "label SERVICE_TAGS=" in warnings[0]
    assert "the renderer will not show it to nginx" in warnings[0]


@pytest.mark.parametrize("value", ["my app", "x;include /etc/passwd;", "}", "line\r\nbreak"])
def test_meta_values_nginx_must_not_see_are_registered_with_a_warning(value):
    service, warnings = registered(labels={"SERVICE_DESCRIPTION": value})
    assert service.meta_dict["description"] == value
    assert len(warnings) == 1 and "label SERVICE_DESCRIPTION=" in warnings[0]


def test_meta_consul_would_refuse_is_dropped_and_the_service_kept():
    service, warnings = registered(labels={"SERVICE_DATA": "x" * 513, "SERVICE_VERSION": "2",
                                           "SERVICE_CONSUL-X": "y", "SERVICE_A.B": "z"})
    assert {k: v for k, v in service.meta_dict.items() if not k.startswith("registrar-")} == {"version": "2"}
    assert len(warnings) == 3
    assert any("SERVICE_DATA" in w and "longer than 512" in w for w in warnings)
    assert any("SERVICE_CONSUL-X" in w and "not allowed" in w for w in warnings)


def test_more_meta_than_consul_takes_keeps_the_first_keys():
    labels = {f"SERVICE_K{i:02d}": "v" for i in range(70)}
    service, warnings = registered(labels=labels)
    assert len(service.payload()["Meta"]) == 64 and "k60" in service.meta_dict and "k61" not in service.meta_dict
    assert len(warnings) == 9 and "Consul's limit is 64" in warnings[0]


def test_env_origin_is_named_in_the_warning():
    warning = refused(env=["SERVICE_NAME=bad name"])
    assert "env SERVICE_NAME='bad name'" in warning


@pytest.mark.parametrize("key", ["SERVICE_CHECK_INTERVAL", "SERVICE_CHECK_TIMEOUT", "SERVICE_CHECK_DEREGISTER_AFTER",
                                 "SERVICE_CHECK_TTL"])
@pytest.mark.parametrize("value", ["10", "ten seconds", "5x", "1h;", "-1s"])
def test_durations_that_do_not_parse_are_refused(key, value):
    labels = {key: value, "SERVICE_CHECK_HTTP": "/"}
    warning = refused(labels=labels)
    assert key in warning and "duration" in warning


def test_initial_status_must_be_a_consul_status():
    assert "passing, warning, critical" in refused(labels={"SERVICE_CHECK_INITIAL_STATUS": "green",
                                                           "SERVICE_CHECK_TCP": "1"})


@pytest.mark.parametrize("path", ["health", "/a b", "/x\ny"])
def test_http_check_path_must_be_a_path(path):
    assert "SERVICE_CHECK_HTTP" in refused(labels={"SERVICE_CHECK_HTTP": path})


def test_per_port_key_with_a_port_that_is_not_a_number_is_ignored_with_warning():
    mapping = services_for(inspect(labels={"SERVICE_8O_NAME": "x", "SERVICE_70000_NAME": "y"}), HOST)
    assert [s.name for s in mapping.services] == ["web"]
    assert len(mapping.warnings) == 2 and all("is not a number" in w for w in mapping.warnings)


def test_service_id_with_url_or_space_characters_is_refused():
    assert "SERVICE_ID" in refused(labels={"SERVICE_ID": "../../agent/leave"})
    assert "SERVICE_ID" in refused(labels={"SERVICE_ID": "a b"})


def test_one_bad_port_does_not_cost_the_other_ports_or_the_container():
    info = inspect(ports={"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "1"}],
                          "443/tcp": [{"HostIp": "0.0.0.0", "HostPort": "2"}]},
                   labels={"SERVICE_443_NAME": "bad name"})
    mapping = services_for(info, HOST)
    assert [s.name for s in mapping.services] == ["web-80"]
    assert len(mapping.warnings) == 1 and "443/tcp" in mapping.warnings[0]


def test_image_without_a_usable_base_name_asks_for_service_name():
    warning = refused(image="registry/_app:1")
    assert "set SERVICE_NAME" in warning
    service, _ = registered(image="my_registry/my_app:1")
    assert service.name == "my_app", "registrator registers it; so do we"


def test_long_values_are_truncated_in_warnings():
    warning = refused(labels={"SERVICE_NAME": "x" * 10_000})
    assert len(warning) < 400
    _, warnings = registered(labels={"SERVICE_DATA": "x" * 10_000})
    assert len(warnings[0]) < 400


def test_unknown_check_setting_is_warned_about_but_service_kept():
    service, warnings = registered(labels={"SERVICE_CHECK_FOO": "/bin/true"})
    assert service.meta_dict["check_foo"] == "/bin/true", "registrator copies it to meta: so do we"
    assert len(warnings) == 1 and "SERVICE_CHECK_FOO" in warnings[0] and "kept as meta only" in warnings[0]


def test_non_string_or_odd_payload_parts_do_not_crash():
    info = inspect()
    info["Config"]["Labels"] = None
    info["Config"]["Env"] = ["NOEQUALS", "SERVICE_=x", "=y"]
    mapping = services_for(info, MappingSettings("node1", "10.0.0.1"))
    assert [s.name for s in mapping.services] == ["web"] and "no key after SERVICE_" in mapping.warnings[0]


def test_published_port_that_is_not_a_number_is_refused():
    mapping = services_for(inspect(ports={"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "80a"}]}), HOST)
    assert mapping.services == () and "published port '80a' is not a number" in mapping.warnings[0]


def test_exposed_port_that_is_not_a_number_is_refused():
    mapping = services_for(inspect(ports={"http/tcp": [{"HostIp": "0.0.0.0", "HostPort": "80"}]}), HOST)
    assert mapping.services == () and "exposed port 'http' is not a number" in mapping.warnings[0]
