"""The OBS tests' fixture body around the headless OBS of streamer/testing/obs_headless.py.

Tests skip, with the install command, when obs or xvfb-run is missing.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from streamer.testing.obs_headless import INSTALL_HINT, PASSWORD, ObsInstance, missing_tools

__all__ = ["PASSWORD", "ObsInstance", "require_obs", "running_obs"]


def require_obs() -> None:
    missing = missing_tools()
    if missing:
        pytest.skip(f"needs a real OBS Studio under Xvfb ({', '.join(missing)} not found): {INSTALL_HINT}")


def running_obs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObsInstance]:
    """Body of a test module's OBS fixture: skip (with the install command) or start one OBS, kill it after.

    Each module wraps it in its own module-scoped fixture (`yield from running_obs(...)`), so one OBS
    serves a whole module (each start costs seconds of CPU).
    """
    require_obs()
    instance = ObsInstance(tmp_path_factory.mktemp("obs-home"))
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()
