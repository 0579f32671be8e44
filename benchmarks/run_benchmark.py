"""Benchmark the whole ``hourly_training`` job as the hourly schedule runs it.

Each measured run happens in a fresh subprocess (so peak RSS belongs to that run alone) with a
temporary DAGSTER_HOME (holding a copy of the project's ``dagster_home/dagster.yaml``: same
concurrency pools), a temporary DuckDB file and models dir, and a frozen clock
(``BLOFIN_AS_OF``). The subprocess is an entry point like the code location's load: it sets
the process policy (``blofin_assets.process``), loads ``blofin_assets.definitions`` (which
freezes the loaded heap, as production does), resolves ``hourly_training`` and materializes
the whole graph: candles (demo market, or a file with ``--candles-file``), features, targets,
the five models with their gates, every asset check, ml_model_results and whatever else the
job holds (the first build). It then advances BLOFIN_AS_OF by 60 minutes and times the whole
job again on top of that warehouse (the run the hourly schedule makes every hour: ``hourly_*``
fields), then another 60 minutes and times a ``candles``-only materialization (the incremental
hourly ingest on its own).

Usage (from the repository root, venv active)::

    python benchmarks/run_benchmark.py --workload S                # one run of S
    python benchmarks/run_benchmark.py --workload M --repeat 3     # 3 runs + a median summary
    python benchmarks/run_benchmark.py --workload S M L --repeat 3 --jsonl out.jsonl
    python benchmarks/run_benchmark.py --workload M --executor multiprocess --max-concurrent 2
    python benchmarks/run_benchmark.py --workload M --executor multiprocess \
        --start-method forkserver
    python benchmarks/run_benchmark.py --workload M --env OMP_WAIT_POLICY=ACTIVE  # extra env
    python benchmarks/run_benchmark.py --workload M --export-candles /tmp/m.parquet  # then:
    python benchmarks/run_benchmark.py --workload M --candles-file /tmp/m.parquet  # source=file

Workloads (``harness/workloads.py``):

* S: 3 instruments x 14 days of 1m bars (the default demo run);
* M: 10 instruments x 30 days of 1m bars, lookback = training = 30 days;
* L: 10 instruments x 365 days of 5m bars, lookback = training = 365 days;
* H: 10 instruments x 365 days of 1m bars but the default 30-day training window: a trader
  who kept a year of history. The models see what they see at M; what grows is the stored
  history every hourly step has to reckon with;
* W: 100 instruments x 30 days of 1m bars (4.32 M candles): the whole market, M's ten and 90
  more, lookback = training = 30 days.

Output: one JSON line per run (``"kind": "run"``, fields described in ``harness/record.py``),
then per workload one summary line (``"kind": "summary"``) with the medians over the repeats
(every step's seconds and peak RSS; each model step beside its fit) and PASS/FAIL against the
benchmark goals (goals, never test assertions), then a ``"kind": "scaling"`` line for each pair
of workloads that has a scaling goal (S->M, M->W hourly). The lines go to
stdout and to a raw file: ``--jsonl FILE``, or by default a new file under
``benchmarks/results/raw/`` (ignored by git). Dagster's own logs go to a file in the run's temp
dir; a failed run keeps its temp dir and prints the log's path. ``--keep`` keeps the temp dirs
of successful runs too (for ``profile_steps.py``). ``render_results.py`` turns the JSON lines
into the tables of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness.output import Lines, raw_path
from harness.summary import machine, scaling_goals, summarize
from harness.workloads import REPO, WORKLOADS, export_candles


def child_command(args: argparse.Namespace, workload: str) -> list[str]:
    """This script, in child mode, with the options the measured run needs."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--workload", workload]
    command += ["--executor", args.executor, "--max-concurrent", str(args.max_concurrent)]
    command += ["--start-method", args.start_method]
    for name, value in args.env:
        command += ["--env", f"{name}={value}"]
    if args.candles_file:
        command += ["--candles-file", args.candles_file]
    if args.keep:
        command.append("--keep")
    return command


def run_child(args: argparse.Namespace, workload: str) -> dict[str, Any]:
    """One measured run in a fresh process; its JSON record."""
    # The extra environment is in place before the child imports anything (OpenMP reads it once).
    env = {**os.environ, **dict(args.env)}
    completed = subprocess.run(
        child_command(args, workload), cwd=REPO, env=env, capture_output=True, text=True
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode != 0 or not lines:
        sys.stderr.write(completed.stdout[-5000:] + completed.stderr[-5000:])
        raise SystemExit(f"benchmark run of {workload} failed (exit {completed.returncode})")
    return json.loads(lines[-1])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", nargs="+", choices=sorted(WORKLOADS), default=["S"])
    parser.add_argument("--repeat", type=int, default=1, help="runs per workload (default 1)")
    parser.add_argument("--executor", choices=("in_process", "multiprocess"), default="in_process")
    parser.add_argument(
        "--max-concurrent",
        type=int,
        default=os.cpu_count() or 2,
        help="multiprocess executor: steps at once (default nproc)",
    )
    parser.add_argument(
        "--start-method",
        choices=("spawn", "forkserver"),
        default="spawn",
        help="multiprocess executor: spawn (Dagster's default) or forkserver with the code "
        "location preloaded",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        type=lambda text: tuple(text.split("=", 1)),
        metavar="NAME=VALUE",
        help="extra environment for the measured process, e.g. OMP_WAIT_POLICY=ACTIVE",
    )
    parser.add_argument("--candles-file", help="ingest this CSV/Parquet (BLOFIN_SOURCE=file)")
    parser.add_argument("--export-candles", help="write the workload's demo candles here, exit")
    parser.add_argument(
        "--jsonl",
        help="append every output line to this file (default: a new file under "
        "benchmarks/results/raw/)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the runs' temp dirs")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.export_candles:
        export_candles(WORKLOADS[args.workload[0]], Path(args.export_candles))
        return
    if args.child:
        from harness.child import child_run

        args.workload = args.workload[0]
        print(json.dumps(child_run(args)), flush=True)
        return

    label = f"{args.executor}_{'_'.join(args.workload)}"
    out = Lines(Path(args.jsonl) if args.jsonl else raw_path(label))
    out.emit(machine())
    summaries: dict[str, dict[str, Any]] = {}
    for workload in args.workload:
        records = [run_child(args, workload) for _ in range(args.repeat)]
        for record in records:
            out.emit(record)
        summaries[workload] = summarize(records)
        out.emit(summaries[workload])
    for scaling in scaling_goals(summaries):
        out.emit(scaling)
    sys.stderr.write(f"raw lines: {out.path}\n")


if __name__ == "__main__":
    main()
