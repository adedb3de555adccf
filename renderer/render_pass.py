"""One render pass: render what may have changed, compare with disk, apply.

Shared by ``renderer once`` and the daemon. A template is rendered again only
when its source changed or one of the values it used changed (see
``template_api``). Output rendered while data was still missing is never
written: the caller fetches what ``PassOutcome.missing`` lists and runs the
pass again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path

import jinja2

from .apply import Applier, ApplyResult, FileChange, read_current
from .errors import TemplateError
from .template_api import CATALOG_KINDS, TemplateData, changed
from .templates import TemplateLoader, TemplateSpec

log = logging.getLogger("renderer")


@dataclasses.dataclass
class _TemplateState:
    spec: TemplateSpec
    template: jinja2.Template | None = None
    used: dict | None = None          # dependencies of the last complete render
    error: str | None = None          # the last failure, logged once
    warnings: tuple[str, ...] = ()
    rejected_digest: bytes | None = None  # content nginx refused; not tried again


@dataclasses.dataclass
class PassOutcome:
    missing: set = dataclasses.field(default_factory=set)
    rendered: int = 0
    result: ApplyResult | None = None
    failed: list[str] = dataclasses.field(default_factory=list)  # one line per failure this pass

    @property
    def ok(self) -> bool:
        return not self.failed


class RenderPass:
    def __init__(self, loader: TemplateLoader, applier: Applier, specs: list[TemplateSpec]):
        self.loader = loader
        self.applier = applier
        self.states: dict[Path, _TemplateState] = {}
        self.removed: list[TemplateSpec] = []
        self.rejected_seen: set[str] = set()
        self.last_catalog = None
        self.set_specs(specs)

    def set_specs(self, specs: list[TemplateSpec]) -> None:
        """Adopt a new template list; outputs of templates that are gone get removed next pass."""
        new = {spec.destination: spec for spec in specs}
        self.removed += [state.spec for dest, state in self.states.items() if dest not in new]
        self.states = {dest: (self.states[dest] if dest in self.states and self.states[dest].spec == spec
                              else _TemplateState(spec)) for dest, spec in new.items()}

    def dependencies(self) -> set[tuple]:
        """Everything the templates read in their last renders: what must be watched."""
        return {dependency for state in self.states.values() if state.used for dependency in state.used}

    def uses_catalog(self) -> bool:
        return any(d[0] in CATALOG_KINDS for d in self.dependencies())

    def kv_paths(self) -> set[str]:
        return {d[1] for d in self.dependencies() if d[0] not in CATALOG_KINDS}

    def run(self, data: TemplateData, force: bool = False) -> PassOutcome:
        outcome = PassOutcome()
        if data.catalog is not None and data.catalog is not self.last_catalog:
            self._report_rejected(data.catalog)
        changes = [FileChange(spec.destination, None, str(spec.source)) for spec in self.removed
                   if spec.destination.exists()]
        self.removed = []
        by_destination = {}
        for state in self.states.values():
            change = self._render(state, data, force, outcome)
            if change:
                changes.append(change)
                by_destination[change.destination] = state
        if changes or self.applier.reload_pending:
            outcome.result = self.applier.apply(changes)
            self._report(outcome, by_destination)
        return outcome

    def _render(self, state: _TemplateState, data: TemplateData, force: bool, outcome: PassOutcome):
        spec = state.spec
        try:
            template = self.loader.load(spec.source)
        except TemplateError as error:
            self._failed(state, str(error), outcome)
            return None
        if not (force or template is not state.template or state.used is None or changed(state.used, data)):
            return None
        try:
            rendered = self.loader.render(spec.source, data)
        except TemplateError as error:
            state.template, state.used = template, None
            self._failed(state, f"{error}; {spec.destination} left as it was", outcome)
            return None
        if rendered.missing:
            outcome.missing |= rendered.missing
            return None
        outcome.rendered += 1
        state.template, state.used = template, dict(rendered.used)
        if state.error:
            log.info("template %s renders again", spec.source)
            state.error = None
        for warning in rendered.warnings:
            if warning not in state.warnings:
                log.warning("template %s: %s", spec.source, warning)
        state.warnings = rendered.warnings
        content = rendered.text.encode()
        try:
            current = read_current(spec.destination)
        except OSError as error:
            state.used = None
            self._failed(state, f"cannot read {spec.destination} rendered from {spec.source}: "
                                f"{error.strerror}; left as it was", outcome)
            return None
        if content == current:
            return None
        digest = hashlib.sha256(content).digest()
        if digest == state.rejected_digest:
            return None  # nginx already refused these exact bytes; logged then
        return FileChange(spec.destination, content, str(spec.source))

    def _report_rejected(self, catalog) -> None:
        """One warning per hostile or broken instance, when it first appears."""
        self.last_catalog = catalog
        current = {str(rejected) for rejected in catalog.rejected}
        for text in sorted(current - self.rejected_seen):
            log.warning("skipped %s", text)
        self.rejected_seen = current

    def _failed(self, state: _TemplateState, message: str, outcome: PassOutcome) -> None:
        outcome.failed.append(message)
        if message != state.error:
            log.error("%s", message)
            state.error = message

    def _report(self, outcome: PassOutcome, by_destination: dict) -> None:
        result = outcome.result
        for change in result.applied:
            verb = "removed" if change.content is None else "rendered"
            log.info("%s %s from %s", verb, change.destination, change.template)
            state = by_destination.get(change.destination)
            if state:
                state.rejected_digest = None
        for change, detail in result.rejected:
            message = (f"nginx rejected {change.destination} rendered from {change.template}; "
                       f"kept the previous file: {detail}")
            outcome.failed.append(message)
            log.error("%s", message)
            state = by_destination.get(change.destination)
            if state and change.content is not None:
                state.rejected_digest = hashlib.sha256(change.content).digest()
        for change, reason in result.unwritable:
            message = f"cannot write {change.destination} rendered from {change.template}: {reason}; kept the previous file"
            outcome.failed.append(message)
            log.error("%s", message)
            state = by_destination.get(change.destination)
            if state:
                state.used = None  # render and try again next pass
        if result.reloaded:
            log.info("nginx reload ok in %.0f ms", result.reload_ms)
        if result.reload_error:
            message = f"nginx reload failed: {result.reload_error}; will retry on the next pass"
            outcome.failed.append(message)
            log.error("%s", message)
