"""Which ports catalog data may make nginx listen on (pure).

A tcp service chooses its own listen port (meta ``listen_port``, or the
numeric suffix of its name), and anyone with ``service:write`` can register
one. Unchecked, that opens any port on every nginx node: port 22, or nginx's
own HTTP port, where the stream listener's bind fails inside nginx at
reload, after ``nginx -t`` passed, and with it every later change.

So the operator sets which ports stream listeners may use, with template
variables (``--var`` or ``[var]``):

* ``stream_ports``: comma-separated ports and ranges, default ``1024-65535``;
  a privileged port (below 1024) is only ever used when listed here;
* ``http_port`` (80), ``https_port`` (443) and ``h2c_port`` (unset: plaintext
  gRPC): nginx's own listeners, never given to a stream listener even when
  inside ``stream_ports``.

Templates ask ``listen_port_problem(port)``: an empty string when the port
may be used, else the reason, which the default stream template warns with
(per service) and skips the service.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from renderer.errors import ConfigError

DEFAULT_STREAM_PORTS = "1024-65535"


@dataclasses.dataclass(frozen=True)
class ListenPolicy:
    allowed: tuple[tuple[int, int], ...]
    reserved: tuple[tuple[int, str], ...]  # (port, what already listens there): hashable, a dependency key

    @classmethod
    def from_variables(cls, variables: Mapping[str, str]) -> "ListenPolicy":
        allowed = parse_ranges(variables.get("stream_ports", DEFAULT_STREAM_PORTS), "stream_ports")
        reserved = {}
        for name, default in (("http_port", 80), ("https_port", 443), ("h2c_port", "")):
            text = str(variables.get(name, default) or "").strip()
            if not text and not default:
                continue  # h2c_port is off unless set
            if not text.isdigit() or not 0 < int(text) < 65536:
                raise ConfigError(f"--var {name}={text!r}: expected a port number 1-65535")
            if int(text) in reserved:
                raise ConfigError(f"--var {name}={text}: that port is already {reserved[int(text)]}")
            reserved[int(text)] = f"nginx's own {name}"
        return cls(allowed, tuple(sorted(reserved.items())))

    @property
    def h2c_port(self) -> int | None:
        """The plaintext HTTP/2 (gRPC) listener's port, when the operator set one."""
        return next((port for port, what in self.reserved if what.endswith("h2c_port")), None)

    def problem(self, port: object) -> str:
        """Why ``port`` must not get a stream listener; empty when it may."""
        text = str(port).strip()
        if not text.isdigit() or not 0 < int(text) < 65536:
            return f"listen port {str(port)[:20]!r} is not a port number"
        number = int(text)
        reserved = dict(self.reserved)
        if number in reserved:
            return f"port {number} is {reserved[number]}"
        if not any(low <= number <= high for low, high in self.allowed):
            shown = ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in self.allowed)
            return f"port {number} is outside stream_ports ({shown})"
        return ""


def parse_ranges(text: str, what: str) -> tuple[tuple[int, int], ...]:
    """``"25,1024-65535"`` -> ((25, 25), (1024, 65535))."""
    ranges = []
    for part in str(text).split(","):
        low, dash, high = part.strip().partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise ConfigError(f"--var {what}={text!r}: expected ports and ranges like 1024-65535,25")
        low_port, high_port = int(low), int(high) if dash else int(low)
        if not 0 < low_port <= high_port < 65536:
            raise ConfigError(f"--var {what}={text!r}: {part.strip()} is not within 1-65535")
        ranges.append((low_port, high_port))
    return tuple(ranges)
