"""``miro serve`` end to end in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

A tiny run is trained long enough for its aesthetic target to matter, ``miro serve`` is started on a free
localhost port, and the page is used as a person would: type, move sliders, press Generate, read the
measured scores, download the grid. No browser is downloaded: Playwright drives the system Chromium.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from PIL import Image

from miro_core.train import Trainer

from .conftest import SHAPES_REWARDS, tiny_train_config

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def find_chromium() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_page(url: str, server: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"`miro serve` exited with {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"`miro serve` did not answer on {url} within {timeout:.0f}s:\n{log.read_text()}")


def set_slider(page, elem_id: str, value: float) -> None:
    """Type into the slider's number box, as a person would, and commit with Enter."""
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")
    page.wait_for_function(
        "([id, v]) => Math.abs(Number(document.querySelector(`#${id} input[type=range]`).value) - v) < 1e-6",
        arg=[elem_id, value],
    )


def status_contains(page, text: str, timeout: float = 60_000) -> str:
    page.wait_for_function(
        "t => document.querySelector('#status').innerText.includes(t)", arg=text, timeout=timeout
    )
    return page.locator("#status").inner_text()


def score_table(page) -> dict[str, list[str]]:
    rows = page.locator("#scores table tbody tr")
    table = {}
    for i in range(rows.count()):
        cells = [c.strip() for c in rows.nth(i).locator("td").all_inner_texts()]
        table[cells[0]] = cells[1:]
    return table


def loaded_images(page, gallery: str) -> int:
    return page.evaluate(
        "id => [...document.querySelectorAll(`#${id} img`)].filter(i => i.complete && i.naturalWidth > 0).length",
        gallery,
    )


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip(
            "no Chromium at /usr/bin/chromium: install Debian's `chromium` package "
            "(`make test` does it with apt-get when run as root)"
        )
    return path


@pytest.mark.slow
def test_page_controls_rewards_in_a_real_browser(chromium: str, tiny_annotations, tiny_bins, registry, tmp_path):
    from playwright.sync_api import sync_playwright

    started = time.monotonic()
    run = tmp_path / "run"
    # 600 steps: at 300 the aesthetic control of a tiny run depends on the initialisation (measured over
    # seeds: 0.17 vs 0.16 up to 0.60 vs 0.32); at 600 it is reliable (0.83 vs 0.20, 0.87 vs 0.22).
    config = tiny_train_config(tiny_annotations, tiny_bins, run, steps=600, lr=3e-3, warmup_steps=10,
                               batch_size=16, save_every=600, log_every=100)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # `make test` runs 2 workers on 2 cores: more threads only thrash
    try:
        Trainer(config, registry, progress=False).run()
    finally:
        torch.set_num_threads(threads)
    trained = time.monotonic() - started

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log = tmp_path / "serve.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "miro_cli.main", "serve", str(run), "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
        )
    try:
        wait_for_page(url, server, log)
        print(f"trained in {trained:.1f}s, server up after {time.monotonic() - started:.1f}s")
        assert f"on http://127.0.0.1:{port}" in log.read_text(), "binds localhost by default"
        with sync_playwright() as p:
            browser = p.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"),
                executable_path=chromium,
                args=CHROMIUM_ARGS,
                headless=True,
                viewport={"width": 1400, "height": 1000},
            )
            try:
                page = browser.new_page()
                page.goto(url)
                page.wait_for_selector("#generate")
                assert page.title() == "MIRO: reward-controlled sampling"
                for key in SHAPES_REWARDS:
                    assert page.locator(f"#A-{key}-target input[type=range]").get_attribute("step").startswith("0.0666")

                # bad input: a message on the page, nothing generated
                page.locator("#prompt textarea").fill("   ")
                page.locator("#generate").click()
                assert "the prompt is empty" in status_contains(page, "Not generated")
                assert loaded_images(page, "gallery-A") == 0

                # side by side: setting B asks for LOW aesthetic, everything else as in A
                page.locator("#prompt textarea").fill("a red circle")
                page.locator("#compare input[type=checkbox]").check()
                page.wait_for_selector("#B-shapes-aesthetic-target")
                set_slider(page, "A-shapes-aesthetic-target", 1)
                set_slider(page, "A-shapes-aesthetic-negative", 0)
                set_slider(page, "B-shapes-aesthetic-target", 0)
                set_slider(page, "B-shapes-aesthetic-negative", 1)
                set_slider(page, "guidance", 3)
                set_slider(page, "steps", 20)
                print(f"sliders set after {time.monotonic() - started:.1f}s")
                page.locator("#generate").click()
                status = status_contains(page, "Generated 8 images")
                print(f"generated after {time.monotonic() - started:.1f}s: {status}")
                assert "seed 0, 20 steps" in status and "guidance w = 3" in status
                page.wait_for_function(
                    "() => ['gallery-A', 'gallery-B'].every(id => [...document.querySelectorAll(`#${id} img`)]"
                    ".filter(i => i.complete && i.naturalWidth > 0).length === 4)"
                )
                assert "aesthetic" in page.locator("#gallery-A").inner_text()
                table = score_table(page)
                print(f"measured scores: {table}")
                assert set(table) == set(SHAPES_REWARDS)
                asked_a, measured_a, asked_b, measured_b, _ = table["shapes-aesthetic"]
                assert (asked_a, asked_b) == ("1.00 / 0.00", "0.00 / 1.00")
                assert table["shapes-sharpness"][2] == "1.00 / 0.00", "B changes only the aesthetic sliders"
                assert float(measured_a) > float(measured_b) + 0.05, (
                    f"asking for high aesthetic ({measured_a}) should beat asking for low ({measured_b})"
                )

                # the grid PNG: 2 rows (A, B) of 4 images, 32 px upscaled 4x, with a label line per row
                with page.expect_download() as download:
                    page.locator("#download").click()
                grid = Image.open(io.BytesIO(Path(download.value.path()).read_bytes()))
                assert grid.format == "PNG" and grid.size == (4 * 128, 2 * (128 + 12))

                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "webui.png"), full_page=True)

                # two requests at once: one refused, one served; neither disturbs the other
                other = browser.new_page()
                other.goto(url)
                other.wait_for_selector("#generate")
                other.locator("#prompt textarea").fill("x" * 400)
                page.locator("#compare input[type=checkbox]").uncheck()
                page.locator("#seed input").fill("7")
                page.locator("#generate").click()
                other.locator("#generate").click()
                assert "the prompt has 400 characters; the limit is 300" in status_contains(other, "Not generated")
                assert "Generated 4 images (one setting)" in status_contains(page, "seed 7")
                assert server.poll() is None, "the server is still up"
            finally:
                browser.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
    print(f"browser test: trained in {trained:.1f}s, total {time.monotonic() - started:.1f}s")
