"""Time the pieces inside the heavy assets, outside Dagster, on an existing DuckDB file.

``run_benchmark.py`` says which step is slow; this says which line inside it. It reads the
candles of a DuckDB file a benchmark run left behind (``run_benchmark.py --keep`` prints the
temp dir) and times, with the product's own functions:

* features / targets: read candles, compute, and the whole refresh (a rebuild);
* the training frame read each model step does (its own columns; and all columns once);
* per model: the split (row caps, scaling), the fit, its test and train predictions, and
  saving the version.

Usage::

    python benchmarks/run_benchmark.py --workload M --keep        # note "tmp_dir"
    python benchmarks/profile_steps.py --db <tmp_dir>/data/blofin.duckdb [--bar 1m] \\
        [--training-days 30] [--models risk_scorer,volatility_regressor] [--threads 1]

Prints one JSON line per measured piece (``seconds`` wall, ``cpu_seconds`` of this process),
also appended to ``--jsonl`` or a new file under ``benchmarks/results/raw/``. It writes only
to a temp copy of the DuckDB file and a temp models dir.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.output import Lines, raw_path


@dataclass(frozen=True)
class TableSettings:
    """What the feature and target tables depend on (ml.tables reads these four)."""

    instruments: str
    training_days: int
    bar: str
    horizon: int


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Profiler:
    """Times named pieces and emits one JSON line per piece."""

    def __init__(self, out: Lines) -> None:
        self.out = out

    @contextmanager
    def timed(self, name: str, **extra: Any) -> Iterator[dict[str, Any]]:
        record: dict[str, Any] = {"piece": name, **extra}
        wall, processor = time.perf_counter(), cpu()
        yield record
        record["seconds"] = round(time.perf_counter() - wall, 3)
        record["cpu_seconds"] = round(cpu() - processor, 3)
        record["loadavg_1m"] = round(os.getloadavg()[0], 2)
        self.out.emit(record)


def profile_tables(db: Path, args: argparse.Namespace, profiler: Profiler) -> None:
    """Read the candles, compute features and targets, then each whole refresh (a rebuild)."""
    import pandas as pd

    from blofin_assets.market.bars import bar_duration
    from blofin_assets.ml.features import FEATURE_WARMUP_BARS, compute_features
    from blofin_assets.ml.tables import feature_table, target_table
    from blofin_assets.ml.targets import RISK_REFERENCE_BARS, compute_targets
    from blofin_assets.storage.candles import newest_candle_ts, read_candles
    from blofin_assets.storage.connection import connect
    from blofin_assets.storage.derived import refresh_table

    bar = bar_duration(args.bar)
    with connect(db, read_only=True) as con:
        # The window ends at the newest stored candle; the warm-up before it is read too.
        window_start = newest_candle_ts(con) - pd.Timedelta(days=args.training_days)
        stored = con.execute("SELECT DISTINCT inst_id FROM candles ORDER BY 1").fetchall()
        warmup_bars = max(FEATURE_WARMUP_BARS, RISK_REFERENCE_BARS)
        with profiler.timed("read_candles") as record:
            candles = read_candles(con, start=window_start - warmup_bars * bar)
            record["rows"] = len(candles)
    with profiler.timed("compute_features", rows=len(candles)):
        compute_features(candles, start=window_start)
    with profiler.timed("compute_targets", rows=len(candles)):
        compute_targets(candles, horizon=args.horizon, start=window_start)
    instruments = ",".join(row[0] for row in stored)  # every instrument the run stored
    settings = TableSettings(instruments, args.training_days, args.bar, args.horizon)
    for table in (feature_table(settings), target_table(settings)):
        # The whole step body: read, compute, write, content hash (a rebuild: the copy's
        # table is dropped first, as on a first build).
        with connect(db) as con:
            con.execute(f"DROP TABLE IF EXISTS {table.name}")
            with profiler.timed(f"refresh_{table.name}_rebuild") as record:
                refresh = refresh_table(con, table, training_days=args.training_days, bar=bar)
                record["rows"] = refresh.rows


def profile_model(
    db: Path, spec: Any, store: Any, args: argparse.Namespace, profiler: Profiler
) -> None:
    """One model step's pieces, with the product's functions: its read, the purged split with
    its row caps and scaling, the fit, both predictions and saving the version."""
    from sklearn.base import clone

    from blofin_assets.ml import training
    from blofin_assets.storage.connection import connect
    from blofin_assets.storage.training_rows import read_training_frame

    # What the model step reads: its own columns of the join.
    with connect(db, read_only=True) as con, profiler.timed("read_training_frame") as record:
        frame = read_training_frame(con, training.training_columns(spec))
        record["model"], record["rows"] = spec.name, len(frame)
    with profiler.timed("split_blocks", model=spec.name):  # split, row caps, scaling
        blocks = training.split_blocks(
            spec, frame, horizon=args.horizon, test_fraction=training.DEFAULT_TEST_FRACTION
        )
    x_train, x_test = blocks.x_train, blocks.x_test
    estimator = clone(training.wrap_estimator(spec))
    with profiler.timed("fit", model=spec.name, rows=len(x_train), threads=args.threads):
        estimator.fit(x_train, blocks.y_train)
    with profiler.timed("predict_test", model=spec.name, rows=len(x_test)):
        estimator.predict(x_test)
    with profiler.timed("predict_train", model=spec.name, rows=len(x_train)):
        estimator.predict(x_train)
    with profiler.timed("save_version", model=spec.name):
        store.save_version(
            spec.name,
            "profile",
            estimator=estimator,
            scaler=blocks.scaler,
            config={},
            metadata={"version": "profile"},
        )


def profile(args: argparse.Namespace, profiler: Profiler) -> None:
    from blofin_assets.ml.specs import MODEL_SPECS
    from blofin_assets.ml.store import ModelStore
    from blofin_assets.storage.connection import connect
    from blofin_assets.storage.training_rows import read_training_frame

    work = Path(tempfile.mkdtemp(prefix="blofin-profile-"))
    db = work / "blofin.duckdb"
    shutil.copy(args.db, db)
    profile_tables(db, args, profiler)
    with (
        connect(db, read_only=True) as con,
        profiler.timed("read_training_frame_all_columns") as record,
    ):
        record["rows"] = len(read_training_frame(con))

    store = ModelStore(work / "models")
    wanted = set(args.models.split(",")) if args.models else None
    limits: Any = nullcontext()
    if args.threads:
        from threadpoolctl import threadpool_limits

        limits = threadpool_limits(args.threads)
    with limits:
        for spec in MODEL_SPECS:
            if not wanted or spec.name in wanted:
                profile_model(db, spec, store, args, profiler)
    shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True, help="a DuckDB file a benchmark run left")
    parser.add_argument("--bar", default="1m")
    parser.add_argument("--training-days", type=int, default=30)
    parser.add_argument("--horizon", type=int, default=5)
    parser.add_argument("--models", help="comma list of model names (default all five)")
    parser.add_argument("--threads", type=int, help="cap BLAS/OpenMP threads (threadpoolctl)")
    parser.add_argument("--jsonl", help="append every line here (default: results/raw/)")
    args = parser.parse_args()

    from blofin_assets import process

    # An entry point, like the code location's load: the OpenMP policy before sklearn loads.
    process.prefer_passive_openmp()
    out = Lines(Path(args.jsonl) if args.jsonl else raw_path("profile_steps"))
    profile(args, Profiler(out))


if __name__ == "__main__":
    main()
