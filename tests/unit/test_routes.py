"""The route table from plain catalogs: keys, defaults, disagreements, conflicts, refusals."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

from renderer.catalog.model import Catalog, Instance
from renderer.catalog.certificates import CertificateSet
from renderer.routes.builder import build
from renderer.routes.model import RouteOptions

OPTIONS = RouteOptions.from_variables({"domain": "example.org", "http_port": "80", "https_port": "443"})
CERTS = CertificateSet("/certs", MappingProxyType({
    "api.example.org.crt": (1, 10), "api.example.org.key": (1, 5),
    "_.example.org.crt": (2, 10), "_.example.org.key": (2, 5)}))


def instance(name, port, meta=None, tags=("http",), status="passing", node="n1", kind="", address="10.0.0.1"):
    return Instance(f"{name}-{port}", name, address, port, tuple(tags), MappingProxyType(meta or {}), node, status,
                    kind)


def table(*instances, options=OPTIONS, certificates=CERTS):
    return build(Catalog([], instances), options, certificates)


def host(routes, name):
    return next(h for h in routes.hosts if h.name == name)


def refusals(routes) -> list[str]:
    return [str(r) for r in routes.refused]


def test_a_service_without_keys_gets_its_default_host_and_root():
    routes = table(instance("web", 8080), instance("web", 8081, meta={"weight": "3"}))
    (web,) = routes.hosts
    assert web.name == "web.example.org" and not web.https and web.certificate is None
    (location,) = web.http
    assert (location.path, location.action, location.pool.name) == ("/", "proxy", "web")
    assert [(s.address, s.weight) for s in location.pool.servers] == [("10.0.0.1:8080", 1), ("10.0.0.1:8081", 3)]
    assert not routes.refused and not routes.notes


def test_hosts_paths_and_strip_path():
    routes = table(instance("api", 80, {"hosts": "api.example.org,API.example.net", "path": "/v1/,/v2",
                                        "strip_path": "true"}))
    assert [h.name for h in routes.hosts] == ["api.example.net", "api.example.org"]
    assert [(loc.path, loc.strip_path) for loc in host(routes, "api.example.org").http] == [("/v1", True),
                                                                                          ("/v2", True)]


def test_strip_path_on_the_root_strips_nothing_and_single_label_hosts_route():
    routes = table(instance("wiki", 80, {"hosts": "intranet,wiki.example.org", "path": "/,/docs", "strip_path": "true"}))
    assert not routes.refused
    assert [(loc.path, loc.strip_path) for loc in host(routes, "intranet").http] == [("/", False), ("/docs", True)]


def test_a_rate_limit_without_a_burst_takes_five_times_its_rate():
    def burst(meta):
        return host(table(instance("api", 9, meta)), "api.example.org").http[0].rate_burst
    assert burst({"rate_limit": "10r/s"}) == 50 and burst({"rate_limit": "1r/m"}) == 5
    assert burst({"rate_limit": "10r/s", "rate_burst": "0"}) == 0, "0 declared is strict"
    assert burst({}) == 0


def test_three_services_share_a_host_by_path():
    routes = table(*(instance(name, port, {"hosts": "shop.example.org", "path": path})
                     for name, port, path in (("front", 1, "/"), ("cart", 2, "/cart"), ("api", 3, "/api/v1"))))
    shop = host(routes, "shop.example.org")
    assert [(loc.path, loc.service) for loc in shop.http] == [("/", "front"), ("/api/v1", "api"), ("/cart", "cart")]


def test_one_host_and_path_goes_to_the_service_registered_first_and_the_other_is_named():
    older, newer = instance("zeta", 1, {"hosts": "x.example.org"}), instance("alpha", 2, {"hosts": "x.example.org"})
    routes = table(replace(older, created=10), replace(newer, created=20))
    assert [(loc.service) for loc in host(routes, "x.example.org").http] == ["zeta"], "not by its name's order"
    assert refusals(routes) == ["service alpha path='/': host x.example.org path / is routed to service zeta "
                                "(the host's owner, or the first registered); not routed there"]
    # Registered at the same index (or a catalog without indexes): the first by name.
    assert [loc.service for loc in host(table(older, newer), "x.example.org").http] == ["alpha"]


def test_a_service_may_not_take_another_services_default_name():
    routes = table(instance("web", 1), instance("aaa", 2, {"hosts": "web.example.org"}))
    assert [loc.service for loc in host(routes, "web.example.org").http] == ["web"]
    assert "service aaa hosts='web.example.org': host web.example.org is service web's default name" \
        in refusals(routes)[0]


def test_instances_that_disagree_route_with_the_majority_and_say_so():
    routes = table(instance("api", 1, {"path": "/v1"}), instance("api", 2, {"path": "/v1"}),
                   instance("api", 3, {"path": "/v2"}))
    assert [loc.path for loc in host(routes, "api.example.org").http] == ["/v1"]
    assert routes.notes == ("service api: instances disagree on path ('/v1' on 2, '/v2' on 1); routing with '/v1'",)


def test_a_bad_value_is_left_out_naming_instance_key_and_value():
    routes = table(instance("api", 1, {"path": "/v1"}), instance("api", 2, {"path": "/../etc"}))
    assert [loc.path for loc in host(routes, "api.example.org").http] == ["/v1"]
    assert refusals(routes) == ["service api instance api-2 path='/../etc': '/../etc' has an empty, '.' or '..' "
                                "segment"]


def test_a_key_no_instance_holds_validly_refuses_the_service():
    routes = table(instance("api", 1, {"timeout": "forever"}))
    assert not routes.hosts
    assert refusals(routes)[-1] == "service api: no instance has a valid timeout: its routes are not served"


def test_a_route_key_the_catalog_withheld_refuses_rather_than_opens():
    import dataclasses
    restricted = dataclasses.replace(instance("admin", 1), withheld=("allow",))  # allow="10.0.0.0/8 ; ..."
    routes = table(restricted)
    assert not routes.hosts, "an allow-list that could not be read must not become no allow-list"
    assert refusals(routes) == ["service admin instance admin-1 allow='(withheld)': its value is unsafe for nginx "
                                "and was withheld", "service admin: no instance has a valid allow: its routes are "
                                "not served"]
    # A withheld weight costs that instance only; other withheld meta is not a route key and changes nothing.
    routes = table(dataclasses.replace(instance("web", 1), withheld=("weight",)), instance("web", 2),
                   dataclasses.replace(instance("web", 3), withheld=("description",)))
    assert [s.address for s in host(routes, "web.example.org").http[0].pool.servers] == ["10.0.0.1:2", "10.0.0.1:3"]


def test_hostile_values_never_reach_the_table():
    for meta in ({"hosts": "a.example.org,*"}, {"path": "/v1.*"}, {"path": "v1"}, {"allow": "10.0.0.0/33"},
                 {"max_body": "10q"}, {"rate_limit": "10/s"}, {"auth": "http://evil"}, {"auth_headers": "X_Y"},
                 {"tls": "on"}, {"backend": "ftp"}, {"canary_percent": "150"}):
        routes = table(instance("api", 1, meta))
        assert not routes.hosts and refusals(routes), meta


def test_terminated_tls_gets_the_hosts_certificate_and_a_redirect():
    routes = table(instance("api", 1, {"tls": "terminate"}), instance("svc", 2, {"tls": "terminate"}))
    api = host(routes, "api.example.org")
    assert api.certificate.certificate == "/certs/api.example.org.crt" and api.https[0].action == "proxy"
    assert api.http[0].action == "redirect"
    assert host(routes, "svc.example.org").certificate.certificate == "/certs/_.example.org.crt", "wildcard"


def test_https_redirect_false_serves_both():
    routes = table(instance("api", 1, {"tls": "terminate", "https_redirect": "false"}))
    assert host(routes, "api.example.org").http[0].action == "proxy"


def test_a_missing_certificate_leaves_that_host_out_naming_the_files():
    routes = table(instance("api", 1, {"tls": "terminate", "hosts": "api.other.net"}))
    assert not routes.hosts
    assert refusals(routes) == ["service api tls='terminate': host api.other.net path /: no certificate "
                                "(/certs/api.other.net.crt not found; /certs/api.other.net.key not found; "
                                "/certs/_.other.net.crt not found; /certs/_.other.net.key not found); not routed"]


def test_passthrough_is_sni_only_and_refuses_what_it_cannot_enforce():
    routes = table(instance("svc9", 1, {"tls": "passthrough"}), instance("open", 2, {"tls": "passthrough",
                                                                                   "allow": "10.0.0.0/8"}))
    assert [(p.host, p.pool.name) for p in routes.passthrough] == [("svc9.example.org", "_sni_svc9")]
    assert not routes.hosts
    assert "allow cannot be applied" in refusals(routes)[0]


def test_passthrough_and_termination_of_one_host_do_not_mix():
    routes = table(instance("a", 1, {"tls": "passthrough", "hosts": "x.example.org"}),
                   instance("b", 2, {"tls": "terminate", "hosts": "x.example.org"}))
    assert [p.service for p in routes.passthrough] == ["a"] and not routes.hosts
    assert "service a holds its TLS (tls=passthrough" in refusals(routes)[0]


def test_plaintext_grpc_is_served_on_the_h2c_listener_only_when_there_is_one():
    routes = table(instance("rpc", 1, {"backend": "grpc"}))
    assert not routes.hosts and "plaintext gRPC, served on a listener of its own (--var h2c_port" in \
        refusals(routes)[0]
    options = RouteOptions.from_variables({"domain": "example.org", "h2c_port": "50051"})
    (rpc,) = table(instance("rpc", 1, {"backend": "grpc"}), options=options).hosts
    assert not rpc.http and not rpc.https and [loc.backend for loc in rpc.h2c] == ["grpc"]
    assert options.listen.problem(50051) == "port 50051 is nginx's own h2c_port"


def test_canary_pools():
    stable, canary = instance("shop", 1), instance("shop", 2, {"canary": "true", "canary_percent": "10"})
    routes = table(instance("shop", 1, {"canary_percent": "10"}), canary)
    (location,) = host(routes, "shop.example.org").http
    assert location.canary.name == "_canary_shop" and location.canary_percent == 10
    assert [s.instance for s in location.pool.servers] == ["shop-1"]
    only_canary = table(canary)
    assert host(only_canary, "shop.example.org").http[0].pool.name == "_canary_shop", "canaries take everyone"
    idle = table(stable, instance("shop", 2, {"canary": "true"}))
    dark = host(idle, "shop.example.org").http[0]
    assert dark.canary.name == "_canary_shop" and dark.canary_percent == 0, "X-Canary: always still reaches it"
    assert "canary instance(s) get no traffic while canary_percent is 0" in idle.notes[0]


def test_a_bad_weight_refuses_that_instance_only():
    routes = table(instance("web", 1, {"weight": "0"}), instance("web", 2))
    assert [s.instance for s in host(routes, "web.example.org").http[0].pool.servers] == ["web-2"]
    assert refusals(routes) == ["service web instance web-1 weight='0': is not a whole number from 1 to 100; "
                                "this instance is not routed"]


def test_auth_resolves_to_the_auth_services_passing_instances_or_closes():
    routes = table(instance("api", 1, {"auth": "service:jwt/verify", "auth_headers": "X-User"}),
                   instance("jwt", 9, tags=()))
    auth = host(routes, "api.example.org").http[0].auth
    assert (auth.service, auth.path, auth.headers, auth.pool.name) == ("jwt", "/verify", ("X-User",), "_auth_jwt")
    closed = table(instance("api", 1, {"auth": "service:jwt"}), instance("jwt", 9, tags=(), status="critical"))
    assert host(closed, "api.example.org").http[0].auth.pool is None


def test_no_passing_instance_answers_503():
    routes = table(instance("down", 1, status="critical"))
    assert host(routes, "down.example.org").http[0].action == "unavailable"


def test_stream_listeners():
    routes = table(instance("tcpfront-9999", 1, tags=("tcp",)), instance("dns", 2, {"listen_port": "5353"},
                                                                           tags=("tcp", "udp")),
                   instance("noport", 3, tags=("tcp",)), instance("ssh", 4, {"listen_port": "22"}, tags=("tcp",)),
                   instance("late-9999", 5, tags=("tcp",)), instance("web-8080", 6, {"listen_port": "80"},
                                                                      tags=("tcp",)))
    assert [(li.port, li.protocol, li.service) for li in routes.listeners] == [(5353, "udp", "dns"),
                                                                               (9999, "tcp", "late-9999")]
    text = "\n".join(refusals(routes))
    for expected in ("noport: tcp service without a listen_port", "port 22 is outside stream_ports",
                     "port 9999/tcp is service late-9999's", "port 80 is nginx's own http_port"):
        assert expected in text


def test_proxies_and_gateways_are_not_routes():
    routes = table(instance("web", 1), instance("web-sidecar-proxy", 21000, kind="connect-proxy"))
    assert [h.name for h in routes.hosts] == ["web.example.org"]


def test_without_a_domain_only_explicit_hosts_route():
    routes = table(instance("web", 1), instance("api", 2, {"hosts": "api.example.org"}),
                   options=RouteOptions.from_variables({}))
    assert [h.name for h in routes.hosts] == ["api.example.org"]
    assert "has no hosts meta and no domain is set" in refusals(routes)[0]


def test_a_builder_computes_again_only_the_services_whose_instances_changed(monkeypatch):
    import renderer.routes.builder as module
    web, api = instance("web", 1), instance("api", 2, {"path": "/x"})
    builder = module.RouteBuilder()
    first = builder.build(Catalog([], [web, api]), OPTIONS, CERTS)
    calls = []
    original = module.service_routes
    monkeypatch.setattr(module, "service_routes", lambda *args: calls.append(args[0]) or original(*args))
    second = builder.build(Catalog([], [web, instance("api", 2, {"path": "/y"})]), OPTIONS, CERTS)
    assert calls == ["api"] and first.hosts[1] is second.hosts[1]  # web's host: the same object
    assert second == build(Catalog([], [web, instance("api", 2, {"path": "/y"})]), OPTIONS, CERTS)


def test_what_one_builder_built_does_not_change_what_another_builds(monkeypatch):
    import renderer.routes.builder as module
    web = instance("web", 1)
    module.RouteBuilder().build(Catalog([], [web]), OPTIONS, CERTS)
    calls = []
    original = module.service_routes
    monkeypatch.setattr(module, "service_routes", lambda *args: calls.append(args[0]) or original(*args))
    module.RouteBuilder().build(Catalog([], [web]), OPTIONS, CERTS)
    assert calls == ["web"]


def test_explain_says_which_route_answers_and_why():
    from renderer.routes.report import explain, format_table
    routes = table(*(instance(name, port, meta) for name, port, meta in (
        ("front", 1, {"hosts": "shop.example.org"}), ("api", 2, {"hosts": "shop.example.org", "path": "/api",
                                                                 "strip_path": "true"}),
        ("sec", 3, {"hosts": "api.example.org", "tls": "terminate"}), ("nine", 4, {"tls": "passthrough"}),
        ("wild", 5, {"hosts": "*.apps.example.org"}))))
    said = {url: explain(routes, url) for url in (
        "http://shop.example.org/api/users", "http://shop.example.org/apiary", "http://shop.example.org/api",
        "http://api.example.org/x", "https://api.example.org/x", "https://nine.example.org/",
        "http://nobody.example.org/", "https://shop.example.org/", "http://x.apps.example.org/")}
    assert said["http://shop.example.org/api/users"].endswith(
        "longest matching prefix /api among /, /api -> service api: 10.0.0.1:2 w1 [strip_path]; the backend sees "
        "/users\n")
    assert "longest matching prefix / -> service front" in said["http://shop.example.org/apiary"]
    assert said["http://shop.example.org/api"].endswith("308 to /api/ (strip_path)\n")
    assert "308 to https://api.example.org/x" in said["http://api.example.org/x"]
    assert "service sec: 10.0.0.1:3 w1" in said["https://api.example.org/x"]
    assert "passed through by server name to service nine" in said["https://nine.example.org/"]
    assert "default server answers 404" in said["http://nobody.example.org/"]
    assert "has no HTTPS route: the TLS handshake is refused" in said["https://shop.example.org/"]
    assert "host *.apps.example.org (by its wildcard)" in said["http://x.apps.example.org/"]
    text = format_table(routes)
    assert "https  api.example.org" in text and "passthrough nine.example.org -> nine" in text


def test_a_refusal_is_reported_by_every_build_of_a_builder_not_only_the_first():
    from renderer.routes.builder import RouteBuilder
    # One host: a plain route, and a terminated one without a certificate (refused, named).
    front = instance("front", 1, {"hosts": "shop.other.org"})
    secure = instance("secure", 2, {"hosts": "shop.other.org", "path": "/pay", "tls": "terminate"})
    builder = RouteBuilder()
    first = builder.build(Catalog([], [front, secure]), OPTIONS, CERTS)
    second = builder.build(Catalog([], [front, secure]), OPTIONS, CERTS)
    assert [r for r in refusals(first) if "no certificate" in r]
    assert refusals(second) == refusals(first) and second == first


def test_a_listener_stays_with_its_service_when_another_claims_its_port_later():
    first = replace(instance("alpha-db", 1, {"listen_port": "7000"}, tags=("tcp",)), created=5)
    later = replace(instance("0a767", 2, {"listen_port": "7000"}, tags=("tcp",)), created=9)
    routes = table(first, later)
    assert [(li.port, li.service) for li in routes.listeners] == [(7000, "alpha-db")], "not by its name's order"
    assert "service 0a767 listen_port='7000': port 7000/tcp is service alpha-db's" in "\n".join(refusals(routes))
    # A name that ends in the port claims it before any age.
    named = replace(instance("cache-7000", 3, tags=("tcp",)), created=50)
    assert [li.service for li in table(first, later, named).listeners] == ["cache-7000"]


def test_listen_port_is_voted_and_one_bad_instance_costs_only_its_vote():
    good = [instance("db", port, {"listen_port": "7001"}, tags=("tcp",)) for port in (1, 2)]
    for bad in ("22", "99999", "abc", "²"):
        routes = table(*good, instance("db", 3, {"listen_port": bad}, tags=("tcp",)))
        assert [(li.port, li.service) for li in routes.listeners] == [(7001, "db")], bad
        assert f"instance db-3 listen_port={bad!r}" in "\n".join(refusals(routes)) or bad == "22", bad
    alone = table(instance("db", 1, {"listen_port": "²"}, tags=("tcp",)))
    assert alone.listeners == () and "listen_port='²': is not a whole number" in "\n".join(refusals(alone))


def test_names_that_differ_only_in_case_route_once_the_first_registered():
    routes = table(replace(instance("anchorhttp", 1), created=3), replace(instance("ANCHORHTTP", 2), created=1))
    assert [h.name for h in routes.hosts] == ["anchorhttp.example.org"] and routes.pools[0].name == "ANCHORHTTP"
    assert "service anchorhttp: its name differs from service ANCHORHTTP's only in case" in refusals(routes)[0]


def test_default_host_names_are_lower_case_and_owned_by_their_service():
    routes = table(instance("CASE1", 1), instance("other", 2, {"hosts": "case1.example.org"}))
    assert [h.name for h in routes.hosts] == ["case1.example.org"]
    assert [loc.service for loc in routes.hosts[0].http] == ["CASE1"]
    assert "host case1.example.org is service CASE1's default name" in refusals(routes)[0]


def test_a_host_name_longer_than_nginx_s_server_name_bucket_is_refused_alone():
    long = "a" * 40 + "." + "b" * 40 + ".example.org"  # 93 characters: over 46 (bucket 64), within 110 (128)
    catalog = Catalog([], [instance("long", 1, {"hosts": long}), instance("web", 2)])
    assert [h.name for h in build(catalog, OPTIONS, CERTS).hosts] == ["web.example.org"]
    assert f"host {long} is 93 characters: nginx's server names hold up to 46" in refusals(build(catalog, OPTIONS))[0]
    wider = RouteOptions.from_variables({"domain": "example.org", "server_names_hash_bucket_size": "128"})
    assert sorted(h.name for h in build(catalog, wider).hosts) == [long, "web.example.org"]


def test_a_passthrough_wildcard_never_takes_a_host_nginx_terminates():
    routes = table(instance("wild", 1, {"hosts": "*.example.org", "tls": "passthrough"}),
                   instance("anchortls", 2, {"tls": "terminate"}))
    assert [route.host for route in routes.passthrough] == ["*.example.org"]
    assert [host.name for host in routes.hosts if host.https] == ["anchortls.example.org"]
    assert routes.terminated_under_wildcards == ("anchortls.example.org",)


def test_the_canary_declares_its_share_and_stable_instances_need_no_canary_keys():
    stable = [instance("shop", port) for port in (1, 2, 3)]
    routes = table(*stable, instance("shop", 4, {"canary": "true", "canary_percent": "10"}))
    (location,) = host(routes, "shop.example.org").http
    assert location.canary_percent == 10 and not routes.notes, "no disagreement: only the canary carries it"
    assert dict(routes.sources)["shop"] == (("canary_percent", "label (canary instances)"),)
    # A value on stable instances counts only where no canary instance has one.
    both = table(*(instance("shop", p, {"canary_percent": "50"}) for p in (1, 2, 3)),
                 instance("shop", 4, {"canary": "true", "canary_percent": "20"}))
    assert host(both, "shop.example.org").http[0].canary_percent == 20
    stable_only = table(*(instance("shop", p, {"canary_percent": "30"}) for p in (1, 2)),
                        instance("shop", 4, {"canary": "true"}))
    assert host(stable_only, "shop.example.org").http[0].canary_percent == 30


KV_OPTIONS = RouteOptions.from_variables({"domain": "example.org", "kv_prefix": "consul-nginx-sync"})


def kv(**values):
    from renderer.catalog.kv import KvSnapshot
    return KvSnapshot(["consul-nginx-sync/"], {f"consul-nginx-sync/{path.replace('__', '/')}": value
                                              for path, value in values.items()})


def test_kv_overrides_beat_labels_which_beat_kv_defaults_which_beat_built_ins():
    from renderer.routes.builder import RouteBuilder
    catalog = Catalog([], [instance("shop", 1, {"max_body": "1m", "timeout": "30s"}), instance("api", 2)])
    settings = kv(routes__shop__max_body="5m", defaults__max_body="10m", defaults__timeout="9s")
    routes = RouteBuilder().build(catalog, KV_OPTIONS, CERTS, settings)
    shop, api = host(routes, "shop.example.org").http[0], host(routes, "api.example.org").http[0]
    assert (shop.max_body, shop.timeout) == ("5m", "30s") and (api.max_body, api.timeout) == ("10m", "9s")
    sources = dict(routes.sources)
    assert dict(sources["shop"]) == {"max_body": "KV override consul-nginx-sync/routes/shop/max_body",
                                     "timeout": "label"}
    assert dict(sources["api"])["max_body"] == "KV default consul-nginx-sync/defaults/max_body"


def test_a_bad_kv_value_is_refused_naming_its_path_and_the_value_in_force_before_stays():
    from renderer.routes.builder import RouteBuilder
    builder = RouteBuilder()
    catalog = Catalog([], [instance("shop", 1), instance("shop", 2, {"canary": "true", "canary_percent": "10"})])
    assert host(builder.build(catalog, KV_OPTIONS, CERTS, kv(routes__shop__canary_percent="50")),
                "shop.example.org").http[0].canary_percent == 50
    routes = builder.build(catalog, KV_OPTIONS, CERTS, kv(routes__shop__canary_percent="fifty"))
    assert host(routes, "shop.example.org").http[0].canary_percent == 50, "the value in force before"
    (refusal,) = routes.kv_refused
    assert str(refusal) == ("route setting consul-nginx-sync/routes/shop/canary_percent='fifty' refused: is not a "
                            "whole number from 0 to 100; keeping '50', in force before")
    fresh = build(catalog, KV_OPTIONS, CERTS, kv(routes__shop__canary_percent="fifty"))
    assert host(fresh, "shop.example.org").http[0].canary_percent == 10, "a renderer started since: the labels'"
    odd = build(catalog, KV_OPTIONS, CERTS, kv(routes__shop__weight="3", misc="x"))
    assert sorted(r.reason.split(" ")[0] for r in odd.kv_refused) == ["is", "weight"]


def test_maintenance_answers_for_the_service_and_leaves_its_instances_alone():
    routes = build(Catalog([], [instance("shop", 1)]), KV_OPTIONS, CERTS, kv(routes__shop__maintenance="true"))
    location = host(routes, "shop.example.org").http[0]
    assert location.action == "maintenance" and location.pool.servers and routes.pools == ()


def test_a_fleet_wide_rate_is_shared_among_the_live_renderers_unless_scoped_to_the_node():
    from renderer.routes.service import node_share
    assert [node_share("10r/s", n) for n in (1, 2, 3, 7)] == ["10r/s", "5r/s", "200r/m", "86r/m"]
    assert node_share("1r/m", 4) == "1r/m", "never 0"
    renderers = [replace(instance("consul-nginx-sync-renderer", p, tags=()), id=f"r{p}") for p in (1, 2)]
    limited = instance("api", 9, {"rate_limit": "10r/s", "rate_burst": "5"})
    location = host(table(limited, *renderers), "api.example.org").http[0]
    assert (location.rate_limit, location.rate_burst, location.rate_declared) == ("5r/s", 3, "10r/s")
    assert "rate_limit=10r/s for the fleet: 5r/s burst=3 on each of 2 nginx nodes" in location.options
    per_node = instance("api", 9, {"rate_limit": "10r/s", "rate_limit_scope": "node"})
    assert host(table(per_node, *renderers), "api.example.org").http[0].rate_limit == "10r/s"


def test_one_zone_holds_every_static_upstream_sized_in_powers_of_two():
    small = table(instance("web", 8080), instance("api", 9000, address="backend.internal"))
    assert small.upstream_zone_size() == "2m"  # 1 MiB + 1 KiB per pool and per server, rounded up
    assert small.upstream_zone_size(dynamic=True) == "2m", "a pool of host names stays static"
    assert table(instance("web", 8080)).upstream_zone_size(dynamic=True) is None, "the Lua balancer's pools need none"
    big = table(*[instance(f"s{n}", 1000 + i, address=f"10.0.{n // 250}.{n % 250 + 1}")
                  for n in range(1500) for i in range(3)])
    assert big.upstream_zone_size() == "8m"  # 1024 + 1500 * 4 KiB
    assert table().upstream_zone_size() is None
