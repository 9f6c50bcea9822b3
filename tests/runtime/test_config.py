import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from finprint.errors import ConfigError
from finprint.runtime.config import load_config


def _farm(tmp_path: Path, **override) -> Path:
    (tmp_path / "det.onnx").write_bytes(b"x")
    (tmp_path / "emb.onnx").write_bytes(b"x")
    (tmp_path / "video.mp4").write_bytes(b"x")
    cfg = {
        "cameras": [
            {"id": "pen1", "source": "video.mp4", "loop": True, "px_per_cm": 10.0},
            {"id": "pen2", "source": "rtsp://10.0.0.5:554/stream1", "px_per_cm": 8.0},
            {"id": "pen3", "source": 0, "px_per_cm": 8.0},
            {"id": "pen4", "source": "videotestsrc ! videoconvert ! appsink", "px_per_cm": 8.0},
        ],
        "models": {"detector": "det.onnx", "embedder": "emb.onnx"},
        "gallery": "gallery.db",
        "sinks": {"jsonl": "events.jsonl", "mqtt": {"host": "127.0.0.1", "port": 1883, "topic": "farm/fish"}},
    }
    cfg.update(override)
    path = tmp_path / "farm.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_valid_config_resolves_paths_and_kinds(tmp_path):
    cfg = load_config(_farm(tmp_path))
    assert cfg.models.detector == tmp_path / "det.onnx"
    assert cfg.gallery == tmp_path / "gallery.db"
    assert [c.resolved_kind() for c in cfg.cameras] == ["file", "url", "usb", "gstreamer"]
    assert cfg.cameras[0].source == str(tmp_path / "video.mp4")
    assert cfg.http.bind == "127.0.0.1"
    assert cfg.sinks.mqtt is not None and cfg.sinks.mqtt.topic == "farm/fish"


def test_unknown_key_names_its_path(tmp_path):
    path = _farm(tmp_path, models={"detector": "det.onnx", "embedder": "emb.onnx", "bakend": "onnxruntime"})
    with pytest.raises(ConfigError, match=r"models\.bakend: unknown key"):
        load_config(path)


def test_missing_model_file(tmp_path):
    path = _farm(tmp_path, models={"detector": "nope.onnx", "embedder": "emb.onnx"})
    with pytest.raises(ConfigError, match=r"models\.detector: model file .*nope\.onnx not found"):
        load_config(path)


@pytest.mark.parametrize("url", ["rtsp://", "http://bad host/x", "rtsp://cam:99999999/x"])
def test_malformed_camera_url(tmp_path, url):
    path = _farm(tmp_path, cameras=[{"id": "c", "source": url, "px_per_cm": 5}])
    with pytest.raises(ConfigError, match=r"cameras\.0\.source: malformed camera URL"):
        load_config(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_gallery(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match=r"gallery: .*not writable"):
            load_config(_farm(tmp_path, gallery=str(locked / "g.db")))
    finally:
        locked.chmod(0o700)


def test_gallery_in_missing_folder(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(_farm(tmp_path, gallery="no/such/dir/g.db"))


def test_duplicate_camera_ids(tmp_path):
    cams = [{"id": "a", "source": 0, "px_per_cm": 1}, {"id": "a", "source": 1, "px_per_cm": 1}]
    with pytest.raises(ConfigError, match="unique"):
        load_config(_farm(tmp_path, cameras=cams))


@pytest.mark.parametrize(
    "override, needle",
    [
        ({"cameraz": []}, "cameraz: unknown key"),
        ({"models": {"detector": "missing.onnx", "embedder": "emb.onnx"}}, "model file"),
        ({"cameras": [{"id": "c", "source": "http://", "px_per_cm": 1}]}, "malformed camera URL"),
        ({"gallery": "/proc/finprint/g.db"}, "gallery"),
    ],
)
def test_serve_exits_2_with_one_line_before_starting(tmp_path, override, needle):
    path = _farm(tmp_path, **override)
    proc = subprocess.run(
        [sys.executable, "-m", "finprint.cli", "serve", "--config", str(path)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert not (tmp_path / "gallery.db").exists()  # nothing started


def test_serve_refuses_an_unloadable_model_before_writing_anything(tmp_path):
    path = _farm(tmp_path, cameras=[{"id": "c", "source": "rtsp://127.0.0.1:9/none", "px_per_cm": 1}])
    (tmp_path / "det.onnx").write_bytes(b"not an onnx file")
    proc = subprocess.run(
        [sys.executable, "-m", "finprint.cli", "serve", "--config", str(path)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "det.onnx" in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "gallery.db").exists() and not (tmp_path / "events.jsonl").exists()


def test_the_deploy_guide_example_uses_only_keys_the_config_knows():
    import re

    from finprint.runtime.config import FarmConfig

    guide = (Path(__file__).resolve().parents[2] / "docs" / "DEPLOY.md").read_text()
    (block,) = re.findall(r"```yaml\n(.*?)```", guide, re.S)
    FarmConfig.model_validate(yaml.safe_load(block))  # unknown keys or bad values raise
