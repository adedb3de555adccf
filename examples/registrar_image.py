"""`make image`: the registrar's image (``registrar.Dockerfile``), built without any container registry.

These machines reach PyPI and Debian's archive, never a registry, so nothing
can be pulled; the build takes no network at all inside Docker:

1. the project and every dependency as wheels, built on this host into
   ``build/wheels`` (with setuptools and wheel, which ``pip install`` needs
   to build the project), installed in the image with ``--no-index``;
2. a base with Python: ``$BASE`` when given, else ``python:3.11-slim`` when
   the engine has it, else a minimal Debian bookworm root file system with
   python3, made by ``mmdebstrap`` from Debian's archive (kept in
   ``build/base/``) and ``docker import``-ed;
3. ``docker build`` with those two, tagged ``consul-nginx-sync/registrar``
   (``:latest`` and the project's version) and labelled with a digest of
   what went in, so an unchanged checkout is not built twice.

The engine is the one ``docker`` talks to (``DOCKER_HOST``); the fleet
(``examples/fleet.py``) builds in one of its own engines and loads the image
into the others.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build"
WHEELS = BUILD / "wheels"
BASE_TAR = BUILD / "base" / "bookworm-python3.tar"
IMAGE = "consul-nginx-sync/registrar"
DEBIAN_BASE = "consul-nginx-sync/base:bookworm-python3"
PYTHON_BASE = "python:3.11-slim"
DIGEST_LABEL = "org.consul-nginx-sync.source-digest"
SOURCES = ("registrar.Dockerfile", ".dockerignore", "pyproject.toml", "setup.cfg", "agentkit", "registrar",
           "renderer")


def say(text: str) -> None:
    print(f"image: {text}", flush=True)


def source_digest() -> str:
    """What the image is made of: the Dockerfile and the project's source, by content."""
    digest = hashlib.sha256()
    for name in SOURCES:
        path = ROOT / name
        files = sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts) \
            if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(ROOT)).encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def docker(*args: str, env: dict | None = None, capture: bool = True) -> str:
    result = subprocess.run(["docker", *args], capture_output=capture, text=True,
                            env={**os.environ, **(env or {})})
    if result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])} failed: {(result.stderr or '').strip()[-2000:]}")
    return (result.stdout or "").strip()


def image_exists(reference: str, env: dict | None = None) -> bool:
    return subprocess.run(["docker", "image", "inspect", reference], capture_output=True,
                          env={**os.environ, **(env or {})}).returncode == 0


def wheels(digest: str) -> None:
    """The project and its dependencies as wheels in build/wheels, once per source digest."""
    stamp = WHEELS / ".digest"
    if stamp.exists() and stamp.read_text() == digest:
        return
    say("building the project's wheels (pip wheel) into build/wheels")
    WHEELS.mkdir(parents=True, exist_ok=True)
    for old in WHEELS.glob("consul_nginx_sync-*.whl"):
        old.unlink()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    for command in ([*pip, "wheel", "--wheel-dir", str(WHEELS), str(ROOT)],
                    [*pip, "download", "--dest", str(WHEELS), "setuptools>=61", "wheel"]):
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command[3:5])} failed: {result.stderr.strip()[-2000:]}")
    stamp.write_text(digest)


def base(env: dict | None = None) -> str:
    """A base image with Python 3.11, found or made here (no registry)."""
    chosen = os.environ.get("BASE")
    if chosen:
        return chosen
    if image_exists(PYTHON_BASE, env):
        return PYTHON_BASE
    if not image_exists(DEBIAN_BASE, env):
        if not BASE_TAR.exists():
            say("making a Debian bookworm base with python3 (mmdebstrap, from Debian's archive)")
            BASE_TAR.parent.mkdir(parents=True, exist_ok=True)
            partial = BASE_TAR.with_suffix(".partial")
            if partial.is_dir():  # an interrupted earlier run
                shutil.rmtree(partial)
            partial.unlink(missing_ok=True)
            subprocess.run(
                ["mmdebstrap", "--quiet", "--format=tar", "--variant=essential",
                 "--include=python3,python3-venv,ca-certificates",
                 "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/locale/*",
                 "--dpkgopt=path-exclude=/usr/share/doc/*", "bookworm", str(partial)], check=True)
            partial.rename(BASE_TAR)
        say(f"importing {BASE_TAR.relative_to(ROOT)} as {DEBIAN_BASE}")
        with open(BASE_TAR, "rb") as tar:
            subprocess.run(["docker", "import", "-", DEBIAN_BASE], stdin=tar, check=True, capture_output=True,
                           env={**os.environ, **(env or {})})
    return DEBIAN_BASE


def version() -> str:
    from importlib.metadata import version as installed
    return installed("consul-nginx-sync")


def build(env: dict | None = None) -> str:
    """The image in the engine ``env`` names (DOCKER_HOST); returns its reference. Skipped when up to date."""
    digest = source_digest()
    latest = f"{IMAGE}:latest"
    if image_exists(latest, env) and docker(
            "image", "inspect", "--format", f'{{{{index .Config.Labels "{DIGEST_LABEL}"}}}}', latest,
            env=env) == digest:
        say(f"{latest} is up to date (source digest {digest})")
        return latest
    wheels(digest)
    base_image = base(env)
    started = time.monotonic()
    say(f"docker build -f registrar.Dockerfile on {base_image}")
    docker("build", "--quiet", "-f", str(ROOT / "registrar.Dockerfile"), "--build-arg", f"BASE={base_image}",
           "--build-arg", "PIP_OPTIONS=--no-index --find-links /src/build/wheels",
           "--label", f"{DIGEST_LABEL}={digest}", "-t", latest, "-t", f"{IMAGE}:{version()}", str(ROOT), env=env)
    say(f"built {latest} ({version()}) in {time.monotonic() - started:.0f}s")
    return latest


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from tests.support.docker_engine import DockerEngine
    engine = DockerEngine()
    try:
        engine.start()  # the engine `docker` talks to; one is started (and stopped after) if none answers
        reference = build()
    except (RuntimeError, subprocess.CalledProcessError, FileNotFoundError) as error:
        print(f"image: {error}", file=sys.stderr)
        return 1
    finally:
        if engine.started_here:
            engine.stop()
    print(f"\n{reference} is ready. Run it on each Docker host beside its Consul agent:\n\n"
          "  docker run -d --name registrar --net=host --restart=always \\\n"
          "      --group-add \"$(stat -c %g /var/run/docker.sock)\" \\\n"
          "      -v /var/run/docker.sock:/var/run/docker.sock:ro \\\n"
          f"      {IMAGE} run --ip <this host's address> --cleanup\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
