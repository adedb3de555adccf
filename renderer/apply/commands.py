"""Running the check and reload commands (``nginx -t``, ``nginx -s reload``).

A command runs without a shell, with a timeout, and is waited on in short
slices through the daemon's :class:`agentkit.lifecycle.Lifecycle`: a SIGTERM
arriving while ``nginx -t`` parses a large configuration stops the daemon
at once (the command is killed; the journal puts staged files back at the
next start).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess

from agentkit.lifecycle import Lifecycle, Stopping

from renderer.errors import CommandFailed

DEFAULT_TIMEOUT = 30.0
NGINX_SEVERITIES = ("[emerg]", "[alert]", "[crit]", "[error]")


def run(what: str, command: str, timeout: float = DEFAULT_TIMEOUT, lifecycle: Lifecycle | None = None) -> None:
    """Run ``command``; raise CommandFailed with its most telling line."""
    try:
        # Its own process group: abandoning it (timeout, SIGTERM) kills what it started too, and
        # no grandchild keeps our pipes open.
        process = subprocess.Popen(shlex.split(command), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, start_new_session=True)
    except FileNotFoundError:
        raise CommandFailed(what, command, "command not found") from None
    except (OSError, ValueError) as error:
        raise CommandFailed(what, command, str(error)) from None
    lifecycle = lifecycle or Lifecycle()
    deadline = lifecycle.clock() + timeout
    try:
        while True:
            try:
                stdout, stderr = process.communicate(timeout=max(0.0, min(0.1, deadline - lifecycle.clock())))
                break
            except subprocess.TimeoutExpired:
                lifecycle.check()
                if lifecycle.clock() >= deadline:
                    raise CommandFailed(what, command, f"timed out after {timeout:g}s") from None
    except (Stopping, CommandFailed):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
        process.stdout.close()
        process.stderr.close()
        raise
    if process.returncode != 0:
        raise CommandFailed(what, command, telling_line(stderr + stdout, process.returncode))


def telling_line(output: bytes, returncode: int) -> str:
    """nginx's own error line if there is one, else the last line printed."""
    lines = [line.strip() for line in output.decode("utf-8", errors="replace").splitlines() if line.strip()]
    for line in lines:
        if any(severity in line for severity in NGINX_SEVERITIES):
            return nginx_line(line)
    return lines[-1] if lines else f"exit status {returncode}"


# "2026/11/21 16:29:07 [emerg] 14788#14788: bind() ..." (its error log, and -t once error_log is parsed)
_LOG_PREFIX = re.compile(r"^(?:nginx: )?\d{4}/\d\d/\d\d \d\d:\d\d:\d\d (\[\w+\]) \d+#\d+: (?:\*\d+ )?")


def nginx_line(line: str) -> str:
    """An nginx message without its timestamp and process ids: ``nginx: [emerg] bind() to ... failed``."""
    line = line.strip()
    return _LOG_PREFIX.sub(r"nginx: \1 ", line)
