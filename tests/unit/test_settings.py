from pathlib import Path

import pytest

from agentkit.errors import ConfigError
from renderer.settings import build, parse_duration, parse_wait


def flags(**values):
    base = {"config": None, "consul_addr": None, "consul_token": None, "consul_token_file": None,
            "template": (), "template_dir": (), "var": (), "check_command": None, "reload_command": None,
            "wait": None, "log_level": None}
    base.update(values)
    return base


def test_defaults():
    settings = build(flags(), environ={})
    assert str(settings.consul_address) == "http://127.0.0.1:8500"
    assert settings.consul_token is None
    assert (settings.check_command, settings.reload_command) == ("nginx -t", "")  # "": SIGHUP to the master
    assert settings.wait is None and settings.log_level == "info"


def test_file_then_environment_then_flags(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("file-token\n")
    config = tmp_path / "renderer.toml"
    config.write_text('''
consul_addr = "10.0.0.1:8500"
consul_token_file = "token"
template = ["t/a.j2:out/a.conf"]
check_command = "true"
wait = "1s"
[var]
domain = "file.org"
http_port = 8080
''')
    settings = build(flags(config=str(config)), environ={})
    assert str(settings.consul_address) == "http://10.0.0.1:8500"
    assert settings.consul_token == "file-token"
    assert settings.templates[0].source == tmp_path / "t" / "a.j2"
    assert settings.variables == {"domain": "file.org", "http_port": "8080", "kv_prefix": "consul-nginx-sync"}
    assert settings.wait.min == 1 and settings.wait.max == 4 and settings.check_command == "true"

    env = {"CONSUL_HTTP_ADDR": "https://consul.internal:8501", "CONSUL_HTTP_TOKEN": "env-token"}
    settings = build(flags(config=str(config)), environ=env)
    assert str(settings.consul_address) == "https://consul.internal:8501" and settings.consul_token == "env-token"

    settings = build(flags(config=str(config), consul_addr="127.0.0.1:1", consul_token="flag-token",
                           template=("x.j2:y.conf",), var=("domain=flag.org",)), environ=env)
    assert str(settings.consul_address) == "http://127.0.0.1:1" and settings.consul_token == "flag-token"
    assert [s.source for s in settings.templates] == [Path("x.j2")]
    assert settings.variables == {"domain": "flag.org", "http_port": "8080", "kv_prefix": "consul-nginx-sync"}


def test_token_never_in_repr():
    assert "s3cret" not in repr(build(flags(consul_token="s3cret"), environ={}))


@pytest.mark.parametrize("bad,expected", [
    ({"consul_addr": "nohost"}, "invalid Consul address 'nohost'"),
    ({"template": ("no-colon",)}, "--template 'no-colon': expected SRC:DEST"),
    ({"var": ("1x=2",)}, "--var '1x=2'"),
    ({"wait": "5s:1s"}, "MAX is below MIN"),
    ({"wait": "soon"}, "invalid duration 'soon'"),
    ({"consul_token_file": "/nonexistent/token"}, "cannot read Consul token file /nonexistent/token"),
])
def test_bad_settings_name_the_culprit(bad, expected):
    with pytest.raises(ConfigError) as error:
        build(flags(**bad), environ={})
    assert expected in str(error.value)


def test_unknown_file_setting_is_named(tmp_path):
    config = tmp_path / "r.toml"
    config.write_text('tempalte = ["a:b"]\n')
    with pytest.raises(ConfigError, match="unknown setting 'tempalte'"):
        build(flags(config=str(config)), environ={})


def test_two_templates_for_one_destination_are_refused():
    settings = build(flags(template=("a.j2:out.conf", "b.j2:out.conf")), environ={})
    with pytest.raises(ConfigError, match="both render to out.conf"):
        settings.template_specs()


def test_durations():
    assert parse_duration("250ms") == 0.25 and parse_duration("2") == 2 and parse_duration("1m") == 60
    wait = parse_wait("100ms:2s")
    assert (wait.min, wait.max) == (0.1, 2)


def test_the_example_config_sets_only_what_the_renderer_and_its_default_templates_read():
    """examples/renderer.toml is what the README tells operators to copy: a key nothing reads is a trap."""
    import jinja2
    import jinja2.meta

    from renderer.settings import RENDERER_VARIABLES, load_file
    root = Path(__file__).resolve().parents[2]
    example = load_file(root / "examples" / "renderer.toml")  # unknown top-level settings are refused here
    environment = jinja2.Environment()
    read = set(RENDERER_VARIABLES)
    for template in (root / "templates").glob("*/*.j2"):
        read |= jinja2.meta.find_undeclared_variables(environment.parse(template.read_text()))
    assert example["var"] and set(example["var"]) <= read, sorted(set(example["var"]) - read)
    settings = build({"config": str(root / "examples" / "renderer.toml")}, environ={"CONSUL_HTTP_TOKEN": "x"})
    assert settings.variables["https_port"] == "443"


def test_the_kv_prefix_is_a_kv_path_or_nothing():
    assert build(flags(kv_prefix="/ops/routing/"), environ={}).variables["kv_prefix"] == "ops/routing"
    assert build(flags(kv_prefix=""), environ={}).variables["kv_prefix"] == ""
    with pytest.raises(ConfigError, match=r"--kv-prefix 'a b'"):
        build(flags(kv_prefix="a b"), environ={})


def test_traffic_is_counted_with_a_status_address_unless_turned_off():
    assert build(flags(), environ={}).traffic_log is None, "no status address: nothing to show it on"
    on = build(flags(status_address="127.0.0.1:9465"), environ={})
    assert str(on.traffic_log) == on.variables["traffic_log"] == "/var/lib/renderer/traffic.log"
    off = build(flags(status_address="127.0.0.1:9465", traffic_log=""), environ={})
    assert off.traffic_log is None and "traffic_log" not in off.variables
    with pytest.raises(ConfigError, match="--traffic-log 'logs/t.log'"):
        build(flags(status_address="127.0.0.1:9465", traffic_log="logs/t.log"), environ={})
