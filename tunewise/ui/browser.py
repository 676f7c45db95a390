"""Headless Chromium for the dashboard's browser tests and screenshots: Debian's ``chromium`` and ``chromium-driver``
(the same version, from one source package) driven by Selenium. Nothing is downloaded: the driver path is given, so
Selenium Manager never runs."""

from __future__ import annotations

import os
import shutil
from typing import Any

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVER = ("chromedriver",)


def find(names: tuple[str, ...], env: str) -> str | None:
    """$ENV if set, else the first of ``names`` on PATH (or in /usr/lib/chromium for the driver)."""
    if os.environ.get(env):
        return os.environ[env]
    for name in names:
        found = shutil.which(name) or (f"/usr/lib/chromium/{name}" if os.path.isfile(f"/usr/lib/chromium/{name}") else None)
        if found:
            return found
    return None


def missing() -> str | None:
    """Why no browser can be driven here (None when one can)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -e '.[test]' (scripts/test.sh does)"
    if not find(CHROMIUM, "TUNEWISE_CHROMIUM"):
        return "no chromium on PATH: apt-get install chromium chromium-driver (scripts/test.sh does, where apt is allowed)"
    if not find(DRIVER, "TUNEWISE_CHROMEDRIVER"):
        return "no chromedriver on PATH: apt-get install chromium-driver"
    return None


def chromium(width: int = 1280, height: int = 1000) -> Any:
    """A headless Chromium WebDriver (quit it when done)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    why = missing()
    if why:
        raise RuntimeError(why)
    options = webdriver.ChromeOptions()
    options.binary_location = find(CHROMIUM, "TUNEWISE_CHROMIUM")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", f"--window-size={width},{height}",
                "--disable-extensions", "--no-first-run", "--lang=en-US"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=find(DRIVER, "TUNEWISE_CHROMEDRIVER")), options=options)
