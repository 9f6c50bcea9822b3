"""Single-thread ONNX Runtime latency of the DeepFish teacher and the two student candidates at 320 px, fp32 and
INT8 (QDQ, per-channel, calibrated on 4 random images: enough for timing, not for accuracy), interleaved.
Usage: python experiments/2026-12-07-deepfish-colour/latency.py OUTDIR"""

import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from finprint.distill.registry import build

warnings.filterwarnings("ignore")
out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)


class RandomImages(CalibrationDataReader):
    def __init__(self) -> None:
        self.left = 4

    def get_next(self):
        self.left -= 1
        return {"images": np.random.rand(1, 3, 320, 320).astype(np.float32)} if self.left >= 0 else None


files = []
for name in ("fishseg-teacher-lite0", "fishseg-student-lean", "fishseg-student-lite"):
    path = out / f"{name}.onnx"
    torch.onnx.export(build(name).eval(), torch.zeros(1, 3, 320, 320), path, opset_version=17, input_names=["images"], dynamo=False)
    files.append(path)
    if "student" in name:
        quant_pre_process(str(path), str(out / f"{name}.pre.onnx"))
        quantize_static(str(out / f"{name}.pre.onnx"), str(out / f"{name}.int8.onnx"), RandomImages(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
        files.append(out / f"{name}.int8.onnx")
options = ort.SessionOptions()
options.intra_op_num_threads = 1
sessions = {f.stem: ort.InferenceSession(str(f), options, providers=["CPUExecutionProvider"]) for f in files}
x = np.random.rand(1, 3, 320, 320).astype(np.float32)
times: dict[str, list[float]] = {k: [] for k in sessions}
for _ in range(15):
    for k, s in sessions.items():
        t = time.perf_counter()
        s.run(None, {"images": x})
        times[k].append(time.perf_counter() - t)
base = np.median(times["fishseg-teacher-lite0"][3:])
for k, t in times.items():
    print(f"{k:32s} {np.median(t[3:]) * 1000:7.1f} ms  {base / np.median(t[3:]):5.1f}x the teacher")
