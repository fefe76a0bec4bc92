"""Headless Chromium for the web console's tests and push-lag bench: Debian's, driven by Playwright.

Playwright's own browser builds are never used (``playwright install`` downloads one, which
this project's machines cannot); ``scripts/ensure_test_tools.sh`` installs Debian's package.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

CHROMIUM_PATH = Path(os.environ.get("SUNLIT_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",  # root in a container has no user namespace for Chromium's sandbox
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


class ChromiumMissing(RuntimeError):
    """No Chromium where the tests and the bench look for one; the message says how to get it."""


def require_chromium() -> Path:
    if not (CHROMIUM_PATH.is_file() and os.access(CHROMIUM_PATH, os.X_OK)):
        raise ChromiumMissing(
            f"no Chromium at {CHROMIUM_PATH}: run scripts/ensure_test_tools.sh (installs Debian's chromium "
            "with apt-get), or set SUNLIT_CHROMIUM to a Chromium binary. Do not use `playwright install`."
        )
    return CHROMIUM_PATH


def launch(playwright: Any) -> Any:
    """A headless Chromium browser from a started ``sync_playwright()``."""
    return playwright.chromium.launch(executable_path=str(require_chromium()), args=list(CHROMIUM_ARGS),
                                      headless=True)
