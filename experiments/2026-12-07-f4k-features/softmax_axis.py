"""ONNX Runtime (CPU, 2 threads) time of the colour bag's soft assignment for one 64x128 crop: softmax over the
channel axis of NCHW against over the last axis of [B, pixels, bins]. Usage: python softmax_axis.py > softmax_axis.txt"""
import tempfile
import time

import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn


class Assign(nn.Module):
    def __init__(self, last: bool) -> None:
        super().__init__()
        self.conv, self.last = nn.Conv2d(3, 512, 1), last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.conv(F.avg_pool2d(x, 2))
        if self.last:
            return torch.softmax(logits.flatten(2).transpose(1, 2), -1).mean(1)
        return torch.softmax(logits, 1).mean((2, 3))


x = torch.randn(1, 3, 64, 128)
for last in (False, True):
    path = tempfile.mktemp(suffix=".onnx")
    torch.onnx.export(Assign(last).eval(), (x,), path, opset_version=17, dynamo=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x.numpy()}
    for _ in range(5):
        session.run(None, feed)
    t0 = time.perf_counter()
    for _ in range(50):
        session.run(None, feed)
    print(f"softmax over {'the last axis' if last else 'axis 1 (NCHW)'}: {(time.perf_counter() - t0) / 50 * 1000:.1f} ms")
