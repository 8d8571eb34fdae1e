"""The headless Chromium fixture (`browser`) of tests/overlays/test_browser_overlays.py, for the browser
tests of this folder (test_dashboard_browser.py): one launcher, not a copy."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "overlays"))
from test_browser_overlays import browser  # noqa: E402, F401
