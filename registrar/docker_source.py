"""The Docker edge: running containers, their inspect payloads, and the event stream.

The low-level API client is used throughout, because its answers are the
plain dicts :mod:`registrar.labels` takes. Every Docker failure becomes
:class:`DockerUnavailable`, except "no such container", which is an answer
(``None``).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Callable

import docker
import docker.errors
import requests

from agentkit.backoff import Backoff

from .errors import DockerUnavailable

log = logging.getLogger("registrar.docker")

# Container actions that can change what a container wants in Consul.
RELEVANT_ACTIONS = ("start", "restart", "unpause", "die", "stop", "kill", "destroy", "rename", "oom")


def relevant(action: str) -> bool:
    return action in RELEVANT_ACTIONS or action.startswith("health_status")


@dataclasses.dataclass(frozen=True)
class ContainerEvent:
    """One Docker container event, as the loop needs it."""

    id: str
    action: str
    name: str = ""
    attributes: tuple[tuple[str, str], ...] = ()
    at: float = 0.0  # wall-clock seconds

    @classmethod
    def from_docker(cls, event: dict) -> "ContainerEvent | None":
        action = event.get("Action") or event.get("status") or ""
        actor = event.get("Actor") or {}
        container_id = actor.get("ID") or event.get("id")
        if not relevant(action) or not container_id:
            return None
        attributes = actor.get("Attributes") or {}
        nano = event.get("timeNano")
        at = nano / 1e9 if isinstance(nano, (int, float)) else float(event.get("time") or time.time())
        return cls(container_id, action, attributes.get("name", ""),
                   tuple(sorted((str(k), str(v)) for k, v in attributes.items())), at)

    def attribute(self, key: str) -> str | None:
        return dict(self.attributes).get(key)


class DockerSource:
    def __init__(self, url: str, timeout: float = 10.0):
        self.url = url
        self.timeout = timeout
        try:
            self.api = docker.APIClient(base_url=url, timeout=timeout, version="auto")
        except docker.errors.DockerException as error:
            raise DockerUnavailable(f"cannot reach Docker at {url}: {_reason(error)}") from None

    def containers(self) -> list[dict]:
        """Summaries of every container Docker knows, running or not."""
        with _translate(self.url):
            return self.api.containers(all=True)

    def inspect(self, container_id: str) -> dict | None:
        with _translate(self.url):
            try:
                return self.api.inspect_container(container_id)
            except docker.errors.NotFound:
                return None

    def recent_events(self, since: float, actions: tuple[str, ...]) -> list["ContainerEvent"]:
        """Container events Docker still holds from ``since`` until now, oldest first (it keeps its last ones)."""
        until = time.time()
        with _translate(self.url):
            raw = self.api.events(since=int(since), until=int(until) + 1, decode=True,
                                  filters={"type": ["container"], "event": list(actions)})
            events = [ContainerEvent.from_docker(event) for event in raw]
        return [event for event in events if event is not None]

    def close(self) -> None:
        self.api.close()


def events_client(url: str) -> docker.APIClient:
    return docker.APIClient(base_url=url, timeout=10, version="auto")


class EventStream:
    """Docker container events -> ``on_event(event)``, in order, from one thread.

    When the stream breaks (dockerd restarted, socket closed) it reconnects
    with capped backoff and then calls ``on_reconnect()``, because events
    were lost meanwhile and only a full reconciliation can make up for them.
    """

    def __init__(self, url: str, on_event: Callable[[dict], None], on_reconnect: Callable[[], None],
                 backoff: Backoff | None = None, api_factory: Callable[[str], object] | None = None):
        """``api_factory(url)`` makes the client of one connection (a fresh one after each break)."""
        self.url = url
        self.api_factory = api_factory or events_client
        self.on_event = on_event
        self.on_reconnect = on_reconnect
        self.backoff = backoff or Backoff(initial=0.2, cap=5.0)
        self.stop_event = threading.Event()
        self.connected = threading.Event()
        self._lock = threading.Lock()
        self._stream = None
        self._thread = threading.Thread(target=self._run, name="docker-events", daemon=False)

    def start(self) -> "EventStream":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            try:
                stream.close()
            except Exception:  # closing a broken socket may fail; the thread ends anyway
                pass

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        broken = False
        while not self.stop_event.is_set():
            api = None
            try:
                api = self.api_factory(self.url)
                stream = api.events(decode=True, filters={"type": ["container"]})
                with self._lock:
                    self._stream = stream
                if self.stop_event.is_set():
                    break
                if broken:
                    log.info("Docker event stream reconnected; reconciling everything")
                    self.on_reconnect()
                broken = False
                self.backoff.reset()
                self.connected.set()
                for event in stream:
                    if self.stop_event.is_set():
                        break
                    self.on_event(event)
                if self.stop_event.is_set():
                    break
                problem = "closed"
            except Exception as error:  # any failure of the stream is survived
                if self.stop_event.is_set():
                    break
                problem = _reason(error)
            finally:
                with self._lock:
                    self._stream = None
                if api is not None:
                    api.close()
            self.connected.clear()
            delay = self.backoff.next()
            if not broken or self.backoff.worth_saying:
                log.warning("Docker event stream at %s %s; reconnecting (next try in %.1fs)",
                            self.url, problem, delay)
            broken = True
            self.stop_event.wait(delay)


class _translate:
    def __init__(self, url: str):
        self.url = url

    def __enter__(self):
        return self

    def __exit__(self, kind, error, _traceback):
        if error is None or isinstance(error, docker.errors.NotFound) or not isinstance(error, Exception):
            return False
        if isinstance(error, (docker.errors.DockerException, requests.RequestException, OSError)):
            raise DockerUnavailable(f"Docker at {self.url} failed: {_reason(error)}") from None
        return False


def _reason(error: Exception) -> str:
    text = str(error)
    if "Connection refused" in text or "FileNotFoundError" in text or "No such file" in text:
        return "connection refused"
    if isinstance(error, requests.Timeout):
        return "timed out"
    first = text.strip().splitlines()[0][:200] if text.strip() else type(error).__name__
    return first
