"""Each model's estimator candidates, within its family, measured on the same rows.

Each candidate (the spec with some parameters or fields replaced) is trained by the product's
own ``train_model`` on a benchmark workload's demo training frame (``profile_steps.
training_frame``: M = 10 instruments x 30 days of 1m bars, 334k training rows; W = 100
instruments, 3.34 M), recording: the estimator's own fit and test-prediction seconds and the
whole ``train_model`` (min / median over ``--repeats``, the 1-minute load average beside
each: the machine is shared); the test skill over the strongest naive rule on the same rows
and its one-sided p-value (``Evaluation.skill``, ``comparison.p_value``; fixed seeds, so one
value in every repeat, checked); and, row by row on the current spec's test rows, the mean
loss difference from the current spec with both one-sided Diebold-Mariano p-values (better /
worse beyond noise; HAC lag ``ml.significance.overlap_lag``).

Usage::

    python benchmarks/compare_estimators.py --workload M                 # every candidate
    python benchmarks/compare_estimators.py --workload W --models risk_scorer \\
        --candidates current,cap_500k --repeats 2
    python benchmarks/compare_estimators.py --workload M --omp passive,spin,active,default \\
        --candidates current                        # the OpenMP wait policy, one process each
    python benchmarks/compare_estimators.py --render results/raw/<file>.jsonl > table.md

Prints one JSON line per measurement (also appended to ``--jsonl`` or a new file under
``benchmarks/results/raw/``), then the markdown tables of everything it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.output import Lines, raw_path
from profile_steps import HORIZON, OMP_VARIABLES, machine, training_frame

# The OpenMP wait policies compared: each is an environment a process starts with, so every
# policy runs in its own subprocess. "passive" is what blofin_assets.process sets today.
OMP_POLICIES: dict[str, dict[str, str]] = {
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "spin": {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "10000"},
    "active": {"OMP_WAIT_POLICY": "ACTIVE"},
    "default": {},
}


@dataclass(frozen=True)
class Candidate:
    """The model's spec with ``params`` merged into its own (``replace_params``: instead of
    them, for another implementation) and other ModelSpec ``fields`` replaced."""

    model: str
    label: str
    params: Mapping[str, Any] = field(default_factory=dict)
    fields: Mapping[str, Any] = field(default_factory=dict)
    replace_params: bool = False
    note: str = ""


def nystroem_linear_svr(**params: Any) -> Any:
    """An RBF support vector regression with the kernel approximated (Nystroem) and a linear
    SVR on the mapped rows: still an SVM, linear in the rows it trains and predicts.
    ``params`` in the Pipeline's names (rbf__n_components, svr__C, ...)."""
    from sklearn.kernel_approximation import Nystroem
    from sklearn.pipeline import Pipeline
    from sklearn.svm import LinearSVR

    return Pipeline([("rbf", Nystroem()), ("svr", LinearSVR())]).set_params(**params)


def nystroem(components: int, rows: int, *, primal: bool = False) -> Candidate:
    """The Nystroem + linear SVR candidate of the volatility model (gamma = "scale" of the
    standardised features, 1/24; the SVR's C and epsilon)."""
    from blofin_assets.ml.specs import SEED

    loss = "squared_epsilon_insensitive" if primal else "epsilon_insensitive"
    params = {"rbf__n_components": components, "rbf__gamma": 1 / 24, "rbf__random_state": SEED,
              "svr__C": 1.0, "svr__epsilon": 0.1, "svr__loss": loss, "svr__dual": not primal,
              "svr__max_iter": 5_000, "svr__random_state": SEED}  # fmt: skip
    return Candidate(
        "volatility_regressor",
        f"nystroem{components}_{rows // 1000}k{'_primal' if primal else ''}",
        params,
        {"estimator_class": nystroem_linear_svr, "max_train_rows": rows},
        replace_params=True,
        note="not a ModelSpec today: the estimator is a Pipeline",
    )


def candidates() -> list[Candidate]:
    """Every candidate, "current" (the spec as it is) first for each model. Each names the
    values it measures in full (not relative to the spec), so a label means the same settings
    whatever the spec says today; "before" is the spec before benchmarks/results/estimators.md."""
    from xgboost import XGBRegressor, XGBRFClassifier

    from blofin_assets.ml.specs import MODEL_SPECS, SEED

    listed = [Candidate(spec.name, "current") for spec in MODEL_SPECS]
    even = {"row_sampling": "even"}
    # fmt: off
    xgb_risk = {"n_estimators": 200, "learning_rate": 0.05, "max_leaves": 31, "max_depth": 0,
                "grow_policy": "lossguide", "min_child_weight": 100, "reg_lambda": 1.0,
                "tree_method": "hist", "n_jobs": 2, "random_state": SEED}
    xgb_rf = {"n_estimators": 100, "max_depth": 10, "min_child_weight": 10, "subsample": 0.06,
              "colsample_bynode": 0.2, "tree_method": "hist", "n_jobs": 2, "random_state": SEED}
    direction = {"n_estimators": 200, "learning_rate": 0.05, "max_bin": 256}  # before
    forest = {"n_estimators": 100, "max_samples": 20_000, "max_features": "sqrt"}  # before
    listed += [
        Candidate("direction_predictor", "before", direction),
        Candidate("direction_predictor", "bins64", {**direction, "max_bin": 64}),
        Candidate("direction_predictor", "threads1", {**direction, "n_jobs": 1}),
        Candidate("direction_predictor", "trees100_lr0.1",
                  {"n_estimators": 100, "learning_rate": 0.1, "max_bin": 256}),
        Candidate("direction_predictor", "trees100_lr0.1_bins64",
                  {"n_estimators": 100, "learning_rate": 0.1, "max_bin": 64}),
        *(Candidate("direction_predictor", f"cap_{k}k_even", fields={"max_train_rows": k * 1000,
                    **even}) for k in (300, 500, 1000)),
        Candidate("momentum_classifier", "before", forest),
        Candidate("momentum_classifier", "trees50", {**forest, "n_estimators": 50}),
        Candidate("momentum_classifier", "samples10k", {**forest, "max_samples": 10_000}),
        Candidate("momentum_classifier", "samples50k_trees50",
                  {**forest, "max_samples": 50_000, "n_estimators": 50}),
        Candidate("momentum_classifier", "depth16_leaf20",
                  {**forest, "max_depth": 16, "min_samples_leaf": 20}),
        Candidate("momentum_classifier", "xgbrf_hist", xgb_rf,
                  {"estimator_class": XGBRFClassifier}, True),
        *(Candidate("momentum_classifier", f"features{f}_samples{n // 1000}k_trees{t}",
                    {"max_features": f, "max_samples": n, "n_estimators": t})
          for f, n, t in ((0.5, 20_000, 100), (0.5, 10_000, 100), (0.5, 5_000, 100),
                          (0.5, 10_000, 50), (0.33, 10_000, 100))),
        Candidate("momentum_classifier", "cap_500k_even", fields={"max_train_rows": 500_000,
                  **even}),
        Candidate("risk_scorer", "iter100_lr0.1", {"max_iter": 100, "learning_rate": 0.1}),
        Candidate("risk_scorer", "bins63", {"max_bins": 63}),
        Candidate("risk_scorer", "early_stop", {"early_stopping": True, "max_iter": 400,
                  "validation_fraction": 0.1, "n_iter_no_change": 10},
                  note="random validation rows: overlapping labels make it stop late"),
        Candidate("risk_scorer", "xgb_hist", xgb_risk, {"estimator_class": XGBRegressor}, True),
        *(Candidate("risk_scorer", f"cap_{k}k_even", fields={"max_train_rows": k * 1000, **even})
          for k in (300, 500, 1000)),
        Candidate("volatility_regressor", "before", {"epsilon": 0.1}),
        *(Candidate("volatility_regressor", f"eps{e}", {"epsilon": e}) for e in (0.3, 0.5)),
        Candidate("volatility_regressor", "rows2500_eps0.1", {"epsilon": 0.1},
                  {"max_train_rows": 2_500}),
        Candidate("volatility_regressor", "rows10k_eps0.1", {"epsilon": 0.1},
                  {"max_train_rows": 10_000}),
        nystroem(300, 100_000), nystroem(300, 50_000), nystroem(200, 50_000, primal=True),
        nystroem(100, 100_000),
        Candidate("price_predictor", "batch1024", {"batch_size": 1024}),
        Candidate("price_predictor", "batch2048", {"batch_size": 2048}),
        Candidate("price_predictor", "even_100k", fields=even),
        Candidate("price_predictor", "rows50k", fields={"max_train_rows": 50_000}),
    ]
    # fmt: on
    return listed


def candidate_spec(candidate: Candidate) -> Any:
    from dataclasses import replace

    from blofin_assets.ml.specs import SPECS_BY_NAME

    spec = SPECS_BY_NAME[candidate.model]
    params = (
        dict(candidate.params) if candidate.replace_params else {**spec.params, **candidate.params}
    )
    return replace(spec, params=params, **candidate.fields)  # fmt: skip


def common_rows(frame: Any, models: set[str]) -> dict[str, Any]:
    """Per model, its current spec's test rows: where every candidate is compared with it."""
    from blofin_assets.ml.specs import SPECS_BY_NAME
    from blofin_assets.ml.training import DEFAULT_TEST_FRACTION, split_blocks

    rows = {}
    for spec in (SPECS_BY_NAME[name] for name in models):
        blocks = split_blocks(spec, frame, horizon=HORIZON, test_fraction=DEFAULT_TEST_FRACTION)
        rows[spec.name] = (blocks.test, blocks.y_test)
    return rows


def row_losses_on(trained: Any, test: Any, y_test: Any) -> Any:
    """The trained model's primary-metric loss on each of the given (unscaled) test rows."""
    from blofin_assets.ml.metrics import row_losses

    spec = trained.spec
    x = trained.scaler.transform(test[list(spec.features)].to_numpy(dtype="float64"))
    return row_losses(spec.primary_metric, y_test, trained.estimator.predict(x))


def measure(
    candidate: Candidate, frame: Any, workload: str, repeat: int, threads: str
) -> tuple[dict, Any]:
    """One training of the candidate: its record and the TrainedModel."""
    from blofin_assets.ml.training import train_model, training_columns

    spec = candidate_spec(candidate)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    trained = train_model(spec, frame[training_columns(spec)], horizon=HORIZON)
    total = time.perf_counter() - started
    evaluation = trained.evaluation
    inner = getattr(trained.estimator, "regressor_", trained.estimator)
    record = {
        "kind": "candidate",
        "workload": workload,
        "model": candidate.model,
        "label": candidate.label,
        "repeat": repeat,
        "omp": {name: os.environ.get(name) for name in OMP_VARIABLES},
        "threads": threads,  # training.fit_threads' choice, or "all" of every pool
        "train_rows": trained.train_rows,
        "test_rows": trained.test_rows,
        "fit_seconds": round(trained.train_seconds, 3),
        "predict_seconds": round(trained.predict_seconds, 3),
        "train_model_seconds": round(total, 3),
        "timings": trained.timings,
        "skill": evaluation.skill,
        "p_value": evaluation.comparison.p_value if evaluation.comparison else None,
        "baseline": evaluation.baseline_name,
        "primary_metric": evaluation.primary_metric,
        "primary_value": evaluation.primary_value,
        "baseline_value": evaluation.baseline_value,
        "support_vectors": len(getattr(inner, "support_", ())) or None,
        "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "note": candidate.note,
    }
    return record, trained


def paired_record(
    candidate: Candidate, workload: str, losses: Any, current: Any, instruments: int
) -> dict:
    """The candidate against the current spec, row by row on the current spec's test rows."""
    from blofin_assets.ml.significance import diebold_mariano, overlap_lag

    lag = overlap_lag(HORIZON, instruments)
    better = diebold_mariano(losses, current, lag)
    return {
        "kind": "paired",
        "workload": workload,
        "model": candidate.model,
        "label": candidate.label,
        "rows": better.rows,
        "lag": lag,
        "mean_loss_vs_current": float(losses.mean() - current.mean()),
        "current_mean_loss": float(current.mean()),
        "p_better": better.p_value,
        "p_worse": diebold_mariano(current, losses, lag).p_value,
    }


def compare(args: argparse.Namespace, out: Lines) -> None:
    """Every chosen candidate ``args.repeats`` times (repeat outermost, so the machine's
    drifts spread over all of them) and, once each, its paired comparison."""
    labels = {"current", *args.candidates.split(",")} if args.candidates else None
    chosen = [
        c
        for c in candidates()  # each model's current spec too: what the others are paired with
        if (not args.models or c.model in args.models.split(","))
        and (labels is None or c.label in labels)
    ]
    started = time.perf_counter()
    frame = training_frame(args.workload)
    out.emit(
        {"kind": "frame", "workload": args.workload, "rows": len(frame),
         "instruments": int(frame["inst_id"].nunique()),
         "seconds": round(time.perf_counter() - started, 2), **machine()}
    )  # fmt: skip
    common = common_rows(frame, {c.model for c in chosen})
    current: dict[str, Any] = {}
    for repeat in range(args.repeats):
        for candidate in chosen:
            threads = "all" if args.all_threads else "fit_threads"
            record, trained = measure(candidate, frame, args.workload, repeat, threads)
            out.emit(record)
            if repeat:
                continue
            test, y_test = common[candidate.model]
            losses = row_losses_on(trained, test, y_test)
            if candidate.label == "current":
                current[candidate.model] = losses
            elif candidate.model in current:
                instruments = int(test["inst_id"].nunique())
                out.emit(
                    paired_record(
                        candidate, args.workload, losses, current[candidate.model], instruments
                    )
                )


def sweep_omp(args: argparse.Namespace, out_path: Path) -> None:
    """The same measurement under each OpenMP policy, each in a fresh process."""
    for policy in args.omp.split(","):
        env = {k: v for k, v in os.environ.items() if k not in OMP_VARIABLES}
        env |= OMP_POLICIES[policy]
        command = [sys.executable, __file__, "--workload", args.workload, "--jsonl",
                   str(out_path), "--repeats", str(args.repeats), "--no-render",
                   "--keep-omp"]  # fmt: skip
        command += ["--all-threads"] if args.all_threads else []
        for option in ("models", "candidates"):
            if getattr(args, option):
                command += [f"--{option}", getattr(args, option)]
        subprocess.run(command, env=env, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", default="M", choices=("M", "W", "S"))
    parser.add_argument("--models", help="comma list of model names (default all five)")
    parser.add_argument("--candidates", help="comma list of candidate labels (default all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--omp", help="comma list of OpenMP policies, one process each: "
                        + ",".join(OMP_POLICIES))  # fmt: skip
    parser.add_argument("--keep-omp", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--all-threads", action="store_true", help="fit on every thread of "
                        "every pool (not training.fit_threads' choice)")  # fmt: skip
    parser.add_argument("--no-render", action="store_true", help="skip the markdown tables")
    parser.add_argument("--jsonl", help="append every line here (default: results/raw/)")
    parser.add_argument("--render", help="only print the tables of this JSON-lines file")
    args = parser.parse_args()
    if args.render:
        print(render(read_lines(Path(args.render))))
        return
    out_path = Path(args.jsonl) if args.jsonl else raw_path(f"compare_estimators_{args.workload}")
    if args.omp:
        sweep_omp(args, out_path)
    else:
        if not args.keep_omp:  # as the code location's entry point does
            from blofin_assets import process

            process.prefer_passive_openmp()
        if args.all_threads:  # the alternative fit_threads chose against, measured
            from blofin_assets.ml import training

            training.fit_threads = lambda estimator: nullcontext()
        compare(args, Lines(out_path))
    if not args.no_render:
        print(render(read_lines(out_path)))


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def policy_name(omp: Mapping[str, str | None]) -> str:
    matches = [name for name, env in OMP_POLICIES.items() if all(
        omp.get(k) == env.get(k) for k in OMP_VARIABLES)]  # fmt: skip
    return matches[0] if matches else json.dumps(omp)


def spread(values: list[float]) -> str:
    """min / median of repeated timings (the min is the least disturbed by other load)."""
    ordered = sorted(values)
    median = statistics.median(ordered)
    return f"{ordered[0]:.2f} / {median:.2f}" if len(ordered) > 1 else f"{median:.2f}"


def render(lines: list[dict[str, Any]]) -> str:
    """The tables: per workload and model, each candidate (and OpenMP policy) in a row."""
    out = []
    for frame in (line for line in lines if line["kind"] == "frame"):
        out.append(
            f"- {frame['workload']}: {frame['rows']:,} rows, {frame['instruments']} instruments; "
            f"{frame['date_utc']}, {frame['cpu']} x{frame['cores']}, python {frame['python']}, "
            f"sklearn {frame['sklearn']}, xgboost {frame['xgboost']}, OpenMP {frame['omp']}, "
            f"load {frame['loadavg']}"
        )
    runs: dict[tuple, list[dict[str, Any]]] = {}
    for line in (line for line in lines if line["kind"] == "candidate"):
        threads = line.get("threads", "fit_threads")
        key = (line["workload"], line["model"], line["label"], policy_name(line["omp"]) +
               ("" if threads == "fit_threads" else f", {threads} threads"))  # fmt: skip
        runs.setdefault(key, []).append(line)
    models = list(dict.fromkeys(key[:2] for key in runs))  # each model's rows together
    runs = {key: runs[key] for model in models for key in runs if key[:2] == model}
    paired = {(p["workload"], p["model"], p["label"]): p for p in lines if p["kind"] == "paired"}
    header = (
        "| candidate | OpenMP | train / test rows | fit s | predict s | train_model s | "
        "rest s | skill (p) vs rule | vs current: loss diff, p better / worse | load 1m |"
    )
    previous = None
    for (workload, model, label, policy), group in runs.items():
        if (workload, model) != previous:
            out += ["", f"**{model}** at {workload}", "", header, "|" + " --- |" * 10]
            previous = (workload, model)
        first = group[0]
        skills = {round(g["skill"], 12) for g in group}
        rest = [g["train_model_seconds"] - g["fit_seconds"] - g["predict_seconds"] for g in group]
        pair = paired.get((workload, model, label))
        versus = (f"{pair['mean_loss_vs_current']:+.3g}, {pair['p_better']:.2f} / "
                  f"{pair['p_worse']:.2f}" if pair else "")  # fmt: skip
        loads = [value for g in group for value in g["loadavg_1m"]]
        out.append(
            f"| {label} | {policy} | {first['train_rows']:,} / {first['test_rows']:,} | "
            f"{spread([g['fit_seconds'] for g in group])} | "
            f"{spread([g['predict_seconds'] for g in group])} | "
            f"{spread([g['train_model_seconds'] for g in group])} | "
            f"{statistics.median(rest):.2f} | {first['skill']:+.4f} ({first['p_value']:.3g})"
            f"{'' if len(skills) == 1 else ' VARIES'} vs {first['baseline']} | {versus} | "
            f"{min(loads):.1f}-{max(loads):.1f} |"
        )
    return "\n".join(out)


if __name__ == "__main__":
    main()
