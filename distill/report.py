"""Result rows -> tables: markdown (for docs/results) and aligned plain text (for the terminal).

A row is a dict; columns are the union of the rows' keys in first-seen order unless given. A
missing or None value prints as "-" (absent, e.g. mask mAP on a boxes-only dataset), never 0.
Used by `finprint eval`, `bench`, `demo` and the results doc. Torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

ABSENT = "-"


def format_value(value: Any, digits: int = 3) -> str:
    if value is None:
        return ABSENT
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 10 ** (-digits)):
            return f"{value:.{digits}g}"
        return f"{value:.{digits}f}"
    return str(value)


def columns_of(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(key, None)
    return list(seen)


def _cells(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], digits: int) -> list[list[str]]:
    return [[format_value(row.get(col), digits) for col in columns] for row in rows]


def _is_numeric_column(rows: Sequence[Mapping[str, Any]], col: str) -> bool:
    values = [row.get(col) for row in rows if row.get(col) is not None]
    return bool(values) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def markdown_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, digits: int = 3
) -> str:
    """A GitHub-flavoured markdown table; numeric columns right-aligned."""
    columns = list(columns) if columns is not None else columns_of(rows)
    if not columns:
        return ""

    def escape(text: str) -> str:
        return text.replace("|", "\\|")

    align = ["---:" if _is_numeric_column(rows, c) else ":---" for c in columns]
    lines = [
        "| " + " | ".join(escape(c) for c in columns) + " |",
        "| " + " | ".join(align) + " |",
    ]
    lines += ["| " + " | ".join(escape(v) for v in cells) + " |" for cells in _cells(rows, columns, digits)]
    return "\n".join(lines)


def text_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, digits: int = 3) -> str:
    """Space-aligned columns under a header and a rule; numeric columns right-aligned."""
    columns = list(columns) if columns is not None else columns_of(rows)
    if not columns:
        return ""
    body = _cells(rows, columns, digits)
    widths = [max([len(c)] + [len(r[i]) for r in body]) for i, c in enumerate(columns)]
    numeric = [_is_numeric_column(rows, c) for c in columns]

    def line(cells: Sequence[str]) -> str:
        parts = [cell.rjust(w) if num else cell.ljust(w) for cell, w, num in zip(cells, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    out = [line(columns), "  ".join("-" * w for w in widths)]
    out += [line(cells) for cells in body]
    return "\n".join(out)


def metric_rows(result: Mapping[str, Any], keys: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """{"box_map": 0.5, ...} -> [{"metric": "box_map", "value": 0.5}, ...] (for a one-model report)."""
    keys = list(keys) if keys is not None else list(result)
    return [{"metric": k, "value": result.get(k)} for k in keys]
