"""One version's predictions on bars it never saw, scored against what happened.

A row holds the prediction in target units, the label exactly as ``targets`` computes it, and
the forecast of the naive rule the version was judged against at training (its strongest on
its test rows), so live skill is measured against the same opponent as the promoted skill.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from blofin_assets.market.clock import as_utc
from blofin_assets.ml.ensemble import MEMBER_RULE_PREFIX, member_calls
from blofin_assets.serving.model import ServedModel
from blofin_assets.storage.outcomes import MODES, OUTCOME_COLUMNS

COIN_FLIP_PROBABILITY = 0.5


class InSampleError(ValueError):
    """A bar at or before the version's data_until: the version saw it, so no outcome."""


def empty_outcomes() -> pd.DataFrame:
    return pd.DataFrame(columns=OUTCOME_COLUMNS)


def point_forecast(model: ServedModel, scored: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(prediction in target units, probability of up or NaN) from ServedModel.predict.

    A binary classifier's ``prediction`` column is its probability of up; the outcome keeps
    the probability apart and predicts the class, so accuracy is read off one column."""
    if sorted(c for c in scored.columns if c.startswith("p_")) == ["p_0", "p_1"]:
        probability = scored["p_1"].to_numpy(dtype="float64")
        return (probability > COIN_FLIP_PROBABILITY).astype("float64"), probability
    prediction = scored["prediction"].to_numpy(dtype="float64")
    return prediction, np.full(len(scored), np.nan)


def baseline_forecast(model: ServedModel, rows: pd.DataFrame) -> tuple[str, np.ndarray]:
    """(rule name, its forecast in target units) for the version's strongest naive rule."""
    metadata, config = model.metadata, model.config
    name = metadata.get("baseline_kind")
    if not name:
        raise ValueError(f"{model.name}/{model.version}: metadata records no baseline_kind")
    constants: dict[str, Any] = metadata.get("naive_constants") or {}
    n = len(rows)
    if name in rows.columns:  # a naive_* column of targets: already in target units
        return name, rows[name].to_numpy(dtype="float64")
    if name == "coin_flip":
        return name, np.full(n, COIN_FLIP_PROBABILITY)
    if name.startswith(MEMBER_RULE_PREFIX):
        return name, member_call(model, rows, name.removeprefix(MEMBER_RULE_PREFIX))
    if name not in constants:
        raise ValueError(
            f"{model.name}/{model.version}: baseline {name!r} is neither a column of the rows "
            f"nor in metadata naive_constants {sorted(constants)}"
        )
    constant = float(constants[name])
    if name == "training_mean" and config.get("target_transform") == "log_return":
        # The mean was learned in the estimator's space: a log return from the bar's close.
        return name, rows["close"].to_numpy(dtype="float64") * np.exp(constant)
    return name, np.full(n, constant)


def member_call(model: ServedModel, rows: pd.DataFrame, member: str) -> np.ndarray:
    """A stacked version's member's own direction call, the rule it was judged against
    (ml/ensemble.py member_calls), from the member fitted inside the version."""
    estimator = model.estimator
    x = model.scaler.transform(rows[model.features].to_numpy(dtype="float64"))
    calls = member_calls(estimator, estimator.meta_features(x))
    name = f"{MEMBER_RULE_PREFIX}{member}"
    if name not in calls:
        raise ValueError(
            f"{model.name}/{model.version}: baseline {name} names no member direction call "
            f"among its estimator's outputs {list(getattr(estimator, 'meta_features_', ()))}"
        )
    return calls[name][0].astype("float64")


def check_out_of_sample(model: ServedModel, ts: pd.Series, data_until: pd.Timestamp) -> None:
    seen = ts <= data_until
    if seen.any():
        raise InSampleError(
            f"{model.name}/{model.version}: {int(seen.sum())} row(s) at or before its "
            f"data_until {data_until.isoformat()} (newest {ts[seen].max()}); a version is "
            "scored only on bars it never saw"
        )


def outcome_rows(
    model: ServedModel,
    rows: pd.DataFrame,
    *,
    mode: str,
    data_until: pd.Timestamp,
    scored_at: pd.Timestamp,
) -> pd.DataFrame:
    """``prediction_outcomes`` rows (exactly OUTCOME_COLUMNS) of ``model`` on ``rows``.

    ``rows``: labelled features ⋈ targets rows (the model's features, ``close``,
    ``target_price``, the model's target column and any naive_* column its baseline names),
    every ``ts`` after ``data_until``, else InSampleError. From the model it reads
    ``config["target"]``, ``config["horizon_bars"]``, ``config["task"]``,
    ``config["target_transform"]`` (for the price's training mean), ``config["features"]``,
    ``metadata["baseline_kind"]`` and ``metadata["naive_constants"]``; ``model.name`` and
    ``model.version`` key the rows. Direction predicts the class (p_up > 0.5) and keeps p_up
    in ``probability``. ``outlier`` / ``outlier_score`` are the version's own (its
    reference, ``ServedModel.reference``).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    data_until = as_utc(data_until)
    if rows.empty:
        return empty_outcomes()
    rows = rows.reset_index(drop=True)
    ts = pd.to_datetime(rows["ts"], utc=True)
    check_out_of_sample(model, ts, data_until)
    target = model.config["target"]
    missing = [c for c in (target, "close", "target_price") if c not in rows.columns]
    if missing:
        raise ValueError(f"{model.name}: outcome rows lack columns {missing}")
    scored = model.predict(rows)
    prediction, probability = point_forecast(model, scored)
    baseline_name, baseline = baseline_forecast(model, rows)
    close = rows["close"].to_numpy(dtype="float64")
    frame = pd.DataFrame(
        {
            "inst_id": rows["inst_id"].astype(str),
            "ts": ts,
            "model_name": model.name,
            "model_version": model.version,
            "mode": mode,
            "horizon": int(model.config["horizon_bars"]),
            "prediction": prediction,
            "probability": probability,
            "realized": rows[target].to_numpy(dtype="float64"),
            "baseline": baseline,
            "baseline_name": baseline_name,
            "close": close,
            "realized_return": np.log(rows["target_price"].to_numpy(dtype="float64") / close),
            "data_until": data_until,
            "scored_at": as_utc(scored_at),
            # How far the bar's features lie from the version's training rows; NULL (unknown)
            # for a version saved without a reference.
            "outlier": pd.array(scored["outlier"], dtype="boolean"),
            "outlier_score": scored["outlier_score"].to_numpy(dtype="float64"),
        }
    )
    return frame[OUTCOME_COLUMNS]
