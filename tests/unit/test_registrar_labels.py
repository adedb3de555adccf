"""Label -> service mapping as a pure function of canned `docker inspect` payloads."""

from __future__ import annotations

import copy

import pytest

from registrar.labels import default_name, services_for
from registrar.model import MappingSettings
from registrar.service_settings import split_tags
from registrar.tag_template import Template

HOST = MappingSettings(hostname="node1", host_address="10.0.0.1")


def inspect(*, name="web", image="registry.example:5000/team/web:1.2", labels=None, env=None, ports=None,
            exposed=None, network_mode="default", networks=None, running=True, health=None, healthcheck=None):
    """A `docker inspect` payload with only the fields the registrar reads."""
    if ports is None:
        ports = {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "32768"}]}
    config = {"Image": image, "Labels": labels or {}, "Env": env or [],
              "ExposedPorts": exposed if exposed is not None else {key: {} for key in ports}}
    if healthcheck:
        config["Healthcheck"] = {"Test": ["CMD-SHELL", healthcheck]}
    state = {"Running": running, "ExitCode": 0}
    if health:
        state["Health"] = {"Status": health, "FailingStreak": 0, "Log": []}
    return {"Id": "0123456789ab" + "c" * 52, "Name": f"/{name}", "Config": config, "State": state,
            "HostConfig": {"NetworkMode": network_mode},
            "NetworkSettings": {"Ports": ports if network_mode != "host" else {},
                                "Networks": networks if networks is not None
                                else {"bridge": {"IPAddress": "172.17.0.5"}}}}


def only(info, settings=HOST):
    mapping = services_for(info, settings)
    assert len(mapping.services) == 1, mapping
    return mapping.services[0]


def test_single_published_port_uses_image_base_name_and_host_address():
    service = only(inspect())
    assert (service.name, service.id, service.address, service.port) == ("web", "node1:web:80", "10.0.0.1", 32768)
    assert service.tags == ()
    assert service.meta_dict == {"registrar-host": "node1", "registrar-container": "0123456789ab"}
    assert service.checks == ()


@pytest.mark.parametrize("image, name", [
    ("nginx", "nginx"), ("nginx:1.25", "nginx"), ("library/nginx:latest", "nginx"),
    ("registry.example:5000/team/api:2", "api"), ("team/api@sha256:" + "a" * 64, "api"),
    ("localhost:5000/api:1@sha256:" + "b" * 64, "api"),
])
def test_default_name_strips_registry_tag_and_digest(image, name):
    assert default_name(image) == name


def test_two_published_ports_give_two_services_named_by_exposed_port():
    info = inspect(ports={"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "32768"}],
                          "443/tcp": [{"HostIp": "0.0.0.0", "HostPort": "32769"}]},
                   labels={"SERVICE_NAME": "front"})
    services = services_for(info, HOST).services
    assert [(s.name, s.id, s.port) for s in services] == [("front-80", "node1:web:80", 32768),
                                                          ("front-443", "node1:web:443", 32769)]


def test_per_port_name_is_used_as_given_and_beats_generic():
    info = inspect(ports={"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "1080"}],
                          "443/tcp": [{"HostIp": "0.0.0.0", "HostPort": "1443"}]},
                   labels={"SERVICE_NAME": "front", "SERVICE_443_NAME": "front-tls", "SERVICE_443_TAGS": "tls",
                           "SERVICE_TAGS": "http"})
    by_port = {s.port: s for s in services_for(info, HOST).services}
    assert by_port[1443].name == "front-tls" and by_port[1443].tags == ("tls",)
    assert by_port[1080].name == "front-80" and by_port[1080].tags == ("http",)


def test_unpublished_ports_are_not_registered_and_do_not_make_a_group():
    info = inspect(ports={"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "32768"}], "9000/tcp": None})
    assert only(info).name == "web"


def test_container_without_published_ports_is_not_registered():
    assert services_for(inspect(ports={"80/tcp": None}), HOST).services == ()


def test_udp_port_gets_id_suffix_and_tag():
    info = inspect(ports={"53/udp": [{"HostIp": "0.0.0.0", "HostPort": "5353"}]}, labels={"SERVICE_TAGS": "dns"})
    service = only(info)
    assert service.id == "node1:web:53:udp" and service.tags == ("dns", "udp")


def test_same_port_tcp_and_udp_are_two_services_with_distinct_ids():
    info = inspect(ports={"53/udp": [{"HostIp": "0.0.0.0", "HostPort": "5353"}],
                          "53/tcp": [{"HostIp": "0.0.0.0", "HostPort": "5353"}]}, labels={"SERVICE_53_NAME": "dns"})
    assert sorted(s.id for s in services_for(info, HOST).services) == ["node1:web:53", "node1:web:53:udp"]


def test_label_beats_env_and_env_alone_works():
    assert only(inspect(env=["SERVICE_NAME=fromenv"])).name == "fromenv"
    assert only(inspect(env=["SERVICE_NAME=fromenv"], labels={"SERVICE_NAME": "fromlabel"})).name == "fromlabel"


def test_per_port_env_beats_generic_label():
    info = inspect(env=["SERVICE_80_NAME=port-env"], labels={"SERVICE_NAME": "generic-label"})
    assert only(info).name == "port-env"


def test_service_id_override_and_generic_id_in_a_group_gets_port_suffix():
    assert only(inspect(labels={"SERVICE_ID": "custom-1"})).id == "custom-1"
    info = inspect(ports={"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "1"}],
                          "53/udp": [{"HostIp": "0.0.0.0", "HostPort": "2"}]},
                   labels={"SERVICE_ID": "custom", "SERVICE_80_ID": "exact"})
    assert sorted(s.id for s in services_for(info, HOST).services) == ["custom-53-udp", "exact"]


@pytest.mark.parametrize("value, ignored", [("true", True), ("1", True), ("yes", True), ("anything", True),
                                            ("false", False), ("0", False), ("no", False)])
def test_service_ignore_follows_boolean_looking_values(value, ignored):
    services = services_for(inspect(labels={"SERVICE_IGNORE": value}), HOST).services
    assert (services == ()) is ignored


def test_per_port_ignore_skips_only_that_port():
    info = inspect(ports={"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "1"}],
                          "443/tcp": [{"HostIp": "0.0.0.0", "HostPort": "2"}]}, labels={"SERVICE_443_IGNORE": "1"})
    assert [s.name for s in services_for(info, HOST).services] == ["web-80"]


def test_explicit_registers_only_named_containers_and_ports():
    explicit = MappingSettings(hostname="node1", host_address="10.0.0.1", explicit=True)
    assert services_for(inspect(), explicit).services == ()
    assert only(inspect(labels={"SERVICE_NAME": "api"}), explicit).name == "api"
    info = inspect(ports={"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "1"}],
                          "443/tcp": [{"HostIp": "0.0.0.0", "HostPort": "2"}]}, labels={"SERVICE_443_NAME": "tls"})
    assert [s.name for s in services_for(info, explicit).services] == ["tls"]


def test_address_rules_ip_flag_then_specific_binding_then_host():
    specific = inspect(ports={"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]})
    assert only(specific).address == "127.0.0.1"
    assert only(specific, MappingSettings("node1", "10.0.0.1", ip="192.0.2.7")).address == "192.0.2.7"
    ipv6_any = inspect(ports={"80/tcp": [{"HostIp": "::", "HostPort": "8080"}]})
    assert only(ipv6_any).address == "10.0.0.1"


def test_ipv4_binding_is_preferred_when_docker_publishes_both_families():
    info = inspect(ports={"80/tcp": [{"HostIp": "::", "HostPort": "9999"}, {"HostIp": "0.0.0.0", "HostPort": "8888"}]})
    assert only(info).port == 8888


def test_internal_uses_container_ip_on_first_network_by_name_and_exposed_port():
    internal = MappingSettings("node1", "10.0.0.1", internal=True)
    info = inspect(ports={"80/tcp": None}, networks={"zeta": {"IPAddress": "172.30.0.2"},
                                                     "alpha": {"IPAddress": "172.20.0.2"},
                                                     "beta": {"IPAddress": ""}})
    service = only(info, internal)
    assert (service.address, service.port) == ("172.20.0.2", 80)


def test_internal_without_any_container_ip_warns_and_skips():
    internal = MappingSettings("node1", "10.0.0.1", internal=True)
    mapping = services_for(inspect(networks={"none": {"IPAddress": ""}}), internal)
    assert mapping.services == () and "no IP address" in mapping.warnings[0]


def test_host_network_container_registers_exposed_ports_on_host_address():
    info = inspect(network_mode="host", ports={}, exposed={"8080/tcp": {}})
    service = only(info)
    assert (service.address, service.port, service.id) == ("10.0.0.1", 8080, "node1:web:8080")
    assert only(info, MappingSettings("node1", "10.0.0.1", ip="192.0.2.7")).address == "192.0.2.7"


def test_global_tags_are_appended_and_deduplicated():
    settings = MappingSettings("node1", "10.0.0.1", tags=Template("prod,http"))
    assert only(inspect(labels={"SERVICE_TAGS": "http, canary,,"}), settings).tags == ("http", "canary", "prod")


def test_escaped_commas_stay_inside_a_tag():
    assert split_tags(r"a\,b,c") == ["a,b", "c"]
    assert split_tags(r"/(;\,:-_)/") == ["/(;,:-_)/"], "registrator's own documented example"
    assert split_tags("x\\y,,z\\") == ["x\\y", "z\\"], "a backslash before anything else is kept"
    assert only(inspect(labels={"SERVICE_TAGS": r"a\,b,c"})).tags == ("a,b", "c")


def test_forced_tags_are_a_go_template_evaluated_per_container():
    settings = MappingSettings("node1", "10.0.0.1", tags=Template("{{.Config.Hostname}},{{ strSlice .ID 0 6 }}"))
    info = inspect()
    info["Config"]["Hostname"] = "abc123"
    assert only(info, settings).tags == ("abc123", "012345")
    # A template that fails on one container costs it those tags only, with a warning.
    del info["Config"]["Hostname"]
    mapping = services_for(info, settings)
    assert mapping.services[0].tags == ()
    assert "--tags" in mapping.warnings[0] and "can't evaluate field .Config.Hostname" in mapping.warnings[0]


def test_meta_is_every_other_key_as_registrator_writes_it():
    info = inspect(labels={"SERVICE_VERSION": "1", "SERVICE_META_VERSION": "2", "SERVICE_TEAM": "blue",
                           "SERVICE_80_WEIGHT": "5", "SERVICE_443_WEIGHT": "9", "SERVICE_CHECK_TCP": "true",
                           "SERVICE_NAME": "web", "SERVICE_TAGS": "a", "SERVICE_IGNORE": "false", "OTHER": "x"})
    meta = only(info).meta_dict
    assert meta == {"version": "1", "meta_version": "2", "team": "blue", "weight": "5", "check_tcp": "true",
                    "registrar-host": "node1", "registrar-container": "0123456789ab"}


@pytest.mark.parametrize("key", ["SERVICE_REGISTRAR-HOST", "SERVICE_CONSUL-X", "SERVICE_META_BAD.KEY",
                                 "SERVICE_META_" + "K" * 129])
def test_meta_keys_consul_refuses_or_that_spoof_ownership_are_skipped_with_warning(key):
    mapping = services_for(inspect(labels={key: "v"}), HOST)
    service = mapping.services[0]
    assert service.meta_dict["registrar-host"] == "node1" and len(service.meta_dict) == 2
    assert len(mapping.warnings) == 1 and key in mapping.warnings[0] and "web" in mapping.warnings[0]


def test_http_check_targets_registered_address_and_port_with_defaults():
    service = only(inspect(labels={"SERVICE_CHECK_HTTP": "/health"}))
    (check,) = service.checks
    assert check.payload() == {"CheckID": "service:node1:web:80", "Name": "HTTP GET /health",
                               "HTTP": "http://10.0.0.1:32768/health", "Interval": "10s"}


def test_check_options_apply():
    labels = {"SERVICE_CHECK_HTTPS": "/", "SERVICE_CHECK_INTERVAL": "5s", "SERVICE_CHECK_TIMEOUT": "1s",
              "SERVICE_CHECK_INITIAL_STATUS": "passing", "SERVICE_CHECK_DEREGISTER_AFTER": "10m"}
    (check,) = only(inspect(labels=labels)).checks
    assert check.payload() == {"CheckID": "service:node1:web:80", "Name": "HTTPS GET /",
                               "HTTP": "https://10.0.0.1:32768/", "Interval": "5s", "Timeout": "1s",
                               "Status": "passing", "DeregisterCriticalServiceAfter": "10m",
                               "TLSSkipVerify": True}


def test_tcp_ttl_and_script_checks():
    labels = {"SERVICE_CHECK_TCP": "true", "SERVICE_CHECK_TTL": "30s",
              "SERVICE_CHECK_SCRIPT": "nc -z $SERVICE_IP $SERVICE_PORT"}
    checks = {c.id: c.payload() for c in only(inspect(labels=labels)).checks}
    # registrator's precedence: script, then ttl, then tcp; the first is the service's own check ID.
    assert list(checks) == ["service:node1:web:80", "service:node1:web:80:ttl", "service:node1:web:80:tcp"]
    assert checks["service:node1:web:80"]["Args"] == ["/bin/sh", "-c", "nc -z 10.0.0.1 32768"]
    assert checks["service:node1:web:80:ttl"] == {"CheckID": "service:node1:web:80:ttl", "Name": "TTL", "TTL": "30s"}
    tcp = checks["service:node1:web:80:tcp"]
    assert tcp["TCP"] == "10.0.0.1:32768" and tcp["Interval"] == "10s"


def test_a_single_ttl_check_has_the_id_apps_heartbeat():
    (check,) = only(inspect(labels={"SERVICE_CHECK_TTL": "30s"})).checks
    assert check.payload() == {"CheckID": "service:node1:web:80", "Name": "TTL", "TTL": "30s"}


def test_http_method_grpc_and_docker_command_checks():
    labels = {"SERVICE_CHECK_HTTP": "/up", "SERVICE_CHECK_HTTP_METHOD": "head", "SERVICE_CHECK_TIMEOUT": "2s"}
    (check,) = only(inspect(labels=labels)).checks
    assert check.payload()["Method"] == "HEAD" and check.name == "HTTP HEAD /up"
    (grpc,) = only(inspect(labels={"SERVICE_CHECK_GRPC": "true", "SERVICE_CHECK_GRPC_USE_TLS": "true",
                                   "SERVICE_CHECK_TLS_SKIP_VERIFY": "true"})).checks
    assert grpc.payload() == {"CheckID": "service:node1:web:80", "Name": "gRPC 10.0.0.1:32768",
                              "GRPC": "10.0.0.1:32768", "Interval": "10s", "TLSSkipVerify": True,
                              "GRPCUseTLS": True}
    (named,) = only(inspect(labels={"SERVICE_CHECK_GRPC": "shop.Cart"})).checks
    assert named.grpc == "10.0.0.1:32768/shop.Cart" and not named.grpc_use_tls
    (command,) = only(inspect(labels={"SERVICE_CHECK_CMD": "test -f /www/index.html"})).checks
    assert command.payload() == {"CheckID": "service:node1:web:80", "Name": "command in the container: test -f "
                                 "/www/index.html", "DockerContainerID": "0123456789ab" + "c" * 52,
                                 "Shell": "/bin/sh", "Interval": "10s",
                                 "Args": ["/bin/sh", "-c", "test -f /www/index.html"]}


@pytest.mark.parametrize("labels, culprit", [
    ({"SERVICE_CHECK_HTTP": "/", "SERVICE_CHECK_HTTP_METHOD": "GE T"}, "SERVICE_CHECK_HTTP_METHOD"),
    ({"SERVICE_CHECK_GRPC": "a b"}, "SERVICE_CHECK_GRPC"),
    ({"SERVICE_CHECK_CMD": "true\nrm -rf /"}, "SERVICE_CHECK_CMD"),
])
def test_a_check_setting_that_cannot_be_used_skips_the_service_naming_it(labels, culprit):
    mapping = services_for(inspect(labels=labels), HOST)
    assert mapping.services == () and len(mapping.warnings) == 1 and culprit in mapping.warnings[0]


@pytest.mark.parametrize("key", ["SERVICE_CHECK_TCP", "SERVICE_CHECK_HTTP", "SERVICE_CHECK_TTL",
                                 "SERVICE_CHECK_SCRIPT", "SERVICE_CHECK_CMD", "SERVICE_CHECK_GRPC"])
@pytest.mark.parametrize("value", ["false", "False", "no", "0", "off", ""])
def test_false_looking_check_values_add_no_check(key, value):
    assert only(inspect(labels={key: value})).checks == ()


def test_true_looking_http_value_means_root_path():
    (check,) = only(inspect(labels={"SERVICE_CHECK_HTTP": "true"})).checks
    assert check.http == "http://10.0.0.1:32768/"


def test_ipv6_address_is_bracketed_in_check_targets():
    info = inspect(ports={"80/tcp": [{"HostIp": "2001:db8::1", "HostPort": "80"}]},
                   labels={"SERVICE_CHECK_HTTP": "/", "SERVICE_CHECK_TCP": "1"})
    targets = sorted(c.http or c.tcp for c in only(info).checks)
    assert targets == ["[2001:db8::1]:80", "http://[2001:db8::1]:80/"]


def test_docker_healthcheck_becomes_a_ttl_check_following_health():
    for health, status in (("healthy", "passing"), ("starting", "critical"), ("unhealthy", "critical")):
        (check,) = only(inspect(health=health, healthcheck="true")).checks
        assert (check.id, check.ttl, check.status, check.docker_health) == \
            ("service:node1:web:80:docker-health", "90s", status, True)


def test_health_status_does_not_change_the_fingerprint_but_definitions_do():
    healthy = only(inspect(health="healthy", healthcheck="true"))
    unhealthy = only(inspect(health="unhealthy", healthcheck="true"))
    assert healthy.fingerprint() == unhealthy.fingerprint()
    assert only(inspect()).fingerprint() != only(inspect(labels={"SERVICE_TAGS": "x"})).fingerprint()
    assert only(inspect()).fingerprint() == only(copy.deepcopy(inspect())).fingerprint()


def test_payload_carries_ownership_marks_and_hash():
    payload = only(inspect(labels={"SERVICE_TAGS": "a"})).payload()
    assert payload["Meta"]["registrar-host"] == "node1"
    assert len(payload["Meta"]["registrar-hash"]) == 16
    assert payload["Tags"] == ["a"] and payload["Address"] == "10.0.0.1" and payload["Port"] == 32768


def test_use_ip_from_label_as_registrator_does():
    settings = MappingSettings("node1", "10.0.0.1", ip_label="com.example.ip")
    info = inspect(labels={"com.example.ip": "192.0.2.9/24", "SERVICE_CHECK_TCP": "true"})
    service = only(info, settings)
    assert service.address == "192.0.2.9" and service.checks[0].tcp == "192.0.2.9:32768"
    assert only(inspect(), settings).address == "10.0.0.1", "without the label: the usual address"
    mapping = services_for(inspect(labels={"com.example.ip": "not-an-ip"}), settings)
    assert mapping.services[0].address == "10.0.0.1" and "is not an IP address" in mapping.warnings[0]


@pytest.mark.parametrize("raw, name", [("15", "SIGTERM"), (15, "SIGTERM"), ("TERM", "SIGTERM"), ("sigint", "SIGINT"),
                                       ("9", "SIGKILL"), ("", None), ("999", None), ("NOPE", None)])
def test_signal_names(raw, name):
    from registrar.stopping import signal_name
    assert signal_name(raw) == name
