"""A container's ``SERVICE_*`` settings: where each comes from, which port it applies to (pure).

Settings come from ``SERVICE_*`` environment variables and labels; a label
beats an environment variable, a per-port key (``SERVICE_<port>_<KEY>``)
beats the generic one for that port. ``<port>`` is the exposed port number
and matches every protocol on it (``SERVICE_53_NAME`` names 53/tcp and
53/udp). Keys are case-sensitive on ``SERVICE_`` and lower-cased after it.
Every warning cites the setting as the operator wrote it (label or env,
key, value).
"""

from __future__ import annotations

import dataclasses

FALSE = ("false", "no", "off", "0")
TRUE = ("true", "yes", "on", "1")


@dataclasses.dataclass(frozen=True)
class Setting:
    """One SERVICE_* value and where it came from, for warnings."""

    value: str
    key: str
    origin: str  # "label" or "env"

    def cite(self) -> str:
        return f"{self.origin} {self.key}={show(self.value)}"


class SettingRefused(Exception):
    """A setting that leaves no usable service; the text is the warning."""


def require(condition, setting: Setting, problem: str) -> None:
    if not condition:
        raise SettingRefused(f"{setting.cite()} {problem}")


def show(value: str, limit: int = 80) -> str:
    """A value quoted for a log line: control characters escaped, length capped."""
    text = repr(value[:limit])
    return text + "..." if len(value) > limit else text


def collect_settings(info: dict) -> tuple[dict[str, Setting], dict[str, dict[str, Setting]], list[str]]:
    """SERVICE_* from env then labels (labels win), split into generic and per-port."""
    config = info.get("Config") or {}
    pairs: list[tuple[str, str, str]] = []
    for entry in config.get("Env") or []:
        key, sep, value = entry.partition("=")
        if sep:
            pairs.append((key, value, "env"))
    for key, value in (config.get("Labels") or {}).items():
        pairs.append((key, value if isinstance(value, str) else str(value), "label"))

    generic: dict[str, Setting] = {}
    per_port: dict[str, dict[str, Setting]] = {}
    problems: list[str] = []
    for key, value, origin in pairs:
        if not key.startswith("SERVICE_"):
            continue
        setting = Setting(value, key, origin)
        rest = key[len("SERVICE_"):].lower()
        head, _, tail = rest.partition("_")
        if not rest:
            problems.append(f"{setting.cite()} ignored: no key after SERVICE_")
        elif head[:1].isdigit() and tail:
            if not head.isdigit() or not 0 < int(head) < 65536:
                problems.append(f"{setting.cite()} ignored: port {show(head)} is not a number between 1 and 65535")
                continue
            per_port.setdefault(str(int(head)), {})[tail] = setting
        else:
            generic[rest] = setting
    return generic, per_port, problems


def split_tags(text: str) -> list[str]:
    """Comma-separated tags, ``\\,`` being a comma inside a tag (registrator's rule); blanks dropped."""
    tags, current, escaped = [], [], False
    for char in text:
        if escaped:
            current.append(char if char == "," else "\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            tags.append("".join(current))
            current = []
        else:
            current.append(char)
    if escaped:
        current.append("\\")
    tags.append("".join(current))
    return [tag.strip() for tag in tags if tag.strip()]
