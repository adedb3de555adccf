"""The renderer's settings, built once: defaults < TOML file < environment < flags.

The result is frozen and handed to constructors; SIGHUP builds a new one
from the same sources. TOML keys are the flags' names with underscores:

    consul_addr = "127.0.0.1:8500"
    consul_token_file = "/etc/renderer/consul-token"
    consul_cacert = "/etc/consul.d/ca.pem"          # and consul_client_cert, consul_client_key, ...
    consistency = "default"                          # or "stale"
    template = ["/etc/renderer/templates/x.conf.j2:/etc/nginx/conf.d/x.conf"]
    template_dir = ["/etc/renderer/templates/http:/etc/nginx/conf.d"]
    check_command = "nginx -t"
    reload_command = ""                              # "": SIGHUP to the master in nginx_pid_file
    nginx_pid_file = "/run/nginx.pid"
    nginx_error_log = "/var/log/nginx/error.log"
    reload_timeout = "30s"
    check_before_reload = false                      # true: nginx -t before every reload (nginx's reload validates)
    render_timeout = "10s"
    render_max_output = "64m"
    wait = "500ms:5s"
    grace = "30s"
    log_level = "info"
    log_format = "text"                              # or "json"
    status_address = "127.0.0.1:9465"                # /metrics, /health, /ready, the status page (renderer run)
    register = true                                  # with status_address: this renderer in Consul's catalog
    traffic_log = "/var/lib/renderer/traffic.log"    # with status_address: nginx's traffic counted ("": off)
    dynamic_peers = true                             # instance changes without a reload (nginx's Lua module)
    peers_dir = "/var/lib/renderer"                  # where the peer table and its Lua module are written
    kv_prefix = "consul-nginx-sync"                  # the operator's route settings in KV ("": none)
    acme_directory = "https://acme-v02.api.letsencrypt.org/directory"   # the fleet's certificates (off by default)
    acme_email = "ops@example.com"
    acme_ca_bundle = "/etc/renderer/acme-ca.pem"     # a private ACME server's CA
    cert_encryption_key = "/etc/renderer/cert.key"   # private keys sealed in KV (AES-256-GCM)
    [var]
    domain = "example.com"

Relative paths in the file are relative to the file. A list given by flags
replaces the file's list; ``--var`` flags override the file's keys one by one.
Every mistake is a :class:`ConfigError` whose message names the setting.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from agentkit import consul as consul_connection
from agentkit.consul import ConsulAddress, ConsulTLS
from agentkit.logs import FORMATS
from agentkit.status_server import parse_address

from .errors import ConfigError
from .quiescence import Wait
from .render.bounded import DEFAULT_MAX_OUTPUT, DEFAULT_TIMEOUT, Limits
from .render.loader import TemplateSpec, expand_dirs
from .routes.model import RouteOptions

DEFAULTS = {
    "check_command": "nginx -t",
    # None: the renderer sends SIGHUP to the master in nginx_pid_file itself (renderer.apply.nginx_master); with
    # nginx_pid_file "" it runs `nginx -s reload` (wiring.FALLBACK_RELOAD).
    "reload_command": "",
    "nginx_pid_file": "/run/nginx.pid",
    "nginx_error_log": "/var/log/nginx/error.log",
    "reload_timeout": "30s",
    "render_timeout": f"{DEFAULT_TIMEOUT:g}s",
    "render_max_output": str(DEFAULT_MAX_OUTPUT),
    "consistency": "default",
    "log_level": "info",
    "log_format": "text",
    "grace": "30s",
    "peers_dir": "/var/lib/renderer",
    "traffic_log": "/var/lib/renderer/traffic.log",
    "kv_prefix": "consul-nginx-sync",
    "cert_encryption_key": "",
}
STRING_KEYS = ("consul_addr", "consul_token", "consul_token_file", "consul_cacert", "consul_capath",
               "consul_client_cert", "consul_client_key", "consul_tls_server_name", "consistency",
               "check_command", "reload_command", "nginx_pid_file", "nginx_error_log", "reload_timeout",
               "render_timeout", "render_max_output", "wait", "log_level", "log_format", "grace", "status_address",
               "peers_dir", "kv_prefix", "traffic_log", "acme_directory", "acme_email", "acme_ca_bundle",
               "cert_encryption_key")
PATH_KEYS = ("consul_token_file", "consul_cacert", "consul_capath", "consul_client_cert", "consul_client_key",
             "nginx_pid_file", "nginx_error_log", "peers_dir", "acme_ca_bundle", "cert_encryption_key")
FILE_KEYS = {*STRING_KEYS, "consul_tls_skip_verify", "template", "template_dir", "var", "dynamic_peers", "register",
             "check_before_reload"}
PEERS_SOCKET = "nginx-renderer-peers.sock"
# The template variables the renderer itself reads (the route table's options, the certificate directory, the
# peer socket); any other variable is the templates' own.
RENDERER_VARIABLES = frozenset({"domain", "http_port", "https_port", "stream_ports", "cert_dir", "socket_dir",
                                "peers_socket", "server_names_hash_bucket_size", "trusted_proxies", "proxy_protocol", "h2c_port"})
CONSISTENCY_MODES = ("default", "stale")
_TLS_FILE_KEYS = {"consul_cacert": "CONSUL_CACERT", "consul_capath": "CONSUL_CAPATH",
                  "consul_client_cert": "CONSUL_CLIENT_CERT", "consul_client_key": "CONSUL_CLIENT_KEY",
                  "consul_tls_server_name": "CONSUL_TLS_SERVER_NAME"}
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)?$")
_SIZE = re.compile(r"^(\d+)([kmg]?)b?$", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class AcmeSettings:
    directory: str
    email: str | None
    ca_bundle: Path | None


@dataclasses.dataclass(frozen=True)
class Settings:
    consul_address: ConsulAddress
    consul_token: str | None = dataclasses.field(repr=False)
    consul_tls: ConsulTLS
    consistency: str
    templates: tuple[TemplateSpec, ...]
    template_dirs: tuple[tuple[Path, Path], ...]
    variables: Mapping[str, str]
    check_command: str
    reload_command: str
    nginx_pid_file: Path | None
    nginx_error_log: Path | None
    reload_timeout: float
    limits: Limits
    wait: Wait | None
    grace: float
    log_level: str
    config_file: Path | None
    log_format: str = "text"
    status_address: tuple[str, int] | None = None  # renderer run's status endpoint
    register: bool = True  # with a status address: this renderer registers itself in Consul (observe.registration)
    traffic_log: Path | None = None  # with a status address: where nginx logs its traffic for counting
    dynamic_peers: bool = False  # instance changes reach nginx's Lua balancer, not a reload (renderer.peers)
    check_before_reload: bool = False  # the check command before every reload, not only once one was refused
    peers_dir: Path | None = None
    peers_socket: Path | None = None
    acme: AcmeSettings | None = None  # the fleet's certificates, ordered by the renderer holding the lock
    cert_encryption_key: Path | None = None  # private keys in KV are sealed with it (renderer.certs)

    def template_specs(self) -> list[TemplateSpec]:
        """Explicit templates, then every *.j2 of the template directories, as of now.

        A template directory that is missing is an error (its outputs must not
        be removed as if it were empty), and so is one destination named twice.
        """
        specs = list(self.templates) + expand_dirs(self.template_dirs)
        seen: dict[Path, TemplateSpec] = {}
        for spec in specs:
            other = seen.setdefault(spec.destination, spec)
            if other is not spec:
                raise ConfigError(f"templates {other.source} and {spec.source} both render to {spec.destination}")
        return specs


def build(flags: Mapping, environ: Mapping[str, str] = os.environ) -> Settings:
    """``flags`` holds the CLI values; None (or an empty tuple) means "not given"."""
    config_file = Path(flags["config"]) if flags.get("config") else None
    file_values = load_file(config_file) if config_file else {}

    def pick(key: str):
        value = flags.get(key)
        return value if value not in (None, ()) else file_values.get(key)

    # Consul's own variables sit between the file and the flags.
    address = consul_connection.resolve_address(
        flags.get("consul_addr") or environ.get("CONSUL_HTTP_ADDR") or file_values.get("consul_addr"), environ)
    token = None
    for source in (flags, {"consul_token": environ.get("CONSUL_HTTP_TOKEN"),
                           "consul_token_file": environ.get("CONSUL_HTTP_TOKEN_FILE")}, file_values):
        if source.get("consul_token") or source.get("consul_token_file"):
            token = consul_connection.resolve_token(source.get("consul_token"), source.get("consul_token_file"), {})
            break
    tls = _tls(flags, file_values, environ, config_file)

    templates = tuple(TemplateSpec(*pair) for pair in (_pairs(flags.get("template"), "--template")
                                                       or file_values.get("template", ())))
    template_dirs = _pairs(flags.get("template_dir"), "--template-dir") or tuple(file_values.get("template_dir", ()))
    variables = dict(file_values.get("var", {}))
    variables.update(parse_variables(flags.get("var") or ()))
    dynamic = bool(flags.get("dynamic_peers") or file_values.get("dynamic_peers"))
    register = flags.get("register")
    register = file_values.get("register", True) if register is None else register
    peers_dir = Path(pick("peers_dir") or DEFAULTS["peers_dir"])
    peers_socket = None
    if dynamic:
        # What the default http template needs to render upstreams fed by the Lua balancer.
        peers_socket = Path(variables.get("peers_socket")
                            or Path(variables.get("socket_dir") or "/run") / PEERS_SOCKET)
        variables.update({"dynamic_peers": "true", "peers_dir": str(peers_dir), "peers_socket": str(peers_socket)})
    kv_prefix = pick("kv_prefix")
    kv_prefix = DEFAULTS["kv_prefix"] if kv_prefix is None else kv_prefix.strip().strip("/")
    if kv_prefix and not re.fullmatch(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*", kv_prefix):
        raise ConfigError(f"--kv-prefix {kv_prefix!r}: expected a KV path like consul-nginx-sync")
    variables["kv_prefix"] = kv_prefix  # where routes() reads the operator's route settings (routes.overrides)
    status_address = _status_address(pick("status_address"))
    traffic_log = _traffic_log(pick("traffic_log")) if status_address is not None else None
    if traffic_log is not None:
        variables["traffic_log"] = str(traffic_log)  # the default templates log each request there (observe.traffic)
    RouteOptions.from_variables(variables)  # stream_ports, http_port, https_port, ...: say now if they are wrong
    consistency = (pick("consistency") or DEFAULTS["consistency"]).lower()
    if consistency not in CONSISTENCY_MODES:
        raise ConfigError(f"--consistency {consistency!r}: expected default or stale")
    wait_text = pick("wait")
    pid_file, error_log = _optional_path(pick, "nginx_pid_file"), _optional_path(pick, "nginx_error_log")
    return Settings(
        consul_address=address, consul_token=token, consul_tls=tls, consistency=consistency,
        templates=templates, template_dirs=template_dirs, variables=MappingProxyType(variables),
        check_command=pick("check_command") or DEFAULTS["check_command"],
        reload_command=pick("reload_command") or DEFAULTS["reload_command"],
        nginx_pid_file=pid_file, nginx_error_log=error_log,
        reload_timeout=_positive(parse_duration(pick("reload_timeout") or DEFAULTS["reload_timeout"]),
                                 "--reload-timeout"),
        limits=Limits(timeout=_positive(parse_duration(pick("render_timeout") or DEFAULTS["render_timeout"]),
                                        "--render-timeout"),
                      max_output=parse_size(pick("render_max_output") or DEFAULTS["render_max_output"],
                                            "--render-max-output")),
        wait=parse_wait(wait_text) if wait_text else None,
        grace=parse_duration(pick("grace") or DEFAULTS["grace"]),
        log_level=(pick("log_level") or DEFAULTS["log_level"]).lower(),
        log_format=_log_format(pick("log_format")),
        status_address=status_address, register=bool(register), traffic_log=traffic_log,
        dynamic_peers=dynamic, peers_dir=peers_dir, peers_socket=peers_socket,
        check_before_reload=bool(flags.get("check_before_reload") or file_values.get("check_before_reload")),
        acme=_acme(pick, kv_prefix, variables), cert_encryption_key=_optional_path(pick, "cert_encryption_key"),
        config_file=config_file)


def _acme(pick, kv_prefix: str, variables: Mapping[str, str]) -> AcmeSettings | None:
    directory = str(pick("acme_directory") or "").strip()
    if not directory:
        return None
    if not re.fullmatch(r"https?://\S+", directory):
        raise ConfigError(f"--acme-directory {directory!r}: expected the ACME server's directory URL, like "
                          "https://acme-v02.api.letsencrypt.org/directory")
    if not kv_prefix:
        raise ConfigError("--acme-directory needs a --kv-prefix: the fleet keeps its certificates in KV")
    if not variables.get("cert_dir"):
        raise ConfigError("--acme-directory needs --var cert_dir=DIR: where each node's nginx reads certificates")
    bundle = pick("acme_ca_bundle")
    return AcmeSettings(directory, str(pick("acme_email") or "").strip() or None, Path(bundle) if bundle else None)


def _traffic_log(value) -> Path | None:
    text = DEFAULTS["traffic_log"] if value is None else str(value).strip()
    if not text:
        return None
    if not re.fullmatch(r"/[A-Za-z0-9_./-]+", text):
        raise ConfigError(f"--traffic-log {text!r}: expected an absolute path of letters, digits and ._-/ "
                          "(nginx's configuration names it)")
    return Path(text)


def _log_format(value) -> str:
    fmt = (value or DEFAULTS["log_format"]).lower()
    if fmt not in FORMATS:
        raise ConfigError(f"--log-format {value!r}: expected text or json")
    return fmt


def _status_address(value) -> tuple[str, int] | None:
    if not value:
        return None
    try:
        return parse_address(str(value))
    except ValueError as error:
        raise ConfigError(f"--status-address: {error}") from None


def _optional_path(pick, key: str) -> Path | None:
    """A path setting where "" means "none" (``nginx_pid_file = ""`` turns reload confirmation off)."""
    value = pick(key)
    value = DEFAULTS[key] if value is None else value
    return Path(value) if value else None


def _positive(seconds: float, what: str) -> float:
    if seconds <= 0:
        raise ConfigError(f"{what} must be more than 0")
    return seconds


def _tls(flags: Mapping, file_values: Mapping, environ: Mapping[str, str], config_file: Path | None) -> ConsulTLS:
    """Flags > CONSUL_* environment > the file, key by key, as for the address."""
    from_file = {variable: file_values[key] for key, variable in _TLS_FILE_KEYS.items() if file_values.get(key)}
    if "consul_tls_skip_verify" in file_values:
        from_file["CONSUL_HTTP_SSL_VERIFY"] = "false" if file_values["consul_tls_skip_verify"] else "true"
    layered = {**from_file, **{k: v for k, v in environ.items() if k.startswith("CONSUL_")}}
    given = {"ca_file": flags.get("consul_cacert"), "ca_path": flags.get("consul_capath"),
             "cert_file": flags.get("consul_client_cert"), "key_file": flags.get("consul_client_key"),
             "server_name": flags.get("consul_tls_server_name"), "skip_verify": flags.get("consul_tls_skip_verify")}
    return consul_connection.resolve_tls(given, layered)


def load_file(path: Path) -> dict:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path}: {error}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    unknown = sorted(set(data) - FILE_KEYS)
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting {unknown[0]!r}")
    base = path.parent
    for key in ("template", "template_dir"):
        if key in data:
            if not isinstance(data[key], list) or not all(isinstance(v, str) for v in data[key]):
                raise ConfigError(f"config file {path}: {key} must be a list of \"SRC:DEST\" strings")
            data[key] = tuple((_relative(base, s), _relative(base, d)) for s, d in _pairs(data[key], key))
    if "var" in data:
        if not isinstance(data["var"], dict):
            raise ConfigError(f"config file {path}: [var] must be a table")
        if not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in data["var"].values()):
            raise ConfigError(f"config file {path}: [var] values must be strings or numbers")
        data["var"] = parse_variables(f"{k}={v}" for k, v in data["var"].items())
    for key in STRING_KEYS:
        if key in data and not isinstance(data[key], str):
            raise ConfigError(f"config file {path}: {key} must be a string")
    for key in ("consul_tls_skip_verify", "dynamic_peers", "register"):
        if key in data and not isinstance(data[key], bool):
            raise ConfigError(f"config file {path}: {key} must be true or false")
    for key in PATH_KEYS:
        if data.get(key):
            data[key] = str(_relative(base, data[key]))
    return data


def _relative(base: Path, path) -> Path:
    path = Path(path)
    return path if path.is_absolute() else base / path


def _pairs(values, what: str) -> tuple[tuple[Path, Path], ...]:
    pairs = []
    for value in values or ():
        if isinstance(value, tuple):
            pairs.append(value)
            continue
        source, separator, destination = value.partition(":")
        if not separator or not source or not destination:
            raise ConfigError(f"{what} {value!r}: expected SRC:DEST")
        pairs.append((Path(source), Path(destination)))
    return tuple(pairs)


def parse_variables(items) -> dict[str, str]:
    variables = {}
    for item in items:
        key, separator, value = str(item).partition("=")
        if not separator or not _VARIABLE.fullmatch(key):
            raise ConfigError(f"--var {item!r}: expected KEY=VALUE with KEY a name like domain or http_port")
        variables[key] = value
    return variables


def parse_duration(text: str) -> float:
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise ConfigError(f"invalid duration {text!r}: expected e.g. 500ms, 2s, 1m or a number of seconds")
    number, unit = float(match[1]), match[2] or "s"
    return number * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]


def parse_size(text: str, what: str) -> int:
    """``64m``, ``512k``, ``1g`` or a number of bytes."""
    match = _SIZE.fullmatch(str(text).strip())
    if not match or int(match[1]) == 0:
        raise ConfigError(f"{what} {text!r}: expected a size like 64m, 512k or a number of bytes")
    return int(match[1]) << {"": 0, "k": 10, "m": 20, "g": 30}[match[2].lower()]


def parse_wait(text: str) -> Wait:
    """``MIN[:MAX]``; MAX defaults to 4 x MIN, as consul-template does."""
    low, _, high = text.partition(":")
    minimum = parse_duration(low)
    maximum = parse_duration(high) if high else 4 * minimum
    if maximum < minimum:
        raise ConfigError(f"--wait {text!r}: MAX is below MIN")
    return Wait(minimum, maximum)
