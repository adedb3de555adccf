"""The fault-injection suite reuses the renderer tests' scene (services, backends, outputs)."""

from tests.renderer.conftest import scene  # noqa: F401  (fixture)
