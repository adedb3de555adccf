"""Drain on stop (pure): which Docker ``kill`` events ask a container to stop, and when that is given up.

Registrator deregisters on ``die``, once the process is gone: during a
graceful stop the app stays in nginx's upstreams for its whole drain period,
and what is in flight when it exits is cut. Docker emits a ``kill`` event,
carrying the signal, the moment ``docker stop`` (or an orchestrator, or
``docker compose down``) sends the stop signal; that is when the container's
services should leave the routable set.

* A stop request is a ``kill`` with the container's ``StopSignal`` (SIGTERM
  unless the image or ``--stop-signal`` says otherwise), SIGTERM, SIGINT,
  SIGQUIT or SIGKILL. Other signals (``docker kill -s HUP`` to reload a
  config, USR1 ...) change nothing.
* While it stands, each of the container's services carries one more check,
  ``service:<id>:stopping``, critical, named after the request: the renderer
  drops a service that is not passing within its usual latency, and the
  service is deregistered on ``die`` as before. A check of the registrar's
  own rather than Consul's maintenance mode: it cannot undo an operator's
  ``consul maint``, it is part of the service's definition (so the same
  reconciliation that restores a Consul agent that restarted empty restores
  it), and it needs no second endpoint.
* ``docker stop`` escalates to SIGKILL after the container's stop timeout
  (``StopTimeout``, Docker's default 10 s). A container still running
  ``GIVE_UP_MARGIN`` after that did not stop (say, ``docker kill -s TERM``
  to an app that ignores it): its services are put back, with a warning.
  A ``docker stop -t N`` longer than the container's own stop timeout plus
  the margin is not visible in Docker's events: give such containers
  ``--stop-timeout N``.
"""

from __future__ import annotations

import dataclasses
import signal
import time

DEFAULT_STOP_SIGNAL = "SIGTERM"
DEFAULT_STOP_TIMEOUT = 10.0   # seconds: Docker's, when the container sets none
GIVE_UP_MARGIN = 5.0          # seconds past the stop timeout
ALWAYS_STOPPING = frozenset({"SIGTERM", "SIGINT", "SIGQUIT", "SIGKILL"})
# Docker keeps its last events in memory: at every full reconciliation (at start, after the
# event stream broke) the registrar reads back this far to learn of stops it did not see.
LOOKBACK = 600.0


@dataclasses.dataclass(frozen=True)
class StopRequest:
    signal: str       # its name, e.g. SIGTERM
    at: float         # wall-clock time of the kill event
    give_up_at: float  # wall-clock time after which a still-running container "did not stop"

    def reason(self) -> str:
        return f"sent {self.signal} at {time.strftime('%H:%M:%S', time.localtime(self.at))}"


def signal_name(value) -> str | None:
    """``15``, ``"15"``, ``"TERM"``, ``"SIGTERM"`` -> ``"SIGTERM"``; None when it names no signal."""
    text = str(value).strip().upper()
    if not text:
        return None
    if text.isdigit():
        try:
            return signal.Signals(int(text)).name
        except ValueError:
            return None
    name = text if text.startswith("SIG") else f"SIG{text}"
    return name if name in signal.Signals.__members__ else None


def stop_request(info: dict, raw_signal, at: float) -> StopRequest | None:
    """The stop request a ``kill`` event with ``raw_signal`` makes for the container ``info``, if any."""
    name = signal_name(raw_signal)
    config = info.get("Config") or {}
    stop_signal = signal_name(config.get("StopSignal") or DEFAULT_STOP_SIGNAL) or DEFAULT_STOP_SIGNAL
    if name is None or name not in ALWAYS_STOPPING | {stop_signal}:
        return None
    timeout = config.get("StopTimeout")
    timeout = float(timeout) if isinstance(timeout, (int, float)) and timeout >= 0 else DEFAULT_STOP_TIMEOUT
    return StopRequest(name, at, at + timeout + GIVE_UP_MARGIN)
