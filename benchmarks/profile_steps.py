"""Time the pieces inside the heavy assets, outside Dagster, on an existing DuckDB file.

``run_benchmark.py`` says which step is slow; this says which line inside it. It reads the
candles of a DuckDB file a benchmark run left behind (``run_benchmark.py --keep`` prints the
temp dir) and times, with the product's own functions:

* features / targets: read candles, compute, and the whole refresh (a rebuild);
* the training frame read each model step does (its own columns; and all columns once);
* per model: ``train_model``'s fit, its test and train predictions, and saving the version.

Usage::

    python benchmarks/run_benchmark.py --workload M --keep        # note "tmp_dir"
    python benchmarks/profile_steps.py --db <tmp_dir>/data/blofin.duckdb [--bar 1m] \\
        [--training-days 30] [--models risk_scorer,volatility_regressor] [--threads 1]

Prints one JSON line per measured piece (``seconds`` wall, ``cpu_seconds`` of this process).
It writes only to a temp copy of the DuckDB file and a temp models dir.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextmanager
def timed(name: str, **extra: Any) -> Iterator[dict[str, Any]]:
    record: dict[str, Any] = {"piece": name, **extra}
    wall, processor = time.perf_counter(), cpu()
    yield record
    record["seconds"] = round(time.perf_counter() - wall, 3)
    record["cpu_seconds"] = round(cpu() - processor, 3)
    record["loadavg_1m"] = round(os.getloadavg()[0], 2)
    print(json.dumps(record), flush=True)


def profile(args: argparse.Namespace) -> None:
    from sklearn.base import clone

    from blofin_assets.storage import candles, connection, training_rows
    from blofin_assets.defs.assets.features import feature_table_spec
    from blofin_assets.defs.assets.targets import target_table_spec
    from blofin_assets.storage.derived import refresh_table
    from blofin_assets.ml import training
    from blofin_assets.ml.dataset import feature_table, read_start, target_table, window_start
    from blofin_assets.ml.specs import MODEL_SPECS
    from blofin_assets.ml.splits import purged_split
    from blofin_assets.ml.store import ModelStore
    from blofin_assets.defs.resources import BlofinSettings
    from blofin_assets.market.bars import bar_duration

    work = Path(tempfile.mkdtemp(prefix="blofin-profile-"))
    db = work / "blofin.duckdb"
    shutil.copy(args.db, db)
    bar = bar_duration(args.bar)

    with connection.connect(db, read_only=True) as con:
        newest = candles.newest_candle_ts(con)
        with timed("read_candles") as record:
            candles = candles.read_candles(con, start=read_start(newest, args.training_days, bar))
            record["rows"] = len(candles)
    start = window_start(newest, args.training_days)
    with timed("compute_features", rows=len(candles)):
        feature_table(candles, start)
    with timed("compute_targets", rows=len(candles)):
        target_table(candles, start, args.horizon)
    settings = BlofinSettings(training_days=args.training_days, bar=args.bar, horizon=args.horizon)
    for spec in (feature_table_spec(settings), target_table_spec(settings)):
        # The whole step body: read, compute, write, content hash (a rebuild: the copy's
        # table is dropped first, as on a first build).
        with connection.connect(db) as con:
            con.execute(f"DROP TABLE IF EXISTS {spec.name}")
            with timed(f"refresh_{spec.name}_rebuild") as record:
                refresh = refresh_table(con, spec, training_days=args.training_days, bar=bar)
                record["rows"] = refresh.rows
    with connection.connect(db, read_only=True) as con, timed("read_training_frame_all_columns") as record:
        record["rows"] = len(training_rows.read_training_frame(con))

    store = ModelStore(work / "models")
    wanted = set(args.models.split(",")) if args.models else None
    limits: Any = nullcontext()
    if args.threads:
        from threadpoolctl import threadpool_limits

        limits = threadpool_limits(args.threads)
    with limits:
        for spec in MODEL_SPECS:
            if wanted and spec.name not in wanted:
                continue
            # What the model step reads: its own columns of the join.
            with connection.connect(db, read_only=True) as con, timed("read_training_frame") as record:
                frame = training_rows.read_training_frame(con, training.training_columns(spec))
                record["model"], record["rows"] = spec.name, len(frame)
            with timed("sort_and_split", model=spec.name):
                ordered = frame.sort_values(["ts", "inst_id"], kind="stable").reset_index(drop=True)
                split = purged_split(ordered["ts"], test_fraction=0.2, purge_bars=args.horizon)
                train = training.cap_rows(ordered.iloc[split.train_index], spec)
                test = ordered.iloc[split.test_index]
            columns = list(spec.features)
            scaler = training.StandardScaler().fit(train[columns].to_numpy(dtype="float64"))
            x_train = scaler.transform(train[columns].to_numpy(dtype="float64"))
            x_test = scaler.transform(test[columns].to_numpy(dtype="float64"))
            y_train = training.model_target(spec, train)
            if spec.task == "classification":
                y_train = y_train.astype("int64")
            estimator = clone(training.wrap_estimator(spec))
            with timed("fit", model=spec.name, rows=len(x_train), threads=args.threads):
                estimator.fit(x_train, y_train)
            with timed("predict_test", model=spec.name, rows=len(x_test)):
                estimator.predict(x_test)
            with timed("predict_train", model=spec.name, rows=len(x_train)):
                estimator.predict(x_train)
            with timed("save_version", model=spec.name):
                store.save_version(
                    spec.name,
                    "profile",
                    estimator=estimator,
                    scaler=scaler,
                    config={},
                    metadata={"version": "profile"},
                )
            del estimator, x_train, x_test, frame, ordered, train, test
    shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True, help="a DuckDB file a benchmark run left")
    parser.add_argument("--bar", default="1m")
    parser.add_argument("--training-days", type=int, default=30)
    parser.add_argument("--horizon", type=int, default=5)
    parser.add_argument("--models", help="comma list of model names (default all five)")
    parser.add_argument("--threads", type=int, help="cap BLAS/OpenMP threads (threadpoolctl)")
    profile(parser.parse_args())


if __name__ == "__main__":
    main()
