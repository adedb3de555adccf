"""The registrar's settings, built once from the command line into a frozen value."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import socket

from agentkit.consul import ConsulAddress, ConsulTLS, resolve_address, resolve_tls, resolve_token
from agentkit.errors import ConfigError
from agentkit.logs import FORMATS
from agentkit.status_server import parse_address

from .desired import DEREGISTER_POLICIES
from .labels import valid_hostname
from .tag_template import Template, TemplateSyntaxError

DEFAULT_DOCKER_URL = "unix:///var/run/docker.sock"
DEFAULT_RESYNC = 60.0
DEFAULT_RETRY_INTERVAL_MS = 2000
_HOSTISH = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?$")


@dataclasses.dataclass(frozen=True)
class Config:
    consul_address: ConsulAddress
    consul_token: str | None = dataclasses.field(default=None, repr=False)  # never printed
    consul_tls: ConsulTLS = ConsulTLS()
    docker_url: str = DEFAULT_DOCKER_URL
    ip: str | None = None
    internal: bool = False
    explicit: bool = False
    tags: Template | None = None  # --tags, a registrator-style Go template (plain text is a plain list)
    use_ip_from_label: str | None = None
    drain: bool = True  # take a container's services out of routing at its stop signal (registrar.stopping)
    log_format: str = "text"
    status_address: tuple[str, int] | None = None
    resync: float = DEFAULT_RESYNC
    cleanup: bool = False
    deregister: str = "always"
    hostname: str = "localhost"
    retry_attempts: int = 0
    retry_interval: float = DEFAULT_RETRY_INTERVAL_MS / 1000
    log_level: str = "info"


def build(*, consul_addr=None, consul_token=None, consul_token_file=None, consul_cacert=None, consul_capath=None,
          consul_client_cert=None, consul_client_key=None, consul_tls_server_name=None,
          consul_tls_skip_verify=None, docker_url=None, ip=None,
          internal=False, explicit=False, tags=None, resync=None, cleanup=False, deregister=None,
          hostname=None, retry_attempts=None, retry_interval=None, log_level=None, use_ip_from_label=None,
          drain=None, log_format=None, status_address=None, environ=os.environ) -> Config:
    """Flags > environment > defaults; every problem is a ConfigError naming the flag."""
    address = resolve_address(consul_addr, environ)
    token = resolve_token(consul_token, consul_token_file, environ)
    tls = resolve_tls({"ca_file": consul_cacert, "ca_path": consul_capath, "cert_file": consul_client_cert,
                       "key_file": consul_client_key, "server_name": consul_tls_server_name,
                       "skip_verify": consul_tls_skip_verify}, environ)
    if ip is not None:
        ip = ip.strip()
        if not _is_ip_or_host(ip):
            raise ConfigError(f"--ip {ip!r} is not an IP address or host name")
    forced = None
    if tags and tags.strip():
        try:
            forced = Template(tags)
        except TemplateSyntaxError as error:
            raise ConfigError(f"--tags {tags!r}: {error}") from None
    if use_ip_from_label is not None and not use_ip_from_label.strip():
        raise ConfigError("--use-ip-from-label needs a label name")
    log_format = (log_format or "text").lower()
    if log_format not in FORMATS:
        raise ConfigError("--log-format must be text or json")
    status = None
    if status_address:
        try:
            status = parse_address(status_address)
        except ValueError as error:
            raise ConfigError(f"--status-address: {error}") from None
    drain = (drain or "on").lower()
    if drain not in ("on", "off"):
        raise ConfigError("--drain must be on or off")
    resync = DEFAULT_RESYNC if resync is None else float(resync)
    if resync < 0:
        raise ConfigError("--resync must be 0 (off) or a positive number of seconds")
    deregister = deregister or "always"
    if deregister not in DEREGISTER_POLICIES:
        raise ConfigError(f"--deregister must be one of {', '.join(DEREGISTER_POLICIES)}")
    hostname = hostname if hostname is not None else socket.gethostname()
    if not valid_hostname(hostname):
        raise ConfigError(f"--hostname {hostname!r} is not a valid name (letters, digits, _ . - only)")
    retry_attempts = 0 if retry_attempts is None else int(retry_attempts)
    if retry_attempts < -1:
        raise ConfigError("--retry-attempts must be -1 (forever) or at least 0")
    retry_interval = DEFAULT_RETRY_INTERVAL_MS if retry_interval is None else int(retry_interval)
    if retry_interval < 0:
        raise ConfigError("--retry-interval must be a number of milliseconds, at least 0")
    return Config(consul_address=address, consul_token=token, consul_tls=tls,
                  docker_url=docker_url or environ.get("DOCKER_HOST") or DEFAULT_DOCKER_URL,
                  ip=ip or None, internal=internal, explicit=explicit, tags=forced, resync=resync,
                  cleanup=cleanup, deregister=deregister, hostname=hostname, retry_attempts=retry_attempts,
                  retry_interval=retry_interval / 1000, log_level=(log_level or "info").lower(),
                  use_ip_from_label=use_ip_from_label.strip() if use_ip_from_label else None,
                  drain=drain == "on", log_format=log_format, status_address=status)


def _is_ip_or_host(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return bool(_HOSTISH.match(text))
