"""`manifest.json`: the contract written next to every ONNX file and read by the runtime.

It carries what a user would otherwise have to remember: what the model is, how to feed it,
what its outputs mean, and how accurate each stage measured at export.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from finprint.errors import FinprintError

MANIFEST_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Preprocess(_Strict):
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    resize: Literal["letterbox", "stretch"] = "letterbox"
    pad_value: int = 114
    color_order: Literal["RGB", "BGR"] = "RGB"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    layout: Literal["NCHW"] = "NCHW"
    # Embedder: the crop shows only the fish's own instance mask (runtime/crops.py mask_background).
    crop_mask: bool = False
    # Embedder: the crop is turned along the fish's long axis from its instance mask (crop_fish's `align`).
    crop_align: bool = False


class TensorSpec(_Strict):
    name: str
    shape: list[int | str]  # a str is a dynamic dimension, e.g. "batch"
    dtype: Literal["float32", "float16", "int64", "int32", "uint8"] = "float32"
    meaning: str = ""


class StageAccuracy(_Strict):
    """One stage of the export gate (teacher fp32 -> student fp32 -> fp16 -> int8)."""

    stage: str
    precision: str
    metrics: dict[str, float]


class Manifest(_Strict):
    manifest_version: int = MANIFEST_VERSION
    kind: Literal["detector", "embedder"]
    model_name: str
    finprint_version: str
    precision: Literal["fp32", "fp16", "int8"]
    onnx_file: str
    onnx_sha256: str
    opset: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    preprocess: Preprocess
    class_names: list[str] = ["fish"]
    embedding_dim: int | None = None
    open_set_threshold: float | None = None  # embedder: cosine similarity below this -> unknown
    score_threshold: float | None = None  # detector: default confidence threshold
    iou_threshold: float | None = None  # detector: NMS IoU
    mask_stride: int | None = None  # detector: prototype masks are input / mask_stride
    max_batch: int = 8
    calibration_hash: str | None = None
    accuracy: list[StageAccuracy] = []
    extra: dict[str, str | float | int | bool | None] = {}

    def input(self, name: str | None = None) -> TensorSpec:
        if name is None:
            return self.inputs[0]
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(name)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def manifest_path_for(model_path: str | Path) -> Path:
    """`student.int8.onnx` -> `student.int8.manifest.json` (engines share their ONNX's manifest name)."""
    p = Path(model_path)
    stem = p.name
    for suffix in (".onnx", ".engine", ".plan"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    return p.with_name(f"{stem}.manifest.json")


def load_manifest(path: str | Path) -> Manifest:
    path = Path(path)
    if not path.is_file():
        raise FinprintError(f"{path}: manifest not found; re-run `finprint export` to write it next to the model")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise FinprintError(f"{path}: not a readable manifest ({exc}); re-run `finprint export`") from exc
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise FinprintError(f"{path}: invalid manifest field '{where}': {first['msg']}") from exc


def save_manifest(manifest: Manifest, path: str | Path) -> Path:
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(manifest.model_dump_json(indent=2) + "\n")
    tmp.replace(path)
    return path


def verify_onnx_matches(manifest: Manifest, onnx_path: str | Path) -> None:
    """Refuse an ONNX file that is not the one the manifest describes (truncated, swapped, edited)."""
    actual = sha256_file(onnx_path)
    if actual != manifest.onnx_sha256:
        raise FinprintError(
            f"{onnx_path}: sha256 {actual[:12]}… does not match its manifest ({manifest.onnx_sha256[:12]}…); "
            "the file is truncated or not the exported one: re-run `finprint export`"
        )
