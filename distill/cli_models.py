"""`finprint models`: the model registry (what `--model`, `--student` and teachers can name)."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=["detect", "embed"], help="only this task's models")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def rows(task: str | None = None) -> list[dict]:
    from finprint.distill import registry

    out = []
    for name in registry.names(task=task):
        entry = registry.entry(name)
        model = entry.builder()
        out.append({
            "name": name, "task": entry.task, "role": entry.role,
            "parameters": sum(p.numel() for p in model.parameters()),
            "pretrained": f"ImageNet EfficientNet-{entry.pretrained.capitalize()}" if entry.pretrained else "no",
        })
    return out


def run(args: argparse.Namespace) -> int:
    table = rows(args.task)
    if args.json:
        print(json.dumps(table, indent=1))
        return 0
    print(f"{'name':28} {'task':7} {'role':8} {'parameters':>11}  pretrained")
    for r in table:
        print(f"{r['name']:28} {r['task']:7} {r['role']:8} {r['parameters']:>11,}  {r['pretrained']}")
    return 0
