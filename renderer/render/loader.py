"""Loading Jinja2 templates and rendering one with the template API.

One Jinja environment per template directory, so ``{% include %}`` and
``{% import %}`` resolve next to the template, and Jinja's own mtime check
(``auto_reload``) notices an edited file. Undefined names are errors
(``StrictUndefined``): a typo fails the render with its line instead of
silently writing an empty directive.

Templates run in Jinja's sandbox: operators write them, but nothing a
template does should reach Python's internals (``''.__class__``) or ``os``.
The environment records every template file a render loads (the template,
its includes, imports and parents): those are the render's *inputs*, so an
edit to a shared partial renders every template that used it again.

Compiling is running: Jinja evaluates constant expressions while compiling
(``{{ "x" | center(10**10) }}`` is computed then), so templates are only
ever compiled where they render, inside the bounded child
(:mod:`renderer.bounded`); a bytecode cache keeps that cheap.

A render that raised while data it asked for was still missing is reported
as missing, not as a failure: ``service("api")[0]`` fails on the pass before
the catalog arrives and must simply be rendered again once it has.
Time and memory bounds are not enforced here but around the call, by
:mod:`renderer.bounded`; the output-size bound is checked on the result.
"""

from __future__ import annotations

import dataclasses
import os
import traceback
from collections.abc import Mapping
from pathlib import Path

import jinja2
import jinja2.runtime
import jinja2.sandbox

from renderer.catalog.certificates import Certificate
from renderer.catalog.model import Instance, Node
from renderer.errors import ConfigError, TemplateError
from renderer.routes.model import Auth, Host, Listener, Location, Passthrough, Pool, RouteOptions, RouteTable, Server
from .api import Recorder, ServiceSummary, TemplateData

# Items whose text each() keeps: objects of the route table, alive as long as the data that holds them.
MEMO_KEYS = frozenset({Host, Location, Pool, Listener, Passthrough})
# Types whose every public attribute is plain data: read without the sandbox's generic check.
PLAIN_DATA = frozenset({Instance, Node, ServiceSummary, RouteTable, Host, Location, Pool, Server, Auth, Listener,
                        Passthrough, Certificate})


@dataclasses.dataclass(frozen=True)
class TemplateSpec:
    """One template source and the file it renders to."""

    source: Path
    destination: Path

    def __str__(self) -> str:
        return str(self.source)


def expand_dirs(pairs: tuple[tuple[Path, Path], ...]) -> list[TemplateSpec]:
    """Every ``*.j2`` in each source directory renders to DEST/<name without .j2>.

    A source directory that is missing or unreadable is an error, never an
    empty set: treating it as empty would remove every file it renders
    (a vanished mount would drop every route).
    """
    specs = []
    for source_dir, dest_dir in pairs:
        try:
            sources = sorted(source_dir.glob("*.j2")) if source_dir.is_dir() else None
        except OSError as error:
            raise ConfigError(f"template directory {source_dir}: {error.strerror}") from None
        if sources is None:
            raise ConfigError(f"template directory {source_dir} does not exist")
        for source in sources:
            if source.is_file():
                specs.append(TemplateSpec(source, dest_dir / source.name[:-3]))
    return specs


class OutputTooLarge(Exception):
    pass


@dataclasses.dataclass(frozen=True)
class Rendered:
    content: bytes              # the output, UTF-8: what is written (and what crosses from the render child)
    used: tuple[tuple, ...]     # every dependency the render asked for (see template_api)
    missing: frozenset
    warnings: tuple[str, ...] = ()
    inputs: tuple[tuple[str, tuple | None], ...] = ()  # every template file the render read, with its stat_key
    error: TemplateError | None = None  # the render failed: text is empty, the rest says what it read
    fragments: tuple[tuple[tuple, str], ...] = ()  # each() texts rendered this time: ((macro, id(item), ...), text)
    fragment_ids: frozenset = frozenset()  # every each() key the render used (kept or rendered)
    # With locate: (first line, last line, services) of every block each() rendered from a route table object.
    blocks: tuple[tuple[int, int, tuple[str, ...]], ...] = ()

    @property
    def text(self) -> str:
        return self.content.decode()

    @classmethod
    def failed(cls, error: TemplateError) -> "Rendered":
        return cls(b"", (), frozenset(), (), (), error)


class _RecordingEnvironment(jinja2.sandbox.SandboxedEnvironment):
    """A sandboxed environment that notes the file of every template it hands out.

    Attributes of the renderer's own plain-data types (frozen dataclasses of
    strings, numbers and tuples: an instance, a node, a service summary) are
    read directly: the sandbox's generic check of every attribute read made
    it most of a large render's time. Names starting with ``_`` stay refused,
    and any other object gets the sandbox's full check.
    """

    loaded: dict[str, tuple | None] | None = None

    def getattr(self, obj, attribute):
        if type(obj) in PLAIN_DATA and not attribute.startswith("_"):
            try:
                return getattr(obj, attribute)
            except AttributeError:
                pass
        return super().getattr(obj, attribute)

    def _note(self, template: jinja2.Template) -> jinja2.Template:
        if self.loaded is not None and template.filename and template.filename not in self.loaded:
            self.loaded[template.filename] = stat_key(template.filename)
        return template

    def get_template(self, name, parent=None, globals=None):
        return self._note(super().get_template(name, parent, globals))

    def select_template(self, names, parent=None, globals=None):
        return self._note(super().select_template(names, parent, globals))


class TemplateLoader:
    """Compiles templates on demand and caches one environment per directory."""

    def __init__(self, variables: Mapping[str, str], bytecode_cache: jinja2.BytecodeCache | None = None):
        self.variables = dict(variables)
        # each()'s texts by template: {(macro, id(item), *values): text}, and the route table that keeps the items alive.
        self.fragments: dict[Path, dict[tuple, str]] = {}
        self._fragment_anchors: dict[Path, object] = {}
        # Pure functions of the variables (domain, http_port, https_port, stream_ports): see routes.
        self.route_options = RouteOptions.from_variables(self.variables)
        self.bytecode_cache = bytecode_cache
        self._environments: dict[Path, _RecordingEnvironment] = {}

    def _environment(self, directory: Path) -> _RecordingEnvironment:
        env = self._environments.get(directory)
        if env is None:
            env = _RecordingEnvironment(
                loader=jinja2.FileSystemLoader(str(directory)), undefined=jinja2.StrictUndefined,
                keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, auto_reload=True,
                bytecode_cache=self.bytecode_cache)
            env.globals.update(self.variables)
            env.globals["listen_port_problem"] = self.route_options.listen.problem
            env.filters["host_port"] = host_port
            self._environments[directory] = env
        return env

    def load(self, source: Path) -> jinja2.Template:
        """The compiled template; the same object until the file changes."""
        try:
            return self._environment(source.parent).get_template(source.name)
        except jinja2.TemplateSyntaxError as error:
            raise TemplateError(error.filename or str(source), error.lineno, error.message) from None
        except jinja2.TemplateNotFound as error:
            if error.name == source.name:
                raise TemplateError(str(source), None, "file not found") from None
            raise TemplateError(str(source), None, f"included template {error.name!r} not found") from None
        except (OSError, UnicodeDecodeError) as error:
            raise TemplateError(str(source), None, f"cannot read: {error}") from None

    def render(self, source: Path, data: TemplateData, max_output: int | None = None,
               locate: bool = False) -> Rendered:
        """Render ``source``; a failure is returned in ``Rendered.error``, with what was read until then."""
        env = self._environment(source.parent)
        env.loaded = loaded = {}
        recorder = Recorder(data, self.route_options)
        known, fresh, used = self.fragments.get(source, {}), {}, set()
        calls: list[tuple[str, list[tuple[int, tuple[str, ...]]]]] = []  # with locate: each() call -> its parts

        def each(items, macro, *also):
            """``{{ each(table.hosts, server_block, https_listen) }}``: ``macro(item, *also)`` for every item, joined.

            For a route table object (a host, pool, listener, ...) the text is
            kept: while the route table hands out the same object (nothing about
            it changed), the next render reuses it instead of calling the macro.
            So the macro may read only its arguments and the variables; what
            else it needs goes in ``also`` (plain values: strings, numbers),
            which is part of the key.
            """
            if not isinstance(macro, jinja2.runtime.Macro):
                raise TypeError(f"each() takes a macro after the items, not {type(macro).__name__}")
            if any(not isinstance(value, (str, int, bool, type(None))) for value in also):
                raise TypeError("each() takes plain values (strings, numbers) after the macro")
            texts, items = [], list(items)
            for item in items:
                if type(item) not in MEMO_KEYS:
                    texts.append(str(macro(item, *also)))
                    continue
                identity = (macro.name, id(item), *also)
                used.add(identity)
                text = known.get(identity)
                if text is None:
                    text = fresh[identity] = str(macro(item, *also))
                texts.append(text)
            joined = "".join(texts)
            if locate:
                calls.append((joined, [(len(text), owners(item)) for text, item in zip(texts, items)]))
            return joined

        text, error = "", None
        try:
            template = self.load(source)
            # Jinja's own join, in C: counting chunk by chunk in Python cost 15 % of a large render.
            # Memory is bounded around the call (the render child's address-space limit).
            text = template.render({**recorder.functions(), "each": each})
            if max_output is not None and len(text) > max_output:
                raise OutputTooLarge()
        except OutputTooLarge:
            error = TemplateError(str(source), None, f"output is larger than {max_output} bytes (render_max_output)")
        except TemplateError as failure:
            error = failure
        except jinja2.TemplateSyntaxError as failure:  # from an include compiled late
            error = TemplateError(failure.filename or str(source), failure.lineno, failure.message)
        except Exception as failure:  # a template may raise anything; contain it, name the line
            # With data still missing (service("api")[0] before the catalog arrived) it is no verdict.
            if not recorder.missing:
                filename, line = _template_frame(failure, str(source))
                error = TemplateError(filename, line, _describe(failure))
        finally:
            env.loaded = None
        loaded.setdefault(str(source), stat_key(source))  # a file that failed to compile is an input too
        blocks = _blocks(text, calls) if locate and error is None else ()
        return Rendered(text.encode() if error is None else b"", tuple(recorder.used), frozenset(recorder.missing),
                        tuple(recorder.warnings), tuple(loaded.items()), error, tuple(fresh.items()),
                        frozenset(used), blocks)

    def keep_fragments(self, source: Path, rendered: Rendered, table) -> None:
        """After a render elsewhere (the child): its each() texts serve the next render of ``source``.

        Texts are keyed by their item's ``id()``, which names one object only
        while it lives. ``table`` is the route table this process had built
        before the child forked, so every item the child rendered from it is
        an object here too, at the same address; it is kept until the next
        render replaces it, so no new object can take one of those addresses
        meanwhile. Without one (the child built the table itself, on a first
        pass) the texts name the child's objects and nothing is kept. Texts
        whose item the render did not use are dropped.
        """
        if not isinstance(table, RouteTable) or rendered.error is not None:
            self.forget_fragments(source)
            return
        known = self.fragments.get(source, {})
        merged = {key: known[key] for key in rendered.fragment_ids if key in known}
        merged.update(rendered.fragments)
        self.fragments[source] = merged
        self._fragment_anchors[source] = table

    def forget_fragments(self, source: Path) -> None:
        """The template changed: what its each() calls rendered no longer holds."""
        self.fragments.pop(source, None)
        self._fragment_anchors.pop(source, None)


def owners(item) -> tuple[str, ...]:
    """The services a route table object renders for: whose registration a block of it in a file comes from."""
    if isinstance(item, Host):
        return tuple(sorted({name for location in (*item.http, *item.https)
                             for name in (location.service, *((location.auth.service,) if location.auth else ()))}))
    if isinstance(item, (Pool, Location, Listener, Passthrough)):
        return (item.service,)
    return ()


def _blocks(text: str, calls) -> tuple[tuple[int, int, tuple[str, ...]], ...]:
    """(first line, last line, services) of every each() block in ``text``, found call by call in order."""
    blocks, cursor = [], 0
    for joined, parts in calls:
        start = text.find(joined, cursor) if joined else -1
        if start < 0:
            continue  # its output was filtered or transformed by the template: not locatable
        cursor = start + len(joined)
        for length, services in parts:
            if services and length:
                first = text.count("\n", 0, start) + 1
                last = first + text.count("\n", start, start + length - 1)
                blocks.append((first, last, services))
            start += length
    return tuple(blocks)


def stat_key(path) -> tuple | None:
    """What tells one version of a file from the next: (mtime in ns, size, inode); None when absent."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


def host_port(instance) -> str:
    """The ``host_port`` filter: ``ADDRESS:PORT`` for nginx, with IPv6 addresses in brackets."""
    return instance.host_port


def _template_frame(error: BaseException, default: str) -> tuple[str, int | None]:
    """Jinja rewrites tracebacks so template frames carry the template's file and line."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename.endswith(".j2")
              or f.filename == default]
    if not frames:
        return default, None
    return frames[-1].filename, frames[-1].lineno


def _describe(error: BaseException) -> str:
    if isinstance(error, KeyError) and error.args:
        return str(error.args[0])
    if isinstance(error, MemoryError):
        return "ran out of memory (the render's memory limit)"
    if isinstance(error, RecursionError):
        return "recursion too deep"
    text = str(error) or type(error).__name__
    return text.splitlines()[0][:300]
