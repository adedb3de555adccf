"""The unit files pass `systemd-analyze verify` with nothing to say.

verify exits 0 even when it reports a bad line (an unknown Type=, say), so
the test also asserts it printed nothing. It also insists that ExecStart's
binary exists; the units name the install path (/opt/consul-nginx-sync), so
the test points that prefix at this checkout's virtualenv.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import require

ROOT = Path(__file__).resolve().parents[3]
INSTALL_PREFIX = "/opt/consul-nginx-sync/bin/"


@pytest.mark.parametrize("unit", ["renderer.service", "registrar.service"])
def test_unit_verifies_cleanly(unit, tmp_path):
    analyze = require.binary("systemd-analyze")
    text = (ROOT / "systemd" / unit).read_text()
    assert INSTALL_PREFIX in text
    (tmp_path / unit).write_text(text.replace(INSTALL_PREFIX, str(Path(sys.executable).parent) + "/"))
    result = subprocess.run([analyze, "verify", str(tmp_path / unit)], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr


@pytest.mark.parametrize("unit", ["renderer.service", "registrar.service"])
def test_unit_is_a_hardened_notify_service(unit):
    text = (ROOT / "systemd" / unit).read_text()
    for line in ("Type=notify", "Restart=on-failure", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 "ProtectHome=yes", "PrivateTmp=yes", f"EnvironmentFile=-/etc/default/{unit.split('.')[0]}",
                 "WatchdogSec=30s", "RestartPreventExitStatus=2", "StartLimitIntervalSec=0"):
        assert line in text.splitlines(), line


def test_verify_would_catch_a_bad_line(tmp_path):
    """Guards the guard: a broken unit makes verify print something."""
    analyze = require.binary("systemd-analyze")
    bad = tmp_path / "bad.service"
    bad.write_text("[Service]\nType=bogus\nExecStart=/bin/true\n")
    result = subprocess.run([analyze, "verify", str(bad)], capture_output=True, text=True)
    assert result.stdout + result.stderr != ""
