"""torch -> ONNX (opset >= 17, dynamic batch, the named inputs/outputs of docs/CONTRACTS.md section 3)
plus the manifest written next to every file.

The TorchScript exporter (`dynamo=False`) is used on purpose: it turns torch.ao fake-quant modules
into QuantizeLinear/DequantizeLinear pairs (QAT models keep their QDQ), writes one self-contained
file, and accepts a dynamic batch from any example batch size.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from finprint import __version__
from finprint.errors import FinprintError
from finprint.runtime.manifest import (
    Manifest,
    Preprocess,
    StageAccuracy,
    TensorSpec,
    load_manifest,
    manifest_path_for,
    save_manifest,
    sha256_file,
    verify_onnx_matches,
)

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
EMBED_DIM = 128

INPUT_NAMES = {"detector": "images", "embedder": "crops"}
OUTPUT_NAMES = {
    "detector": ("boxes", "scores", "mask_coefs", "protos"),
    "embedder": ("embedding",),
}
OUTPUT_MEANING = {
    "boxes": "xyxy in input pixels, before NMS, one row per anchor point (strides 8/16/32)",
    "scores": "fish probability per anchor point (sigmoid applied)",
    "mask_coefs": "per-anchor coefficients over the prototype masks",
    "protos": "prototype masks at input/4; mask = sigmoid(coefs @ protos), crop to box, > 0.5",
    "embedding": "L2-normalised identity vector; cosine similarity to the gallery",
}


def kind_of_task(task: str) -> str:
    """Run config's task ("detect" | "embed") -> manifest kind ("detector" | "embedder")."""
    kinds = {"detect": "detector", "embed": "embedder", "detector": "detector", "embedder": "embedder"}
    if task not in kinds:
        raise FinprintError(f"unknown task '{task}': expected one of detect, embed")
    return kinds[task]


def default_preprocess(kind: str, imgsz: int = 320) -> Preprocess:
    """The contract's preprocessing, from the modules that define it for training and the runtime."""
    if kind == "detector":
        from finprint.distill.detect_data import detector_preprocess

        return detector_preprocess(imgsz)
    from finprint.runtime.crops import embedder_preprocess

    return embedder_preprocess()


class NamedOutputs(nn.Module):
    """Wraps a model whose eval forward returns a dict into one returning the contract's tuple order."""

    def __init__(self, model: nn.Module, output_names: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.output_names = output_names

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(x)
        if not isinstance(out, dict):
            raise FinprintError(f"the model's eval forward returned {type(out).__name__}, expected a dict of outputs")
        missing = [n for n in self.output_names if n not in out]
        if missing:
            raise FinprintError(f"the model's outputs lack {missing} (has {sorted(out)}); see docs/CONTRACTS.md section 3")
        return tuple(out[n] for n in self.output_names)


def export_onnx(
    model: nn.Module,
    kind: str,
    out_path: str | Path,
    preprocess: Preprocess,
    opset: int = DEFAULT_OPSET,
    example: torch.Tensor | None = None,
) -> Path:
    """Export `model` (eval mode) to one ONNX file with a dynamic batch; check it and infer shapes."""
    if opset < 17:
        raise FinprintError(f"opset {opset} is too old: finprint exports opset >= 17")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    input_name = INPUT_NAMES[kind]
    output_names = OUTPUT_NAMES[kind]
    model = model.eval().cpu()
    wrapped = NamedOutputs(model, output_names).eval()
    if example is None:
        # batch 2: a batch-1 example can let the tracer bake a fixed batch into reshapes.
        example = torch.rand(2, 3, preprocess.height, preprocess.width)
    dynamic_axes = {input_name: {0: "batch"}}
    for name in output_names:
        dynamic_axes[name] = {0: "batch"}  # anchors are fixed by the input size
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            wrapped,
            (example,),
            str(out_path),
            input_names=[input_name],
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    check_onnx(out_path)
    log.info("exported %s (%d bytes)", out_path, out_path.stat().st_size)
    return out_path


def check_onnx(path: str | Path) -> onnx.ModelProto:
    """Load, check and shape-infer an ONNX file; a truncated or corrupt file is a FinprintError."""
    path = Path(path)
    if not path.is_file():
        raise FinprintError(f"{path}: ONNX file not found")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
        return onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as exc:  # protobuf DecodeError, ValidationError, InferenceError: all mean "bad file"
        raise FinprintError(
            f"{path}: not a valid ONNX model ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "the file may be truncated: re-run `finprint export`"
        ) from exc


def _tensor_specs(model: onnx.ModelProto, values, meanings: dict[str, str]) -> list[TensorSpec]:
    dtypes = {1: "float32", 10: "float16", 7: "int64", 6: "int32", 2: "uint8"}
    specs = []
    for v in values:
        tt = v.type.tensor_type
        shape: list[int | str] = [d.dim_param if d.dim_param else int(d.dim_value) for d in tt.shape.dim]
        specs.append(TensorSpec(name=v.name, shape=shape, dtype=dtypes.get(tt.elem_type, "float32"), meaning=meanings.get(v.name, "")))
    return specs


def write_manifest(
    onnx_path: str | Path,
    kind: str,
    model_name: str,
    precision: str,
    preprocess: Preprocess,
    *,
    accuracy: list[StageAccuracy] | None = None,
    calibration_hash: str | None = None,
    open_set_threshold: float | None = None,
    score_threshold: float | None = 0.25,
    iou_threshold: float | None = 0.6,
    extra: dict | None = None,
) -> Manifest:
    """Describe `onnx_path` in `<stem>.manifest.json` next to it and return the manifest."""
    onnx_path = Path(onnx_path)
    model = check_onnx(onnx_path)
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=DEFAULT_OPSET)
    is_det = kind == "detector"
    embedding_dim = None
    outputs = _tensor_specs(model, model.graph.output, OUTPUT_MEANING)
    if not is_det:
        emb = next((o for o in outputs if o.name == "embedding"), None)
        embedding_dim = int(emb.shape[-1]) if emb and isinstance(emb.shape[-1], int) else EMBED_DIM
    manifest = Manifest(
        kind=kind,
        model_name=model_name,
        finprint_version=__version__,
        precision=precision,
        onnx_file=onnx_path.name,
        onnx_sha256=sha256_file(onnx_path),
        opset=opset,
        inputs=_tensor_specs(model, model.graph.input, {INPUT_NAMES[kind]: "preprocessed per `preprocess`"}),
        outputs=outputs,
        preprocess=preprocess,
        embedding_dim=embedding_dim,
        open_set_threshold=None if is_det else open_set_threshold,
        score_threshold=score_threshold if is_det else None,
        iou_threshold=iou_threshold if is_det else None,
        mask_stride=4 if is_det else None,
        calibration_hash=calibration_hash,
        accuracy=accuracy or [],
        extra=extra or {},
    )
    save_manifest(manifest, manifest_path_for(onnx_path))
    return manifest


def load_exported(onnx_path: str | Path) -> Manifest:
    """The manifest of an exported model, after checking the ONNX is the very file it describes."""
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FinprintError(f"{onnx_path}: ONNX file not found")
    manifest = load_manifest(manifest_path_for(onnx_path))
    verify_onnx_matches(manifest, onnx_path)
    check_onnx(onnx_path)
    return manifest


def compact_tensor_names(onnx_path: str | Path) -> Path:
    """Rename internal tensors to short ids (t0, t1 ...) in place; graph inputs/outputs, node names and
    results are unchanged. QDQ graphs triple the tensor count, and exporter names like
    "/model/heads.0/box/box.2/Conv_output_0_DequantizeLinear_Output" then weigh more than a small
    student's int8 weights. Intermediate shapes (value_info) are dropped; consumers re-infer them."""
    onnx_path = Path(onnx_path)
    model = onnx.load(str(onnx_path))
    graph = model.graph
    keep = {v.name for v in graph.input} | {v.name for v in graph.output} | {""}
    mapping: dict[str, str] = {}

    def short(name: str) -> str:
        if name in keep:
            return name
        if name not in mapping:
            mapping[name] = f"t{len(mapping)}"
        return mapping[name]

    for init in graph.initializer:
        init.name = short(init.name)
    for node in graph.node:
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]
        node.doc_string = ""
    del graph.value_info[:]
    onnx.checker.check_model(model)
    onnx.save(model, str(onnx_path))
    return onnx_path
