"""A probe through nginx every 100 ms, counting failures: how fault tests measure 'no route lost'."""

from __future__ import annotations

import threading
import time

import requests


class Probe:
    def __init__(self, port: int, host: str, expect: str | None = None, interval: float = 0.1, path: str = "/",
                 method: str = "GET", address: str = "127.0.0.1"):
        self.url, self.host, self.expect, self.interval = f"http://{address}:{port}{path}", host, expect, interval
        # POST: nginx never retries it on another upstream once sent, so a cut request shows as a failure.
        self.method = method
        self.sent = 0
        self.answered = 0  # probes finished, failed or not: what proves a phase was measured
        self.failures: list[str] = []
        self._progress = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Probe":
        self._thread.start()
        return self

    def __exit__(self, *_):
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        # A new connection per probe, never a kept-alive one: on every reload nginx
        # closes idle keep-alive connections, and a request sent on one at that
        # instant fails (measured: about 1 in 150 reloads) with the route intact.
        # That is nginx's reload and the client's missing retry, not a lost route;
        # a lost route shows on a fresh connection as well (404, 502, 503, refused).
        headers = {"Host": self.host, "Connection": "close"}
        while not self._stop.is_set():
            started = time.monotonic()
            self.sent += 1
            try:
                response = requests.request(self.method, self.url, headers=headers, timeout=2,
                                            data=b"probe" if self.method == "POST" else None)
                body = response.text.strip()
                if response.status_code != 200 or (self.expect and not body.startswith(self.expect)):
                    self.failures.append(f"{time.strftime('%X')} HTTP {response.status_code} {body[:60]!r}")
            except requests.RequestException as error:
                self.failures.append(f"{time.strftime('%X')} {type(error).__name__}")
            with self._progress:
                self.answered += 1
                self._progress.notify_all()
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def cover(self, count: int, since: int | None = None, timeout: float = 10.0) -> None:
        """Block until `count` probes have been answered since `since` (default: now).

        A phase of a test is then measured, not assumed to have been.
        """
        with self._progress:
            target = (self.answered if since is None else since) + count
            if not self._progress.wait_for(lambda: self.answered >= target or not self._thread.is_alive(), timeout):
                raise AssertionError(f"the probe answered {self.answered}, not {target}, within {timeout} s")
            if self.answered < target:
                raise AssertionError("the probe thread stopped")

    def report(self) -> str:
        return f"{len(self.failures)} of {self.sent} probes failed: {self.failures[:5]}"
