"""tcp and udp services -> stream listeners, one service per port and protocol (pure).

A service tagged ``tcp`` gets a stream listener (also tagged ``udp``: a UDP
one) on its port: meta ``listen_port``, voted among its instances like any
route key (each value checked on its own), else the numeric suffix of its
name (``tcpfront-9999``, registrator's convention); within the operator's
``stream_ports`` and never nginx's own ports (:mod:`.listen_ports`).

One port and protocol go to one service, by a rule every node computes the
same way and that keeps a listener with the service that has it: the
service whose name ends in ``-PORT`` first (the name claims the port), then
the service registered first (the oldest Consul ``CreateIndex``), then the
first by name. The others are refused, named.
"""

from __future__ import annotations

from renderer.catalog.model import Instance

from . import values
from .model import Listener, Pool, RouteOptions, RouteRefusal, Server
from .service import age
from .voting import vote_key

# What one tcp service brings: (name, "tcp" or "udp", its instances, those of them passing).
StreamService = tuple[str, str, tuple[Instance, ...], tuple[Instance, ...]]


def listeners(tcp: list[StreamService], options: RouteOptions, refused: list[RouteRefusal],
              notes: list[str]) -> list[Listener]:
    """tcp (and udp) services -> listeners on their port, each port to one service."""
    claims: dict[tuple[int, str], list[tuple[tuple, str, tuple[Instance, ...]]]] = {}
    for name, protocol, instances, passing in sorted(tcp):
        valid, declared = vote_key(name, "listen_port", values.port, passing or instances, refused, notes)
        if not valid:
            continue
        suffix = name.rsplit("-", 1)[-1] if "-" in name else ""
        port = str(declared) if declared is not None else suffix
        if not (port.isascii() and port.isdigit()):
            refused.append(RouteRefusal(name, "tcp service without a listen_port meta or a numeric name suffix: "
                                              "no listener"))
            continue
        problem = options.listen.problem(port)
        if problem:
            refused.append(RouteRefusal(name, f"{problem}: no listener", key="listen_port", value=port))
            continue
        rank = (suffix != port, age(instances) or float("inf"), name)
        claims.setdefault((int(port), protocol), []).append((rank, name, passing))
    by_port: dict[tuple[int, str], Listener] = {}
    for (port, protocol), claimants in sorted(claims.items()):
        claimants.sort()
        _, name, passing = claimants[0]
        for _, other, _ in claimants[1:]:
            refused.append(RouteRefusal(other, f"port {port}/{protocol} is service {name}'s (its name claims the "
                                               "port, or it was registered first): no listener",
                                        key="listen_port", value=str(port)))
        servers = tuple(Server(i.host_port, 5, i.id, i.node) for i in passing)
        by_port[(port, protocol)] = Listener(port, protocol, name, Pool(name, name, servers) if servers else None)
    return [by_port[key] for key in sorted(by_port)]
