"""Running the check and reload commands (``nginx -t``, ``nginx -s reload``)."""

from __future__ import annotations

import shlex
import subprocess

from .errors import CommandFailed

DEFAULT_TIMEOUT = 30.0
_NGINX_SEVERITIES = ("[emerg]", "[alert]", "[crit]", "[error]")


def run(what: str, command: str, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Run ``command`` (no shell); raise CommandFailed with its most telling line."""
    try:
        result = subprocess.run(shlex.split(command), capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise CommandFailed(what, command, "command not found") from None
    except subprocess.TimeoutExpired:
        raise CommandFailed(what, command, f"timed out after {timeout:g}s") from None
    except (OSError, ValueError) as error:
        raise CommandFailed(what, command, str(error)) from None
    if result.returncode != 0:
        raise CommandFailed(what, command, telling_line(result.stderr + result.stdout, result.returncode))


def telling_line(output: bytes, returncode: int) -> str:
    """nginx's own error line if there is one, else the last line printed."""
    lines = [line.strip() for line in output.decode("utf-8", errors="replace").splitlines() if line.strip()]
    for line in lines:
        if any(severity in line for severity in _NGINX_SEVERITIES):
            return line
    return lines[-1] if lines else f"exit status {returncode}"
