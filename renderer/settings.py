"""The renderer's settings, built once: defaults < TOML file < environment < flags.

The result is frozen and handed to constructors; SIGHUP builds a new one
from the same sources. TOML keys are the flags' names with underscores:

    consul_addr = "127.0.0.1:8500"
    consul_token_file = "/etc/renderer/consul-token"
    template = ["/etc/renderer/templates/x.conf.j2:/etc/nginx/conf.d/x.conf"]
    template_dir = ["/etc/renderer/templates/http:/etc/nginx/conf.d"]
    check_command = "nginx -t"
    reload_command = "nginx -s reload"
    wait = "500ms:5s"
    grace = "30s"
    log_level = "info"
    [var]
    domain = "example.com"

Relative paths in the file are relative to the file. A list given by flags
replaces the file's list; ``--var`` flags override the file's keys one by one.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from agentkit import consul as consul_connection
from agentkit.consul import ConsulAddress

from .errors import ConfigError
from .quiescence import Wait
from .templates import TemplateSpec, expand_dirs

DEFAULTS = {
    "check_command": "nginx -t",
    "reload_command": "nginx -s reload",
    "log_level": "info",
    "grace": "30s",
}
FILE_KEYS = {"consul_addr", "consul_token", "consul_token_file", "template", "template_dir", "var",
             "check_command", "reload_command", "wait", "log_level", "grace"}
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)?$")


@dataclasses.dataclass(frozen=True)
class Settings:
    consul_address: ConsulAddress
    consul_token: str | None = dataclasses.field(repr=False)
    templates: tuple[TemplateSpec, ...]
    template_dirs: tuple[tuple[Path, Path], ...]
    variables: Mapping[str, str]
    check_command: str
    reload_command: str
    wait: Wait | None
    grace: float
    log_level: str
    config_file: Path | None

    def template_specs(self) -> list[TemplateSpec]:
        """Explicit templates, then every *.j2 of the template directories, as of now."""
        specs = list(self.templates) + expand_dirs(self.template_dirs)
        seen: dict[Path, TemplateSpec] = {}
        for spec in specs:
            other = seen.setdefault(spec.destination, spec)
            if other is not spec:
                raise ConfigError(f"templates {other.source} and {spec.source} both render to {spec.destination}")
        return specs


def build(flags: Mapping, environ: Mapping[str, str] = os.environ) -> Settings:
    """``flags`` holds the CLI values; None (or an empty tuple) means "not given"."""
    config_file = Path(flags["config"]) if flags.get("config") else None
    file_values = load_file(config_file) if config_file else {}

    def pick(key: str):
        value = flags.get(key)
        return value if value not in (None, ()) else file_values.get(key)

    # Consul's own variables sit between the file and the flags.
    address = consul_connection.resolve_address(
        flags.get("consul_addr") or environ.get("CONSUL_HTTP_ADDR") or file_values.get("consul_addr"), {})
    token = None
    for source in (flags, {"consul_token": environ.get("CONSUL_HTTP_TOKEN"),
                           "consul_token_file": environ.get("CONSUL_HTTP_TOKEN_FILE")}, file_values):
        if source.get("consul_token") or source.get("consul_token_file"):
            token = consul_connection.resolve_token(source.get("consul_token"), source.get("consul_token_file"), {})
            break

    templates = tuple(TemplateSpec(*pair) for pair in (_pairs(flags.get("template"), "--template")
                                                       or file_values.get("template", ())))
    template_dirs = _pairs(flags.get("template_dir"), "--template-dir") or tuple(file_values.get("template_dir", ()))
    variables = dict(file_values.get("var", {}))
    variables.update(parse_variables(flags.get("var") or ()))
    wait_text = pick("wait")
    return Settings(
        consul_address=address, consul_token=token, templates=templates, template_dirs=template_dirs,
        variables=MappingProxyType(variables),
        check_command=pick("check_command") or DEFAULTS["check_command"],
        reload_command=pick("reload_command") or DEFAULTS["reload_command"],
        wait=parse_wait(wait_text) if wait_text else None,
        grace=parse_duration(pick("grace") or DEFAULTS["grace"]),
        log_level=(pick("log_level") or DEFAULTS["log_level"]).lower(),
        config_file=config_file)


def load_file(path: Path) -> dict:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path}: {error}") from None
    unknown = sorted(set(data) - FILE_KEYS)
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting {unknown[0]!r}")
    base = path.parent
    for key in ("template", "template_dir"):
        if key in data:
            if not isinstance(data[key], list) or not all(isinstance(v, str) for v in data[key]):
                raise ConfigError(f"config file {path}: {key} must be a list of \"SRC:DEST\" strings")
            data[key] = tuple((_relative(base, s), _relative(base, d)) for s, d in _pairs(data[key], key))
    if "var" in data:
        if not isinstance(data["var"], dict):
            raise ConfigError(f"config file {path}: [var] must be a table")
        data["var"] = parse_variables(f"{k}={v}" for k, v in data["var"].items())
    if "consul_token_file" in data:
        data["consul_token_file"] = str(_relative(base, data["consul_token_file"]))
    for key in ("consul_addr", "consul_token", "check_command", "reload_command", "wait", "log_level", "grace"):
        if key in data and not isinstance(data[key], str):
            raise ConfigError(f"config file {path}: {key} must be a string")
    return data


def _relative(base: Path, path) -> Path:
    path = Path(path)
    return path if path.is_absolute() else base / path


def _pairs(values, what: str) -> tuple[tuple[Path, Path], ...]:
    pairs = []
    for value in values or ():
        if isinstance(value, tuple):
            pairs.append(value)
            continue
        source, separator, destination = value.partition(":")
        if not separator or not source or not destination:
            raise ConfigError(f"{what} {value!r}: expected SRC:DEST")
        pairs.append((Path(source), Path(destination)))
    return tuple(pairs)


def parse_variables(items) -> dict[str, str]:
    variables = {}
    for item in items:
        key, separator, value = str(item).partition("=")
        if not separator or not _VARIABLE.fullmatch(key):
            raise ConfigError(f"--var {item!r}: expected KEY=VALUE with KEY a name like domain or http_port")
        variables[key] = value
    return variables


def parse_duration(text: str) -> float:
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise ConfigError(f"invalid duration {text!r}: expected e.g. 500ms, 2s, 1m or a number of seconds")
    number, unit = float(match[1]), match[2] or "s"
    return number * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]


def parse_wait(text: str) -> Wait:
    """``MIN[:MAX]``; MAX defaults to 4 x MIN, as consul-template does."""
    low, _, high = text.partition(":")
    minimum = parse_duration(low)
    maximum = parse_duration(high) if high else 4 * minimum
    if maximum < minimum:
        raise ConfigError(f"--wait {text!r}: MAX is below MIN")
    return Wait(minimum, maximum)
