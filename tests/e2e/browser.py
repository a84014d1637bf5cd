"""A real headless browser for page tests: Debian's ``chromium`` driven by ``chromedriver``.

``scripts/test`` installs both when they are missing (``scripts/browser``: as root, with
apt-get); where that cannot be done, :func:`browser_or_skip` skips the test and names why.
Selenium is synchronous: tests call it through ``trio.to_thread.run_sync``; every wait is a
DOM condition with a hang-guard deadline (:data:`HANG_GUARD_S`), never a timed assertion.

Screenshots go to :func:`artifact_dir`: ``$ISTHMUS_TEST_ARTIFACTS`` or ``test-artifacts/`` at
the top of the repository (ignored by git).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
HANG_GUARD_S = 60.0

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",  # root in CI; the page is our own, on loopback
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    # This machine has no network but loopback: without these Chromium keeps dialing out.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1100",
)


def artifact_dir() -> Path:
    path = Path(os.environ.get("ISTHMUS_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def browser_or_skip() -> tuple[str, str]:
    """The paths of chromium and chromedriver, or a skip that says why there are none."""
    chromium = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        why = ROOT / ".isthmus" / "browser-missing"
        reason = why.read_text("utf-8").strip() if why.exists() else "scripts/browser not run"
        pytest.skip(f"no headless browser (Debian's chromium + chromium-driver): {reason}")
    return chromium, driver


def open_chromium(chromium: str, driver: str, profile: Path) -> Any:
    """A new headless Chromium with an empty profile (blocking: call it in a thread)."""
    os.environ.setdefault("SE_AVOID_STATS", "true")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def wait_until(browser: Any, condition: Callable[[Any], Any], what: str) -> Any:
    """Wait (blocking) until ``condition(browser)`` is truthy; fail naming ``what`` after the
    hang guard, with the page's status line for context."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(browser, HANG_GUARD_S, poll_frequency=0.2).until(condition)
    except TimeoutException:
        status = browser.execute_script(
            "const s = document.getElementById('status'); return s ? s.textContent : null"
        )
        pytest.fail(f"not within the {HANG_GUARD_S:.0f} s hang guard: {what} (status: {status})")


def save_page(browser: Any, name: str) -> Path:
    """A screenshot of the whole page (not only the window) as ``artifact_dir()/name``."""
    import base64

    path = artifact_dir() / name
    shot = browser.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
    )
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def console_errors(browser: Any) -> list[str]:
    """Severe console messages (a Content-Security-Policy violation, a script error)."""
    return [e["message"] for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
