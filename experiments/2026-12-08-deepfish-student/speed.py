"""Speed of the DeepFish student shapes tried here, untrained (speed does not depend on the weights): the fp32 teacher,
and fishseg-student-lite / -lite-wide / -lite16 exported INT8 (`calib build`'s selection of 16 ras-frames), for one interleaved
`finprint bench` run. Usage: python speed.py OUT [RAS_FRAMES]  (then: finprint bench --models OUT --rounds 50)"""
import sys
from pathlib import Path

import torch

from finprint.calib.calibset import build_calibset
from finprint.calib.quantize import quantize_int8
from finprint.distill.detect_data import detector_preprocess
from finprint.distill.detector import SPECS, FishDetector
from finprint.export.onnx_export import export_onnx, write_manifest

out = Path(sys.argv[1])
ras = Path(sys.argv[2] if len(sys.argv) > 2 else "../shared/data/ras-frames")
pre = detector_preprocess(320)
calib = build_calibset(ras, out / "calib", pre, size=16)
torch.manual_seed(0)
for name in ("fishseg-teacher-lite0", "fishseg-student-lite", "fishseg-student-lite-wide", "fishseg-student-lite16"):
    model = FishDetector(SPECS[name]).eval()
    kind = "teacher" if "teacher" in name else "student"
    fp32 = export_onnx(model, "detector", out / f"detector-{kind}-{name}.fp32.onnx", pre)
    if kind == "teacher":
        write_manifest(fp32, "detector", name, "fp32", pre)
        continue
    int8 = quantize_int8(fp32, out / f"detector-{kind}-{name}.int8.onnx", calib)
    write_manifest(int8, "detector", name, "int8", pre)
    fp32.unlink()
    print(name, "exported", flush=True)
