"""Container -> wanted Consul services, by registrator's conventions (pure).

Input is the dict Docker's ``GET /containers/{id}/json`` (``inspect``)
returns; output is the services one container should have, plus one warning
per setting that had to be dropped or that nginx will not see. No Docker,
no Consul, no clock. The parts: :mod:`.service_settings` (the ``SERVICE_*``
settings and which port each applies to), :mod:`.ports` (candidate ports,
address and port), :mod:`.checks` (Consul checks, Docker's HEALTHCHECK);
this module names each service and gives it its tags and meta.

Conventions, as registrator has them (docs/registrar.md has the table of
the few deliberate differences), and the choices made where it left a gap:

* One candidate port -> one service named ``NAME``; several ->
  ``NAME-<exposed port>`` unless a per-port name is given.
* Name: ``SERVICE_NAME``, else the image's base name without registry, tag or
  digest. Letters, digits, ``-``, ``_`` and ``.`` (what nginx and Consul can
  both carry, ``agentkit.nginx_safe``); a name Consul's DNS interface will
  not resolve (``_``, ``.``) is registered with a warning.
* ID: ``<hostname>:<container name>:<exposed port>``, plus ``:udp`` (and for
  any non-TCP protocol ``:<proto>``); those ports also get that protocol as a
  tag. A generic ``SERVICE_ID`` on a container with several candidate ports
  gets ``-<port>`` (and ``-<proto>`` for non-TCP) appended, so the IDs stay
  distinct; a per-port ``SERVICE_<port>_ID`` is used as given.
* Tags: ``SERVICE_TAGS``, then ``--tags`` (a registrator-style Go template,
  ``registrar.tag_template``, evaluated per container), comma-separated with
  ``\\,`` for a comma inside a tag.
* Meta: every ``SERVICE_<KEY>`` other than NAME, TAGS, ID and IGNORE becomes
  meta ``<key>`` lower-cased, exactly as registrator writes it: the
  ``check_*`` settings too, and ``SERVICE_META_FOO`` as ``meta_foo``.
  ``SERVICE_IGNORE`` with a false-looking value does not ignore.

Failures are per key, not per service. A meta pair Consul would refuse (a key
outside letters, digits, ``_`` and ``-``, ``consul-*``, our own
``registrar-*``, a value over 512 characters, more than 64 pairs) is dropped
with a warning naming container, key and value, and the service registers.
A tag or meta value nginx must not see (``agentkit.nginx_safe``) is
registered, with a warning that the renderer will withhold it. Only what
leaves no usable service skips it (:class:`SettingRefused`): an unusable
name, ID or port, or a check setting that does not parse.
"""

from __future__ import annotations

import dataclasses
import re

from agentkit import nginx_safe

from .checks import checks, docker_health
from .model import HEALTH_CHECK_SUFFIX, HEALTH_TTL, MARK_CONTAINER, MARK_HOST, RESERVED_META_PREFIX, Check, \
    MappingSettings, Service, check_id
from .ports import address_and_port, candidate_ports
from .service_settings import FALSE, Setting, SettingRefused, collect_settings, require, show, split_tags
from .tag_template import Template, TemplateRunError

NOT_META = ("name", "tags", "id", "ignore")

_SERVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,254}$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_CONSUL_META_KEY = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
META_VALUE_MAX = 512   # Consul's limits on service meta
META_PAIRS_MAX = 64


@dataclasses.dataclass(frozen=True)
class Mapping:
    services: tuple[Service, ...]
    warnings: tuple[str, ...]


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


def forced_tags(info: dict, template: Template | None, who: str, warnings: list[str]) -> list[str]:
    """``--tags`` for this container; a template that fails on it costs it those tags, with a warning."""
    if template is None:
        return []
    try:
        return split_tags(template.render(info))
    except TemplateRunError as error:
        warnings.append(f"{who}: --tags {show(template.source)} failed on it ({error}); registered without them")
        return []


def default_name(image: str) -> str:
    """``registry:5000/team/web:1.2@sha256:...`` -> ``web``."""
    base = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return base.split(":", 1)[0]


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
        require(not nginx_safe.name_problem(service_name), merged["name"],
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
        require(_SERVICE_ID.match(service_id), merged["id"],
                 "is not a valid service ID (letters, digits and _ . : @ - only)")
    else:
        service_id = f"{settings.hostname}:{name}:{exposed}" + (f":{proto}" if proto != "tcp" else "")

    address, port = address_and_port(info, settings, exposed, binding, warnings, who)

    # Checks first: a check setting that does not parse skips the service, and then nothing else
    # about it needs saying.
    service_checks = checks(merged, service_id, address, port, info.get("Id", ""), warnings, who)
    dns = nginx_safe.dns_problem(service_name)
    if dns:
        warnings.append(f"{who}: service {service_name}: {dns}")
    tags = _tags(merged.get("tags"), forced, proto, warnings, who)
    meta = _meta(merged, warnings, who)
    meta[MARK_HOST] = settings.hostname
    meta[MARK_CONTAINER] = short_id
    if health is not None:
        service_checks.append(Check(id=check_id(service_id, HEALTH_CHECK_SUFFIX), name="Docker HEALTHCHECK",
                            ttl=HEALTH_TTL, status=health[0], docker_health=True))
    return Service(id=service_id, name=service_name, address=address, port=port, tags=tuple(tags),
                   meta=tuple(sorted(meta.items())), checks=tuple(service_checks),
                   container_id=short_id, container_name=name)


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


def valid_hostname(name: str) -> bool:
    return bool(_HOSTNAME.match(name))
