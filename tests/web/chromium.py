"""Headless Chromium for the page tests: where it is, the marks that skip without it, and one page.

Import it after ``pytest.importorskip("playwright.async_api")`` in the test module, so a machine
without playwright skips the module with that reason.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

__all__ = ["ARTIFACTS", "CHROMIUM", "browser_marks", "chromium_page"]

CHROMIUM = os.environ.get("EMOSTREAM_CHROMIUM", "/usr/bin/chromium")
if not Path(CHROMIUM).exists():
    CHROMIUM = shutil.which("chromium") or CHROMIUM
# Screenshots of each state the page tests reach.
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def browser_marks(timeout_s: int) -> list[pytest.MarkDecorator]:
    """A page test module's ``pytestmark``: marked ``browser``, timed out, skipped without Chromium."""
    return [
        pytest.mark.browser,
        pytest.mark.timeout(timeout_s),
        pytest.mark.skipif(
            not Path(CHROMIUM).exists(),
            reason=f"Chromium is not installed at {CHROMIUM} (apt-get install chromium; `make test` installs it)",
        ),
    ]


@asynccontextmanager
async def chromium_page(extra_args: Sequence[str] = ()) -> AsyncIterator[Any]:
    """A fresh headless Chromium (``extra_args`` added to its flags) with one 1360x1000 page."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=[*_ARGS, *extra_args])
        try:
            yield await browser.new_page(viewport={"width": 1360, "height": 1000})
        finally:
            await browser.close()
