"""Fish detector family (YOLO-seg style): anchor-free, one class, strides 8/16/32, prototype masks at stride 4.

Plain Conv-BN-SiLU (or -ReLU) blocks, nearest/bilinear upsampling and concatenation only, so every
member exports to ONNX opset 17 and builds in TensorRT. In eval mode `forward` returns exactly the outputs of
docs/CONTRACTS.md section 3; in train mode it adds the raw logits and pyramid features that the
task loss and the distillation losses need.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from finprint.distill.backbones import EfficientNetLite
from finprint.distill.detect_data import detector_preprocess
from finprint.distill.registry import register

log = logging.getLogger(__name__)

STRIDES = (8, 16, 32)
MASK_STRIDE = 4


@dataclass(frozen=True)
class DetectorSpec:
    widths: tuple[int, int, int, int, int]  # stem(s2), s4, s8, s16, s32
    depths: tuple[int, int, int, int]  # residual blocks in the s4..s32 stages
    neck: int  # channels of every pyramid level (P3..P5)
    head: int  # hidden channels in the head branches
    protos: int  # number of prototype masks M
    # Edge options (the defaults are the original family). On a CPU without INT8 dot-product
    # instructions a tiny network's latency is mostly per-op overhead, not multiply-adds:
    act: str = "silu"  # "relu" folds into the quantised conv; SiLU becomes QLinearSigmoid + QLinearMul
    patch_stem: bool = False  # one 4x4 stride-4 conv instead of two stride-2 convs at full resolution
    shared_head: bool = False  # one branch per level predicts box, fish logit and mask coefficients
    proto_depth: int = 2  # 3x3 convs before the prototype projection
    proto_stride: int = 4  # 8: prototypes computed on P3 and bilinearly upsampled to the stride-4 output
    # Fuse the backbone's stride-4 features into the prototypes (one 3x3 conv at stride 4): without them a
    # prototype only has P3's stride-8 detail, and a mask cannot follow a fin or split two touching fish.
    proto_skip: bool = False
    # A pretrained EfficientNet-Lite trunk ("lite0" | "lite1" | "lite2", distill/backbones.py) instead of the
    # plain backbone; `widths` then only sets the stem width that proto_skip never sees.
    trunk: str | None = None
    # The trunk's deepest stride: 32 = the whole trunk; 8 = only its stem and first stages (a student that keeps
    # ImageNet's low-level features), and plain stages (`widths`, `depths`) go on from there.
    trunk_stride: int = 32


def _activation(name: str) -> nn.Module:
    if name == "silu":
        return nn.SiLU(inplace=True)
    if name == "relu":
        return nn.ReLU(inplace=True)
    raise ValueError(f"unknown activation {name!r} (silu | relu)")


class ConvBNAct(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, k: int = 3, s: int = 1, act: str = "silu", pad: int | None = None) -> None:
        pad = k // 2 if pad is None else pad
        super().__init__(nn.Conv2d(c_in, c_out, k, s, pad, bias=False), nn.BatchNorm2d(c_out), _activation(act))


class Residual(nn.Module):
    def __init__(self, c: int, act: str = "silu") -> None:
        super().__init__()
        self.body = nn.Sequential(ConvBNAct(c, c, 1, act=act), ConvBNAct(c, c, 3, act=act))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _stage(c_in: int, c_out: int, depth: int, act: str = "silu", downsample: bool = True) -> nn.Sequential:
    first = [ConvBNAct(c_in, c_out, 3, 2, act=act)] if downsample else []
    return nn.Sequential(*first, *(Residual(c_out, act) for _ in range(depth)))


class Head(nn.Module):
    """Per-level decoupled head: box (ltrb distances), fish logit, mask coefficients."""

    def __init__(self, c_in: int, hidden: int, protos: int, act: str = "silu") -> None:
        super().__init__()
        self.box = nn.Sequential(ConvBNAct(c_in, hidden, act=act), ConvBNAct(hidden, hidden, act=act), nn.Conv2d(hidden, 4, 1))
        self.cls = nn.Sequential(ConvBNAct(c_in, hidden, act=act), ConvBNAct(hidden, hidden, act=act), nn.Conv2d(hidden, 1, 1))
        self.coef = nn.Sequential(ConvBNAct(c_in, hidden, act=act), nn.Conv2d(hidden, protos, 1))
        nn.init.constant_(self.cls[-1].bias, -4.6)  # prior fish probability ~1 %: stable start
        nn.init.constant_(self.box[-1].bias, 0.5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.box(x), self.cls(x), self.coef(x)


class SharedHead(nn.Module):
    """Box, fish logit and mask coefficients from one branch: a third of the ops of `Head`."""

    def __init__(self, c_in: int, hidden: int, protos: int, act: str = "silu") -> None:
        super().__init__()
        self.body = nn.Sequential(ConvBNAct(c_in, hidden, act=act), ConvBNAct(hidden, hidden, act=act))
        self.out = nn.Conv2d(hidden, 4 + 1 + protos, 1)
        with torch.no_grad():
            self.out.bias.zero_()
            self.out.bias[:4] = 0.5
            self.out.bias[4] = -4.6  # the same priors as `Head`

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y = self.out(self.body(x))
        return y[:, :4], y[:, 4:5], y[:, 5:]


class FishDetector(nn.Module):
    def __init__(self, spec: DetectorSpec) -> None:
        super().__init__()
        if spec.proto_stride not in (4, 8):
            raise ValueError(f"proto_stride {spec.proto_stride}: 4 or 8")
        self.spec = spec
        w, d, n, a = spec.widths, spec.depths, spec.neck, spec.act
        self.trunk: EfficientNetLite | None = None
        if spec.trunk is not None:
            # The trunk sees the detector's own preprocessing (x / 255, RGB) through its fixed input affine.
            strides = tuple(s for s in (4, 8, 16, 32) if s <= spec.trunk_stride)
            self.trunk = EfficientNetLite(spec.trunk, detector_preprocess(320), strides=strides)
            w = (w[0], *self.trunk.channels, *w[1 + len(strides):])
        elif spec.patch_stem:
            self.stem = ConvBNAct(3, w[1], 4, 4, act=a, pad=0)  # straight to stride 4; widths[0] unused
            self.s4 = _stage(w[1], w[1], d[0], a, downsample=False)
        else:
            self.stem = ConvBNAct(3, w[0], 3, 2, act=a)
            self.s4 = _stage(w[0], w[1], d[0], a)
        plain_from = 4 if self.trunk is None else spec.trunk_stride  # the last stride the trunk (or stem) gives
        if plain_from < 8:
            self.s8 = _stage(w[1], w[2], d[1], a)
        if plain_from < 16:
            self.s16 = _stage(w[2], w[3], d[2], a)
        if plain_from < 32:
            self.s32 = _stage(w[3], w[4], d[3], a)
        # FPN top-down + PAN bottom-up, all levels `neck` channels.
        self.lat5 = ConvBNAct(w[4], n, 1, act=a)
        self.lat4 = ConvBNAct(w[3], n, 1, act=a)
        self.lat3 = ConvBNAct(w[2], n, 1, act=a)
        self.td4 = ConvBNAct(2 * n, n, act=a)
        self.td3 = ConvBNAct(2 * n, n, act=a)
        self.down3 = ConvBNAct(n, n, 3, 2, act=a)
        self.bu4 = ConvBNAct(2 * n, n, act=a)
        self.down4 = ConvBNAct(n, n, 3, 2, act=a)
        self.bu5 = ConvBNAct(2 * n, n, act=a)
        head = SharedHead if spec.shared_head else Head
        self.heads = nn.ModuleList(head(n, spec.head, spec.protos, a) for _ in STRIDES)
        proto_convs = [ConvBNAct(n if i == 0 else spec.head, spec.head, act=a) for i in range(spec.proto_depth)]
        proto_c = spec.head if proto_convs else n
        if spec.proto_skip:
            self.proto = nn.Sequential(*proto_convs)
            self.proto_fuse = nn.Sequential(ConvBNAct(proto_c + w[1], spec.head, act=a), nn.Conv2d(spec.head, spec.protos, 1))
        else:
            self.proto = nn.Sequential(*proto_convs, nn.Conv2d(proto_c, spec.protos, 1))
        self.mask_stride = MASK_STRIDE
        self.strides = STRIDES

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The backbone's stride-4 map (for proto_skip) and the pyramid [P3, N4, N5] the heads and feature
        distillation see."""
        taps = self.trunk(x) if self.trunk is not None else [self.s4(self.stem(x))]
        c4 = taps[0]
        c8 = taps[1] if len(taps) > 1 else self.s8(c4)
        c16 = taps[2] if len(taps) > 2 else self.s16(c8)
        c32 = taps[3] if len(taps) > 3 else self.s32(c16)
        p5 = self.lat5(c32)
        p4 = self.td4(torch.cat([self.lat4(c16), F.interpolate(p5, scale_factor=2.0, mode="nearest")], 1))
        p3 = self.td3(torch.cat([self.lat3(c8), F.interpolate(p4, scale_factor=2.0, mode="nearest")], 1))
        n4 = self.bu4(torch.cat([self.down3(p3), p4], 1))
        n5 = self.bu5(torch.cat([self.down4(n4), p5], 1))
        return c4, [p3, n4, n5]

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.run(images, extras=self.training)

    def run(self, images: torch.Tensor, extras: bool) -> dict[str, torch.Tensor]:
        """All outputs; `extras` adds raw logits, anchor points and pyramid features (loss and KD)."""
        c4, feats = self.features(images)
        ltrb, logits, coefs, points = [], [], [], []
        for feat, head, stride in zip(feats, self.heads, self.strides, strict=True):
            # Python ints: the export bakes the anchor grid and reshapes as constants (only the batch is
            # dynamic), instead of ~20 Shape/Gather/Range/Expand ops per level that cost a small model ~10 %.
            h, w = int(feat.shape[2]), int(feat.shape[3])
            box, cls, coef = head(feat)
            ltrb.append(F.softplus(box).reshape(-1, 4, h * w).transpose(1, 2) * stride)
            logits.append(cls.reshape(-1, h * w))
            coefs.append(coef.reshape(-1, self.spec.protos, h * w).transpose(1, 2))
            ys = (torch.arange(h, device=feat.device, dtype=feat.dtype) + 0.5) * stride
            xs = (torch.arange(w, device=feat.device, dtype=feat.dtype) + 0.5) * stride
            gy, gx = torch.meshgrid(ys, xs, indexing="ij")
            points.append(torch.stack([gx.flatten(), gy.flatten()], -1))
        dist = torch.cat(ltrb, 1)
        pts = torch.cat(points, 0).unsqueeze(0)
        boxes = torch.cat([pts - dist[..., :2], pts + dist[..., 2:]], -1)
        logit = torch.cat(logits, 1)
        # Prototypes are output at stride 4 (docs/CONTRACTS.md): P3 (stride 8) upsampled before the
        # prototype convs, or (proto_stride 8) their result upsampled, a quarter of the work; proto_skip then
        # mixes in the backbone's own stride-4 map.
        if self.spec.proto_stride == 8:
            protos = F.interpolate(self.proto(feats[0]), scale_factor=2.0, mode="bilinear", align_corners=False)
        else:
            protos = self.proto(F.interpolate(feats[0], scale_factor=2.0, mode="nearest"))
        if self.spec.proto_skip:
            protos = self.proto_fuse(torch.cat([protos, c4], 1))
        out = {"boxes": boxes, "scores": torch.sigmoid(logit), "mask_coefs": torch.cat(coefs, 1), "protos": protos}
        if extras:
            out.update(logits=logit, points=pts[0], feats=feats)  # type: ignore[dict-item]
        return out


SPECS: dict[str, DetectorSpec] = {
    # ~3.4M params: the farm teacher (trains in minutes on 2 CPU cores at 256 px).
    "fishseg-teacher": DetectorSpec(widths=(24, 48, 96, 192, 320), depths=(1, 2, 2, 1), neck=96, head=64, protos=16),
    # <= 1/10 of the teacher: the edge student.
    "fishseg-student": DetectorSpec(widths=(8, 16, 32, 64, 96), depths=(1, 1, 1, 1), neck=32, head=24, protos=16),
    # A lighter pair for CPU demos (teacher ~4x cheaper to train than fishseg-teacher).
    "fishseg-teacher-s": DetectorSpec(widths=(16, 32, 64, 128, 192), depths=(1, 1, 1, 1), neck=64, head=48, protos=16),
    "fishseg-student-s": DetectorSpec(widths=(8, 12, 24, 32, 48), depths=(1, 1, 1, 1), neck=24, head=12, protos=16),
    # The edge student for CPUs and Jetsons: ReLU (folds into the quantised conv), a 4x4 stride-4 stem,
    # one shared head branch per level, prototypes on P3. Wider than fishseg-student-s yet faster,
    # and on this 2-core x86 its INT8 beats its fp32 (fewer, wider ops: per-op overhead dominates a
    # small net). Accuracy and speed against fishseg-student-s: docs/RESULTS.md (python -m finprint.results).
    "fishseg-student-lean": DetectorSpec(
        widths=(16, 16, 32, 48, 64), depths=(1, 1, 1, 1), neck=32, head=16, protos=16,
        act="relu", patch_stem=True, shared_head=True, proto_depth=2, proto_stride=8,
    ),
    # The same pair with stride-4 backbone features in the prototypes (proto_skip): masks fine enough to cut a
    # fish from its neighbour for masked re-ID crops (preprocess.crop_mask).
    "fishseg-teacher-fine": DetectorSpec(
        widths=(24, 48, 96, 192, 320), depths=(1, 2, 2, 1), neck=96, head=64, protos=16, proto_skip=True,
    ),
    "fishseg-student-lean-fine": DetectorSpec(
        widths=(16, 16, 32, 48, 64), depths=(1, 1, 1, 1), neck=32, head=16, protos=16,
        act="relu", patch_stem=True, shared_head=True, proto_depth=2, proto_stride=8, proto_skip=True,
    ),
    # Teachers for real footage: an ImageNet EfficientNet-Lite trunk (fine-tuned) under the same neck and heads.
    "fishseg-teacher-lite0": DetectorSpec(
        widths=(32, 24, 40, 112, 320), depths=(1, 1, 1, 1), neck=64, head=64, protos=16, proto_stride=8, trunk="lite0",
    ),
    # The edge student for real footage: Lite0's ImageNet stem and first three stages (to stride 8; low-level
    # features that hold across waters), then fishseg-student-lean's stages, neck and shared head.
    "fishseg-student-lite": DetectorSpec(
        widths=(32, 24, 40, 48, 64), depths=(1, 1, 1, 1), neck=32, head=16, protos=16,
        act="relu", shared_head=True, proto_depth=2, proto_stride=8, trunk="lite0", trunk_stride=8,
    ),
    # The same with a wider neck, head and plain stages (+40 % FLOPs, nearly all at stride 8 and below): the lite
    # student's 16-channel head predicts 21 numbers a cell (box, fish, 16 mask coefficients), and on DeepFish its
    # validation score stopped rising after one epoch.
    "fishseg-student-lite-wide": DetectorSpec(
        widths=(32, 24, 40, 64, 96), depths=(1, 1, 1, 1), neck=48, head=32, protos=16,
        act="relu", shared_head=True, proto_depth=2, proto_stride=8, trunk="lite0", trunk_stride=8,
    ),
    # Lite0's ImageNet stages to stride 16 (the teacher's own s16 features, +75 % FLOPs), then one plain stride-32 stage.
    "fishseg-student-lite16": DetectorSpec(
        widths=(32, 24, 40, 112, 64), depths=(1, 1, 1, 1), neck=32, head=16, protos=16,
        act="relu", shared_head=True, proto_depth=2, proto_stride=8, trunk="lite0", trunk_stride=16,
    ),
    "fishseg-teacher-lite2": DetectorSpec(
        widths=(32, 24, 48, 120, 352), depths=(1, 1, 1, 1), neck=96, head=64, protos=16, proto_stride=8, trunk="lite2",
    ),
}


def _builder(spec: DetectorSpec):
    return lambda: FishDetector(spec)


for _name, _spec in SPECS.items():
    register(_name, task="detect", role="teacher" if "teacher" in _name else "student", pretrained=_spec.trunk)(_builder(_spec))

