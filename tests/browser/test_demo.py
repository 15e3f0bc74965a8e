"""The browser demo of ``wavewire serve`` in real headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by Selenium), with a WAV file the test writes as the microphone.

Checked through the page's own counters: audio goes both ways, the round trip is measured,
Interrupt is answered by the server's ``InterruptionFrame`` and empties the playback buffer, a
second tab replaces the first (which shows close 1000 and its reason), and a page from another
origin gets in only where the server's ``--allow-origin`` says so.

``WAVEWIRE_UPDATE_SCREENSHOT=1`` also copies the screenshot to docs/demo.png.
"""

from __future__ import annotations

import math
import os
import shutil
import struct
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.adapters.test_cli import free_port
from tests.adapters.test_cli_newuser import echo_server as serve
from wavewire.core.server import REPLACED_REASON

ROOT = Path(__file__).resolve().parents[2]
#: Bound of every wait, in seconds (Chromium starts slowly on a loaded machine).
LIMIT = 30.0

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="Chromium is not installed: apt-get install -y chromium chromium-driver "
    "(.ci/run installs them)",
)


def write_tone(path: Path) -> None:
    """Two seconds of a 440 Hz tone, 48 kHz mono PCM16 (Chromium loops the file)."""
    rate = 48000
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(
            b"".join(
                struct.pack("<h", int(12000 * math.sin(2 * math.pi * 440 * i / rate)))
                for i in range(rate * 2)
            )
        )


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium fetch a browser or driver
    mic = tmp_path / "mic.wav"
    write_tone(mic)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={mic}",
        "--autoplay-policy=no-user-gesture-required",
        "--window-size=900,900",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(LIMIT)
    try:
        yield driver
    finally:
        driver.quit()


def stats(driver: Any) -> dict[str, Any]:
    value = driver.execute_script("return Object.assign({}, window.wavewireDemo.stats)")
    assert isinstance(value, dict)
    return value


def wait_for(driver: Any, condition: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
    from selenium.webdriver.support.ui import WebDriverWait

    seen: list[dict[str, Any]] = []

    def check(driver: Any) -> bool:
        seen.append(stats(driver))
        return condition(seen[-1])

    try:
        WebDriverWait(driver, LIMIT, poll_frequency=0.1).until(check)
    except Exception:
        raise AssertionError(f"{what}: page stats {seen[-1] if seen else None}") from None
    return seen[-1]


def open_page(driver: Any, url: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url)
    driver.find_element(By.ID, "connect").click()


def text(driver: Any, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    value: str = driver.find_element(By.ID, element_id).text
    return value


def test_demo_echoes_interrupts_and_is_replaced_by_a_second_tab(
    browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    port = free_port()
    with serve(port):
        page = f"http://127.0.0.1:{port}/"
        open_page(browser, page)
        first_tab = browser.current_window_handle
        # Audio both ways: the microphone's frames out, the echo back and played.
        flowing = wait_for(
            browser,
            lambda s: (
                s["framesSent"] >= 25
                and s["framesReceived"] >= 10
                and s["playedMs"] > 0
                and s["rttMs"] is not None
            ),
            "audio did not flow both ways",
        )
        assert flowing["state"] == "open" and flowing["format"] == "protobuf"
        assert flowing["interruptions"] == 0 and flowing["flushes"] == 0
        assert text(browser, "state") == "open"
        assert int(text(browser, "frames-received")) >= 10

        # Interrupt: the server answers with an InterruptionFrame (the page does not stop on
        # its own in protobuf mode), and the playback buffer is emptied at once.
        browser.find_element(By.ID, "interrupt").click()
        interrupted = wait_for(
            browser, lambda s: s["interruptions"] == 1 and s["flushes"] == 1, "no interruption"
        )
        assert interrupted["state"] == "open"
        # And the echo goes on afterwards.
        received = interrupted["framesReceived"]
        wait_for(browser, lambda s: s["framesReceived"] > received + 5, "no echo after interrupt")

        # A second tab replaces the first.
        browser.switch_to.new_window("tab")
        open_page(browser, page)
        wait_for(browser, lambda s: s["state"] == "open" and s["framesReceived"] > 0, "tab 2")
        browser.switch_to.window(first_tab)
        replaced = wait_for(browser, lambda s: s["state"] == "closed", "tab 1 was not closed")
        assert replaced["closeCode"] == 1000
        assert replaced["closeReason"] == REPLACED_REASON
        assert text(browser, "close-code") == "1000"
        assert text(browser, "close-reason") == REPLACED_REASON

        shot = tmp_path / "demo.png"
        assert browser.save_screenshot(str(shot))
        assert shot.read_bytes().startswith(b"\x89PNG")
        if os.environ.get("WAVEWIRE_UPDATE_SCREENSHOT") == "1":
            shutil.copyfile(shot, ROOT / "docs" / "demo.png")


def test_demo_from_another_origin_only_where_allowed(browser: Any) -> None:
    allowed_port, other_port = free_port(), free_port()
    # The server on allowed_port lets pages from other_port's origin in; not the reverse.
    with (
        serve(allowed_port, "--allow-origin", f"http://127.0.0.1:{other_port}"),
        serve(other_port),
    ):
        open_page(
            browser,
            f"http://127.0.0.1:{other_port}/?server=ws://127.0.0.1:{allowed_port}/",
        )
        wait_for(browser, lambda s: s["state"] == "open", "an allowed origin was refused")
        open_page(
            browser,
            f"http://127.0.0.1:{allowed_port}/?server=ws://127.0.0.1:{other_port}/",
        )
        refused = wait_for(browser, lambda s: s["state"] == "closed", "not refused")
        assert refused["closeCode"] == 1006  # what a browser reports for a refused handshake
        assert refused["framesReceived"] == 0
        assert "origin" in text(browser, "error")


def test_demo_speaks_the_raw_format_and_disconnects(browser: Any) -> None:
    """``wavewire serve --serializer raw``: the page sends bare PCM16 and JSON; the format has
    no interruption message, so Interrupt empties the playback buffer on the page itself.
    Then Disconnect closes with 1000."""
    from selenium.webdriver.common.by import By

    port = free_port()
    with serve(port, "--serializer", "raw"):
        open_page(browser, f"http://127.0.0.1:{port}/")
        flowing = wait_for(
            browser,
            lambda s: s["framesReceived"] >= 10 and s["playedMs"] > 0 and s["rttMs"] is not None,
            "raw audio did not flow both ways",
        )
        assert flowing["format"] == "raw"
        browser.find_element(By.ID, "interrupt").click()
        wait_for(browser, lambda s: s["interruptions"] == 1 and s["flushes"] == 1, "no flush")
        # Disconnect: a clean close the page started, the microphone released.
        browser.find_element(By.ID, "disconnect").click()
        closed = wait_for(browser, lambda s: s["state"] == "closed", "Disconnect did not close")
        assert (closed["closeCode"], closed["closeReason"]) == (1000, "disconnected by the user")
        assert closed["bufferedMs"] == 0 and closed["error"] == ""
        assert browser.find_element(By.ID, "connect").is_enabled()
