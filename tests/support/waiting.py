"""Polling with a deadline: how tests wait for an eventually consistent loop."""

from __future__ import annotations

import time

import requests


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    """Poll ``predicate()`` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except (requests.RequestException, OSError) as error:
            last_error = error
        if time.monotonic() > deadline:
            suffix = f" (last error: {last_error})" if last_error else ""
            raise TimeoutError(f"{what} not met within {timeout}s{suffix}")
        time.sleep(interval)


def terminate(process, timeout: float) -> bool:
    """SIGTERM, then SIGKILL after ``timeout``; True if it stopped on SIGTERM."""
    import subprocess

    if process is None or process.poll() is not None:
        return True
    process.terminate()
    try:
        process.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return False
