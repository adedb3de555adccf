"""The shipped templates, rendered from snapshot catalogs: no Consul, no nginx."""

from pathlib import Path


from renderer.catalog import snapshot
from renderer.catalog.model import Catalog, Instance, Node
from renderer.render.api import TemplateData
from renderer.render.loader import TemplateLoader

ROOT = Path(__file__).resolve().parents[2]
HTTP = ROOT / "templates" / "http" / "services.conf.j2"
STREAM = ROOT / "templates" / "stream" / "services.conf.j2"
SEED = Path(__file__).parent / "catalogs" / "seed.json"


def render(template, data=None, **variables):
    return TemplateLoader(variables).render(template, data or TemplateData(*snapshot.load(SEED)))


def instance(name, port, tags, status="passing", meta=None, node="n1", address="10.0.0.1"):
    return Instance(f"{node}:{name}:{port}", name, address, port, tuple(tags), meta or {}, node, status)


def test_http_upstream_and_virtual_host_for_each_http_service():
    text = render(HTTP, domain="example.org").text
    assert ("upstream httpfront {\n    zone renderer_upstreams;\n"
            "    server 10.0.0.1:32768 max_fails=3 fail_timeout=60 weight=1;\n"
            "    server 10.0.0.2:32768 max_fails=3 fail_timeout=60 weight=1;\n}") in text
    assert "server_name httpfront.example.org;" in text
    assert "proxy_pass http://httpfront;" in text
    # One zone for every upstream, sized once (a zone each made nginx's start-up quadratic).
    assert "upstream _renderer_zone {\n    zone renderer_upstreams 2m;\n" in text
    assert text.count(" renderer_upstreams") == text.count("\nupstream ")
    for header in ("Host $host", "X-Real-IP $remote_addr", "X-Forwarded-For $proxy_add_x_forwarded_for",
                   "X-Forwarded-Proto $scheme"):
        assert f"proxy_set_header {header};" in text
    assert "listen 80;" in text
    assert "10.0.0.3" not in text, "a critical instance is excluded"
    assert "httpbackend" not in text, "an untagged internal service is not exposed"
    assert "tcpfront" not in text


def test_http_listen_address_and_port_variables():
    text = render(HTTP, domain="d", http_port="8080", listen_address="127.0.0.1").text
    assert "listen 127.0.0.1:8080;" in text and "listen 80;" not in text


def test_http_service_with_no_passing_instance_answers_503_without_an_upstream():
    data = TemplateData(Catalog([Node("n1", "10.0.0.1", {})], [instance("down", 80, ["http"], status="critical")]))
    text = render(HTTP, data, domain="d").text
    assert "upstream down" not in text
    assert "server_name down.d;" in text and "return 503;" in text


def test_without_a_domain_only_services_naming_their_hosts_are_routed():
    data = TemplateData(Catalog([], [instance("plain", 1, ["http"]),
                                     instance("named", 2, ["http"], meta={"hosts": "named.example.org"})]))
    text = render(HTTP, data).text
    assert "server_name named.example.org;" in text and "plain" not in text


def test_ipv6_instances_are_bracketed():
    data = TemplateData(Catalog([], [instance("six", 80, ["http"], address="fd00::1")]))
    assert "server [fd00::1]:80 max_fails=3" in render(HTTP, data, domain="d").text


def test_stream_upstream_and_listener_from_the_name_suffix():
    text = render(STREAM).text
    assert ("upstream tcpfront-9999 {\n    least_conn;\n"
            "    server 10.0.0.1:32771 max_fails=3 fail_timeout=30s weight=5;\n"
            "    server 192.168.7.2:32771 max_fails=3 fail_timeout=30s weight=5;\n}") in text
    assert "server {\n    listen 9999;\n    proxy_pass tcpfront-9999;\n}" in text
    assert "httpfront" not in text


def test_stream_listen_port_meta_wins_and_listen_address_applies():
    data = TemplateData(Catalog([], [instance("db-5432", 30000, ["tcp"], meta={"listen_port": "15432"})]))
    text = render(STREAM, data, listen_address="127.0.0.1").text
    assert "listen 127.0.0.1:15432;" in text


def test_stream_skips_services_without_a_port_and_port_collisions_with_warnings():
    from renderer.routes.builder import build
    from renderer.routes.model import RouteOptions
    catalog = Catalog([], [instance("noport", 1, ["tcp"]), instance("a-7000", 2, ["tcp"]),
                           instance("b", 3, ["tcp"], meta={"listen_port": "7000"})])
    rendered = render(STREAM, TemplateData(catalog))
    assert "upstream noport" not in rendered.text and "upstream b " not in rendered.text
    assert "listen 7000;" in rendered.text and rendered.text.count("listen 7000;") == 1
    refused = [str(r) for r in build(catalog, RouteOptions()).refused]
    assert any("noport" in r for r in refused) and any("port 7000/tcp is service a-7000's" in r
                                                       for r in refused)


def test_stream_service_without_passing_instances_gets_no_listener():
    data = TemplateData(Catalog([], [instance("x-7001", 1, ["tcp"], status="critical")]))
    text = render(STREAM, data).text
    assert "listen 7001" not in text and "upstream x-7001" not in text
