"""Time the pieces inside the heavy assets, outside Dagster, on an existing DuckDB file.

``run_benchmark.py`` says which step is slow; this says which line inside it. It reads the
candles of a DuckDB file a benchmark run left behind (``run_benchmark.py --keep`` prints the
temp dir) and times, with the product's own functions:

* features / targets: read candles, compute, and the whole refresh (a rebuild);
* the training frame read each model step does (its own columns; and all columns once);
* per model, the step's work beside its estimator's own: the estimator fit and its test
  prediction alone on the step's rows (``fit``, ``predict_test``), then what the step runs,
  ``train_model`` (its pieces as ``TrainedModel.timings`` records them: split, fit,
  predict_test, test_metrics = the naive rules and the Diebold-Mariano test, train_metrics,
  importance, reference), ``publish_trained`` (gates, saving the version, promotion) and the
  importance chart of the asset's metadata; a ``model_step`` line sums them and divides by
  fit + predict (the issue's goal: at most 1.3).

With ``--workload M`` (or W) instead of ``--db`` the training frame is built in memory from
the workload's demo candles (compute_features / compute_targets, as the pipeline computes
them; no Dagster, no DuckDB), and the tables are not profiled.

Usage::

    python benchmarks/run_benchmark.py --workload M --keep        # note "tmp_dir"
    python benchmarks/profile_steps.py --db <tmp_dir>/data/blofin.duckdb [--bar 1m] \\
        [--training-days 30] [--models risk_scorer,volatility_regressor] [--threads 1]
    python benchmarks/profile_steps.py --workload M [--models ...]

Prints one JSON line per measured piece (``seconds`` wall, ``cpu_seconds`` of this process),
also appended to ``--jsonl`` or a new file under ``benchmarks/results/raw/``. It writes only
to a temp copy of the DuckDB file and a temp models dir. Run with ``PYTHONPATH`` at another
checkout's code to profile that code (pieces it does not record are left out).
"""

from __future__ import annotations

import argparse
import os
import platform
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
from harness.workloads import FROZEN_NOW, WORKLOADS

HORIZON = 5  # the benchmark's (and the product's default) label horizon
# What a model step spends after its read, as profiled: its training, its publication and the
# chart of its metadata (the read is added when the frame comes from a DuckDB file).
STEP_PIECES = ("read_training_frame", "train_model", "publish_trained", "importance_chart")
OMP_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")  # the OpenMP wait policy in force


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
        self.records: list[dict[str, Any]] = []

    @contextmanager
    def timed(self, name: str, **extra: Any) -> Iterator[dict[str, Any]]:
        record: dict[str, Any] = {"piece": name, **extra}
        wall, processor = time.perf_counter(), cpu()
        yield record
        record["seconds"] = round(time.perf_counter() - wall, 3)
        record["cpu_seconds"] = round(cpu() - processor, 3)
        record["loadavg_1m"] = round(os.getloadavg()[0], 2)
        self.out.emit(record)
        self.records.append(record)


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


def estimator_alone(spec: Any, frame: Any, args: argparse.Namespace, profiler: Profiler) -> None:
    """The estimator's own fit and test prediction on the rows the step trains and tests on."""
    from sklearn.base import clone

    from blofin_assets.ml import training

    with profiler.timed("split_blocks", model=spec.name):  # split, row caps, scaling
        blocks = training.split_blocks(
            spec, frame, horizon=args.horizon, test_fraction=training.DEFAULT_TEST_FRACTION
        )
    estimator = clone(training.wrap_estimator(spec))
    with profiler.timed("fit", model=spec.name, rows=len(blocks.x_train), threads=args.threads):
        estimator.fit(blocks.x_train, blocks.y_train)
    with profiler.timed("predict_test", model=spec.name, rows=len(blocks.x_test)):
        estimator.predict(blocks.x_test)


def model_step(spec: Any, frame: Any, store: Any, args: argparse.Namespace, profiler: Profiler):
    """What the model step runs after its read: train_model, publish_trained, the chart."""
    import pandas as pd

    from blofin_assets.ml.importance import importance_chart_png
    from blofin_assets.ml.publish import publish_trained
    from blofin_assets.ml.training import train_model

    with profiler.timed("train_model", model=spec.name) as record:
        trained = train_model(spec, frame, horizon=args.horizon)
        record["pieces"] = getattr(trained, "timings", {})  # older code records none
        record["train_metric_rows"] = getattr(trained, "train_metric_rows", trained.train_rows)
        record["skill"] = trained.evaluation.skill
    with profiler.timed("publish_trained", model=spec.name):
        published = publish_trained(
            trained,
            store=store,
            horizon=args.horizon,
            promoted_skills=[],
            run_id="profile",
            data_until=pd.Timestamp(trained.data_window[1]),
        )
    with profiler.timed("importance_chart", model=spec.name):
        importance_chart_png(published.trained.feature_importances, spec.name)


def profile_model(
    db: Path | None, frame: Any, spec: Any, store: Any, args: argparse.Namespace, profiler: Profiler
) -> None:
    """One model step's pieces and, on a ``model_step`` line, the step beside its estimator."""
    from blofin_assets.ml import training
    from blofin_assets.storage.connection import connect
    from blofin_assets.storage.training_rows import read_training_frame

    start = len(profiler.records)
    if db is not None:  # what the model step reads: its own columns of the join
        with connect(db, read_only=True) as con, profiler.timed("read_training_frame") as record:
            frame = read_training_frame(con, training.training_columns(spec))
            record["model"], record["rows"] = spec.name, len(frame)
    else:
        frame = frame[training.training_columns(spec)]
    estimator_alone(spec, frame, args, profiler)
    model_step(spec, frame, store, args, profiler)
    seconds = {r["piece"]: r["seconds"] for r in profiler.records[start:]}
    step = sum(seconds.get(piece, 0.0) for piece in STEP_PIECES)
    own = seconds["fit"] + seconds["predict_test"]
    profiler.out.emit(
        {
            "piece": "model_step",
            "model": spec.name,
            "step_seconds": round(step, 3),
            "fit_seconds": seconds["fit"],
            "predict_seconds": seconds["predict_test"],
            "step_over_fit_predict": round(step / own, 3) if own > 0 else None,
            **{f"{piece}_seconds": seconds.get(piece) for piece in STEP_PIECES},
            "loadavg_1m": round(os.getloadavg()[0], 2),
        }
    )


def profile(args: argparse.Namespace, profiler: Profiler) -> None:
    from blofin_assets.ml.specs import MODEL_SPECS
    from blofin_assets.ml.store import ModelStore
    from blofin_assets.storage.connection import connect
    from blofin_assets.storage.training_rows import read_training_frame

    work = Path(tempfile.mkdtemp(prefix="blofin-profile-"))
    db, frame = None, None
    if args.db:
        db = work / "blofin.duckdb"
        shutil.copy(args.db, db)
        profile_tables(db, args, profiler)
        with (
            connect(db, read_only=True) as con,
            profiler.timed("read_training_frame_all_columns") as record,
        ):
            record["rows"] = len(read_training_frame(con))
    else:
        with profiler.timed("demo_training_frame", workload=args.workload, **machine()) as record:
            frame = training_frame(args.workload, args.horizon)
            record["rows"] = len(frame)
    store = ModelStore(work / "models")
    wanted = set(args.models.split(",")) if args.models else None
    limits: Any = nullcontext()
    if args.threads:
        from threadpoolctl import threadpool_limits

        limits = threadpool_limits(args.threads)
    with limits:
        for spec in MODEL_SPECS:
            if not wanted or spec.name in wanted:
                profile_model(db, frame, spec, store, args, profiler)
    shutil.rmtree(work, ignore_errors=True)


def training_frame(workload: str, horizon: int = HORIZON) -> Any:
    """The workload's demo training frame, as read_training_frame returns it (every column)."""
    import pandas as pd

    from blofin_assets.market.bars import bar_duration, latest_closed_bar_open
    from blofin_assets.market.sources.demo import demo_candles
    from blofin_assets.ml.features import compute_features
    from blofin_assets.ml.targets import compute_targets

    spec = WORKLOADS[workload]
    now, bar = pd.Timestamp(FROZEN_NOW), bar_duration(spec.bar)
    start = (now - pd.Timedelta(days=spec.days)).floor(bar)
    end = latest_closed_bar_open(now, spec.bar) + bar
    candles = demo_candles(spec.instruments.split(","), spec.bar, start, end)
    features = compute_features(candles)
    labels = compute_targets(candles, horizon=horizon)
    del candles
    frame = features.merge(labels, on=["inst_id", "ts"])
    return frame.sort_values(["ts", "inst_id"], kind="stable").reset_index(drop=True)


def machine() -> dict[str, Any]:
    """What the figures were measured on and with."""
    import numpy
    import sklearn
    import xgboost

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "date_utc": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "sklearn": sklearn.__version__,
        "xgboost": xgboost.__version__,
        "numpy": numpy.__version__,
        "omp": {name: os.environ.get(name) for name in OMP_VARIABLES},
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--db", help="a DuckDB file a benchmark run left")
    source.add_argument("--workload", choices=sorted(WORKLOADS), help="demo frame, in memory")
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
