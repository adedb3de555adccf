"""One bad registration costs one service, never the file: the services nginx refused, left out.

Validation (:mod:`agentkit.nginx_safe`, :mod:`renderer.routes`) is the first
line; this is the mechanism behind it. When ``nginx -t`` refuses a rendered
file, the service whose block nginx named is found and left out, the file
is rendered again without it, and every other change applies at the speed
of any pass:

* nginx names the file and line (``... in /etc/nginx/conf.d/services.conf:123``):
  the template is rendered once more locating its ``each()`` blocks, and the
  block holding that line names its service (:func:`nginx_location`,
  ``Rendered.blocks``); a block of several services (a host) is narrowed
  down as below;
* nginx names no line (``could not build server_names_hash``): the
  candidates are halved, each half left out in turn, until ``nginx -t``
  accepts the file without one service (:func:`bisect`).

A service left out stays out (:class:`Exclusions`) until its registration
changes (its instances are other objects in the catalog), or its retry is
due (capped backoff, :func:`agentkit.backoff.failure_backoff`): then it is
rendered again, and nginx is asked again. Level-triggered: nothing is left
out for good on one verdict.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Iterable

from agentkit.backoff import Retry

from .api import TemplateData

log = logging.getLogger("renderer")

# "... in /etc/nginx/conf.d/services.conf:123" (nginx -t, and its error log)
_LOCATION = re.compile(r" in (/\S+?):(\d+)\b")


def nginx_location(detail: str) -> tuple[str, int] | None:
    """The (file, line) nginx's message names, if it names one."""
    match = _LOCATION.search(detail)
    return (match[1], int(match[2])) if match else None


def owners_at(blocks: Iterable[tuple[int, int, tuple[str, ...]]], line: int) -> tuple[str, ...]:
    """The services of the rendered block holding ``line`` (none when the line is outside every block)."""
    for first, last, services in blocks:
        if first <= line <= last:
            return services
    return ()


def bisect(candidates: list[str], accepted: Callable[[frozenset[str]], bool]) -> str | None:
    """The one candidate whose absence makes nginx accept the file.

    ``accepted(left_out)`` renders without ``left_out`` and asks nginx. A
    half whose absence is accepted holds the culprit; otherwise the other
    half does. None when even leaving every candidate out is refused (the
    cause is not a service's).
    """
    if not candidates or not accepted(frozenset(candidates)):
        return None
    while len(candidates) > 1:
        half = candidates[:len(candidates) // 2]
        candidates = half if accepted(frozenset(half)) else candidates[len(half):]
    return candidates[0]


@dataclasses.dataclass
class Exclusion:
    service: str
    instances: tuple          # what the catalog held of it when nginx refused it: changed, it is tried again
    reason: str               # nginx's line
    template: str
    retry: Retry


class Exclusions:
    """The services nginx refused, left out of what templates see until their registration changes."""

    def __init__(self, clock):
        self.clock = clock
        self.current: dict[str, Exclusion] = {}
        self._retries: dict[str, Retry] = {}  # kept across lifts: a service refused again waits longer
        self._filtered: tuple = (None, None, None)  # (catalog, names, the data without them)

    def __bool__(self) -> bool:
        return bool(self.current)

    def names(self) -> frozenset[str]:
        return frozenset(self.current)

    def add(self, service: str, data: TemplateData, reason: str, template: str) -> None:
        retry = self._retries.setdefault(service, Retry())
        delay = retry.failed(self.clock())
        instances = data.catalog.instances_of(service) if data.catalog is not None else ()
        self.current[service] = Exclusion(service, instances, reason, template, retry)
        log.warning("left out service %s: nginx refused it (%s); every other change applies; it is tried again "
                    "when its registration changes, or in %.0fs", service, reason, delay,
                    extra={"service": service, "template": template})

    def lift_due(self, data: TemplateData) -> None:
        """Try again the services whose registration changed or whose retry is due."""
        now = self.clock()
        for name, exclusion in list(self.current.items()):
            instances = data.catalog.instances_of(name) if data.catalog is not None else ()
            changed = len(instances) != len(exclusion.instances) or any(
                a is not b for a, b in zip(instances, exclusion.instances))
            if changed or exclusion.retry.due(now):
                del self.current[name]
                if changed:
                    self._retries.pop(name, None)
                log.info("trying service %s again (%s)", name,
                         "its registration changed" if changed else "its retry is due",
                         extra={"service": name})
        for name in [n for n, retry in self._retries.items() if n not in self.current and not retry.pending]:
            del self._retries[name]

    def next_retry(self) -> float | None:
        times = [exclusion.retry.at for exclusion in self.current.values() if exclusion.retry.pending]
        return min(times) if times else None

    def apply(self, data: TemplateData) -> TemplateData:
        """``data`` without the excluded services (the same object when none is)."""
        return self.without(data, self.names())

    def without(self, data: TemplateData, names: frozenset[str]) -> TemplateData:
        if not names or data.catalog is None:
            return data
        catalog, known, filtered = self._filtered
        if catalog is data.catalog and known == names and filtered.kv is data.kv \
                and filtered.certificates is data.certificates:
            return filtered
        filtered = data.with_catalog(data.catalog.without(names))
        self._filtered = (data.catalog, names, filtered)
        return filtered


class Isolator:
    """Finds the service a refused file's complaint points at, leaves it out, renders the file without it."""

    def __init__(self, render: Callable, exclusions: Exclusions):
        """``render(source, data, locate)`` renders one template (bounded) and returns its Rendered."""
        self.render, self.exclusions = render, exclusions

    def replacement(self, source, destination, data: TemplateData, detail: str,
                    trial: Callable[[bytes], str | None]):
        """The file rendered without the culprit (now excluded): its Rendered; None when no service is to blame.

        ``trial(content)`` puts ``content`` in place of the refused file and
        asks nginx: its complaint, or None when it accepts everything.
        """
        def render(extra: frozenset[str] = frozenset(), locate: bool = False):
            return self.render(source, self.exclusions.without(data, self.exclusions.names() | extra), locate)

        whole = render(locate=True)
        if whole.error is not None:
            return None
        located = nginx_location(detail)
        candidates: tuple[str, ...] = ()
        if located is not None and located[0] == str(destination):
            candidates = owners_at(whole.blocks, located[1])
        if not candidates:  # no line, or one outside every service's block: every service of the file
            candidates = tuple(sorted({name for *_, services in whole.blocks for name in services}))

        def accepted(left_out: frozenset[str]) -> bool:
            rendered = render(left_out)
            if rendered.error is not None:
                return False
            complaint = trial(rendered.content)
            if complaint is None:
                return True
            elsewhere = nginx_location(complaint)
            return elsewhere is not None and elsewhere[0] != str(destination)

        culprit = candidates[0] if len(candidates) == 1 else bisect(list(candidates), accepted)
        if culprit is None:
            return None
        self.exclusions.add(culprit, data, detail, str(source))
        final = render()
        return final if final.error is None else None
