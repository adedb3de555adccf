"""Loading Jinja2 templates and rendering one with the template API.

One Jinja environment per template directory, so ``{% include %}`` and
``{% import %}`` resolve next to the template, and Jinja's own mtime check
(``auto_reload``) notices an edited file. Undefined names are errors
(``StrictUndefined``): a typo fails the render with its line instead of
silently writing an empty directive.
"""

from __future__ import annotations

import dataclasses
import traceback
from collections.abc import Mapping
from pathlib import Path

import jinja2

from .errors import TemplateError
from .template_api import Recorder, TemplateData


@dataclasses.dataclass(frozen=True)
class TemplateSpec:
    """One template source and the file it renders to."""

    source: Path
    destination: Path

    def __str__(self) -> str:
        return str(self.source)


def expand_dirs(pairs: tuple[tuple[Path, Path], ...]) -> list[TemplateSpec]:
    """Every ``*.j2`` in each source directory renders to DEST/<name without .j2>."""
    specs = []
    for source_dir, dest_dir in pairs:
        if not source_dir.is_dir():
            continue
        for source in sorted(source_dir.glob("*.j2")):
            if source.is_file():
                specs.append(TemplateSpec(source, dest_dir / source.name[:-3]))
    return specs


@dataclasses.dataclass(frozen=True)
class Rendered:
    text: str
    used: Mapping[tuple, object]
    missing: frozenset
    warnings: tuple[str, ...] = ()


class TemplateLoader:
    """Compiles templates on demand and caches one environment per directory."""

    def __init__(self, variables: Mapping[str, str]):
        self.variables = dict(variables)
        self._environments: dict[Path, jinja2.Environment] = {}

    def _environment(self, directory: Path) -> jinja2.Environment:
        env = self._environments.get(directory)
        if env is None:
            env = jinja2.Environment(
                loader=jinja2.FileSystemLoader(str(directory)), undefined=jinja2.StrictUndefined,
                keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, auto_reload=True)
            env.globals.update(self.variables)
            env.filters["host_port"] = host_port
            self._environments[directory] = env
        return env

    def load(self, source: Path) -> jinja2.Template:
        """The compiled template; the same object until the file changes."""
        try:
            return self._environment(source.parent).get_template(source.name)
        except jinja2.TemplateSyntaxError as error:
            raise TemplateError(str(source), error.lineno, error.message) from None
        except jinja2.TemplateNotFound as error:
            if str(error) == source.name:
                raise TemplateError(str(source), None, "file not found") from None
            raise TemplateError(str(source), None, f"included template {error} not found") from None
        except (OSError, UnicodeDecodeError) as error:
            raise TemplateError(str(source), None, f"cannot read: {error}") from None

    def render(self, source: Path, data: TemplateData) -> Rendered:
        template = self.load(source)
        recorder = Recorder(data)
        try:
            text = template.render(recorder.functions())
        except jinja2.TemplateSyntaxError as error:  # from an include compiled late
            raise TemplateError(error.filename or str(source), error.lineno, error.message) from None
        except Exception as error:  # a template may raise anything; contain it, name the line
            filename, line = _template_frame(error, str(source))
            raise TemplateError(filename, line, _describe(error)) from None
        return Rendered(text, recorder.used, frozenset(recorder.missing), tuple(recorder.warnings))


def host_port(instance) -> str:
    """``ADDRESS:PORT`` for nginx, with IPv6 addresses in brackets."""
    address = instance.address
    return f"[{address}]:{instance.port}" if ":" in address else f"{address}:{instance.port}"


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
    text = str(error) or type(error).__name__
    return text.splitlines()[0][:300]
