"""Container -> wanted Consul services, by registrator's conventions (pure).

Input is the dict Docker's ``GET /containers/{id}/json`` (``inspect``)
returns; output is the services one container should have, plus one warning
per setting that had to be refused. No Docker, no Consul, no clock.

Conventions (issue 3), and the choices this module makes where registrator
left a gap:

* Settings come from ``SERVICE_*`` environment variables and labels; a label
  beats an environment variable, a per-port key (``SERVICE_<port>_<KEY>``)
  beats the generic one for that port. ``<port>`` is the exposed port number
  and matches every protocol on it (``SERVICE_53_NAME`` names 53/tcp and
  53/udp). Keys are case-sensitive on ``SERVICE_`` and lower-cased after it.
* Candidate ports: every published port; with ``--internal`` every exposed
  port; for a host-network container every exposed port (its published port
  is its exposed port). One candidate -> one service named ``NAME``; several
  -> ``NAME-<exposed port>`` unless a per-port name is given.
* Default name: the image's base name without registry, tag or digest.
* ID: ``<hostname>:<container name>:<exposed port>``, plus ``:udp`` (and for
  any non-TCP protocol ``:<proto>``); those ports also get that protocol as a
  tag. A generic ``SERVICE_ID`` on a container with several candidate ports
  gets ``-<port>`` (and ``-<proto>`` for non-TCP) appended, so the IDs stay
  distinct; a per-port ``SERVICE_<port>_ID`` is used as given.
* Address: ``--ip``, else the binding's host IP when it is specific (not
  ``0.0.0.0`` / ``::``), else the host's address. When Docker publishes one
  port on both IPv4 and IPv6, the first IPv4 binding is used. With
  ``--internal``: the container's IP on the alphabetically first network
  (by network name) that gave it an IPv4 address, and the exposed port
  (``--ip`` does not apply).
  Host-network containers always register the host address (or ``--ip``).
* Checks: each of ``SERVICE_CHECK_HTTP``, ``_HTTPS``, ``_TCP``, ``_TTL`` and
  ``_SCRIPT`` that is set adds its own check (registrator kept only the first
  by that priority; several checks are a superset). ``_INTERVAL`` (default
  10s), ``_TIMEOUT``, ``_INITIAL_STATUS`` and ``_DEREGISTER_AFTER`` apply to
  all of them. A false-looking value (false/no/off/0) adds no check; a
  true-looking HTTP/HTTPS value means path ``/``. HTTPS checks skip TLS
  verification because they dial an IP address that no certificate names.
  ``_SCRIPT`` runs ``/bin/sh -c`` on the Consul agent's host, with
  ``$SERVICE_IP`` / ``$SERVICE_PORT`` substituted; the agent only accepts it
  with ``enable_script_checks``; an agent without it refuses that one
  service, with a warning. ``SERVICE_IGNORE`` with a false-looking value
  does not ignore. ``_DEREGISTER_AFTER`` lets Consul reap a long-critical
  service, but while its container runs the registrar wants it and
  registers it again (level-triggered): it bounds staleness after a crash of
  the whole host, it does not hide a sick container.
* A container with a Docker HEALTHCHECK gets one more check, a TTL check
  ``<service id>:docker-health`` whose status the registrar keeps equal to the
  container's health (healthy -> passing; starting and unhealthy -> critical,
  so a container that has not proven itself takes no traffic).
* Meta: every other ``SERVICE_<KEY>`` and ``SERVICE_META_<KEY>`` becomes meta
  ``<key>`` (lower-cased; ``SERVICE_META_X`` wins over ``SERVICE_X``). Keys
  Consul refuses, and keys starting with ``registrar-`` (our ownership
  marks), are skipped with a warning; the service is still registered.
* Invalid values skip the one service (not the container, not the agent),
  with a warning naming container, label or env var, and value: names that
  are not DNS labels, tags or meta values with whitespace, ``;``, ``{``,
  ``}`` or control characters (they would reach nginx configs), per-port
  keys whose port is not a number, durations Go would not parse.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re

from .model import (HEALTH_CHECK_SUFFIX, HEALTH_TTL, MARK_CONTAINER, MARK_HOST, RESERVED_META_PREFIX, Check,
                    Service)

DEFAULT_CHECK_INTERVAL = "10s"
CHECK_KINDS = ("http", "https", "tcp", "ttl", "script")
CHECK_OPTIONS = ("interval", "timeout", "initial_status", "deregister_after")
RESERVED_KEYS = ("name", "tags", "id", "ignore")

_DNS_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_SERVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,254}$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_META_KEY = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
# Whitespace, nginx/consul-template syntax and control characters (C0, DEL, C1).
_UNSAFE = re.compile(r"[\s;{}\x00-\x1f\x7f-\x9f]")
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+$")
_PATH = re.compile(r"^/[^\s\x00-\x1f\x7f-\x9f]*$")
META_VALUE_MAX = 512
FALSE = ("false", "no", "off", "0")
TRUE = ("true", "yes", "on", "1")
INITIAL_STATUSES = ("passing", "warning", "critical")
HEALTH_STATUS = {"healthy": "passing", "starting": "critical", "unhealthy": "critical"}


@dataclasses.dataclass(frozen=True)
class MappingSettings:
    hostname: str
    host_address: str
    ip: str | None = None
    internal: bool = False
    explicit: bool = False
    tags: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Setting:
    """One SERVICE_* value and where it came from, for warnings."""

    value: str
    key: str
    origin: str  # "label" or "env"

    def cite(self) -> str:
        return f"{self.origin} {self.key}={show(self.value)}"


@dataclasses.dataclass(frozen=True)
class Mapping:
    services: tuple[Service, ...]
    warnings: tuple[str, ...]


class Refused(Exception):
    """A setting that makes one service invalid; the text is the warning."""


def show(value: str, limit: int = 80) -> str:
    """A value quoted for a log line: control characters escaped, length capped."""
    text = repr(value[:limit])
    return text + "..." if len(value) > limit else text


def container_name(info: dict) -> str:
    return (info.get("Name") or "").lstrip("/") or info.get("Id", "")[:12]


def is_running(info: dict) -> bool:
    return bool((info.get("State") or {}).get("Running"))


def services_for(info: dict, settings: MappingSettings) -> Mapping:
    """The services one running container should have, and the warnings."""
    name = container_name(info)
    short_id = info.get("Id", "")[:12]
    who = f"container {name} ({short_id})"
    warnings: list[str] = []
    generic, per_port, problems = collect_settings(info)
    warnings += [f"{who}: {problem}" for problem in problems]

    candidates = candidate_ports(info, settings)
    group = len(candidates) > 1
    health = docker_health(info)
    services: list[Service] = []
    for port_key, binding in candidates:
        exposed, proto = port_key
        merged = dict(generic)
        from_port = per_port.get(exposed, {})
        merged.update(from_port)
        try:
            service = _service(info, settings, name, short_id, exposed, proto, binding, merged,
                               set(from_port), group, health, warnings, who)
        except Refused as refusal:
            warnings.append(f"{who}: port {exposed}/{proto} skipped: {refusal}")
            continue
        if service is not None:
            services.append(service)
    return Mapping(tuple(services), tuple(dict.fromkeys(warnings)))


def collect_settings(info: dict) -> tuple[dict[str, Setting], dict[str, dict[str, Setting]], list[str]]:
    """SERVICE_* from env then labels (labels win), split into generic and per-port."""
    config = info.get("Config") or {}
    pairs: list[tuple[str, str, str]] = []
    for entry in config.get("Env") or []:
        key, sep, value = entry.partition("=")
        if sep:
            pairs.append((key, value, "env"))
    for key, value in (config.get("Labels") or {}).items():
        pairs.append((key, value if isinstance(value, str) else str(value), "label"))

    generic: dict[str, Setting] = {}
    per_port: dict[str, dict[str, Setting]] = {}
    problems: list[str] = []
    for key, value, origin in pairs:
        if not key.startswith("SERVICE_"):
            continue
        setting = Setting(value, key, origin)
        rest = key[len("SERVICE_"):].lower()
        head, _, tail = rest.partition("_")
        if not rest:
            problems.append(f"{setting.cite()} ignored: no key after SERVICE_")
        elif head[:1].isdigit() and tail:
            if not head.isdigit() or not 0 < int(head) < 65536:
                problems.append(f"{setting.cite()} ignored: port {show(head)} is not a number between 1 and 65535")
                continue
            per_port.setdefault(str(int(head)), {})[tail] = setting
        else:
            generic[rest] = setting
    return generic, per_port, problems


def candidate_ports(info: dict, settings: MappingSettings) -> list[tuple[tuple[str, str], dict | None]]:
    """[((exposed port, proto), chosen host binding or None)], sorted by port then proto."""
    config = info.get("Config") or {}
    network = info.get("NetworkSettings") or {}
    result: dict[tuple[str, str], dict | None] = {}
    if host_network(info):
        for key in config.get("ExposedPorts") or {}:
            port, proto = _split_port(key)
            result[(port, proto)] = {"HostIp": "", "HostPort": port}
    else:
        for key, bindings in (network.get("Ports") or {}).items():
            port, proto = _split_port(key)
            binding = _choose_binding(bindings)
            if binding is None and not settings.internal:
                continue  # not published: registrator ignores it unless --internal
            result[(port, proto)] = binding
    return sorted(result.items(), key=lambda item: (int(item[0][0]) if item[0][0].isdigit() else 0, item[0]))


def host_network(info: dict) -> bool:
    return (info.get("HostConfig") or {}).get("NetworkMode") == "host"


def internal_address(info: dict) -> str | None:
    """The container's IPv4 address on the alphabetically first network that has one."""
    networks = (info.get("NetworkSettings") or {}).get("Networks") or {}
    for network_name in sorted(networks):
        address = (networks[network_name] or {}).get("IPAddress")
        if address:
            return address
    return (info.get("NetworkSettings") or {}).get("IPAddress") or None


def docker_health(info: dict) -> tuple[str, str] | None:
    """(Consul status, output) mirroring the container's HEALTHCHECK, or None without one."""
    health = (info.get("State") or {}).get("Health")
    if not health or not health.get("Status"):
        return None
    status = health["Status"]
    if not is_running(info):
        return "critical", f"container is not running (docker health {status})"
    output = f"docker health: {status}"
    if health.get("FailingStreak"):
        output += f", failing streak {health['FailingStreak']}"
    return HEALTH_STATUS.get(status, "critical"), output


def default_name(image: str) -> str:
    """``registry:5000/team/web:1.2@sha256:...`` -> ``web``."""
    base = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return base.split(":", 1)[0]


def _split_port(key: str) -> tuple[str, str]:
    port, _, proto = key.partition("/")
    return port, (proto or "tcp").lower()


def _choose_binding(bindings) -> dict | None:
    usable = [b for b in bindings or [] if b and b.get("HostPort")]
    ipv4 = [b for b in usable if ":" not in (b.get("HostIp") or "")]
    return (ipv4 or usable or [None])[0]


def _service(info, settings: MappingSettings, name, short_id, exposed, proto, binding, merged: dict[str, Setting],
             from_port: set[str], group: bool, health, warnings: list[str], who: str) -> Service | None:
    if not exposed.isdigit() or not 0 < int(exposed) < 65536:
        raise Refused(f"exposed port {show(exposed)} is not a number")
    ignore = merged.get("ignore")
    if ignore is not None and ignore.value.strip().lower() not in FALSE:
        return None
    if settings.explicit and "name" not in merged:
        return None

    # Name.
    if "name" in merged:
        service_name = merged["name"].value
        _require(_DNS_LABEL.match(service_name), merged["name"], "is not a valid DNS label")
    else:
        service_name = default_name((info.get("Config") or {}).get("Image") or "")
        if not _DNS_LABEL.match(service_name):
            raise Refused(f"image base name {show(service_name)} is not a valid DNS label; set SERVICE_NAME")
    if group and "name" not in from_port:
        service_name = f"{service_name}-{exposed}"
        if not _DNS_LABEL.match(service_name):
            raise Refused(f"name {show(service_name)} is not a valid DNS label")

    # ID.
    if "id" in merged:
        service_id = merged["id"].value
        if group and "id" not in from_port:
            service_id += f"-{exposed}" + (f"-{proto}" if proto != "tcp" else "")
        _require(_SERVICE_ID.match(service_id), merged["id"],
                 "is not a valid service ID (letters, digits and _ . : @ - only)")
    else:
        service_id = f"{settings.hostname}:{name}:{exposed}" + (f":{proto}" if proto != "tcp" else "")

    # Address and port.
    if host_network(info):
        address, port = settings.ip or settings.host_address, int(exposed)
    elif settings.internal:
        address, port = internal_address(info), int(exposed)
        if not address:
            raise Refused("--internal: the container has no IP address on any network")
    else:
        host_ip = (binding.get("HostIp") or "").strip()
        specific = host_ip and not _unspecified(host_ip)
        address = settings.ip or (host_ip if specific else settings.host_address)
        if not str(binding.get("HostPort", "")).isdigit():
            raise Refused(f"published port {show(str(binding.get('HostPort')))} is not a number")
        port = int(binding["HostPort"])

    # Tags.
    tags: list[str] = []
    if "tags" in merged:
        for tag in merged["tags"].value.split(","):
            tag = tag.strip()
            if tag:
                _require(not _UNSAFE.search(tag), merged["tags"],
                         f"tag {show(tag)} contains whitespace, ';', '{{', '}}' or a control character")
                tags.append(tag)
    tags += settings.tags
    if proto != "tcp":
        tags.append(proto)
    tags = list(dict.fromkeys(tags))

    # Meta.
    chosen: dict[str, Setting] = {}
    for key, setting in sorted(merged.items(), key=lambda item: (item[0].startswith("meta_"), item[0])):
        if key in RESERVED_KEYS or key.startswith("check_"):
            continue
        chosen[key[len("meta_"):] if key.startswith("meta_") else key] = setting  # SERVICE_META_X wins
    meta: dict[str, str] = {}
    for meta_key, setting in sorted(chosen.items()):
        if not _META_KEY.match(meta_key) or meta_key.startswith("consul-") \
                or meta_key.startswith(RESERVED_META_PREFIX):
            warnings.append(f"{who}: {setting.cite()} not used as meta: key {show(meta_key)} is not allowed "
                            "(letters, digits, _ and - only, at most 128, not consul-* or registrar-*)")
            continue
        _require(not _UNSAFE.search(setting.value), setting,
                 "contains whitespace, ';', '{', '}' or a control character")
        _require(len(setting.value) <= META_VALUE_MAX, setting, f"is longer than {META_VALUE_MAX} characters")
        meta[meta_key] = setting.value
    for unknown in sorted(k for k in merged if k.startswith("check_")
                          and k[len("check_"):] not in CHECK_KINDS + CHECK_OPTIONS):
        warnings.append(f"{who}: {merged[unknown].cite()} ignored: not a supported check setting")
    meta[MARK_HOST] = settings.hostname
    meta[MARK_CONTAINER] = short_id

    checks = _checks(merged, service_id, address, port)
    if health is not None:
        checks.append(Check(id=f"{service_id}:{HEALTH_CHECK_SUFFIX}", name="Docker HEALTHCHECK",
                            ttl=HEALTH_TTL, status=health[0], docker_health=True))
    return Service(id=service_id, name=service_name, address=address, port=port, tags=tuple(tags),
                   meta=tuple(sorted(meta.items())), checks=tuple(checks),
                   container_id=short_id, container_name=name)


def _checks(merged: dict[str, Setting], service_id: str, address: str, port: int) -> list[Check]:
    def duration(option: str) -> str | None:
        setting = merged.get(f"check_{option}")
        if setting is None or not setting.value.strip():
            return None
        _require(_DURATION.match(setting.value.strip()), setting, "is not a duration (e.g. 10s, 1m30s, 500ms)")
        return setting.value.strip()

    interval = duration("interval") or DEFAULT_CHECK_INTERVAL
    timeout = duration("timeout")
    deregister_after = duration("deregister_after")
    status = None
    if (setting := merged.get("check_initial_status")) is not None and setting.value.strip():
        status = setting.value.strip().lower()
        _require(status in INITIAL_STATUSES, setting, "is not one of passing, warning, critical")

    target = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    common = {"status": status, "deregister_after": deregister_after}
    checks: list[Check] = []
    for kind in ("http", "https"):
        setting = merged.get(f"check_{kind}")
        if setting is None or not setting.value.strip() or setting.value.strip().lower() in FALSE:
            continue
        path = "/" if setting.value.strip().lower() in TRUE else setting.value.strip()
        _require(_PATH.match(path), setting, "is not a URL path starting with /")
        checks.append(Check(id=f"{service_id}:{kind}", name=f"{kind.upper()} GET {path}",
                            http=f"{kind}://{target}{path}", interval=interval, timeout=timeout,
                            tls_skip_verify=kind == "https", **common))
    setting = merged.get("check_tcp")
    if setting is not None and setting.value.strip() and setting.value.strip().lower() not in FALSE:
        checks.append(Check(id=f"{service_id}:tcp", name=f"TCP {target}", tcp=target, interval=interval,
                            timeout=timeout, **common))
    setting = merged.get("check_ttl")
    if setting is not None and setting.value.strip() and setting.value.strip().lower() not in FALSE:
        _require(_DURATION.match(setting.value.strip()), setting, "is not a duration (e.g. 30s)")
        checks.append(Check(id=f"{service_id}:ttl", name="TTL", ttl=setting.value.strip(), **common))
    setting = merged.get("check_script")
    if setting is not None and setting.value.strip() and setting.value.strip().lower() not in FALSE:
        _require(not re.search(r"[\x00-\x1f\x7f-\x9f]", setting.value), setting, "contains a control character")
        script = setting.value.replace("$SERVICE_IP", address).replace("$SERVICE_PORT", str(port))
        checks.append(Check(id=f"{service_id}:script", name="script", args=("/bin/sh", "-c", script),
                            interval=interval, timeout=timeout, **common))
    return checks


def _require(condition, setting: Setting, problem: str) -> None:
    if not condition:
        raise Refused(f"{setting.cite()} {problem}")


def _unspecified(host_ip: str) -> bool:
    try:
        return ipaddress.ip_address(host_ip).is_unspecified
    except ValueError:
        return False


def valid_hostname(name: str) -> bool:
    return bool(_HOSTNAME.match(name))


def valid_tag(tag: str) -> bool:
    return bool(tag) and not _UNSAFE.search(tag)
