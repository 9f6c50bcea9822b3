"""How fast could the DeepFish edge student be? Untrained detectors (speed does not depend on the weights) exported
fp32 and INT8 (calibrated on 16 ras-frames) and timed by `finprint bench` in one interleaved run against the fp32
teacher: the real preset's student, the same with fewer of Lite0's stages (to stride 4), and the lean student
(no Lite0 at all). Issue 28 asks the INT8 student to be 8x faster than the fp32 teacher.
Usage: python run.py OUT [RAS_FRAMES]  (then: finprint bench --models OUT --rounds 50)"""
import dataclasses
import hashlib
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from finprint.calib.calibset import CalibSet
from finprint.calib.quantize import quantize_int8
from finprint.distill.detect_data import detector_preprocess
from finprint.distill.detector import SPECS, FishDetector
from finprint.export.onnx_export import export_onnx, write_manifest
from finprint.runtime.preprocess import letterbox, to_tensor

out = Path(sys.argv[1])
ras = Path(sys.argv[2] if len(sys.argv) > 2 else "../shared/data/ras-frames")
pre = detector_preprocess(320)
frames = sorted(p for p in ras.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:16]
tensors = np.stack([to_tensor(letterbox(cv2.imread(str(p)), 320, 320)[0], pre) for p in frames])
calib = CalibSet(ras, tensors, pre, hashlib.sha256(tensors.tobytes()).hexdigest(), [{"file": p.name} for p in frames])
lite = SPECS["fishseg-student-lite"]
models = {
    "fishseg-teacher-lite0": (SPECS["fishseg-teacher-lite0"], ("fp32",)),
    "fishseg-student-lite": (lite, ("fp32", "int8")),
    "student-lite-s4": (dataclasses.replace(lite, trunk_stride=4, widths=(32, 24, 40, 48, 64)), ("int8",)),
    "fishseg-student-lean": (SPECS["fishseg-student-lean"], ("int8",)),
}
torch.manual_seed(0)
for name, (spec, precisions) in models.items():
    model = FishDetector(spec).eval()
    kind = "teacher" if "teacher" in name else "student"
    fp32 = export_onnx(model, "detector", out / f"detector-{kind}-{name}.fp32.onnx", pre)
    if "fp32" in precisions:
        write_manifest(fp32, "detector", name, "fp32", pre)
    if "int8" in precisions:
        int8 = quantize_int8(fp32, out / f"detector-{kind}-{name}.int8.onnx", calib)
        write_manifest(int8, "detector", name, "int8", pre)
    if "fp32" not in precisions:
        fp32.unlink()
    print(name, "exported", flush=True)
