"""A real headless browser for tests: Debian's chromium, driven through its WebDriver (chromium-driver) by selenium.

scripts/chromium.sh installs both (apt-get) on first use, as CI needs."""

from __future__ import annotations

import contextlib
import io
import subprocess
from pathlib import Path

import numpy as np

from support.paths import REPO

# No network, no background services, a profile of its own: the page alone decides what loads.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         "--window-size=1280,2000"]


def ensure_chromium() -> tuple[str, str]:
    """(browser, driver) paths; installs them with apt-get when missing."""
    out = subprocess.run([str(REPO / "scripts" / "chromium.sh")], check=True, stdout=subprocess.PIPE, text=True).stdout
    browser, driver = out.strip().splitlines()[-1].split()
    return browser, driver


@contextlib.contextmanager
def chromium(profile_dir: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = ensure_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in FLAGS + [f"--user-data-dir={profile_dir}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot_pixels(driver) -> np.ndarray:
    """The visible page as an (height, width, 3) array of floats in 0..1."""
    import matplotlib.image

    return matplotlib.image.imread(io.BytesIO(driver.get_screenshot_as_png()), format="png")[..., :3]
