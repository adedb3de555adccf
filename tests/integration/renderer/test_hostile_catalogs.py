"""Generated hostile catalogs through the route table and the default templates, checked by a real `nginx -t`.

Each example is a catalog of working services (registered first) and
registrations an attacker with ``service:write`` could make: odd names and
case twins, addresses nginx cannot take, host names over nginx's bucket,
ports and hosts others hold, bad route values. Whatever the mix, nginx
must accept both rendered files, and every working service must be in
them: one bad registration costs one service, never the file or another's
route.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from renderer.catalog.certificates import scan
from renderer.catalog.model import Catalog, from_snapshot
from renderer.render.api import TemplateData
from renderer.render.loader import TemplateLoader
from tests.support import require
from tests.support.nginx_server import MAIN_CONFIG, STREAM_MODULE

ROOT = Path(__file__).resolve().parents[3]
DOMAIN = "prop.test"
ANCHORS = [  # (name, tags, meta): what must always be served
    ("anchorhttp", ["http"], {}),
    ("anchorpath", ["http"], {"hosts": f"store.{DOMAIN}", "path": "/api"}),
    ("anchortls", ["http"], {"tls": "terminate"}),
    ("anchortcp", ["tcp"], {"listen_port": "7101"}),
]
# Not the anchors' own names: an instance registered under a service's name is one of its instances, outvoted
# by the others (docs/routes.md); a name differing only in case is another service.
NAMES = st.sampled_from(["ANCHORHTTP", "AnchorTcp", "Anchortls", "renderer_closed", "_sni_x", "web", "Web", "api",
                         "tcpfront-7101", "x" * 100, "a.b", "shop", "store", "case1", "CASE1", "0a767", "evil"])
ADDRESSES = st.sampled_from(["10.0.0.5", "10.0.0.6", "::1", "fe80::1%eth0", "nonexistent.invalid", "1e3",
                             "300.1.1.1", "host.example.org", "10.0.0.5:80", ""])
HOSTS = st.sampled_from([f"shop.{DOMAIN}", f"store.{DOMAIN}", f"anchorhttp.{DOMAIN}", f"*.{DOMAIN}", f"case1.{DOMAIN}",
                         ".".join(["a" * 60] * 3) + f".{DOMAIN}", "intranet", f"ANCHORTLS.{DOMAIN}",
                         f"x.{DOMAIN},y.{DOMAIN}", "bad host", "*.*.x"])
META_VALUES = {
    "hosts": HOSTS,
    "path": st.sampled_from(["/", "/api", "/api/", "/a/../b", "/x{", "api", "/v1,/v2"]),
    "tls": st.sampled_from(["terminate", "passthrough", "TERMINATE", "maybe"]),
    "listen_port": st.sampled_from(["7101", "7102", "22", "80", "99999", "abc", "²", "0", "７１０１"]),
    "weight": st.sampled_from(["1", "100", "0", "101", "x", "²"]),
    "canary": st.sampled_from(["true", "false", "maybe"]),
    "canary_percent": st.sampled_from(["0", "50", "100", "101", "-1"]),
    "allow": st.sampled_from(["10.0.0.0/8", "fe80::1%eth0", "300.0.0.0/8", "10.0.0.1,::1/128"]),
    "rate_limit": st.sampled_from(["10r/s", "0r/s", "10r/h", "999999r/s"]),
    "timeout": st.sampled_from(["60s", "0", "5m", "1x"]),
    "max_body": st.sampled_from(["10m", "1g", "999999g", "-1"]),
    "backend": st.sampled_from(["http", "https", "grpc", "ftp"]),
    "strip_path": st.sampled_from(["true", "false", "perhaps"]),
}
HOSTILE = st.fixed_dictionaries({
    "name": NAMES, "address": ADDRESSES, "port": st.integers(1, 65535),
    "tags": st.lists(st.sampled_from(["http", "tcp", "udp", "x"]), max_size=3, unique=True),
    "meta": st.dictionaries(st.sampled_from(sorted(META_VALUES)), st.just(None), max_size=4),
}).flatmap(lambda raw: st.fixed_dictionaries({key: META_VALUES[key] for key in raw["meta"]}).map(
    lambda meta: {**raw, "meta": meta}))


@pytest.fixture(scope="module")
def nginx_prefix(tmp_path_factory, certificate_authority):
    binary = require.binary("nginx")
    if not STREAM_MODULE.exists():
        require.unavailable(f"nginx stream module ({STREAM_MODULE})")
    prefix = tmp_path_factory.mktemp("hostile-nginx")
    for sub in ("conf.d", "stream.d", "logs", "tmp"):
        (prefix / sub).mkdir()
    (prefix / "nginx.conf").write_text(MAIN_CONFIG.format(stream_module=STREAM_MODULE, lua_modules="",
                                                          prefix=prefix, http_port=18080))
    certificate_authority.issue(f"*.{DOMAIN}")
    return binary, prefix, certificate_authority.cert_dir


def catalog_of(hostile: list[dict]) -> Catalog:
    instances = [{"id": f"{name}-1", "name": name, "address": "10.0.0.1", "port": 9000 + n, "tags": tags,
                  "meta": meta, "node": "n1", "created": 1 + n} for n, (name, tags, meta) in enumerate(ANCHORS)]
    instances += [{"id": f"hostile-{n}", "node": "n1", "created": 100 + n, **raw} for n, raw in enumerate(hostile)]
    return from_snapshot({"nodes": [{"name": "n1", "address": "10.0.0.1"}], "instances": instances})


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hostile=st.lists(HOSTILE, max_size=8))
def test_no_hostile_mix_makes_nginx_refuse_a_file_or_costs_a_working_service(nginx_prefix, hostile):
    binary, prefix, cert_dir = nginx_prefix
    variables = {"domain": DOMAIN, "http_port": "18080", "https_port": "18443", "cert_dir": str(cert_dir),
                 "socket_dir": str(prefix), "stream_ports": "7000-7999", "listen_address": "127.0.0.1"}
    data = TemplateData(catalog_of(hostile), certificates=scan(str(cert_dir)))
    loader = TemplateLoader(variables)
    rendered = {}
    for kind in ("http", "stream"):
        result = loader.render(ROOT / "templates" / kind / "services.conf.j2", data)
        assert result.error is None, result.error
        rendered[kind] = result.text
        (prefix / f"{kind}.d" if kind == "stream" else prefix / "conf.d").joinpath("services.conf").write_text(
            result.text)
    check = subprocess.run([binary, "-t", "-q", "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    http, stream = rendered["http"], rendered["stream"]
    assert f"server_name anchorhttp.{DOMAIN};" in http and "proxy_pass http://anchorhttp;" in http
    if not any(raw["name"] == "store" for raw in hostile):  # NAME.DOMAIN is NAME's: documented, and named
        assert f"server_name store.{DOMAIN};" in http and "location /api/" in http
    assert f"server_name anchortls.{DOMAIN};" in http and "ssl_certificate" in http
    if not any(raw["name"] == "tcpfront-7101" for raw in hostile):  # NAME-PORT claims PORT: documented, named
        assert "listen 127.0.0.1:7101;" in stream and "proxy_pass anchortcp;" in stream


def test_the_property_is_not_vacuous(nginx_prefix):
    """The same check refuses what the renderer refuses to write: a hostile value put in by hand."""
    binary, prefix, _ = nginx_prefix
    (prefix / "conf.d" / "services.conf").write_text("upstream x { server nonexistent.invalid:80; }\n")
    (prefix / "stream.d" / "services.conf").write_text("")
    check = subprocess.run([binary, "-t", "-q", "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
                           capture_output=True, text=True)
    assert check.returncode != 0 and "host not found in upstream" in check.stderr
