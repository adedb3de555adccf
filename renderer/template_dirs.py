"""Watching --template-dir directories (watchdog): a *.j2 added, changed or removed wakes the loop."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer


class _Handler(FileSystemEventHandler):
    def __init__(self, notify: Callable[[], None]):
        self.notify = notify

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        paths = [event.src_path, getattr(event, "dest_path", "")]
        if any(str(path).endswith(".j2") for path in paths):
            self.notify()


class TemplateDirWatcher:
    def __init__(self, directories: list[Path], notify: Callable[[], None]):
        self.observer = Observer()
        self.observer.daemon = True
        handler = _Handler(notify)
        for directory in sorted(set(directories)):
            if directory.is_dir():
                self.observer.schedule(handler, str(directory), recursive=False)

    def start(self) -> "TemplateDirWatcher":
        self.observer.start()
        return self

    def stop(self) -> None:
        self.observer.stop()
        self.observer.join(5)
