"""The web page on a tiny farm, for the browser test and `scripts/page-screenshots`: a daemon on the review farm
(finprint.testing.make_review_farm: toy models, two fish, one of them a stranger) and a headless system chromium
driven by selenium (the `dev` extra). Needs `onnx` for the toy models."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from finprint.errors import FinprintError

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> tuple[str, str] | None:
    """(browser, driver) executables on PATH, or None."""
    browser = next((shutil.which(n) for n in CHROMIUM if shutil.which(n)), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def start_farm_daemon(root: Path, fps_limit: float = 60.0, **http: Any) -> Any:
    """A started Daemon on a fresh review farm under `root` (stop it when done)."""
    from finprint.runtime.config import load_config
    from finprint.runtime.daemon import Daemon
    from finprint.testing import make_review_farm

    os.environ.setdefault("FINPRINT_ORT_THREADS", "1")
    farm = make_review_farm(root / "farm")
    (root / "snapshots").mkdir(exist_ok=True)
    cfg = {
        "cameras": [{"id": "pen1", "source": str(farm["video"]), "loop": True, "px_per_cm": 4.0, "fps_limit": fps_limit}],
        "models": {"detector": str(farm["detector"]), "embedder": str(farm["embedder"]), "backend": "cpu", "max_batch": 2},
        "gallery": str(farm["gallery"]),
        "sinks": {"snapshots": str(root / "snapshots")},
        "http": {"port": 0, **http},
        "tracking": {"min_hits": 2},
    }
    (root / "farm.yaml").write_text(yaml.safe_dump(cfg))
    daemon = Daemon(load_config(root / "farm.yaml"))
    daemon.start()
    return daemon


def wait_for(check: Callable[[], Any], timeout: float = 90.0, what: str = "a condition") -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


def chromium(width: int = 1280, height: int = 900) -> Any:
    """A headless chromium under selenium, with the system's chromedriver (nothing downloaded)."""
    found = find_chromium()
    if found is None:
        raise FinprintError("chromium and chromedriver are not installed (Debian: apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", f"--window-size={width},{height}"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=found[1]), options=options)


def unknown_track(daemon: Any) -> str:
    """The uid of a stranger's track waiting in the review queue, or ''."""
    from finprint.runtime.review import queue

    return next((t.uid for t in queue(daemon.store) if t.individual_id is None), "")


def named_since(daemon: Any, fish: str, since: float) -> bool:
    rows = daemon.events_store.query("SELECT 1 FROM events WHERE ts > ? AND individual_id = ? LIMIT 1", (since, fish))
    return bool(rows)
