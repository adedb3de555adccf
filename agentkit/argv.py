"""Keeping a token given on the command line out of ``ps``.

``--consul-token`` is part of the command-line contract, but process
arguments are world-readable (``ps``, ``/proc/PID/cmdline``). A daemon given
one re-executes itself at once with the token in an anonymous memory file
(memfd) that it inherits, and ``--consul-token-file /dev/fd/N`` in place of
the flag: same precedence (still a flag), same behaviour, and what ``ps``
shows from then on holds no secret. Prefer a token file or the environment
anyway: the original arguments exist for the few milliseconds before the
re-exec.
"""

from __future__ import annotations

import os
import sys

FLAG = "--consul-token"


def token_in(argv: list[str]) -> tuple[int, int, str] | None:
    """(start, end, token) of the first --consul-token flag in argv, or None."""
    for index, arg in enumerate(argv):
        if arg == FLAG and index + 1 < len(argv):
            return index, index + 2, argv[index + 1]
        if arg.startswith(FLAG + "="):
            return index, index + 1, arg[len(FLAG) + 1:]
    return None


def without_token(argv: list[str], descriptor: int) -> list[str]:
    start, end, _ = token_in(argv)
    return [*argv[:start], "--consul-token-file", f"/dev/fd/{descriptor}", *argv[end:]]


def hide_token_from_ps(argv: list[str] | None = None) -> None:
    """Re-exec without the token in the arguments; returns only when there is nothing to hide."""
    argv = list(sys.argv if argv is None else argv)
    found = token_in(argv)
    if not found or not os.access(argv[0], os.X_OK) or not hasattr(os, "memfd_create"):
        return
    descriptor = os.memfd_create("consul-token", 0)  # inheritable across exec, by design
    os.write(descriptor, found[2].encode())
    os.execv(argv[0], without_token(argv, descriptor))
