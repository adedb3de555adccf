"""The gateway keys from plain catalogs: what each may hold, how they combine, what people are shown."""

from __future__ import annotations

import pytest

from renderer.routes import values
from renderer.routes.model import DEFAULT_RETRIES, Cors
from tests.unit.test_routes import host, instance, refusals, table


def location(meta):
    return host(table(instance("api", 1, meta)), "api.example.org").http[0]


def test_hostile_or_malformed_gateway_values_refuse_the_route_naming_the_value():
    for meta in ({"cors_origins": "javascript:alert(1)"}, {"cors_origins": "*,https://a.example.org"},
                 {"cors_max_age": "-1"}, {"methods": "GET,P0ST"}, {"request_headers": "X-A"},
                 {"request_headers": "Host:evil.example.org"}, {"request_headers": "X_A:1"},
                 {"response_headers": "X-A:a,b"}, {"retries": "11"}, {"retry_on": "500"},
                 {"connect_timeout": "0s"}, {"match_header": "X-A"}, {"match_header": "X-A:1,X-B:2"},
                 {"mirror": "shadow"}):
        routes = table(instance("api", 1, meta))
        (key, value), = meta.items()
        assert not routes.hosts and any(f"{key}={value!r}" in line for line in refusals(routes)), meta


def test_parsers_normalise_what_they_accept():
    assert values.origins("https://App.example.org/, http://localhost:3000") == (
        "https://app.example.org", "http://localhost:3000")
    assert values.methods("post,get") == ("GET", "HEAD", "POST"), "GET brings HEAD"
    assert values.header_pairs("X-B:2,x-a:1,X-C:") == (("x-a", "1"), ("X-B", "2"), ("X-C", ""))
    assert values.retry_on("502,error") == ("error", "502")
    with pytest.raises(ValueError, match="set by the renderer"):
        values.request_headers("X-Forwarded-For:1.2.3.4")


def test_cors_takes_its_defaults_and_always_allows_the_preflight_method():
    cors = location({"cors_origins": "https://app.example.org", "cors_methods": "PUT"}).cors
    assert cors == Cors(("https://app.example.org",), ("OPTIONS", "PUT"), cors.headers, False, 7200)
    assert "Content-Type" in cors.headers


def test_any_origin_with_credentials_keeps_the_route_without_cors():
    routes = table(instance("api", 1, {"cors_origins": "*", "cors_credentials": "true"}))
    (api,) = routes.hosts
    assert api.http[0].cors is None and api.http[0].action == "proxy"
    assert refusals(routes) == ["service api cors_origins='*': browsers never send credentials to any origin "
                                "('*'): name the origins; no cross-origin request is answered until then"]


def test_cors_details_without_origins_are_noted_not_applied():
    routes = table(instance("api", 1, {"cors_methods": "GET", "cors_credentials": "true"}))
    assert routes.hosts[0].http[0].cors is None
    assert routes.notes == ("service api: cors_methods, cors_credentials without cors_origins answers no "
                            "cross-origin request",)


def test_retries_default_to_a_bound_and_a_location_says_only_its_own():
    assert location({}).retries == DEFAULT_RETRIES and location({}).plain
    assert not location({}).retry_policy
    off = location({"retries": "0"})
    assert off.retry_policy and not off.plain and "retries=0" in off.options
    on = location({"retry_on": "502", "connect_timeout": "2"})
    assert on.retry_on == ("502",) and on.connect_timeout == "2s"
    assert on.options == (f"retries={DEFAULT_RETRIES} on 502", "connect_timeout=2s")


def test_gateway_keys_are_shown_for_renderer_routes():
    shown = location({"cors_origins": "https://a.example.org", "cors_credentials": "true", "methods": "GET",
                      "request_headers": "X-Env:prod", "response_headers": "Server:"}).options
    assert shown == ("cors=https://a.example.org with credentials", "methods=GET,HEAD",
                     "request_headers=X-Env:prod", "response_headers=Server:")


def test_passthrough_cannot_honour_gateway_keys():
    routes = table(instance("api", 1, {"tls": "passthrough", "cors_origins": "*"}))
    assert not routes.passthrough and any("cors_origins cannot be applied" in line for line in refusals(routes))


def test_trusted_proxies_are_networks_or_one_line_naming_the_variable():
    from renderer.errors import ConfigError
    from renderer.routes.model import RouteOptions
    options = RouteOptions.from_variables({"trusted_proxies": "10.0.0.0/24, 10.0.1.5"})
    assert options.trusted_proxies == ("10.0.0.0/24", "10.0.1.5/32")
    assert table(instance("api", 1), options=options).trusted_proxies == options.trusted_proxies
    with pytest.raises(ConfigError, match=r"--var trusted_proxies='10.0.0.0/33': '10.0.0.0/33' is not an IP"):
        RouteOptions.from_variables({"trusted_proxies": "10.0.0.0/33"})


def test_a_mirror_takes_its_targets_passing_instances_as_a_pool_of_its_own():
    shop = instance("shop", 1, {"mirror": "service:shadow", "mirror_percent": "10"})
    shadow = instance("shadow", 2, tags=())
    routes = table(shop, shadow)
    mirror = host(routes, "shop.example.org").http[0].mirror
    assert (mirror.service, mirror.percent, mirror.pool.name) == ("shadow", 10, "_mirror_shadow")
    assert [p.name for p in routes.pools] == ["_mirror_shadow", "shop"] and routes.mirrored
    alone = table(shop)
    assert not alone.mirrored and "mirror=10% to service:shadow (no passing instance: nothing mirrored)" in \
        host(alone, "shop.example.org").http[0].options
    assert not table(instance("shop", 1, {"mirror": "service:shadow", "mirror_percent": "0"}), shadow).mirrored


def test_a_mirror_to_itself_or_a_share_without_a_mirror_is_noted():
    assert table(instance("shop", 1, {"mirror": "service:shop"})).notes == (
        "service shop: mirror=service:shop would copy every request to itself: not mirrored",)
    assert table(instance("shop", 1, {"mirror_percent": "5"})).notes == (
        "service shop: mirror_percent without mirror mirrors nothing",)
    assert "mirror='http://x'" in refusals(table(instance("shop", 1, {"mirror": "http://x"})))[0]


def test_header_routes_share_a_host_and_path_and_conflict_only_on_the_same_header_value():
    routes = table(instance("v1", 1, {"hosts": "api.example.org"}),
                   instance("v2", 2, {"hosts": "api.example.org", "match_header": "X-Version:2"}),
                   instance("v2b", 3, {"hosts": "api.example.org", "match_header": "x-version:2"}),
                   instance("v3", 4, {"hosts": "api.example.org", "match_header": "X-Version:3"}))
    api = host(routes, "api.example.org")
    assert [(loc.service, loc.match) for loc in api.http] == [
        ("v1", None), ("v2", ("X-Version", "2")), ("v3", ("X-Version", "3"))]
    assert len({loc.id for loc in api.http}) == 3
    assert refusals(routes) == ["service v2b path='/': host api.example.org path / with x-version: 2 is routed to "
                                "service v2 (the host's owner, or the first registered); not routed there"]


def test_renderer_routes_url_names_the_header_routes():
    from renderer.routes.report import explain
    routes = table(instance("v1", 1, {"hosts": "api.example.org"}),
                   instance("v2", 2, {"hosts": "api.example.org", "match_header": "X-Version:2"}),
                   instance("beta", 3, {"hosts": "api.example.org", "path": "/beta", "match_header": "X-Beta:1"}))
    assert explain(routes, "http://api.example.org/x").endswith(
        "-> service v1: 10.0.0.1:1 w1; with X-Version: 2 -> service v2\n")
    assert explain(routes, "http://api.example.org/beta/x") == (
        "http://api.example.org/beta/x: host api.example.org: only requests with a header have a route for /beta/x;"
        " with X-Beta: 1 -> service beta; others 404\n")


def test_the_proxy_protocol_needs_trusted_proxies():
    from renderer.errors import ConfigError
    from renderer.routes.model import RouteOptions
    with pytest.raises(ConfigError, match="proxy_protocol=true needs --var trusted_proxies"):
        RouteOptions.from_variables({"proxy_protocol": "true"})
    with pytest.raises(ConfigError, match="--var proxy_protocol='maybe': expected true or false"):
        RouteOptions.from_variables({"proxy_protocol": "maybe", "trusted_proxies": "10.0.0.1"})
    assert RouteOptions.from_variables({"proxy_protocol": "on", "trusted_proxies": "10.0.0.1"}).proxy_protocol
