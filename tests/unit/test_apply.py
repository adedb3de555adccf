"""The applier with stand-in commands: staging, per-culprit rollback, one reload."""

import os
from pathlib import Path

from agentkit.files import write_atomically
from renderer.apply.applier import Applier
from renderer.apply.journal import FileChange
from renderer.errors import CommandFailed


class Nginx:
    """Stands in for `nginx -t` / `-s reload`: rejects files containing BAD."""

    def __init__(self, files: list[Path], reload_fails: bool = False):
        self.files, self.reload_fails = files, reload_fails
        self.checks = self.reloads = 0

    def check(self):
        self.checks += 1
        for path in self.files:
            if path.exists() and b"BAD" in path.read_bytes():
                raise CommandFailed("nginx config check", "nginx -t",
                                    f'nginx: [emerg] unknown directive "BAD" in {path}:1')

    def reload(self):
        if self.reload_fails:
            raise CommandFailed("nginx reload", "nginx -s reload", "nginx: [error] invalid PID number")
        self.reloads += 1


def test_changes_are_written_checked_once_and_reloaded_once(tmp_path):
    a, b = tmp_path / "a.conf", tmp_path / "b.conf"
    nginx = Nginx([a, b])
    result = Applier(nginx.check, nginx.reload).apply([FileChange(a, b"A", "a.j2"), FileChange(b, b"B", "b.j2")])
    assert (a.read_bytes(), b.read_bytes()) == (b"A", b"B")
    assert (nginx.checks, nginx.reloads, result.reloaded) == (1, 1, True)


def test_the_culprit_alone_is_put_back_and_the_rest_applies(tmp_path):
    a, b = tmp_path / "a.conf", tmp_path / "b.conf"
    a.write_bytes(b"old A")
    os.chmod(a, 0o640)
    nginx = Nginx([a, b])
    result = Applier(nginx.check, nginx.reload).apply([FileChange(a, b"BAD", "a.j2"), FileChange(b, b"B", "b.j2")])
    assert a.read_bytes() == b"old A" and (a.stat().st_mode & 0o777) == 0o640
    assert b.read_bytes() == b"B"
    assert [c.destination for c, _ in result.refused_by_check] == [a]
    assert "unknown directive" in result.refused_by_check[0][1]
    assert nginx.checks == 2 and nginx.reloads == 1


def test_new_file_rejected_is_removed_again(tmp_path):
    a = tmp_path / "a.conf"
    nginx = Nginx([a])
    result = Applier(nginx.check, nginx.reload).apply([FileChange(a, b"BAD", "a.j2")])
    assert not a.exists() and nginx.reloads == 0 and not result.reloaded


def test_unattributed_failure_puts_everything_back(tmp_path):
    a, b = tmp_path / "a.conf", tmp_path / "b.conf"
    a.write_bytes(b"old")

    def check():
        raise CommandFailed("nginx config check", "nginx -t", "nginx: [emerg] something elsewhere")

    result = Applier(check, lambda: None).apply([FileChange(a, b"new", "a.j2"), FileChange(b, b"B", "b.j2")])
    assert a.read_bytes() == b"old" and not b.exists()
    assert len(result.refused_by_check) == 2 and not result.applied


def test_unwritable_destination_is_contained(tmp_path):
    good = tmp_path / "good.conf"
    nginx = Nginx([good])
    result = Applier(nginx.check, nginx.reload).apply(
        [FileChange(tmp_path / "no-such-dir" / "x.conf", b"X", "x.j2"), FileChange(good, b"G", "g.j2")])
    assert good.read_bytes() == b"G" and nginx.reloads == 1
    assert result.unwritable[0][0].template == "x.j2"


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_failed_reload_keeps_the_journal_and_is_retried_when_due(tmp_path):
    a = tmp_path / "a.conf"
    a.write_bytes(b"running")
    nginx, clock = Nginx([a], reload_fails=True), Clock()
    applier = Applier(nginx.check, nginx.reload, clock=clock)
    result = applier.apply([FileChange(a, b"A", "a.j2")])
    assert result.reload_error and "invalid PID" in result.reload_error and applier.reload_pending
    assert a.read_bytes() == b"A"
    assert (tmp_path / ".a.conf.renderer-previous").read_bytes() == b"running", "what nginx runs stays aside"
    nginx.reload_fails = False
    assert not applier.apply([]).reloaded and nginx.reloads == 0, "not before the retry is due"
    clock.now += 5
    result = applier.apply([])
    assert result.reloaded and not applier.reload_pending and nginx.reloads == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.conf"], "journal cleared once nginx confirmed"


def test_a_second_change_before_the_confirmation_keeps_the_version_nginx_runs(tmp_path):
    a = tmp_path / "a.conf"
    a.write_bytes(b"running")
    nginx, clock = Nginx([a], reload_fails=True), Clock()
    applier = Applier(nginx.check, nginx.reload, clock=clock)
    applier.apply([FileChange(a, b"first", "a.j2")])
    applier.apply([FileChange(a, b"second", "a.j2")])
    assert a.read_bytes() == b"second"
    assert (tmp_path / ".a.conf.renderer-previous").read_bytes() == b"running"


def test_an_unconfirmed_pass_is_put_back_by_recover(tmp_path):
    """A reload that never took (or a crash before it): the next process starts from what nginx runs."""
    from renderer.apply.journal import recover
    a, b = tmp_path / "a.conf", tmp_path / "b.conf"
    a.write_bytes(b"running")
    Applier(lambda: None, Nginx([a], reload_fails=True).reload).apply(
        [FileChange(a, b"new", "a.j2"), FileChange(b, b"added", "b.j2")])
    assert sorted(recover([a, b])) == [a, b]
    assert a.read_bytes() == b"running" and not b.exists()


def test_a_reload_refused_for_one_file_puts_it_back_and_reloads_the_rest(tmp_path):
    from renderer.errors import ReloadNotTaken
    good, bad = tmp_path / "good.conf", tmp_path / "bad.conf"
    bad.write_bytes(b"server { listen 9000; }\n")
    attempts = []

    def reload():
        attempts.append(bad.read_bytes())
        if b"listen 22;" in bad.read_bytes():
            raise ReloadNotTaken("nginx refused the new configuration: [emerg] bind() to 0.0.0.0:22 failed "
                                 "(98: Address already in use)")
        return True

    result = Applier(lambda: None, reload).apply([FileChange(good, b"server { listen 8080; }\n", "g.j2"),
                                                  FileChange(bad, b"server { listen 22; }\n", "b.j2")])
    assert [c.destination for c, _ in result.refused_at_reload] == [bad]
    assert "bind() to 0.0.0.0:22" in result.refused_at_reload[0][1]
    assert bad.read_bytes() == b"server { listen 9000; }\n", "the file nginx runs is back"
    assert good.exists() and result.reloaded and len(attempts) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.conf", "good.conf"]


def test_a_reload_refusal_that_points_nowhere_keeps_the_files(tmp_path):
    from renderer.errors import ReloadNotTaken
    a = tmp_path / "a.conf"

    def reload():
        raise ReloadNotTaken("nginx did not start new workers within 30s of the reload signal")

    applier = Applier(lambda: None, reload)
    result = applier.apply([FileChange(a, b"x", "a.j2")])
    assert a.read_bytes() == b"x" and not result.refused_at_reload and applier.reload_pending


def test_removal(tmp_path):
    a = tmp_path / "a.conf"
    a.write_bytes(b"A")
    nginx = Nginx([a])
    Applier(nginx.check, nginx.reload).apply([FileChange(a, None, "a.j2")])
    assert not a.exists() and nginx.reloads == 1


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    target = tmp_path / "t.conf"
    write_atomically(target, b"x")
    write_atomically(target, b"y")
    assert [p.name for p in tmp_path.iterdir()] == ["t.conf"] and target.read_bytes() == b"y"


class Killed(BaseException):
    """Stands in for SIGKILL arriving while the check runs."""


def crash_during_check(tmp_path, changes):
    def check():
        raise Killed()
    try:
        Applier(check, lambda: None).apply(changes)
    except Killed:
        pass


def test_a_crash_mid_pass_is_undone_by_recover(tmp_path):
    from renderer.apply.journal import recover
    old, new = tmp_path / "old.conf", tmp_path / "new.conf"
    old.write_bytes(b"validated")
    os.chmod(old, 0o640)
    crash_during_check(tmp_path, [FileChange(old, b"unvalidated", "a.j2"), FileChange(new, b"fresh", "b.j2")])
    assert old.read_bytes() == b"unvalidated" and new.exists(), "the crash left unvalidated files"
    assert sorted(recover([old, new])) == [new, old]
    assert old.read_bytes() == b"validated" and (old.stat().st_mode & 0o777) == 0o640
    assert not new.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["old.conf"], "no journal or temp file left"
    assert recover([old, new]) == []


def test_a_completed_pass_leaves_no_journal(tmp_path):
    a, b = tmp_path / "a.conf", tmp_path / "b.conf"
    a.write_bytes(b"A")
    nginx = Nginx([a, b])
    Applier(nginx.check, nginx.reload).apply([FileChange(a, b"B", "a.j2"), FileChange(b, b"BAD", "b.j2")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.conf"]


def test_recover_removes_stray_temporary_files(tmp_path):
    from renderer.apply.journal import recover
    (tmp_path / ".x.conf.abc123.tmp").write_bytes(b"half")
    (tmp_path / "x.conf").write_bytes(b"whole")
    recover([tmp_path / "x.conf"])
    assert [p.name for p in tmp_path.iterdir()] == ["x.conf"]


def test_recover_touches_only_its_own_destinations(tmp_path):
    """Another renderer sharing conf.d keeps its files and its journal."""
    from renderer.apply.journal import recover
    ours, theirs = tmp_path / "ours.conf", tmp_path / "theirs.conf"
    for path in (ours, theirs):
        path.write_bytes(b"new")
        (tmp_path / f".{path.name}.renderer-previous").write_bytes(b"running")
    assert recover([ours]) == [ours]
    assert ours.read_bytes() == b"running" and theirs.read_bytes() == b"new"
    assert (tmp_path / ".theirs.conf.renderer-previous").exists()


class ParsingMaster(Nginx):
    """An nginx whose reload parses the files as `nginx -t` does: a refused reload names the file."""

    def reload(self):
        from renderer.errors import ReloadNotTaken
        for path in self.files:
            if path.exists() and b"BAD" in path.read_bytes():
                raise ReloadNotTaken(f'nginx refused the new configuration: unknown directive "BAD" in {path}:1')
        self.reloads += 1
        return True


def test_reload_first_runs_no_check_when_nginx_takes_the_files(tmp_path):
    a, b = tmp_path / "a.conf", tmp_path / "b.conf"
    nginx = ParsingMaster([a, b])
    result = Applier(nginx.check, nginx.reload, check_first=False).apply(
        [FileChange(a, b"A", "a.j2"), FileChange(b, b"B", "b.j2")])
    assert (nginx.checks, nginx.reloads, result.confirmed) == (0, 1, True)
    assert [c.destination for c in result.applied] == [a, b]


def test_reload_first_names_the_refused_file_with_the_check_puts_it_back_and_reloads_the_rest(tmp_path):
    a, b = tmp_path / "a.conf", tmp_path / "b.conf"
    a.write_bytes(b"old A")
    nginx = ParsingMaster([a, b])
    applier = Applier(nginx.check, nginx.reload, check_first=False)
    result = applier.apply([FileChange(a, b"BAD", "a.j2"), FileChange(b, b"B", "b.j2")])
    assert (a.read_bytes(), b.read_bytes()) == (b"old A", b"B")
    assert [c.destination for c, _ in result.refused_by_check] == [a] and [c.destination for c in result.applied] == [b]
    assert (nginx.checks, nginx.reloads, result.confirmed) == (2, 1, True) and not applier.reload_pending
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.conf", "b.conf"], "the journal is exact"


def test_reload_first_with_every_file_refused_reloads_nothing(tmp_path):
    a = tmp_path / "a.conf"
    nginx = ParsingMaster([a])
    result = Applier(nginx.check, nginx.reload, check_first=False).apply([FileChange(a, b"BAD", "a.j2")])
    assert not a.exists() and nginx.reloads == 0 and not result.reloaded and not result.applied
