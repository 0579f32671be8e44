"""Where the JSON lines go: stdout, and a raw file under benchmarks/results/raw/ (ignored by
git; RESULTS.md quotes the figures, benchmarks/results/latest.jsonl keeps the current set)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

RAW_DIR = Path(__file__).resolve().parents[1] / "results" / "raw"


def raw_path(label: str) -> Path:
    """A new raw file named by the UTC start time and what it measures."""
    return RAW_DIR / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}_{label}.jsonl"


class Lines:
    """Prints each record as one JSON line and appends it to a file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, record: dict[str, Any]) -> None:
        line = json.dumps(record)
        print(line, flush=True)
        with self.path.open("a") as out:
            out.write(line + "\n")
