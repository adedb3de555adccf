"""Watching the template files (watchdog): what wakes the loop when a template changes on disk.

Two kinds of paths matter:

* a ``*.j2`` file added, changed or removed in a ``--template-dir`` (the
  template set itself changes);
* any file a template read in its last render: the template, and the
  partials it includes or imports, wherever they live. An edit to a shared
  partial therefore renders every template that used it again;
* any file in a data directory: the certificate directory, whose files the
  route table reads.

The directories watched follow the last renders; the daemon calls
:meth:`TemplateFiles.watch` after each pass. A template directory's parent
is watched too: a directory renamed or deleted away reports nothing on its
own watch. A directory that cannot be watched (gone) is skipped; the
daemon's rescan of the template set notices it and retries.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

log = logging.getLogger("renderer")


class _Handler(FileSystemEventHandler):
    def __init__(self, owner: "TemplateFiles"):
        self.owner = owner

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        for path in (event.src_path, getattr(event, "dest_path", "")):
            if path and self.owner.relevant(os.fsdecode(path)):
                self.owner.notify()
                return


class TemplateFiles:
    def __init__(self, notify: Callable[[], None]):
        self.notify = notify
        self.template_dirs: frozenset[str] = frozenset()
        self.files: frozenset[str] = frozenset()
        self.data_dirs: frozenset[str] = frozenset()
        self._watches: dict[str, object] = {}
        self._handler = _Handler(self)
        self.observer = Observer()
        self.observer.daemon = True

    def start(self) -> "TemplateFiles":
        self.observer.start()
        return self

    def relevant(self, path: str) -> bool:
        path = os.path.normpath(path)
        directory = os.path.dirname(path)
        return (path in self.files or path in self.template_dirs or directory in self.data_dirs
                or (path.endswith(".j2") and directory in self.template_dirs))

    def watch(self, template_dirs: Iterable[Path], files: Iterable[str], data_dirs: Iterable[str] = ()) -> None:
        """Follow these template directories, these files, and every file of ``data_dirs`` (certificates)."""
        self.template_dirs = frozenset(os.path.normpath(str(d)) for d in template_dirs)
        self.files = frozenset(os.path.normpath(f) for f in files)
        self.data_dirs = frozenset(os.path.normpath(str(d)) for d in data_dirs)
        # A directory moved or deleted away reports nothing on its own watch: its parent sees it go.
        wanted = (self.template_dirs | {os.path.dirname(d) for d in self.template_dirs} | self.data_dirs
                  | {os.path.dirname(f) for f in self.files})
        for directory in [d for d in self._watches if d not in wanted or not os.path.isdir(d)]:
            try:  # a directory that vanished is watched again once it is back
                self.observer.unschedule(self._watches.pop(directory))
            except (KeyError, OSError):
                pass
        for directory in sorted(wanted - set(self._watches)):
            try:
                self._watches[directory] = self.observer.schedule(self._handler, directory, recursive=False)
            except OSError as error:  # gone or unreadable: the rescan says so and retries
                log.debug("cannot watch %s: %s", directory, error)

    def stop(self) -> None:
        self.observer.stop()
        if self.observer.is_alive():
            self.observer.join(5)
