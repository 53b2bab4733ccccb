"""Shared output for benchmarks: one JSON object per line on stdout and in benchmarks/results/."""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


class Recorder:
    def __init__(self, bench: str) -> None:
        RESULTS.mkdir(exist_ok=True)
        self.path = RESULTS / f"{bench}.json"
        self.rows: list[dict] = []
        self.machine = f"{platform.machine()} {platform.processor() or ''} {platform.python_version()}".strip()

    def emit(self, name: str, value: float, unit: str, *, baseline: str | None = None,
             baseline_value: float | None = None, block: int | None = None, ratio: float | None = None,
             settings: dict | None = None) -> dict:
        row = {"name": name, "baseline": baseline, "block": block, "value": value,
               "baseline_value": baseline_value, "unit": unit, "settings": settings or {}, "ratio": ratio,
               "machine": self.machine, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        print(json.dumps(row), flush=True)
        self.rows.append(row)
        return row

    def save(self) -> Path:
        from hushbridge.atomic import write_text_atomic  # a killed run leaves the last good file

        return write_text_atomic(self.path, "\n".join(json.dumps(r) for r in self.rows) + "\n")


def lower_is_better(value: float, baseline: float) -> float | None:
    """DESIGN §7's ratio (>1: hushbridge better) for a cost such as time per block."""
    return baseline / value if value > 0 and baseline > 0 else None


def count_ratio(value: float, baseline: float) -> float:
    """The ratio for event counts (xruns, late cycles), where either may be 0:
    ``(baseline + 1) / (value + 1)``, 1 when both are equal, >1 when ours has fewer."""
    return (baseline + 1.0) / (value + 1.0)


COUNT_RATIO_RULE = "(baseline + 1) / (value + 1)"
