"""Parity: the same inputs through two engines (PyTorch vs ONNX Runtime, fp32 vs fp16 ...).

Max-abs difference per named output against a stated tolerance; the task metric of each side is
the gate's job (finprint.export.gate), which drives the same engines.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from finprint.errors import FinprintError

log = logging.getLogger(__name__)

# Absolute tolerances per precision, for outputs in the contract's units (boxes in input pixels,
# probabilities, unit-norm embeddings): fp32 differs only by kernel order; fp16 by ~1e-3 relative.
DEFAULT_TOLERANCE = {"fp32": {"boxes": 1e-2, "*": 1e-3}, "fp16": {"boxes": 0.5, "*": 2e-2}}


@dataclass
class ParityReport:
    reference: str
    candidate: str
    max_abs: dict[str, float]
    tolerance: dict[str, float] = field(default_factory=dict)

    @property
    def failures(self) -> dict[str, float]:
        return {k: v for k, v in self.max_abs.items() if k in self.tolerance and not v <= self.tolerance[k]}

    @property
    def passed(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        parts = [f"{k} {v:.2e} (tol {self.tolerance.get(k, float('nan')):.0e})" for k, v in self.max_abs.items()]
        return f"{self.candidate} vs {self.reference}: " + ", ".join(parts)


def max_abs_difference(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> dict[str, float]:
    missing = sorted(set(reference) - set(candidate))
    if missing:
        raise FinprintError(f"outputs {missing} are missing from the compared model (it has {sorted(candidate)})")
    diffs = {}
    for name, ref in reference.items():
        cand = np.asarray(candidate[name], dtype=np.float32)
        if cand.shape != ref.shape:
            raise FinprintError(f"output '{name}' has shape {cand.shape}, expected {ref.shape}")
        diffs[name] = float(np.max(np.abs(cand - ref.astype(np.float32)))) if ref.size else 0.0
    return diffs


def check_parity(
    reference,
    candidate,
    inputs: dict[str, np.ndarray],
    tolerance: dict[str, float] | str = "fp32",
    names: tuple[str, str] = ("torch", "onnx"),
    batch: int = 4,
) -> ParityReport:
    """Run `inputs` through both engines (in batches) and compare every output."""
    (name, array), = inputs.items()
    ref_parts: dict[str, list[np.ndarray]] = {}
    cand_parts: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(array), batch):
        feed = {name: np.ascontiguousarray(array[i : i + batch], dtype=np.float32)}
        for parts, engine in ((ref_parts, reference), (cand_parts, candidate)):
            for k, v in engine.infer(feed).items():
                parts.setdefault(k, []).append(np.asarray(v))
    ref = {k: np.concatenate(v) for k, v in ref_parts.items()}
    cand = {k: np.concatenate(v) for k, v in cand_parts.items()}
    diffs = max_abs_difference(ref, cand)
    if isinstance(tolerance, str):
        table = DEFAULT_TOLERANCE[tolerance]
        tolerance = {k: table.get(k, table["*"]) for k in diffs}
    report = ParityReport(names[0], names[1], diffs, dict(tolerance))
    log.info("parity: %s", report.summary())
    return report
