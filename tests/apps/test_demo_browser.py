"""``vlpart demo`` end to end in a real headless browser (Debian's chromium + chromedriver,
driven by Selenium): the server runs as the command a user types, on a free loopback port."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SERVER_START_S = 180  # model load + Gradio import on a busy 2-core machine
REQUEST_S = 120
MAX_UPLOAD_MB = 1  # above the example photos
VOCABULARY = "dog; dog:head,torso,tail"
VOCABULARY_NAMES = ["dog", "dog:head", "dog:torso", "dog:tail"]


@pytest.fixture(scope="module")
def chrome_options():
    """Headless Chromium options, or skip saying exactly what is missing."""
    try:
        from selenium import webdriver
    except ImportError as err:
        pytest.skip(f"selenium is not installed ({err}); pip install selenium")
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.is_file():
            pytest.skip(f"{path} not found; apt-get install -y {package}")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument("--window-size=1400,1300")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return options


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tiny_checkpoint, shared_data, tmp_path):
    """``vlpart demo --weights TINY --port P`` in a subprocess; yields its URL."""
    port = _free_port()
    log = (tmp_path / "server.log").open("w+")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vlpart.apps.cli",
            "demo",
            "--weights",
            str(tiny_checkpoint),
            "--port",
            str(port),
            "--examples",
            str(shared_data / "pascal_part_examples"),
            "--max-upload-mb",
            str(MAX_UPLOAD_MB),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while f"open {url}" not in (tmp_path / "server.log").read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the demo did not start:\n{(tmp_path / 'server.log').read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)  # stops like Ctrl-C: the server closes, cleans up
        try:
            returncode = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            returncode = None
        log.close()
    assert returncode == 0, (tmp_path / "server.log").read_text()


class DemoPage:
    """The demo page, driven as a user would."""

    def __init__(self, driver, url: str) -> None:
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver = driver
        self.wait = WebDriverWait(driver, REQUEST_S)
        driver.get(url)
        self.wait.until(lambda d: d.find_elements("css selector", "#image input[type=file]"))

    def find(self, css: str):
        return self.driver.find_element("css selector", css)

    def upload(self, path: Path) -> None:
        self.find("#image input[type=file]").send_keys(str(path))

    def type_vocabulary(self, text: str) -> None:
        box = self.find("#vocabulary textarea")
        box.clear()
        box.send_keys(text)

    def set_threshold(self, value: float) -> None:
        from selenium.webdriver.common.keys import Keys

        number = self.find("#threshold input[type=number]")
        number.clear()
        number.send_keys(str(value), Keys.TAB)

    def status(self) -> str:
        return self.find("#status textarea").get_attribute("value")

    def submit(self) -> str:
        """Press Segment; wait for a new status line and return it."""
        self.driver.execute_script(
            "document.querySelector('#status textarea').value = ''"
        )  # so the next status is this request's
        self.find("#submit").click()
        self.wait.until(lambda d: self.status())
        return self.status()

    def rows(self) -> list[list[str]]:
        """The instance table as shown (``#``, label, score, box, parent)."""
        return self.driver.execute_script(
            "return [...document.querySelectorAll('#instances [role=row].virtual-row')].map("
            "r => [...r.querySelectorAll('[role=gridcell]')].map(c => c.textContent.trim()))"
        )

    def overlay_src(self) -> str | None:
        images = self.driver.find_elements("css selector", "#overlay img")
        return images[0].get_attribute("src") if images else None

    def download(self, css: str, folder: Path) -> Path:
        """Click the download link in ``css`` and wait for the file."""
        link = self.find(f"{css} a[download]")
        name = link.get_attribute("download")
        link.click()
        self.wait.until(lambda d: (folder / name).is_file())
        return folder / name


def _requested_hosts(driver) -> set[str]:
    hosts = set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            url = urlparse(message["params"]["request"]["url"])
            if url.scheme not in ("data", "blob"):
                hosts.add(url.hostname)
    return hosts


def test_demo_in_a_headless_browser(server, chrome_options, shared_data, tmp_path):
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    chrome_options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    try:
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=chrome_options)
    except WebDriverException as err:
        pytest.skip(f"headless Chromium did not start: {err.msg.splitlines()[0]}")
    photo = shared_data / "pascal_part_examples" / "2008_000652.jpg"
    width, height = Image.open(photo).size
    try:
        page = DemoPage(driver, server)
        page.upload(photo)
        page.type_vocabulary(VOCABULARY)
        page.set_threshold(0)  # the untrained model's scores are low but never below 0
        status = page.submit()
        assert status.startswith("10 instances of ") and "of the 4 categories" in status, status
        page.wait.until(lambda d: page.overlay_src())
        rows = page.rows()
        assert len(rows) == 10
        assert [r[0] for r in rows] == [str(i) for i in range(10)]
        assert {r[1] for r in rows} <= set(VOCABULARY_NAMES)
        scores = [float(r[2]) for r in rows]
        assert scores == sorted(scores, reverse=True) and min(scores) >= 0
        driver.save_screenshot(str(tmp_path / "demo.png"))

        results_path = page.download("#results-json", downloads)
        records = json.loads(results_path.read_text())
        assert [r["label"] for r in records] == [r[1] for r in rows]
        gt = COCO()
        gt.dataset = {
            "images": [{"id": 1, "width": width, "height": height, "file_name": photo.name}],
            "categories": [{"id": i + 1, "name": n} for i, n in enumerate(VOCABULARY_NAMES)],
            "annotations": [],
        }
        gt.createIndex()
        assert len(gt.loadRes(str(results_path)).getAnnIds()) == 10
        for record in records:
            assert VOCABULARY_NAMES[record["category_id"] - 1] == record["label"]
            assert mask_utils.decode(record["segmentation"]).shape == (height, width)
        overlay = np.asarray(Image.open(page.download("#overlay-png", downloads)))
        assert overlay.shape == (height, width, 3)

        broken = tmp_path / "broken.jpg"
        broken.write_bytes(b"this is not a jpeg")
        page.upload(broken)
        status = page.submit()
        assert status.startswith("Error: broken.jpg: not a readable image"), status
        assert page.rows() == [] and page.overlay_src() is None

        # The server still serves: another photo, another vocabulary.
        page.upload(shared_data / "pascal_part_examples" / "2008_000700.jpg")
        page.type_vocabulary("cat:head,ear")
        status = page.submit()
        assert status.startswith("10 instances of ") and "of the 2 categories" in status, status
        page.wait.until(lambda d: page.overlay_src())
        assert {r[1] for r in page.rows()} <= {"cat:head", "cat:ear"}
        assert len(page.rows()) == 10

        assert _requested_hosts(driver) == {"127.0.0.1"}  # nothing phones home

        # Uploads above the limit are refused by the server before anything reads them.
        too_big = {"files": ("big.jpg", b"\xff" * (MAX_UPLOAD_MB * 2**20 + 1), "image/jpeg")}
        refused = httpx.post(f"{server}gradio_api/upload", files=too_big, timeout=60)
        assert refused.status_code == 413, refused.text
        assert "maximum allowed size of 1048576 bytes" in refused.text
        driver.save_screenshot(str(tmp_path / "demo_after_error.png"))
    finally:
        driver.quit()
    shot = Image.open(tmp_path / "demo.png")  # the test's artefact
    assert shot.format == "PNG" and shot.size[0] >= 1000
