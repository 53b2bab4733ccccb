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
        self.path.write_text("\n".join(json.dumps(r) for r in self.rows) + "\n")
        return self.path
