"""Consul checks from ``SERVICE_CHECK_*`` settings and Docker's HEALTHCHECK (pure).

In registrator's order of precedence: ``SERVICE_CHECK_HTTP``, ``_HTTPS``,
``_CMD``, ``_SCRIPT``, ``_TTL``, ``_TCP``, ``_GRPC``. The first one set is
Consul's ``service:<service id>``, the ID registrator's single inline check
gets, so an app heartbeating its TTL check at
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
Consul Docker check: ``/bin/sh -c CMD`` run inside the container (the agent
needs ``enable_script_checks`` and access to Docker; without the first it
refuses the service, and the registrar says which setting is missing).
``_DEREGISTER_AFTER`` lets Consul reap a long-critical service, but while
its container runs the registrar wants it and registers it again
(level-triggered): it bounds staleness after a crash of the whole host, it
does not hide a sick container.

A container with a Docker HEALTHCHECK gets one more check, a TTL check
``service:<service id>:docker-health`` whose status the registrar keeps
equal to the container's health (healthy -> passing; starting and unhealthy
-> critical, so a container that has not proven itself takes no traffic).

A check setting that does not parse skips the service (SettingRefused): a
service left without the health check its owner asked for must not take
traffic.
"""

from __future__ import annotations

import re

from .model import Check, check_id
from .service_settings import FALSE, TRUE, Setting, require

DEFAULT_CHECK_INTERVAL = "10s"
CHECK_KINDS = ("http", "https", "cmd", "script", "ttl", "tcp", "grpc")  # registrator's precedence
CHECK_OPTIONS = ("interval", "timeout", "initial_status", "deregister_after", "http_method", "https_method",
                 "grpc_use_tls", "tls_skip_verify")
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+$")
_PATH = re.compile(r"^/[^\s\x00-\x1f\x7f-\x9f]*$")
_METHOD = re.compile(r"^[A-Za-z]{1,20}$")
_GRPC_SERVICE = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
INITIAL_STATUSES = ("passing", "warning", "critical")
HEALTH_STATUS = {"healthy": "passing", "starting": "critical", "unhealthy": "critical"}


def checks(merged: dict[str, Setting], service_id: str, address: str, port: int, container_id: str,
            warnings: list[str], who: str) -> list[Check]:
    def duration(option: str) -> str | None:
        setting = merged.get(f"check_{option}")
        if setting is None or not setting.value.strip():
            return None
        require(_DURATION.match(setting.value.strip()), setting, "is not a duration (e.g. 10s, 1m30s, 500ms)")
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
        require(status in INITIAL_STATUSES, setting, "is not one of passing, warning, critical")

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
            require(_PATH.match(path), setting, "is not a URL path starting with /")
            method = None
            if (method_setting := merged.get(f"check_{kind}_method")) is not None and method_setting.value.strip():
                method = method_setting.value.strip().upper()
                require(_METHOD.match(method), method_setting, "is not an HTTP method (GET, HEAD, POST ...)")
            add(kind, name=f"{kind.upper()} {method or 'GET'} {path}", http=f"{kind}://{target}{path}",
                method=method, interval=interval, timeout=timeout, tls_skip_verify=kind == "https")
        elif kind == "cmd":
            require(not _CONTROL.search(setting.value), setting, "contains a control character")
            add(kind, name=f"command in the container: {value[:60]}", docker_container_id=container_id,
                shell="/bin/sh", args=("/bin/sh", "-c", value), interval=interval, timeout=timeout)
        elif kind == "script":
            require(not _CONTROL.search(setting.value), setting, "contains a control character")
            script = setting.value.replace("$SERVICE_IP", address).replace("$SERVICE_PORT", str(port))
            add(kind, name="script", args=("/bin/sh", "-c", script), interval=interval, timeout=timeout)
        elif kind == "ttl":
            require(_DURATION.match(value), setting, "is not a duration (e.g. 30s)")
            add(kind, name="TTL", ttl=value)
        elif kind == "tcp":
            add(kind, name=f"TCP {target}", tcp=target, interval=interval, timeout=timeout)
        elif kind == "grpc":
            service = "" if value.lower() in TRUE else value
            require(not service or _GRPC_SERVICE.match(service), setting,
                     "is neither true nor a gRPC service name")
            add(kind, name=f"gRPC {target}{'/' + service if service else ''}",
                grpc=f"{target}/{service}" if service else target, grpc_use_tls=flag("grpc_use_tls"),
                tls_skip_verify=flag("grpc_use_tls") and flag("tls_skip_verify"), interval=interval,
                timeout=timeout)
    return checks


def docker_health(info: dict) -> tuple[str, str] | None:
    """(Consul status, output) mirroring the container's HEALTHCHECK, or None without one."""
    health = (info.get("State") or {}).get("Health")
    if not health or not health.get("Status"):
        return None
    status = health["Status"]
    if not (info.get("State") or {}).get("Running"):
        return "critical", f"container is not running (docker health {status})"
    output = f"docker health: {status}"
    if health.get("FailingStreak"):
        output += f", failing streak {health['FailingStreak']}"
    return HEALTH_STATUS.get(status, "critical"), output
