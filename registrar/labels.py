"""Container -> wanted Consul services, by registrator's conventions (pure).

Input is the dict Docker's ``GET /containers/{id}/json`` (``inspect``)
returns; output is the services one container should have, plus one warning
per setting that had to be dropped or that nginx will not see. No Docker,
no Consul, no clock.

Conventions, as registrator has them (docs/registrar.md has the table of
the few deliberate differences), and the choices made where it left a gap:

* Settings come from ``SERVICE_*`` environment variables and labels; a label
  beats an environment variable, a per-port key (``SERVICE_<port>_<KEY>``)
  beats the generic one for that port. ``<port>`` is the exposed port number
  and matches every protocol on it (``SERVICE_53_NAME`` names 53/tcp and
  53/udp). Keys are case-sensitive on ``SERVICE_`` and lower-cased after it.
* Candidate ports: every published port; with ``--internal`` every exposed
  port; for a host-network container every exposed port (its published port
  is its exposed port). One candidate -> one service named ``NAME``; several
  -> ``NAME-<exposed port>`` unless a per-port name is given.
* Name: ``SERVICE_NAME``, else the image's base name without registry, tag or
  digest. Letters, digits, ``-``, ``_`` and ``.`` (what nginx and Consul can
  both carry, ``agentkit.nginx_safe``); a name Consul's DNS interface will
  not resolve (``_``, ``.``) is registered with a warning.
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
  (``--ip`` does not apply). Host-network containers always register the
  host address (or ``--ip``). ``--use-ip-from-label LABEL`` (registrator's
  ``-useIpFromLabel``) takes the address from that container label when it
  has one (``10.0.0.5/24`` registers ``10.0.0.5``).
* Tags: ``SERVICE_TAGS``, then ``--tags`` (a registrator-style Go template,
  ``registrar.tag_template``, evaluated per container), comma-separated with
  ``\\,`` for a comma inside a tag.
* Meta: every ``SERVICE_<KEY>`` other than NAME, TAGS, ID and IGNORE becomes
  meta ``<key>`` lower-cased, exactly as registrator writes it: the
  ``check_*`` settings too, and ``SERVICE_META_FOO`` as ``meta_foo``.
* Checks, in registrator's order of precedence: ``SERVICE_CHECK_HTTP``,
  ``_HTTPS``, ``_CMD``, ``_SCRIPT``, ``_TTL``, ``_TCP``, ``_GRPC``. The first
  one set is Consul's ``service:<service id>``, the ID registrator's single
  inline check gets, so an app heartbeating its TTL check at
  ``/v1/agent/check/pass/service:<id>`` keeps working; each further kind set
  adds ``service:<id>:<kind>`` (registrator kept only the first; several
  checks are a superset). ``_INTERVAL`` (default 10s), ``_TIMEOUT``,
  ``_INITIAL_STATUS`` and ``_DEREGISTER_AFTER`` apply to all of them;
  ``_HTTP_METHOD`` / ``_HTTPS_METHOD`` set the method, ``_GRPC_USE_TLS`` and
  ``_TLS_SKIP_VERIFY`` the gRPC check's TLS. A false-looking value
  (false/no/off/0) adds no check; a true-looking HTTP/HTTPS value means path
  ``/``, a gRPC value other than true-looking names the gRPC service to ask.
  HTTPS checks skip TLS verification because they dial an IP address that no
  certificate names. ``_SCRIPT`` runs ``/bin/sh -c`` on the Consul agent's
  host, with ``$SERVICE_IP`` / ``$SERVICE_PORT`` substituted; ``_CMD`` is a
  Consul Docker check: ``/bin/sh -c CMD`` run inside the container (the
  agent needs ``enable_script_checks`` and access to Docker; without the
  first it refuses the service, and the registrar says which setting is
  missing). ``SERVICE_IGNORE`` with a false-looking value does not ignore.
  ``_DEREGISTER_AFTER`` lets Consul reap a long-critical service, but while
  its container runs the registrar wants it and registers it again
  (level-triggered): it bounds staleness after a crash of the whole host, it
  does not hide a sick container.
* A container with a Docker HEALTHCHECK gets one more check, a TTL check
  ``service:<service id>:docker-health`` whose status the registrar keeps
  equal to the container's health (healthy -> passing; starting and
  unhealthy -> critical, so a container that has not proven itself takes no
  traffic).

Failures are per key, not per service. A meta pair Consul would refuse (a key
outside letters, digits, ``_`` and ``-``, ``consul-*``, our own
``registrar-*``, a value over 512 characters, more than 64 pairs) is dropped
with a warning naming container, key and value, and the service registers.
A tag or meta value nginx must not see (``agentkit.nginx_safe``) is
registered, with a warning that the renderer will withhold it. Only what
leaves no usable service skips it: an unusable name, ID or port, or a check
setting that does not parse (a check Consul would refuse, or a service left
without the health check its owner asked for).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re

from agentkit import nginx_safe

from .model import (HEALTH_CHECK_SUFFIX, HEALTH_TTL, MARK_CONTAINER, MARK_HOST, RESERVED_META_PREFIX, Check,
                    Service, check_id)
from .tag_template import Template, TemplateRunError

DEFAULT_CHECK_INTERVAL = "10s"
CHECK_KINDS = ("http", "https", "cmd", "script", "ttl", "tcp", "grpc")  # registrator's precedence
CHECK_OPTIONS = ("interval", "timeout", "initial_status", "deregister_after", "http_method", "https_method",
                 "grpc_use_tls", "tls_skip_verify")
NOT_META = ("name", "tags", "id", "ignore")

_SERVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,254}$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_CONSUL_META_KEY = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+$")
_PATH = re.compile(r"^/[^\s\x00-\x1f\x7f-\x9f]*$")
_METHOD = re.compile(r"^[A-Za-z]{1,20}$")
_GRPC_SERVICE = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
META_VALUE_MAX = 512   # Consul's limits on service meta
META_PAIRS_MAX = 64
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
    tags: Template | None = None  # --tags: a template evaluated per container
    ip_label: str | None = None   # --use-ip-from-label: the address comes from this container label


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


class SettingRefused(Exception):
    """A setting that leaves no usable service; the text is the warning."""


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
    forced = forced_tags(info, settings.tags, who, warnings)

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
                               set(from_port), group, health, forced, warnings, who)
        except SettingRefused as refusal:
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


def split_tags(text: str) -> list[str]:
    """Comma-separated tags, ``\\,`` being a comma inside a tag (registrator's rule); blanks dropped."""
    tags, current, escaped = [], [], False
    for char in text:
        if escaped:
            current.append(char if char == "," else "\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            tags.append("".join(current))
            current = []
        else:
            current.append(char)
    if escaped:
        current.append("\\")
    tags.append("".join(current))
    return [tag.strip() for tag in tags if tag.strip()]


def forced_tags(info: dict, template: Template | None, who: str, warnings: list[str]) -> list[str]:
    """``--tags`` for this container; a template that fails on it costs it those tags, with a warning."""
    if template is None:
        return []
    try:
        return split_tags(template.render(info))
    except TemplateRunError as error:
        warnings.append(f"{who}: --tags {show(template.source)} failed on it ({error}); registered without them")
        return []


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
             from_port: set[str], group: bool, health, forced: list[str], warnings: list[str],
             who: str) -> Service | None:
    if not exposed.isdigit() or not 0 < int(exposed) < 65536:
        raise SettingRefused(f"exposed port {show(exposed)} is not a number")
    ignore = merged.get("ignore")
    if ignore is not None and ignore.value.strip().lower() not in FALSE:
        return None
    if settings.explicit and "name" not in merged:
        return None

    # Name.
    if "name" in merged:
        service_name = merged["name"].value
        _require(not nginx_safe.name_problem(service_name), merged["name"],
                 "is not a valid service name (letters, digits, '-', '_' and '.', starting and ending with a "
                 "letter or digit)")
    else:
        service_name = default_name((info.get("Config") or {}).get("Image") or "")
        if nginx_safe.name_problem(service_name):
            raise SettingRefused(f"image base name {show(service_name)} is not a valid service name; set SERVICE_NAME")
    if group and "name" not in from_port:
        service_name = f"{service_name}-{exposed}"
        if nginx_safe.name_problem(service_name):
            raise SettingRefused(f"name {show(service_name)} is not a valid service name")
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
            raise SettingRefused("--internal: the container has no IP address on any network")
    else:
        host_ip = (binding.get("HostIp") or "").strip()
        specific = host_ip and not _unspecified(host_ip)
        address = settings.ip or (host_ip if specific else settings.host_address)
        if not str(binding.get("HostPort", "")).isdigit():
            raise SettingRefused(f"published port {show(str(binding.get('HostPort')))} is not a number")
        port = int(binding["HostPort"])
    address = _address_from_label(info, settings.ip_label, warnings, who) or address

    # Checks first: a check setting that does not parse skips the service, and then nothing else
    # about it needs saying.
    checks = _checks(merged, service_id, address, port, info.get("Id", ""), warnings, who)
    dns = nginx_safe.dns_problem(service_name)
    if dns:
        warnings.append(f"{who}: service {service_name}: {dns}")
    tags = _tags(merged.get("tags"), forced, proto, warnings, who)
    meta = _meta(merged, warnings, who)
    meta[MARK_HOST] = settings.hostname
    meta[MARK_CONTAINER] = short_id
    if health is not None:
        checks.append(Check(id=check_id(service_id, HEALTH_CHECK_SUFFIX), name="Docker HEALTHCHECK",
                            ttl=HEALTH_TTL, status=health[0], docker_health=True))
    return Service(id=service_id, name=service_name, address=address, port=port, tags=tuple(tags),
                   meta=tuple(sorted(meta.items())), checks=tuple(checks),
                   container_id=short_id, container_name=name)


def _address_from_label(info: dict, label: str | None, warnings: list[str], who: str) -> str | None:
    """registrator's ``-useIpFromLabel``: the label's address (a ``/prefix`` dropped), when it has one."""
    if not label:
        return None
    value = ((info.get("Config") or {}).get("Labels") or {}).get(label)
    if not value:
        return None
    address = value.rsplit("/", 1)[0].strip()
    try:
        ipaddress.ip_address(address)
    except ValueError:
        warnings.append(f"{who}: label {label}={show(value)} is not an IP address; registered at its usual "
                        "address")
        return None
    return address


def _tags(setting: Setting | None, forced: list[str], proto: str, warnings: list[str], who: str) -> list[str]:
    tags = split_tags(setting.value) if setting is not None else []
    for tag in tags:
        problem = nginx_safe.value_problem("tag", tag)
        if problem:
            warnings.append(f"{who}: {setting.cite()}: {problem}; registered, but the renderer will not show it "
                            "to nginx")
    tags += forced
    if proto != "tcp":
        tags.append(proto)
    return list(dict.fromkeys(tags))


def _meta(merged: dict[str, Setting], warnings: list[str], who: str) -> dict[str, str]:
    """Every SERVICE_<KEY> but the four registrator consumes, as meta <key>; what Consul refuses is dropped."""
    meta: dict[str, str] = {}
    for key, setting in sorted(merged.items()):
        if key in NOT_META:
            continue
        if not _CONSUL_META_KEY.match(key) or key.startswith("consul-") or key.startswith(RESERVED_META_PREFIX):
            warnings.append(f"{who}: {setting.cite()} not used as meta: key {show(key)} is not allowed "
                            "(letters, digits, _ and - only, at most 128, not consul-* or registrar-*)")
            continue
        if len(setting.value) > META_VALUE_MAX:
            warnings.append(f"{who}: {setting.cite()} not used as meta: longer than {META_VALUE_MAX} characters "
                            "(Consul's limit)")
            continue
        if len(meta) >= META_PAIRS_MAX - 3:  # Consul's limit, less the registrar's own three marks
            warnings.append(f"{who}: {setting.cite()} not used as meta: more than {META_PAIRS_MAX - 3} keys "
                            "(Consul's limit is 64 per service, the registrar uses 3)")
            continue
        problem = nginx_safe.value_problem(f"meta {key}", setting.value)
        if problem:
            warnings.append(f"{who}: {setting.cite()}: {problem}; registered, but the renderer will not show it "
                            "to nginx")
        meta[key] = setting.value
    return meta


def _checks(merged: dict[str, Setting], service_id: str, address: str, port: int, container_id: str,
            warnings: list[str], who: str) -> list[Check]:
    def duration(option: str) -> str | None:
        setting = merged.get(f"check_{option}")
        if setting is None or not setting.value.strip():
            return None
        _require(_DURATION.match(setting.value.strip()), setting, "is not a duration (e.g. 10s, 1m30s, 500ms)")
        return setting.value.strip()

    def wanted(kind: str) -> Setting | None:
        setting = merged.get(f"check_{kind}")
        if setting is None or not setting.value.strip() or setting.value.strip().lower() in FALSE:
            return None
        return setting

    def flag(option: str) -> bool:
        setting = merged.get(f"check_{option}")
        return setting is not None and bool(setting.value.strip()) and setting.value.strip().lower() not in FALSE

    for unknown in sorted(k for k in merged if k.startswith("check_")
                          and k[len("check_"):] not in CHECK_KINDS + CHECK_OPTIONS):
        warnings.append(f"{who}: {merged[unknown].cite()} is not a check setting; kept as meta only")

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

    def add(kind: str, **fields) -> None:
        # The first kind set is registrator's one check, with its ID; the others are named by kind.
        checks.append(Check(id=check_id(service_id, kind if checks else None), **fields, **common))

    for kind in CHECK_KINDS:
        setting = wanted(kind)
        if setting is None:
            continue
        value = setting.value.strip()
        if kind in ("http", "https"):
            path = "/" if value.lower() in TRUE else value
            _require(_PATH.match(path), setting, "is not a URL path starting with /")
            method = None
            if (method_setting := merged.get(f"check_{kind}_method")) is not None and method_setting.value.strip():
                method = method_setting.value.strip().upper()
                _require(_METHOD.match(method), method_setting, "is not an HTTP method (GET, HEAD, POST ...)")
            add(kind, name=f"{kind.upper()} {method or 'GET'} {path}", http=f"{kind}://{target}{path}",
                method=method, interval=interval, timeout=timeout, tls_skip_verify=kind == "https")
        elif kind == "cmd":
            _require(not _CONTROL.search(setting.value), setting, "contains a control character")
            add(kind, name=f"command in the container: {value[:60]}", docker_container_id=container_id,
                shell="/bin/sh", args=("/bin/sh", "-c", value), interval=interval, timeout=timeout)
        elif kind == "script":
            _require(not _CONTROL.search(setting.value), setting, "contains a control character")
            script = setting.value.replace("$SERVICE_IP", address).replace("$SERVICE_PORT", str(port))
            add(kind, name="script", args=("/bin/sh", "-c", script), interval=interval, timeout=timeout)
        elif kind == "ttl":
            _require(_DURATION.match(value), setting, "is not a duration (e.g. 30s)")
            add(kind, name="TTL", ttl=value)
        elif kind == "tcp":
            add(kind, name=f"TCP {target}", tcp=target, interval=interval, timeout=timeout)
        elif kind == "grpc":
            service = "" if value.lower() in TRUE else value
            _require(not service or _GRPC_SERVICE.match(service), setting,
                     "is neither true nor a gRPC service name")
            add(kind, name=f"gRPC {target}{'/' + service if service else ''}",
                grpc=f"{target}/{service}" if service else target, grpc_use_tls=flag("grpc_use_tls"),
                tls_skip_verify=flag("grpc_use_tls") and flag("tls_skip_verify"), interval=interval,
                timeout=timeout)
    return checks


def _require(condition, setting: Setting, problem: str) -> None:
    if not condition:
        raise SettingRefused(f"{setting.cite()} {problem}")


def _unspecified(host_ip: str) -> bool:
    try:
        return ipaddress.ip_address(host_ip).is_unspecified
    except ValueError:
        return False


def valid_hostname(name: str) -> bool:
    return bool(_HOSTNAME.match(name))
