"""The accuracy gate: every export stage measured on one held-out set, with one evaluation path.

Stages run teacher fp32 -> student fp32 -> student fp16 -> student int8. The teacher row is
context (what distillation cost); each later stage is compared with the student fp32 ONNX, its
reference, and fails when it loses more than `max_drop` points (metric x 100) of the task's main
metric (box_map = mAP50-95 for the detector, rank1 for the embedder).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from finprint.errors import FinprintError
from finprint.runtime.manifest import StageAccuracy

log = logging.getLogger(__name__)

MAIN_METRIC = {"detector": "box_map", "embedder": "rank1"}
SHOWN_METRICS = {
    "detector": ("box_map", "box_map50", "mask_map", "mask_map50"),
    "embedder": ("rank1", "rank5", "map", "auroc"),
}
REFERENCE_STAGE = "student fp32"


@dataclass
class Stage:
    name: str  # "teacher fp32", "student fp32", "student fp16", "student int8"
    precision: str
    engine: Any  # anything with infer(dict) -> dict


@dataclass
class StageResult:
    name: str
    precision: str
    metrics: dict[str, float]
    drop_points: float | None = None  # vs the reference stage; None for the reference and the teacher
    gated: bool = False
    max_drop: float = 1.0

    @property
    def passed(self) -> bool:
        return not self.gated or self.drop_points is None or self.drop_points <= self.max_drop


@dataclass
class GateReport:
    kind: str
    main_metric: str
    max_drop: float
    results: list[StageResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> list[StageResult]:
        return [r for r in self.results if not r.passed]

    def result(self, name: str) -> StageResult | None:
        return next((r for r in self.results if r.name == name), None)

    def table(self) -> str:
        shown = [m for m in SHOWN_METRICS.get(self.kind, (self.main_metric,)) if any(m in r.metrics for r in self.results)]
        header = ["stage", "precision", *shown, f"drop ({self.main_metric}, pts)", "gate"]
        rows = [header]
        for r in self.results:
            cells = [r.name, r.precision]
            for m in shown:
                v = r.metrics.get(m)
                cells.append("-" if v is None else f"{100 * v:.2f}")
            cells.append("-" if r.drop_points is None else f"{r.drop_points:+.2f}")
            cells.append(("ok" if r.passed else f"FAIL > {self.max_drop:g}") if r.gated else "ref" if r.name == REFERENCE_STAGE else "info")
            rows.append(cells)
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.extend(self.notes)
        return "\n".join(lines)

    def failure_message(self) -> str:
        parts = [
            f"stage '{r.name}' lost {r.drop_points:.2f} points of {self.main_metric} vs '{REFERENCE_STAGE}' (max {self.max_drop:g})"
            for r in self.failures
        ]
        return "accuracy gate failed: " + "; ".join(parts)

    def accuracy(self) -> list[StageAccuracy]:
        """The manifest's `accuracy` list: every stage's metrics (numbers only)."""
        return [
            StageAccuracy(
                stage=r.name,
                precision=r.precision,
                metrics={k: float(v) for k, v in r.metrics.items() if isinstance(v, (int, float)) and v is not None},
            )
            for r in self.results
        ]


class GateError(FinprintError):
    """The gate failed: the message names the stage(s); `report` holds the full table."""

    exit_code = 1

    def __init__(self, report: GateReport) -> None:
        self.report = report
        super().__init__(report.failure_message() + "\n" + report.table())


def evaluate_stage(stage: Stage, evaluate: Callable[[Any], dict]) -> dict[str, float]:
    metrics = evaluate(stage.engine)
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def run_gate(
    kind: str,
    stages: list[Stage],
    evaluate: Callable[[Any], dict],
    max_drop: float = 1.0,
    main_metric: str | None = None,
    measured: dict[str, dict[str, float]] | None = None,
) -> GateReport:
    """Measure every stage with `evaluate(engine) -> metrics` and compare with the reference stage.

    `measured` holds metrics already taken (stage name -> metrics), e.g. by a sensitivity search
    that re-quantised only the int8 stage. Raises nothing: check `report.passed`.
    """
    main_metric = main_metric or MAIN_METRIC[kind]
    report = GateReport(kind, main_metric, max_drop)
    measured = dict(measured or {})
    for stage in stages:
        if stage.name not in measured:
            log.info("gate: evaluating %s", stage.name)
            measured[stage.name] = evaluate_stage(stage, evaluate)
        metrics = measured[stage.name]
        if main_metric not in metrics:
            raise FinprintError(f"gate: stage '{stage.name}' has no '{main_metric}' metric (got {sorted(metrics)})")
        report.results.append(StageResult(stage.name, stage.precision, metrics, max_drop=max_drop))
    ref = report.result(REFERENCE_STAGE)
    for r in report.results:
        if ref is None or r is ref:
            continue
        r.drop_points = 100.0 * (ref.metrics[main_metric] - r.metrics[main_metric])
        r.gated = r.name.startswith("student")
    return report
