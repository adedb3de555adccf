"""One headless Chromium for the session (Debian's chromium + chromium-driver, driven by selenium).

Screenshots go to ``tests/artifacts/`` (or ``$TEST_ARTIFACTS``), kept after
the run for a person to look at.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "artifacts"))


class Browser:
    def __init__(self, chromium: str, chromedriver: str):
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
        options = Options()
        options.binary_location = chromium
        for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1400,1000", "--disable-extensions"):
            options.add_argument(argument)
        self.driver = webdriver.Chrome(service=Service(chromedriver), options=options)
        self.driver.set_page_load_timeout(20)

    def open(self, url: str):
        self.driver.get(url)
        return self.driver

    def text_of(self, css: str) -> str:
        from selenium.webdriver.common.by import By
        return self.driver.find_element(By.CSS_SELECTOR, css).text

    def rows(self, css: str) -> list[str]:
        from selenium.webdriver.common.by import By
        return [element.text for element in self.driver.find_elements(By.CSS_SELECTOR, css)]

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / name
        # The whole page, not just the window (Chrome DevTools: capture beyond the viewport).
        height = int(self.driver.execute_script("return document.documentElement.scrollHeight"))
        shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": 1400, "height": min(height, 8000), "scale": 1}})
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def close(self) -> None:
        self.driver.quit()
