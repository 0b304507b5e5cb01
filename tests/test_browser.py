"""A real browser: JupyterLab started headless on a free localhost port, Debian's Chromium driven by
Selenium opens 02_tune_postprocess.ipynb, runs it, moves the threshold slider, and the box count the
tuner renders as text changes to what the postprocess says. Screenshots: out/test-artifacts/."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "out" / "test-artifacts"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
TOKEN = "dsprobe-browser-test"

pytestmark = pytest.mark.browser


def _require_browser() -> None:
    for exe in (CHROMIUM, CHROMEDRIVER):
        if not os.path.exists(exe):
            pytest.skip(f"{exe} is not installed (apt-get install -y chromium chromium-driver)")
    pytest.importorskip("selenium", reason="pip install selenium (dsprobe[dev])")
    pytest.importorskip("jupyterlab")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(sample_recording, sample_videos, tmp_path):
    """JupyterLab on a free port, token known, serving a temp copy of the tuning notebook."""
    _require_browser()
    root = tmp_path / "lab"
    root.mkdir()
    shutil.copy(ROOT / "notebooks" / "02_tune_postprocess.ipynb", root)
    settings = tmp_path / "settings" / "@jupyterlab"
    for ext, name, value in (
        ("apputils-extension", "notification", {"fetchNews": "false", "checkForUpdates": False}),
        ("notebook-extension", "tracker", {"autoStartDefaultKernel": True}),
    ):
        (settings / ext).mkdir(parents=True)
        (settings / ext / f"{name}.jupyterlab-settings").write_text(json.dumps(value))
    port = _free_port()
    env = {
        **os.environ,
        "DSPROBE_RECORDING": str(sample_recording),
        "DSPROBE_GROUND_TRUTH": str(sample_videos.gt_json),
        "DSPROBE_SPEC": str(tmp_path / "tuned.json"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"),
    }
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={TOKEN}",
            f"--ServerApp.root_dir={root}",
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
        + (["--allow-root"] if os.geteuid() == 0 else []),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=root,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=2).read()
                break
            except OSError as exc:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(
                        f"JupyterLab did not start: {(tmp_path / 'lab.log').read_text()[-2000:]}"
                    ) from exc
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def browser(tmp_path):
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,1900",
        f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path, prefix='chromium-')}",
    ):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def expected_counts(recording: Path) -> tuple[int, float, int]:
    """Boxes on the tuner's first frame with the config's settings, a threshold that removes some,
    and the boxes left at that threshold, from the library."""
    from dsprobe import Postprocess, open_recording

    with open_recording(recording) as rec:
        pp = Postprocess.from_nvinfer_config(rec.config())
        f = rec.frames[rec.frames["layer_row"] >= 0]
        first = f[f["source_id"] == f["source_id"].min()].sort_values("frame_num").index[0]
        frame = rec[int(first)]
        dets = pp(frame)
        assert len(dets), "the sample's first frame has no boxes"
        thr = math.floor(float(dets.scores.min()) * 100) / 100 + 0.01
        after = pp.set_params({"pre_cluster_threshold": thr})(frame)
        return len(dets), round(thr, 2), len(after)


def test_tuner_in_jupyterlab_moves_threshold_and_count_changes(lab, browser, sample_recording):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    n_before, thr, n_after = expected_counts(sample_recording)
    assert n_after < n_before
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    wait = WebDriverWait(browser, 120)
    browser.get(f"{lab}/lab/tree/02_tune_postprocess.ipynb?token={TOKEN}")
    try:
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, ".jp-NotebookPanel .jp-Cell")))
        time.sleep(2.0)
        for button in browser.find_elements(
            By.XPATH, "//dialog//button[.//*[text()='Select'] or text()='Select']"
        ):
            button.click()  # "Select Kernel" (only when the preferred-kernel setting is not honoured)
        # the kernel is up when the toolbar's status says Idle
        wait.until(
            lambda d: (
                d.find_elements(
                    By.XPATH,
                    "//*[contains(@class,'jp-Notebook-ExecutionIndicator')"
                    " and contains(@data-status,'idle')]",
                )
                or d.find_elements(By.XPATH, "//*[contains(text(),'Python 3 (ipykernel) | Idle')]")
            )
        )
        menu = wait.until(
            EC.element_to_be_clickable(
                (By.XPATH, "//li[contains(@class,'lm-MenuBar-item')][.//div[text()='Run']]")
            )
        )
        menu.click()
        wait.until(
            EC.element_to_be_clickable(
                (By.XPATH, "//li[contains(@class,'lm-Menu-item')][.//div[text()='Run All Cells']]")
            )
        ).click()
        count = wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, ".dsprobe-count")))
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, ".dsprobe-count").text.strip() != "")
        tuner = count.find_element(
            By.XPATH, "ancestor::div[contains(@class,'jp-OutputArea-output')][1]"
        )
        browser.execute_script("arguments[0].scrollIntoView({block: 'start'});", tuner)
        time.sleep(1.0)  # let the image render before the screenshot
        browser.save_screenshot(str(ARTIFACTS / "browser_tuner_before.png"))
        assert int(count.text) == n_before

        slider = browser.find_element(
            By.XPATH,
            "//div[contains(@class,'widget-slider')][.//label[contains(text(),'pre-cluster thr')]]",
        )
        readout = slider.find_element(By.CSS_SELECTOR, ".widget-readout")
        assert float(readout.text) == pytest.approx(0.25)
        readout.click()
        readout.send_keys(Keys.CONTROL, "a")
        readout.send_keys(f"{thr:.2f}", Keys.ENTER)
        wait.until(
            lambda d: d.find_element(By.CSS_SELECTOR, ".dsprobe-count").text.strip() == str(n_after)
        )
        browser.execute_script("arguments[0].scrollIntoView({block: 'start'});", tuner)
        time.sleep(1.0)
        browser.save_screenshot(str(ARTIFACTS / "browser_tuner_after.png"))
        assert float(slider.find_element(By.CSS_SELECTOR, ".widget-readout").text) == pytest.approx(
            thr
        )
        assert int(browser.find_element(By.CSS_SELECTOR, ".dsprobe-count").text) == n_after
    except Exception:
        browser.save_screenshot(str(ARTIFACTS / "browser_tuner_failure.png"))
        raise
