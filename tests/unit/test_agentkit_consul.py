import pytest

from agentkit.consul import ConsulAddress, resolve_address, resolve_token
from agentkit.errors import ConfigError


@pytest.mark.parametrize("text,expected", [
    ("127.0.0.1:8500", "http://127.0.0.1:8500"),
    ("http://consul:8500", "http://consul:8500"),
    ("https://consul.example.org:8501/", "https://consul.example.org:8501"),
    ("[::1]:8500", "http://[::1]:8500"),
])
def test_addresses(text, expected):
    assert str(ConsulAddress.parse(text)) == expected


@pytest.mark.parametrize("text", ["consul", "consul:", ":8500", "ftp://x:1", "x:99999", "a b:1"])
def test_bad_addresses_are_named(text):
    with pytest.raises(ConfigError, match="invalid Consul address"):
        ConsulAddress.parse(text)


def test_address_flag_beats_environment():
    assert str(resolve_address(None, {"CONSUL_HTTP_ADDR": "10.0.0.1:1"})) == "http://10.0.0.1:1"
    assert str(resolve_address("10.0.0.2:2", {"CONSUL_HTTP_ADDR": "10.0.0.1:1"})) == "http://10.0.0.2:2"


def test_token_order(tmp_path):
    token_file = tmp_path / "t"
    token_file.write_text("from-file\n")
    env = {"CONSUL_HTTP_TOKEN": "from-env", "CONSUL_HTTP_TOKEN_FILE": str(token_file)}
    assert resolve_token("flag", None, env) == "flag"
    assert resolve_token(None, str(token_file), {}) == "from-file"
    assert resolve_token(None, None, env) == "from-env"
    assert resolve_token(None, None, {"CONSUL_HTTP_TOKEN_FILE": str(token_file)}) == "from-file"
    assert resolve_token(None, None, {}) is None
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        resolve_token(None, str(tmp_path / "empty"), {})
