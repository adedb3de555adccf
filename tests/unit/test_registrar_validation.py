"""Hostile or broken labels skip one service with one warning naming container, key and value."""

from __future__ import annotations

import pytest

from registrar.labels import MappingSettings, services_for
from tests.unit.test_registrar_labels import HOST, inspect


def refused(labels=None, env=None, **kwargs):
    mapping = services_for(inspect(labels=labels, env=env, **kwargs), HOST)
    assert mapping.services == (), mapping.services
    assert len(mapping.warnings) == 1, mapping.warnings
    return mapping.warnings[0]


@pytest.mark.parametrize("value", ["two words", "semi;colon", "brace{", "brace}", "new\nline", "tab\t",
                                   "under_score", "dot.name", "-leading", "trailing-", "x" * 64, "ünicode", ""])
def test_names_that_are_not_dns_labels_are_refused(value):
    warning = refused(labels={"SERVICE_NAME": value})
    assert "container web (0123456789ab)" in warning and "label SERVICE_NAME=" in warning
    assert "not a valid DNS label" in warning
    assert "\n" not in warning and "\t" not in warning  # control characters are escaped, not logged raw


@pytest.mark.parametrize("tag", ["a b", "a;b", "a{b", "a}b", "a\x00b", "a\x1bb", "a\u00a0b", "a\u2028b"])
def test_tags_with_whitespace_syntax_or_control_characters_are_refused(tag):
    warning = refused(labels={"SERVICE_TAGS": f"ok,{tag}"})
    assert "label SERVICE_TAGS=" in warning and "tag" in warning


@pytest.mark.parametrize("value", ["a b", "x;include /etc/passwd;", "}", "line\r\nbreak", "x" * 513])
def test_meta_values_that_could_break_configs_are_refused(value):
    warning = refused(labels={"SERVICE_VERSION": value})
    assert "label SERVICE_VERSION=" in warning


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
    warning = refused(image="my_registry/my_app:1")
    assert "set SERVICE_NAME" in warning


def test_long_values_are_truncated_in_warnings():
    warning = refused(labels={"SERVICE_NAME": "x" * 10_000})
    assert len(warning) < 400


def test_unknown_check_setting_is_warned_about_but_service_kept():
    mapping = services_for(inspect(labels={"SERVICE_CHECK_CMD": "/bin/true"}), HOST)
    assert len(mapping.services) == 1 and "SERVICE_CHECK_CMD" in mapping.warnings[0]


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
