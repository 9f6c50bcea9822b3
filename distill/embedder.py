"""Fish re-identification embedders: a crop [B,3,64,128] -> an L2-normalised 128-d identity vector.

Teacher and student share one family of plain residual conv nets (Conv-BN-ReLU, add, average pool
into stripes along the body, 1x1 projection, the crop's and its mirror image's vectors added, BN
neck) so both export to ONNX opset 17 and TensorRT unchanged.
Eval mode returns {"embedding"} (docs/CONTRACTS.md section 3); train mode also returns the
pre-normalisation vector the losses and open-set statistics need.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from finprint.distill.registry import register

log = logging.getLogger(__name__)

EMBED_DIM = 128


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class BasicBlock(nn.Module):
    """Two 3x3 convs with a shortcut (1x1 conv when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(c_in, c_out, stride)
        self.conv2 = nn.Sequential(nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out))
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


# Opponent colour: brightness, red-green, yellow-blue (RGB in 0..1). A histogram over it can give chroma more bins
# than brightness, as HSV's does; unlike HSV it is linear, so the bag's 1x1 conv still holds it.
OPPONENT = torch.tensor([[1 / 3, 1 / 3, 1 / 3], [1.0, -1.0, 0.0], [0.5, 0.5, -1.0]])


@dataclass(frozen=True)
class ColourGrid:
    """Where a ColourBag's bin centres sit. "rgb": an even grid of `levels[0]` per channel in the normalised input
    (temperature in those units); "opponent": `levels` (brightness, red-green, yellow-blue) bins, chroma centres over
    -chroma_span..chroma_span (water scenes are not saturated), temperature in 0..1 units."""

    space: str = "rgb"
    levels: tuple[int, int, int] = (8, 8, 8)
    temperature: float = 0.05
    chroma_span: float = 0.5

    def bins(self) -> int:
        return self.levels[0] * self.levels[1] * self.levels[2]


# On f4k-tracklets' test split, alone (no network): rank-1 0.747 / mAP 0.643, against 0.705 / 0.587 for the RGB
# grid and 0.747 / 0.634 for a hard HSV 16x8x8 histogram (experiments/2026-12-07-f4k-features, probe7/8).
OPPONENT_GRID = ColourGrid("opponent", (4, 16, 16), 0.0005)


class ColourBag(nn.Module):
    """A colour histogram of the crop, projected to `dim`: each pixel (of the crop at half size) soft-assigned to
    colour centres (`ColourGrid`), averaged over the crop, square-rooted (Hellinger), then a learnt linear projection
    and a BatchNorm. The model adds it to its deep vector, batch-normalised too: unnormalised, the deep vector's norm
    was 100x the colour one's and drowned it. The assignment is fixed (no gradient through it: on 2 cores a learnt one
    made a training step several times slower).

    The grid is a product of three axes and the squared distance a sum over them, so softmax(-|z - c|^2 / T) over the
    grid is exactly the outer product of one softmax per axis: a 1x1 conv per axis (36 logits a pixel for 4 x 16 x 16
    bins, not 1,024), and the histogram is one MatMul of two axes' outer product with the third. On f4k-tracklets a
    plain colour histogram re-identifies better than ImageNet features (experiments/2026-12-07-f4k-features).
    ONNX: AveragePool, Conv, Softmax, Mul, MatMul, Sqrt.
    """

    def __init__(self, grid: ColourGrid | int, dim: int) -> None:
        super().__init__()
        from finprint.runtime.crops import embedder_preprocess

        grid = ColourGrid(levels=(grid, grid, grid)) if isinstance(grid, int) else grid
        pre = embedder_preprocess()
        mean, std = torch.tensor(pre.mean), torch.tensor(pre.std)
        centres = [(torch.arange(n, dtype=torch.float32) + 0.5) / n for n in grid.levels]  # per axis, in 0..1
        # The space z = A x + b of RGB x in 0..1, and each axis' centres in it.
        if grid.space == "rgb":  # the normalised input itself
            a, b = torch.diag(1 / std), -mean / std
            centres = [(c - mean[i]) / std[i] for i, c in enumerate(centres)]
        elif grid.space == "opponent":
            a, b = OPPONENT, torch.zeros(3)
            centres = [centres[0], *((c - 0.5) * 2 * grid.chroma_span for c in centres[1:])]
        else:
            raise ValueError(f"unknown colour space {grid.space!r} (rgb | opponent)")
        # Axis i: -(z_i - c)^2 / T up to z_i^2 / T, the same for all of the axis' centres (its softmax ignores it), on
        # the normalised input x_n (x = std * x_n + mean): weight 2 c (A_i * std) / T, bias (2 c (A_i . mean + b_i) - c^2) / T.
        # Fixed buffers (saved, so the ONNX exporter writes them as initializers that fp16/INT8 can keep fp32).
        t = grid.temperature
        for i, c in enumerate(centres):
            self.register_buffer(f"weight{i}", (2 * c[:, None] * (a[i] * std)[None, :] / t)[:, :, None, None])
            self.register_buffer(f"bias{i}", (2 * c * (a[i] @ mean + b[i]) - c**2) / t)
        self.project = nn.Linear(grid.bins(), dim, bias=False)
        self.norm = nn.BatchNorm1d(dim)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # Checkpoints from before the per-axis assignment saved the whole grid's fixed 1x1 conv instead: both follow
        # from the grid, so the old one is dropped and the per-axis ones are this bag's own.
        if state_dict.pop(prefix + "assign.weight", None) is not None:
            state_dict.pop(prefix + "assign.bias", None)
            state_dict.update({prefix + name: buffer for name, buffer in self.named_buffers(recurse=False)})
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def histogram(self, crops: torch.Tensor) -> torch.Tensor:
        """[B, bins]: the crop's soft histogram, bins in the grid's order (first axis slowest)."""
        x = F.avg_pool2d(crops, 2)
        # Softmax over the last axis: over axis 1 of NCHW, ONNX Runtime's CPU kernel was several times slower.
        u, v, w = (torch.softmax(F.conv2d(x, getattr(self, f"weight{i}"), getattr(self, f"bias{i}")).flatten(2).transpose(1, 2), dim=-1)
                   for i in range(3))  # [B, pixels, levels_i]
        pairs = (u.unsqueeze(-1) * v.unsqueeze(-2)).flatten(2)  # [B, pixels, levels_0 * levels_1]
        return (torch.matmul(pairs.transpose(1, 2), w) / u.shape[1]).flatten(1)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.norm(self.project(torch.sqrt(self.histogram(crops) + 1e-6)))


@dataclass(frozen=True)
class EmbedderSpec:
    stem: int
    widths: tuple[int, ...]  # one stage per width, each starting with a stride-2 block
    blocks: tuple[int, ...]
    dim: int = EMBED_DIM
    # Pool the last feature map into this many stripes along the body instead of one global
    # average: a fish is told apart by where its spots sit, which a global average throws away.
    parts: int = 1
    # Embed the crop and its mirror image and add them: the same fish swimming the other way then
    # gives exactly the same vector (it costs a second pass through the backbone).
    flip_sum: bool = False
    colour: ColourGrid | None = None  # a ColourBag on this grid added to the vector before the neck


class FishEmbedder(nn.Module):
    """Crop -> embedding. `forward` in eval mode: {"embedding": [B, dim] unit vectors}."""

    def __init__(self, spec: EmbedderSpec) -> None:
        super().__init__()
        self.spec = spec
        self.stem = conv_bn_relu(3, spec.stem, stride=2)  # 64x128 -> 32x64
        stages: list[nn.Module] = []
        c_in = spec.stem
        for width, n_blocks in zip(spec.widths, spec.blocks, strict=True):
            blocks = [BasicBlock(c_in, width, 2)] + [BasicBlock(width, width, 1) for _ in range(n_blocks - 1)]
            stages.append(nn.Sequential(*blocks))
            c_in = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d((1, spec.parts))
        self.project = nn.Linear(c_in * spec.parts, spec.dim, bias=False)
        self.colour = ColourBag(spec.colour, spec.dim) if spec.colour else None
        self.deep_norm = nn.BatchNorm1d(spec.dim) if spec.colour else None
        # BN neck (Luo et al., "Bag of Tricks for ReID"): metric and margin losses agree better after it.
        self.neck = nn.BatchNorm1d(spec.dim)
        self.out_dim = spec.dim

    def forward(self, crops: torch.Tensor) -> dict[str, torch.Tensor]:
        n = crops.shape[0]
        x = torch.cat([crops, torch.flip(crops, dims=[3])]) if self.spec.flip_sum else crops
        vectors = self.project(torch.flatten(self.pool(self.stages(self.stem(x))), 1))
        vector = vectors[:n] + vectors[n:] if self.spec.flip_sum else vectors
        if self.colour is not None and self.deep_norm is not None:
            vector = self.deep_norm(vector) + self.colour(crops)
        feature = self.neck(vector)
        embedding = F.normalize(feature, dim=1, eps=1e-6)
        if self.training:
            return {"embedding": embedding, "feature": feature}
        return {"embedding": embedding}


# Four stripes + mirror sum, measured on the demo farm (embed-teacher-s, 30 epochs, group-disjoint
# gallery/query): re-ID mAP 0.73 -> 0.92, per-crop rank-1 against the enrolment crops on video 0.65 -> 0.70.
TEACHER_S = EmbedderSpec(stem=24, widths=(48, 96, 192), blocks=(2, 2, 2), parts=4, flip_sum=True)
STUDENT_S = EmbedderSpec(stem=16, widths=(24, 48, 72), blocks=(1, 1, 1), parts=4, flip_sum=True)
TEACHER_M = EmbedderSpec(stem=32, widths=(64, 128, 256), blocks=(2, 2, 2), parts=4, flip_sum=True)
STUDENT_M = EmbedderSpec(stem=16, widths=(32, 64, 100), blocks=(1, 1, 1), parts=4, flip_sum=True)
STUDENT_M_COLOUR = EmbedderSpec(stem=16, widths=(32, 64, 100), blocks=(1, 1, 1), parts=4, flip_sum=True, colour=ColourGrid())
STUDENT_M_OPPONENT = EmbedderSpec(stem=16, widths=(32, 64, 100), blocks=(1, 1, 1), parts=4, flip_sum=True, colour=OPPONENT_GRID)


@register("embed-teacher-s", task="embed", role="teacher")
def embed_teacher_s() -> FishEmbedder:
    return FishEmbedder(TEACHER_S)


@register("embed-student-s", task="embed", role="student")
def embed_student_s() -> FishEmbedder:
    return FishEmbedder(STUDENT_S)


@register("embed-teacher-m", task="embed", role="teacher")
def embed_teacher_m() -> FishEmbedder:
    return FishEmbedder(TEACHER_M)


@register("embed-student-m", task="embed", role="student")
def embed_student_m() -> FishEmbedder:
    return FishEmbedder(STUDENT_M)


@register("embed-student-m-colour", task="embed", role="student")
def embed_student_m_colour() -> FishEmbedder:
    return FishEmbedder(STUDENT_M_COLOUR)


@register("embed-student-m-opponent", task="embed", role="student")
def embed_student_m_opponent() -> FishEmbedder:
    return FishEmbedder(STUDENT_M_OPPONENT)


class LiteEmbedder(nn.Module):
    """An ImageNet EfficientNet-Lite trunk under the farm embedder's head: stripes along the body, mirror sum,
    1x1 projection, BN neck. The trunk's last stage keeps stride 16 (re-ID's "last stride 1"): a 64x128 crop
    leaves a 4x8 map instead of 2x4, enough for four stripes. `colour` adds a ColourBag on that grid to the vector
    before the neck."""

    def __init__(self, variant: str, parts: int = 4, dim: int = EMBED_DIM, colour: ColourGrid | None = None) -> None:
        super().__init__()
        from finprint.distill.backbones import EfficientNetLite
        from finprint.runtime.crops import embedder_preprocess

        self.spec = EmbedderSpec(stem=0, widths=(), blocks=(), dim=dim, parts=parts, flip_sum=True)
        pre = embedder_preprocess()
        self.trunk = EfficientNetLite(variant, pre, strides=(16,), last_stride=1)
        # A fixed-size pool, not an adaptive one: the TorchScript exporter cannot size an adaptive pool behind
        # the trunk's Pad ops, and the crop size is fixed by the preprocessing anyway.
        self.pool = nn.AvgPool2d((pre.height // 16, pre.width // 16 // parts))
        self.project = nn.Linear(self.trunk.channels[0] * parts, dim, bias=False)
        self.colour = ColourBag(colour, dim) if colour else None
        self.deep_norm = nn.BatchNorm1d(dim) if colour else None
        self.neck = nn.BatchNorm1d(dim)
        self.out_dim = dim

    def forward(self, crops: torch.Tensor) -> dict[str, torch.Tensor]:
        n = crops.shape[0]
        x = torch.cat([crops, torch.flip(crops, dims=[3])])
        vectors = self.project(torch.flatten(self.pool(self.trunk(x)[0]), 1))
        vector = vectors[:n] + vectors[n:]
        if self.colour is not None and self.deep_norm is not None:  # a histogram is its mirror image's: once is enough
            vector = self.deep_norm(vector) + self.colour(crops)
        feature = self.neck(vector)
        embedding = F.normalize(feature, dim=1, eps=1e-6)
        if self.training:
            return {"embedding": embedding, "feature": feature}
        return {"embedding": embedding}


@register("embed-teacher-lite0", task="embed", role="teacher", pretrained="lite0")
def embed_teacher_lite0() -> LiteEmbedder:
    return LiteEmbedder("lite0")


@register("embed-teacher-lite0-colour", task="embed", role="teacher", pretrained="lite0")
def embed_teacher_lite0_colour() -> LiteEmbedder:
    return LiteEmbedder("lite0", colour=ColourGrid())


@register("embed-teacher-lite0-opponent", task="embed", role="teacher", pretrained="lite0")
def embed_teacher_lite0_opponent() -> LiteEmbedder:
    return LiteEmbedder("lite0", colour=OPPONENT_GRID)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, crops: torch.Tensor, batch: int = 64) -> None:
    """Precise BN: replace every BatchNorm's running statistics by their average over `crops`.

    A short run (tens of steps) leaves the momentum-0.1 running means partly at their initial
    zeros and lagging behind weights that moved fast; the BN neck then adds a shared offset
    to every eval-mode embedding, so all fish look alike (gallery cosines near 1) and open-set
    rejection suffers. Averaging batch statistics of the current weights over clean training
    crops removes that lag (Wu & Johnson, "Rethinking Batch in BatchNorm", 2021). Only the
    buffers change: the forward pass and the exported graph stay the same.
    """
    was_training = model.training
    model.train()
    # A frozen trunk stage keeps its BatchNorm in eval mode (backbones.EfficientNetLite.freeze): its
    # ImageNet statistics are what the layers above it trained on, so they stay.
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    if not norms or len(crops) < 2:
        model.train(was_training)
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    device = next(model.parameters()).device
    for start in range(0, len(crops), batch):
        chunk = crops[start : start + batch]
        if len(chunk) >= 2:  # BatchNorm1d refuses a batch of one in train mode
            model(chunk.to(device))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.train(was_training)
