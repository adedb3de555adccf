"""Which ports of a container become services, and at which address and port each is registered (pure).

* Candidate ports: every published port; with ``--internal`` every exposed
  port; for a host-network container every exposed port (its published port
  is its exposed port).
* Address: ``--ip``, else the binding's host IP when it is specific (not
  ``0.0.0.0`` / ``::``), else the host's address. When Docker publishes one
  port on both IPv4 and IPv6, the first IPv4 binding is used. With
  ``--internal``: the container's IP on the alphabetically first network
  (by network name) that gave it an IPv4 address, and the exposed port
  (``--ip`` does not apply). Host-network containers always register the
  host address (or ``--ip``). ``--use-ip-from-label LABEL`` (registrator's
  ``-useIpFromLabel``) takes the address from that container label when it
  has one (``10.0.0.5/24`` registers ``10.0.0.5``).
"""

from __future__ import annotations

import ipaddress

from .model import MappingSettings
from .service_settings import SettingRefused, show


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


def address_and_port(info: dict, settings: MappingSettings, exposed: str, binding: dict | None,
                     warnings: list[str], who: str) -> tuple[str, int]:
    """Where the service of exposed port ``exposed`` is registered (SettingRefused when nowhere)."""
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
    return _address_from_label(info, settings.ip_label, warnings, who) or address, port


def _split_port(key: str) -> tuple[str, str]:
    port, _, proto = key.partition("/")
    return port, (proto or "tcp").lower()


def _choose_binding(bindings) -> dict | None:
    usable = [b for b in bindings or [] if b and b.get("HostPort")]
    ipv4 = [b for b in usable if ":" not in (b.get("HostIp") or "")]
    return (ipv4 or usable or [None])[0]


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


def _unspecified(host_ip: str) -> bool:
    try:
        return ipaddress.ip_address(host_ip).is_unspecified
    except ValueError:
        return False
