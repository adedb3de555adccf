"""tcp and udp services -> stream listeners, one service per port and protocol (pure).

A service tagged ``tcp`` gets a stream listener (also tagged ``udp``: a UDP
one) on its port: meta ``listen_port``, else the numeric suffix of its name
(``tcpfront-9999``, registrator's convention), within the operator's
``stream_ports`` and never nginx's own ports (:mod:`.listen_ports`). A port
already given to a service goes to no other: the service whose name sorts
first keeps it, the other is refused, named.
"""

from __future__ import annotations

from renderer.catalog.model import Instance

from .model import Listener, Pool, RouteRefusal, RouteOptions, Server

# What one tcp service brings: (name, "tcp" or "udp", its instances, those of them passing).
StreamService = tuple[str, str, tuple[Instance, ...], tuple[Instance, ...]]


def listeners(tcp: list[StreamService], options: RouteOptions, refused: list[RouteRefusal]) -> list[Listener]:
    """tcp (and udp) services -> listeners on their port: meta listen_port, else the name's numeric suffix."""
    by_port: dict[tuple[int, str], Listener] = {}
    for name, protocol, instances, passing in sorted(tcp):
        declared = next((i.meta["listen_port"] for i in instances if "listen_port" in i.meta), "")
        suffix = name.rsplit("-", 1)[-1] if "-" in name else ""
        port = declared or suffix
        if not port.isdigit():
            refused.append(RouteRefusal(name, "tcp service without a listen_port meta or a numeric name suffix: "
                                         "no listener"))
            continue
        problem = options.listen.problem(port)
        if problem:
            refused.append(RouteRefusal(name, f"{problem}: no listener", key="listen_port", value=port))
            continue
        key = (int(port), protocol)
        if key in by_port:
            refused.append(RouteRefusal(name, f"port {port}/{protocol} is already service {by_port[key].service}'s: "
                                         "no listener", key="listen_port", value=port))
            continue
        servers = tuple(Server(i.host_port, 5, i.id, i.node) for i in passing)
        by_port[key] = Listener(int(port), protocol, name, Pool(name, name, servers) if servers else None)
    return [by_port[key] for key in sorted(by_port)]
