import pytest

from agentkit import nginx_safe


@pytest.mark.parametrize("name", ["web", "httpfront", "tcpfront-9999", "a.b_c-d", "x"])
def test_good_names_pass(name):
    assert nginx_safe.name_problem(name) is None


@pytest.mark.parametrize("name", ["", "-web", "web-", "we b", "web;", "web{", "w$eb", "web#1", "é", "a" * 200, 5, None,
                                  "web\n", "web\x00"])
def test_bad_names_are_named_in_the_problem(name):
    problem = nginx_safe.name_problem(name)
    assert problem and "name" in problem


@pytest.mark.parametrize("value", ["http", "v2", "weight=10", "a:b/c@d+e", "10m"])
def test_safe_values_pass(value):
    assert nginx_safe.value_problem("tag", value) is None


@pytest.mark.parametrize("value", ["a b", "a;b", "}", "{", "#", "'", '"', "$host", "a\\b", "a\tb", "\x7f", "\u2028",
                                   "x" * 513, 7])
def test_nginx_syntax_in_values_is_refused(value):
    assert nginx_safe.value_problem("tag", value)


@pytest.mark.parametrize("address", ["10.0.0.1", "::1", "fe80::1", "host.example.org", "node-1"])
def test_good_addresses_pass(address):
    assert nginx_safe.address_problem(address) is None


@pytest.mark.parametrize("address", ["", "10.0.0.1;", "a b", "x" * 300, "1.2.3.4:80", "$x", None])
def test_bad_addresses_fail(address):
    assert nginx_safe.address_problem(address)


@pytest.mark.parametrize("port,ok", [(1, True), (65535, True), (0, False), (70000, False), (-1, False),
                                     ("80", False), (True, False), (None, False)])
def test_ports(port, ok):
    assert (nginx_safe.port_problem(port) is None) is ok


@pytest.mark.parametrize("address,routable", [("10.0.0.1", True), ("::1", True), ("fe80::1", True),
                                              ("host.example.org", False), ("1e3", False), ("300.1.1.1", False),
                                              ("fe80::1%eth0", False)])
def test_only_ip_addresses_nginx_takes_are_routable(address, routable):
    assert (nginx_safe.routable_address_problem(address) is None) is routable
