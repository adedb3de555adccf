"""``--tags`` with registrator's Go-template placeholders, evaluated per container (pure).

Registrator 7.4 runs ``-tags`` through Go's ``text/template`` against the
container's inspect data, so ``-tags '{{.Config.Hostname}},web'`` tags each
service with its container's hostname. This is the subset of that language
its users write, evaluated against the same inspect payload (Docker's API
keys, which are Go's field names except ``.ID``, spelled ``Id`` in the
API):

* actions ``{{ pipeline }}`` (``{{-`` and ``-}}`` trim spaces), between
  literal text;
* operands: fields (``.Config.Labels.team``: a missing map key prints
  ``<no value>``, as in Go), string literals (``"..."`` or raw
  ```...```), integers, parenthesised pipelines;
* pipelines (``a | f x``: the value goes in as the last argument);
* registrator's helpers: ``strSlice``, ``sIndex``, ``mIndex``, ``toUpper``,
  ``toLower``, ``replace``, ``join``, ``split``, ``splitIndex``,
  ``matchFirstElement``, ``matchAllElements``.

``httpGet`` and ``jsonParse`` are refused: a registrar makes no HTTP request
a container's template asks for. Anything else Go templates have (``if``,
``range``, variables) is refused at start-up with the position, so a typo is
one line and exit status 2, never a surprise per container.

Where registrator stops the whole process when a template fails on one
container (``log.Fatal``), a failure here costs that container its forced
tags, with a warning; its services still register.
"""

from __future__ import annotations

import dataclasses
import re

NO_VALUE = "<no value>"
# Go's field names that Docker's API spells differently.
FIELD_ALIASES = {"ID": "Id"}
REFUSED_FUNCTIONS = {"httpGet": "makes an HTTP request", "jsonParse": "goes with httpGet"}


class TemplateSyntaxError(ValueError):
    """The --tags template cannot be parsed; the text names the position."""


class TemplateRunError(ValueError):
    """The template failed on one container's data."""


@dataclasses.dataclass(frozen=True)
class Field:
    path: tuple[str, ...]  # () is the dot itself


@dataclasses.dataclass(frozen=True)
class Literal:
    value: object


@dataclasses.dataclass(frozen=True)
class Call:
    function: str
    args: tuple


@dataclasses.dataclass(frozen=True)
class Pipeline:
    commands: tuple  # each a Call, or a Field/Literal/Pipeline (only first)


_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<number>-?\d+)
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<pipe>\|)
  | (?P<open>\()
  | (?P<close>\))
""", re.VERBOSE)
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "r": "\r"}


class Template:
    """A parsed ``--tags`` value: ``render(inspect)`` -> the text, then split into tags by the caller."""

    def __init__(self, source: str):
        self.source = source
        self.parts: list = []  # str or Pipeline
        self._parse()

    @property
    def is_plain(self) -> bool:
        return all(isinstance(part, str) for part in self.parts)

    def render(self, data: dict) -> str:
        return "".join(part if isinstance(part, str) else _text(_run(part, data)) for part in self.parts)

    # Parsing -----------------------------------------------------------------------------
    def _parse(self) -> None:
        text, position = self.source, 0
        while True:
            start = text.find("{{", position)
            if start < 0:
                self._literal(text[position:])
                return
            literal = text[position:start]
            inner_start = start + 2
            if text.startswith("{{- ", start):
                literal = literal.rstrip()
                inner_start += 1
            self._literal(literal)
            end = text.find("}}", inner_start)
            if end < 0:
                raise TemplateSyntaxError(f"unclosed action at character {start + 1}")
            inner_end, position = end, end + 2
            if text[end - 2:end] == " -":
                inner_end -= 1
                while position < len(text) and text[position].isspace():
                    position += 1
            self.parts.append(self._action(text[inner_start:inner_end], inner_start))

    def _literal(self, text: str) -> None:
        if "}}" in text:
            raise TemplateSyntaxError(f"unexpected '}}}}' at character {self.source.find('}}') + 1}")
        if text:
            self.parts.append(text)

    def _action(self, text: str, offset: int) -> Pipeline:
        tokens = []
        at = 0
        while at < len(text):
            match = _TOKEN.match(text, at)
            if match is None:
                raise TemplateSyntaxError(f"unexpected {text[at]!r} at character {offset + at + 1}")
            if match.lastgroup != "space":
                tokens.append((match.lastgroup, match.group(), offset + at + 1))
            at = match.end()
        if not tokens:
            raise TemplateSyntaxError(f"empty action at character {offset - 1}")
        pipeline, rest = _pipeline(tokens)
        if rest:
            raise TemplateSyntaxError(f"unexpected {rest[0][1]!r} at character {rest[0][2]}")
        return pipeline


def _pipeline(tokens: list) -> tuple[Pipeline, list]:
    commands = []
    while True:
        command, tokens = _command(tokens)
        commands.append(command)
        if tokens and tokens[0][0] == "pipe":
            tokens = tokens[1:]
            if not tokens:
                raise TemplateSyntaxError("a pipe '|' with nothing after it")
            continue
        return Pipeline(tuple(commands)), tokens


def _command(tokens: list):
    kind, text, where = tokens[0]
    if kind == "name":
        if text in REFUSED_FUNCTIONS:
            raise TemplateSyntaxError(f"{text} at character {where} is not supported: it {REFUSED_FUNCTIONS[text]}, "
                                      "and the registrar makes no request a template asks for")
        if text not in FUNCTIONS:
            raise TemplateSyntaxError(f"{text!r} at character {where} is not a supported function (supported: "
                                      f"{', '.join(sorted(FUNCTIONS))}; actions like if/range are not)")
        args, tokens = [], tokens[1:]
        while tokens and tokens[0][0] not in ("pipe", "close"):
            operand, tokens = _operand(tokens)
            args.append(operand)
        return Call(text, tuple(args)), tokens
    operand, tokens = _operand(tokens)
    if tokens and tokens[0][0] not in ("pipe", "close"):
        raise TemplateSyntaxError(f"unexpected {tokens[0][1]!r} at character {tokens[0][2]} (only a function takes "
                                  "arguments)")
    return operand, tokens


def _operand(tokens: list):
    kind, text, where = tokens[0]
    rest = tokens[1:]
    if kind == "field":
        return Field(tuple(part for part in text.split(".") if part)), rest
    if kind == "string":
        return Literal(re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), text[1:-1])), rest
    if kind == "raw":
        return Literal(text[1:-1]), rest
    if kind == "number":
        return Literal(int(text)), rest
    if kind == "open":
        inner, rest = _pipeline(rest)
        if not rest or rest[0][0] != "close":
            raise TemplateSyntaxError(f"unclosed '(' at character {where}")
        return inner, rest[1:]
    if kind == "name":
        raise TemplateSyntaxError(f"function {text!r} at character {where} needs parentheses to be an argument")
    raise TemplateSyntaxError(f"unexpected {text!r} at character {where}")


# Running --------------------------------------------------------------------------------------
def _run(node, data):
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Field):
        return _field(data, node.path)
    if isinstance(node, Pipeline):
        value, first = None, True
        for command in node.commands:
            if isinstance(command, Call):
                args = [_run(arg, data) for arg in command.args]
                if not first:
                    args.append(value)
                value = _call(command.function, args)
            else:
                value = _run(command, data)
            first = False
        return value
    raise TemplateRunError(f"cannot evaluate {node!r}")


def _field(data, path: tuple[str, ...]):
    value = data
    walked = ""
    for name in path:
        walked += "." + name
        if isinstance(value, dict):
            if name in value:
                value = value[name]
            elif FIELD_ALIASES.get(name) in value:
                value = value[FIELD_ALIASES[name]]
            elif walked.count(".") > 1 and _is_string_map(value):
                return NO_VALUE  # a missing key of a map (labels): Go prints <no value>
            else:
                raise TemplateRunError(f"can't evaluate field {walked}")
        elif value is None:
            return NO_VALUE  # Go: a nil map has no keys
        else:
            raise TemplateRunError(f"can't evaluate field {name} in {walked[:-len(name) - 1] or '.'}")
    return value


def _is_string_map(value: dict) -> bool:
    return all(isinstance(v, str) for v in value.values())


def _call(name: str, args: list):
    function, arity = FUNCTIONS[name]
    if arity is None and not args or arity is not None and len(args) != arity:
        raise TemplateRunError(f"{name} takes {arity or 'at least 1'} argument(s), got {len(args)}")
    try:
        return function(*args)
    except (TypeError, ValueError, IndexError, re.error) as error:
        raise TemplateRunError(f"{name}: {error}") from None


def _text(value) -> str:
    """As Go's fmt prints a value: a list as [a b], a bool as true/false, nothing as <no value>."""
    if value is None:
        return NO_VALUE
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(_text(item) for item in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_text(v)}" for k, v in sorted(value.items())) + "]"
    return str(value)


# registrator's helpers, with its edge cases (bridge/bridge.go) --------------------------------
def _str(value) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {_text(value)}")
    return value


def _strings(value) -> list[str]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"expected a list of strings, got {_text(value)}")
    return list(value)


def _str_slice(value, *bounds):
    value = _str(value)
    if len(bounds) == 1 and len(value) >= bounds[0]:
        return value[bounds[0]:]
    if len(bounds) == 2 and len(value) >= bounds[0] and len(value) >= bounds[1]:
        start, end = bounds
        if start == 0:
            return value[:end]
        if end < start:
            return value[start:]
        return value[start:end]
    return value


def _index_of(items: list, i: int):
    if i < 0:
        i = -i
        return items[0] if i >= len(items) else items[len(items) - i]
    return items[-1] if i >= len(items) else items[i]


def _s_index(i, items):
    items = _strings(items)
    if not items:
        raise IndexError("empty list")
    return _index_of(items, int(i))


def _m_index(key, mapping):
    if not isinstance(mapping, dict):
        raise TypeError(f"expected a map, got {_text(mapping)}")
    return mapping.get(_str(key), "")


def _replace(n, old, new, value):
    value, old, new = _str(value), _str(old), _str(new)
    return value.replace(old, new) if int(n) < 0 else value.replace(old, new, int(n))


def _split_index(i, sep, value):
    return _index_of(_str(value).split(_str(sep)), int(i))


def _match_first(pattern, items):
    compiled = re.compile(_str(pattern))
    return next((item for item in _strings(items) if compiled.search(item)), "")


def _match_all(pattern, items):
    compiled = re.compile(_str(pattern))
    return [item for item in _strings(items) if compiled.search(item)]


FUNCTIONS = {
    "strSlice": (lambda value, *bounds: _str_slice(value, *bounds), None),
    "sIndex": (_s_index, 2),
    "mIndex": (_m_index, 2),
    "toUpper": (lambda value: _str(value).upper(), 1),
    "toLower": (lambda value: _str(value).lower(), 1),
    "replace": (_replace, 4),
    "join": (lambda sep, items: _str(sep).join(_strings(items)), 2),
    "split": (lambda sep, value: _str(value).split(_str(sep)), 2),
    "splitIndex": (_split_index, 3),
    "matchFirstElement": (_match_first, 2),
    "matchAllElements": (_match_all, 2),
}
