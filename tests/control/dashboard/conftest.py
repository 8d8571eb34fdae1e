"""Fixtures of this folder: `ctx`, a dashboard context on a fresh store (stopped and closed after the test), and
the headless Chromium fixture (`browser`) of tests/overlays/test_browser_overlays.py for the browser tests
(test_dashboard_browser.py): one launcher, not a copy."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "overlays"))
from dashboard_harness import make_ctx  # noqa: E402
from test_browser_overlays import browser  # noqa: E402, F401


@pytest.fixture
def ctx(tmp_path):
    c = make_ctx(tmp_path)
    yield c
    c.pipeline.stop()
    c.store.close()
