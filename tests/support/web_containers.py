"""Real web containers for the whole loop: busybox httpd answering its own name, published on loopback.

Started with the Docker SDK (the registrar reads what ``docker run`` makes,
nothing test-specific), each named ``<prefix>-<suffix>``, all force-removed
by :meth:`WebContainers.close`. The shell traps SIGTERM so ``docker stop`` and
a dockerd shutdown end it at once instead of waiting 10 s for a SIGKILL; with
``drain=N`` it keeps serving N seconds after SIGTERM, as a graceful app does.
``/cgi-bin/slow`` answers any method (POST too) with the body after 300 ms.
"""

from __future__ import annotations

import shlex

import docker.errors
import requests

WEB_COMMAND = ("trap '{on_term}exit 0' TERM; echo {body} > /www/index.html; mkdir -p /www/cgi-bin; "
               "echo '#!/bin/sh' > /www/cgi-bin/slow; "
               "echo 'cat > /dev/null; sleep 0.3; echo Content-Type: text/plain; echo; cat /www/index.html' "
               ">> /www/cgi-bin/slow; chmod +x /www/cgi-bin/slow; httpd -f -p 80 -h /www & wait")


class WebContainers:
    def __init__(self, engine, image: str, prefix: str):
        self.engine, self.image, self.prefix = engine, image, prefix
        self.names: list[str] = []
        self.ids: set[str] = set()  # short IDs, as in the registrar's registrar-container meta

    @property
    def client(self):
        return self.engine.client  # replaced when the engine restarts

    def start(self, suffix: str, service: str | None = None, body: str | None = None, labels: dict | None = None,
              restart: bool = False, tags: str = "http", drain: float = 0):
        """``docker run -d -p 127.0.0.1::80 -l SERVICE_NAME=service -l SERVICE_TAGS=tags ... sh -c WEB_COMMAND``."""
        name = f"{self.prefix}-{suffix}"
        all_labels = {"SERVICE_TAGS": tags, **({"SERVICE_NAME": service} if service else {}), **(labels or {})}
        self.names.append(name)
        container = self.client.containers.run(
            self.image, ["sh", "-c", WEB_COMMAND.format(body=shlex.quote(body or service or suffix),
                                                         on_term=f"sleep {drain}; " if drain else "")],
            name=name, detach=True, labels=all_labels, ports={"80/tcp": ("127.0.0.1", None)},
            restart_policy={"Name": "always"} if restart else None)
        self.ids.add(container.id[:12])
        return container

    def get(self, suffix: str):
        return self.client.containers.get(f"{self.prefix}-{suffix}")

    def port(self, suffix: str) -> int | None:
        """The host port of a running container, else None."""
        try:
            container = self.get(suffix)
        except docker.errors.NotFound:
            return None
        bindings = (container.attrs["NetworkSettings"]["Ports"] or {}).get("80/tcp") or []
        return int(bindings[0]["HostPort"]) if container.status == "running" and bindings else None

    def running(self) -> list[str]:
        return [c.name for c in self.client.containers.list(filters={"name": f"^{self.prefix}-"})]

    def foreign(self) -> set[str]:
        """IDs of the running containers that are not ours (another test or a bench sharing the engine)."""
        return {c.id for c in self.client.containers.list() if not c.name.startswith(f"{self.prefix}-")}

    def remove(self, suffix: str) -> None:
        self.get(suffix).remove(force=True)

    def close(self) -> None:
        for name in self.names:
            try:
                self.client.containers.get(name).remove(force=True)
            except (docker.errors.NotFound, docker.errors.APIError, requests.RequestException):
                pass
