"""One render pass: render what is due, compare with disk, apply.

Shared by ``renderer once`` and the daemon. The state is what every output
should be now; a template is rendered again when

* a value it used changed (see ``template_api``), or one of the template
  files it read (itself, its includes and imports) changed on disk;
* its last attempt failed and its retry is due: a failed render, a file
  nginx refused, a destination that could not be written are all retried
  with capped backoff (``agentkit.backoff.failure_backoff``) whatever the
  cause, so nothing waits for an unrelated change to heal;
* the pass is forced (first pass, settings re-read).

Output rendered while data was still missing is never written: the caller
fetches what ``PassOutcome.missing`` lists and runs the pass again. A
template that failed, or still misses data, keeps what it read as its
dependencies: the daemon goes on watching them, and a key written again
renders it again at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path

from agentkit.backoff import Retry
from agentkit.lifecycle import Lifecycle

from agentkit.files import read_current
from renderer.apply.applier import Applier, ApplyResult
from renderer.apply.journal import FileChange
from renderer.apply.nginx_master import port_is_free, unbindable
from renderer.routes.model import RouteTable
from . import bounded
from .api import CATALOG_KINDS, TemplateData, changed, kv_reads
from .isolation import Exclusions, Isolator
from .loader import Rendered, TemplateLoader, TemplateSpec, stat_key

log = logging.getLogger("renderer")


@dataclasses.dataclass
class _TemplateState:
    spec: TemplateSpec
    used: dict | None = None               # dependency -> value, as read by the last render
    inputs: dict[str, tuple | None] | None = None  # template files the last render read -> stat_key
    error: str | None = None               # the last failure, logged once
    retry: Retry = dataclasses.field(default_factory=Retry)
    warnings: tuple[str, ...] = ()
    refused_digest: bytes | None = None   # content nginx refused: not offered again before the retry
    blocked: tuple[str, int] | None = None  # the address:port nginx could not bind for it: offered once free

    def inputs_changed(self) -> bool:
        return self.inputs is None or any(stat_key(path) != key for path, key in self.inputs.items())


@dataclasses.dataclass
class PassOutcome:
    missing: set = dataclasses.field(default_factory=set)
    rendered: int = 0
    result: ApplyResult | None = None
    failed: list[str] = dataclasses.field(default_factory=list)  # one line per failure this pass
    renders: dict[str, str] = dataclasses.field(default_factory=dict)  # template -> "ok" or "error", this pass
    follow_up: bool = False  # services were left out: the other templates should follow at once

    @property
    def ok(self) -> bool:
        return not self.failed and not self.missing


class RenderPass:
    def __init__(self, loader: TemplateLoader, applier: Applier, specs: list[TemplateSpec],
                 limits: bounded.Limits = bounded.Limits(), lifecycle: Lifecycle | None = None,
                 retrying: bool = True):
        self.loader = loader
        self.applier = applier
        self.retrying = retrying  # the daemon retries; `once` leaves that to the next run
        self.limits = limits
        self.lifecycle = lifecycle or Lifecycle()
        self.clock = self.lifecycle.clock
        self.states: dict[Path, _TemplateState] = {}
        self.removed: list[TemplateSpec] = []
        self.catalog_refusals_seen: set[str] = set()
        self.routes_seen: set[str] = set()
        self.settings_seen: set[tuple[str, str]] = set()  # the KV route settings in force, as last said
        self.last_catalog = None
        # Called with the pass's data right before files are applied (dynamic peers write the table
        # nginx loads on reload here, so a reload that adds an upstream finds its peers).
        self.before_apply = None
        # Called with the pass's data once the route table is built, before templates render
        # (dynamic peers push it here: instance moves reach nginx without waiting for the render).
        self.before_render = None
        # The services nginx refused, left out of what templates see (renderer.render.isolation).
        self.exclusions = Exclusions(self.clock)
        self._data: TemplateData | None = None  # this pass's data as it came, before the exclusions
        isolator = Isolator(lambda source, data, locate: bounded.render_all(
            self.loader, [source], data, self.limits, self.lifecycle, locate=locate)[source], self.exclusions)
        applier.isolate = lambda change, detail, trial: self._isolate(isolator, change, detail, trial)
        self.set_specs(specs)

    def set_specs(self, specs: list[TemplateSpec]) -> None:
        """Adopt a new template list; outputs of templates that are gone get removed next pass."""
        new = {spec.destination: spec for spec in specs}
        self.removed += [state.spec for dest, state in self.states.items() if dest not in new]
        self.states = {dest: (self.states[dest] if dest in self.states and self.states[dest].spec == spec
                              else _TemplateState(spec)) for dest, spec in new.items()}

    def dependencies(self) -> set[tuple]:
        """Everything the templates read in their last renders, failed or not: what must be watched."""
        return {dependency for state in self.states.values() if state.used for dependency in state.used}

    def uses_catalog(self) -> bool:
        return any(d[0] in CATALOG_KINDS for d in self.dependencies())

    def kv_paths(self) -> set[str]:
        return kv_reads(self.dependencies())

    def input_files(self) -> set[str]:
        """Every template file the templates read: what must be watched on disk."""
        return {path for state in self.states.values() if state.inputs for path in state.inputs}

    def next_retry(self) -> float | None:
        """When the earliest failed template or pending reload is due again (None: nothing failed)."""
        times = [state.retry.at for state in self.states.values() if state.retry.pending]
        if self.applier.reload_pending and self.applier.reload_retry.pending:
            times.append(self.applier.reload_retry.at)
        if self.exclusions.next_retry() is not None:
            times.append(self.exclusions.next_retry())
        return min(times) if times else None

    def template_errors(self) -> dict[str, str | None]:
        """Every template, and why it fails now (None: it does not)."""
        return {str(state.spec.source): state.error for state in self.states.values()}

    def pending_failures(self) -> dict[str, str]:
        """What is failing now, by template (and ``nginx reload``), for the status page."""
        failing = {str(state.spec.source): state.error for state in self.states.values() if state.error}
        if self.applier.reload_pending and self.applier.reload_retry.pending:
            failing["nginx reload"] = "pending"
        return failing

    def view(self, data: TemplateData) -> TemplateData:
        """``data`` as this pass's templates see it: without the services nginx refused."""
        return self.exclusions.apply(data)

    def run(self, data: TemplateData, force: bool = False) -> PassOutcome:
        self.exclusions.lift_due(data)
        excluded = self.exclusions.names()
        self._data = data
        outcome = self._run(self.exclusions.apply(data), force)
        outcome.follow_up = bool(self.exclusions.names() - excluded)
        return outcome

    def _isolate(self, isolator: Isolator, change: FileChange, detail: str, trial) -> bytes | None:
        state = self.states.get(change.destination)
        if state is None or self._data is None or change.content is None:
            return None
        final = isolator.replacement(state.spec.source, change.destination, self._data, detail, trial)
        if final is None:
            return None
        # What the applied file was rendered from: the next pass compares with this, not the refused render.
        state.used = self.exclusions.apply(self._data).values(final.used)
        return final.content

    def _run(self, data: TemplateData, force: bool) -> PassOutcome:
        outcome = PassOutcome()
        now = self.clock()
        if data.catalog is not None and data.catalog is not self.last_catalog:
            self._report_catalog_refusals(data.catalog)
        changes = [FileChange(spec.destination, None, str(spec.source)) for spec in self.removed
                   if spec.destination.exists()]
        self.removed = []
        due = [state for state in self.states.values() if force or self._due(state, data, now)]
        # The route table as this process built it before the render child forks (deciding what is due
        # computes it): what each() keeps is keyed by its objects' addresses, valid only for objects that
        # outlive the child.
        table = data.evaluated(("routes", self.loader.route_options))
        if due and table is not None and self.before_render is not None:
            self.before_render(data)
        results = bounded.render_all(self.loader, [state.spec.source for state in due], data, self.limits,
                                     self.lifecycle)
        by_destination = {}
        for state in due:
            change = self._take(state, results[state.spec.source], data, table, now, outcome)
            if change:
                changes.append(change)
                by_destination[change.destination] = state
        if due:
            self._report_routes(data)
        if changes or self.applier.reload_due(now):
            if changes and self.before_apply is not None:
                self.before_apply(data)
            outcome.result = self.applier.apply(changes)
            self._report(outcome, by_destination)
        if self.applier.reload_pending and outcome.result is None:
            outcome.failed.append("nginx reload pending (retrying)")
        return outcome

    def _due(self, state: _TemplateState, data: TemplateData, now: float) -> bool:
        if state.inputs is not None and state.inputs_changed():
            self.loader.forget_fragments(state.spec.source)  # what its each() calls rendered is stale
            return True
        if state.retry.due(now) and state.blocked and not port_is_free(*state.blocked):
            # nginx could not bind this file's listener; offering it again would stall nginx's master in
            # its bind retries (about 2.5 s) for nothing. Look again later; the change is not given up.
            state.retry.failed(now)
        return (state.used is None or state.retry.due(now) or state.inputs_changed()
                or changed(state.used, data))

    def _take(self, state: _TemplateState, rendered: Rendered, data: TemplateData, table, now: float,
              outcome: PassOutcome) -> FileChange | None:
        """Record what a render read and returned; the change to apply, if any."""
        spec = state.spec
        if rendered.used or rendered.error is None:  # a render killed mid-way told nothing: keep the last
            state.used = data.values(rendered.used)
        if rendered.inputs:
            state.inputs = dict(rendered.inputs)
        if rendered.error is not None:
            outcome.renders[str(spec.source)] = "error"
            self._failed(state, f"{rendered.error}; {spec.destination} left as it was", outcome, now)
            return None
        if rendered.missing:
            outcome.missing |= rendered.missing
            return None
        outcome.rendered += 1
        outcome.renders[str(spec.source)] = "ok"
        self.loader.keep_fragments(spec.source, rendered, table)
        for warning in rendered.warnings:
            if warning not in state.warnings:
                log.warning("template %s: %s", spec.source, warning)
        state.warnings = rendered.warnings
        content = rendered.content
        try:
            current = read_current(spec.destination)
        except OSError as error:
            self._failed(state, f"cannot read {spec.destination} rendered from {spec.source}: "
                                f"{error.strerror}; left as it was", outcome, now)
            return None
        if (state.refused_digest is not None and not state.retry.due(now)
                and hashlib.sha256(content).digest() == state.refused_digest):
            return None  # nginx refused these exact bytes; logged then, offered again when the retry is due
        if content == current:
            self._succeeded(state)
            return None
        return FileChange(spec.destination, content, str(spec.source))

    def _report_routes(self, data: TemplateData) -> None:
        """One warning per refused route, instance or value and per disagreement, when it first appears; one
        line per route setting from KV when it comes into force or leaves.

        Said here, once for every template that reads the table, rather than
        by each template: the http and stream templates read the same table.
        """
        current, in_force = set(), set()
        for dependency in {d for state in self.states.values() if state.used for d in state.used
                           if d[0] == "routes"}:
            table = data.evaluate(dependency)
            if not isinstance(table, RouteTable):
                continue
            current |= {f"route refused: {refusal}" for refusal in table.refused} | set(table.notes)
            current |= {str(refusal) for refusal in table.kv_refused}
            in_force |= set(table.settings_in_force)
        for text in sorted(current - self.routes_seen):
            log.warning("%s", text)
        for path, value in sorted(in_force - self.settings_seen):
            log.info("route setting %s=%r in force", path, value)
        for path in sorted({path for path, _ in self.settings_seen} - {path for path, _ in in_force}):
            log.info("route setting %s removed", path)
        self.routes_seen, self.settings_seen = current, in_force

    def _report_catalog_refusals(self, catalog) -> None:
        """One warning per hostile or broken instance or value, when it first appears."""
        self.last_catalog = catalog
        current = {refusal.line: refusal for refusal in catalog.refused}
        for text in sorted(set(current) - self.catalog_refusals_seen):
            refusal = current[text]
            log.warning("%s", text, extra={"instance": refusal.service_id or None, "node": refusal.node,
                                           "reason": refusal.reason})
        self.catalog_refusals_seen = set(current)

    def _failed(self, state: _TemplateState, message: str, outcome: PassOutcome, now: float) -> None:
        outcome.failed.append(message)
        delay = state.retry.failed(now)
        if message != state.error:
            log.error("%s%s", message, f" (retrying in {delay:.0f}s, then with backoff)" if self.retrying else "",
                      extra={"template": str(state.spec.source), "file": str(state.spec.destination)})
            state.error = message

    def _succeeded(self, state: _TemplateState) -> None:
        if state.error:
            log.info("template %s renders and applies again", state.spec.source,
                     extra={"template": str(state.spec.source)})
        state.error = None
        state.refused_digest = None
        state.blocked = None
        state.retry.succeeded()

    def _report(self, outcome: PassOutcome, by_destination: dict) -> None:
        result = outcome.result
        now = self.clock()
        for change in result.applied:
            verb = "removed" if change.content is None else "rendered"
            log.info("%s %s from %s", verb, change.destination, change.template,
                     extra={"file": str(change.destination), "template": change.template})
            state = by_destination.get(change.destination)
            if state:
                self._succeeded(state)
        for change, detail in result.refused_by_check:
            self._refused(by_destination.get(change.destination), outcome, now, change,
                          f"nginx -t refused {change.destination} rendered from {change.template}; "
                          f"kept the previous file: {detail}")
        for change, detail in result.refused_at_reload:
            self._refused(self.states.get(change.destination), outcome, now, change,
                          f"nginx refused to load {change.destination} rendered from {change.template}; "
                          f"put back the file it runs: {detail}")
        for change, reason in result.unwritable:
            message = f"cannot write {change.destination} rendered from {change.template}: {reason}; kept the previous file"
            state = by_destination.get(change.destination)
            if state:
                self._failed(state, message, outcome, now)
            else:
                outcome.failed.append(message)
                log.error("%s", message)
        if result.check_ms:
            log.debug("nginx config check took %.0f ms", result.check_ms)
        if result.reloaded and result.confirmed:
            log.info("nginx reload confirmed in %.0f ms: its new workers run the new configuration",
                     result.reload_ms, extra={"duration_ms": round(result.reload_ms)})
        elif result.reloaded:
            log.info("nginx reload command succeeded in %.0f ms (not confirmed: nginx_pid_file is empty)",
                     result.reload_ms)
        if result.reload_error:
            delay = self.applier.reload_retry.at - now
            message = (f"nginx reload failed: {result.reload_error}; "
                       + (f"retrying in {delay:.0f}s" if self.retrying
                          else "the files stay and the next run reloads them"))
            outcome.failed.append(message)
            log.error("%s", message)

    def _refused(self, state: _TemplateState | None, outcome: PassOutcome, now: float, change: FileChange,
                 message: str) -> None:
        if state is None:
            outcome.failed.append(message)
            log.error("%s", message)
            return
        if change.content is not None:
            state.refused_digest = hashlib.sha256(change.content).digest()
        state.blocked = unbindable(message)
        self._failed(state, message, outcome, now)
