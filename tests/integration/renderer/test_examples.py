"""Each example under examples/ does what it says, on real nginx."""

import shutil
import subprocess
from pathlib import Path


from renderer.settings import build

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples"


def test_node_nginx_conf_is_valid_nginx():
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    result = subprocess.run([nginx, "-t", "-q", "-c", str(EXAMPLES / "nginx.conf")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_node_renderer_toml_is_a_complete_config(tmp_path):
    token = tmp_path / "consul-token"
    token.write_text("example-token\n")
    config = tmp_path / "renderer.toml"
    config.write_text((EXAMPLES / "renderer.toml").read_text().replace("/etc/renderer/consul-token", str(token)))
    settings = build({"config": str(config)}, environ={})
    assert settings.consul_token == "example-token"
    assert [str(d) for _, d in settings.template_dirs] == ["/etc/nginx/conf.d", "/etc/nginx/stream.d"]
    assert settings.variables["domain"] == "example.org" and settings.wait.min == 0.2 and settings.grace == 30
    assert settings.check_command == "nginx -t -q"
    assert str(settings.nginx_pid_file) == "/run/nginx.pid" and settings.variables["stream_ports"] == "1024-65535"
