"""The page of ``zoo serve`` in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``, selenium):
choose a file, wait for the overlay, compare its pixels with :func:`zoo.viz.overlay`, move the opacity slider.

``ZOO_SERVE_SCREENSHOT=PATH`` keeps the page's screenshot there (the README's picture comes from this test)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="zoo serve needs the serve extra")
webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium (pip)")
from serve_support import PALETTE, running, save_tiny_model, start_cli  # noqa: E402

from zoo.data.shapes import make_shapes_item  # noqa: E402
from zoo.infer import Predictor  # noqa: E402
from zoo.viz import overlay  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture
def browser():
    if not (CHROMIUM and DRIVER):
        pytest.skip("no chromium/chromedriver on PATH: apt-get install -y chromium chromium-driver (Debian)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,760",
                 "--force-color-profile=srgb", "--disable-gpu"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))
    yield driver
    driver.quit()


def _canvas_pixels(driver) -> np.ndarray:
    script = """const c = document.getElementById('overlay');
        return [c.width, c.height, Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)];"""
    width, height, data = driver.execute_script(script)
    return np.asarray(data, np.uint8).reshape(height, width, 4)[..., :3]


def test_page_segments_an_uploaded_photo(browser, tmp_path) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    image, _ = make_shapes_item(seed=7, split="val", index=0, size=256)
    path = tmp_path / "shapes.png"
    Image.fromarray(image).save(path)
    model_file = save_tiny_model(tmp_path / "tiny.pt")
    expected = Predictor.from_checkpoint(model_file).predict(image)
    with running(start_cli(model_file, tmp_path / "server.log")) as server:
        browser.get(f"{server.url}/")
        chooser = browser.find_element("id", "file")
        browser.execute_script("arguments[0].hidden = false", chooser)
        chooser.send_keys(str(path))
        WebDriverWait(browser, 60).until(
            lambda d: d.execute_script("return document.getElementById('overlay').dataset.done") == "1"
        )
        shown = _canvas_pixels(browser).astype(int)
        reference = overlay(image, expected, PALETTE, 0.5).astype(int)
        assert shown.shape == reference.shape
        assert np.abs(shown - reference).max() <= 1  # JavaScript rounds halves up, numpy to even
        rows = browser.find_elements("css selector", "#legend tr")
        present = [i for i in range(3) if (expected == i).any()]
        assert len(rows) == len(present)
        browser.execute_script(
            "const s = document.getElementById('opacity'); s.value = 1; s.dispatchEvent(new Event('input'))"
        )
        full = _canvas_pixels(browser).astype(int)
        assert np.abs(full - overlay(image, expected, PALETTE, 1.0).astype(int)).max() <= 1
        browser.execute_script(
            "const s = document.getElementById('opacity'); s.value = 0.5; s.dispatchEvent(new Event('input'))"
        )
        target = os.environ.get("ZOO_SERVE_SCREENSHOT") or str(tmp_path / "page.png")
        assert browser.save_screenshot(target)
        assert Image.open(target).size[0] >= 1000
