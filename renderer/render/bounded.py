"""Templates run bounded: in a forked child, with a time, an output-size and a memory limit.

A template is code, from compiling it (Jinja folds constant expressions
then) to rendering it. One that loops for ever, builds a gigabyte string or
recurses deeply must fail alone, with one line, while the other templates
still render and the daemon still answers SIGTERM. Inside one Python
process that cannot be guaranteed: a thread cannot be stopped in the middle
of one long C call (``"x" | center(10**10)``), and a memory blow-up takes
the whole daemon. So each pass forks one child that renders the templates
due, one after the other:

* **time**: the daemon waits for each template's result at most
  ``render_timeout`` (default 10 s); past it the child is killed, that
  template fails ("took longer than 10s"), and a new child renders the rest.
  The child also arms its own alarm, so it dies on time even if the daemon
  was SIGKILLed;
* **output**: ``render_max_output`` (default 64 MiB), counted chunk by chunk
  as Jinja produces the text;
* **memory**: the child's address space may grow by at most
  ``max(512 MiB, 8 x render_max_output)`` over what it inherited; past it
  allocations fail and the template fails with "ran out of memory";
* **stop**: the daemon waits in 0.1 s slices and kills the child when asked
  to stop, so SIGTERM is obeyed at once whatever a template does.

The child inherits the catalog at no copying cost (fork), writes each
result (text, the dependency keys it asked for, the files it read) into a
memfd and one byte per finished template into a pipe. Measured at 5,000
services x 3 with the default http template: fork, transfer and reaping
cost about 25 ms on a 45 ms render (the page faults of a copy-on-write
child touching the catalog); at 1,000 x 3 about 8 ms.
"""

from __future__ import annotations

import dataclasses
import gc
import io
import os
import pickle
import resource
import select
import signal
import warnings
from pathlib import Path

from agentkit.lifecycle import Lifecycle, Stopping

from renderer.errors import TemplateError
from .loader import Rendered, TemplateLoader

DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_OUTPUT = 64 << 20


@dataclasses.dataclass(frozen=True)
class Limits:
    timeout: float = DEFAULT_TIMEOUT
    max_output: int = DEFAULT_MAX_OUTPUT

    @property
    def memory(self) -> int:
        """Bytes of address space a render may add to what the child inherited."""
        return max(512 << 20, 8 * self.max_output)


def render_all(loader: TemplateLoader, sources: list[Path], data, limits: Limits = Limits(),
               lifecycle: Lifecycle | None = None, locate: bool = False) -> dict[Path, Rendered]:
    """Render each source in a child; a failure is in ``Rendered.error``."""
    lifecycle = lifecycle or Lifecycle()
    results: dict[Path, Rendered] = {}
    pending = list(sources)
    while pending:
        done, failure = _one_child(loader, pending, data, limits, lifecycle, locate)
        results.update(zip(pending, done))
        if failure is None:
            break
        results[pending[len(done)]] = Rendered.failed(failure)
        pending = pending[len(done) + 1:]
    return results


def _one_child(loader, sources, data, limits: Limits, lifecycle: Lifecycle, locate: bool = False):
    """Results of the sources the child finished, and the failure of the one it did not (or None)."""
    memfd = os.memfd_create("renderer-results", os.MFD_CLOEXEC)
    progress_read, progress_write = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12 warns that forking a threaded process may deadlock the child: ours
        # only renders (no lock another thread could hold: no logging, queue or sockets).
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(progress_read)
        _child(loader, sources, data, limits, memfd, progress_write, locate)
    os.close(progress_write)
    finished, failure, status = 0, None, None
    try:
        deadline = lifecycle.clock() + limits.timeout
        while finished < len(sources):
            remaining = deadline - lifecycle.clock()
            if remaining <= 0:
                failure = TemplateError(str(sources[finished]), None,
                                        f"took longer than {limits.timeout:g}s (render_timeout)")
                break
            readable, _, _ = select.select([progress_read], [], [], min(remaining, 0.1))
            if readable:
                chunk = os.read(progress_read, 64)
                if not chunk:  # the child exited before finishing this template
                    status = os.waitpid(pid, 0)[1]
                    failure = TemplateError(str(sources[finished]), None, _death(status, limits))
                    break
                finished += len(chunk)
                deadline = lifecycle.clock() + limits.timeout
            lifecycle.check()
    except Stopping:
        _kill(pid, status)
        os.close(memfd)
        raise
    finally:
        os.close(progress_read)
    _kill(pid, status)
    with open(memfd, "rb", closefd=True) as handle:
        handle.seek(0)
        done = [pickle.load(handle) for _ in range(finished)]
    return done, failure


def _kill(pid: int, status) -> None:
    if status is not None:
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)


def _death(status: int, limits: Limits) -> str:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        if number == signal.SIGALRM:
            return f"took longer than {limits.timeout:g}s (render_timeout)"
        return f"the render process was killed by {signal.Signals(number).name}"
    return f"the render process exited with status {os.WEXITSTATUS(status)}"


def _child(loader, sources, data, limits: Limits, memfd: int, progress: int, locate: bool = False) -> None:
    code = 0
    try:
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM):
            signal.signal(number, signal.SIG_DFL)
        gc.disable()  # short-lived: collecting would only copy every page it touches
        _limit_memory(limits.memory)
        out = io.FileIO(memfd, "wb", closefd=False)
        for source in sources:
            signal.setitimer(signal.ITIMER_REAL, limits.timeout + 1)
            try:
                result = loader.render(source, data, max_output=limits.max_output, locate=locate)
                payload = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
            except MemoryError:
                result = Rendered.failed(TemplateError(str(source), None,
                                                       "ran out of memory (the render's memory limit)"))
                payload = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
            view = memoryview(payload)
            while view:
                view = view[out.write(view):]
            os.write(progress, b".")
    except BaseException:  # noqa: BLE001 - the daemon reports the template; nothing to print here
        code = 70
    os._exit(code)


def _limit_memory(extra: int) -> None:
    try:
        with open("/proc/self/status") as status:
            inherited = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    except (OSError, StopIteration, ValueError):
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = inherited + extra
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
