"""Screenshot of ``vlpart demo`` for the README (``docs/demo.png``).

Starts ``vlpart demo`` on a free loopback port, uploads IMAGE in headless Chromium (Debian's
``chromium`` + ``chromium-driver``), types the vocabulary, sets the threshold, presses Segment
and saves the page once the overlay is shown::

    python tools/demo_screenshot.py --weights quickstart/model.safetensors \
        --image world_000352_x4.png --vocab "car:*; horse:*; sheep:*" \
        --score-thresh 0.4 --out docs/demo.png
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

START_S = 180
REQUEST_S = 120


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--vocab", required=True)
    parser.add_argument("--score-thresh", type=float, default=0.3)
    parser.add_argument("--out", default="docs/demo.png")
    args = parser.parse_args()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vlpart.apps.cli",
            "demo",
            "--weights",
            args.weights,
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument("--window-size=1400,1400")
    driver = None
    try:
        deadline = time.monotonic() + START_S
        for line in server.stdout:
            if f"open {url}" in line:
                break
            if time.monotonic() > deadline:
                sys.exit("the demo did not start")
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        wait = WebDriverWait(driver, REQUEST_S)
        driver.get(url)
        find = driver.find_element
        wait.until(lambda d: d.find_elements("css selector", "#image input[type=file]"))
        find("css selector", "#image input[type=file]").send_keys(str(Path(args.image).resolve()))
        vocab = find("css selector", "#vocabulary textarea")
        vocab.clear()
        vocab.send_keys(args.vocab)
        number = find("css selector", "#threshold input[type=number]")
        number.clear()
        number.send_keys(str(args.score_thresh), Keys.TAB)
        find("css selector", "#submit").click()
        wait.until(lambda d: d.find_elements("css selector", "#overlay img"))
        time.sleep(1)  # let the table and the download boxes settle
        driver.execute_script("window.scrollTo(0, 0)")
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(args.out)
        status = find("css selector", "#status textarea").get_attribute("value")
        print(f"{args.out}: {status}")
    finally:
        if driver is not None:
            driver.quit()
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
